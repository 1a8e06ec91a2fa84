//! The smaller groups: coordination.k8s.io/v1 Lease, discovery.k8s.io/v1 EndpointSlice, storage.k8s.io/v1
//! StorageClass, policy/v1 PodDisruptionBudget (and the Eviction a drain posts to `pods/eviction`),
//! certificates.k8s.io/v1 CertificateSigningRequest, apiregistration.k8s.io/v1 APIService.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::core::{kind, object, ObjectReference};
use super::meta::ObjectMeta;
use super::Opaque;

kind!(Lease { pub spec: Option<LeaseSpec>, });

kind!(CertificateSigningRequest {
    pub spec: CertificateSigningRequestSpec,
    pub status: Option<CertificateSigningRequestStatus>,
});
object!(CertificateSigningRequestSpec {
    /// The PEM-encoded PKCS#10 request, base64-encoded in JSON.
    pub request: String,
    pub signer_name: String,
    pub expiration_seconds: Option<i32>,
    pub usages: Option<Vec<String>>,
    /// Who asked (set by the API server from the requester's identity).
    pub username: Option<String>,
    pub uid: Option<String>,
    pub groups: Option<Vec<String>>,
    pub extra: Option<Opaque>,
});
object!(CertificateSigningRequestStatus {
    pub conditions: Option<Vec<CertificateSigningRequestCondition>>,
    /// The issued PEM certificate, base64-encoded in JSON.
    pub certificate: Option<String>,
});
object!(CertificateSigningRequestCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_update_time: Option<String>,
    pub last_transition_time: Option<String>,
});

kind!(PodDisruptionBudget {
    pub spec: Option<PodDisruptionBudgetSpec>,
    pub status: Option<PodDisruptionBudgetStatus>,
});
object!(PodDisruptionBudgetSpec {
    pub min_available: Option<super::IntOrString>,
    pub max_unavailable: Option<super::IntOrString>,
    pub selector: Option<super::meta::LabelSelector>,
    pub unhealthy_pod_eviction_policy: Option<String>,
});
object!(PodDisruptionBudgetStatus {
    pub observed_generation: Option<i64>,
    /// Pods an eviction was granted for, not yet seen deleted (name -> when), so two evictions never use one
    /// disruption.
    pub disrupted_pods: Option<BTreeMap<String, super::meta::Time>>,
    pub disruptions_allowed: i32,
    pub current_healthy: i32,
    pub desired_healthy: i32,
    pub expected_pods: i32,
    pub conditions: Option<Vec<super::meta::Condition>>,
});
object!(LeaseSpec {
    pub holder_identity: Option<String>,
    pub lease_duration_seconds: Option<i32>,
    pub acquire_time: Option<String>,
    pub renew_time: Option<String>,
    pub lease_transitions: Option<i32>,
    pub strategy: Option<String>,
    pub preferred_holder: Option<String>,
});

kind!(EndpointSlice {
    pub address_type: String,
    pub endpoints: Vec<Endpoint>,
    pub ports: Option<Vec<EndpointSlicePort>>,
});
object!(Endpoint {
    pub addresses: Vec<String>,
    pub conditions: Option<EndpointConditions>,
    pub hostname: Option<String>,
    pub node_name: Option<String>,
    pub target_ref: Option<ObjectReference>,
    pub zone: Option<String>,
    pub hints: Option<Opaque>,
});
object!(EndpointConditions { pub ready: Option<bool>, pub serving: Option<bool>, pub terminating: Option<bool>, });
object!(EndpointSlicePort {
    pub name: Option<String>,
    pub port: Option<i32>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
});

kind!(StorageClass {
    pub provisioner: String,
    pub parameters: Option<BTreeMap<String, String>>,
    pub reclaim_policy: Option<String>,
    pub mount_options: Option<Vec<String>>,
    pub allow_volume_expansion: Option<bool>,
    pub volume_binding_mode: Option<String>,
    pub allowed_topologies: Option<Vec<Opaque>>,
});

kind!(APIService {
    pub spec: Option<APIServiceSpec>,
    pub status: Option<APIServiceStatus>,
});
object!(APIServiceSpec {
    pub group: Option<String>,
    pub version: Option<String>,
    /// Where an aggregated API server runs (None: served by this API server itself, "Local").
    pub service: Option<Opaque>,
    pub group_priority_minimum: i32,
    pub version_priority: i32,
    pub insecure_skip_tls_verify: Option<bool>,
    #[serde(rename = "caBundle")]
    pub ca_bundle: Option<String>,
});
object!(APIServiceStatus { pub conditions: Option<Vec<Opaque>>, });
