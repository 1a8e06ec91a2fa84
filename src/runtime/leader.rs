//! Leader election on a coordination.k8s.io/v1 Lease, as Kubernetes' components do it: the holder renews
//! `renewTime` every `renew_every`; anyone may take the lease once `leaseDurationSeconds` have passed since the last
//! renewal. Every write is compare-and-swap on the Lease's resourceVersion, so two candidates never both win.

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
    pub renew_every: Duration,
}

fn micro_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Elector {
    /// Kubernetes' defaults: a 15 s lease renewed every 2 s.
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Elector {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
        }
    }

    /// One round: acquire or renew. Returns whether this candidate leads now.
    pub async fn try_acquire(&self, client: &Client) -> bool {
        let leases = Api::<Lease>::namespaced(client, &self.namespace);
        let now = chrono::Utc::now();
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
                leases.create(&lease).await.is_ok()
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the lease failed");
                false
            }
            Ok(Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                let holder = spec.holder_identity.clone().unwrap_or_default();
                let renewed = spec
                    .renew_time
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc));
                let duration = spec.lease_duration_seconds.unwrap_or(secs);
                let expired =
                    renewed.is_none_or(|r| now > r + chrono::Duration::seconds(duration.into()));
                if holder != self.identity && !holder.is_empty() && !expired {
                    return false;
                }
                if holder != self.identity {
                    spec.acquire_time = Some(micro_time(now));
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                    spec.holder_identity = Some(self.identity.clone());
                }
                spec.renew_time = Some(micro_time(now));
                spec.lease_duration_seconds = Some(secs);
                // The resourceVersion read above makes this a compare-and-swap.
                leases.replace(&self.name, &lease).await.is_ok()
            }
        }
    }

    /// Campaigns forever, publishing whether this candidate leads. Leadership is dropped (false) as soon as a
    /// renewal fails.
    pub async fn run(self, client: Client, leading: watch::Sender<bool>) {
        loop {
            let now = self.try_acquire(&client).await;
            leading.send_if_modified(|l| std::mem::replace(l, now) != now);
            tokio::time::sleep(self.renew_every).await;
        }
    }
}
