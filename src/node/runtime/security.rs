//! A container's security settings as both runtimes apply them: the user, group and supplemental groups it runs
//! as, `runAsNonRoot` (checked like the kubelet, with its messages), a read-only root filesystem, `privileged`,
//! capabilities (containerd's default set or none after `drop: [ALL]`, plus `add`, minus what `drop` names) and
//! `no_new_privs` when `allowPrivilegeEscalation: false`.

use serde::{Deserialize, Serialize};

/// Linux capabilities by number.
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// What a container gets unless it says otherwise (containerd's and Docker's default set).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// The security settings of one container instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Security {
    pub run_as_user: Option<u32>,
    pub run_as_group: Option<u32>,
    pub supplemental_groups: Vec<u32>,
    pub read_only_root: bool,
    pub privileged: bool,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub no_new_privileges: bool,
}

/// A capability name without its `CAP_` prefix, upper case.
fn bare(name: &str) -> String {
    let up = name.to_ascii_uppercase();
    up.strip_prefix("CAP_").unwrap_or(&up).to_string()
}

impl Security {
    /// The capabilities the container keeps (bare names), or every one when privileged.
    pub fn capabilities(&self) -> Vec<&'static str> {
        if self.privileged {
            return NAMES.to_vec();
        }
        let add: Vec<String> = self.cap_add.iter().map(|c| bare(c)).collect();
        let drop: Vec<String> = self.cap_drop.iter().map(|c| bare(c)).collect();
        // As containerd's CRI plugin: the default set (none after `drop: [ALL]`), plus `add` (`ALL`: every one),
        // minus the capabilities `drop` names.
        let drop_all = drop.iter().any(|d| d == "ALL");
        NAMES
            .iter()
            .copied()
            .filter(|n| {
                let base = DEFAULT_CAPABILITIES.contains(n) && !drop_all;
                let added = add.iter().any(|a| a == n || a == "ALL");
                (base || added) && !drop.iter().any(|d| d == n)
            })
            .collect()
    }

    /// The numbers of the capabilities the container does not keep (for the bounding set).
    pub fn dropped_numbers(&self) -> Vec<u32> {
        let keep = self.capabilities();
        NAMES
            .iter()
            .enumerate()
            .filter(|(_, n)| !keep.contains(n))
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Names the OCI spec uses (`CAP_...`).
    pub fn oci_capabilities(&self) -> Vec<String> {
        self.capabilities()
            .into_iter()
            .map(|n| format!("CAP_{n}"))
            .collect()
    }

    /// An unknown capability name in `add` or `drop`, if any.
    pub fn unknown_capability(&self) -> Option<String> {
        self.cap_add
            .iter()
            .chain(&self.cap_drop)
            .find(|c| {
                let b = bare(c);
                b != "ALL" && !NAMES.contains(&b.as_str())
            })
            .cloned()
    }
}

/// The kubelet's `runAsNonRoot` check for a container that will run as `uid` (None: a user name that is not a
/// number); `pod` is `name_namespace(uid)`.
pub fn verify_non_root(
    uid: Option<u32>,
    user: &str,
    pod: &str,
    container: &str,
) -> Result<(), String> {
    match uid {
        Some(0) => Err(format!(
            "container has runAsNonRoot and image will run as root (pod: \"{pod}\", container: {container})"
        )),
        None => Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root \
             (pod: \"{pod}\", container: {container})"
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_start_from_the_default_set() {
        let plain = Security::default();
        assert_eq!(plain.capabilities().len(), DEFAULT_CAPABILITIES.len());
        assert!(!plain.capabilities().contains(&"SYS_ADMIN"));
        let s = Security {
            cap_add: vec!["NET_ADMIN".into(), "CAP_SYS_TIME".into()],
            cap_drop: vec!["net_raw".into()],
            ..Default::default()
        };
        let caps = s.capabilities();
        assert!(caps.contains(&"NET_ADMIN") && caps.contains(&"SYS_TIME"));
        assert!(!caps.contains(&"NET_RAW"));
        assert!(s.dropped_numbers().contains(&13) && !s.dropped_numbers().contains(&12));
        let none = Security {
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["NET_BIND_SERVICE".into()],
            ..Default::default()
        };
        assert_eq!(none.capabilities(), ["NET_BIND_SERVICE"]);
        let privileged = Security {
            privileged: true,
            cap_drop: vec!["ALL".into()],
            ..Default::default()
        };
        assert_eq!(privileged.capabilities().len(), 41);
        assert!(privileged.dropped_numbers().is_empty());
        let bad = Security {
            cap_add: vec!["FLY".into()],
            ..Default::default()
        };
        assert_eq!(bad.unknown_capability().as_deref(), Some("FLY"));
    }

    #[test]
    fn non_root_is_verified_like_the_kubelet() {
        assert!(verify_non_root(Some(1000), "", "p_ns(u)", "c").is_ok());
        let root = verify_non_root(Some(0), "", "p_ns(u)", "c").unwrap_err();
        assert_eq!(
            root,
            "container has runAsNonRoot and image will run as root (pod: \"p_ns(u)\", container: c)"
        );
        assert!(verify_non_root(None, "nginx", "p", "c")
            .unwrap_err()
            .contains("non-numeric user (nginx)"));
    }
}
