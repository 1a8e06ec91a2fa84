//! Kubeconfig: the file the server writes (`DATA_DIR/kubeconfig`) and every client reads - the same format kubectl
//! uses, so `KUBECONFIG=DATA_DIR/kubeconfig kubectl ...` works. Lookup order: `--kubeconfig`, then
//! `CAPSTAN_KUBECONFIG`, then `DATA_DIR/kubeconfig` - never `~/.kube/config` by surprise.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Error, Result};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Kubeconfig {
    #[serde(rename = "apiVersion", default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub clusters: Vec<NamedCluster>,
    #[serde(default)]
    pub users: Vec<NamedUser>,
    #[serde(default)]
    pub contexts: Vec<NamedContext>,
    #[serde(default)]
    pub current_context: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NamedCluster {
    pub name: String,
    pub cluster: Cluster,
}
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Cluster {
    pub server: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate_authority_data: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate_authority: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
}
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NamedUser {
    pub name: String,
    pub user: User,
}
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub token: String,
    /// A client certificate and its key (PEM, base64-encoded), signed by the cluster CA.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate_data: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_key_data: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_certificate: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_key: String,
}

/// How a client proves who it is: a bearer token, a client certificate (PEM certificate and key, or the files that
/// hold them - read again when they change, so a renewed certificate is used by new connections), or both.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub token: String,
    pub certificate: Option<(String, String)>,
    pub certificate_files: Option<(PathBuf, PathBuf)>,
}

/// The current context's server, credentials and CA.
#[derive(Clone, Debug)]
pub struct Target {
    pub server: String,
    pub credentials: Credentials,
    pub ca: Option<String>,
}

fn pem_of(data: &str, file: &str, what: &str) -> Result<Option<String>> {
    use base64::Engine;
    if !data.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| Error::Config(format!("{what}-data: {e}")))?;
        return Ok(Some(String::from_utf8_lossy(&raw).into_owned()));
    }
    if !file.is_empty() {
        return std::fs::read_to_string(file)
            .map(Some)
            .map_err(|e| Error::Config(format!("{what} {file}: {e}")));
    }
    Ok(None)
}
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NamedContext {
    pub name: String,
    pub context: Context,
}
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Context {
    pub cluster: String,
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

impl Kubeconfig {
    /// A kubeconfig for one Capstan server.
    pub fn for_server(server: &str, token: &str, ca_pem: &str) -> Self {
        use base64::Engine;
        Kubeconfig {
            api_version: "v1".into(),
            kind: "Config".into(),
            clusters: vec![NamedCluster {
                name: "capstan".into(),
                cluster: Cluster {
                    server: server.into(),
                    certificate_authority_data: base64::engine::general_purpose::STANDARD
                        .encode(ca_pem),
                    ..Default::default()
                },
            }],
            users: vec![NamedUser {
                name: "capstan-admin".into(),
                user: User {
                    token: token.into(),
                    ..Default::default()
                },
            }],
            contexts: vec![NamedContext {
                name: "capstan".into(),
                context: Context {
                    cluster: "capstan".into(),
                    user: "capstan-admin".into(),
                    namespace: String::new(),
                },
            }],
            current_context: "capstan".into(),
        }
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        serde_yaml_ng::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Writes the file with mode 0600 (it holds the token), atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = serde_yaml_ng::to_string(self).map_err(|e| Error::Config(e.to_string()))?;
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::Config(format!("{}: {e}", tmp.display())))?;
        f.write_all(text.as_bytes())
            .map_err(|e| Error::Config(e.to_string()))?;
        f.sync_all().map_err(|e| Error::Config(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// The server URL, token and CA (PEM) of the current context.
    pub fn current(&self) -> Result<(String, String, Option<String>)> {
        let t = self.target()?;
        Ok((t.server, t.credentials.token, t.ca))
    }

    /// The current context's server, credentials (token and/or client certificate) and CA.
    pub fn target(&self) -> Result<Target> {
        let ctx = self
            .contexts
            .iter()
            .find(|c| c.name == self.current_context)
            .or_else(|| self.contexts.first())
            .ok_or_else(|| Error::Config("no context".into()))?;
        let cluster = self
            .clusters
            .iter()
            .find(|c| c.name == ctx.context.cluster)
            .ok_or_else(|| {
                Error::Config(format!(
                    "context {} names unknown cluster {}",
                    ctx.name, ctx.context.cluster
                ))
            })?;
        let user = self
            .users
            .iter()
            .find(|u| u.name == ctx.context.user)
            .map(|u| u.user.clone())
            .unwrap_or_default();
        let cert = pem_of(
            &user.client_certificate_data,
            &user.client_certificate,
            "client-certificate",
        )?;
        let key = pem_of(&user.client_key_data, &user.client_key, "client-key")?;
        let certificate = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(Error::Config(format!(
                    "user {}: a client certificate needs both client-certificate and client-key",
                    ctx.context.user
                )))
            }
        };
        let c = &cluster.cluster;
        let ca = pem_of(
            &c.certificate_authority_data,
            &c.certificate_authority,
            "certificate-authority",
        )?;
        Ok(Target {
            server: c.server.clone(),
            credentials: Credentials {
                token: user.token,
                certificate,
                certificate_files: None,
            },
            ca,
        })
    }
}

/// The default data directory: `$XDG_DATA_HOME/capstan`, else `~/.local/share/capstan`.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("capstan");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/capstan")
}

/// Resolves which kubeconfig a client uses.
pub fn resolve(flag: Option<&Path>, data_dir: Option<&Path>) -> PathBuf {
    if let Some(f) = flag {
        return f.to_path_buf();
    }
    if let Some(e) = std::env::var_os("CAPSTAN_KUBECONFIG").filter(|e| !e.is_empty()) {
        return PathBuf::from(e);
    }
    data_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(default_data_dir)
        .join("kubeconfig")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_round_trips_in_kubectl_format() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kubeconfig");
        Kubeconfig::for_server("https://127.0.0.1:1234", "tok", "PEM")
            .save(&p)
            .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains("current-context: capstan"));
        assert!(text.contains("server: https://127.0.0.1:1234"));
        assert!(text.contains("certificate-authority-data: UEVN"));
        let (s, t, ca) = Kubeconfig::load(&p).unwrap().current().unwrap();
        assert_eq!(
            (s.as_str(), t.as_str(), ca.as_deref()),
            ("https://127.0.0.1:1234", "tok", Some("PEM"))
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
