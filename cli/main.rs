//! The `capstan` binary: process commands (`server`, `up`, `agent`) and client commands (`get`, `apply`, `create`,
//! `delete`, `describe`, `logs`) that talk to a server through the kubeconfig it wrote.

mod app;

/// mimalloc instead of glibc's malloc: under the control plane's load (many small JSON values made and dropped on
/// several threads) glibc spent a third of the server's CPU in malloc and free and kept freed memory in per-thread
/// arenas (BENCHMARKS.md, scale).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commands;
mod demo;
mod exec;
mod image;
mod manifests;
mod output;
mod portforward;
mod tui;

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
    /// More API servers of the cluster (URL[,URL...]) for client commands to fail over to when the kubeconfig's
    /// cannot be reached. Or set CAPSTAN_SERVERS.
    #[arg(long, global = true, env = "CAPSTAN_SERVERS", value_name = "URLS")]
    servers: Option<String>,
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
        #[command(flatten)]
        control: Box<commands::ControlArgs>,
    },
    /// Run Capstan on its embedded defaults - control plane and one node - following a git repository of manifests.
    Up {
        /// A directory of manifests in a git repository (default: examples/repo when present).
        repo: Option<PathBuf>,
        #[arg(long, default_value = "127.0.0.1:6443")]
        listen: SocketAddr,
        #[command(flatten)]
        control: Box<commands::ControlArgs>,
        #[command(flatten)]
        node: commands::NodeArgs,
        /// Leave this node's containers running when `capstan up` exits (they are adopted on the next start).
        #[arg(long)]
        keep_pods: bool,
        /// Follow no repository (a bare cluster).
        #[arg(long, conflicts_with = "repo")]
        no_repo: bool,
    },
    /// Run a node agent that joins a cluster (the kubelet's role).
    Agent {
        /// The API server's URL, or several (URL,URL,...): the agent fails over between them, and also to every
        /// other server the cluster announces in the `kubernetes` Endpoints.
        #[arg(long)]
        server: String,
        /// A file holding the cluster's bearer token (the `token` file in the server's data directory). Or set
        /// CAPSTAN_TOKEN. Both keep the token out of the command line, which every local user and every pod can
        /// read with `ps`.
        #[arg(long, conflicts_with = "token")]
        token_file: Option<PathBuf>,
        /// The token itself: visible in `ps`; prefer --token-file or CAPSTAN_TOKEN.
        #[arg(long)]
        token: Option<String>,
        /// A join token from `capstan token create` (`K10<ca-hash>::<id>.<secret>`): the agent checks the server's CA
        /// against it and exchanges it for a token of its own node, kept in its data directory (later starts need
        /// no join token). Or set CAPSTAN_JOIN_TOKEN, or use --join-token-file.
        #[arg(long, conflicts_with_all = ["token", "token_file"])]
        join_token: Option<String>,
        /// A file holding the join token.
        #[arg(long, conflicts_with_all = ["token", "token_file", "join_token"])]
        join_token_file: Option<PathBuf>,
        /// The API server's certificate authority (default: ca.crt in the server's default data directory).
        #[arg(long)]
        certificate_authority: Option<PathBuf>,
        #[command(flatten)]
        node: commands::NodeArgs,
        /// Stop this node's containers when the agent exits (by default they keep running, as with the kubelet).
        #[arg(long)]
        stop_pods_on_exit: bool,
        /// Simulate N nodes instead of running this machine's (kwok-style: Nodes and Leases kept alive, their pods
        /// Running and Ready as state only, no processes). Needs a credential that may write Nodes and pods (the
        /// admin's --token-file). Capacity from --cpu, --memory and --max-pods (default 8 CPUs, 32Gi).
        #[arg(long, value_name = "N")]
        simulate: Option<usize>,
        /// Name prefix of simulated nodes (`PREFIX-0`, `PREFIX-1`, ...).
        #[arg(long, default_value = "sim", requires = "simulate")]
        simulate_prefix: String,
        /// Seconds a pod bound to a simulated node takes to be Running and Ready.
        #[arg(long, default_value_t = 1.0, requires = "simulate")]
        simulate_ready_after: f64,
    },
    /// GitOps Applications: create, delete, list, get, history, diff, sync, rollback, wait, crd.
    App(app::AppArgs),
    /// Print what a kustomization directory builds to (what GitOps applies from it), as `kubectl kustomize` does.
    Kustomize(commands::KustomizeArgs),
    /// Join tokens for new nodes: create (printed as K10<ca-hash>::<id>.<secret>), list, delete.
    Token(commands::TokenArgs),
    /// Secrets at rest: `rotate-key` makes a new encryption key and re-encrypts everything under it.
    Secrets(commands::SecretsArgs),
    /// The cluster's store: `snapshot save|restore`, `migrate --to etcd://...`.
    Store(commands::StoreArgs),
    /// Kubeconfigs for users, with client certificates of the cluster CA (on the server's machine).
    Kubeconfig(commands::KubeconfigArgs),
    /// The terminal UI: live views of the cluster and the git history of its Applications; roll back by revert.
    Tui(tui::TuiArgs),
    /// Images without a registry: build an OCI image tarball from files, inspect one.
    Image(image::ImageArgs),
    /// Run a command in a container (like kubectl exec): `capstan exec POD -it -- sh`.
    Exec(exec::ExecArgs),
    /// Forward local ports to a pod's ports: `capstan port-forward web 8080:80`.
    PortForward(portforward::PortForwardArgs),
    /// Print a container's logs (like kubectl logs).
    Logs(commands::LogsArgs),
    /// Internal: supervises one container for the process runtime.
    #[command(hide = true)]
    Shim(commands::ShimArgs),
    /// Internal: the log driver containerd's shim starts for each container (output on descriptors 3 and 4).
    #[command(hide = true)]
    ContainerLog { log: PathBuf },
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
        /// Address to serve on (default: $POD_IP, else 127.0.0.1, on $PORT, else 8080).
        #[arg(long, env = "LISTEN")]
        listen: Option<SocketAddr>,
        /// Print `report from HOST at HH:MM:SS: MESSAGE` and exit, instead of serving (the example CronJob).
        #[arg(long, value_name = "MESSAGE")]
        report: Option<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // The shim is small and synchronous: no async runtime, no logging set-up.
    if let Command::Shim(a) = cli.command {
        std::process::exit(commands::shim(a));
    }
    if let Command::ContainerLog { log } = &cli.command {
        std::process::exit(capstan::node::runtime::shim::container_log(
            log,
            10 << 20,
            5,
        ));
    }
    // Image building is local and synchronous.
    if let Command::Kubeconfig(a) = cli.command {
        let data_dir = cli
            .data_dir
            .clone()
            .unwrap_or_else(capstan::client::config::default_data_dir);
        return commands::kubeconfig(&data_dir, a);
    }
    if let Command::Image(a) = cli.command {
        return image::run(a);
    }
    // The terminal UI owns the screen: no log lines on it.
    if !matches!(cli.command, Command::Tui(_)) {
        init_logging();
    }
    run(cli)
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAPSTAN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(cli: Cli) -> Result<()> {
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
            Command::Store(a) if !commands::store_needs_server(&a) => {
                commands::store_offline(&data_dir, a).await
            }
            Command::Server { listen, control } => {
                commands::server(&data_dir, listen, None, None, &control).await
            }
            Command::DemoApp {
                report: Some(message),
                ..
            } => {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| capstan::node::hostname());
                let at = chrono::Utc::now().format("%H:%M:%S");
                let mut out = std::io::stdout();
                std::io::Write::write_all(
                    &mut out,
                    format!("report from {host} at {at}: {message}\n").as_bytes(),
                )?;
                Ok(())
            }
            Command::DemoApp { listen, .. } => {
                let listen = match listen {
                    Some(l) => l,
                    None => {
                        let ip = std::env::var("POD_IP").unwrap_or_else(|_| "127.0.0.1".into());
                        let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
                        format!("{ip}:{port}")
                            .parse()
                            .with_context(|| format!("POD_IP {ip:?} / PORT {port:?}"))?
                    }
                };
                demo::run(listen).await
            }
            Command::Up {
                repo,
                listen,
                control,
                node,
                keep_pods,
                no_repo,
            } => {
                let repo = repo
                    .or_else(|| Some(PathBuf::from("examples/repo")).filter(|p| p.is_dir()))
                    .filter(|_| !no_repo);
                commands::server(&data_dir, listen, repo, Some((node, !keep_pods)), &control).await
            }
            Command::Agent {
                server,
                token_file,
                token,
                join_token,
                join_token_file,
                certificate_authority,
                node,
                stop_pods_on_exit,
                simulate,
                simulate_prefix,
                simulate_ready_after,
            } => {
                if let Some(count) = simulate {
                    let token = commands::agent_token(token_file.as_deref(), token)?;
                    return commands::simulate(
                        &server,
                        &token,
                        certificate_authority.as_deref(),
                        &node,
                        count,
                        simulate_prefix,
                        simulate_ready_after,
                    )
                    .await;
                }
                let join = commands::join_token(join_token, join_token_file.as_deref())?;
                let (token, ca) = match join {
                    Some(j) => {
                        let (t, ca) = commands::joined(&data_dir, &server, &j, &node).await?;
                        (t, Some(ca))
                    }
                    None => match commands::joined_before(&data_dir, &node) {
                        Some((t, ca)) if token_file.is_none() && token.is_none() => (t, Some(ca)),
                        _ => (commands::agent_token(token_file.as_deref(), token)?, None),
                    },
                };
                let ca = ca.or(certificate_authority);
                commands::agent(
                    &data_dir,
                    &server,
                    &token,
                    ca.as_deref(),
                    node,
                    stop_pods_on_exit,
                )
                .await
            }
            Command::App(app::AppArgs {
                command: app::AppCommand::Crd,
                ..
            }) => app::print_crd(),
            Command::Kustomize(a) => commands::kustomize(a),
            other => {
                // Client commands end quietly when their output is cut short (`capstan app history x | head`), like
                // other Unix tools. (Servers keep SIGPIPE ignored: a closed connection is an error to handle there.)
                // SAFETY: resetting a signal disposition to its default before any output.
                unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
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
                if let Some(more) = &cli.servers {
                    let more: Vec<String> = more.split(',').map(|s| s.trim().to_string()).collect();
                    client.learn_servers(&more);
                }
                match other {
                    Command::Get(a) => commands::get(&client, a).await,
                    Command::Apply(a) => commands::apply(&client, a, true).await,
                    Command::Create(a) => commands::apply(&client, a, false).await,
                    Command::Delete(a) => commands::delete(&client, a).await,
                    Command::Describe(a) => commands::describe(&client, a).await,
                    Command::Logs(a) => commands::logs(&client, a).await,
                    Command::App(a) => app::run(&client, a).await,
                    Command::Token(a) => commands::token(&client, a).await,
                    Command::Secrets(a) => commands::secrets(&client, a).await,
                    Command::Store(a) => commands::store_save(&client, a).await,
                    Command::Tui(a) => tui::run(client, a).await,
                    Command::PortForward(a) => portforward::run(&client, a).await,
                    Command::Exec(a) => {
                        let code = exec::run(&client, a).await?;
                        if code != 0 {
                            std::process::exit(code);
                        }
                        Ok(())
                    }
                    Command::Server { .. }
                    | Command::Up { .. }
                    | Command::DemoApp { .. }
                    | Command::Agent { .. }
                    | Command::Shim(_)
                    | Command::ContainerLog { .. }
                    | Command::Image(_)
                    | Command::Kustomize(_)
                    | Command::Kubeconfig(_) => {
                        unreachable!("handled above")
                    }
                }
            }
        }
    })
}
