//! The OCI runtime spec (runc's `config.json`) for one container, built from its [`ContainerSpec`] and its image's
//! config the way Kubernetes combines them: `command` replaces the image's entrypoint and `args` its cmd; the
//! container's environment overrides the image's; `workingDir` over the image's; `runAsUser`/`runAsGroup` over the
//! image's user (`runAsNonRoot` checked against the result); supplemental groups, capabilities, a read-only root
//! and `noNewPrivileges` from the securityContext. The pod's network namespace is joined; mount, PID, IPC and UTS namespaces are the container's own.
//! Memory and CPU limits become cgroup limits, CPU requests cgroup shares.

use serde_json::{json, Value};

use super::super::ContainerSpec;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The command line: Kubernetes' rules for `command`/`args` against the image's `Entrypoint`/`Cmd`.
pub fn argv(spec: &ContainerSpec, image: &Value) -> Vec<String> {
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect()
    };
    if !spec.command.is_empty() {
        return spec.argv();
    }
    let mut line = list(&image["Entrypoint"]);
    if spec.args.is_empty() {
        line.extend(list(&image["Cmd"]));
    } else {
        line.extend(spec.args.iter().cloned());
    }
    line
}

/// The image's environment with the container's on top (same name: the container's wins).
pub fn environment(spec: &ContainerSpec, image: &Value) -> Vec<String> {
    let mut env: Vec<(String, String)> = image["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in &spec.env {
        match env.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Why a container's OCI spec cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("the image runs as {what} {value:?}, which is not numeric: set securityContext.runAsUser/runAsGroup")]
    NotNumeric { what: &'static str, value: String },
    #[error("no command specified: image {image:?} has no entrypoint or cmd and the container sets no command")]
    NoCommand { image: String },
    /// `runAsNonRoot` and a root (or unverifiable) user: the kubelet's message.
    #[error("{0}")]
    NonRoot(String),
    #[error("unknown capability {0:?} in securityContext.capabilities")]
    Capability(String),
}

/// uid and gid: the container's securityContext, else the image's numeric `User` (`uid` or `uid:gid`).
pub fn user(spec: &ContainerSpec, image: &Value) -> Result<(u32, u32), SpecError> {
    let configured = image["User"].as_str().unwrap_or("");
    let (iu, ig) = match configured.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (configured, None),
    };
    let number = |s: &str, what: &'static str| -> Result<Option<u32>, SpecError> {
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|_| SpecError::NotNumeric {
            what,
            value: s.to_string(),
        })
    };
    let uid = match spec.security.run_as_user {
        Some(u) => u,
        None => number(iu, "user")?.unwrap_or(0),
    };
    let gid = match spec.security.run_as_group {
        Some(g) => g,
        None => match ig {
            Some(g) => number(g, "group")?.unwrap_or(0),
            None => 0,
        },
    };
    Ok((uid, gid))
}

/// The cgroup a container runs in, relative to the cgroup root.
pub fn cgroup_path(id: &str) -> String {
    format!("/capstan/{id}")
}

/// Builds `config.json` for container `id` from its spec and image config (the image's `config` object).
// Long by design: one OCI config.json assembled in the runtime spec's order (process, root, mounts, linux:
// namespaces, resources, rlimits); each part is a few lines, named by a comment.
pub fn build(id: &str, spec: &ContainerSpec, image: &Value) -> Result<Value, SpecError> {
    let args = argv(spec, image);
    if args.is_empty() {
        return Err(SpecError::NoCommand {
            image: spec.image.clone(),
        });
    }
    let (uid, gid) = user(spec, image)?;
    if spec.run_as_non_root {
        let image_user = image["User"].as_str().unwrap_or("");
        let numeric = spec.security.run_as_user.is_some()
            || image_user.is_empty()
            || image_user
                .split(':')
                .next()
                .is_some_and(|u| u.parse::<u32>().is_ok());
        let name = spec.id.split('/').nth(1).unwrap_or("");
        super::super::security::verify_non_root(
            numeric.then_some(uid),
            image_user,
            &spec.pod_label,
            name,
        )
        .map_err(SpecError::NonRoot)?;
    }
    if let Some(c) = spec.security.unknown_capability() {
        return Err(SpecError::Capability(c));
    }
    let caps = spec.security.oci_capabilities();
    let cwd = spec
        .working_dir
        .as_ref()
        .map(|d| d.display().to_string())
        .or_else(|| {
            image["WorkingDir"]
                .as_str()
                .filter(|w| !w.is_empty())
                .map(String::from)
        })
        .unwrap_or_else(|| "/".into());
    let mut env = environment(spec, image);
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", if uid == 0 { "/root" } else { "/" }));
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
            "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}),
    ];
    for m in &spec.mounts {
        mounts.push(json!({
            "destination": m.target,
            "type": "bind",
            "source": m.source,
            "options": ["rbind", "rprivate", if m.read_only { "ro" } else { "rw" }],
        }));
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if let Some(ns) = &spec.netns {
        namespaces.push(json!({"type": "network", "path": ns}));
    }
    let mut resources = json!({"devices": [{"allow": false, "access": "rwm"}]});
    if let Some(limit) = spec.memory_limit {
        resources["memory"] = json!({"limit": limit});
    }
    let mut cpu = json!({});
    // Kubernetes' conversions: 1 CPU = 1024 shares (at least 2); a limit is a quota per 100 ms period.
    let shares = spec
        .cpu_request
        .or(spec.cpu_limit)
        .map(|m| (m * 1024 / 1000).max(2))
        .unwrap_or(2);
    cpu["shares"] = json!(shares);
    if let Some(limit) = spec.cpu_limit {
        cpu["quota"] = json!((limit * 100_000 / 1000).max(1000));
        cpu["period"] = json!(100_000);
    }
    resources["cpu"] = cpu;
    // Open files: as many as the agent may have (a container cannot be given more).
    let mut limit = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: getrlimit fills the struct it is given.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    let nofile = limit.rlim_max.min(1 << 20);
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid, "additionalGids": spec.security.supplemental_groups},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                // A non-root user keeps none in its effective set (as without ambient capabilities).
                "effective": if uid == 0 { caps.clone() } else { vec![] },
                "permitted": if uid == 0 { caps.clone() } else { vec![] },
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
            "noNewPrivileges": spec.security.no_new_privileges,
        },
        "root": {"path": "rootfs", "readonly": spec.security.read_only_root},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": cgroup_path(id),
            "namespaces": namespaces,
            "resources": resources,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            image: "app:v1".into(),
            env: vec![("A".into(), "container".into())],
            hostname: "web-0".into(),
            ..Default::default()
        }
    }

    #[test]
    fn command_and_args_combine_with_the_image_like_kubernetes() {
        let image = json!({"Entrypoint": ["/bin/app"], "Cmd": ["--serve"]});
        let mut s = spec();
        assert_eq!(argv(&s, &image), ["/bin/app", "--serve"]);
        s.args = vec!["--once".into()];
        assert_eq!(argv(&s, &image), ["/bin/app", "--once"]);
        s.command = vec!["/bin/sh".into(), "-c".into()];
        s.args = vec!["echo hi".into()];
        assert_eq!(argv(&s, &image), ["/bin/sh", "-c", "echo hi"]);
        let empty = build("x", &spec(), &json!({})).unwrap_err().to_string();
        assert!(empty.contains("no command specified"), "{empty}");
    }

    #[test]
    fn the_container_environment_overrides_the_image() {
        let image = json!({"Env": ["A=image", "B=image", "PATH=/opt/bin"]});
        let env = environment(&spec(), &image);
        assert_eq!(env, ["A=container", "B=image", "PATH=/opt/bin"]);
        assert!(environment(&spec(), &json!({})).contains(&format!("PATH={DEFAULT_PATH}")));
    }

    #[test]
    fn users_come_from_the_security_context_or_a_numeric_image_user() {
        let mut s = spec();
        assert_eq!(
            user(&s, &json!({"User": "1000:2000"})).unwrap(),
            (1000, 2000)
        );
        assert_eq!(user(&s, &json!({})).unwrap(), (0, 0));
        assert!(user(&s, &json!({"User": "nobody"}))
            .unwrap_err()
            .to_string()
            .contains("runAsUser"));
        s.security.run_as_user = Some(7);
        assert_eq!(user(&s, &json!({"User": "nobody"})).unwrap(), (7, 0));
    }

    #[test]
    fn limits_become_cgroup_settings_and_the_pod_network_is_joined() {
        let mut s = spec();
        s.command = vec!["/bin/app".into()];
        s.memory_limit = Some(64 << 20);
        s.cpu_request = Some(250);
        s.cpu_limit = Some(500);
        s.netns = Some("/run/capstan/netns/uid".into());
        s.mounts.push(crate::node::volumes::Mount {
            source: "/data/x".into(),
            target: "/x".into(),
            read_only: true,
            optional: false,
        });
        let c = build("id-1", &s, &json!({"WorkingDir": "/srv"})).unwrap();
        assert_eq!(c["linux"]["resources"]["memory"]["limit"], 64 << 20);
        assert_eq!(c["linux"]["resources"]["cpu"]["shares"], 256);
        assert_eq!(c["linux"]["resources"]["cpu"]["quota"], 50_000);
        assert_eq!(c["linux"]["cgroupsPath"], "/capstan/id-1");
        assert_eq!(c["process"]["cwd"], "/srv");
        assert_eq!(c["hostname"], "web-0");
        let ns = c["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.contains(&json!({"type": "network", "path": "/run/capstan/netns/uid"})));
        let last = c["mounts"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["destination"], "/x");
        assert_eq!(last["options"][2], "ro");
    }
}
