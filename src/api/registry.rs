//! The kind registry: one table of every kind Capstan serves. Discovery, routing, short names, scope, subresources,
//! table columns, defaulting and validation are all driven from here - adding a kind is one entry plus its type.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::Value;

use super::columns::{self, Columns};
use super::meta::ObjectMeta;
use super::resource::Resource;
use super::{apps, batch, core, gitops, other, rbac};

/// Everything the server needs to know about one kind.
pub struct KindInfo {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    pub categories: &'static [&'static str],
    /// Has a `/status` subresource (spec and status are written separately).
    pub status: bool,
    /// Has a `/scale` subresource (autoscaling/v1 Scale over `spec.replicas`).
    pub scale: bool,
    /// Objects of this kind carry a `spec` whose changes bump `metadata.generation`.
    pub columns: Columns,
    schema: fn(&mut SchemaGenerator) -> schemars::Schema,
}

impl std::fmt::Debug for KindInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.api_version(), self.kind)
    }
}

impl KindInfo {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `deployments.apps`, as Kubernetes names a resource in errors.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The JSON Schema (OpenAPI 3 dialect) of this kind's objects; `$ref`s point into [`definitions`].
    pub fn schema(&self) -> &'static Value {
        &schemas().roots[self.kind]
    }
}

fn s<T: JsonSchema>(g: &mut SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<T>()
}

/// Declares the table of kinds and, for each kind's type, its [`Resource`] implementation - so the table is the only
/// place a kind's group, version and plural are written.
macro_rules! kinds {
    ($(($g:expr, $v:expr, $ty:ident, $plural:expr, $singular:expr, [$($short:expr),*], $ns:expr, [$($cat:expr),*], $status:expr, $scale:expr, $cols:expr)),* $(,)?) => {
        /// The table. Order is the order of discovery documents.
        pub static KINDS: &[KindInfo] = &[$(
            KindInfo {
                group: $g,
                version: $v,
                kind: stringify!($ty),
                plural: $plural,
                singular: $singular,
                short_names: &[$($short),*],
                namespaced: $ns,
                categories: &[$($cat),*],
                status: $status,
                scale: $scale,
                columns: $cols,
                schema: s::<$ty>,
            }
        ),*];

        $(
            impl Resource for $ty {
                fn info() -> &'static KindInfo {
                    static INFO: OnceLock<&'static KindInfo> = OnceLock::new();
                    INFO.get_or_init(|| {
                        KINDS
                            .iter()
                            .find(|k| k.kind == stringify!($ty))
                            .expect("every kind of the table is in the table")
                    })
                }
                fn meta(&self) -> &ObjectMeta {
                    &self.metadata
                }
                fn meta_mut(&mut self) -> &mut ObjectMeta {
                    &mut self.metadata
                }
            }
        )*
    };
}

use apps::*;
use batch::*;
use core::*;
use gitops::*;
use other::*;
use rbac::*;

kinds![
    (
        "",
        "v1",
        Namespace,
        "namespaces",
        "namespace",
        ["ns"],
        false,
        [],
        true,
        false,
        columns::NAMESPACE
    ),
    (
        "",
        "v1",
        Pod,
        "pods",
        "pod",
        ["po"],
        true,
        ["all"],
        true,
        false,
        columns::POD
    ),
    (
        "",
        "v1",
        Node,
        "nodes",
        "node",
        ["no"],
        false,
        [],
        true,
        false,
        columns::NODE
    ),
    (
        "",
        "v1",
        Service,
        "services",
        "service",
        ["svc"],
        true,
        ["all"],
        true,
        false,
        columns::SERVICE
    ),
    (
        "",
        "v1",
        Endpoints,
        "endpoints",
        "endpoints",
        ["ep"],
        true,
        [],
        false,
        false,
        columns::ENDPOINTS
    ),
    (
        "",
        "v1",
        ConfigMap,
        "configmaps",
        "configmap",
        ["cm"],
        true,
        [],
        false,
        false,
        columns::CONFIGMAP
    ),
    (
        "",
        "v1",
        Secret,
        "secrets",
        "secret",
        [],
        true,
        [],
        false,
        false,
        columns::SECRET
    ),
    (
        "",
        "v1",
        ServiceAccount,
        "serviceaccounts",
        "serviceaccount",
        ["sa"],
        true,
        [],
        false,
        false,
        columns::SERVICEACCOUNT
    ),
    (
        "",
        "v1",
        Event,
        "events",
        "event",
        ["ev"],
        true,
        [],
        false,
        false,
        columns::EVENT
    ),
    (
        "",
        "v1",
        PersistentVolume,
        "persistentvolumes",
        "persistentvolume",
        ["pv"],
        false,
        [],
        true,
        false,
        columns::PV
    ),
    (
        "",
        "v1",
        PersistentVolumeClaim,
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        ["pvc"],
        true,
        [],
        true,
        false,
        columns::PVC
    ),
    (
        "",
        "v1",
        ReplicationController,
        "replicationcontrollers",
        "replicationcontroller",
        ["rc"],
        true,
        ["all"],
        true,
        true,
        columns::REPLICASET
    ),
    (
        "apps",
        "v1",
        Deployment,
        "deployments",
        "deployment",
        ["deploy"],
        true,
        ["all"],
        true,
        true,
        columns::DEPLOYMENT
    ),
    (
        "apps",
        "v1",
        ReplicaSet,
        "replicasets",
        "replicaset",
        ["rs"],
        true,
        ["all"],
        true,
        true,
        columns::REPLICASET
    ),
    (
        "apps",
        "v1",
        StatefulSet,
        "statefulsets",
        "statefulset",
        ["sts"],
        true,
        ["all"],
        true,
        true,
        columns::STATEFULSET
    ),
    (
        "apps",
        "v1",
        DaemonSet,
        "daemonsets",
        "daemonset",
        ["ds"],
        true,
        ["all"],
        true,
        false,
        columns::DAEMONSET
    ),
    (
        "apps",
        "v1",
        ControllerRevision,
        "controllerrevisions",
        "controllerrevision",
        [],
        true,
        [],
        false,
        false,
        columns::CONTROLLERREVISION
    ),
    (
        "batch",
        "v1",
        Job,
        "jobs",
        "job",
        [],
        true,
        ["all"],
        true,
        false,
        columns::JOB
    ),
    (
        "batch",
        "v1",
        CronJob,
        "cronjobs",
        "cronjob",
        ["cj"],
        true,
        ["all"],
        true,
        false,
        columns::CRONJOB
    ),
    (
        "coordination.k8s.io",
        "v1",
        Lease,
        "leases",
        "lease",
        [],
        true,
        [],
        false,
        false,
        columns::LEASE
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        ClusterRole,
        "clusterroles",
        "clusterrole",
        [],
        false,
        [],
        false,
        false,
        columns::ROLE
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        ClusterRoleBinding,
        "clusterrolebindings",
        "clusterrolebinding",
        [],
        false,
        [],
        false,
        false,
        columns::CLUSTERROLEBINDING
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        Role,
        "roles",
        "role",
        [],
        true,
        [],
        false,
        false,
        columns::ROLE
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        RoleBinding,
        "rolebindings",
        "rolebinding",
        [],
        true,
        [],
        false,
        false,
        columns::ROLEBINDING
    ),
    (
        "certificates.k8s.io",
        "v1",
        CertificateSigningRequest,
        "certificatesigningrequests",
        "certificatesigningrequest",
        ["csr"],
        false,
        [],
        true,
        false,
        columns::CSR
    ),
    (
        "policy",
        "v1",
        PodDisruptionBudget,
        "poddisruptionbudgets",
        "poddisruptionbudget",
        ["pdb"],
        true,
        [],
        true,
        false,
        columns::PDB
    ),
    (
        "discovery.k8s.io",
        "v1",
        EndpointSlice,
        "endpointslices",
        "endpointslice",
        [],
        true,
        [],
        false,
        false,
        columns::ENDPOINTSLICE
    ),
    (
        "apiregistration.k8s.io",
        "v1",
        APIService,
        "apiservices",
        "apiservice",
        [],
        false,
        ["api-extensions"],
        true,
        false,
        columns::APISERVICE
    ),
    (
        "storage.k8s.io",
        "v1",
        StorageClass,
        "storageclasses",
        "storageclass",
        ["sc"],
        false,
        [],
        false,
        false,
        columns::STORAGECLASS
    ),
    (
        "gitops.capstan.io",
        "v1",
        Application,
        "applications",
        "application",
        ["app", "apps"],
        true,
        [],
        true,
        false,
        columns::APPLICATION
    ),
    (
        "gitops.capstan.io",
        "v1",
        SyncRecord,
        "syncrecords",
        "syncrecord",
        [],
        true,
        [],
        false,
        false,
        columns::SYNCRECORD
    ),
];

/// Finds a kind by group and plural resource name.
pub fn by_resource(group: &str, version: &str, plural: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.version == version && k.plural == plural)
}

/// Finds a kind by apiVersion (`apps/v1`, `v1`) and kind name.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    KINDS
        .iter()
        .find(|k| k.api_version() == api_version && k.kind == kind)
}

/// Resolves what a user types: plural, singular, short name or kind, optionally qualified by group
/// (`deploy`, `deployments.apps`, `Deployment`).
pub fn lookup(name: &str) -> Option<&'static KindInfo> {
    let lower = name.to_ascii_lowercase();
    let (res, group) = match lower.split_once('.') {
        Some((r, g)) => (r.to_string(), Some(g.to_string())),
        None => (lower.clone(), None),
    };
    KINDS.iter().find(|k| {
        (k.plural == res
            || k.singular == res
            || k.short_names.contains(&res.as_str())
            || k.kind.to_ascii_lowercase() == res)
            && group.as_ref().is_none_or(|g| k.group == g)
    })
}

/// All group/version pairs, core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

/// The schemas of every kind, generated once.
pub struct Schemas {
    pub roots: BTreeMap<&'static str, Value>,
    /// Named definitions, referenced as `#/components/schemas/<name>`.
    pub definitions: serde_json::Map<String, Value>,
}

pub fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let mut g = SchemaSettings::openapi3().into_generator();
        let mut roots = BTreeMap::new();
        for k in KINDS {
            roots.insert(k.kind, (k.schema)(&mut g).to_value());
        }
        roots.insert("Scale", g.subschema_for::<Scale>().to_value());
        let definitions = g.take_definitions(true);
        Schemas { roots, definitions }
    })
}

/// Resolves a `$ref` (or returns the schema itself).
pub fn resolve(schema: &Value) -> &Value {
    let defs = &schemas().definitions;
    let mut cur = schema;
    for _ in 0..8 {
        match cur.get("$ref").and_then(Value::as_str) {
            Some(r) => match r.rsplit('/').next().and_then(|n| defs.get(n)) {
                Some(next) => cur = next,
                None => return cur,
            },
            None => return cur,
        }
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_accepts_every_spelling() {
        for n in [
            "deploy",
            "deployments",
            "deployment",
            "Deployment",
            "deployments.apps",
        ] {
            assert_eq!(lookup(n).map(|k| k.kind), Some("Deployment"), "{n}");
        }
        assert_eq!(lookup("po").map(|k| k.kind), Some("Pod"));
        assert!(lookup("deployments.batch").is_none());
        assert!(lookup("ingresses").is_none());
    }

    #[test]
    fn every_kind_has_a_schema_with_metadata() {
        for k in KINDS {
            let root = resolve(k.schema());
            assert!(root["properties"].get("metadata").is_some(), "{}", k.kind);
        }
    }

    #[test]
    fn short_names_and_plurals_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for k in KINDS {
            assert!(seen.insert((k.group, k.plural)), "{}", k.plural);
            for s in k.short_names {
                assert!(seen.insert(("short", s)), "{s}");
            }
        }
    }
}
