//! # Capstan
//!
//! A Kubernetes-compatible cluster in one binary with GitOps built in. This library holds every part; the `capstan`
//! binary (in `cli/`) wires them into processes.
//!
//! ## Layout: a walk through the modules, in the order data moves
//!
//! - [`api`]: the object model. Kubernetes kinds as serde types, their JSON Schemas, the kind registry (one table
//!   that drives discovery, routing, tables and validation, and makes each type a [`api::Resource`]), selectors,
//!   defaulting and validation.
//! - [`gitops`]: Argo CD's role. Follows git repositories (watched, fetched or pushed to by webhook), renders their
//!   manifests (plain, kustomize), validates all of a commit before applying any, diffs, applies with server-side
//!   apply, records history and rolls back by revert commits.
//! - [`apiserver`]: the Kubernetes API over HTTP (axum): discovery, CRUD, watch, patch, server-side apply, tables,
//!   OpenAPI, exec and logs relays. It is the only module that touches the store.
//! - [`store`]: the revisioned key-value store under everything, shaped on etcd (one global revision, compare-and-swap,
//!   watch from a revision, compaction). The embedded backend (a write-ahead log with redb checkpoints) is the
//!   default.
//! - [`client`]: what every other component (and the CLI) talks to the cluster through: `Api<K>` typed requests,
//!   raw JSON for what is generic, a watcher that resumes and relists, and informers that decode once into
//!   `Arc<K>` caches.
//! - [`runtime`]: the controller runtime - work queue with backoff, the `reconcile -> Action` loop fed by informers,
//!   owner mapping, leader election on a Lease.
//! - [`controllers`]: kube-controller-manager's loops, one file each (Deployment, ReplicaSet, Job, CronJob,
//!   DaemonSet, StatefulSet, endpoints, volumes, node IPAM, garbage collection), and what they share
//!   (`controllers::pods`).
//! - [`scheduler`]: binds pending pods to nodes (filters, scores, a book of what each node runs).
//! - [`cloud`]: the cloud controller manager's service controller with the built-in `local` provider.
//! - [`daemons`]: process wiring - which loops run, on which shared informers, under which lease.
//! - [`node`]: the kubelet - the agent, pod workers (start, probe, restart, stop), volumes, logs, exec; container
//!   runtimes (`process`, `containerd`) and pod networks (`host`, `bridge`) behind traits.
//! - [`image`]: OCI images - layouts and Docker archives, references, registry pulls.
//! - [`proxy`]: kube-proxy's role (ClusterIP, NodePort, LoadBalancer listeners) and cluster DNS.
//! - [`sys`]: small helpers any module may use (TLS provider, root check, CIDR parsing).
//! - [`fuzzing`]: the fuzz targets (every parser of outside bytes), shared by `fuzz/` and the corpus replay test.
//!
//! Data moves one way: a write goes to the API server, which validates it and commits it to the store; the store's
//! watch feeds every watcher through the API server. ARCHITECTURE.md (at the repository root) has the import rules
//! and where to add a controller, a kind, a CLI verb or a TUI view.

pub mod api;
pub mod apiserver;
pub mod client;
pub mod cloud;
pub mod controllers;
pub mod daemons;
pub mod fuzzing;
pub mod gitops;
pub mod image;
pub mod node;
pub mod proxy;
pub mod runtime;
pub mod scheduler;
pub mod store;
pub mod sys;

/// The Kubernetes version Capstan's API reports (what kubectl compares its own version with).
pub const KUBE_VERSION: (&str, &str) = ("1", "32");

/// Capstan's own version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
