//! The controller runtime against a real server: a small controller keeps a copy of each labelled ConfigMap,
//! reacting to changes of both the primary object and the copy it owns, retrying failures with backoff; two
//! candidates elect one leader on a Lease and the other takes over when the leader stops.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan::api::core::ConfigMap;
use capstan::api::registry;
use capstan::client::{Api, Client};
use capstan::runtime::leader::Elector;
use capstan::runtime::{Action, Backoff, Controller};
use common::Server;
use serde_json::{json, Value};

struct Ctx {
    client: Client,
    attempts: AtomicUsize,
}

#[derive(Debug)]
struct Failed(String);
impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Copies `data` of ConfigMaps labelled `mirror=yes` into `<name>-copy`, owned by the original. A ConfigMap
/// labelled `flaky=yes` makes the first two reconciles fail.
async fn reconcile(cm: Arc<ConfigMap>, ctx: Arc<Ctx>) -> Result<Action, Failed> {
    let labels = cm.metadata.labels.clone().unwrap_or_default();
    if labels.get("mirror").map(String::as_str) != Some("yes") {
        return Ok(Action::await_change());
    }
    if labels.get("flaky").map(String::as_str) == Some("yes")
        && ctx.attempts.load(Ordering::SeqCst) < 2
    {
        ctx.attempts.fetch_add(1, Ordering::SeqCst);
        return Err(Failed("flaky on purpose".into()));
    }
    let ns = cm.metadata.namespace.clone().unwrap_or_default();
    let name = format!("{}-copy", cm.metadata.name());
    let copy = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
            "name": cm.metadata.name(), "uid": cm.metadata.uid, "controller": true}]},
        "data": cm.data});
    Api::<ConfigMap>::namespaced(&ctx.client, &ns)
        .apply(&name, &copy, "mirror", true)
        .await
        .map_err(|e| Failed(e.to_string()))?;
    Ok(Action::await_change())
}

fn get(s: &Server, name: &str) -> Option<Value> {
    let (code, v) = s.call(
        "GET",
        &format!("/api/v1/namespaces/default/configmaps/{name}"),
        "",
        "",
    );
    (code == 200).then_some(v)
}

fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    common::eventually(what, || f().then_some(()));
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_reconciles_primaries_and_owned_objects() {
    let s = Arc::new(tokio::task::spawn_blocking(Server::start).await.unwrap());
    let client = Client::from_kubeconfig(&s.kubeconfig()).unwrap();
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        attempts: AtomicUsize::new(0),
    });
    let controller = Controller::<ConfigMap>::new(client.clone())
        .namespace("default")
        .owns::<ConfigMap>()
        .backoff(Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_secs(1),
        });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(controller.run(reconcile, ctx.clone(), async {
        let _ = stopped.await;
    }));

    let s2 = s.clone();
    tokio::task::spawn_blocking(move || {
        let s = s2;
        s.call("POST", "/api/v1/namespaces/default/configmaps", "application/json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","labels":{"mirror":"yes"}},"data":{"k":"1"}}"#);
        eventually("the copy is created", || get(&s, "a-copy").is_some_and(|c| c["data"]["k"] == "1"));
        // A change to the primary flows to the copy.
        s.call("PATCH", "/api/v1/namespaces/default/configmaps/a", "application/merge-patch+json", r#"{"data":{"k":"2"}}"#);
        eventually("the copy follows the original", || get(&s, "a-copy").is_some_and(|c| c["data"]["k"] == "2"));
        // A change to the owned copy wakes its owner, which puts it back.
        s.call("PATCH", "/api/v1/namespaces/default/configmaps/a-copy", "application/merge-patch+json", r#"{"data":{"k":"tampered"}}"#);
        eventually("the owner restores its copy", || get(&s, "a-copy").is_some_and(|c| c["data"]["k"] == "2"));
        // Failures are retried with backoff until they succeed.
        s.call("POST", "/api/v1/namespaces/default/configmaps", "application/json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"f","labels":{"mirror":"yes","flaky":"yes"}},"data":{"k":"x"}}"#);
        eventually("the flaky one succeeds after retries", || get(&s, "f-copy").is_some());
    })
    .await
    .unwrap();
    // Nothing changed between the failures and the success: the retries came from the queue's backoff.
    assert_eq!(
        ctx.attempts.load(Ordering::SeqCst),
        2,
        "two failures, then success"
    );
    let _ = stop.send(());
    run.await.unwrap();
}

/// A candidate for the Lease `lease` on a short election (1 s lease, 700 ms renew deadline, 100 ms retry).
fn quick_elector(lease: &str, id: &str) -> Elector {
    Elector {
        lease_duration: Duration::from_secs(1),
        renew_deadline: Duration::from_millis(700),
        renew_every: Duration::from_millis(100),
        ..Elector::new("kube-system", lease, id)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_and_a_takeover_when_it_stops() {
    let s = tokio::task::spawn_blocking(Server::start).await.unwrap();
    let client = Client::from_kubeconfig(&s.kubeconfig()).unwrap();
    let elector = |id: &str| quick_elector("capstan-controllers", id);
    let (a_tx, a_rx) = tokio::sync::watch::channel(false);
    let (b_tx, b_rx) = tokio::sync::watch::channel(false);
    let a = tokio::spawn(elector("a").run(client.clone(), a_tx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = tokio::spawn(elector("b").run(client.clone(), b_tx));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(*a_rx.borrow() && !*b_rx.borrow(), "exactly one leader: a");
    a.abort();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !*b_rx.borrow() {
        assert!(Instant::now() < deadline, "b did not take over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lease = client
        .get(
            registry::lookup("leases").unwrap(),
            Some("kube-system"),
            "capstan-controllers",
        )
        .await
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    b.abort();
}

/// A wall clock that jumps ahead must not hand the lease to a second candidate while its holder keeps renewing:
/// expiry is judged by each candidate's own monotonic clock, from when it last saw the lease change.
/// (Current-thread runtime: the simulated wall clock is this thread's, and every elector runs on it.)
#[tokio::test]
async fn a_wall_clock_jump_does_not_elect_a_second_leader() {
    let s = tokio::task::spawn_blocking(Server::start).await.unwrap();
    let client = Client::from_kubeconfig(&s.kubeconfig()).unwrap();
    let elector = |id: &str| quick_elector("capstan-jumpy", id);
    let mut wall = std::time::SystemTime::now();
    capstan::sys::clock::simulate(wall, 7);
    let (a_tx, a_rx) = tokio::sync::watch::channel(false);
    let (b_tx, b_rx) = tokio::sync::watch::channel(false);
    let a = tokio::spawn(elector("a").run(client.clone(), a_tx));
    let mut b = None;
    let start = Instant::now();
    let mut a_led = false;
    while start.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        wall += Duration::from_millis(20);
        if b.is_none() && start.elapsed() > Duration::from_millis(300) {
            b = Some(tokio::spawn(elector("b").run(client.clone(), b_tx.clone())));
        }
        if start.elapsed() > Duration::from_millis(1500) && wall < std::time::SystemTime::now() {
            // The jump: an hour ahead, long past the renewTime a wrote.
            wall += Duration::from_secs(3600);
        }
        capstan::sys::clock::set_simulated_now(wall);
        a_led |= *a_rx.borrow();
        assert!(!*b_rx.borrow(), "b took the lease while a kept renewing it");
    }
    assert!(a_led && *a_rx.borrow(), "a leads throughout");
    a.abort();
    // Without a's renewals the lease expires by b's own clock, and b takes it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !*b_rx.borrow() {
        assert!(
            Instant::now() < deadline,
            "b did not take over after a stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    capstan::sys::clock::stop_simulating();
    b.unwrap().abort();
}
