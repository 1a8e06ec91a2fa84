//! Simulated nodes, as kwok's hollow nodes: `capstan agent --simulate N` registers N Nodes (`PREFIX-0` ...) with
//! the capacity given, keeps each one's Lease in `kube-node-lease` renewed (spread over the renew period, so N
//! leases cost N/period writes a second, not N at once), and runs the pods the scheduler binds to them as state
//! only: after `ready_after` a pod is Running and Ready with an address, no process behind it; a pod being
//! deleted is confirmed gone at once (what a kubelet does once its containers stopped). Thousands of nodes and
//! their pods fit on one machine, for benchmarks of the control plane and tests of what it does at scale.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::api::core::Pod;
use crate::api::meta::now;
use crate::api::registry;
use crate::client::informer::{Change, Informer};
use crate::client::Client;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    pub count: usize,
    /// Node names are `PREFIX-0`, `PREFIX-1`, ...
    pub prefix: String,
    pub cpu: String,
    pub memory: String,
    pub max_pods: u32,
    /// How long a bound pod takes to be Running and Ready.
    pub ready_after: Duration,
    /// How long each node's Lease is held; it is renewed every quarter of this.
    pub lease_duration: Duration,
    /// Pods that do not restart (`restartPolicy` Never or OnFailure: Jobs' pods) succeed this long after they
    /// run; None: they run until deleted.
    pub complete_after: Option<Duration>,
}

/// Why simulation could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("registering simulated node {node}: {source}")]
    Register {
        node: String,
        source: crate::client::Error,
    },
}

fn node_name(o: &Options, i: usize) -> String {
    format!("{}-{i}", o.prefix)
}

/// An address for the `n`-th pod of node `i`: 10.(128 + i / 256).(i % 256).(n % 250 + 2) - never contacted.
fn pod_ip(i: usize, n: usize) -> String {
    format!("10.{}.{}.{}", 128 + (i / 256) % 128, i % 256, n % 250 + 2)
}

fn node_object(o: &Options, i: usize) -> Value {
    let name = node_name(o, i);
    let capacity = json!({"cpu": o.cpu, "memory": o.memory, "pods": o.max_pods.to_string()});
    let t = now();
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
            "type": "simulated"},
            "annotations": {"capstan.io/simulated": "true"}},
        "spec": {},
        "status": {
            "capacity": capacity, "allocatable": capacity,
            "addresses": [{"type": "InternalIP", "address": format!("10.{}.{}.1", 128 + (i / 256) % 128, i % 256)},
                          {"type": "Hostname", "address": name}],
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "simulated node is ready",
                 "lastHeartbeatTime": t, "lastTransitionTime": t},
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory",
                 "lastHeartbeatTime": t, "lastTransitionTime": t},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure",
                 "lastHeartbeatTime": t, "lastTransitionTime": t},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID",
                 "lastHeartbeatTime": t, "lastTransitionTime": t}],
            "nodeInfo": {"kubeletVersion": "v1.32.0-capstan-simulated", "kubeProxyVersion": "",
                         "containerRuntimeVersion": "simulated://0", "operatingSystem": "linux",
                         "architecture": "amd64", "machineID": format!("simulated-{i}"),
                         "systemUUID": format!("simulated-{i}"), "bootID": "simulated",
                         "kernelVersion": "simulated", "osImage": "simulated"}
        }
    })
}

/// Registers the nodes (again after a restart: existing ones are taken over) and serves them until `stop`.
pub async fn run(
    client: Client,
    o: Options,
    stop: impl std::future::Future<Output = ()> + Send,
) -> Result<(), SimulateError> {
    let nodes = registry::lookup("nodes").expect("nodes are served");
    for i in 0..o.count {
        let name = node_name(&o, i);
        let obj = node_object(&o, i);
        match client.create(nodes, None, &obj).await {
            Ok(_) => {}
            Err(e) if e.code() == Some(409) => {}
            Err(source) => return Err(SimulateError::Register { node: name, source }),
        }
        // Status is a subresource: write it through there too (create may drop it).
        if let Err(source) = client
            .patch_status(nodes, None, &name, &obj["status"])
            .await
        {
            return Err(SimulateError::Register { node: name, source });
        }
    }
    tracing::info!(nodes = o.count, prefix = %o.prefix, "simulated nodes registered");
    let o = Arc::new(o);
    let leases = tokio::spawn(renew_leases(client.clone(), o.clone()));
    let pods = tokio::spawn(run_pods(client, o));
    stop.await;
    leases.abort();
    pods.abort();
    Ok(())
}

/// Renews every node's Lease once per quarter of the lease duration, spread evenly over that time.
async fn renew_leases(client: Client, o: Arc<Options>) {
    let leases = registry::lookup("leases").expect("leases are served");
    let period = (o.lease_duration / 4).max(Duration::from_millis(200));
    let gap = period / (o.count.max(1) as u32);
    let mut tick = tokio::time::interval(gap.max(Duration::from_micros(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i = 0usize;
    loop {
        tick.tick().await;
        let name = node_name(&o, i);
        let renew =
            crate::sys::clock::utc_now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": o.lease_duration.as_secs().max(1),
                     "renewTime": renew}});
        if let Err(e) = client
            .apply(
                leases,
                Some("kube-node-lease"),
                &name,
                &lease,
                "capstan-simulated",
                true,
            )
            .await
        {
            tracing::debug!(node = %name, "renewing a simulated node's lease failed: {e}");
        }
        i = (i + 1) % o.count.max(1);
    }
}

/// Follows every pod; those bound to a simulated node start (as state) after `ready_after`, and those being deleted
/// are confirmed gone.
async fn run_pods(client: Client, o: Arc<Options>) {
    let informer = Informer::<Pod>::all(&client);
    let mut changes = informer.changes.subscribe();
    informer.cache.wait_synced().await;
    let pods = registry::lookup("pods").expect("pods are served");
    let mine = |node: &str| {
        node.strip_prefix(o.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('-'))
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < o.count)
    };
    // Pods already started or being confirmed, by uid (an update of our own status must not start it again).
    let mut handled: HashSet<String> = HashSet::new();
    let mut started = 0usize;
    let mut act = |pod: &Pod, handled: &mut HashSet<String>| {
        let spec = pod.spec.as_ref();
        let Some(index) = spec.and_then(|s| s.node_name.as_deref()).and_then(mine) else {
            return;
        };
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            if handled.insert(format!("{uid}/gone")) {
                let client = client.clone();
                tokio::spawn(async move {
                    let body = json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
                        "preconditions": {"uid": uid}});
                    // Until it is gone (404) or another pod took the name (409).
                    while let Err(e) = client.delete_with(pods, Some(&ns), &name, &body).await {
                        if matches!(e.code(), Some(404 | 409)) {
                            return;
                        }
                        tokio::time::sleep(RETRY).await;
                    }
                });
            }
            return;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            return;
        }
        // A running pod marked not Ready by the control plane (its node was unreachable for a while) is Ready
        // again once this node is back, as a kubelet reports it afresh.
        let status = pod.status.as_ref();
        let unready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status != "True"));
        if phase == Some("Running") && unready && handled.contains(&uid) {
            let version = pod.metadata.resource_version.clone().unwrap_or_default();
            if handled.insert(format!("{uid}/unready/{version}")) {
                let ip = status.and_then(|s| s.pod_ip.clone()).unwrap_or_default();
                let host = status.and_then(|s| s.host_ip.clone()).unwrap_or_default();
                let containers = containers_of(pod);
                let client = client.clone();
                tokio::spawn(async move {
                    set_status(
                        &client,
                        &ns,
                        &name,
                        &uid,
                        &running_status(&containers, &ip, &host),
                    )
                    .await;
                });
            }
            return;
        }
        if !handled.insert(uid.clone()) {
            return;
        }
        let restarts = spec
            .and_then(|s| s.restart_policy.as_deref())
            .unwrap_or("Always")
            == "Always";
        let complete = o.complete_after.filter(|_| !restarts);
        // A pod already running (this agent restarted) only has its completion ahead of it.
        let running = phase == Some("Running");
        if running && complete.is_none() {
            return;
        }
        started += 1;
        let ip = pod_ip(index, started);
        let host = format!("10.{}.{}.1", 128 + (index / 256) % 128, index % 256);
        let containers = containers_of(pod);
        let client = client.clone();
        let delay = o.ready_after;
        tokio::spawn(async move {
            if !running {
                tokio::time::sleep(delay).await;
                let status = running_status(&containers, &ip, &host);
                if !set_status(&client, &ns, &name, &uid, &status).await {
                    return;
                }
            }
            let Some(after) = complete else { return };
            tokio::time::sleep(after).await;
            set_status(&client, &ns, &name, &uid, &succeeded_status(&containers)).await;
        });
    };
    for pod in informer.cache.list() {
        act(&pod, &mut handled);
    }
    loop {
        match changes.recv().await {
            Ok(Change::Applied(pod)) => act(&pod, &mut handled),
            Ok(Change::Deleted(pod)) => {
                let uid = pod.metadata.uid.clone().unwrap_or_default();
                handled.remove(&format!("{uid}/gone"));
                handled.remove(&uid);
            }
            Ok(Change::Resynced) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                for pod in informer.cache.list() {
                    act(&pod, &mut handled);
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A pod's containers: (name, image).
fn containers_of(pod: &Pod) -> Vec<(String, String)> {
    pod.spec
        .as_ref()
        .map(|s| {
            s.containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// How long a simulated node waits before trying a failed write again.
const RETRY: Duration = Duration::from_secs(1);

/// Writes a simulated pod's status until it is taken; false once the pod is gone (or another has its name).
async fn set_status(client: &Client, ns: &str, name: &str, uid: &str, status: &Value) -> bool {
    let pods = registry::lookup("pods").expect("pods are served");
    let path = format!(
        "{}/status",
        crate::client::resource_path(pods, Some(ns), Some(name))
    );
    // The uid is a precondition: a pod made again under the name is not this one.
    let body = json!({"metadata": {"uid": uid}, "status": status}).to_string();
    loop {
        let patch = Some((
            "application/strategic-merge-patch+json",
            body.clone().into_bytes(),
        ));
        match client
            .request(reqwest::Method::PATCH, &path, patch, None)
            .await
        {
            Ok(_) => return true,
            Err(e) if matches!(e.code(), Some(404 | 409)) => return false,
            Err(e) => {
                tracing::debug!(pod = %name, "a simulated pod's status was not written: {e}");
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

fn running_status(containers: &[(String, String)], ip: &str, host: &str) -> Value {
    let t = now();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(c, image)| {
            json!({"name": c, "image": image, "imageID": "", "ready": true, "started": true,
                "restartCount": 0, "state": {"running": {"startedAt": t}}})
        })
        .collect();
    let condition = |kind: &str| json!({"type": kind, "status": "True", "lastProbeTime": null, "lastTransitionTime": t});
    json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": host,
        "hostIPs": [{"ip": host}], "startTime": t, "containerStatuses": statuses,
        "conditions": [condition("PodReadyToStartContainers"), condition("Initialized"),
            condition("ContainersReady"), condition("Ready"), condition("PodScheduled")]})
}

fn succeeded_status(containers: &[(String, String)]) -> Value {
    let t = now();
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(c, image)| {
            json!({"name": c, "image": image, "imageID": "", "ready": false, "started": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                "startedAt": t, "finishedAt": t}}})
        })
        .collect();
    let condition = |kind: &str| json!({"type": kind, "status": "False", "lastProbeTime": null, "lastTransitionTime": t});
    json!({"phase": "Succeeded", "containerStatuses": statuses,
        "conditions": [condition("ContainersReady"), condition("Ready")]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simulated_addresses_are_distinct_per_node_and_outside_the_pod_networks() {
        assert_eq!(pod_ip(0, 1), "10.128.0.3");
        assert_eq!(pod_ip(300, 1), "10.129.44.3");
        assert_ne!(pod_ip(1, 7), pod_ip(2, 7));
        let o = Options {
            count: 3,
            prefix: "sim".into(),
            cpu: "8".into(),
            memory: "32Gi".into(),
            max_pods: 110,
            ready_after: Duration::from_millis(10),
            lease_duration: Duration::from_secs(40),
            complete_after: None,
        };
        let n = node_object(&o, 2);
        assert_eq!(n["metadata"]["name"], "sim-2");
        assert_eq!(n["status"]["allocatable"]["pods"], "110");
        assert_eq!(n["status"]["conditions"][0]["type"], "Ready");
    }
}
