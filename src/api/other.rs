//! The smaller groups: coordination.k8s.io/v1 Lease, discovery.k8s.io/v1 EndpointSlice, storage.k8s.io/v1
//! StorageClass.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::core::{kind, object, ObjectReference};
use super::meta::ObjectMeta;
use super::Opaque;

kind!(Lease { pub spec: Option<LeaseSpec>, });
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
