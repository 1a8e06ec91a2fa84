//! Process wiring (k3s keeps the same in `pkg/daemons`): which components a process starts, on which shared
//! informers, under which lease, and how they stop. Components themselves (controllers, scheduler, gitops, cloud)
//! never start each other; they are started from here.
//!
//! Today [`controller_manager`] holds the control loops that run under the `capstan-controller-manager` Lease: the
//! controllers, the cloud controller manager's service controller, GitOps and the scheduler. The API server, the
//! node agent and the proxy are still started by the `capstan` binary (`cli/commands.rs`); moving them here is the
//! next step of the same seam.

pub mod bootstrap;
pub mod controller_manager;
