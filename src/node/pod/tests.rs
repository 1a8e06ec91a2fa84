//! The pod worker's state machine on the recording doubles of `node::testing`, on a paused clock: crash-loop
//! backoff, probe-driven restarts, graceful termination and adoption after an agent restart.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Instance, Msg, PodState, Saved, Worker};
use crate::node::testing::{shared, Call, FakeRuntime, RecordingApi};

const UID: &str = "11111111-2222-3333-4444-555555555555";

fn pod(container: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "demo", "uid": UID},
        "spec": {"nodeName": "node-a", "restartPolicy": "Always", "terminationGracePeriodSeconds": 5,
            "containers": [container]}})
}

fn sleeper() -> Value {
    json!({"name": "c", "image": "busybox", "command": ["sleep", "3600"]})
}

struct Running {
    runtime: Arc<FakeRuntime>,
    api: Arc<RecordingApi>,
    tx: mpsc::UnboundedSender<Msg>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn start_with(pod: Value, prepare: impl FnOnce(&FakeRuntime, &std::path::Path)) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Arc::new(FakeRuntime::default());
    let api = Arc::new(RecordingApi::default());
    prepare(&runtime, dir.path());
    let shared = shared(runtime.clone(), api.clone(), dir.path());
    let (tx, rx) = mpsc::unbounded_channel();
    let pod = Arc::new(serde_json::from_value(pod).expect("a valid pod"));
    let worker = Worker::new(shared, pod, tx.clone());
    let task = tokio::spawn(worker.run(rx));
    Running {
        runtime,
        api,
        tx,
        task,
        _dir: dir,
    }
}

fn start(pod: Value) -> Running {
    start_with(pod, |_, _| {})
}

fn started(name: &'static str, n: usize) -> impl Fn(&[(Instant, Call)]) -> bool {
    move |calls| {
        calls
            .iter()
            .filter(|(_, c)| matches!(c, Call::Start { container, .. } if container == name))
            .count()
            >= n
    }
}

fn signalled(signal: i32) -> impl Fn(&[(Instant, Call)]) -> bool {
    move |calls| {
        calls
            .iter()
            .any(|(_, c)| matches!(c, Call::Signal { signal: s, .. } if *s == signal))
    }
}

/// Polls the recorded statuses until one satisfies `ok` (a few virtual milliseconds at a time).
async fn until_status(api: &RecordingApi, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100_000 {
        let st = api.last_status();
        if ok(&st) {
            return st;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no status where {what}; last: {}", api.last_status());
}

#[tokio::test(start_paused = true)]
async fn crash_loop_backoff_restarts_at_once_then_doubles_from_the_base() {
    let w = start(pod(sleeper()));
    w.runtime.until("first start", started("c", 1)).await;
    let mut delays = Vec::new();
    for n in 2..=6 {
        let exited = Instant::now();
        w.runtime.exit("c", 1);
        w.runtime.until("a restart", started("c", n)).await;
        let at = *w.runtime.starts("c").last().unwrap();
        delays.push((at - exited).as_secs());
    }
    // The kubelet's sequence with a 10 s base: the first restart at once, then 10 s, 20 s, 40 s, 80 s.
    assert_eq!(delays, [0, 10, 20, 40, 80]);
    // While it waits, the status says why, with the restart count.
    w.runtime.exit("c", 1);
    let st = until_status(&w.api, "the container is in CrashLoopBackOff", |st| {
        st["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })
    .await;
    assert_eq!(st["containerStatuses"][0]["restartCount"], 5);
    assert_eq!(
        st["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        1
    );
    assert!(w.api.event_reasons().iter().any(|r| r == "BackOff"));
    w.task.abort();
}

#[tokio::test(start_paused = true)]
async fn failing_liveness_probe_stops_and_restarts_the_container() {
    let mut c = sleeper();
    c["livenessProbe"] =
        json!({"exec": {"command": ["check"]}, "periodSeconds": 1, "failureThreshold": 3});
    let w = start(pod(c));
    w.runtime.until("first start", started("c", 1)).await;
    let healthy_until = Instant::now() + Duration::from_secs(5);
    tokio::time::sleep_until(healthy_until).await;
    assert!(
        !signalled(libc::SIGTERM)(&w.runtime.calls()),
        "a passing probe stops nothing"
    );
    w.runtime.set_exec_code(1);
    w.runtime.until("a restart", started("c", 2)).await;
    let calls: Vec<Call> = w.runtime.calls().into_iter().map(|(_, c)| c).collect();
    assert_eq!(
        calls,
        [
            Call::Start {
                container: "c".into(),
                restart: 0
            },
            Call::Signal {
                container: "c".into(),
                signal: libc::SIGTERM
            },
            Call::Start {
                container: "c".into(),
                restart: 1
            },
        ]
    );
    let reasons = w.api.event_reasons();
    assert!(reasons.iter().any(|r| r == "Unhealthy"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "Killing"), "{reasons:?}");
    w.task.abort();
}

#[tokio::test(start_paused = true)]
async fn deletion_sends_sigterm_then_sigkill_after_the_grace_period_then_removes_the_pod() {
    let mut p = pod(sleeper());
    let w = start(p.clone());
    w.runtime.until("first start", started("c", 1)).await;
    w.runtime.ignore_term();
    p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    p["metadata"]["deletionGracePeriodSeconds"] = json!(5);
    w.tx.send(Msg::Update(Arc::new(serde_json::from_value(p).unwrap())))
        .unwrap();
    w.runtime.until("SIGKILL", signalled(libc::SIGKILL)).await;
    let signals: Vec<(Instant, i32)> = w
        .runtime
        .calls()
        .into_iter()
        .filter_map(|(t, c)| match c {
            Call::Signal { signal, .. } => Some((t, signal)),
            _ => None,
        })
        .collect();
    assert_eq!(signals.len(), 2, "{signals:?}");
    assert_eq!(signals[0].1, libc::SIGTERM);
    assert_eq!(signals[1].1, libc::SIGKILL);
    assert_eq!(
        (signals[1].0 - signals[0].0).as_secs(),
        5,
        "the grace period"
    );
    // Once the container is down the worker removes the pod object and ends.
    tokio::time::timeout(Duration::from_secs(60), w.task)
        .await
        .expect("the worker ends")
        .unwrap();
    assert_eq!(*w.api.deleted.lock().unwrap(), ["web"]);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_agent_adopts_the_running_container_instead_of_starting_another() {
    let w = start_with(pod(sleeper()), |runtime, dir| {
        let handle = runtime.running_from_before("c", 4242);
        let saved = Saved {
            restart_count: 2,
            started_once: true,
            running: Some(Instance {
                handle,
                restart: 2,
                started_at: "2026-01-01T00:00:00Z".into(),
                container_id: "fake://c-2".into(),
            }),
            ..Default::default()
        };
        let state = PodState {
            namespace: "demo".into(),
            name: "web".into(),
            ip: "127.77.0.9".into(),
            start_time: "2026-01-01T00:00:00Z".into(),
            containers: [("c".to_string(), saved)].into_iter().collect(),
        };
        let pod_dir = dir.join("pods").join(UID);
        std::fs::create_dir_all(&pod_dir).unwrap();
        std::fs::write(
            pod_dir.join("state.json"),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
    });
    let st = until_status(&w.api, "the adopted container runs", |st| {
        st["containerStatuses"][0]["state"]["running"].is_object()
    })
    .await;
    assert_eq!(st["podIP"], "127.77.0.9", "the pod keeps its address");
    assert_eq!(st["containerStatuses"][0]["restartCount"], 2);
    assert_eq!(st["containerStatuses"][0]["containerID"], "fake://c-2");
    assert!(w.runtime.starts("c").is_empty(), "nothing started again");
    // The adopted container is watched like one this agent started: its exit restarts it.
    w.runtime.exit("c", 1);
    w.runtime.until("a restart", started("c", 1)).await;
    assert_eq!(
        w.runtime.calls()[0].1,
        Call::Start {
            container: "c".into(),
            restart: 3
        }
    );
    w.task.abort();
}

#[tokio::test(start_paused = true)]
async fn a_pod_whose_network_namespace_is_gone_is_killed_and_started_again_in_a_new_one() {
    let w = start_with(pod(sleeper()), |runtime, dir| {
        let handle = runtime.running_from_before("c", 4242);
        let saved = Saved {
            restart_count: 0,
            started_once: true,
            running: Some(Instance {
                handle,
                restart: 0,
                started_at: "2026-01-01T00:00:00Z".into(),
                container_id: "fake://c-0".into(),
            }),
            ..Default::default()
        };
        let state = PodState {
            namespace: "demo".into(),
            name: "web".into(),
            ip: "127.77.0.9".into(),
            start_time: "2026-01-01T00:00:00Z".into(),
            containers: [("c".to_string(), saved)].into_iter().collect(),
        };
        let pod_dir = dir.join("pods").join(UID);
        std::fs::create_dir_all(&pod_dir).unwrap();
        std::fs::write(
            pod_dir.join("state.json"),
            serde_json::to_vec(&state).unwrap(),
        )
        .unwrap();
        // Namespaces live in `netns/`, but this pod's is not there any more.
        std::fs::create_dir_all(dir.join("netns")).unwrap();
    });
    w.runtime
        .until("a start in the new sandbox", started("c", 1))
        .await;
    assert!(
        w.runtime
            .calls()
            .iter()
            .any(|(_, c)| matches!(c, Call::Signal { signal, .. } if *signal == libc::SIGKILL)),
        "the old container is killed: {:?}",
        w.runtime.calls()
    );
    assert!(w
        .api
        .event_reasons()
        .contains(&"SandboxChanged".to_string()));
    let st = until_status(&w.api, "the pod runs again", |st| {
        st["containerStatuses"][0]["state"]["running"].is_object()
    })
    .await;
    assert_ne!(
        st["podIP"], "127.77.0.9",
        "a new address in the new sandbox"
    );
    assert_eq!(st["containerStatuses"][0]["restartCount"], 1);
    w.task.abort();
}

#[test]
fn cluster_dns_pods_get_kubernetes_search_path() {
    assert_eq!(
        super::resolv_conf("127.244.0.1".parse().unwrap(), "shop"),
        "nameserver 127.244.0.1\nsearch shop.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    );
}
