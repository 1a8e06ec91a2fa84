//! Cluster DNS, served by every node agent beside its proxy (messages parsed and built with the hickory-proto crate).
//! Names under `cluster.local` are answered from the agent's Service and EndpointSlice caches, as CoreDNS's
//! kubernetes plugin does: `<service>.<ns>.svc.cluster.local` (the ClusterIP; for a headless Service its ready
//! endpoints), `<hostname>.<service>.<ns>.svc.cluster.local` (a pod with `hostname`/`subdomain`, e.g. a StatefulSet
//! pod), `<a-b-c-d>.<ns>.pod.cluster.local`, and SRV records `_<port>._<proto>.<service>.<ns>.svc.cluster.local`.
//! Other names are forwarded to the machine's own resolver (the first `nameserver` of its `/etc/resolv.conf`).
//! Pods see it through a `resolv.conf` (nameserver, the Kubernetes search path, `ndots:5`) mounted over theirs.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use super::{service_of, Tables};
use crate::api::core::Service;
use crate::api::other::{Endpoint, EndpointSlice};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The cluster domain.
pub use crate::api::CLUSTER_DOMAIN as DOMAIN;
const TTL: u32 = 5;

/// What a cluster name resolves to.
#[derive(Debug, PartialEq)]
pub enum Answer {
    A(Vec<Ipv4Addr>),
    Srv(Vec<(u16, String)>),
    /// In the cluster domain, but nothing by that name.
    NoSuchName,
    /// Not a cluster name: ask the machine's resolver.
    Forward,
}

impl Tables {
    /// Resolves `name` (absolute or not, any case) of type `ty` from the caches.
    pub fn resolve(&self, name: &str, ty: RecordType) -> Answer {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let Some(rest) = name.strip_suffix(&format!(".{DOMAIN}")) else {
            return Answer::Forward;
        };
        let labels: Vec<&str> = rest.split('.').collect();
        let found = match labels.as_slice() {
            [ip, _ns, "pod"] => ip
                .replace('-', ".")
                .parse::<Ipv4Addr>()
                .ok()
                .map(|a| Answer::A(vec![a])),
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                self.srv(ns, svc, &port[1..], &proto[1..])
            }
            [svc, ns, "svc"] => self.service(ns, svc),
            [host, svc, ns, "svc"] => self.hostname(ns, svc, host),
            _ => None,
        };
        match (found, ty) {
            (Some(Answer::A(a)), RecordType::A) => Answer::A(a),
            (Some(Answer::Srv(s)), RecordType::SRV) => Answer::Srv(s),
            // The name exists but has no record of this type: an empty answer.
            (Some(_), _) => Answer::A(Vec::new()),
            (None, _) => Answer::NoSuchName,
        }
    }

    fn find_service(&self, ns: &str, svc: &str) -> Option<Arc<Service>> {
        self.services.get(ns, svc)
    }

    fn slices_of(&self, ns: &str, svc: &str) -> Vec<Arc<EndpointSlice>> {
        self.slices
            .list_namespace(ns)
            .into_iter()
            .filter(|sl| service_of(sl) == svc)
            .collect()
    }

    fn ready_endpoints(&self, ns: &str, svc: &str) -> Vec<Endpoint> {
        self.slices_of(ns, svc)
            .iter()
            .flat_map(|sl| sl.endpoints.clone())
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .collect()
    }

    fn service(&self, ns: &str, svc: &str) -> Option<Answer> {
        let service = self.find_service(ns, svc)?;
        let ip = service
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .unwrap_or("");
        if let Ok(a) = ip.parse::<Ipv4Addr>() {
            return Some(Answer::A(vec![a]));
        }
        let mut ips: Vec<Ipv4Addr> = self
            .ready_endpoints(ns, svc)
            .iter()
            .filter_map(|e| e.addresses.first()?.parse().ok())
            .collect();
        ips.sort();
        ips.dedup();
        Some(Answer::A(ips))
    }

    fn hostname(&self, ns: &str, svc: &str, host: &str) -> Option<Answer> {
        self.find_service(ns, svc)?;
        let ips: Vec<Ipv4Addr> = self
            .slices_of(ns, svc)
            .iter()
            .flat_map(|sl| sl.endpoints.clone())
            .filter(|e| e.hostname.as_deref() == Some(host))
            .filter_map(|e| e.addresses.first()?.parse().ok())
            .collect();
        (!ips.is_empty()).then_some(Answer::A(ips))
    }

    fn srv(&self, ns: &str, svc: &str, port: &str, proto: &str) -> Option<Answer> {
        let service = self.find_service(ns, svc)?;
        let p = service.spec.as_ref()?.ports.as_ref()?.iter().find(|p| {
            p.name.as_deref().unwrap_or("") == port
                && p.protocol
                    .as_deref()
                    .unwrap_or("TCP")
                    .eq_ignore_ascii_case(proto)
        })?;
        Some(Answer::Srv(vec![(
            p.port as u16,
            format!("{svc}.{ns}.svc.{DOMAIN}."),
        )]))
    }
}

/// The first nameserver of the machine's resolv.conf (where names outside the cluster go).
pub fn upstream() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .next()
}

/// Answers one query message (None: forward it as it is).
pub fn answer(tables: &Tables, query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    let q = msg.queries.first()?;
    let mut out = Message::response(msg.metadata.id, msg.metadata.op_code);
    out.metadata.recursion_desired = msg.metadata.recursion_desired;
    out.metadata.recursion_available = true;
    out.add_query(q.clone());
    match tables.resolve(&q.name().to_ascii(), q.query_type()) {
        Answer::Forward => return None,
        Answer::NoSuchName => {
            out.metadata.authoritative = true;
            out.metadata.response_code = ResponseCode::NXDomain;
        }
        Answer::A(ips) => {
            out.metadata.authoritative = true;
            for ip in ips {
                out.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
            }
        }
        Answer::Srv(targets) => {
            out.metadata.authoritative = true;
            for (port, target) in targets {
                if let Ok(t) = Name::from_ascii(&target) {
                    out.add_answer(Record::from_rdata(
                        q.name().clone(),
                        TTL,
                        RData::SRV(SRV::new(0, 100, port, t)),
                    ));
                }
            }
        }
    }
    out.metadata.message_type = MessageType::Response;
    out.to_vec().ok()
}

/// Serves DNS on `sock` until the task is dropped.
pub async fn serve(sock: tokio::net::UdpSocket, tables: Arc<Tables>) {
    let sock = Arc::new(sock);
    let upstream = upstream();
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, client)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let query = buf[..n].to_vec();
        if let Some(reply) = answer(&tables, &query) {
            let _ = sock.send_to(&reply, client).await;
            continue;
        }
        let Some(up) = upstream else {
            if let Ok(msg) = Message::from_vec(&query) {
                let mut fail = Message::error_msg(
                    msg.metadata.id,
                    msg.metadata.op_code,
                    ResponseCode::ServFail,
                );
                fail.queries = msg.queries;
                if let Ok(b) = fail.to_vec() {
                    let _ = sock.send_to(&b, client).await;
                }
            }
            continue;
        };
        let sock = sock.clone();
        tokio::spawn(async move {
            let Ok(u) = tokio::net::UdpSocket::bind("0.0.0.0:0").await else {
                return;
            };
            if u.send_to(&query, up).await.is_err() {
                return;
            }
            let mut b = vec![0u8; 4096];
            if let Ok(Ok((m, _))) =
                tokio::time::timeout(Duration::from_secs(5), u.recv_from(&mut b)).await
            {
                let _ = sock.send_to(&b[..m], client).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::informer::Cache;
    use serde_json::json;

    fn tables() -> Arc<Tables> {
        let typed = |v: serde_json::Value| serde_json::from_value(v).unwrap();
        let services: Cache<Service> = Cache::of([
            typed(json!({"metadata": {"name": "web", "namespace": "shop"},
                "spec": {"clusterIP": "127.96.0.7", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})),
            typed(
                json!({"metadata": {"name": "db", "namespace": "shop"}, "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}}),
            ),
        ]);
        let typed_slice =
            |v: serde_json::Value| -> EndpointSlice { serde_json::from_value(v).unwrap() };
        let slices = Cache::of([typed_slice(
            json!({"metadata": {"name": "db-0", "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "db"}}, "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["127.244.0.3"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["127.244.0.2"], "hostname": "db-1", "conditions": {"ready": true}},
                {"addresses": ["127.244.0.9"], "conditions": {"ready": false}}]}),
        )]);
        Tables::new(services, slices)
    }

    #[test]
    fn cluster_names_resolve_like_kubernetes_dns() {
        let t = tables();
        let a = |ips: &[&str]| Answer::A(ips.iter().map(|i| i.parse().unwrap()).collect());
        assert_eq!(
            t.resolve("web.shop.svc.cluster.local.", RecordType::A),
            a(&["127.96.0.7"])
        );
        assert_eq!(
            t.resolve("WEB.shop.svc.cluster.local", RecordType::A),
            a(&["127.96.0.7"])
        );
        assert_eq!(
            t.resolve("db.shop.svc.cluster.local", RecordType::A),
            a(&["127.244.0.2", "127.244.0.3"])
        );
        assert_eq!(
            t.resolve("db-0.db.shop.svc.cluster.local", RecordType::A),
            a(&["127.244.0.3"])
        );
        assert_eq!(
            t.resolve("127-244-0-5.shop.pod.cluster.local", RecordType::A),
            a(&["127.244.0.5"])
        );
        assert_eq!(
            t.resolve("nope.shop.svc.cluster.local", RecordType::A),
            Answer::NoSuchName
        );
        assert_eq!(
            t.resolve("web.shop.svc.cluster.local", RecordType::AAAA),
            Answer::A(vec![])
        );
        assert_eq!(
            t.resolve("_http._tcp.web.shop.svc.cluster.local", RecordType::SRV),
            Answer::Srv(vec![(80, "web.shop.svc.cluster.local.".into())])
        );
        assert_eq!(t.resolve("example.org", RecordType::A), Answer::Forward);
    }

    #[test]
    fn answers_are_real_dns_messages() {
        let t = tables();
        let mut q = Message::query();
        q.metadata.id = 4242;
        q.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("web.shop.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
        let reply = Message::from_vec(&answer(&t, &q.to_vec().unwrap()).unwrap()).unwrap();
        assert_eq!(reply.metadata.id, 4242);
        assert_eq!(reply.answers.len(), 1);
        assert_eq!(
            reply.answers[0].data,
            RData::A(A("127.96.0.7".parse().unwrap()))
        );
        let mut q2 = Message::query();
        q2.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("example.org.").unwrap(),
            RecordType::A,
        ));
        assert!(answer(&t, &q2.to_vec().unwrap()).is_none());
    }
}
