//! Render plugins (Argo CD's config management plugins): the cluster operator declares named render commands on the
//! server (`capstan server --render-plugin NAME=COMMAND`), never in an Application, which any app author can write;
//! an Application picks one with `spec.source.plugin: {name, env, args}`. The command runs with `sh -c` in a scratch
//! copy of the commit (the app's directory its working directory), with a timeout, a memory limit, no environment of
//! the server's (only `PATH`, `HOME` the scratch copy, `CAPSTAN_APP_NAME`, `CAPSTAN_APP_NAMESPACE`,
//! `CAPSTAN_REVISION`, and the app's `env` as `CAPSTAN_ENV_<NAME>`; `args` are its positional parameters), and -
//! when the server runs as root - as the unprivileged user `nobody`, so it cannot read the server's keys. What it
//! prints on standard output is the app's manifests; they go through the same all-or-nothing check as files. A
//! failing or slow plugin fails the commit with its standard error.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use git2::{ObjectType, Repository, TreeWalkMode, TreeWalkResult};

use super::source::Snapshot;

/// One render command the operator declared.
#[derive(Debug, Clone, PartialEq)]
pub struct Plugin {
    pub name: String,
    /// Shell text, run with `sh -c`.
    pub command: String,
}

/// How plugins run.
#[derive(Debug, Clone)]
pub struct Plugins {
    pub declared: Vec<Plugin>,
    /// A run longer than this is killed and fails its commit.
    pub timeout: Duration,
    /// The address-space limit of a run, in bytes.
    pub memory: u64,
}

impl Default for Plugins {
    fn default() -> Self {
        Plugins {
            declared: Vec::new(),
            timeout: Duration::from_secs(60),
            memory: 1 << 30,
        }
    }
}

impl Plugin {
    /// Reads `NAME=COMMAND` (the flag's form).
    pub fn parse(text: &str) -> Result<Plugin, String> {
        let (name, command) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: a render plugin is NAME=COMMAND"))?;
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
        if !valid || command.trim().is_empty() {
            return Err(format!(
                "{text:?}: a render plugin is NAME=COMMAND with a name of letters, digits, '-', '_' or '.'"
            ));
        }
        Ok(Plugin {
            name: name.into(),
            command: command.into(),
        })
    }
}

/// What an Application asks of a plugin.
pub struct Request<'a> {
    pub name: &'a str,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub app: &'a str,
    pub namespace: &'a str,
}

/// Runs the plugin an app asks for over a commit; its standard output (manifests), or why it failed.
pub fn run(plugins: &Plugins, req: &Request, snap: &Snapshot) -> Result<String, String> {
    let Some(p) = plugins.declared.iter().find(|p| p.name == req.name) else {
        let names: Vec<&str> = plugins.declared.iter().map(|p| p.name.as_str()).collect();
        return Err(format!(
            "no render plugin named {:?} is declared on the server (declared: {})",
            req.name,
            if names.is_empty() {
                "none; see capstan server --render-plugin".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    for (k, _) in &req.env {
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "plugin env {k:?}: a name is letters, digits and '_'"
            ));
        }
    }
    let scratch = tempfile::Builder::new()
        .prefix("capstan-render-")
        .tempdir()
        .map_err(|e| format!("making a scratch directory: {e}"))?;
    checkout(snap, scratch.path())?;
    let workdir = scratch.path().join(&snap.root);
    let as_nobody = unsafe { libc::geteuid() } == 0;
    if as_nobody {
        chown_all(scratch.path())
            .map_err(|e| format!("handing the scratch copy to nobody: {e}"))?;
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&p.command)
        .arg(&p.name)
        .args(&req.args)
        .current_dir(&workdir)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", scratch.path())
        .env("CAPSTAN_APP_NAME", req.app)
        .env("CAPSTAN_APP_NAMESPACE", req.namespace)
        .env("CAPSTAN_REVISION", &snap.commit)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &req.env {
        cmd.env(format!("CAPSTAN_ENV_{k}"), v);
    }
    let memory = plugins.memory;
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, setrlimit, setgid, setuid).
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            libc::setsid();
            let lim = libc::rlimit {
                rlim_cur: memory as libc::rlim_t,
                rlim_max: memory as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if as_nobody && (libc::setgid(65534) != 0 || libc::setuid(65534) != 0) {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("render plugin {}: starting sh: {e}", p.name))?;
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let reading = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let reading_err = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        b
    });
    let deadline = Instant::now() + plugins.timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                // The whole process group: whatever the script started goes too.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("render plugin {}: {e}", p.name)),
        }
    };
    let stdout = reading.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&reading_err.join().unwrap_or_default())
        .trim()
        .to_string();
    let stderr_note = if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    };
    match status {
        None => Err(format!(
            "render plugin {} ran past its timeout of {:?} and was killed{stderr_note}",
            p.name, plugins.timeout
        )),
        Some(s) if !s.success() => Err(format!(
            "render plugin {} failed ({s}){stderr_note}",
            p.name
        )),
        Some(_) => String::from_utf8(stdout)
            .map_err(|_| format!("render plugin {}: its output is not UTF-8 text", p.name)),
    }
}

/// Renders an app with the plugin its source names: the objects it printed (all or nothing), or why not. The
/// plugin runs off the async threads (it may take its whole timeout).
pub async fn render(
    plugins: &Plugins,
    p: &crate::api::gitops::PluginSource,
    snap: &Snapshot,
    app: &str,
    namespace: &str,
    default_ns: &str,
) -> Result<Vec<super::render::Desired>, Vec<String>> {
    let (plugins, snap2) = (plugins.clone(), snap.clone());
    let env = p
        .env
        .iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect();
    let (req_name, args) = (p.name.clone(), p.args.clone());
    let (app_name, app_ns) = (app.to_string(), namespace.to_string());
    let out = tokio::task::spawn_blocking(move || {
        let req = Request {
            name: &req_name,
            env,
            args,
            app: &app_name,
            namespace: &app_ns,
        };
        run(&plugins, &req, &snap2)
    })
    .await
    .unwrap_or_else(|e| Err(format!("render plugin: {e}")));
    out.map_err(|e| vec![e])
        .and_then(|text| super::render::from_text(&format!("plugin {}", p.name), &text, default_ns))
}

/// Writes every file of the snapshot's commit under `dir` (executable bits kept; symbolic links left out).
fn checkout(snap: &Snapshot, dir: &Path) -> Result<(), String> {
    let fail = |e: git2::Error| format!("copying commit {}: {e}", snap.commit);
    let repo = Repository::open(&snap.git_dir).map_err(fail)?;
    let oid = git2::Oid::from_str(&snap.commit).map_err(fail)?;
    let tree = repo.find_commit(oid).and_then(|c| c.tree()).map_err(fail)?;
    let mut failure = None;
    tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
        if entry.kind() != Some(ObjectType::Blob) || entry.filemode() == 0o120000 {
            return TreeWalkResult::Ok;
        }
        let path = dir.join(parent).join(entry.name().unwrap_or(""));
        let written = entry
            .to_object(&repo)
            .and_then(|o| o.peel_to_blob())
            .map_err(|e| e.to_string())
            .and_then(|b| {
                if let Some(p) = path.parent() {
                    std::fs::create_dir_all(p).map_err(|e| e.to_string())?;
                }
                std::fs::write(&path, b.content()).map_err(|e| e.to_string())?;
                if entry.filemode() == 0o100755 {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            });
        match written {
            Ok(()) => TreeWalkResult::Ok,
            Err(e) => {
                failure = Some(format!("{}: {e}", path.display()));
                TreeWalkResult::Abort
            }
        }
    })
    .map_err(fail)?;
    match failure {
        Some(f) => Err(format!("copying commit {}: {f}", snap.commit)),
        None => {
            std::fs::create_dir_all(dir.join(&snap.root)).map_err(|e| e.to_string())?;
            Ok(())
        }
    }
}

fn chown_all(dir: &Path) -> std::io::Result<()> {
    std::os::unix::fs::chown(dir, Some(65534), Some(65534))?;
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            chown_all(&p)?;
        } else {
            std::os::unix::fs::chown(&p, Some(65534), Some(65534))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_is_name_equals_command() {
        assert_eq!(
            Plugin::parse("helm=helm template . --namespace x").unwrap(),
            Plugin {
                name: "helm".into(),
                command: "helm template . --namespace x".into()
            }
        );
        assert!(Plugin::parse("no-command=").is_err());
        assert!(Plugin::parse("bad name=x").is_err());
        assert!(Plugin::parse("nothing").is_err());
    }
}
