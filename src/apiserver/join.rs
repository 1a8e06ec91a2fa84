//! Joining nodes, as k3s and kubeadm do it. `capstan token create` stores a bootstrap token as a Kubernetes
//! bootstrap-token Secret (`kube-system/bootstrap-token-<id>`, type `bootstrap.kubernetes.io/token`, with an
//! expiration) and prints it as `K10<sha256 of the CA>::<id>.<secret>`, so the agent can check the CA it fetches
//! from the open `/cacerts` before trusting it. A bootstrap token authenticates exactly one request: `POST
//! /capstan/v1/join`, which gives the node a credential of its own - a node token
//! (`capstan-node.<name>.<secret>`, kept in `kube-system/node-token-<name>`), revoked by deleting that Secret.
//! A node name is held by the machine that first joined with it: the join carries a per-machine password whose
//! hash is kept in `kube-system/node-password-<name>`, and a different password for that name is refused (k3s's
//! node password). With the join, the node also gets a client certificate of its own (`system:node:<name>` in
//! `system:nodes`), issued through an approved CertificateSigningRequest; `/capstan/v1/node-certificate` renews it
//! and issues the serving certificate of the node's agent endpoint.

use serde_json::{json, Value};

use super::authn::Identity;
use super::error::{ApiError, Result};
use super::handlers::WriteOpts;
use super::Server;
use crate::api::meta::{format_time, now};
use crate::api::registry::{self, KindInfo};

use crate::api::tokens::secret_data as data;
pub use crate::api::tokens::{bootstrap_shape, BOOTSTRAP_TOKEN_TYPE, NODE_TOKEN_PREFIX};
use crate::sys::{same_secret as constant_eq, sha256_hex};

/// Checks a node's certificate request: its subject must be `system:node:<node>` in `system:nodes`, and a serving
/// certificate may name only the node's addresses and its name. Returns the names to issue it for.
fn checked_request(node: &str, csr_pem: &str, usage: super::tls::Usage) -> Result<Vec<String>> {
    let (want_cn, want_o) = crate::api::tokens::node_subject(node);
    let parsed = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map_err(|e| ApiError::bad_request(format!("the certificate request: {e}")))?;
    let dn = &parsed.params.distinguished_name;
    let text = |t: rcgen::DnType| match dn.get(&t) {
        Some(rcgen::DnValue::Utf8String(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    };
    if text(rcgen::DnType::CommonName) != want_cn || text(rcgen::DnType::OrganizationName) != want_o
    {
        return Err(ApiError::bad_request(format!(
            "the certificate request must be for {want_cn} in {want_o} (it asks for {:?} in {:?})",
            text(rcgen::DnType::CommonName),
            text(rcgen::DnType::OrganizationName)
        )));
    }
    // A serving certificate names the node's addresses and its name, nothing else.
    let mut sans = Vec::new();
    if usage == super::tls::Usage::Server {
        for san in &parsed.params.subject_alt_names {
            match san {
                rcgen::SanType::IpAddress(ip) => sans.push(ip.to_string()),
                rcgen::SanType::DnsName(n) if n.as_str() == node => sans.push(node.to_string()),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "a node's serving certificate may name its addresses and {node:?} only, not {other:?}"
                    )))
                }
            }
        }
    }
    Ok(sans)
}

/// How long a node's client certificate is valid (Kubernetes' signing duration: a year).
pub const NODE_CERTIFICATE_LIFE: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);

fn opts(manager: &str, subresource: &str) -> WriteOpts {
    WriteOpts {
        dry_run: false,
        validation: "Strict".into(),
        manager: manager.into(),
        subresource: subresource.into(),
    }
}

fn secrets() -> &'static KindInfo {
    registry::lookup("secrets").expect("secrets are served")
}

impl Server {
    /// Signs a node's certificate request for `system:node:<node>` in `system:nodes`, as a CertificateSigningRequest
    /// (`kubernetes.io/kube-apiserver-client-kubelet`) recorded with its requester, approved (a bootstrap token
    /// joining, or the node renewing its own) and issued; returns the certificate (PEM).
    pub async fn sign_node_request(
        &self,
        requester: &Identity,
        node: &str,
        csr_pem: &str,
        usage: super::tls::Usage,
    ) -> Result<String> {
        let allowed = match requester {
            Identity::Bootstrap(_) | Identity::Admin => true,
            Identity::Node(n) => n == node,
            Identity::User { .. } => false,
        };
        if !allowed {
            return Err(ApiError::forbidden(format!(
                "{} may not request a certificate for node {node}",
                requester.user_info().0
            )));
        }
        let ca_dir = self
            .ca_dir
            .clone()
            .ok_or_else(|| ApiError::internal("this API server keeps no CA key to sign with"))?;
        let (want_cn, want_o) = crate::api::tokens::node_subject(node);
        let sans = checked_request(node, csr_pem, usage)?;
        let (signer, usages) = match usage {
            super::tls::Usage::Client => (
                "kubernetes.io/kube-apiserver-client-kubelet",
                json!(["digital signature", "client auth"]),
            ),
            super::tls::Usage::Server => (
                "kubernetes.io/kubelet-serving",
                json!(["digital signature", "server auth"]),
            ),
        };
        use base64::Engine;
        let b64 = |t: &str| base64::engine::general_purpose::STANDARD.encode(t);
        let (user, groups) = requester.user_info();
        let suffix: String = {
            use rand::Rng;
            let mut r = rand::rng();
            (0..5)
                .map(|_| (b'a' + r.random_range(0..26u8)) as char)
                .collect()
        };
        let name = format!("node-csr-{node}-{suffix}");
        let kind = registry::lookup("certificatesigningrequests").expect("CSRs are served");
        let created = self
            .write(
                kind,
                None,
                json!({"metadata": {"name": name},
                    "spec": {"request": b64(csr_pem), "signerName": signer,
                        "usages": usages, "username": user, "groups": groups,
                        "expirationSeconds": NODE_CERTIFICATE_LIFE.as_secs()}}),
                None,
                &opts("capstan-join", ""),
                &mut Vec::new(),
            )
            .await?;
        let (cert, _) = super::tls::issue(
            &ca_dir,
            &want_cn,
            &[want_o],
            &sans,
            usage,
            NODE_CERTIFICATE_LIFE,
            Some(csr_pem),
        )
        .map_err(|e| ApiError::internal(format!("signing the node's certificate: {e}")))?;
        let at = format_time(&now());
        let mut issued = created.clone();
        issued["status"] = json!({"conditions": [{"type": "Approved", "status": "True",
            "reason": "AutoApproved", "message": format!("Auto approving a certificate of node {node} ({user})"),
            "lastUpdateTime": at, "lastTransitionTime": at}],
            "certificate": b64(&cert)});
        let rv = created["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|r| r.parse::<i64>().ok())
            .unwrap_or(0);
        self.write(
            kind,
            None,
            issued,
            Some((&created, rv)),
            &opts("capstan-join", "status"),
            &mut Vec::new(),
        )
        .await?;
        tracing::info!(node, csr = %name, requester = %user, "issued a node client certificate");
        Ok(cert)
    }

    /// `POST /capstan/v1/join` with a bootstrap token: `{"node": NAME, "password": P, "csr": PEM}` ->
    /// `{"token": T, "certificate": PEM}` (the certificate only when a request was sent).
    pub async fn join(&self, requester: &Identity, body: &Value) -> Result<Value> {
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
        let mut answer = json!({"token": token});
        if let Some(csr) = body["csr"].as_str() {
            answer["certificate"] = json!(
                self.sign_node_request(requester, node, csr, super::tls::Usage::Client)
                    .await?
            );
        }
        Ok(answer)
    }

    async fn put_secret(&self, name: &str, ty: &str, string_data: Value) -> Result<()> {
        let obj = json!({"apiVersion": "v1", "kind": "Secret", "type": ty,
            "metadata": {"name": name, "namespace": "kube-system",
                "annotations": {"capstan.io/issued": format_time(&now())}},
            "stringData": string_data});
        let mut warnings = Vec::new();
        self.write(
            secrets(),
            Some("kube-system"),
            obj,
            None,
            &opts("capstan-join", ""),
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
