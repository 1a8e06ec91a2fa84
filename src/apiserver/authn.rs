//! Authentication: who a request is. Three ways, as in Kubernetes:
//!
//! - a bearer token: the cluster's admin token, a joined node's own token (`capstan-node.<name>.<secret>`, kept in
//!   `kube-system/node-token-<name>`), or a bootstrap token (`<id>.<secret>`, a `bootstrap.kubernetes.io/token`
//!   Secret), which may only join;
//! - a ServiceAccount token (a JWT the API server signed, [`super::satokens`]);
//! - an X.509 client certificate signed by the cluster CA (checked by TLS during the handshake): the user is the
//!   subject's CN and the groups its O values; `system:node:<name>` in `system:nodes` is that node.
//!
//! Every identity is also in `system:authenticated`. `POST .../selfsubjectreviews` (`kubectl auth whoami`) answers
//! with the caller's user info.

use serde_json::{json, Value};

use super::Server;
use crate::api::meta::now;
use crate::api::registry::{self, KindInfo};
use crate::api::tokens::secret_data as data;
use crate::api::tokens::{bootstrap_shape, BOOTSTRAP_TOKEN_TYPE, NODE_TOKEN_PREFIX};
use crate::sys::same_secret as constant_eq;

/// The user name of the admin token.
pub const ADMIN_USER: &str = "capstan-admin";
/// The prefix of a node's user name, and the group of all nodes.
pub const NODE_USER_PREFIX: &str = "system:node:";
pub const NODES_GROUP: &str = "system:nodes";

/// Who a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The cluster's admin token (the kubeconfig's).
    Admin,
    /// A valid, unexpired bootstrap token (its id): may only join.
    Bootstrap(String),
    /// A joined node, by its own token or its client certificate.
    Node(String),
    /// A client certificate's subject: CN and O values.
    User { name: String, groups: Vec<String> },
}

impl Identity {
    /// The user name and groups, as Kubernetes names them.
    pub fn user_info(&self) -> (String, Vec<String>) {
        let (name, mut groups) = match self {
            Identity::Admin => (ADMIN_USER.to_string(), vec!["system:masters".to_string()]),
            Identity::Bootstrap(id) => (
                format!("system:bootstrap:{id}"),
                vec!["system:bootstrappers".to_string()],
            ),
            Identity::Node(n) => (
                format!("{NODE_USER_PREFIX}{n}"),
                vec![NODES_GROUP.to_string()],
            ),
            Identity::User { name, groups } => (name.clone(), groups.clone()),
        };
        groups.push("system:authenticated".into());
        (name, groups)
    }

    /// A SelfSubjectReview of this identity (`authentication.k8s.io/v1`).
    pub fn self_subject_review(&self) -> Value {
        let (name, groups) = self.user_info();
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
            "metadata": {"creationTimestamp": crate::api::meta::format_time(&now())},
            "status": {"userInfo": {"username": name, "groups": groups}}})
    }
}

/// The identity of a client certificate (DER) that TLS already verified against the cluster CA; remembered by
/// the certificate's bytes, so a client's requests do not parse its certificate each time.
pub fn from_certificate(der: &[u8]) -> Option<Identity> {
    use std::collections::HashMap;
    use std::sync::{OnceLock, RwLock};
    static SEEN: OnceLock<RwLock<HashMap<Vec<u8>, Option<Identity>>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Default::default);
    if let Some(id) = seen.read().unwrap_or_else(|e| e.into_inner()).get(der) {
        return id.clone();
    }
    let id = parse_certificate(der);
    let mut seen = seen.write().unwrap_or_else(|e| e.into_inner());
    if seen.len() >= 4096 {
        seen.clear();
    }
    seen.insert(der.to_vec(), id.clone());
    id
}

fn parse_certificate(der: &[u8]) -> Option<Identity> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(String::from))
        .collect();
    if let Some(node) = name.strip_prefix(NODE_USER_PREFIX) {
        if groups.iter().any(|g| g == NODES_GROUP) && !node.is_empty() {
            return Some(Identity::Node(node.to_string()));
        }
    }
    if name.is_empty() {
        return None;
    }
    Some(Identity::User { name, groups })
}

fn secrets() -> &'static KindInfo {
    registry::lookup("secrets").expect("secrets are served")
}

impl Server {
    /// Who bearer `token` is, if anyone.
    pub async fn authenticate(&self, token: &str) -> Option<Identity> {
        let token = token.trim();
        if constant_eq(token.as_bytes(), self.token.as_bytes()) {
            return Some(Identity::Admin);
        }
        if super::satokens::looks_like_jwt(token) {
            return match self
                .service_account_identity(token, &[super::satokens::ISSUER])
                .await
            {
                Ok(who) => Some(who),
                Err(why) => {
                    tracing::debug!("a service account token was refused: {why}");
                    None
                }
            };
        }
        if let Some(rest) = token.strip_prefix(NODE_TOKEN_PREFIX) {
            let (node, _) = rest.rsplit_once('.')?;
            let (secret, _) = self
                .get_object(
                    secrets(),
                    Some("kube-system"),
                    &format!("node-token-{node}"),
                )
                .await
                .ok()?;
            let kept = data(&secret, "token")?;
            return constant_eq(kept.as_bytes(), token.as_bytes())
                .then(|| Identity::Node(node.to_string()));
        }
        let (id, secret_part) = token.split_once('.')?;
        if !bootstrap_shape(id, secret_part) {
            return None;
        }
        let (secret, _) = self
            .get_object(
                secrets(),
                Some("kube-system"),
                &format!("bootstrap-token-{id}"),
            )
            .await
            .ok()?;
        if secret["type"] != BOOTSTRAP_TOKEN_TYPE
            || data(&secret, "usage-bootstrap-authentication").as_deref() != Some("true")
        {
            return None;
        }
        let kept = data(&secret, "token-secret")?;
        if !constant_eq(kept.as_bytes(), secret_part.as_bytes()) {
            return None;
        }
        if let Some(exp) = data(&secret, "expiration") {
            let exp = chrono::DateTime::parse_from_rfc3339(&exp).ok()?;
            if exp <= now() {
                return None;
            }
        }
        Some(Identity::Bootstrap(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, orgs: &[&str]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn certificates_name_users_groups_and_nodes() {
        assert_eq!(
            from_certificate(&cert("alice", &["team-a"])),
            Some(Identity::User {
                name: "alice".into(),
                groups: vec!["team-a".into()]
            })
        );
        assert_eq!(
            from_certificate(&cert("system:node:m1", &["system:nodes"])),
            Some(Identity::Node("m1".into()))
        );
        // The node name without the nodes group is only a user of that name.
        assert!(matches!(
            from_certificate(&cert("system:node:m1", &[])),
            Some(Identity::User { .. })
        ));
        assert_eq!(from_certificate(b"not der"), None);
        let (name, groups) = Identity::Node("m1".into()).user_info();
        assert_eq!(name, "system:node:m1");
        assert_eq!(groups, ["system:nodes", "system:authenticated"]);
    }
}
