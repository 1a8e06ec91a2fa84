//! `capstan secrets rotate-key`: a new key for Secrets at rest; the API server writes every encrypted object again
//! under it (they stay readable throughout) and then forgets the old key.

use anyhow::{Context, Result};
use capstan::client::Client;
use clap::{Args, Subcommand};
use serde_json::json;

#[derive(Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    pub command: SecretsCommand,
}

#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Makes a new encryption key active and re-encrypts every encrypted object under it.
    RotateKey {
        /// The new key's cipher: `secretbox` or `aesgcm` (default: the current key's).
        #[arg(long)]
        provider: Option<capstan::daemons::server::EncryptionProvider>,
    },
}

pub async fn secrets(client: &Client, args: SecretsArgs) -> Result<()> {
    match args.command {
        SecretsCommand::RotateKey { provider } => {
            let body = match provider {
                Some(p) => json!({ "provider": p }),
                None => json!({}),
            };
            let answer = client
                .request(
                    reqwest::Method::POST,
                    concat!("/", "capstan/v1/encryption/rotate"),
                    Some(("application/json", serde_json::to_vec(&body)?)),
                    None,
                )
                .await
                .context("rotating the encryption key")?;
            println!(
                "encryption key {} ({}) is active; {} objects re-encrypted; the old key is gone",
                answer["key"].as_str().unwrap_or("?"),
                answer["provider"].as_str().unwrap_or("?"),
                answer["rewritten"]
            );
            Ok(())
        }
    }
}
