//! # Capstan
//!
//! A Kubernetes-compatible cluster in one binary with GitOps built in. This library holds every part; the `capstan`
//! binary (in `cli/`) wires them into processes.
//!
//! ## Layout: a walk through the modules
//!
//! - [`api`]: the object model. Kubernetes kinds as serde types, their JSON Schemas, the kind registry (one table
//!   that drives discovery, routing, tables and validation), selectors, defaulting and validation.
//! - [`store`]: the revisioned key-value store under everything, shaped on etcd (one global revision, compare-and-swap,
//!   watch from a revision, compaction). The embedded backend (a write-ahead log with redb checkpoints) is the
//!   default.
//! - [`apiserver`]: the Kubernetes API over HTTP (axum): discovery, CRUD, watch, patch, server-side apply, tables,
//!   OpenAPI. It is the only module that touches the store.
//! - [`client`]: the HTTP client every other component (and the CLI) uses: typed requests, a watcher that resumes
//!   and relists, and an informer cache.
//! - [`runtime`]: the controller runtime - work queue with backoff, the `reconcile -> Action` loop fed by informers,
//!   owner mapping, leader election on a Lease.
//!
//! Data moves one way: a write goes to the API server, which validates it and commits it to the store; the store's
//! watch feeds every watcher through the API server.

pub mod api;
pub mod apiserver;
pub mod client;
pub mod cloud;
pub mod controllers;
pub mod daemons;
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
