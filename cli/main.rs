//! The `capstan` binary: process commands (`server`, `up`) and client commands (`get`, `apply`, `create`, `delete`,
//! `describe`) that talk to a server through the kubeconfig it wrote.

mod commands;
mod demo;
mod output;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "capstan",
    version,
    about = "A Kubernetes-compatible cluster in one binary, with GitOps built in"
)]
struct Cli {
    /// Kubeconfig for client commands (default: $CAPSTAN_KUBECONFIG, then DATA_DIR/kubeconfig).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Data directory (default: $XDG_DATA_HOME/capstan or ~/.local/share/capstan).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: the store and the API server.
    Server {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
    },
    /// Run Capstan on its embedded defaults and apply a repository of manifests.
    Up {
        /// A directory of manifests (default: examples/repo when present).
        repo: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
    },
    /// Show objects as tables (like kubectl get).
    Get(commands::GetArgs),
    /// Create or update objects from files with server-side apply.
    Apply(commands::ApplyArgs),
    /// Create objects from files.
    Create(commands::ApplyArgs),
    /// Delete objects by name or from files.
    Delete(commands::DeleteArgs),
    /// Show an object in detail.
    Describe(commands::DescribeArgs),
    /// The demo HTTP server the examples run (VERSION and MESSAGE from the environment; /healthz, /fail, /exit).
    DemoApp {
        #[arg(long, env = "LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAPSTAN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let data_dir = cli
            .data_dir
            .clone()
            .unwrap_or_else(capstan::client::config::default_data_dir);
        match cli.command {
            Command::Server { listen } => commands::server(&data_dir, listen, None).await,
            Command::DemoApp { listen } => demo::run(listen).await,
            Command::Up { repo, listen } => {
                let repo =
                    repo.or_else(|| Some(PathBuf::from("examples/repo")).filter(|p| p.is_dir()));
                commands::server(&data_dir, listen, repo).await
            }
            other => {
                let kc = capstan::client::config::resolve(
                    cli.kubeconfig.as_deref(),
                    cli.data_dir.as_deref(),
                );
                let client = capstan::client::Client::from_kubeconfig(&kc).with_context(|| {
                    format!(
                        "reading kubeconfig {} (is `capstan server` running?)",
                        kc.display()
                    )
                })?;
                match other {
                    Command::Get(a) => commands::get(&client, a).await,
                    Command::Apply(a) => commands::apply(&client, a, true).await,
                    Command::Create(a) => commands::apply(&client, a, false).await,
                    Command::Delete(a) => commands::delete(&client, a).await,
                    Command::Describe(a) => commands::describe(&client, a).await,
                    Command::Server { .. } | Command::Up { .. } | Command::DemoApp { .. } => {
                        unreachable!("handled above")
                    }
                }
            }
        }
    })
}
