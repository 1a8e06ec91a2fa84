//! The controller manager process part: campaigns for the `capstan-controller-manager` Lease and, while it leads,
//! starts one informer per kind (shared by every loop that reads that kind) and the loops on them - the workload
//! controllers, endpoints, volumes, node IPAM, the cloud controller manager's service controller, GitOps, the
//! scheduler and the garbage collector. Losing the lease stops them all; regaining it starts them afresh.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use crate::api::apps::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use crate::api::batch::{CronJob, Job};
use crate::api::core::{
    Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
    ReplicationController, Service,
};
use crate::api::other::{EndpointSlice, StorageClass};
use crate::client::informer::Informer;
use crate::client::Client;
use crate::controllers::{
    cronjob, daemonset, deployment, endpoints, gc, job, namespace, node_ipam, pods, replicaset,
    statefulset, volumes, Settings,
};
use crate::runtime::leader::Elector;
use crate::runtime::Controller;

/// Runs the control loops while this process is the elected leader, until `shutdown` resolves.
pub async fn run(
    client: Client,
    identity: String,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
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
            let running = tokio::spawn(loops(client.clone(), settings.clone(), async {
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

/// Starts every loop on shared informers; stops them when `stop` resolves.
async fn loops(
    client: Client,
    settings: Settings,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let pods = Informer::<Pod>::all(&client);
    let replicasets = Informer::<ReplicaSet>::all(&client);
    let deployments = Informer::<Deployment>::all(&client);
    let rcs = Informer::<ReplicationController>::all(&client);
    let revisions = Informer::<ControllerRevision>::all(&client);
    let nodes = Informer::<Node>::all(&client);
    let jobs = Informer::<Job>::all(&client);
    let cronjobs = Informer::<CronJob>::all(&client);
    let daemonsets = Informer::<DaemonSet>::all(&client);
    let statefulsets = Informer::<StatefulSet>::all(&client);
    let pvs = Informer::<PersistentVolume>::all(&client);
    let claims = Informer::<PersistentVolumeClaim>::all(&client);
    let classes = Informer::<StorageClass>::all(&client);
    let services = Informer::<Service>::all(&client);
    let endpoints_informer = Informer::<Endpoints>::all(&client);
    let slices = Informer::<EndpointSlice>::all(&client);

    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    let mut stopper = || {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stops.push(tx);
        async move {
            let _ = rx.await;
        }
    };

    let dep_ctx = Arc::new(deployment::Context {
        client: client.clone(),
        replicasets: replicasets.cache.clone(),
    });
    tasks.push(tokio::spawn(
        Controller::<Deployment>::new(client.clone())
            .primary_shared(&deployments)
            .owns_shared(&replicasets)
            .workers(2)
            .run(deployment::reconcile, dep_ctx, stopper()),
    ));
    let rs_ctx = Arc::new(replicaset::Context {
        client: client.clone(),
        pods: pods.cache.clone(),
        expectations: pods::Expectations::default(),
    });
    tasks.push(tokio::spawn(
        Controller::<ReplicationController>::new(client.clone())
            .primary_shared(&rcs)
            .owns_shared(&pods)
            .watches_shared(
                &pods,
                replicaset::orphan_mapper(rcs.cache.clone(), replicaset::rc_selector),
            )
            .workers(2)
            .run(replicaset::reconcile_rc, rs_ctx.clone(), stopper()),
    ));
    tasks.push(tokio::spawn(
        Controller::<ReplicaSet>::new(client.clone())
            .primary_shared(&replicasets)
            .owns_shared(&pods)
            .watches_shared(
                &pods,
                replicaset::orphan_mapper(replicasets.cache.clone(), replicaset::rs_selector),
            )
            .workers(4)
            .run(replicaset::reconcile, rs_ctx, stopper()),
    ));
    let job_ctx = Arc::new(job::Context {
        client: client.clone(),
        pods: pods.cache.clone(),
        expectations: pods::Expectations::default(),
        backoff: settings.job_backoff,
    });
    tasks.push(tokio::spawn(
        Controller::<Job>::new(client.clone())
            .primary_shared(&jobs)
            .owns_shared(&pods)
            .workers(2)
            .run(job::reconcile, job_ctx, stopper()),
    ));
    let ds_ctx = Arc::new(daemonset::Context {
        client: client.clone(),
        pods: pods.cache.clone(),
        nodes: nodes.cache.clone(),
        revisions: revisions.cache.clone(),
        expectations: pods::Expectations::default(),
    });
    tasks.push(tokio::spawn(
        Controller::<DaemonSet>::new(client.clone())
            .primary_shared(&daemonsets)
            .owns_shared(&pods)
            .watches_shared(&nodes, daemonset::node_mapper(daemonsets.cache.clone()))
            .workers(2)
            .run(daemonset::reconcile, ds_ctx, stopper()),
    ));
    let sts_ctx = Arc::new(statefulset::Context {
        client: client.clone(),
        pods: pods.cache.clone(),
        claims: claims.cache.clone(),
        revisions: revisions.cache.clone(),
    });
    tasks.push(tokio::spawn(
        Controller::<StatefulSet>::new(client.clone())
            .primary_shared(&statefulsets)
            .owns_shared(&pods)
            .workers(2)
            .run(statefulset::reconcile, sts_ctx, stopper()),
    ));
    let ep_ctx = Arc::new(endpoints::Context {
        client: client.clone(),
        pods: pods.cache.clone(),
        endpoints: endpoints_informer.cache.clone(),
        slices: slices.cache.clone(),
    });
    tasks.push(tokio::spawn(
        Controller::<Service>::new(client.clone())
            .primary_shared(&services)
            .watches_shared(&pods, endpoints::pod_mapper(services.cache.clone()))
            .watches_shared(&endpoints_informer, endpoints::endpoints_owner())
            .watches_shared(&slices, endpoints::slice_owner())
            .workers(2)
            .run(endpoints::reconcile, ep_ctx, stopper()),
    ));
    let vol_ctx = Arc::new(volumes::Context {
        client: client.clone(),
        volumes: pvs.cache.clone(),
        classes: classes.cache.clone(),
        claims: claims.cache.clone(),
        storage: settings.storage_dir.clone(),
    });
    tasks.push(tokio::spawn(
        Controller::<PersistentVolumeClaim>::new(client.clone())
            .primary_shared(&claims)
            .watches_shared(&pvs, volumes::claim_mapper())
            .workers(1)
            .run(volumes::reconcile, vol_ctx.clone(), stopper()),
    ));
    tasks.push(tokio::spawn(
        Controller::<PersistentVolume>::new(client.clone())
            .primary_shared(&pvs)
            .watches_shared(&claims, volumes::volume_mapper(pvs.cache.clone()))
            .workers(1)
            .run(volumes::reconcile_volume, vol_ctx, stopper()),
    ));
    // The cloud controller manager's service controller, with the built-in `local` provider.
    match crate::cloud::LocalPool::new(&settings.load_balancer_pool) {
        Ok(pool) => {
            let lb_ctx = Arc::new(crate::cloud::Context {
                client: client.clone(),
                services: services.cache.clone(),
                provider: Arc::new(pool),
            });
            tasks.push(tokio::spawn(
                Controller::<Service>::new(client.clone())
                    .primary_shared(&services)
                    .workers(1)
                    .run(crate::cloud::reconcile, lb_ctx, stopper()),
            ));
        }
        Err(e) => tracing::error!("no load balancers: {e}"),
    }
    let cron_ctx = Arc::new(cronjob::Context {
        client: client.clone(),
        jobs: jobs.cache.clone(),
    });
    tasks.push(tokio::spawn(
        Controller::<CronJob>::new(client.clone())
            .primary_shared(&cronjobs)
            .owns_shared(&jobs)
            .workers(1)
            .run(cronjob::reconcile, cron_ctx, stopper()),
    ));
    let mut ipam = node_ipam::Context::new(client.clone(), nodes.cache.clone());
    ipam.cluster = settings.cluster_cidr;
    tasks.push(tokio::spawn(
        Controller::<Node>::new(client.clone())
            .primary_shared(&nodes)
            .workers(1)
            .run(node_ipam::reconcile, Arc::new(ipam), stopper()),
    ));
    tasks.push(tokio::spawn(
        Controller::<Namespace>::new(client.clone()).workers(1).run(
            namespace::reconcile,
            Arc::new(namespace::Context::new(client.clone())),
            stopper(),
        ),
    ));
    // GitOps: Applications follow their repositories.
    tasks.push(tokio::spawn(crate::gitops::run(
        client.clone(),
        settings.gitops_cache.clone(),
        stopper(),
    )));
    // The scheduler runs under the same lease, on the same pod and node informers.
    tasks.push(tokio::spawn(crate::scheduler::run(
        client.clone(),
        pods.shared(),
        nodes.shared(),
        stopper(),
    )));
    let mut gc_sources: HashMap<&'static str, gc::Source> = HashMap::new();
    gc_sources.insert("pods", pods.shared().into());
    gc_sources.insert("replicasets", replicasets.shared().into());
    gc_sources.insert("deployments", deployments.shared().into());
    gc_sources.insert("replicationcontrollers", rcs.shared().into());
    gc_sources.insert("controllerrevisions", revisions.shared().into());
    gc_sources.insert("jobs", jobs.shared().into());
    gc_sources.insert("cronjobs", cronjobs.shared().into());
    gc_sources.insert("daemonsets", daemonsets.shared().into());
    gc_sources.insert("statefulsets", statefulsets.shared().into());
    gc_sources.insert("persistentvolumeclaims", claims.shared().into());
    gc_sources.insert("services", services.shared().into());
    gc_sources.insert("endpointslices", slices.shared().into());
    for p in gc::kinds() {
        if !gc_sources.contains_key(p) {
            tracing::error!(
                kind = p,
                "the garbage collector has no informer for this kind"
            );
        }
    }
    tasks.push(tokio::spawn(gc::run(client.clone(), gc_sources, stopper())));

    stop.await;
    for s in stops {
        let _ = s.send(());
    }
    for t in tasks {
        let _ = t.await;
    }
}
