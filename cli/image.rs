//! `capstan image build`, `inspect` and `import`: images without a registry (see `capstan::image`), and the image of
//! this very binary that the containerd runtime puts in place for the examples.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct ImageArgs {
    #[command(subcommand)]
    pub command: ImageCommand,
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Pack a directory and/or single files into an OCI image layout tarball:
    /// `capstan image build --from-dir rootfs --tag demo:v1 -o demo.tar -- /bin/app --serve` (an entrypoint), or
    /// `... --cmd sh` (a default command, like busybox's: a pod's `args` replace it, its `command` replaces both).
    Build {
        /// The image's name[:tag].
        #[arg(long, short = 't')]
        tag: String,
        /// A directory whose content becomes the image's root.
        #[arg(long)]
        from_dir: Option<PathBuf>,
        /// SRC:DEST - a file or directory of this machine at an absolute path in the image (repeatable).
        #[arg(long = "add")]
        add: Vec<String>,
        /// KEY=VALUE in the image's environment (repeatable).
        #[arg(long = "env")]
        env: Vec<String>,
        #[arg(long)]
        workdir: Option<String>,
        /// Where to write the tarball.
        #[arg(long, short = 'o')]
        output: PathBuf,
        /// One word of the image's default command (Dockerfile `CMD`; repeat for each word: `--cmd sh --cmd -c
        /// --cmd 'echo hi'`). It follows the entrypoint, and a pod's `args` replace it.
        #[arg(long = "cmd", allow_hyphen_values = true, value_name = "WORD")]
        cmd: Vec<String>,
        /// The entrypoint and its arguments (Dockerfile `ENTRYPOINT`).
        #[arg(last = true)]
        entrypoint: Vec<String>,
    },
    /// Check an image tarball's digests and show what it holds.
    Inspect { file: PathBuf },
    /// Load an image tarball (OCI layout or Docker archive) into this node's containerd, unpacked and ready to run
    /// (the containerd runtime; needs the `containerd` feature).
    Import {
        file: PathBuf,
        /// containerd's socket.
        #[arg(long, default_value = "/run/containerd/containerd.sock")]
        containerd_socket: PathBuf,
        /// The containerd namespace the node agent uses.
        #[arg(long, default_value = "capstan")]
        containerd_namespace: String,
    },
}

pub fn run(a: ImageArgs) -> Result<()> {
    match a.command {
        ImageCommand::Build {
            tag,
            from_dir,
            add,
            env,
            workdir,
            output,
            cmd,
            entrypoint,
        } => {
            let add = add
                .iter()
                .map(|a| {
                    a.split_once(':')
                        .map(|(s, d)| (PathBuf::from(s), d.to_string()))
                        .ok_or_else(|| anyhow!("--add {a:?}: expected SRC:DEST"))
                })
                .collect::<Result<Vec<_>>>()?;
            let spec = capstan::image::BuildSpec {
                reference: tag,
                from_dir,
                add,
                entrypoint,
                cmd,
                env,
                workdir,
            };
            let tmp = output.with_extension("tar.partial");
            let file = std::fs::File::create(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            let built = match capstan::image::build(&spec, std::io::BufWriter::new(file)) {
                Ok(b) => b,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
            };
            std::fs::rename(&tmp, &output)
                .with_context(|| format!("writing {}", output.display()))?;
            println!(
                "{} {} (manifest {}) written to {}",
                built.reference,
                built.config,
                built.manifest,
                output.display()
            );
        }
        ImageCommand::Inspect { file } => {
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let files = capstan::image::read_archive(&data)?;
            let config = capstan::image::verify(&files)
                .with_context(|| format!("{} is not a valid image", file.display()))?;
            let index: serde_json::Value =
                serde_json::from_slice(&files["index.json"]).unwrap_or_default();
            println!(
                "name:       {}",
                index["manifests"][0]["annotations"]["io.containerd.image.name"]
                    .as_str()
                    .unwrap_or("<none>")
            );
            println!(
                "platform:   {}/{}",
                config["os"].as_str().unwrap_or(""),
                config["architecture"].as_str().unwrap_or("")
            );
            println!("entrypoint: {}", config["config"]["Entrypoint"]);
            println!("cmd:        {}", config["config"]["Cmd"]);
            println!("env:        {}", config["config"]["Env"]);
            println!("layers:     {}", config["rootfs"]["diff_ids"]);
        }
        ImageCommand::Import {
            file,
            containerd_socket,
            containerd_namespace,
        } => import(&file, &containerd_socket, &containerd_namespace)?,
    }
    Ok(())
}

#[cfg(not(feature = "containerd"))]
fn import(_: &std::path::Path, _: &std::path::Path, _: &str) -> Result<()> {
    Err(anyhow!(
        "image import loads images into containerd: build capstan with `--features containerd` (needs protoc)"
    ))
}

#[cfg(feature = "containerd")]
fn import(file: &std::path::Path, socket: &std::path::Path, namespace: &str) -> Result<()> {
    use capstan::node::runtime::containerd::Containerd;
    let data = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let loaded = capstan::image::read_archive(&data)
        .and_then(capstan::image::load)
        .with_context(|| format!("{} is not an image archive", file.display()))?;
    drop(data);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let c = Containerd::connect(socket, namespace).await?;
        for image in c.store(&loaded).await? {
            println!("{} {} imported", image.name, image.digest);
        }
        Ok(())
    })
}

/// Makes sure containerd has [`capstan::image::SELF_IMAGE`]: this executable and the shared libraries it runs with,
/// so `command: ["capstan", "demo-app"]` runs as a real container. Rebuilt when the executable changes.
#[cfg(feature = "containerd")]
pub async fn ensure_self_image(
    c: &capstan::node::runtime::containerd::Containerd,
    data_dir: &std::path::Path,
) -> Result<()> {
    let exe = std::env::current_exe()?;
    let meta = std::fs::metadata(&exe)?;
    let stamp = format!("{} {} {:?}", exe.display(), meta.len(), meta.modified()?);
    let marker = data_dir.join("self-image");
    let name = capstan::image::normalize(capstan::image::SELF_IMAGE);
    if let Some((saved, digest)) = std::fs::read_to_string(&marker)
        .ok()
        .as_deref()
        .and_then(|t| t.split_once('\n'))
    {
        if saved == stamp && c.image_digest(&name).await?.map(|d| d.0).as_deref() == Some(digest) {
            return Ok(());
        }
    }
    tracing::info!(image = capstan::image::SELF_IMAGE, exe = %exe.display(), "importing this binary's image into containerd");
    // Packing and hashing a binary of tens of megabytes is CPU work: off the async threads the API server uses.
    let (built, loaded) = tokio::task::spawn_blocking(|| -> Result<_> {
        let spec = capstan::image::self_spec()?;
        let mut tar = Vec::new();
        let built = capstan::image::build(&spec, &mut tar)?;
        let loaded = capstan::image::read_archive(&tar).and_then(capstan::image::load)?;
        Ok((built, loaded))
    })
    .await??;
    c.store(&loaded).await?;
    std::fs::write(&marker, format!("{stamp}\n{}", built.manifest))?;
    Ok(())
}
