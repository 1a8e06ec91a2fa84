//! One object of a build and its identity as kustomize keeps it: group, version, kind, name and namespace now, the
//! ids it had before prefixes, suffixes, namespaces and hashes changed them (name references follow those), and the
//! prefixes and suffixes added to it (which tell apart same-named objects of different bases).

use serde_json::Value;

use crate::api::registry;

/// An object's identity: `Kind.version.group/name.namespace`, as kustomize prints it in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Id {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub name: String,
    /// Empty when the object names none.
    pub namespace: String,
}

impl Id {
    /// The namespace objects are compared by: cluster-scoped kinds have none, namespaced objects without one are in
    /// `default`.
    pub fn effective_namespace(&self) -> &str {
        if !namespaced(&self.group, &self.kind) {
            ""
        } else if self.namespace.is_empty() {
            "default"
        } else {
            &self.namespace
        }
    }

    /// The same object: group, version, kind, name and effective namespace equal.
    pub fn same(&self, o: &Id) -> bool {
        self.group == o.group
            && self.version == o.version
            && self.kind == o.kind
            && self.name == o.name
            && self.effective_namespace() == o.effective_namespace()
    }

    /// Chosen by a partial group/version/kind (empty fields match anything).
    pub fn selected(&self, group: &str, version: &str, kind: &str) -> bool {
        (group.is_empty() || group == self.group)
            && (version.is_empty() || version == self.version)
            && (kind.is_empty() || kind == self.kind)
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let or = |s: &str, none: &'static str| {
            if s.is_empty() {
                none.to_string()
            } else {
                s.to_string()
            }
        };
        write!(
            f,
            "{}.{}.{}/{}.{}",
            self.kind,
            or(&self.version, "[noVer]"),
            or(&self.group, "[noGrp]"),
            self.name,
            or(&self.namespace, "[noNs]")
        )
    }
}

/// Whether objects of a kind (of an API group) live in a namespace: Kubernetes' built-in kinds as the registry knows
/// them, every other kind (custom resources, also a `Namespace` of some other group) namespaced unless kustomize
/// knows it as cluster-wide.
pub fn namespaced(group: &str, kind: &str) -> bool {
    if let Some(k) = registry::KINDS
        .iter()
        .find(|k| k.kind == kind && k.group == group)
    {
        return k.namespaced;
    }
    if registry::KINDS.iter().any(|k| k.kind == kind) {
        // A built-in kind's name in another group: a custom kind.
        return true;
    }
    !matches!(
        kind,
        "ComponentStatus"
            | "Namespace"
            | "Node"
            | "PersistentVolume"
            | "MutatingWebhookConfiguration"
            | "ValidatingWebhookConfiguration"
            | "ValidatingAdmissionPolicy"
            | "ValidatingAdmissionPolicyBinding"
            | "MutatingAdmissionPolicy"
            | "MutatingAdmissionPolicyBinding"
            | "CustomResourceDefinition"
            | "APIService"
            | "TokenReview"
            | "SelfSubjectAccessReview"
            | "SelfSubjectRulesReview"
            | "SubjectAccessReview"
            | "CertificateSigningRequest"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "IngressClass"
            | "RuntimeClass"
            | "PodSecurityPolicy"
            | "PriorityClass"
            | "CSIDriver"
            | "CSINode"
            | "StorageClass"
            | "VolumeAttachment"
            | "FlowSchema"
            | "PriorityLevelConfiguration"
    )
}

/// One object produced by a build, with where it was written (generated objects name their kustomization).
#[derive(Debug, Clone)]
pub struct Res {
    pub file: String,
    pub line: usize,
    pub object: Value,
    /// Ids it had before renames, oldest first (empty when never renamed).
    pub(super) prev: Vec<Id>,
    pub(super) prefixes: Vec<String>,
    pub(super) suffixes: Vec<String>,
    /// A generated ConfigMap or Secret that still needs its content-hash suffix.
    pub(super) hash: bool,
    /// The generator `behavior` it was made with (merge or replace apply it onto an object of an outer level).
    pub(super) behavior: Option<String>,
    /// `config.kubernetes.io/origin` to write when the build asks for origin annotations.
    pub(super) origin: Option<String>,
    /// The transformers that ran over it, for `alpha.config.kubernetes.io/transformations`.
    pub(super) transformations: String,
    /// The vars bound to this object (by the kustomization that declared them).
    pub(super) vars: Vec<String>,
}

impl Res {
    pub fn new(file: &str, line: usize, object: Value) -> Res {
        Res {
            file: file.to_string(),
            line,
            object,
            prev: Vec::new(),
            prefixes: Vec::new(),
            suffixes: Vec::new(),
            hash: false,
            behavior: None,
            origin: None,
            vars: Vec::new(),
            transformations: String::new(),
        }
    }
    pub fn api_version(&self) -> &str {
        self.object["apiVersion"].as_str().unwrap_or("")
    }
    pub fn kind(&self) -> &str {
        self.object["kind"].as_str().unwrap_or("")
    }
    pub fn name(&self) -> &str {
        self.object["metadata"]["name"].as_str().unwrap_or("")
    }
    pub fn namespace(&self) -> Option<&str> {
        self.object["metadata"]["namespace"]
            .as_str()
            .filter(|s| !s.is_empty())
    }
    pub fn namespaced(&self) -> bool {
        namespaced(self.group_version().0, self.kind())
    }
    /// Its group and version.
    pub fn group_version(&self) -> (&str, &str) {
        match self.api_version().split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", self.api_version()),
        }
    }
    pub fn id(&self) -> Id {
        let (group, version) = self.group_version();
        Id {
            group: group.into(),
            version: version.into(),
            kind: self.kind().into(),
            name: self.name().into(),
            namespace: self.namespace().unwrap_or("").into(),
        }
    }
    /// The id it was first read with.
    pub fn org_id(&self) -> Id {
        self.prev.first().cloned().unwrap_or_else(|| self.id())
    }
    /// Every id it has had, the current one last.
    pub fn all_ids(&self) -> Vec<Id> {
        let mut ids = self.prev.clone();
        ids.push(self.id());
        ids
    }
    /// Remembers the current id before a rename.
    pub(super) fn store_prev(&mut self) {
        let mut id = self.id();
        id.namespace = id.effective_namespace().to_string();
        self.prev.push(id);
    }
    pub(super) fn set_name(&mut self, name: &str) {
        self.object["metadata"]["name"] = Value::String(name.to_string());
    }
    /// Labels or annotations as a map (empty when there are none).
    pub fn meta_map(&self, field: &str) -> serde_json::Map<String, Value> {
        self.object["metadata"][field]
            .as_object()
            .cloned()
            .unwrap_or_default()
    }
}
