//! Container probes (the kubelet's prober): exec, httpGet and tcpSocket handlers with Kubernetes' timing fields.
//! A probe only observes; what a result means (restart on liveness, readiness flag, startup gate) is the pod worker's
//! decision.

use std::time::Duration;

use serde_json::Value;

use super::runtime::{ContainerRuntime, ContainerSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    pub fn field(self) -> &'static str {
        match self {
            Kind::Liveness => "livenessProbe",
            Kind::Readiness => "readinessProbe",
            Kind::Startup => "startupProbe",
        }
    }
    pub fn title(self) -> &'static str {
        match self {
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
            Kind::Startup => "Startup",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Handler {
    Exec(Vec<String>),
    Http {
        scheme: String,
        host: String,
        port: u16,
        path: String,
        headers: Vec<(String, String)>,
    },
    Tcp {
        host: String,
        port: u16,
    },
}

/// A probe as the container spec declares it, with Kubernetes' defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub handler: Handler,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    pub termination_grace: Option<i64>,
}

fn secs(v: &Value, field: &str, default: u64) -> u64 {
    v.get(field).and_then(Value::as_u64).unwrap_or(default)
}

/// Resolves a port that may be a number or the name of one of the container's ports.
fn port_of(port: &Value, container: &Value) -> Result<u16, String> {
    if let Some(n) = port.as_u64() {
        return u16::try_from(n).map_err(|_| format!("port {n} out of range"));
    }
    let name = port.as_str().unwrap_or("");
    if let Ok(n) = name.parse::<u16>() {
        return Ok(n);
    }
    container
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
        .and_then(|n| u16::try_from(n).ok())
        .ok_or_else(|| format!("couldn't find port {name:?} in the container's ports"))
}

impl Probe {
    /// Parses `container[kind]`; `None` when the container has no such probe.
    pub fn parse(container: &Value, kind: Kind, pod_ip: &str) -> Option<Result<Probe, String>> {
        let p = container.get(kind.field())?;
        let handler = (|| {
            if let Some(e) = p.get("exec") {
                let cmd: Vec<String> = e
                    .get("command")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect();
                return Ok(Handler::Exec(cmd));
            }
            if let Some(h) = p.get("httpGet") {
                let host = h
                    .get("host")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(pod_ip);
                return Ok(Handler::Http {
                    scheme: h
                        .get("scheme")
                        .and_then(Value::as_str)
                        .unwrap_or("HTTP")
                        .to_ascii_lowercase(),
                    host: host.to_string(),
                    port: port_of(h.get("port").unwrap_or(&Value::Null), container)?,
                    path: h
                        .get("path")
                        .and_then(Value::as_str)
                        .unwrap_or("/")
                        .to_string(),
                    headers: h
                        .get("httpHeaders")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|x| {
                            (
                                x["name"].as_str().unwrap_or("").to_string(),
                                x["value"].as_str().unwrap_or("").to_string(),
                            )
                        })
                        .collect(),
                });
            }
            if let Some(t) = p.get("tcpSocket") {
                let host = t
                    .get("host")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .unwrap_or(pod_ip);
                return Ok(Handler::Tcp {
                    host: host.to_string(),
                    port: port_of(t.get("port").unwrap_or(&Value::Null), container)?,
                });
            }
            Err(format!(
                "{} has no handler the node agent supports (exec, httpGet, tcpSocket)",
                kind.field()
            ))
        })();
        Some(handler.map(|handler| {
            Probe {
                handler,
                initial_delay: Duration::from_secs(secs(p, "initialDelaySeconds", 0)),
                period: Duration::from_secs(secs(p, "periodSeconds", 10).max(1)),
                timeout: Duration::from_secs(secs(p, "timeoutSeconds", 1).max(1)),
                success_threshold: secs(p, "successThreshold", 1).max(1) as u32,
                failure_threshold: secs(p, "failureThreshold", 3).max(1) as u32,
                termination_grace: p
                    .get("terminationGracePeriodSeconds")
                    .and_then(Value::as_i64),
            }
        }))
    }

    /// Runs the probe once: `Ok(())` on success, `Err(why)` on failure.
    pub async fn run(
        &self,
        runtime: &dyn ContainerRuntime,
        spec: &ContainerSpec,
        http: &reqwest::Client,
    ) -> Result<(), String> {
        match &self.handler {
            Handler::Exec(cmd) => match runtime.exec(spec, cmd, self.timeout).await {
                Ok(r) if r.exit_code == 0 => Ok(()),
                Ok(r) => Err(format!(
                    "command {cmd:?} exited with {}: {}",
                    r.exit_code,
                    r.output.trim()
                )),
                Err(e) => Err(e.to_string()),
            },
            Handler::Http {
                scheme,
                host,
                port,
                path,
                headers,
            } => {
                let url = format!("{scheme}://{host}:{port}{path}");
                let mut req = http.get(&url).timeout(self.timeout);
                for (k, v) in headers {
                    req = req.header(k, v);
                }
                match req.send().await {
                    Ok(r) if (200..400).contains(&r.status().as_u16()) => Ok(()),
                    Ok(r) => Err(format!(
                        "HTTP probe failed with statuscode: {}",
                        r.status().as_u16()
                    )),
                    Err(e) => Err(format!("Get \"{url}\": {e}")),
                }
            }
            Handler::Tcp { host, port } => {
                let addr = format!("{host}:{port}");
                match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(&addr))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("dial tcp {addr}: {e}")),
                    Err(_) => Err(format!("dial tcp {addr}: i/o timeout")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_handlers_defaults_and_named_ports() {
        let c = json!({"ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2},
            "livenessProbe": {"tcpSocket": {"port": 9000}, "failureThreshold": 5},
            "startupProbe": {"exec": {"command": ["true"]}}});
        let r = Probe::parse(&c, Kind::Readiness, "127.244.0.2")
            .unwrap()
            .unwrap();
        assert_eq!(
            r.handler,
            Handler::Http {
                scheme: "http".into(),
                host: "127.244.0.2".into(),
                port: 8080,
                path: "/healthz".into(),
                headers: vec![]
            }
        );
        assert_eq!(r.period, Duration::from_secs(2));
        assert_eq!((r.success_threshold, r.failure_threshold), (1, 3));
        let l = Probe::parse(&c, Kind::Liveness, "127.244.0.2")
            .unwrap()
            .unwrap();
        assert_eq!(l.failure_threshold, 5);
        assert!(matches!(l.handler, Handler::Tcp { port: 9000, .. }));
        let s = Probe::parse(&c, Kind::Startup, "ip").unwrap().unwrap();
        assert_eq!(s.handler, Handler::Exec(vec!["true".into()]));
        assert!(Probe::parse(&json!({}), Kind::Startup, "ip").is_none());
        let bad = json!({"readinessProbe": {"httpGet": {"port": "nope"}}});
        assert!(Probe::parse(&bad, Kind::Readiness, "ip").unwrap().is_err());
    }
}
