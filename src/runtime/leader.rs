//! Leader election on a coordination.k8s.io/v1 Lease, as Kubernetes' components do it: the holder renews
//! `renewTime` every `renew_every`; anyone may take the lease once it has seen no renewal for
//! `leaseDurationSeconds` (by its own monotonic clock - wall clocks are not compared). Every write is compare-and-swap on the Lease's resourceVersion, so two candidates never both win.

use std::time::Duration;

use tokio::sync::watch;

use crate::api::meta::ObjectMeta;
use crate::api::other::{Lease, LeaseSpec};
use crate::client::{Api, Client};

/// Settings of one candidate.
#[derive(Clone, Debug)]
pub struct Elector {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub lease_duration: Duration,
    /// How long a leader keeps leading while its renewals fail (shorter than the lease).
    pub renew_deadline: Duration,
    /// How often candidates try to acquire, and leaders renew.
    pub renew_every: Duration,
}

/// The timing of an election (Kubernetes' flags `--leader-elect-lease-duration`, `--leader-elect-renew-deadline`,
/// `--leader-elect-retry-period`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timing {
    /// Kubernetes' defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timing {
    /// Checks the relations Kubernetes requires: lease > renew deadline > retry period > 0.
    pub fn check(&self) -> Result<(), String> {
        if self.retry_period.is_zero() {
            return Err("the retry period must be positive".into());
        }
        if self.renew_deadline <= self.retry_period {
            return Err(format!(
                "the renew deadline ({:?}) must be longer than the retry period ({:?})",
                self.renew_deadline, self.retry_period
            ));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "the lease duration ({:?}) must be longer than the renew deadline ({:?})",
                self.lease_duration, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// A candidate's memory of the lease: the record it last read, and when that record last changed.
#[derive(Clone, Debug)]
pub struct Seen {
    record: String,
    changed_at: tokio::time::Instant,
}

/// How one round of the election went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round {
    /// This candidate holds the lease, acquired or renewed just now.
    Leads,
    /// Another candidate holds the lease, and it has not expired.
    Follows(String),
    /// The lease could not be read or written (the API server unreachable, or another candidate's write won).
    Failed,
}

fn micro_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Elector {
    /// Kubernetes' defaults: a 15 s lease renewed every 2 s, given up 10 s after the last renewal.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self::with_timing(namespace, name, identity, Timing::default())
    }

    pub fn with_timing(namespace: &str, name: &str, identity: &str, t: Timing) -> Self {
        Elector {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: t.lease_duration,
            renew_deadline: t.renew_deadline,
            renew_every: t.retry_period,
        }
    }

    /// One round: acquire or renew. `seen` is this candidate's memory of the lease between rounds: the record it
    /// last read and when (on this process's monotonic clock) it last changed. Expiry is judged from that, as
    /// Kubernetes' client-go judges it, never by comparing the holder's `renewTime` with this machine's wall clock -
    /// wall clocks differ between machines and jump, and a jump must not hand the lease to a second leader.
    pub async fn round(&self, client: &Client, seen: &mut Option<Seen>) -> Round {
        let leases = Api::<Lease>::namespaced(client, &self.namespace);
        let now = crate::sys::clock::utc_now();
        let secs = self.lease_duration.as_secs().clamp(1, i32::MAX as u64) as i32;
        match leases.get_opt(&self.name).await {
            Ok(None) => {
                let lease = Lease {
                    api_version: "coordination.k8s.io/v1".into(),
                    kind: "Lease".into(),
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        namespace: Some(self.namespace.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(micro_time(now)),
                        renew_time: Some(micro_time(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                match leases.create(&lease).await {
                    Ok(_) => Round::Leads,
                    Err(_) => Round::Failed,
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the lease failed");
                Round::Failed
            }
            Ok(Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                let holder = spec.holder_identity.clone().unwrap_or_default();
                // Every renewal is a write, so the resourceVersion changes with each one (even if the holder's
                // wall clock stood still).
                let record = format!(
                    "{holder}|{}",
                    lease.metadata.resource_version.as_deref().unwrap_or("")
                );
                let observed_now = tokio::time::Instant::now();
                let changed_at = match seen {
                    Some(s) if s.record == record => s.changed_at,
                    _ => observed_now,
                };
                *seen = Some(Seen { record, changed_at });
                let duration = spec
                    .lease_duration_seconds
                    .map(|d| Duration::from_secs(d.max(0) as u64))
                    .unwrap_or(self.lease_duration);
                let expired = observed_now.duration_since(changed_at) >= duration;
                if holder != self.identity && !holder.is_empty() && !expired {
                    return Round::Follows(holder);
                }
                if holder != self.identity {
                    spec.acquire_time = Some(micro_time(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    spec.holder_identity = Some(self.identity.clone());
                }
                spec.renew_time = Some(micro_time(now));
                spec.lease_duration_seconds = Some(secs);
                // The resourceVersion read above makes this a compare-and-swap.
                match leases.replace(&self.name, &lease).await {
                    Ok(_) => Round::Leads,
                    Err(_) => Round::Failed,
                }
            }
        }
    }

    /// Campaigns forever, publishing whether this candidate leads. A leader whose renewals fail keeps leading until
    /// `renew_deadline` has passed since its last successful renewal, then steps down (false); a leader that finds
    /// another holder in the lease steps down at once.
    pub async fn run(self, client: Client, leading: watch::Sender<bool>) {
        let mut renewed: Option<tokio::time::Instant> = None;
        let mut seen = None;
        loop {
            let round = self.round(&client, &mut seen).await;
            let now = tokio::time::Instant::now();
            match round {
                Round::Leads => renewed = Some(now),
                Round::Follows(holder) => {
                    if renewed.take().is_some() {
                        tracing::warn!(identity = %self.identity, %holder, "another candidate holds the lease");
                    }
                }
                Round::Failed => {}
            }
            let leads = renewed.is_some_and(|r| now.duration_since(r) < self.renew_deadline);
            if !leads {
                renewed = None;
            }
            leading.send_if_modified(|l| std::mem::replace(l, leads) != leads);
            tokio::time::sleep(self.renew_every).await;
        }
    }
}
