//! `capstan image build` and `capstan image inspect`: images without a registry (see `capstan::image`).

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
    /// `capstan image build --from-dir rootfs --tag demo:v1 -o demo.tar -- /bin/app --serve`.
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
        /// The entrypoint and its arguments.
        #[arg(last = true)]
        entrypoint: Vec<String>,
    },
    /// Check an image tarball's digests and show what it holds.
    Inspect { file: PathBuf },
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
                cmd: Vec::new(),
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
            println!("env:        {}", config["config"]["Env"]);
            println!("layers:     {}", config["rootfs"]["diff_ids"]);
        }
    }
    Ok(())
}
