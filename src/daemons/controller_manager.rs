//! The controller manager process part: campaigns for the `capstan-controller-manager` Lease and, while it leads,
//! starts one informer per kind (shared by every loop that reads that kind) and the loops on them - the workload
//! controllers, endpoints, volumes, node IPAM and node lifecycle, the cloud controller manager's service controller, GitOps, the
//! scheduler and the garbage collector. Losing the lease stops them all; regaining it starts them afresh.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use crate::api::apps::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use crate::api::batch::{CronJob, Job};
use crate::api::core::{
    Endpoints, Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
    ReplicationController, Service,
};
use crate::api::other::{EndpointSlice, Lease, PodDisruptionBudget, StorageClass};
use crate::client::informer::Informer;
use crate::client::Client;
use crate::controllers::{
    cronjob, daemonset, deployment, disruption, endpoints, gc, job, namespace, node_ipam,
    node_lifecycle, pods, replicaset, serviceaccounts, statefulset, volumes, Settings,
};
use crate::runtime::leader::Elector;
use crate::runtime::Controller;

/// The identities the controller manager's parts act as, each its own user (`system:kube-controller-manager`,
/// `system:kube-scheduler`, `system:capstan-gitops`), so RBAC and the audit log tell them apart.
#[derive(Clone)]
pub struct Clients {
    pub controllers: Client,
    pub scheduler: Client,
    pub gitops: Client,
}

impl Clients {
    /// Every part as the same client (tests, and processes with one credential).
    pub fn one(client: Client) -> Clients {
        Clients {
            controllers: client.clone(),
            scheduler: client.clone(),
            gitops: client,
        }
    }
}

/// Runs the control loops while this process is the elected leader, until `shutdown` resolves.
pub async fn run(
    clients: Clients,
    identity: String,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) {
    let client = clients.controllers.clone();
    let (leading_tx, mut leading) = tokio::sync::watch::channel(false);
    let elector = Elector::with_timing(
        "kube-system",
        "capstan-controller-manager",
        &identity,
        settings.leader_election,
    );
    let campaign = tokio::spawn(elector.run(client.clone(), leading_tx));
    let work = async {
        loop {
            if leading.wait_for(|l| *l).await.is_err() {
                return;
            }
            tracing::info!(%identity, "leading the controller manager");
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let running = tokio::spawn(loops(clients.clone(), settings.clone(), async {
                let _ = stop_rx.await;
            }));
            let _ = leading.wait_for(|l| !*l).await;
            tracing::warn!(%identity, "lost the controller-manager lease; stopping controllers");
            let _ = stop_tx.send(());
            let _ = running.await;
        }
    };
    tokio::select! {
        biased;
        _ = shutdown => {}
        _ = work => {}
    }
    campaign.abort();
}

/// One informer per kind, shared by every loop that reads it.
struct Informers {
    pods: Informer<Pod>,
    replicasets: Informer<ReplicaSet>,
    deployments: Informer<Deployment>,
    rcs: Informer<ReplicationController>,
    revisions: Informer<ControllerRevision>,
    nodes: Informer<Node>,
    leases: Informer<Lease>,
    budgets: Informer<PodDisruptionBudget>,
    jobs: Informer<Job>,
    cronjobs: Informer<CronJob>,
    daemonsets: Informer<DaemonSet>,
    statefulsets: Informer<StatefulSet>,
    pvs: Informer<PersistentVolume>,
    claims: Informer<PersistentVolumeClaim>,
    classes: Informer<StorageClass>,
    services: Informer<Service>,
    endpoints: Informer<Endpoints>,
    slices: Informer<EndpointSlice>,
}

impl Informers {
    fn start(client: &Client) -> Self {
        Informers {
            pods: Informer::all(client),
            replicasets: Informer::all(client),
            deployments: Informer::all(client),
            rcs: Informer::all(client),
            revisions: Informer::all(client),
            nodes: Informer::all(client),
            leases: Informer::scoped(client, Some("kube-node-lease"), ""),
            budgets: Informer::all(client),
            jobs: Informer::all(client),
            cronjobs: Informer::all(client),
            daemonsets: Informer::all(client),
            statefulsets: Informer::all(client),
            pvs: Informer::all(client),
            claims: Informer::all(client),
            classes: Informer::all(client),
            services: Informer::all(client),
            endpoints: Informer::all(client),
            slices: Informer::all(client),
        }
    }
}

/// The running loops, each with its stop signal.
struct Loops {
    client: Client,
    clients: Clients,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Loops {
    /// Starts a loop, handing it the future that resolves when it must stop.
    fn spawn<F>(
        &mut self,
        start: impl FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) -> F,
    ) where
        F: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.stops.push(tx);
        let stop = Box::pin(async move {
            let _ = rx.await;
        });
        self.tasks.push(tokio::spawn(start(stop)));
    }

    async fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Deployments, ReplicaSets, ReplicationControllers, Jobs, CronJobs, DaemonSets, StatefulSets and the
/// PodDisruptionBudgets over them.
fn workloads(l: &mut Loops, i: &Informers, settings: &Settings) {
    let client = l.client.clone();
    let dep_ctx = Arc::new(deployment::Context {
        client: client.clone(),
        replicasets: i.replicasets.cache.clone(),
    });
    let c = Controller::<Deployment>::new(client.clone())
        .named("deployment")
        .primary_shared(&i.deployments)
        .owns_shared(&i.replicasets)
        .workers(2);
    l.spawn(|stop| c.run(deployment::reconcile, dep_ctx, stop));
    let rs_ctx = Arc::new(replicaset::Context {
        client: client.clone(),
        pods: i.pods.cache.clone(),
        expectations: pods::Expectations::default(),
    });
    let c = Controller::<ReplicationController>::new(client.clone())
        .named("replicationmanager")
        .primary_shared(&i.rcs)
        .owns_shared(&i.pods)
        .watches_shared(
            &i.pods,
            replicaset::orphan_mapper(i.rcs.cache.clone(), replicaset::rc_selector),
        )
        .workers(2);
    let ctx = rs_ctx.clone();
    l.spawn(|stop| c.run(replicaset::reconcile_rc, ctx, stop));
    let c = Controller::<ReplicaSet>::new(client.clone())
        .named("replicaset")
        .primary_shared(&i.replicasets)
        .owns_shared(&i.pods)
        .watches_shared(
            &i.pods,
            replicaset::orphan_mapper(i.replicasets.cache.clone(), replicaset::rs_selector),
        )
        .workers(4);
    l.spawn(|stop| c.run(replicaset::reconcile, rs_ctx, stop));
    let job_ctx = Arc::new(job::Context {
        client: client.clone(),
        pods: i.pods.cache.clone(),
        expectations: pods::Expectations::default(),
        backoff: settings.job_backoff,
    });
    let c = Controller::<Job>::new(client.clone())
        .named("job")
        .primary_shared(&i.jobs)
        .owns_shared(&i.pods)
        .workers(2);
    l.spawn(|stop| c.run(job::reconcile, job_ctx, stop));
    let cron_ctx = Arc::new(cronjob::Context {
        client: client.clone(),
        jobs: i.jobs.cache.clone(),
    });
    let c = Controller::<CronJob>::new(client.clone())
        .named("cronjob")
        .primary_shared(&i.cronjobs)
        .owns_shared(&i.jobs)
        .workers(1);
    l.spawn(|stop| c.run(cronjob::reconcile, cron_ctx, stop));
    let ds_ctx = Arc::new(daemonset::Context {
        client: client.clone(),
        pods: i.pods.cache.clone(),
        nodes: i.nodes.cache.clone(),
        revisions: i.revisions.cache.clone(),
        expectations: pods::Expectations::default(),
    });
    let c = Controller::<DaemonSet>::new(client.clone())
        .named("daemonset")
        .primary_shared(&i.daemonsets)
        .owns_shared(&i.pods)
        .watches_shared(&i.nodes, daemonset::node_mapper(i.daemonsets.cache.clone()))
        .workers(2);
    l.spawn(|stop| c.run(daemonset::reconcile, ds_ctx, stop));
    let sts_ctx = Arc::new(statefulset::Context {
        client: client.clone(),
        pods: i.pods.cache.clone(),
        claims: i.claims.cache.clone(),
        revisions: i.revisions.cache.clone(),
    });
    let c = Controller::<StatefulSet>::new(client)
        .named("statefulset")
        .primary_shared(&i.statefulsets)
        .owns_shared(&i.pods)
        .workers(2);
    l.spawn(|stop| c.run(statefulset::reconcile, sts_ctx, stop));
    let pdb_ctx = Arc::new(disruption::Context {
        client: l.client.clone(),
        pods: i.pods.cache.clone(),
        replicasets: i.replicasets.cache.clone(),
        deployments: i.deployments.cache.clone(),
        statefulsets: i.statefulsets.cache.clone(),
        rcs: i.rcs.cache.clone(),
    });
    let c = Controller::<PodDisruptionBudget>::new(l.client.clone())
        .named("disruption")
        .primary_shared(&i.budgets)
        .watches_shared(&i.pods, disruption::pod_mapper(i.budgets.cache.clone()))
        .workers(1);
    l.spawn(|stop| c.run(disruption::reconcile, pdb_ctx, stop));
}

/// Endpoints and EndpointSlices of Services, and the cloud controller manager's service controller (the built-in
/// `local` load-balancer pool).
fn services(l: &mut Loops, i: &Informers, settings: &Settings) {
    let client = l.client.clone();
    let ep_ctx = Arc::new(endpoints::Context {
        client: client.clone(),
        pods: i.pods.cache.clone(),
        endpoints: i.endpoints.cache.clone(),
        slices: i.slices.cache.clone(),
    });
    let c = Controller::<Service>::new(client.clone())
        .named("endpoint")
        .primary_shared(&i.services)
        .watches_shared(&i.pods, endpoints::pod_mapper(i.services.cache.clone()))
        .watches_shared(&i.endpoints, endpoints::endpoints_owner())
        .watches_shared(&i.slices, endpoints::slice_owner())
        .workers(2);
    l.spawn(|stop| c.run(endpoints::reconcile, ep_ctx, stop));
    match crate::cloud::LocalPool::new(&settings.load_balancer_pool) {
        Ok(pool) => {
            let lb_ctx = Arc::new(crate::cloud::Context {
                client: client.clone(),
                services: i.services.cache.clone(),
                provider: Arc::new(pool),
            });
            let c = Controller::<Service>::new(client)
                .named("service")
                .primary_shared(&i.services)
                .workers(1);
            l.spawn(|stop| c.run(crate::cloud::reconcile, lb_ctx, stop));
        }
        Err(e) => tracing::error!("no load balancers: {e}"),
    }
}

/// PersistentVolumeClaims and PersistentVolumes (binding and the local-path provisioner).
fn storage(l: &mut Loops, i: &Informers, settings: &Settings) {
    let client = l.client.clone();
    let vol_ctx = Arc::new(volumes::Context {
        client: client.clone(),
        volumes: i.pvs.cache.clone(),
        classes: i.classes.cache.clone(),
        claims: i.claims.cache.clone(),
        storage: settings.storage_dir.clone(),
    });
    let c = Controller::<PersistentVolumeClaim>::new(client.clone())
        .named("claims")
        .primary_shared(&i.claims)
        .watches_shared(&i.pvs, volumes::claim_mapper())
        .workers(1);
    let ctx = vol_ctx.clone();
    l.spawn(|stop| c.run(volumes::reconcile, ctx, stop));
    let c = Controller::<PersistentVolume>::new(client)
        .named("volumes")
        .primary_shared(&i.pvs)
        .watches_shared(&i.claims, volumes::volume_mapper(i.pvs.cache.clone()))
        .workers(1);
    l.spawn(|stop| c.run(volumes::reconcile_volume, vol_ctx, stop));
}

/// Cluster-wide loops: node IPAM, node lifecycle, namespace deletion, GitOps, and the scheduler (under the same
/// lease, on the same pod and node informers).
fn cluster(l: &mut Loops, i: &Informers, settings: &Settings) {
    let client = l.client.clone();
    let mut ipam = node_ipam::Context::new(client.clone(), i.nodes.cache.clone());
    ipam.cluster = settings.cluster_cidr;
    let ipam = ipam.announcing(settings.pod_network_backend, &settings.service_cidr);
    let c = Controller::<Node>::new(client.clone())
        .named("nodeipam")
        .primary_shared(&i.nodes)
        .workers(1);
    l.spawn(|stop| c.run(node_ipam::reconcile, Arc::new(ipam), stop));
    let mut lifecycle = node_lifecycle::Context::new(
        client.clone(),
        i.nodes.cache.clone(),
        i.leases.cache.clone(),
        i.pods.cache.clone(),
        settings.node_monitor_grace,
    );
    lifecycle.terminated_threshold = settings.terminated_pod_threshold;
    l.spawn(|stop| node_lifecycle::run(Arc::new(lifecycle), stop));
    let ns_ctx = Arc::new(namespace::Context::new(client.clone()));
    let c = Controller::<Namespace>::new(client.clone())
        .named("namespace")
        .workers(1);
    l.spawn(|stop| c.run(namespace::reconcile, ns_ctx, stop));
    let sa_ctx = Arc::new(serviceaccounts::Context {
        client: client.clone(),
        ca_pem: settings.ca_pem.clone(),
    });
    let c = Controller::<Namespace>::new(client.clone())
        .named("serviceaccount")
        .workers(1);
    l.spawn(|stop| c.run(serviceaccounts::reconcile, sa_ctx, stop));
    let (c, cache) = (l.clients.gitops.clone(), settings.gitops_cache.clone());
    let plugins = crate::gitops::plugins::Plugins {
        declared: settings
            .render_plugins
            .iter()
            .map(|(name, command)| crate::gitops::plugins::Plugin {
                name: name.clone(),
                command: command.clone(),
            })
            .collect(),
        timeout: settings.render_plugin_timeout,
        memory: settings.render_plugin_memory,
    };
    l.spawn(|stop| crate::gitops::run(c, cache, plugins, stop));
    let (pods, nodes) = (i.pods.shared(), i.nodes.shared());
    let scheduler = l.clients.scheduler.clone();
    l.spawn(|stop| crate::scheduler::run(scheduler, pods, nodes, stop));
}

/// The garbage collector, on the informers of every kind that can be an owner or owned.
fn garbage_collector(l: &mut Loops, i: &Informers) {
    let mut sources: BTreeMap<&'static str, gc::Source> = BTreeMap::new();
    sources.insert("pods", i.pods.shared().into());
    sources.insert("replicasets", i.replicasets.shared().into());
    sources.insert("deployments", i.deployments.shared().into());
    sources.insert("replicationcontrollers", i.rcs.shared().into());
    sources.insert("controllerrevisions", i.revisions.shared().into());
    sources.insert("jobs", i.jobs.shared().into());
    sources.insert("cronjobs", i.cronjobs.shared().into());
    sources.insert("daemonsets", i.daemonsets.shared().into());
    sources.insert("statefulsets", i.statefulsets.shared().into());
    sources.insert("persistentvolumeclaims", i.claims.shared().into());
    sources.insert("services", i.services.shared().into());
    sources.insert("endpointslices", i.slices.shared().into());
    // Kinds no controller here acts on are watched for their metadata only.
    let mut metadata_only = Vec::new();
    for plural in ["configmaps", "secrets"] {
        let kind = crate::api::registry::lookup(plural).expect("a built-in kind");
        let informer = Informer::<crate::api::MetaOnly>::for_kind(&l.client, kind, None, "");
        sources.insert(kind.plural, informer.shared().into());
        metadata_only.push(informer);
    }
    for p in gc::kinds() {
        if !sources.contains_key(p) {
            tracing::error!(
                kind = p,
                "the garbage collector has no informer for this kind"
            );
        }
    }
    let client = l.client.clone();
    l.spawn(|stop| async move {
        let _informers = metadata_only;
        gc::run(client, sources, stop).await
    });
}

/// Starts every loop on shared informers; stops them when `stop` resolves.
async fn loops(
    clients: Clients,
    settings: Settings,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let informers = Informers::start(&clients.controllers);
    let mut l = Loops {
        client: clients.controllers.clone(),
        clients,
        stops: Vec::new(),
        tasks: Vec::new(),
    };
    workloads(&mut l, &informers, &settings);
    services(&mut l, &informers, &settings);
    storage(&mut l, &informers, &settings);
    cluster(&mut l, &informers, &settings);
    garbage_collector(&mut l, &informers);
    stop.await;
    l.stop().await;
}
