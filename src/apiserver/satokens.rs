//! ServiceAccount tokens, as Kubernetes makes them: JWTs signed by the API server (ES256, a P-256 key kept in the
//! data directory as `service-account.key`, 0600), with an issuer, audiences, an expiry and the `kubernetes.io`
//! claims naming the ServiceAccount and the pod the token is bound to.
//!
//! - `POST /api/v1/namespaces/NS/serviceaccounts/NAME/token` (TokenRequest, `kubectl create token`) issues one;
//!   a node may only ask for the ServiceAccount of a pod bound to it, bound to that pod (NodeRestriction).
//! - A bearer JWT authenticates as `system:serviceaccount:NS:NAME` in `system:serviceaccounts` and
//!   `system:serviceaccounts:NS` while it is unexpired, meant for the API (its audiences include the issuer), and
//!   its ServiceAccount (and bound pod) still exist with the uids it names - deleting either revokes it.
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews` (TokenReview) says who any token is.

use std::path::Path;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::authn::Identity;
use super::error::{ApiError, Result};
use super::Server;
use crate::api::meta::{format_time, now};
use crate::api::registry;

/// The issuer (and the API's audience) of every token, as Kubernetes' default.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The shortest token Kubernetes issues (10 minutes), and the default (1 hour).
const MIN_SECONDS: i64 = 600;
const DEFAULT_SECONDS: i64 = 3600;
/// The prefix of a ServiceAccount's user name.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Why the signing key cannot be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the service account signing key {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the service account signing key {path} is not a PKCS#8 P-256 key in PEM: {why}")]
    Invalid {
        path: std::path::PathBuf,
        why: String,
    },
}

/// Signs and checks the cluster's ServiceAccount tokens.
pub struct TokenSigner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    key_id: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSigner({})", self.key_id)
    }
}

/// A reference to an object by name and uid, as the `kubernetes.io` claims carry them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubernetesClaims {
    pub namespace: String,
    pub serviceaccount: ObjectRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
}

/// The claims of a token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub iss: String,
    pub sub: String,
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
}

impl TokenSigner {
    /// The key in `dir/service-account.key`, made (0600) when there is none.
    pub fn load_or_create(dir: &Path) -> std::result::Result<Self, KeyError> {
        let path = dir.join("service-account.key");
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        let pem =
            match std::fs::read_to_string(&path) {
                Ok(p) => p,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                        .map_err(|e| KeyError::Invalid {
                            path: path.clone(),
                            why: e.to_string(),
                        })?;
                    let pem = key.serialize_pem();
                    crate::sys::write_private(&path, pem.as_bytes()).map_err(io)?;
                    pem
                }
                Err(e) => return Err(io(e)),
            };
        Self::from_pem(&pem).map_err(|why| KeyError::Invalid { path, why })
    }

    /// A signer from a PKCS#8 PEM P-256 key.
    pub fn from_pem(pem: &str) -> std::result::Result<Self, String> {
        let key = rcgen::KeyPair::from_pem(pem).map_err(|e| e.to_string())?;
        if !key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256) {
            return Err("not a P-256 key".into());
        }
        let public = key.public_key_raw().to_vec();
        let digest = ring::digest::digest(&ring::digest::SHA256, key.public_key_raw());
        let key_id = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            digest.as_ref(),
        );
        Ok(TokenSigner {
            encoding: EncodingKey::from_ec_der(&key.serialize_der()),
            decoding: DecodingKey::from_ec_der(&public),
            key_id,
        })
    }

    /// A signed token with these claims.
    pub fn sign(&self, claims: &Claims) -> std::result::Result<String, String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.key_id.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|e| e.to_string())
    }

    /// The claims of `token` if this key signed it, it is unexpired (a minute of leeway, as Kubernetes allows) and
    /// meant for one of `audiences`.
    pub fn verify(&self, token: &str, audiences: &[&str]) -> std::result::Result<Claims, String> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(audiences);
        v.set_issuer(&[ISSUER]);
        v.leeway = 60;
        v.validate_nbf = true;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| e.to_string())
    }
}

/// Whether a bearer token has the shape of a JWT (three base64url parts, a JSON header).
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}

/// The user name of a ServiceAccount, and its groups.
pub fn service_account_user(ns: &str, name: &str) -> Identity {
    Identity::User {
        name: format!("{SERVICE_ACCOUNT_PREFIX}{ns}:{name}"),
        groups: vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{ns}"),
        ],
    }
}

fn uid_of(v: &Value) -> &str {
    v["metadata"]["uid"].as_str().unwrap_or("")
}

impl Server {
    fn signer(&self) -> Result<&TokenSigner> {
        self.sa_tokens
            .as_deref()
            .ok_or_else(|| ApiError::internal("this API server has no service account signing key"))
    }

    /// The pod a TokenRequest's `boundObjectRef` names (None: unbound), checked: it exists, has the uid given, and
    /// runs as ServiceAccount `name`.
    async fn bound_pod(&self, ns: &str, name: &str, bound: &Value) -> Result<Option<Value>> {
        Ok(match bound["kind"].as_str() {
            None | Some("") => None,
            Some("Pod") => {
                let pods = registry::lookup("pods").expect("served");
                let pod_name = bound["name"].as_str().unwrap_or("");
                let (pod, _) = self.get_object(pods, Some(ns), pod_name).await?;
                if let Some(uid) = bound["uid"].as_str().filter(|u| !u.is_empty()) {
                    if uid != uid_of(&pod) {
                        return Err(ApiError::conflict(
                        "pods",
                        pod_name,
                        &format!(
                            "the UID in the bound object reference ({uid}) does not match the UID in \
                             record ({}). The object might have been deleted and then recreated",
                            uid_of(&pod)
                        ),
                    ));
                    }
                }
                let sa_of_pod = pod["spec"]["serviceAccountName"]
                    .as_str()
                    .unwrap_or("default");
                if sa_of_pod != name {
                    return Err(ApiError::bad_request(format!(
                    "cannot bind token for serviceaccount \"{name}\" to pod running with serviceaccount \
                     \"{sa_of_pod}\""
                )));
                }
                Some(pod)
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "cannot bind a token to a {other}: only Pods are supported"
                )))
            }
        })
    }

    /// `POST .../serviceaccounts/NAME/token`: a TokenRequest answered with a token.
    pub async fn token_request(
        &self,
        who: Option<&Identity>,
        ns: &str,
        name: &str,
        body: &Value,
    ) -> Result<Value> {
        let signer = self.signer()?;
        let sas = registry::lookup("serviceaccounts").expect("served");
        let (sa, _) = self.get_object(sas, Some(ns), name).await?;
        let spec = &body["spec"];
        let seconds = spec["expirationSeconds"]
            .as_i64()
            .unwrap_or(DEFAULT_SECONDS);
        if seconds < MIN_SECONDS {
            return Err(ApiError::invalid(
                "TokenRequest",
                "authentication.k8s.io",
                name,
                &[crate::api::validation::FieldError {
                    field: "spec.expirationSeconds".into(),
                    reason: crate::api::validation::Reason::Invalid,
                    detail: format!("{seconds}: may not specify a duration less than 10 minutes"),
                }],
            ));
        }
        let audiences: Vec<String> = match spec["audiences"].as_array() {
            Some(a) if !a.is_empty() => a
                .iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect(),
            _ => vec![ISSUER.to_string()],
        };
        let bound = &spec["boundObjectRef"];
        let pod = self.bound_pod(ns, name, bound).await?;
        // NodeRestriction: a node asks only for tokens bound to its own pods.
        if let Some(Identity::Node(node)) = who {
            let on_node = pod
                .as_ref()
                .is_some_and(|p| p["spec"]["nodeName"].as_str() == Some(node.as_str()));
            if !on_node {
                return Err(ApiError::forbidden(format!(
                    "node \"{node}\" may only request tokens bound to pods scheduled to it"
                )));
            }
        }
        let issued = now();
        let exp = issued.timestamp() + seconds;
        let claims = Claims {
            aud: audiences.clone(),
            exp,
            iat: issued.timestamp(),
            nbf: issued.timestamp(),
            iss: ISSUER.into(),
            sub: format!("{SERVICE_ACCOUNT_PREFIX}{ns}:{name}"),
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: KubernetesClaims {
                namespace: ns.to_string(),
                serviceaccount: ObjectRef {
                    name: name.to_string(),
                    uid: uid_of(&sa).to_string(),
                },
                pod: pod.as_ref().map(|p| ObjectRef {
                    name: p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                    uid: uid_of(p).to_string(),
                }),
                node: pod
                    .as_ref()
                    .and_then(|p| p["spec"]["nodeName"].as_str())
                    .map(|n| ObjectRef {
                        name: n.to_string(),
                        uid: String::new(),
                    }),
            },
        };
        let token = signer.sign(&claims).map_err(ApiError::internal)?;
        let expires = chrono::DateTime::from_timestamp(exp, 0).unwrap_or_else(now);
        let mut spec_out = json!({"audiences": audiences, "expirationSeconds": seconds});
        if !bound.is_null() {
            spec_out["boundObjectRef"] = bound.clone();
        }
        Ok(json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": format_time(&issued)},
            "spec": spec_out,
            "status": {"token": token, "expirationTimestamp": format_time(&expires)}
        }))
    }

    /// Who a ServiceAccount token is, if it is valid for one of `audiences` and what it names still exists.
    pub async fn service_account_identity(
        &self,
        token: &str,
        audiences: &[&str],
    ) -> std::result::Result<Identity, String> {
        self.verified_service_account(token, audiences)
            .await
            .map(|(who, _)| who)
    }

    /// [`Server::service_account_identity`] with the token's claims.
    async fn verified_service_account(
        &self,
        token: &str,
        audiences: &[&str],
    ) -> std::result::Result<(Identity, Claims), String> {
        let signer = self.signer().map_err(|e| e.message)?;
        let claims = signer.verify(token, audiences)?;
        let k = &claims.kubernetes;
        let sas = registry::lookup("serviceaccounts").expect("served");
        let (sa, _) = self
            .get_object(sas, Some(&k.namespace), &k.serviceaccount.name)
            .await
            .map_err(|e| format!("service account: {}", e.message))?;
        if uid_of(&sa) != k.serviceaccount.uid {
            return Err(format!(
                "service account UID ({}) does not match claim ({})",
                uid_of(&sa),
                k.serviceaccount.uid
            ));
        }
        if let Some(p) = &k.pod {
            let pods = registry::lookup("pods").expect("served");
            let (pod, _) = self
                .get_object(pods, Some(&k.namespace), &p.name)
                .await
                .map_err(|e| format!("pod: {}", e.message))?;
            if uid_of(&pod) != p.uid {
                return Err(format!(
                    "pod UID ({}) does not match claim ({})",
                    uid_of(&pod),
                    p.uid
                ));
            }
        }
        let who = service_account_user(&k.namespace, &k.serviceaccount.name);
        Ok((who, claims))
    }

    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`: who `spec.token` is.
    pub async fn token_review(&self, body: &Value) -> Value {
        let token = body["spec"]["token"].as_str().unwrap_or("");
        let wanted: Vec<String> = body["spec"]["audiences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        let mut status = json!({"authenticated": false});
        let (who, audiences) = if looks_like_jwt(token) {
            let asked: Vec<&str> = if wanted.is_empty() {
                vec![ISSUER]
            } else {
                wanted.iter().map(String::as_str).collect()
            };
            match self.verified_service_account(token, &asked).await {
                Ok((who, claims)) => {
                    // The audiences of the review the token is good for.
                    let aud: Vec<String> = claims
                        .aud
                        .into_iter()
                        .filter(|a| asked.contains(&a.as_str()))
                        .collect();
                    (Some(who), aud)
                }
                Err(e) => {
                    status["error"] = json!(format!("invalid bearer token, {e}"));
                    (None, vec![])
                }
            }
        } else {
            let who = self.authenticate(token).await;
            if who.is_none() {
                status["error"] = json!("invalid bearer token");
            }
            (who, vec![ISSUER.to_string()])
        };
        if let Some(who) = who.filter(|w| !matches!(w, Identity::Bootstrap(_))) {
            let (name, groups) = who.user_info();
            status = json!({"authenticated": true, "user": {"username": name, "groups": groups},
                "audiences": audiences});
        }
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "metadata": {"creationTimestamp": null}, "spec": body["spec"].clone(), "status": status})
    }
}

pub use crate::api::tokens::{
    SERVICE_ACCOUNT_MOUNT as MOUNT_PATH, SERVICE_ACCOUNT_VOLUME as VOLUME_PREFIX,
};
/// How long the kubelet asks its pods' tokens to live (Kubernetes' 3607 s).
const POD_TOKEN_SECONDS: i64 = 3607;

/// The ServiceAccount admission of a new pod: `serviceAccountName` defaults to `default`, and unless the pod or its
/// ServiceAccount says `automountServiceAccountToken: false` (or a container already mounts something at
/// [`MOUNT_PATH`]), the projected volume `kube-api-access-XXXXX` (a token, `ca.crt`, `namespace`) is added and
/// mounted read-only in every container.
pub fn mount_service_account(pod: &mut Value, service_account: Option<&Value>) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let name = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .or_else(|| spec.get("serviceAccount").and_then(Value::as_str))
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(name));
    spec.insert("serviceAccount".into(), json!(name));
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| service_account.and_then(|sa| sa["automountServiceAccountToken"].as_bool()))
        .unwrap_or(true);
    if !automount {
        return;
    }
    let lists = ["initContainers", "containers"];
    let mounted = lists.iter().any(|l| {
        spec.get(*l)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| c["volumeMounts"].as_array().into_iter().flatten())
            .any(|m| m["mountPath"].as_str().map(|p| p.trim_end_matches('/')) == Some(MOUNT_PATH))
    });
    if mounted {
        return;
    }
    // Kubernetes' random suffix alphabet (no vowels, no look-alikes).
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect();
    let volume = format!("{VOLUME_PREFIX}{suffix}");
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    if !volumes.is_array() {
        *volumes = json!([]);
    }
    if let Some(list) = volumes.as_array_mut() {
        list.push(json!({"name": volume, "projected": {"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": POD_TOKEN_SECONDS, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
        ]}}));
    }
    for l in lists {
        for c in spec
            .get_mut(l)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            if let Some(m) = mounts.as_array_mut() {
                m.push(json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH}));
            }
        }
    }
}

impl Server {
    /// [`mount_service_account`] with the pod's ServiceAccount as stored (it may not exist yet: the namespace's
    /// `default` is made by a controller just after the namespace).
    pub async fn admit_service_account(&self, ns: &str, pod: &mut Value) {
        let name = pod["spec"]["serviceAccountName"]
            .as_str()
            .or_else(|| pod["spec"]["serviceAccount"].as_str())
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_string();
        let sas = registry::lookup("serviceaccounts").expect("served");
        let sa = self
            .get_object(sas, Some(ns), &name)
            .await
            .ok()
            .map(|(v, _)| v);
        mount_service_account(pod, sa.as_ref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_in: i64, aud: &str) -> Claims {
        let t = now().timestamp();
        Claims {
            aud: vec![aud.into()],
            exp: t + exp_in,
            iat: t,
            nbf: t,
            iss: ISSUER.into(),
            sub: "system:serviceaccount:a:ci".into(),
            jti: "1".into(),
            kubernetes: KubernetesClaims {
                namespace: "a".into(),
                serviceaccount: ObjectRef {
                    name: "ci".into(),
                    uid: "u1".into(),
                },
                pod: None,
                node: None,
            },
        }
    }

    #[test]
    fn tokens_verify_only_with_their_key_audience_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let signer = TokenSigner::load_or_create(dir.path()).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("service-account.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let token = signer.sign(&claims(3600, ISSUER)).unwrap();
        assert!(looks_like_jwt(&token));
        assert_eq!(signer.verify(&token, &[ISSUER]).unwrap(), claims_of(&token));
        // Another audience, an expired token, another key: refused.
        assert!(signer.verify(&token, &["vault"]).is_err());
        let old = signer.sign(&claims(-3600, ISSUER)).unwrap();
        assert!(signer.verify(&old, &[ISSUER]).is_err());
        let other = TokenSigner::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(other.verify(&token, &[ISSUER]).is_err());
        // The same key is read back.
        let again = TokenSigner::load_or_create(dir.path()).unwrap();
        assert!(again.verify(&token, &[ISSUER]).is_ok());
    }

    #[test]
    fn new_pods_get_the_service_account_volume_unless_they_opt_out() {
        let mut pod =
            json!({"spec": {"containers": [{"name": "c"}], "initContainers": [{"name": "i"}]}});
        mount_service_account(&mut pod, None);
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        let vol = &pod["spec"]["volumes"][0];
        let name = vol["name"].as_str().unwrap();
        assert!(name.starts_with(VOLUME_PREFIX) && name.len() == VOLUME_PREFIX.len() + 5);
        assert_eq!(
            vol["projected"]["sources"][0]["serviceAccountToken"]["path"],
            "token"
        );
        for l in ["containers", "initContainers"] {
            assert_eq!(
                pod["spec"][l][0]["volumeMounts"][0]["mountPath"],
                MOUNT_PATH
            );
            assert_eq!(pod["spec"][l][0]["volumeMounts"][0]["name"], name);
        }
        let mut off =
            json!({"spec": {"automountServiceAccountToken": false, "containers": [{"name": "c"}]}});
        mount_service_account(&mut off, None);
        assert!(off["spec"]["volumes"].is_null());
        let mut by_sa =
            json!({"spec": {"serviceAccountName": "ci", "containers": [{"name": "c"}]}});
        mount_service_account(
            &mut by_sa,
            Some(&json!({"automountServiceAccountToken": false})),
        );
        assert!(by_sa["spec"]["volumes"].is_null());
        assert_eq!(by_sa["spec"]["serviceAccount"], "ci");
        // The pod overrides its ServiceAccount.
        let mut pod_says =
            json!({"spec": {"automountServiceAccountToken": true, "containers": [{"name": "c"}]}});
        mount_service_account(
            &mut pod_says,
            Some(&json!({"automountServiceAccountToken": false})),
        );
        assert_eq!(pod_says["spec"]["volumes"].as_array().unwrap().len(), 1);
    }

    fn claims_of(token: &str) -> Claims {
        let payload = token.split('.').nth(1).unwrap();
        let bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
                .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }
}
