//! The controller manager (kube-controller-manager's role): one file per controller, each a `reconcile` on the
//! controller runtime, all run by [`run`] while this process holds the `capstan-controller-manager` Lease. They talk
//! to the cluster only through the client.

pub mod deployment;
pub mod gc;
pub mod replicaset;

use std::sync::Arc;

use crate::api::registry;
use crate::client::informer::Informer;
use crate::client::Client;
use crate::runtime::leader::Elector;
use crate::runtime::Controller;

/// Runs the controllers while this process is the elected leader, until `shutdown` resolves.
pub async fn run(
    client: Client,
    identity: String,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    let (leading_tx, mut leading) = tokio::sync::watch::channel(false);
    let elector = Elector::new("kube-system", "capstan-controller-manager", &identity);
    let campaign = tokio::spawn(elector.run(client.clone(), leading_tx));
    let work = async {
        loop {
            if leading.wait_for(|l| *l).await.is_err() {
                return;
            }
            tracing::info!(%identity, "leading the controller manager");
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let running = tokio::spawn(controllers(client.clone(), async {
                let _ = stop_rx.await;
            }));
            let _ = leading.wait_for(|l| !*l).await;
            tracing::warn!(%identity, "lost the controller-manager lease; stopping controllers");
            let _ = stop_tx.send(());
            let _ = running.await;
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = work => {}
    }
    campaign.abort();
}

async fn controllers(client: Client, stop: impl std::future::Future<Output = ()> + Send + 'static) {
    let pods = Informer::start(
        client.clone(),
        registry::lookup("pods").expect("pods"),
        None,
        String::new(),
    );
    let rs_kind = registry::lookup("replicasets").expect("replicasets");
    let replicasets = Informer::start(client.clone(), rs_kind, None, String::new());
    let rs_ctx = Arc::new(replicaset::Context {
        client: client.clone(),
        pods: pods.cache.clone(),
        expectations: replicaset::Expectations::default(),
    });
    let dep_kind = registry::lookup("deployments").expect("deployments");
    let deployments = Informer::start(client.clone(), dep_kind, None, String::new());
    let dep_ctx = Arc::new(deployment::Context {
        client: client.clone(),
        replicasets: replicasets.cache.clone(),
    });
    let (dep_stop, dep_stopped) = tokio::sync::oneshot::channel::<()>();
    let dep = tokio::spawn(
        Controller::new(client.clone(), dep_kind)
            .primary_shared(&deployments)
            .owns_shared(&replicasets)
            .workers(2)
            .run(deployment::reconcile, dep_ctx, async {
                let _ = dep_stopped.await;
            }),
    );
    // The scheduler runs under the same lease for now.
    let (sched_stop, sched_stopped) = tokio::sync::oneshot::channel::<()>();
    let sched = tokio::spawn(crate::scheduler::run(client.clone(), async {
        let _ = sched_stopped.await;
    }));
    let (gc_stop, gc_stopped) = tokio::sync::oneshot::channel::<()>();
    let gc = tokio::spawn(gc::run(client.clone(), async {
        let _ = gc_stopped.await;
    }));
    let rc_kind = registry::lookup("replicationcontrollers").expect("replicationcontrollers");
    let rcs = Informer::start(client.clone(), rc_kind, None, String::new());
    let (rc_stop, rc_stopped) = tokio::sync::oneshot::channel::<()>();
    let rc = tokio::spawn(
        Controller::new(client.clone(), rc_kind)
            .primary_shared(&rcs)
            .owns_shared(&pods)
            .watches_shared(&pods, replicaset::orphan_mapper(rcs.cache.clone()))
            .workers(2)
            .run(replicaset::reconcile_rc, rs_ctx.clone(), async {
                let _ = rc_stopped.await;
            }),
    );
    Controller::new(client.clone(), rs_kind)
        .primary_shared(&replicasets)
        .owns_shared(&pods)
        .watches_shared(&pods, replicaset::orphan_mapper(replicasets.cache.clone()))
        .workers(4)
        .run(replicaset::reconcile, rs_ctx, stop)
        .await;
    let _ = gc_stop.send(());
    let _ = rc_stop.send(());
    let _ = sched_stop.send(());
    let _ = sched.await;
    let _ = dep_stop.send(());
    let _ = dep.await;
    let _ = gc.await;
    let _ = rc.await;
    drop((pods, replicasets, rcs, deployments));
}
