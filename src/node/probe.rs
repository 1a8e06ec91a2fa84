//! Container probes (the kubelet's prober): exec, httpGet and tcpSocket handlers with Kubernetes' timing fields.
//! A probe only observes; what a result means (restart on liveness, readiness flag, startup gate) is the pod worker's
//! decision.

use std::time::Duration;

use super::runtime::{ContainerRuntime, ContainerSpec};
use crate::api::core::{self as api, Container};
use crate::api::IntOrString;

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

/// Why a probe as written cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("port {0} out of range")]
    PortRange(i64),
    #[error("couldn't find port {0:?} in the container's ports")]
    NoSuchPort(String),
    #[error("{0} has no handler the node agent supports (exec, httpGet, tcpSocket)")]
    NoHandler(&'static str),
}

/// Why a probe failed, in the kubelet's words (the message of the Unhealthy Event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("command {command:?} exited with {code}: {output}")]
    Exit {
        command: Vec<String>,
        code: i32,
        output: String,
    },
    #[error("{0}")]
    Exec(String),
    #[error("HTTP probe failed with statuscode: {0}")]
    Status(u16),
    #[error("Get \"{url}\": {error}")]
    Get { url: String, error: String },
    #[error("dial tcp {addr}: {error}")]
    Dial { addr: String, error: String },
}

/// Resolves a port that may be a number or the name of one of the container's ports.
fn port_of(port: &IntOrString, container: &Container) -> Result<u16, SpecError> {
    let name = match port {
        IntOrString::Int(n) => return u16::try_from(*n).map_err(|_| SpecError::PortRange(*n)),
        IntOrString::String(s) => s.as_str(),
    };
    if let Ok(n) = name.parse::<u16>() {
        return Ok(n);
    }
    container
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .ok_or_else(|| SpecError::NoSuchPort(name.to_string()))
}

/// A host that defaults to the pod's address.
fn host_or(host: &Option<String>, pod_ip: &str) -> String {
    host.as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or(pod_ip)
        .to_string()
}

fn handler(
    p: &api::Probe,
    kind: Kind,
    container: &Container,
    pod_ip: &str,
) -> Result<Handler, SpecError> {
    if let Some(e) = &p.exec {
        return Ok(Handler::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(h) = &p.http_get {
        return Ok(Handler::Http {
            scheme: h.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase(),
            host: host_or(&h.host, pod_ip),
            port: port_of(&h.port, container)?,
            path: h.path.clone().unwrap_or_else(|| "/".into()),
            headers: h
                .http_headers
                .iter()
                .flatten()
                .map(|x| (x.name.clone(), x.value.clone()))
                .collect(),
        });
    }
    if let Some(t) = &p.tcp_socket {
        return Ok(Handler::Tcp {
            host: host_or(&t.host, pod_ip),
            port: port_of(&t.port, container)?,
        });
    }
    Err(SpecError::NoHandler(kind.field()))
}

impl Probe {
    /// Parses the container's probe of `kind`; `None` when the container has no such probe.
    pub fn parse(
        container: &Container,
        kind: Kind,
        pod_ip: &str,
    ) -> Option<Result<Probe, SpecError>> {
        let p = match kind {
            Kind::Liveness => container.liveness_probe.as_ref(),
            Kind::Readiness => container.readiness_probe.as_ref(),
            Kind::Startup => container.startup_probe.as_ref(),
        }?;
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(v.unwrap_or(default).max(min) as u64)
        };
        let count = |v: Option<i32>, default: i32| v.unwrap_or(default).max(1) as u32;
        Some(handler(p, kind, container, pod_ip).map(|handler| Probe {
            handler,
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: count(p.success_threshold, 1),
            failure_threshold: count(p.failure_threshold, 3),
            termination_grace: p.termination_grace_period_seconds,
        }))
    }

    /// Runs the probe once: `Ok(())` on success, `Err(why)` on failure.
    pub async fn run(
        &self,
        runtime: &dyn ContainerRuntime,
        spec: &ContainerSpec,
        http: &reqwest::Client,
    ) -> Result<(), Failure> {
        match &self.handler {
            Handler::Exec(cmd) => match runtime.exec(spec, cmd, self.timeout).await {
                Ok(r) if r.exit_code == 0 => Ok(()),
                Ok(r) => Err(Failure::Exit {
                    command: cmd.clone(),
                    code: r.exit_code,
                    output: r.output.trim().to_string(),
                }),
                Err(e) => Err(Failure::Exec(e.to_string())),
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
                    Ok(r) => Err(Failure::Status(r.status().as_u16())),
                    Err(e) => Err(Failure::Get {
                        url,
                        error: e.to_string(),
                    }),
                }
            }
            Handler::Tcp { host, port } => {
                let addr = format!("{host}:{port}");
                match tokio::time::timeout(self.timeout, tokio::net::TcpStream::connect(&addr))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(Failure::Dial {
                        addr,
                        error: e.to_string(),
                    }),
                    Err(_) => Err(Failure::Dial {
                        addr,
                        error: "i/o timeout".into(),
                    }),
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
        let c: Container = serde_json::from_value(
            json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 2},
            "livenessProbe": {"tcpSocket": {"port": 9000}, "failureThreshold": 5},
            "startupProbe": {"exec": {"command": ["true"]}}}),
        )
        .unwrap();
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
        assert!(Probe::parse(&Container::default(), Kind::Startup, "ip").is_none());
        let bad: Container = serde_json::from_value(
            json!({"name": "c", "readinessProbe": {"httpGet": {"port": "nope"}}}),
        )
        .unwrap();
        assert!(Probe::parse(&bad, Kind::Readiness, "ip").unwrap().is_err());
    }
}
