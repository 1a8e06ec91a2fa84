//! Process wiring (k3s keeps the same in `pkg/daemons`): which components a process starts, on which shared
//! informers, under which lease, and how they stop. Components themselves (controllers, scheduler, gitops, cloud)
//! never start each other; they are started from here.
//!
//! - [`controller_manager`]: the control loops under the `capstan-controller-manager` Lease (controllers, the cloud
//!   controller manager's service controller, GitOps, the scheduler, garbage collection) on shared typed informers.
//! - [`agent`]: a node - the node agent, the service proxy and cluster DNS.
//! - [`server`]: the control plane - store, credentials, API server, and the controller manager on threads of its
//!   own (with a node beside it for `capstan up`).
//! - [`bootstrap`]: the objects a new cluster starts with.
//! - [`storage`]: snapshots of the store and migration between backends (`capstan store`).
//! - [`loopback`]: how the control plane's own components reach the API server they run in (in process).
//!
//! The `capstan` binary only parses flags and calls these.

pub mod agent;
pub mod bootstrap;
pub mod controller_manager;
pub mod identity;
pub mod loopback;
pub mod server;
pub mod storage;
