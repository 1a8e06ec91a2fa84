//! Join tokens as Kubernetes keeps them: bootstrap-token Secrets (`kube-system/bootstrap-token-<id>`, type
//! `bootstrap.kubernetes.io/token`, `token-id`/`token-secret`/`expiration` in `data`), and the node tokens a join
//! hands out, and where pods find their ServiceAccount token. Shared by the API server (which authenticates them) and the CLI (which creates and lists them).

use base64::Engine;
use serde_json::Value;

/// The users the control plane's own components act as.
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
pub const SCHEDULER_USER: &str = "system:kube-scheduler";
pub const GITOPS_USER: &str = "system:capstan-gitops";

/// Where a pod's ServiceAccount credentials (token, `ca.crt`, `namespace`) are mounted.
pub const SERVICE_ACCOUNT_MOUNT: &str =
    concat!("/", "var/run/secrets/kubernetes.io/serviceaccount");
/// The prefix of the projected volume that holds them (`kube-api-access-XXXXX`).
pub const SERVICE_ACCOUNT_VOLUME: &str = "kube-api-access-";

/// The Secret type of bootstrap tokens.
pub const BOOTSTRAP_TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The prefix of node tokens (`capstan-node.<name>.<secret>`).
pub const NODE_TOKEN_PREFIX: &str = "capstan-node.";

/// Whether a bootstrap token id and secret have Kubernetes' shape (`[a-z0-9]{6}.[a-z0-9]{16}`).
pub fn bootstrap_shape(id: &str, secret: &str) -> bool {
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    ok(id, 6) && ok(secret, 16)
}

/// A Secret's `data[key]` (as JSON), decoded to text.
pub fn secret_data(secret: &Value, key: &str) -> Option<String> {
    let b64 = secret["data"][key].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(bytes).ok()
}

/// A node's user name and group, as its client certificate's CN and O carry them.
pub fn node_subject(node: &str) -> (String, String) {
    (format!("system:node:{node}"), "system:nodes".to_string())
}

/// The user the API server is when it calls node agents (logs, exec), as kubeadm names it: the only client a node
/// agent's endpoint accepts.
pub const AGENT_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
