//! The kind registry: one table of every kind Capstan serves. Discovery, routing, short names, scope, subresources,
//! table columns, defaulting and validation are all driven from here - adding a kind is one entry plus its type.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::Value;

use super::columns::{self, Columns};
use super::crd::{CustomVersion, Served};
use super::meta::ObjectMeta;
use super::resource::Resource;
use super::{apps, batch, core, crd, gitops, other, rbac};

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
    /// The Rust type's schema; None for custom kinds (their schema is the CRD's, in [`custom`]).
    schema: Option<fn(&mut SchemaGenerator) -> schemars::Schema>,
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

    /// The JSON Schema (OpenAPI 3 dialect) of this kind's objects; `$ref`s point into [`definitions`]. A custom
    /// kind answers an open object here: its real schema is its CRD's ([`custom`]).
    pub fn schema(&self) -> &'static Value {
        static OPEN: OnceLock<Value> = OnceLock::new();
        match self.schema {
            Some(_) => &schemas().roots[self.kind],
            None => OPEN.get_or_init(|| {
                serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
            }),
        }
    }

    /// Whether a CRD defines this kind.
    pub fn is_custom(&self) -> bool {
        self.schema.is_none()
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
                schema: Some(s::<$ty>),
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
use crd::CustomResourceDefinition;
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
        "apiextensions.k8s.io",
        "v1",
        CustomResourceDefinition,
        "customresourcedefinitions",
        "customresourcedefinition",
        ["crd", "crds"],
        false,
        ["api-extensions"],
        true,
        false,
        columns::CRD
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

/// The custom kinds served now (one entry per served version of each accepted CRD), by CRD name.
type CustomTable = BTreeMap<String, Vec<(&'static KindInfo, std::sync::Arc<CustomVersion>)>>;

fn custom_table() -> &'static std::sync::RwLock<CustomTable> {
    static TABLE: OnceLock<std::sync::RwLock<CustomTable>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

fn read_custom() -> std::sync::RwLockReadGuard<'static, CustomTable> {
    custom_table().read().unwrap_or_else(|e| e.into_inner())
}

/// A custom kind's names as a `&'static KindInfo`. Interned: the same names give the same entry, so re-registering a
/// CRD (every update, every server start) allocates nothing new; only names never seen before are kept for good.
fn intern(s: &Served) -> &'static KindInfo {
    static INTERNED: OnceLock<std::sync::Mutex<Vec<&'static KindInfo>>> = OnceLock::new();
    let mut all = INTERNED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let same = |k: &&&'static KindInfo| {
        k.group == s.group
            && k.version == s.version
            && k.kind == s.kind
            && k.plural == s.plural
            && k.singular == s.singular
            && k.short_names
                .iter()
                .copied()
                .eq(s.short_names.iter().map(String::as_str))
            && k.categories
                .iter()
                .copied()
                .eq(s.categories.iter().map(String::as_str))
            && k.namespaced == s.namespaced
            && k.status == s.status
            && k.scale == s.custom.scale.is_some()
    };
    if let Some(k) = all.iter().find(same) {
        return k;
    }
    fn leak(s: &str) -> &'static str {
        Box::leak(s.to_string().into_boxed_str())
    }
    fn leak_all(v: &[String]) -> &'static [&'static str] {
        Box::leak(
            v.iter()
                .map(|s| leak(s))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        )
    }
    let info: &'static KindInfo = Box::leak(Box::new(KindInfo {
        group: leak(&s.group),
        version: leak(&s.version),
        kind: leak(&s.kind),
        plural: leak(&s.plural),
        singular: leak(&s.singular),
        short_names: leak_all(&s.short_names),
        namespaced: s.namespaced,
        categories: leak_all(&s.categories),
        status: s.status,
        scale: s.custom.scale.is_some(),
        columns: columns::DEFAULT,
        schema: None,
    }));
    all.push(info);
    info
}

/// The kind a CRD version would serve, without serving it (GitOps resolves the custom objects of a commit that also
/// carries their CRD before the API server serves it; the entry is the one the server will use).
pub fn provisional(s: &Served) -> &'static KindInfo {
    intern(s)
}

/// Serves the versions of a CRD (replacing what that CRD served before).
pub fn set_custom(crd: &str, served: Vec<Served>) {
    let entries = served
        .into_iter()
        .map(|s| (intern(&s), std::sync::Arc::new(s.custom)))
        .collect();
    custom_table()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .insert(crd.to_string(), entries);
}

/// Stops serving a CRD's kinds.
pub fn remove_custom(crd: &str) {
    custom_table()
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .remove(crd);
}

/// The CRD side of a custom kind (schema, printer columns, scale paths); None for built-in kinds.
pub fn custom(kind: &KindInfo) -> Option<std::sync::Arc<CustomVersion>> {
    if !kind.is_custom() {
        return None;
    }
    read_custom().values().flatten().find_map(|(k, c)| {
        (k.group == kind.group && k.version == kind.version && k.plural == kind.plural)
            .then(|| c.clone())
    })
}

/// One kind per CRD served now (the storage version's, else the first served): what to list to see every object
/// of each custom kind once.
pub fn custom_storage_kinds() -> Vec<&'static KindInfo> {
    read_custom()
        .values()
        .filter_map(|versions| {
            versions
                .iter()
                .find(|(k, c)| k.version == c.storage_version)
                .or_else(|| versions.first())
                .map(|(k, _)| *k)
        })
        .collect()
}

/// The names of the CRDs served now.
pub fn custom_crds() -> Vec<String> {
    read_custom().keys().cloned().collect()
}

/// Every kind served now: the built-in table, then the custom kinds.
pub fn all() -> Vec<&'static KindInfo> {
    let mut out: Vec<&'static KindInfo> = KINDS.iter().collect();
    out.extend(read_custom().values().flatten().map(|(k, _)| *k));
    out
}

/// Finds a kind by group and plural resource name.
pub fn by_resource(group: &str, version: &str, plural: &str) -> Option<&'static KindInfo> {
    let want = |k: &&KindInfo| k.group == group && k.version == version && k.plural == plural;
    KINDS.iter().find(want).or_else(|| {
        read_custom()
            .values()
            .flatten()
            .map(|(k, _)| *k)
            .find(|k| want(k))
    })
}

/// Finds a kind by apiVersion (`apps/v1`, `v1`) and kind name.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static KindInfo> {
    let want = |k: &&KindInfo| k.kind == kind && k.api_version() == api_version;
    KINDS.iter().find(want).or_else(|| {
        read_custom()
            .values()
            .flatten()
            .map(|(k, _)| *k)
            .find(|k| want(k))
    })
}

/// Resolves what a user types: plural, singular, short name or kind, optionally qualified by group
/// (`deploy`, `deployments.apps`, `Deployment`). Built-in kinds win over custom ones; of a custom kind's versions,
/// the storage version's entry is found first.
pub fn lookup(name: &str) -> Option<&'static KindInfo> {
    let lower = name.to_ascii_lowercase();
    let (res, group) = match lower.split_once('.') {
        Some((r, g)) => (r.to_string(), Some(g.to_string())),
        None => (lower.clone(), None),
    };
    let want = |k: &&KindInfo| {
        (k.plural == res
            || k.singular == res
            || k.short_names.contains(&res.as_str())
            || k.kind.to_ascii_lowercase() == res)
            && group.as_ref().is_none_or(|g| k.group == g)
    };
    KINDS.iter().find(want).or_else(|| {
        read_custom()
            .values()
            .flat_map(|versions| {
                let mut v: Vec<_> = versions.iter().collect();
                v.sort_by_key(|(k, c)| k.version != c.storage_version);
                v.into_iter().map(|(k, _)| *k).collect::<Vec<_>>()
            })
            .find(|k| want(k))
    })
}

/// All group/version pairs, core first.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in all() {
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
            if let Some(schema) = k.schema {
                roots.insert(k.kind, schema(&mut g).to_value());
            }
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
