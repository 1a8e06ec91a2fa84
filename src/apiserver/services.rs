//! Service address allocation, done by the API server as Kubernetes does: a ClusterIP from the service CIDR for
//! every Service but headless (`clusterIP: None`) and ExternalName ones, and a node port (30000-32767 by default) for
//! each port of NodePort and LoadBalancer Services. A requested address or port is honoured when it is in range and
//! free, refused with a clear error otherwise; nothing is ever handed out twice; what a deleted Service held is free
//! again (allocation reads the Services that exist, under one lock, so there is no separate bitmap to leak).
//! Updates keep what was allocated unless they change it.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::api::validation::{FieldError, Reason};

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: Reason::Invalid,
        detail: detail.into(),
    }
}

/// Where Service addresses and node ports come from.
pub struct Allocator {
    net: u32,
    prefix: u8,
    ports: (u16, u16),
    /// Held from allocation until the Service is stored.
    pub lock: tokio::sync::Mutex<()>,
}

impl Allocator {
    /// An allocator for `cidr` (an IPv4 network of /8 to /28) and the node port range `ports`.
    pub fn new(cidr: &str, ports: (u16, u16)) -> Result<Self, crate::sys::BadCidr> {
        let (ip, prefix) = crate::sys::parse_cidr_in(cidr, 8, 28)?;
        let mask = u32::MAX << (32 - prefix);
        Ok(Allocator {
            net: u32::from(ip) & mask,
            prefix,
            ports,
            lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.net), self.prefix)
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == self.net
    }

    /// Gives a Service its ClusterIP (kept on update, checked when requested) and node ports (NodePort and
    /// LoadBalancer types), against what `others` hold.
    pub fn allocate(
        &self,
        svc: &mut Value,
        old: Option<&Value>,
        others: &[Value],
    ) -> Result<(), FieldError> {
        let ty = svc["spec"]["type"]
            .as_str()
            .unwrap_or("ClusterIP")
            .to_string();
        let spec = &mut svc["spec"];
        // What was allocated stays, unless the update says otherwise.
        if let Some(prev) = old {
            let prev_ip = prev["spec"]["clusterIP"].as_str();
            if spec["clusterIP"].as_str().is_none_or(str::is_empty) {
                if let Some(ip) = prev_ip {
                    spec["clusterIP"] = json!(ip);
                    spec["clusterIPs"] = prev["spec"]["clusterIPs"].clone();
                }
            } else if prev_ip.is_some_and(|p| Some(p) != spec["clusterIP"].as_str())
                && ty != "ExternalName"
            {
                return Err(invalid("spec.clusterIPs[0]", "field is immutable"));
            }
        }
        if ty == "ExternalName" {
            return Ok(());
        }
        let requested = spec["clusterIP"].as_str().unwrap_or("").to_string();
        let ip = self.cluster_ip(requested, old, others)?;
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
        if spec["ipFamilies"].as_array().is_none_or(Vec::is_empty) {
            spec["ipFamilies"] = json!(["IPv4"]);
        }
        if spec["ipFamilyPolicy"].is_null() {
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }
        self.node_ports(spec, &ty, old, others)
    }

    /// The ClusterIP for a request: `None` (headless), the first free address, or the requested one if it is in
    /// range and free (or already this Service's).
    fn cluster_ip(
        &self,
        requested: String,
        old: Option<&Value>,
        others: &[Value],
    ) -> Result<String, FieldError> {
        let used: HashSet<&str> = others
            .iter()
            .filter_map(|o| o["spec"]["clusterIP"].as_str())
            .collect();
        if requested == "None" {
            return Ok(requested);
        }
        if requested.is_empty() {
            let size = 1u32 << (32 - self.prefix);
            return (1..size - 1)
                .map(|i| Ipv4Addr::from(self.net + i).to_string())
                .find(|c| !used.contains(c.as_str()))
                .ok_or_else(|| {
                    invalid(
                        "spec.clusterIPs",
                        format!(
                            "failed to allocate a service IP: range {} is full",
                            self.cidr()
                        ),
                    )
                });
        }
        let parsed: Ipv4Addr = requested.parse().map_err(|_| {
            invalid(
                "spec.clusterIPs[0]",
                format!(
                    "{requested:?}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
                ),
            )
        })?;
        let offset = u32::from(parsed).wrapping_sub(self.net);
        if !self.contains(parsed) || offset == 0 || offset == (1u32 << (32 - self.prefix)) - 1 {
            return Err(invalid(
                "spec.clusterIPs",
                format!(
                    "[]string{{{requested:?}}}: failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {}",
                    self.cidr()
                ),
            ));
        }
        if used.contains(requested.as_str())
            && old.is_none_or(|o| o["spec"]["clusterIP"] != requested.as_str())
        {
            return Err(invalid(
                "spec.clusterIPs",
                format!("[]string{{{requested:?}}}: failed to allocate IP {requested}: provided IP is already allocated"),
            ));
        }
        Ok(requested)
    }

    /// Checks requested node ports and picks the rest (an update keeps the node port of the same port).
    fn node_ports(
        &self,
        spec: &mut Value,
        ty: &str,
        old: Option<&Value>,
        others: &[Value],
    ) -> Result<(), FieldError> {
        let wants_ports = ty == "NodePort"
            || ty == "LoadBalancer"
                && spec["allocateLoadBalancerNodePorts"].as_bool() != Some(false);
        let mut used: HashSet<i64> = others
            .iter()
            .flat_map(|o| o["spec"]["ports"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["nodePort"].as_i64())
            .collect();
        let prev_ports: Vec<Value> = old
            .and_then(|o| o["spec"]["ports"].as_array().cloned())
            .unwrap_or_default();
        let Some(ports) = spec["ports"].as_array_mut() else {
            return Ok(());
        };
        let range = i64::from(self.ports.0)..=i64::from(self.ports.1);
        // Requested ports first, so a dynamic pick never takes one asked for later in the list.
        for (i, n) in ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p["nodePort"].as_i64()?)))
        {
            let field = format!("spec.ports[{i}].nodePort");
            if !wants_ports {
                if ty == "ClusterIP" {
                    return Err(FieldError {
                        field,
                        reason: Reason::Forbidden,
                        detail: "may not be used when `type` is 'ClusterIP'".into(),
                    });
                }
                continue;
            }
            let was_ours = prev_ports.iter().any(|q| q["nodePort"].as_i64() == Some(n));
            if !range.contains(&n) {
                let (lo, hi) = self.ports;
                let detail = format!("{n}: provided port is not in the valid range. The range of valid ports is {lo}-{hi}");
                return Err(invalid(field, detail));
            }
            if !was_ours && !used.insert(n) {
                return Err(invalid(
                    field,
                    format!("{n}: provided port is already allocated"),
                ));
            }
        }
        if !wants_ports {
            return Ok(());
        }
        for p in ports
            .iter_mut()
            .filter(|p| p["nodePort"].as_i64().is_none())
        {
            let kept = prev_ports
                .iter()
                .find(|q| q["port"] == p["port"] && q["protocol"] == p["protocol"])
                .and_then(|q| q["nodePort"].as_i64());
            let n = match kept {
                Some(n) => n,
                None => range.clone().find(|n| !used.contains(n)).ok_or_else(|| {
                    let (lo, hi) = self.ports;
                    invalid(
                        "spec.ports",
                        format!("failed to allocate a node port: range {lo}-{hi} is full"),
                    )
                })?,
            };
            used.insert(n);
            p["nodePort"] = json!(n);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ty: &str, ip: Option<&str>, node_port: Option<i64>) -> Value {
        let mut v = json!({"spec": {"type": ty, "ports": [{"port": 80, "protocol": "TCP"}]}});
        if let Some(ip) = ip {
            v["spec"]["clusterIP"] = json!(ip);
        }
        if let Some(n) = node_port {
            v["spec"]["ports"][0]["nodePort"] = json!(n);
        }
        v
    }

    #[test]
    fn addresses_are_unique_requested_ones_checked_and_updates_keep_theirs() {
        let a = Allocator::new("10.96.0.0/16", (30000, 32767)).unwrap();
        let mut one = svc("ClusterIP", None, None);
        a.allocate(&mut one, None, &[]).unwrap();
        assert_eq!(one["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(one["spec"]["clusterIPs"], json!(["10.96.0.1"]));
        let mut two = svc("ClusterIP", None, None);
        a.allocate(&mut two, None, std::slice::from_ref(&one))
            .unwrap();
        assert_eq!(two["spec"]["clusterIP"], "10.96.0.2");
        let mut taken = svc("ClusterIP", Some("10.96.0.1"), None);
        let e = a
            .allocate(&mut taken, None, std::slice::from_ref(&one))
            .unwrap_err();
        assert_eq!(e.field, "spec.clusterIPs");
        assert!(e.detail.contains("provided IP is already allocated"), "{e}");
        let mut outside = svc("ClusterIP", Some("192.168.1.1"), None);
        assert!(a
            .allocate(&mut outside, None, &[])
            .unwrap_err()
            .detail
            .contains("not in the valid range"));
        let mut headless = svc("ClusterIP", Some("None"), None);
        a.allocate(&mut headless, None, &[]).unwrap();
        assert_eq!(headless["spec"]["clusterIPs"], json!(["None"]));
        // An update without clusterIP keeps it; changing it is refused.
        let mut update = svc("ClusterIP", None, None);
        a.allocate(&mut update, Some(&one), std::slice::from_ref(&two))
            .unwrap();
        assert_eq!(update["spec"]["clusterIP"], "10.96.0.1");
        let mut moved = svc("ClusterIP", Some("10.96.0.9"), None);
        assert!(a
            .allocate(&mut moved, Some(&one), &[])
            .unwrap_err()
            .detail
            .contains("immutable"));
        // Released on delete: with `one` gone its address is free again.
        let mut again = svc("ClusterIP", None, None);
        a.allocate(&mut again, None, std::slice::from_ref(&two))
            .unwrap();
        assert_eq!(again["spec"]["clusterIP"], "10.96.0.1");
    }

    #[test]
    fn node_ports_are_allocated_and_checked() {
        let a = Allocator::new("10.96.0.0/16", (30000, 32767)).unwrap();
        let mut np = svc("NodePort", None, Some(30000));
        a.allocate(&mut np, None, &[]).unwrap();
        assert_eq!(np["spec"]["ports"][0]["nodePort"], 30000);
        let mut dynamic = svc("NodePort", None, None);
        a.allocate(&mut dynamic, None, std::slice::from_ref(&np))
            .unwrap();
        assert_eq!(dynamic["spec"]["ports"][0]["nodePort"], 30001);
        let mut clash = svc("NodePort", None, Some(30000));
        let e = a
            .allocate(&mut clash, None, std::slice::from_ref(&np))
            .unwrap_err();
        assert_eq!(e.field, "spec.ports[0].nodePort");
        assert!(e.detail.contains("already allocated"));
        let mut low = svc("NodePort", None, Some(80));
        assert!(a
            .allocate(&mut low, None, &[])
            .unwrap_err()
            .detail
            .contains("valid range"));
        let mut forbidden = svc("ClusterIP", None, Some(30005));
        assert_eq!(
            a.allocate(&mut forbidden, None, &[]).unwrap_err().reason,
            Reason::Forbidden
        );
        let mut update = svc("NodePort", None, None);
        a.allocate(&mut update, Some(&np), std::slice::from_ref(&dynamic))
            .unwrap();
        assert_eq!(update["spec"]["ports"][0]["nodePort"], 30000);
        let mut lb = svc("LoadBalancer", None, None);
        a.allocate(&mut lb, None, &[np.clone(), dynamic.clone()])
            .unwrap();
        assert_eq!(lb["spec"]["ports"][0]["nodePort"], 30002);
    }
}
