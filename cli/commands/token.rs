//! `capstan token create|list|delete`: join tokens for new nodes, kept as Kubernetes bootstrap-token Secrets in
//! kube-system, and `join` - what `capstan agent --join-token` does with one: fetch the CA, check it against the
//! token's pin, exchange the token for the node's own credential.

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use capstan::api::registry;
use capstan::api::tokens::{bootstrap_shape, secret_data, BOOTSTRAP_TOKEN_TYPE};
use capstan::client::Client;
use capstan::sys::sha256_hex;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// A new join token, printed as `K10<sha256 of the CA>::<id>.<secret>` for `capstan agent --join-token`.
    Create {
        /// How long the token may be used (e.g. 24h, 30m; 0 for ever).
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// What the token is for, shown by `capstan token list`.
        #[arg(long)]
        description: Option<String>,
    },
    /// The join tokens: id, expiry, description.
    List,
    /// Deletes a join token (by id, or the whole token); nodes that joined with it keep their own credentials.
    Delete { id: String },
}

fn random(n: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut r = rand::rng();
    (0..n)
        .map(|_| ALPHABET[r.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn field(secret: &Value, key: &str) -> String {
    secret_data(secret, key).unwrap_or_default()
}

/// The CA as the server serves it to joining agents (what the token pins).
async fn served_ca(client: &Client) -> Result<String> {
    let resp = client.open("/cacerts").await?;
    Ok(resp.text().await?)
}

pub async fn token(client: &Client, args: TokenArgs) -> Result<()> {
    let secrets = registry::lookup("secrets").expect("secrets");
    match args.command {
        TokenCommand::Create { ttl, description } => {
            let ttl = super::duration(&ttl, "--ttl")?;
            let (id, secret) = (random(6), random(16));
            let mut data = json!({"token-id": id, "token-secret": secret,
                "usage-bootstrap-authentication": "true",
                "auth-extra-groups": "system:bootstrappers:capstan:node"});
            if !ttl.is_zero() {
                let until = chrono::Utc::now()
                    + chrono::Duration::from_std(ttl).map_err(|_| anyhow!("--ttl is too long"))?;
                data["expiration"] =
                    json!(until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
            if let Some(d) = description {
                data["description"] = json!(d);
            }
            let obj = json!({"apiVersion": "v1", "kind": "Secret", "type": BOOTSTRAP_TOKEN_TYPE,
                "metadata": {"name": format!("bootstrap-token-{id}"), "namespace": "kube-system"},
                "stringData": data});
            client.create(secrets, Some("kube-system"), &obj).await?;
            let ca = served_ca(client).await?;
            println!("K10{}::{id}.{secret}", sha256_hex(ca.as_bytes()));
            Ok(())
        }
        TokenCommand::List => {
            let list = client.list(secrets, Some("kube-system"), "").await?;
            println!("{:<8} {:<22} DESCRIPTION", "ID", "EXPIRES");
            for s in list["items"].as_array().into_iter().flatten() {
                if s["type"] != BOOTSTRAP_TOKEN_TYPE {
                    continue;
                }
                let exp = field(s, "expiration");
                println!(
                    "{:<8} {:<22} {}",
                    field(s, "token-id"),
                    if exp.is_empty() {
                        "<never>".into()
                    } else {
                        exp
                    },
                    field(s, "description")
                );
            }
            Ok(())
        }
        TokenCommand::Delete { id } => {
            // Accept the id, `id.secret`, or the whole K10 token.
            let id = id.rsplit("::").next().unwrap_or(&id);
            let id = id.split('.').next().unwrap_or(id);
            client
                .delete(
                    secrets,
                    Some("kube-system"),
                    &format!("bootstrap-token-{id}"),
                    "Background",
                )
                .await?;
            println!("join token {id} deleted");
            Ok(())
        }
    }
}

/// A join token's parts: the CA pin and the bootstrap token `id.secret`.
pub fn parse_join_token(token: &str) -> Result<(String, String)> {
    let token = token.trim();
    let (pin, bootstrap) = token
        .strip_prefix("K10")
        .and_then(|rest| rest.split_once("::"))
        .ok_or_else(|| anyhow!("the join token is not of the form K10<ca-hash>::<id>.<secret> (from `capstan token create`)"))?;
    let (id, secret) = bootstrap
        .split_once('.')
        .ok_or_else(|| anyhow!("the join token has no <id>.<secret> part"))?;
    if pin.len() != 64
        || !pin.chars().all(|c| c.is_ascii_hexdigit())
        || !bootstrap_shape(id, secret)
    {
        bail!("the join token is malformed (expected K10<64 hex digits>::<6 characters>.<16 characters>)");
    }
    Ok((pin.to_lowercase(), bootstrap.to_string()))
}

/// Joins the cluster at `server` with a join token: fetches the CA (untrusted until it matches the token's pin),
/// keeps it in `dir/ca.crt`, and exchanges the token for this node's own token, kept in `dir/node-token` (0600).
/// The machine's node password (`dir/node-password`, made once) keeps the node name this machine's.
pub async fn join(
    server: &str,
    join_token: &str,
    node: &str,
    dir: &Path,
) -> Result<(String, String)> {
    let (pin, bootstrap) = parse_join_token(join_token)?;
    capstan::sys::init_crypto();
    let base = super::agent::first_server(server).trim_end_matches('/');
    let insecure = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let ca = insecure
        .get(format!("{base}/cacerts"))
        .send()
        .await
        .with_context(|| format!("fetching the cluster CA from {base}/cacerts"))?
        .error_for_status()?
        .text()
        .await?;
    let got = sha256_hex(ca.as_bytes());
    if got != pin {
        bail!(
            "the server's CA does not match the join token: its SHA-256 is {got}, the token pins {pin} \
             (a different cluster, or someone in between)"
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("ca.crt"), &ca)?;
    let password_file = dir.join("node-password");
    let password = match std::fs::read_to_string(&password_file) {
        Ok(p) if !p.trim().is_empty() => p.trim().to_string(),
        _ => {
            let p = random(32);
            write_private(&password_file, &p)?;
            p
        }
    };
    // From here on the CA is trusted: the exchange is verified TLS.
    let client = Client::new(server, &bootstrap, Some(&ca))?;
    // The node's own key stays here; the server signs a request for system:node:NAME.
    let (csr, key) = capstan::node::credentials::request(node)?;
    let body = json!({"node": node, "password": password, "csr": csr}).to_string();
    let answer = client
        .request(
            reqwest::Method::POST,
            "/capstan/v1/join",
            Some(("application/json", body.into_bytes())),
            None,
        )
        .await
        .map_err(|e| match e.code() {
            Some(401) => anyhow!(
                "the join token is unknown or expired (capstan token list shows the valid ones)"
            ),
            _ => anyhow!("joining as {node}: {e}"),
        })?;
    let token = answer["token"]
        .as_str()
        .ok_or_else(|| anyhow!("the server gave no node token"))?
        .to_string();
    write_private(&dir.join("node-token"), &token)?;
    let cert = answer["certificate"]
        .as_str()
        .ok_or_else(|| anyhow!("the server gave no node certificate"))?;
    capstan::node::credentials::keep(dir, cert, &key)?;
    Ok((token, ca))
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    capstan::sys::write_private(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_parse_and_refuse_bad_shapes() {
        let pin = "a".repeat(64);
        let (p, b) = parse_join_token(&format!("K10{pin}::abcdef.0123456789abcdef")).unwrap();
        assert_eq!(
            (p.as_str(), b.as_str()),
            (pin.as_str(), "abcdef.0123456789abcdef")
        );
        assert!(parse_join_token("abcdef.0123456789abcdef").is_err());
        assert!(parse_join_token(&format!("K10{pin}::ABCDEF.0123456789abcdef")).is_err());
        assert!(parse_join_token("K10abc::abcdef.0123456789abcdef").is_err());
    }
}
