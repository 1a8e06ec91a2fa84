//! A small version of Kubernetes' API Priority and Fairness: each user may have at most [`PER_USER`] requests in
//! flight; one more is answered 429 with `Retry-After: 1`, so one client cannot take every worker from the rest.
//! Long-running requests (watches, exec, followed logs) do not count, and `system:masters` is exempt, as
//! Kubernetes exempts it; so are the control plane's own components (the controller manager, the scheduler and
//! GitOps), which Kubernetes gives priority levels of their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Requests one user may have in flight at once.
pub const PER_USER: usize = 100;

/// Requests in flight per user.
#[derive(Clone, Default)]
pub struct InFlight {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    limit: Option<usize>,
}

/// A request being served; counted until dropped.
pub struct Seat {
    counts: Arc<Mutex<HashMap<String, usize>>>,
    user: String,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

impl InFlight {
    pub fn with_limit(limit: usize) -> Self {
        InFlight {
            counts: Arc::default(),
            limit: Some(limit),
        }
    }

    /// A seat for `user`, or None when the user already has the limit in flight.
    pub fn take(&self, user: &str) -> Option<Seat> {
        let limit = self.limit.unwrap_or(PER_USER);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(user.to_string()).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Seat {
            counts: self.counts.clone(),
            user: user.to_string(),
        })
    }
}

/// Whether a user is not limited: `system:masters`, and the control plane's components.
pub fn exempt(user: &str, groups: &[String]) -> bool {
    use crate::api::tokens::{CONTROLLER_MANAGER_USER, GITOPS_USER, SCHEDULER_USER};
    groups.iter().any(|g| g == "system:masters")
        || [CONTROLLER_MANAGER_USER, SCHEDULER_USER, GITOPS_USER].contains(&user)
}

/// Whether a request is long-running (not counted): a watch, exec, or followed logs.
pub fn long_running(path: &str, query: &str) -> bool {
    let flag = |name: &str| {
        query
            .split('&')
            .any(|kv| kv == format!("{name}=true") || kv == format!("{name}=1"))
    };
    flag("watch") || (path.ends_with("/log") && flag("follow")) || path.ends_with("/exec")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_has_its_own_seats_and_gets_them_back() {
        let f = InFlight::with_limit(2);
        let a1 = f.take("alice").unwrap();
        let _a2 = f.take("alice").unwrap();
        assert!(f.take("alice").is_none(), "alice is at her limit");
        assert!(f.take("bob").is_some(), "bob is not held up by alice");
        drop(a1);
        assert!(
            f.take("alice").is_some(),
            "a finished request frees its seat"
        );
        assert!(long_running(concat!("/", "api/v1/pods"), "watch=true"));
        assert!(long_running(
            concat!("/", "api/v1/namespaces/a/pods/p/log"),
            "follow=true&container=c"
        ));
        assert!(!long_running(
            concat!("/", "api/v1/namespaces/a/pods/p/log"),
            "container=c"
        ));
        assert!(!long_running(concat!("/", "api/v1/pods"), "limit=5"));
    }
}
