//! The controllers (kube-controller-manager's role): one file per controller, each a `reconcile` on the controller
//! runtime with its tests beside it, plus what several share ([`pods`]: readiness, expectations, pods from
//! templates; events go through `client::events::Recorder`). They talk to the cluster only through the client. Which controllers run, on which informers and under
//! which lease is decided in one place: [`crate::daemons::controller_manager`].

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod gc;
pub mod job;
pub mod namespace;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod pods;
pub mod replicaset;
pub mod revisions;
pub mod serviceaccounts;
pub mod statefulset;
pub mod volumes;

/// What a reconcile can fail with (one type for every controller here; the runtime retries with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object has no `spec` (validation makes that rare: an object written before a field became required).
    #[error("{0} has no spec")]
    NoSpec(&'static str),
    #[error("invalid selector: {0}")]
    Selector(#[from] crate::api::selector::Error),
    #[error(transparent)]
    Client(#[from] crate::client::Error),
    #[error("provisioning {0}: {1}")]
    Provision(std::path::PathBuf, std::io::Error),
    #[error("the cluster CIDR {0} has no free /24 left")]
    Exhausted(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Cluster-wide settings the controllers need.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The cluster CIDR (network address, prefix length from 8 to 24) that node IPAM splits into one /24 per node.
    pub cluster_cidr: (std::net::Ipv4Addr, u8),
    /// Where GitOps keeps mirrors of remote repositories.
    pub gitops_cache: std::path::PathBuf,
    /// The Job controller's first delay before replacing a failed pod (Kubernetes: 10 s, doubling).
    pub job_backoff: std::time::Duration,
    /// Where the `local-path` StorageClass provisions volumes.
    pub storage_dir: std::path::PathBuf,
    /// The `local` cloud provider's pool of load balancer addresses.
    pub load_balancer_pool: String,
    /// How long a node may go without a heartbeat before it is Unknown and tainted (Kubernetes: 40 s).
    pub node_monitor_grace: std::time::Duration,
    /// Terminated pods kept before the oldest are deleted (Kubernetes: 12,500).
    pub terminated_pod_threshold: usize,
    /// The cluster CA (PEM), published in every namespace as the ConfigMap `kube-root-ca.crt`.
    pub ca_pem: String,
    /// How pod traffic crosses machines, announced to agents on their Nodes.
    pub pod_network_backend: crate::api::network::Backend,
    /// The Service CIDR, announced to agents (pod traffic to it is not masqueraded).
    pub service_cidr: String,
    /// How the control plane's servers elect the one that runs the controllers.
    pub leader_election: crate::runtime::leader::Timing,
    /// GitOps render plugins the operator declared: (name, shell command).
    pub render_plugins: Vec<(String, String)>,
    /// How long a render plugin may run.
    pub render_plugin_timeout: std::time::Duration,
    /// A render plugin's memory (address space) limit in bytes.
    pub render_plugin_memory: u64,
}

/// The default pool of LoadBalancer addresses (loopback: served by the node proxies without privileges).
pub const DEFAULT_LOAD_BALANCER_POOL: &str = "127.97.0.0/24";

impl Default for Settings {
    fn default() -> Self {
        Settings {
            cluster_cidr: (std::net::Ipv4Addr::new(10, 244, 0, 0), 16),
            gitops_cache: std::env::temp_dir().join("capstan-gitops"),
            job_backoff: std::time::Duration::from_secs(10),
            storage_dir: std::env::temp_dir().join("capstan-storage"),
            load_balancer_pool: DEFAULT_LOAD_BALANCER_POOL.into(),
            node_monitor_grace: std::time::Duration::from_secs(40),
            terminated_pod_threshold: 12_500,
            ca_pem: String::new(),
            pod_network_backend: crate::api::network::Backend::default(),
            service_cidr: String::new(),
            leader_election: crate::runtime::leader::Timing::default(),
            render_plugins: Vec::new(),
            render_plugin_timeout: std::time::Duration::from_secs(60),
            render_plugin_memory: 1 << 30,
        }
    }
}

impl Settings {
    /// Parses a cluster CIDR: an IPv4 range from /8 to /24 (one /24 per node: a /16 holds 256 nodes, a /12 4,096).
    pub fn with_cluster_cidr(cidr: &str) -> Result<Self, crate::sys::BadCidr> {
        let cluster_cidr = crate::sys::parse_cidr_in(cidr, 8, 24)?;
        Ok(Settings {
            cluster_cidr,
            ..Settings::default()
        })
    }
}
