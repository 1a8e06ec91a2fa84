//! core/v1 kinds: Namespace, Pod, Node, Service, Endpoints, ConfigMap, Secret, Event, PersistentVolume(Claim),
//! ReplicationController, ServiceAccount, and the pieces they share (containers, probes, volumes). Field names and
//! shapes follow Kubernetes exactly; parts Capstan keeps but does not act on are `Opaque`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_with::skip_serializing_none;

use super::meta::{Condition, LabelSelector, ObjectMeta, Time};
use super::{IntOrString, Opaque, Quantity};

macro_rules! kind {
    ($(#[$m:meta])* $name:ident { $($body:tt)* }) => {
        $(#[$m])*
        #[skip_serializing_none]
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            #[serde(default, skip_serializing_if = "String::is_empty")]
            pub api_version: String,
            #[serde(default, skip_serializing_if = "String::is_empty")]
            pub kind: String,
            #[serde(default)]
            pub metadata: ObjectMeta,
            $($body)*
        }
    };
}
pub(crate) use kind;

macro_rules! object {
    ($(#[$m:meta])* $name:ident { $($body:tt)* }) => {
        $(#[$m])*
        #[skip_serializing_none]
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name { $($body)* }
    };
}
pub(crate) use object;

pub type ResourceList = BTreeMap<String, Quantity>;

/// The finalizer a Namespace carries in `spec.finalizers` until the namespace controller has emptied it.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

kind!(Namespace { pub spec: Option<NamespaceSpec>, pub status: Option<NamespaceStatus>, });
object!(NamespaceSpec { pub finalizers: Option<Vec<String>>, });
object!(NamespaceStatus { pub phase: Option<String>, pub conditions: Option<Vec<Condition>>, });

kind!(
    /// A group of containers sharing a network identity and volumes, scheduled to one node.
    Pod { pub spec: Option<PodSpec>, pub status: Option<PodStatus>, }
);

object!(PodTemplateSpec { pub metadata: Option<ObjectMeta>, pub spec: Option<PodSpec>, });

object!(PodSpec {
    pub active_deadline_seconds: Option<i64>,
    pub affinity: Option<Box<Affinity>>,
    pub automount_service_account_token: Option<bool>,
    pub containers: Vec<Container>,
    pub dns_config: Option<Box<PodDnsConfig>>,
    pub dns_policy: Option<String>,
    pub enable_service_links: Option<bool>,
    pub ephemeral_containers: Option<Vec<Opaque>>,
    pub host_aliases: Option<Vec<HostAlias>>,
    #[serde(rename = "hostIPC")]
    pub host_ipc: Option<bool>,
    pub host_network: Option<bool>,
    #[serde(rename = "hostPID")]
    pub host_pid: Option<bool>,
    pub host_users: Option<bool>,
    pub hostname: Option<String>,
    pub hostname_override: Option<String>,
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    pub init_containers: Option<Vec<Container>>,
    pub node_name: Option<String>,
    pub node_selector: Option<BTreeMap<String, String>>,
    pub os: Option<Opaque>,
    pub overhead: Option<ResourceList>,
    pub preemption_policy: Option<String>,
    pub priority: Option<i32>,
    pub priority_class_name: Option<String>,
    pub readiness_gates: Option<Vec<Opaque>>,
    pub resource_claims: Option<Vec<Opaque>>,
    pub resources: Option<ResourceRequirements>,
    pub restart_policy: Option<String>,
    pub runtime_class_name: Option<String>,
    pub scheduler_name: Option<String>,
    pub scheduling_gates: Option<Vec<Opaque>>,
    pub security_context: Option<Box<PodSecurityContext>>,
    pub service_account: Option<String>,
    pub service_account_name: Option<String>,
    #[serde(rename = "setHostnameAsFQDN")]
    pub set_hostname_as_fqdn: Option<bool>,
    pub share_process_namespace: Option<bool>,
    pub subdomain: Option<String>,
    pub termination_grace_period_seconds: Option<i64>,
    pub tolerations: Option<Vec<Toleration>>,
    pub topology_spread_constraints: Option<Vec<Opaque>>,
    pub volumes: Option<Vec<Volume>>,
});

object!(PodDnsConfig {
    pub nameservers: Option<Vec<String>>,
    pub options: Option<Vec<PodDnsConfigOption>>,
    pub searches: Option<Vec<String>>,
});
object!(PodDnsConfigOption { pub name: Option<String>, pub value: Option<String>, });

object!(
    /// Security settings for every container of a pod (a container's own `securityContext` wins).
    PodSecurityContext {
        pub app_armor_profile: Option<Opaque>,
        pub fs_group: Option<i64>,
        pub fs_group_change_policy: Option<String>,
        pub run_as_group: Option<i64>,
        pub run_as_non_root: Option<bool>,
        pub run_as_user: Option<i64>,
        #[serde(rename = "seLinuxChangePolicy")]
        pub se_linux_change_policy: Option<String>,
        #[serde(rename = "seLinuxOptions")]
        pub se_linux_options: Option<Opaque>,
        pub seccomp_profile: Option<Opaque>,
        pub supplemental_groups: Option<Vec<i64>>,
        pub supplemental_groups_policy: Option<String>,
        pub sysctls: Option<Vec<Opaque>>,
        pub windows_options: Option<Opaque>,
    }
);

object!(
    /// Security settings of one container.
    SecurityContext {
        pub allow_privilege_escalation: Option<bool>,
        pub app_armor_profile: Option<Opaque>,
        pub capabilities: Option<Capabilities>,
        pub cgroup_options: Option<Opaque>,
        pub privileged: Option<bool>,
        pub proc_mount: Option<String>,
        pub read_only_root_filesystem: Option<bool>,
        pub run_as_group: Option<i64>,
        pub run_as_non_root: Option<bool>,
        pub run_as_user: Option<i64>,
        #[serde(rename = "seLinuxOptions")]
        pub se_linux_options: Option<Opaque>,
        pub seccomp_profile: Option<Opaque>,
        pub windows_options: Option<Opaque>,
    }
);

object!(Capabilities { pub add: Option<Vec<String>>, pub drop: Option<Vec<String>>, });

object!(HostAlias { pub ip: String, pub hostnames: Option<Vec<String>>, });
object!(LocalObjectReference { pub name: Option<String>, });

// Large optional parts are boxed: a cached object pays a pointer for what it leaves out, not the part's whole size
// (a Container with its three probes and security context inline was 1.9 KB; a Volume with every source inline 1.2 KB).
object!(Container {
    pub name: String,
    pub image: Option<String>,
    pub image_pull_policy: Option<String>,
    pub command: Option<Vec<String>>,
    pub args: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub env: Option<Vec<EnvVar>>,
    pub env_from: Option<Vec<EnvFromSource>>,
    pub ports: Option<Vec<ContainerPort>>,
    pub resources: Option<ResourceRequirements>,
    pub resize_policy: Option<Vec<Opaque>>,
    pub restart_policy: Option<String>,
    pub restart_policy_rules: Option<Vec<Opaque>>,
    pub volume_mounts: Option<Vec<VolumeMount>>,
    pub volume_devices: Option<Vec<Opaque>>,
    pub liveness_probe: Option<Box<Probe>>,
    pub readiness_probe: Option<Box<Probe>>,
    pub startup_probe: Option<Box<Probe>>,
    pub lifecycle: Option<Opaque>,
    pub termination_message_path: Option<String>,
    pub termination_message_policy: Option<String>,
    pub security_context: Option<Box<SecurityContext>>,
    pub stdin: Option<bool>,
    pub stdin_once: Option<bool>,
    pub tty: Option<bool>,
});

object!(EnvVar { pub name: String, pub value: Option<String>, pub value_from: Option<EnvVarSource>, });
object!(EnvVarSource {
    pub config_map_key_ref: Option<KeySelector>,
    pub secret_key_ref: Option<KeySelector>,
    pub field_ref: Option<ObjectFieldSelector>,
    pub resource_field_ref: Option<ResourceFieldSelector>,
    pub file_key_ref: Option<Opaque>,
});
object!(KeySelector { pub name: Option<String>, pub key: String, pub optional: Option<bool>, });
object!(ObjectFieldSelector { pub api_version: Option<String>, pub field_path: String, });
object!(ResourceFieldSelector { pub container_name: Option<String>, pub resource: String, pub divisor: Option<Quantity>, });
object!(EnvFromSource {
    pub prefix: Option<String>,
    pub config_map_ref: Option<OptionalRef>,
    pub secret_ref: Option<OptionalRef>,
});
object!(OptionalRef { pub name: Option<String>, pub optional: Option<bool>, });

object!(ContainerPort {
    pub container_port: i32,
    #[serde(rename = "hostIP")]
    pub host_ip: Option<String>,
    pub host_port: Option<i32>,
    pub name: Option<String>,
    pub protocol: Option<String>,
});

object!(ResourceRequirements {
    pub limits: Option<ResourceList>,
    pub requests: Option<ResourceList>,
    pub claims: Option<Vec<Opaque>>,
});

object!(VolumeMount {
    pub name: String,
    pub mount_path: String,
    pub read_only: Option<bool>,
    pub recursive_read_only: Option<String>,
    pub sub_path: Option<String>,
    pub sub_path_expr: Option<String>,
    pub mount_propagation: Option<String>,
});

object!(Probe {
    pub exec: Option<ExecAction>,
    pub http_get: Option<HttpGetAction>,
    pub tcp_socket: Option<TcpSocketAction>,
    pub grpc: Option<GrpcAction>,
    pub initial_delay_seconds: Option<i32>,
    pub timeout_seconds: Option<i32>,
    pub period_seconds: Option<i32>,
    pub success_threshold: Option<i32>,
    pub failure_threshold: Option<i32>,
    pub termination_grace_period_seconds: Option<i64>,
});
object!(ExecAction { pub command: Option<Vec<String>>, });
object!(HttpGetAction {
    pub path: Option<String>,
    pub port: IntOrString,
    pub host: Option<String>,
    pub scheme: Option<String>,
    pub http_headers: Option<Vec<HttpHeader>>,
});
object!(HttpHeader { pub name: String, pub value: String, });
object!(TcpSocketAction { pub port: IntOrString, pub host: Option<String>, });
object!(GrpcAction { pub port: i32, pub service: Option<String>, });

object!(Volume {
    pub name: String,
    pub empty_dir: Option<Box<EmptyDirVolumeSource>>,
    pub host_path: Option<Box<HostPathVolumeSource>>,
    pub config_map: Option<Box<ConfigMapVolumeSource>>,
    pub secret: Option<Box<SecretVolumeSource>>,
    pub persistent_volume_claim: Option<Box<PvcVolumeSource>>,
    #[serde(rename = "downwardAPI")]
    pub downward_api: Option<Box<DownwardApiVolumeSource>>,
    pub projected: Option<Box<ProjectedVolumeSource>>,
    pub image: Option<Box<Opaque>>,
    pub ephemeral: Option<Box<Opaque>>,
    pub csi: Option<Box<Opaque>>,
    pub nfs: Option<Box<Opaque>>,
    pub iscsi: Option<Box<Opaque>>,
    pub local: Option<Box<Opaque>>,
    pub git_repo: Option<Box<Opaque>>,
    pub gce_persistent_disk: Option<Box<Opaque>>,
    pub aws_elastic_block_store: Option<Box<Opaque>>,
    pub fc: Option<Box<Opaque>>,
    pub rbd: Option<Box<Opaque>>,
    pub cephfs: Option<Box<Opaque>>,
});
object!(EmptyDirVolumeSource { pub medium: Option<String>, pub size_limit: Option<Quantity>, pub mode: Option<i32>, });
object!(HostPathVolumeSource { pub path: String, #[serde(rename = "type")] pub type_: Option<String>, });
object!(KeyToPath { pub key: String, pub path: String, pub mode: Option<i32>, });
object!(ConfigMapVolumeSource {
    pub name: Option<String>,
    pub items: Option<Vec<KeyToPath>>,
    pub default_mode: Option<i32>,
    pub optional: Option<bool>,
});
object!(SecretVolumeSource {
    pub secret_name: Option<String>,
    pub items: Option<Vec<KeyToPath>>,
    pub default_mode: Option<i32>,
    pub optional: Option<bool>,
});
object!(PvcVolumeSource { pub claim_name: String, pub read_only: Option<bool>, });
object!(ProjectedVolumeSource {
    pub sources: Option<Vec<VolumeProjection>>,
    pub default_mode: Option<i32>,
});
object!(VolumeProjection {
    pub secret: Option<Box<ProjectedKeys>>,
    pub config_map: Option<Box<ProjectedKeys>>,
    #[serde(rename = "downwardAPI")]
    pub downward_api: Option<Box<DownwardApiProjection>>,
    pub service_account_token: Option<Box<ServiceAccountTokenProjection>>,
    pub cluster_trust_bundle: Option<Box<Opaque>>,
    pub pod_certificate: Option<Box<Opaque>>,
});
object!(
    /// A Secret's or ConfigMap's keys in a projected volume.
    ProjectedKeys {
        pub name: Option<String>,
        pub items: Option<Vec<KeyToPath>>,
        pub optional: Option<bool>,
    }
);
object!(DownwardApiProjection { pub items: Option<Vec<DownwardApiVolumeFile>>, });
object!(DownwardApiVolumeSource {
    pub items: Option<Vec<DownwardApiVolumeFile>>,
    pub default_mode: Option<i32>,
});
object!(DownwardApiVolumeFile {
    pub path: String,
    pub field_ref: Option<ObjectFieldSelector>,
    pub resource_field_ref: Option<ResourceFieldSelector>,
    pub mode: Option<i32>,
});
object!(ServiceAccountTokenProjection {
    pub audience: Option<String>,
    pub expiration_seconds: Option<i64>,
    pub path: String,
});

object!(Toleration {
    pub key: Option<String>,
    pub operator: Option<String>,
    pub value: Option<String>,
    pub effect: Option<String>,
    pub toleration_seconds: Option<i64>,
});

impl Toleration {
    /// Whether this toleration tolerates a taint `key=value:effect` (an empty key with `Exists` tolerates every
    /// taint; an empty effect every effect).
    pub fn tolerates(&self, key: &str, value: &str, effect: &str) -> bool {
        let op = self.operator.as_deref().unwrap_or("Equal");
        let key_ok = self
            .key
            .as_deref()
            .is_none_or(|k| k.is_empty() && op == "Exists" || k == key);
        let value_ok = op == "Exists" || self.value.as_deref().unwrap_or("") == value;
        let effect_ok = self
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == effect);
        key_ok && value_ok && effect_ok
    }
}

object!(Affinity {
    pub node_affinity: Option<NodeAffinity>,
    pub pod_affinity: Option<Opaque>,
    pub pod_anti_affinity: Option<Opaque>,
});
object!(NodeAffinity {
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
    pub preferred_during_scheduling_ignored_during_execution: Option<Vec<PreferredSchedulingTerm>>,
});
object!(NodeSelector { pub node_selector_terms: Vec<NodeSelectorTerm>, });
object!(NodeSelectorTerm {
    pub match_expressions: Option<Vec<NodeSelectorRequirement>>,
    pub match_fields: Option<Vec<NodeSelectorRequirement>>,
});
object!(NodeSelectorRequirement { pub key: String, pub operator: String, pub values: Option<Vec<String>>, });
object!(PreferredSchedulingTerm { pub weight: i32, pub preference: NodeSelectorTerm, });

object!(PodStatus {
    pub phase: Option<String>,
    pub conditions: Option<Vec<Condition>>,
    pub message: Option<String>,
    pub reason: Option<String>,
    pub nominated_node_name: Option<String>,
    #[serde(rename = "hostIP")]
    pub host_ip: Option<String>,
    #[serde(rename = "hostIPs")]
    pub host_ips: Option<Vec<IpEntry>>,
    #[serde(rename = "podIP")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs")]
    pub pod_ips: Option<Vec<IpEntry>>,
    pub start_time: Option<Time>,
    pub init_container_statuses: Option<Vec<ContainerStatus>>,
    pub container_statuses: Option<Vec<ContainerStatus>>,
    pub ephemeral_container_statuses: Option<Vec<ContainerStatus>>,
    pub qos_class: Option<String>,
    pub observed_generation: Option<i64>,
    pub resize: Option<String>,
    pub resource_claim_statuses: Option<Vec<Opaque>>,
});
object!(IpEntry { pub ip: String, });
object!(ContainerStatus {
    pub name: String,
    pub state: Option<ContainerState>,
    pub last_state: Option<Box<ContainerState>>,
    pub ready: bool,
    pub restart_count: i32,
    pub image: String,
    #[serde(rename = "imageID")]
    pub image_id: String,
    #[serde(rename = "containerID")]
    pub container_id: Option<String>,
    pub started: Option<bool>,
    pub resources: Option<Box<ResourceRequirements>>,
    pub allocated_resources: Option<ResourceList>,
    pub volume_mounts: Option<Vec<Opaque>>,
    pub user: Option<Opaque>,
    pub stop_signal: Option<String>,
});
object!(ContainerState {
    pub waiting: Option<ContainerStateWaiting>,
    pub running: Option<ContainerStateRunning>,
    pub terminated: Option<ContainerStateTerminated>,
});
object!(ContainerStateWaiting { pub reason: Option<String>, pub message: Option<String>, });
object!(ContainerStateRunning { pub started_at: Option<Time>, });
object!(ContainerStateTerminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub started_at: Option<Time>,
    pub finished_at: Option<Time>,
    #[serde(rename = "containerID")]
    pub container_id: Option<String>,
});

kind!(
    /// A machine (or agent) that runs pods.
    Node { pub spec: Option<NodeSpec>, pub status: Option<NodeStatus>, }
);
object!(NodeSpec {
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Option<Vec<String>>,
    #[serde(rename = "providerID")]
    pub provider_id: Option<String>,
    pub taints: Option<Vec<Taint>>,
    pub unschedulable: Option<bool>,
});
object!(Taint { pub key: String, pub value: Option<String>, pub effect: String, pub time_added: Option<Time>, });
object!(NodeStatus {
    pub capacity: Option<ResourceList>,
    pub allocatable: Option<ResourceList>,
    pub conditions: Option<Vec<Condition>>,
    pub addresses: Option<Vec<NodeAddress>>,
    pub daemon_endpoints: Option<Opaque>,
    pub node_info: Option<NodeSystemInfo>,
    pub images: Option<Vec<Opaque>>,
    pub phase: Option<String>,
});
object!(NodeAddress { #[serde(rename = "type")] pub type_: String, pub address: String, });
object!(NodeSystemInfo {
    #[serde(rename = "machineID")]
    pub machine_id: String,
    #[serde(rename = "systemUUID")]
    pub system_uuid: String,
    #[serde(rename = "bootID")]
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
    pub container_runtime_version: String,
    pub kubelet_version: String,
    pub kube_proxy_version: String,
    pub operating_system: String,
    pub architecture: String,
});

kind!(
    /// A stable virtual address (and DNS name) in front of a set of pods.
    Service { pub spec: Option<ServiceSpec>, pub status: Option<ServiceStatus>, }
);
object!(ServiceSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub selector: Option<BTreeMap<String, String>>,
    pub ports: Option<Vec<ServicePort>>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(rename = "clusterIPs")]
    pub cluster_ips: Option<Vec<String>>,
    #[serde(rename = "externalIPs")]
    pub external_ips: Option<Vec<String>>,
    pub external_name: Option<String>,
    pub external_traffic_policy: Option<String>,
    pub internal_traffic_policy: Option<String>,
    pub health_check_node_port: Option<i32>,
    pub ip_families: Option<Vec<String>>,
    pub ip_family_policy: Option<String>,
    pub load_balancer_class: Option<String>,
    #[serde(rename = "loadBalancerIP")]
    pub load_balancer_ip: Option<String>,
    pub load_balancer_source_ranges: Option<Vec<String>>,
    pub allocate_load_balancer_node_ports: Option<bool>,
    pub publish_not_ready_addresses: Option<bool>,
    pub session_affinity: Option<String>,
    pub session_affinity_config: Option<Opaque>,
    pub traffic_distribution: Option<String>,
});
object!(ServicePort {
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
    pub port: i32,
    pub target_port: Option<IntOrString>,
    pub node_port: Option<i32>,
});
object!(ServiceStatus { pub load_balancer: Option<LoadBalancerStatus>, pub conditions: Option<Vec<Condition>>, });
object!(LoadBalancerStatus { pub ingress: Option<Vec<LoadBalancerIngress>>, });
object!(LoadBalancerIngress {
    pub ip: Option<String>,
    pub hostname: Option<String>,
    pub ip_mode: Option<String>,
    pub ports: Option<Vec<Opaque>>,
});

kind!(Endpoints { pub subsets: Option<Vec<EndpointSubset>>, });
object!(EndpointSubset {
    pub addresses: Option<Vec<EndpointAddress>>,
    pub not_ready_addresses: Option<Vec<EndpointAddress>>,
    pub ports: Option<Vec<EndpointPort>>,
});
object!(EndpointAddress {
    pub ip: String,
    pub hostname: Option<String>,
    pub node_name: Option<String>,
    pub target_ref: Option<ObjectReference>,
});
object!(EndpointPort {
    pub name: Option<String>,
    pub port: i32,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
});
object!(ObjectReference {
    pub api_version: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub field_path: Option<String>,
});

kind!(ConfigMap {
    pub data: Option<BTreeMap<String, String>>,
    pub binary_data: Option<BTreeMap<String, String>>,
    pub immutable: Option<bool>,
});

kind!(Secret {
    pub data: Option<BTreeMap<String, String>>,
    pub string_data: Option<BTreeMap<String, String>>,
    #[serde(rename = "type")]
    pub type_: Option<String>,
    pub immutable: Option<bool>,
});

kind!(ServiceAccount {
    pub secrets: Option<Vec<ObjectReference>>,
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    pub automount_service_account_token: Option<bool>,
});

kind!(
    /// core/v1 Event: something that happened to an object.
    Event {
        pub involved_object: ObjectReference,
        pub reason: Option<String>,
        pub message: Option<String>,
        pub source: Option<EventSource>,
        pub first_timestamp: Option<Time>,
        pub last_timestamp: Option<Time>,
        pub event_time: Option<String>,
        pub count: Option<i32>,
        #[serde(rename = "type")]
        pub type_: Option<String>,
        pub action: Option<String>,
        pub related: Option<ObjectReference>,
        pub reporting_component: Option<String>,
        pub reporting_instance: Option<String>,
        pub series: Option<Opaque>,
    }
);
object!(EventSource { pub component: Option<String>, pub host: Option<String>, });

kind!(PersistentVolume { pub spec: Option<PersistentVolumeSpec>, pub status: Option<PersistentVolumeStatus>, });
object!(PersistentVolumeSpec {
    pub capacity: Option<ResourceList>,
    pub access_modes: Option<Vec<String>>,
    pub claim_ref: Option<ObjectReference>,
    pub persistent_volume_reclaim_policy: Option<String>,
    pub storage_class_name: Option<String>,
    pub mount_options: Option<Vec<String>>,
    pub volume_mode: Option<String>,
    pub node_affinity: Option<Opaque>,
    pub host_path: Option<HostPathVolumeSource>,
    pub local: Option<Opaque>,
    pub nfs: Option<Opaque>,
    pub csi: Option<Opaque>,
    pub volume_attributes_class_name: Option<String>,
});
object!(PersistentVolumeStatus {
    pub phase: Option<String>,
    pub message: Option<String>,
    pub reason: Option<String>,
    pub last_phase_transition_time: Option<Time>,
});

kind!(PersistentVolumeClaim {
    pub spec: Option<PersistentVolumeClaimSpec>,
    pub status: Option<PersistentVolumeClaimStatus>,
});
object!(PersistentVolumeClaimSpec {
    pub access_modes: Option<Vec<String>>,
    pub resources: Option<VolumeResourceRequirements>,
    pub selector: Option<LabelSelector>,
    pub storage_class_name: Option<String>,
    pub volume_mode: Option<String>,
    pub volume_name: Option<String>,
    pub data_source: Option<Opaque>,
    pub data_source_ref: Option<Opaque>,
    pub volume_attributes_class_name: Option<String>,
});
object!(VolumeResourceRequirements { pub limits: Option<ResourceList>, pub requests: Option<ResourceList>, });
object!(PersistentVolumeClaimStatus {
    pub phase: Option<String>,
    pub access_modes: Option<Vec<String>>,
    pub capacity: Option<ResourceList>,
    pub conditions: Option<Vec<Condition>>,
});

kind!(ReplicationController {
    pub spec: Option<ReplicationControllerSpec>,
    pub status: Option<ReplicationControllerStatus>,
});
object!(ReplicationControllerSpec {
    pub replicas: Option<i32>,
    pub min_ready_seconds: Option<i32>,
    pub selector: Option<BTreeMap<String, String>>,
    pub template: Option<PodTemplateSpec>,
});
object!(ReplicationControllerStatus {
    pub replicas: i32,
    pub fully_labeled_replicas: Option<i32>,
    pub ready_replicas: Option<i32>,
    pub available_replicas: Option<i32>,
    pub observed_generation: Option<i64>,
    pub conditions: Option<Vec<Condition>>,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_round_trips_kubernetes_json() {
        let json = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {
                "hostIPC": true,
                "containers": [{"name": "c", "image": "busybox",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                    "livenessProbe": {"httpGet": {"path": "/", "port": "http"}},
                    "securityContext": {"runAsUser": 1000}}],
                "volumes": [{"name": "d", "downwardAPI": {"items": []}}]
            },
            "status": {"podIP": "10.0.0.1", "hostIPs": [{"ip": "1.2.3.4"}]}
        });
        let pod: Pod = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(pod.spec.as_ref().unwrap().host_ipc, Some(true));
        assert_eq!(serde_json::to_value(&pod).unwrap(), json);
    }
}
