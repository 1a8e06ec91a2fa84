//! The `pods/eviction` subresource (what `kubectl drain` posts): a pod delete that respects its
//! PodDisruptionBudget, as kube-apiserver's eviction REST does. The body is a policy/v1 Eviction (JSON or protobuf)
//! whose `deleteOptions` the delete then uses.
//!
//! A healthy (Ready) pod covered by a budget is deleted only while the budget's status allows a disruption; the
//! eviction takes that disruption at once (`disruptionsAllowed - 1`, the pod recorded in `disruptedPods`) with a
//! compare-and-swap write, so two concurrent evictions never spend one disruption. Otherwise the answer is 429
//! TooManyRequests with the budget's numbers, which kubectl retries. Pods that hold nothing (Pending, Succeeded,
//! Failed, already terminating) and unhealthy pods of a budget that is met go without spending a disruption.

use serde_json::{json, Value};

use super::error::{ApiError, Result};
use super::handlers::{Query, Target, WriteOpts};
use super::Server;
use crate::api::meta::{format_time, now, LabelSelector};
use crate::api::registry;
use crate::api::selector::Selector;

/// How many times a budget write that lost a race is retried before the client is told to retry.
const ATTEMPTS: usize = 5;

fn conditions_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// Whether a budget's selector covers the pod (in policy/v1 an empty selector covers every pod of the namespace,
/// a missing one none).
fn covers(pdb: &Value, labels: &std::collections::BTreeMap<String, String>) -> bool {
    let Some(sel) = pdb.pointer("/spec/selector").filter(|s| !s.is_null()) else {
        return false;
    };
    serde_json::from_value::<LabelSelector>(sel.clone())
        .ok()
        .and_then(|ls| Selector::from_label_selector(&ls).ok())
        .is_some_and(|s| s.matches(labels))
}

fn too_many(pdb: &str, message: String) -> ApiError {
    let mut e = ApiError::new(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
    );
    e.details = Some(
        json!({"causes": [{"reason": "DisruptionBudget", "message": message}],
        "name": pdb, "group": "policy", "kind": "poddisruptionbudgets"}),
    );
    e
}

impl Server {
    /// Evicts the pod `t` names; `eviction` is the posted Eviction.
    pub async fn evict(&self, t: &Target, eviction: Value, q: &Query) -> Result<Value> {
        let ns = t.namespace.as_deref().unwrap_or("default");
        let name = t.name.as_deref().unwrap_or("");
        let options = eviction
            .get("deleteOptions")
            .filter(|o| !o.is_null())
            .cloned()
            .unwrap_or(json!({}));
        for _ in 0..ATTEMPTS {
            let (pod, _) = self.get_object(t.kind, Some(ns), name).await?;
            if self.spend_disruption(ns, name, &pod).await? {
                let body = serde_json::to_vec(&options).unwrap_or_default();
                self.delete(t, &body, q).await?;
                return Ok(
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
                );
            }
        }
        Err(ApiError::new(
            429,
            "TooManyRequests",
            "the disruption budget changed while evicting; try again",
        ))
    }

    /// Checks the pod's budget and, where the eviction needs it, takes one disruption from it. Ok(false) when the
    /// budget changed under us (a lost compare-and-swap: read again).
    async fn spend_disruption(&self, ns: &str, name: &str, pod: &Value) -> Result<bool> {
        let phase = pod["status"]["phase"].as_str().unwrap_or("");
        if !pod["metadata"]["deletionTimestamp"].is_null()
            || matches!(phase, "Pending" | "Succeeded" | "Failed")
        {
            return Ok(true);
        }
        let pdb_kind = registry::by_kind("policy/v1", "PodDisruptionBudget")
            .ok_or_else(|| ApiError::internal("PodDisruptionBudget is not served"))?;
        let labels = crate::api::selector::labels_of(pod);
        let (pdbs, _, _, _) = self
            .list_objects(pdb_kind, Some(ns), &Query::default())
            .await?;
        let mut covering = pdbs.into_iter().filter(|p| covers(p, &labels));
        let Some(pdb) = covering.next() else {
            return Ok(true);
        };
        if covering.next().is_some() {
            return Err(ApiError::internal(
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or("").to_string();
        let status = &pdb["status"];
        let num = |f: &str| status[f].as_i64().unwrap_or(0);
        let (healthy, desired) = (num("currentHealthy"), num("desiredHealthy"));
        if !conditions_ready(pod) {
            // An unhealthy pod does not count toward the budget: it may go while the budget is met (or always,
            // when the budget says so).
            let always = pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow";
            if always || healthy >= desired {
                return Ok(true);
            }
            return Err(too_many(
                &pdb_name,
                format!("The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently"),
            ));
        }
        let generation = pdb["metadata"]["generation"].as_i64().unwrap_or(0);
        if num("observedGeneration") < generation {
            return Err(too_many(
                &pdb_name,
                format!("the disruption budget {pdb_name} is still being processed by the server"),
            ));
        }
        if num("disruptionsAllowed") <= 0 {
            return Err(too_many(
                &pdb_name,
                format!("The disruption budget {pdb_name} needs {desired} healthy pods and has {healthy} currently"),
            ));
        }
        // Take the disruption with a compare-and-swap write of the budget's status.
        let (current, rev) = self.get_object(pdb_kind, Some(ns), &pdb_name).await?;
        if current["metadata"]["resourceVersion"] != pdb["metadata"]["resourceVersion"] {
            return Ok(false);
        }
        let mut next = current.clone();
        next["status"]["disruptionsAllowed"] = json!(num("disruptionsAllowed") - 1);
        next["status"]["disruptedPods"][name] = json!(format_time(&now()));
        let opts = WriteOpts {
            dry_run: false,
            validation: "Ignore".into(),
            manager: "eviction".into(),
            subresource: "status".into(),
        };
        let mut warnings = Vec::new();
        match self
            .write(
                pdb_kind,
                Some(ns),
                next,
                Some((&current, rev)),
                &opts,
                &mut warnings,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
