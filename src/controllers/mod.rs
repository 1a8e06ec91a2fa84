//! The controller manager (kube-controller-manager's role): one file per controller, each a `reconcile` on the
//! controller runtime, all run by [`run`] while this process holds the `capstan-controller-manager` Lease. They talk
//! to the cluster only through the client.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod gc;
pub mod job;
pub mod node_ipam;
pub mod replicaset;
pub mod revisions;
pub mod statefulset;
pub mod volumes;

use std::collections::HashMap;
use std::sync::Arc;

use crate::api::registry;
use crate::client::informer::Informer;
use crate::client::Client;
use crate::runtime::leader::Elector;
use crate::runtime::Controller;

/// Cluster-wide settings the controllers need.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The cluster CIDR (a /16) that node IPAM splits into one /24 per node.
    pub cluster_cidr: std::net::Ipv4Addr,
    /// Where GitOps keeps mirrors of remote repositories.
    pub gitops_cache: std::path::PathBuf,
    /// The Job controller's first delay before replacing a failed pod (Kubernetes: 10 s, doubling).
    pub job_backoff: std::time::Duration,
    /// Where the `local-path` StorageClass provisions volumes.
    pub storage_dir: std::path::PathBuf,
    /// The `local` cloud provider's pool of load balancer addresses.
    pub load_balancer_pool: String,
}

/// The default pool of LoadBalancer addresses (loopback: served by the node proxies without privileges).
pub const DEFAULT_LOAD_BALANCER_POOL: &str = "127.97.0.0/24";

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster_cidr: std::net::Ipv4Addr::new(10, 244, 0, 0),
            gitops_cache: std::env::temp_dir().join("capstan-gitops"),
            job_backoff: std::time::Duration::from_secs(10),
            storage_dir: std::env::temp_dir().join("capstan-storage"),
            load_balancer_pool: DEFAULT_LOAD_BALANCER_POOL.into(),
        }
    }
}

impl Settings {
    /// Parses a cluster CIDR, which must be an IPv4 /16.
    pub fn with_cluster_cidr(cidr: &str) -> Result<Self, String> {
        let (net, len) = crate::node::network::parse_cidr(cidr).map_err(|e| e.to_string())?;
        if len != 16 {
            return Err(format!(
                "cluster CIDR {cidr}: must be a /16 (one /24 per node)"
            ));
        }
        Ok(Settings {
            cluster_cidr: net,
            ..Settings::default()
        })
    }
}

/// Runs the controllers while this process is the elected leader, until `shutdown` resolves.
pub async fn run(
    client: Client,
    identity: String,
    settings: Settings,
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
            let running = tokio::spawn(controllers(client.clone(), settings.clone(), async {
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

async fn controllers(
    client: Client,
    settings: Settings,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) {
    // One informer per kind, shared by every controller that reads it.
    let mut plurals = gc::kinds();
    plurals.extend([
        "nodes",
        "services",
        "endpoints",
        "persistentvolumes",
        "storageclasses",
    ]);
    let informers: HashMap<&'static str, Informer> = plurals
        .into_iter()
        .map(|p| {
            (
                p,
                Informer::start(client.clone(), kind(p), None, String::new()),
            )
        })
        .collect();
    let pods = &informers["pods"];
    let replicasets = &informers["replicasets"];
    let deployments = &informers["deployments"];
    let rcs = &informers["replicationcontrollers"];
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
        Controller::new(client.clone(), kind("deployments"))
            .primary_shared(deployments)
            .owns_shared(replicasets)
            .workers(2)
            .run(deployment::reconcile, dep_ctx, stopper()),
    ));
    let rs_ctx = Arc::new(replicaset::Context {
        client: client.clone(),
        pods: pods.cache.clone(),
        expectations: replicaset::Expectations::default(),
    });
    tasks.push(tokio::spawn(
        Controller::new(client.clone(), kind("replicationcontrollers"))
            .primary_shared(rcs)
            .owns_shared(pods)
            .watches_shared(pods, replicaset::orphan_mapper(rcs.cache.clone()))
            .workers(2)
            .run(replicaset::reconcile_rc, rs_ctx.clone(), stopper()),
    ));
    tasks.push(tokio::spawn(
        Controller::new(client.clone(), kind("replicasets"))
            .primary_shared(replicasets)
            .owns_shared(pods)
            .watches_shared(pods, replicaset::orphan_mapper(replicasets.cache.clone()))
            .workers(4)
            .run(replicaset::reconcile, rs_ctx, stopper()),
    ));
    let job_ctx = Arc::new(job::Context {
        client: client.clone(),
        pods: pods.cache.clone(),
        expectations: replicaset::Expectations::default(),
        backoff: settings.job_backoff,
    });
    tasks.push(tokio::spawn(
        Controller::new(client.clone(), kind("jobs"))
            .primary_shared(&informers["jobs"])
            .owns_shared(pods)
            .workers(2)
            .run(job::reconcile, job_ctx, stopper()),
    ));
    let ds_ctx = Arc::new(daemonset::Context {
        client: client.clone(),
        pods: pods.cache.clone(),
        nodes: informers["nodes"].cache.clone(),
        revisions: informers["controllerrevisions"].cache.clone(),
        expectations: replicaset::Expectations::default(),
    });
    tasks.push(tokio::spawn(
        Controller::new(client.clone(), kind("daemonsets"))
            .primary_shared(&informers["daemonsets"])
            .owns_shared(pods)
            .watches_shared(
                &informers["nodes"],
                daemonset::node_mapper(informers["daemonsets"].cache.clone()),
            )
            .workers(2)
            .run(daemonset::reconcile, ds_ctx, stopper()),
    ));
    let sts_ctx = Arc::new(statefulset::Context {
        client: client.clone(),
        pods: pods.cache.clone(),
        claims: informers["persistentvolumeclaims"].cache.clone(),
        revisions: informers["controllerrevisions"].cache.clone(),
    });
    tasks.push(tokio::spawn(
        Controller::new(client.clone(), kind("statefulsets"))
            .primary_shared(&informers["statefulsets"])
            .owns_shared(pods)
            .workers(2)
            .run(statefulset::reconcile, sts_ctx, stopper()),
    ));
    let ep_ctx = Arc::new(endpoints::Context {
        client: client.clone(),
        pods: pods.cache.clone(),
        endpoints: informers["endpoints"].cache.clone(),
        slices: informers["endpointslices"].cache.clone(),
    });
    tasks.push(tokio::spawn(
        Controller::new(client.clone(), kind("services"))
            .primary_shared(&informers["services"])
            .watches_shared(
                pods,
                endpoints::pod_mapper(informers["services"].cache.clone()),
            )
            .watches_shared(&informers["endpoints"], endpoints::owner_mapper())
            .watches_shared(&informers["endpointslices"], endpoints::owner_mapper())
            .workers(2)
            .run(endpoints::reconcile, ep_ctx, stopper()),
    ));
    let vol_ctx = Arc::new(volumes::Context {
        client: client.clone(),
        volumes: informers["persistentvolumes"].cache.clone(),
        classes: informers["storageclasses"].cache.clone(),
        claims: informers["persistentvolumeclaims"].cache.clone(),
        storage: settings.storage_dir.clone(),
    });
    tasks.push(tokio::spawn(
        Controller::new(client.clone(), kind("persistentvolumeclaims"))
            .primary_shared(&informers["persistentvolumeclaims"])
            .watches_shared(&informers["persistentvolumes"], volumes::claim_mapper())
            .workers(1)
            .run(volumes::reconcile, vol_ctx.clone(), stopper()),
    ));
    tasks.push(tokio::spawn(
        Controller::new(client.clone(), kind("persistentvolumes"))
            .primary_shared(&informers["persistentvolumes"])
            .watches_shared(
                &informers["persistentvolumeclaims"],
                volumes::volume_mapper(informers["persistentvolumes"].cache.clone()),
            )
            .workers(1)
            .run(volumes::reconcile_volume, vol_ctx, stopper()),
    ));
    // The cloud controller manager's service controller, with the built-in `local` provider.
    match crate::cloud::LocalPool::new(&settings.load_balancer_pool) {
        Ok(pool) => {
            let lb_ctx = Arc::new(crate::cloud::Context {
                client: client.clone(),
                services: informers["services"].cache.clone(),
                provider: Arc::new(pool),
            });
            tasks.push(tokio::spawn(
                Controller::new(client.clone(), kind("services"))
                    .primary_shared(&informers["services"])
                    .workers(1)
                    .run(crate::cloud::reconcile, lb_ctx, stopper()),
            ));
        }
        Err(e) => tracing::error!("no load balancers: {e}"),
    }
    let cron_ctx = Arc::new(cronjob::Context {
        client: client.clone(),
        jobs: informers["jobs"].cache.clone(),
    });
    tasks.push(tokio::spawn(
        Controller::new(client.clone(), kind("cronjobs"))
            .primary_shared(&informers["cronjobs"])
            .owns_shared(&informers["jobs"])
            .workers(1)
            .run(cronjob::reconcile, cron_ctx, stopper()),
    ));
    let mut ipam = node_ipam::Context::new(client.clone(), informers["nodes"].cache.clone());
    ipam.cluster = settings.cluster_cidr;
    let ipam_ctx = Arc::new(ipam);
    tasks.push(tokio::spawn(
        Controller::new(client.clone(), kind("nodes"))
            .primary_shared(&informers["nodes"])
            .workers(1)
            .run(node_ipam::reconcile, ipam_ctx, stopper()),
    ));
    // GitOps: Applications follow their repositories.
    tasks.push(tokio::spawn(crate::gitops::run(
        client.clone(),
        settings.gitops_cache.clone(),
        stopper(),
    )));
    // The scheduler runs under the same lease for now.
    tasks.push(tokio::spawn(crate::scheduler::run(
        client.clone(),
        pods.shared(),
        informers["nodes"].shared(),
        stopper(),
    )));
    let gc_informers = gc::kinds()
        .into_iter()
        .map(|p| (p, informers[p].shared()))
        .collect();
    tasks.push(tokio::spawn(gc::run(
        client.clone(),
        gc_informers,
        stopper(),
    )));

    stop.await;
    for s in stops {
        let _ = s.send(());
    }
    for t in tasks {
        let _ = t.await;
    }
    drop(informers);
}

/// Deletes the named objects (background propagation); ones already gone are not an error. Returns the names it
/// deleted.
pub(crate) async fn delete_all(
    client: &Client,
    kind: &crate::api::registry::KindInfo,
    ns: &str,
    names: &[String],
) -> Result<Vec<String>, crate::client::Error> {
    let mut done = Vec::new();
    for n in names {
        match client.delete(kind, Some(ns), n, "Background").await {
            Ok(_) => done.push(n.clone()),
            Err(e) if e.code() == Some(404) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn kind(plural: &str) -> &'static crate::api::registry::KindInfo {
    registry::KINDS
        .iter()
        .find(|k| k.plural == plural)
        .expect("registered kind")
}
