//! `capstan shim`: the per-container process the process runtime starts (internal).

use std::path::PathBuf;

use clap::Args;

#[derive(Args)]
pub struct ShimArgs {
    #[arg(long)]
    log: PathBuf,
    #[arg(long)]
    exit_file: PathBuf,
    #[arg(long, default_value_t = 10 << 20)]
    max_log_bytes: u64,
    #[arg(long, default_value_t = 5)]
    max_log_files: u32,
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// A JSON file of bind mounts to set up in the container's own mount namespace.
    #[arg(long)]
    mounts: Option<PathBuf>,
    /// The pod's network namespace (a bind-mounted namespace file) to run the container in.
    #[arg(long)]
    netns: Option<PathBuf>,
    /// A JSON file of the container's user, groups, capabilities and read-only root.
    #[arg(long)]
    security: Option<PathBuf>,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn shim(a: ShimArgs) -> i32 {
    capstan::node::runtime::shim::run(capstan::node::runtime::shim::ShimArgs {
        log: a.log,
        exit_file: a.exit_file,
        max_log_bytes: a.max_log_bytes,
        max_log_files: a.max_log_files,
        workdir: a.workdir,
        mounts: a.mounts,
        netns: a.netns,
        security: a.security,
        command: a.command,
    })
}
