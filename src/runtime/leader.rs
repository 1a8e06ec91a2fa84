//! Leader election on a coordination.k8s.io/v1 Lease, as Kubernetes' components do it: the holder renews
//! `renewTime` every `renew_every`; anyone may take the lease once `leaseDurationSeconds` have passed since the last
//! renewal. Every write is compare-and-swap on the Lease's resourceVersion, so two candidates never both win.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::api::registry;
use crate::client::Client;

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
        let kind = registry::lookup("leases").expect("leases kind");
        let now = chrono::Utc::now();
        let secs = self.lease_duration.as_secs().max(1) as i64;
        match client.get(kind, Some(&self.namespace), &self.name).await {
            Err(e) if e.code() == Some(404) => {
                let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": secs,
                             "acquireTime": micro_time(now), "renewTime": micro_time(now), "leaseTransitions": 0}});
                client
                    .create(kind, Some(&self.namespace), &lease)
                    .await
                    .is_ok()
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the lease failed");
                false
            }
            Ok(mut lease) => {
                let holder = lease
                    .pointer("/spec/holderIdentity")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let renewed = lease
                    .pointer("/spec/renewTime")
                    .and_then(Value::as_str)
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&chrono::Utc));
                let duration = lease
                    .pointer("/spec/leaseDurationSeconds")
                    .and_then(Value::as_i64)
                    .unwrap_or(secs);
                let expired = renewed.is_none_or(|r| now > r + chrono::Duration::seconds(duration));
                if holder != self.identity && !holder.is_empty() && !expired {
                    return false;
                }
                let spec = &mut lease["spec"];
                if holder != self.identity {
                    spec["acquireTime"] = json!(micro_time(now));
                    let t = spec
                        .get("leaseTransitions")
                        .and_then(Value::as_i64)
                        .unwrap_or(0);
                    spec["leaseTransitions"] = json!(t + 1);
                    spec["holderIdentity"] = json!(self.identity);
                }
                spec["renewTime"] = json!(micro_time(now));
                spec["leaseDurationSeconds"] = json!(secs);
                // The resourceVersion read above makes this a compare-and-swap.
                client
                    .replace(kind, Some(&self.namespace), &self.name, &lease)
                    .await
                    .is_ok()
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
