//! The controller runtime every control loop is built on: informers (list + watch into a shared cache, from
//! [`crate::client`]), a de-duplicating work queue with rate-limited retries, the `reconcile(obj, ctx) -> Action`
//! loop, owner lookups, and leader election with a Lease. The controllers, the cloud controller manager and gitops run
//! on it (the scheduler, node agent and proxy use its informers through the client); it talks to the cluster only
//! through the client, never the store.

pub mod controller;
pub mod leader;
pub mod queue;

pub use controller::{key_of, Action, Controller};
pub use queue::{Backoff, WorkQueue};
