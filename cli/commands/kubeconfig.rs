//! `capstan kubeconfig create`: a kubeconfig for a user, with a client certificate signed by the cluster CA (user =
//! the certificate's CN, groups = its O values), like `kubeadm kubeconfig user`. It runs where the server's data
//! directory is (it needs the CA's key) and takes the server's address from the admin kubeconfig there.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use capstan::client::config::{Kubeconfig, NamedUser, User};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct KubeconfigArgs {
    #[command(subcommand)]
    pub command: KubeconfigCommand,
}

#[derive(Subcommand)]
pub enum KubeconfigCommand {
    /// A kubeconfig for USER (in GROUPs) with a client certificate of the cluster CA.
    Create {
        /// The user name (the certificate's CN).
        #[arg(long)]
        user: String,
        /// The group the user is in (the certificate's O; one per certificate for now).
        #[arg(long = "group")]
        groups: Vec<String>,
        /// How long the certificate is valid (e.g. 720h, 30m).
        #[arg(long, default_value = "720h")]
        ttl: String,
        /// Where to write it (0600); default: standard output.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
}

pub fn kubeconfig(data_dir: &Path, args: KubeconfigArgs) -> Result<()> {
    let KubeconfigCommand::Create {
        user,
        groups,
        ttl,
        output,
    } = args.command;
    if user.trim().is_empty() || user.contains('\n') {
        return Err(anyhow!("--user: a user name is required"));
    }
    let ttl = super::duration(&ttl, "--ttl")?;
    if ttl.is_zero() {
        return Err(anyhow!("--ttl: a certificate needs a lifetime above zero"));
    }
    let admin = data_dir.join("kubeconfig");
    let mut kc = Kubeconfig::load(&admin).with_context(|| {
        format!(
            "reading the server's kubeconfig in {} (run this where the server's --data-dir is)",
            data_dir.display()
        )
    })?;
    let (cert, key) =
        capstan::daemons::server::issue_client_certificate(data_dir, &user, &groups, ttl)?;
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    kc.users = vec![NamedUser {
        name: user.clone(),
        user: User {
            client_certificate_data: b64(&cert),
            client_key_data: b64(&key),
            ..Default::default()
        },
    }];
    for c in &mut kc.contexts {
        c.context.user = user.clone();
    }
    match output {
        Some(path) => {
            kc.save(&path)?;
            eprintln!(
                "capstan: kubeconfig for {user} (groups: {}) written to {}",
                if groups.is_empty() {
                    "none".to_string()
                } else {
                    groups.join(", ")
                },
                path.display()
            );
        }
        None => print!("{}", serde_yaml_ng::to_string(&kc)?),
    }
    Ok(())
}
