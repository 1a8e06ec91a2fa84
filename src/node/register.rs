//! The node's place in the cluster: registering this machine as a Node (labels, capacity from the machine,
//! addresses, system info, conditions), renewing its Lease in `kube-node-lease` (the heartbeat the node lifecycle
//! controller watches), refreshing its status, and waiting for the pod CIDR the control plane assigns.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::{Config, Error};
use crate::api::core::{Node, NodeAddress, NodeSpec, NodeStatus, NodeSystemInfo, ResourceList};
use crate::api::meta::{now, Condition, ObjectMeta};
use crate::api::network;
use crate::api::other::{Lease, LeaseSpec};
use crate::api::Quantity;
use crate::client::{Api, Client, Patch};

/// The machine's architecture as Kubernetes names it.
fn arch() -> String {
    std::env::consts::ARCH
        .replace("x86_64", "amd64")
        .replace("aarch64", "arm64")
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Reads cpu count, memory and disk from the machine.
fn machine_capacity(cfg: &Config) -> ResourceList {
    let cpu = cfg.cpu.clone().unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .to_string()
    });
    let memory = cfg.memory.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1).map(|k| format!("{k}Ki")))
            })
            .unwrap_or_else(|| "1Gi".into())
    });
    let disk = {
        // SAFETY: an all-zero statvfs is a valid value for statvfs to overwrite.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        let path = std::ffi::CString::new(cfg.data_dir.display().to_string()).unwrap_or_default();
        // SAFETY: statvfs writes into the struct we own; the path is NUL-terminated.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } == 0 {
            format!("{}Ki", (st.f_blocks as u64 * st.f_frsize as u64) / 1024)
        } else {
            "10Gi".into()
        }
    };
    [
        ("cpu", cpu),
        ("memory", memory),
        ("pods", cfg.max_pods.to_string()),
        ("ephemeral-storage", disk),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect()
}

/// This machine's host name (the default node name).
pub fn hostname() -> String {
    match read_trimmed("/proc/sys/kernel/hostname") {
        h if h.is_empty() => "localhost".into(),
        h => h,
    }
}

fn node_status(cfg: &Config, port: u16, runtime: &str) -> NodeStatus {
    let t = now();
    let capacity = machine_capacity(cfg);
    let cond = |ty: &str, status: &str, reason: &str, msg: &str| Condition {
        type_: ty.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(msg.into()),
        last_heartbeat_time: Some(t),
        last_transition_time: Some(t),
        ..Default::default()
    };
    let machine_id = read_trimmed("/etc/machine-id");
    NodeStatus {
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        conditions: Some(vec![
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            cond(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            cond(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
            cond(
                "Ready",
                "True",
                "KubeletReady",
                "kubelet is posting ready status",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: cfg.address.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: cfg.node_name.clone(),
            },
        ]),
        daemon_endpoints: Some(crate::api::Opaque(
            json!({"kubeletEndpoint": {"Port": port}}),
        )),
        node_info: Some(NodeSystemInfo {
            system_uuid: machine_id.clone(),
            machine_id,
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
            os_image: "Linux".into(),
            operating_system: "linux".into(),
            architecture: arch(),
            container_runtime_version: runtime.into(),
            kubelet_version: format!(
                "v{}.{}.0-capstan.{}",
                crate::KUBE_VERSION.0,
                crate::KUBE_VERSION.1,
                crate::VERSION
            ),
            kube_proxy_version: String::new(),
        }),
        ..Default::default()
    }
}

/// Creates the Node (or takes over an existing one) and writes its status.
pub(super) async fn register(
    client: &Client,
    cfg: &Config,
    port: u16,
    runtime: &str,
) -> Result<Node, Error> {
    let nodes = Api::<Node>::all(client);
    let err = |source| Error::Register {
        node: cfg.node_name.clone(),
        source,
    };
    let mut labels = BTreeMap::from([
        ("kubernetes.io/hostname".to_string(), cfg.node_name.clone()),
        ("kubernetes.io/os".to_string(), "linux".to_string()),
        ("kubernetes.io/arch".to_string(), arch()),
    ]);
    labels.extend(cfg.labels.iter().cloned());
    // What other nodes need to reach this node's pods over VXLAN (api::network).
    let annotations = BTreeMap::from([(
        network::VTEP_MAC_ANNOTATION.to_string(),
        network::format_mac(&network::vtep_mac(&cfg.node_name)),
    )]);
    let node = Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        ..Default::default()
    };
    match nodes.create(&node).await {
        Ok(_) => tracing::info!(node = %cfg.node_name, "registered node"),
        Err(e) if e.code() == Some(409) => {
            let patch =
                Patch::Merge(json!({"metadata": {"labels": labels, "annotations": annotations}}));
            nodes.patch(&cfg.node_name, &patch).await.map_err(err)?;
            tracing::info!(node = %cfg.node_name, "node already registered; taking it over");
        }
        Err(e) => return Err(err(e)),
    }
    let status = Patch::Strategic(json!({"status": node_status(cfg, port, runtime)}));
    nodes
        .patch_status(&cfg.node_name, &status)
        .await
        .map_err(err)
}

/// Writes the node's status; registers the Node again only when it is gone (deleted by an admin or the cloud
/// controller), so a live node's heartbeat is one status write and never a refused create.
async fn refresh(client: &Client, cfg: &Config, port: u16, runtime: &str) -> Result<Node, Error> {
    let status = Patch::Strategic(json!({"status": node_status(cfg, port, runtime)}));
    match Api::<Node>::all(client)
        .patch_status(&cfg.node_name, &status)
        .await
    {
        Err(e) if e.code() == Some(404) => {
            tracing::info!(node = %cfg.node_name, "node object gone; registering again");
            register(client, cfg, port, runtime).await
        }
        r => r.map_err(|source| Error::Register {
            node: cfg.node_name.clone(),
            source,
        }),
    }
}

fn micro_time() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Renews the node's Lease and refreshes its Ready heartbeat; re-registers a Node that was deleted, and reports
/// Ready again when the node lifecycle controller marked it Unknown.
pub(super) async fn heartbeat(client: Client, cfg: Config, port: u16, runtime: String) {
    let leases = Api::<Lease>::namespaced(&client, "kube-node-lease");
    let renew = (cfg.lease_duration / 4).max(Duration::from_millis(200));
    let mut last_status = tokio::time::Instant::now();
    loop {
        let lease = Lease {
            api_version: "coordination.k8s.io/v1".into(),
            kind: "Lease".into(),
            metadata: ObjectMeta {
                name: Some(cfg.node_name.clone()),
                namespace: Some("kube-node-lease".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.node_name.clone()),
                lease_duration_seconds: Some(
                    cfg.lease_duration.as_secs().clamp(1, i32::MAX as u64) as i32,
                ),
                renew_time: Some(micro_time()),
                ..Default::default()
            }),
        };
        if let Err(e) = leases
            .apply(&cfg.node_name, &lease, "capstan-agent", true)
            .await
        {
            tracing::debug!("renewing the node lease failed: {e}");
        }
        // Status every minute, and at once when the control plane marked the node not Ready (it missed our
        // heartbeats for a while: a partition, a stalled machine) - as the kubelet updates a status that differs.
        let marked = || async {
            Api::<Node>::all(&client)
                .get(&cfg.node_name)
                .await
                .is_ok_and(|n| {
                    n.status
                        .and_then(|s| s.conditions)
                        .into_iter()
                        .flatten()
                        .any(|c| c.type_ == "Ready" && c.status == "Unknown")
                })
        };
        if last_status.elapsed() >= Duration::from_secs(60) || marked().await {
            last_status = tokio::time::Instant::now();
            if let Err(e) = refresh(&client, &cfg, port, &runtime).await {
                tracing::warn!("node heartbeat failed: {e}");
            }
        }
        tokio::time::sleep(renew).await;
    }
}

/// Waits for the control plane to give the node its pod CIDR.
pub(super) async fn pod_cidr(client: &Client, node: &str) -> String {
    let nodes = Api::<Node>::all(client);
    loop {
        if let Ok(n) = nodes.get(node).await {
            if let Some(c) = n.spec.and_then(|s| s.pod_cidr) {
                return c;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
