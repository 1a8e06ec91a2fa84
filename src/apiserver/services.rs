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

    /// Fills in (or checks) the ClusterIP and node ports of `svc` against the other Services, `others` (the one
    /// being updated excluded); `old` is its stored version on updates.
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
            if spec["clusterIP"].as_str().is_none_or(str::is_empty) {
                if let Some(ip) = prev["spec"]["clusterIP"].as_str() {
                    spec["clusterIP"] = json!(ip);
                    spec["clusterIPs"] = prev["spec"]["clusterIPs"].clone();
                }
            } else if prev["spec"]["clusterIP"]
                .as_str()
                .is_some_and(|p| Some(p) != spec["clusterIP"].as_str())
                && ty != "ExternalName"
            {
                return Err(invalid("spec.clusterIPs[0]", "field is immutable"));
            }
        }
        if ty == "ExternalName" {
            return Ok(());
        }
        let used_ips: HashSet<&str> = others
            .iter()
            .filter_map(|o| o["spec"]["clusterIP"].as_str())
            .collect();
        let requested = spec["clusterIP"].as_str().unwrap_or("").to_string();
        let ip = if requested == "None" {
            "None".to_string()
        } else if requested.is_empty() {
            let size = 1u32 << (32 - self.prefix);
            (1..size - 1)
                .map(|i| Ipv4Addr::from(self.net + i).to_string())
                .find(|c| !used_ips.contains(c.as_str()))
                .ok_or_else(|| {
                    invalid(
                        "spec.clusterIPs",
                        format!(
                            "failed to allocate a service IP: range {} is full",
                            self.cidr()
                        ),
                    )
                })?
        } else {
            let parsed: Ipv4Addr = requested.parse().map_err(|_| {
                invalid(
                    "spec.clusterIPs[0]",
                    format!("{requested:?}: must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
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
            if used_ips.contains(requested.as_str())
                && old.is_none_or(|o| o["spec"]["clusterIP"] != requested.as_str())
            {
                return Err(invalid(
                    "spec.clusterIPs",
                    format!("[]string{{{requested:?}}}: failed to allocate IP {requested}: provided IP is already allocated"),
                ));
            }
            requested
        };
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
        if spec["ipFamilies"].as_array().is_none_or(Vec::is_empty) {
            spec["ipFamilies"] = json!(["IPv4"]);
        }
        if spec["ipFamilyPolicy"].is_null() {
            spec["ipFamilyPolicy"] = json!("SingleStack");
        }

        // Node ports.
        let wants_ports = ty == "NodePort"
            || ty == "LoadBalancer"
                && spec["allocateLoadBalancerNodePorts"].as_bool() != Some(false);
        let mut used_ports: HashSet<i64> = others
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
        // Requested ports first, so a dynamic pick never takes one asked for later in the list.
        for (i, p) in ports.iter().enumerate() {
            if let Some(n) = p["nodePort"].as_i64() {
                if !wants_ports {
                    if ty == "ClusterIP" {
                        return Err(FieldError {
                            field: format!("spec.ports[{i}].nodePort"),
                            reason: Reason::Forbidden,
                            detail: "may not be used when `type` is 'ClusterIP'".into(),
                        });
                    }
                    continue;
                }
                let was_ours = prev_ports.iter().any(|q| q["nodePort"].as_i64() == Some(n));
                if !(i64::from(self.ports.0)..=i64::from(self.ports.1)).contains(&n) {
                    return Err(invalid(
                        format!("spec.ports[{i}].nodePort"),
                        format!(
                            "{n}: provided port is not in the valid range. The range of valid ports is {}-{}",
                            self.ports.0, self.ports.1
                        ),
                    ));
                }
                if !was_ours && !used_ports.insert(n) {
                    return Err(invalid(
                        format!("spec.ports[{i}].nodePort"),
                        format!("{n}: provided port is already allocated"),
                    ));
                }
            }
        }
        if !wants_ports {
            return Ok(());
        }
        for p in ports.iter_mut() {
            if p["nodePort"].as_i64().is_some() {
                continue;
            }
            // An update keeps the node port of the same port.
            let kept = prev_ports
                .iter()
                .find(|q| q["port"] == p["port"] && q["protocol"] == p["protocol"])
                .and_then(|q| q["nodePort"].as_i64());
            let n = match kept {
                Some(n) => n,
                None => (i64::from(self.ports.0)..=i64::from(self.ports.1))
                    .find(|n| !used_ports.contains(n))
                    .ok_or_else(|| {
                        invalid(
                            "spec.ports",
                            format!(
                                "failed to allocate a node port: range {}-{} is full",
                                self.ports.0, self.ports.1
                            ),
                        )
                    })?,
            };
            used_ports.insert(n);
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
