//! apps/v1 kinds: Deployment, ReplicaSet, StatefulSet, DaemonSet, ControllerRevision - and autoscaling/v1 Scale,
//! the subresource view of their replica counts.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::core::{kind, object, PersistentVolumeClaim, PodTemplateSpec};
use super::meta::{Condition, LabelSelector, ObjectMeta};
use super::{IntOrString, Opaque};

kind!(Deployment { pub spec: Option<DeploymentSpec>, pub status: Option<DeploymentStatus>, });
object!(DeploymentSpec {
    pub replicas: Option<i32>,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    pub strategy: Option<DeploymentStrategy>,
    pub min_ready_seconds: Option<i32>,
    pub revision_history_limit: Option<i32>,
    pub paused: Option<bool>,
    pub progress_deadline_seconds: Option<i32>,
});
object!(DeploymentStrategy {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub rolling_update: Option<RollingUpdate>,
});
object!(RollingUpdate { pub max_surge: Option<IntOrString>, pub max_unavailable: Option<IntOrString>, });
object!(DeploymentStatus {
    pub observed_generation: Option<i64>,
    pub replicas: Option<i32>,
    pub updated_replicas: Option<i32>,
    pub ready_replicas: Option<i32>,
    pub available_replicas: Option<i32>,
    pub unavailable_replicas: Option<i32>,
    pub terminating_replicas: Option<i32>,
    pub conditions: Option<Vec<Condition>>,
    pub collision_count: Option<i32>,
});

kind!(ReplicaSet { pub spec: Option<ReplicaSetSpec>, pub status: Option<ReplicaSetStatus>, });
object!(ReplicaSetSpec {
    pub replicas: Option<i32>,
    pub min_ready_seconds: Option<i32>,
    pub selector: LabelSelector,
    pub template: Option<PodTemplateSpec>,
});
object!(ReplicaSetStatus {
    pub replicas: i32,
    pub fully_labeled_replicas: Option<i32>,
    pub ready_replicas: Option<i32>,
    pub available_replicas: Option<i32>,
    pub terminating_replicas: Option<i32>,
    pub observed_generation: Option<i64>,
    pub conditions: Option<Vec<Condition>>,
});

kind!(StatefulSet { pub spec: Option<StatefulSetSpec>, pub status: Option<StatefulSetStatus>, });
object!(StatefulSetSpec {
    pub replicas: Option<i32>,
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    pub service_name: Option<String>,
    pub pod_management_policy: Option<String>,
    pub update_strategy: Option<StatefulSetUpdateStrategy>,
    pub volume_claim_templates: Option<Vec<PersistentVolumeClaim>>,
    pub revision_history_limit: Option<i32>,
    pub min_ready_seconds: Option<i32>,
    pub persistent_volume_claim_retention_policy:
        Option<StatefulSetPersistentVolumeClaimRetentionPolicy>,
    pub ordinals: Option<StatefulSetOrdinals>,
});
object!(StatefulSetPersistentVolumeClaimRetentionPolicy {
    /// Retain or Delete: what happens to the claims when the StatefulSet is deleted.
    pub when_deleted: Option<String>,
    /// Retain or Delete: what happens to the claims of ordinals scaled away.
    pub when_scaled: Option<String>,
});
object!(StatefulSetOrdinals {
    /// The first ordinal (default 0).
    pub start: Option<i32>,
});
object!(StatefulSetUpdateStrategy {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub rolling_update: Option<StatefulSetRollingUpdate>,
});
object!(StatefulSetRollingUpdate { pub partition: Option<i32>, pub max_unavailable: Option<IntOrString>, });
object!(StatefulSetStatus {
    pub observed_generation: Option<i64>,
    pub replicas: i32,
    pub ready_replicas: Option<i32>,
    pub current_replicas: Option<i32>,
    pub updated_replicas: Option<i32>,
    pub available_replicas: Option<i32>,
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
    pub collision_count: Option<i32>,
    pub conditions: Option<Vec<Condition>>,
});

kind!(DaemonSet { pub spec: Option<DaemonSetSpec>, pub status: Option<DaemonSetStatus>, });
object!(DaemonSetSpec {
    pub selector: LabelSelector,
    pub template: PodTemplateSpec,
    pub update_strategy: Option<DaemonSetUpdateStrategy>,
    pub min_ready_seconds: Option<i32>,
    pub revision_history_limit: Option<i32>,
});
object!(DaemonSetUpdateStrategy {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub rolling_update: Option<RollingUpdate>,
});
object!(DaemonSetStatus {
    pub current_number_scheduled: i32,
    pub desired_number_scheduled: i32,
    pub number_misscheduled: i32,
    pub number_ready: i32,
    pub number_available: Option<i32>,
    pub number_unavailable: Option<i32>,
    pub updated_number_scheduled: Option<i32>,
    pub observed_generation: Option<i64>,
    pub collision_count: Option<i32>,
    pub conditions: Option<Vec<Condition>>,
});

kind!(ControllerRevision { pub data: Option<Opaque>, pub revision: i64, });

kind!(
    /// autoscaling/v1 Scale: the `/scale` subresource of Deployments, ReplicaSets, StatefulSets and
    /// ReplicationControllers.
    Scale { pub spec: Option<ScaleSpec>, pub status: Option<ScaleStatus>, }
);
object!(ScaleSpec { pub replicas: Option<i32>, });
object!(ScaleStatus { pub replicas: i32, pub selector: Option<String>, });

/// Labels of a template, for checks that a selector matches its template.
pub fn template_labels(t: &PodTemplateSpec) -> BTreeMap<String, String> {
    t.metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}
