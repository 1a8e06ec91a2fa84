//! Joining nodes, as k3s and kubeadm do it. `capstan token create` stores a bootstrap token as a Kubernetes
//! bootstrap-token Secret (`kube-system/bootstrap-token-<id>`, type `bootstrap.kubernetes.io/token`, with an
//! expiration) and prints it as `K10<sha256 of the CA>::<id>.<secret>`, so the agent can check the CA it fetches
//! from the open `/cacerts` before trusting it. A bootstrap token authenticates exactly one request: `POST
//! /capstan/v1/join`, which gives the node a credential of its own - a node token
//! (`capstan-node.<name>.<secret>`, kept in `kube-system/node-token-<name>`), revoked by deleting that Secret.
//! A node name is held by the machine that first joined with it: the join carries a per-machine password whose
//! hash is kept in `kube-system/node-password-<name>`, and a different password for that name is refused (k3s's
//! node password). The API server also presents a node's own token when it calls that node's agent (logs, exec).

use serde_json::{json, Value};

use super::error::{ApiError, Result};
use super::handlers::WriteOpts;
use super::Server;
use crate::api::meta::{format_time, now};
use crate::api::registry::{self, KindInfo};

use crate::api::tokens::secret_data as data;
pub use crate::api::tokens::{bootstrap_shape, BOOTSTRAP_TOKEN_TYPE, NODE_TOKEN_PREFIX};
use crate::sys::{same_secret as constant_eq, sha256_hex};

/// Who a bearer token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The cluster's admin token (the kubeconfig's).
    Admin,
    /// A valid, unexpired bootstrap token (its id): may only join.
    Bootstrap(String),
    /// A joined node's own token.
    Node(String),
}

fn secrets() -> &'static KindInfo {
    registry::lookup("secrets").expect("secrets are served")
}

impl Server {
    /// Who `token` is, if anyone.
    pub async fn authenticate(&self, token: &str) -> Option<Identity> {
        let token = token.trim();
        if constant_eq(token.as_bytes(), self.token.as_bytes()) {
            return Some(Identity::Admin);
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

    /// The token the API server presents to a node's agent: the node's own, when it joined with one.
    pub async fn token_for_node(&self, node: &str) -> String {
        match self
            .get_object(
                secrets(),
                Some("kube-system"),
                &format!("node-token-{node}"),
            )
            .await
        {
            Ok((secret, _)) => data(&secret, "token").unwrap_or_else(|| self.token.to_string()),
            Err(_) => self.token.to_string(),
        }
    }

    /// `POST /capstan/v1/join` with a bootstrap token: `{"node": NAME, "password": P}` -> `{"token": T}`.
    pub async fn join(&self, body: &Value) -> Result<Value> {
        let node = body["node"].as_str().unwrap_or("");
        let password = body["password"].as_str().unwrap_or("");
        if let Err(e) = crate::api::validation::dns1123_subdomain(node) {
            return Err(ApiError::bad_request(format!(
                "join: node name {node:?}: {e}"
            )));
        }
        if password.len() < 16 {
            return Err(ApiError::bad_request(
                "join: the node password must have at least 16 characters",
            ));
        }
        let hash = sha256_hex(password.as_bytes());
        let pw_name = format!("node-password-{node}");
        match self
            .get_object(secrets(), Some("kube-system"), &pw_name)
            .await
        {
            Ok((kept, _)) => {
                if !constant_eq(
                    data(&kept, "hash").unwrap_or_default().as_bytes(),
                    hash.as_bytes(),
                ) {
                    return Err(ApiError::forbidden(format!(
                        "node name {node:?} is already held by another machine (its node password differs); \
                         pick another --node-name, or delete the Secret kube-system/{pw_name} if that machine is gone"
                    )));
                }
            }
            Err(e) if e.code == 404 => {
                self.put_secret(&pw_name, "capstan.io/node-password", json!({"hash": hash}))
                    .await?;
            }
            Err(e) => return Err(e),
        }
        let secret: String = {
            use rand::Rng;
            let mut r = rand::rng();
            (0..32)
                .map(|_| format!("{:x}", r.random_range(0..16u8)))
                .collect()
        };
        let token = format!("{NODE_TOKEN_PREFIX}{node}.{secret}");
        let name = format!("node-token-{node}");
        let _ = self.delete_secret(&name).await;
        self.put_secret(
            &name,
            "capstan.io/node-token",
            json!({"token": token, "node": node}),
        )
        .await?;
        tracing::info!(node, "a node joined with a bootstrap token");
        Ok(json!({"token": token}))
    }

    async fn put_secret(&self, name: &str, ty: &str, string_data: Value) -> Result<()> {
        let obj = json!({"apiVersion": "v1", "kind": "Secret", "type": ty,
            "metadata": {"name": name, "namespace": "kube-system",
                "annotations": {"capstan.io/issued": format_time(&now())}},
            "stringData": string_data});
        let opts = WriteOpts {
            dry_run: false,
            validation: "Strict".into(),
            manager: "capstan-join".into(),
            subresource: String::new(),
        };
        let mut warnings = Vec::new();
        self.write(
            secrets(),
            Some("kube-system"),
            obj,
            None,
            &opts,
            &mut warnings,
        )
        .await?;
        Ok(())
    }

    async fn delete_secret(&self, name: &str) -> Result<()> {
        let key = super::handlers::key(secrets(), Some("kube-system"), Some(name));
        match self.store.get(&key).await? {
            Some(kv) => {
                self.store.delete(&key, kv.mod_revision).await?;
                Ok(())
            }
            None => Ok(()),
        }
    }
}
