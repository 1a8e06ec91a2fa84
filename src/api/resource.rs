//! The typed face of the object model: [`Resource`] ties a Rust type to its kind in the registry (group, version,
//! plural, scope), so clients, informers and controllers name kinds by type - a typo fails to compile instead of
//! yielding an empty string at run time. [`Object`] is what a cache needs of anything it holds: typed objects, or
//! `serde_json::Value` where a component is genuinely generic (garbage collection, apply of arbitrary manifests).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::meta::{ObjectMeta, OwnerReference};
use super::registry::KindInfo;

/// A kind with a Rust type. Implemented for every kind of [`super::registry::KINDS`] by the table itself.
pub trait Resource:
    Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static
{
    /// The kind's entry in the registry.
    fn info() -> &'static KindInfo;
    fn meta(&self) -> &ObjectMeta;
    fn meta_mut(&mut self) -> &mut ObjectMeta;

    /// `apiVersion` (`apps/v1`) of this kind.
    fn api_version() -> String {
        Self::info().api_version()
    }

    /// The owner reference that makes this object the controller of another one.
    fn controller_ref(&self) -> OwnerReference {
        let info = Self::info();
        OwnerReference {
            api_version: info.api_version(),
            kind: info.kind.to_string(),
            name: self.meta().name().to_string(),
            uid: self.meta().uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
}

/// What a cache needs of the objects it holds: their identity, version and owners, read without knowing the kind.
pub trait Object: DeserializeOwned + Send + Sync + 'static {
    fn namespace(&self) -> &str;
    fn name(&self) -> &str;
    fn resource_version(&self) -> Option<&str>;
    /// The `kind` and `name` of the ownerReference marked `controller: true`.
    fn controller_owner(&self) -> Option<(&str, &str)>;
    /// Labels (empty when there are none).
    fn label_map(&self) -> BTreeMap<String, String>;
    /// The object's metadata: borrowed from a typed object, decoded from JSON.
    fn object_meta(&self) -> Cow<'_, ObjectMeta>;
    /// Turns a list item or watch event into a cached object; `kind` fills in what list items leave out.
    fn decode(v: Value, kind: &KindInfo) -> Result<Self, serde_json::Error>;
    /// Turns a watch event's object, as the JSON text it came in, into a cached object without managedFields
    /// (nothing a cache reads; often half of the bytes).
    fn decode_json(text: &str, kind: &KindInfo) -> Result<Self, serde_json::Error> {
        let mut v: Value = serde_json::from_str(text)?;
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
        Self::decode(v, kind)
    }

    /// `namespace/name` (`/name` for cluster-scoped objects): the key of caches and work queues.
    fn key(&self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }
}

impl<K: Resource> Object for K {
    fn namespace(&self) -> &str {
        self.meta().namespace()
    }
    fn name(&self) -> &str {
        self.meta().name()
    }
    fn resource_version(&self) -> Option<&str> {
        self.meta().resource_version.as_deref()
    }
    fn controller_owner(&self) -> Option<(&str, &str)> {
        self.meta()
            .controller()
            .map(|o| (o.kind.as_str(), o.name.as_str()))
    }
    fn label_map(&self) -> BTreeMap<String, String> {
        self.meta().labels()
    }
    fn object_meta(&self) -> Cow<'_, ObjectMeta> {
        Cow::Borrowed(self.meta())
    }
    fn decode(v: Value, _kind: &KindInfo) -> Result<Self, serde_json::Error> {
        serde_json::from_value(v)
    }
    fn decode_json(text: &str, _kind: &KindInfo) -> Result<Self, serde_json::Error> {
        let mut k: K = serde_json::from_str(text)?;
        k.meta_mut().managed_fields = None;
        // Lists decoded from text grow as their items come (a one-container pod holds room for four containers):
        // pods, the many, are trimmed in place; a clone of anything else allocates each list at its length.
        match (&mut k as &mut dyn std::any::Any).downcast_mut::<super::core::Pod>() {
            Some(pod) => {
                super::shrink::Shrink::shrink(pod);
                Ok(k)
            }
            None => Ok(k.clone()),
        }
    }
}

impl Object for Value {
    fn namespace(&self) -> &str {
        self["metadata"]["namespace"].as_str().unwrap_or("")
    }
    fn name(&self) -> &str {
        self["metadata"]["name"].as_str().unwrap_or("")
    }
    fn resource_version(&self) -> Option<&str> {
        self["metadata"]["resourceVersion"].as_str()
    }
    fn controller_owner(&self) -> Option<(&str, &str)> {
        self["metadata"]["ownerReferences"]
            .as_array()?
            .iter()
            .find(|o| o["controller"] == true)
            .and_then(|o| Some((o["kind"].as_str()?, o["name"].as_str()?)))
    }
    fn label_map(&self) -> BTreeMap<String, String> {
        super::selector::labels_of(self)
    }
    fn object_meta(&self) -> Cow<'_, ObjectMeta> {
        Cow::Owned(ObjectMeta::deserialize(&self["metadata"]).unwrap_or_default())
    }
    fn decode(mut v: Value, kind: &KindInfo) -> Result<Self, serde_json::Error> {
        if v.is_object() {
            v["apiVersion"] = Value::String(kind.api_version());
            v["kind"] = Value::String(kind.kind.to_string());
        }
        Ok(v)
    }
}

/// An object kept only as its metadata: what a cache needs of kinds it never acts on (the garbage collector's view
/// of ConfigMaps, Secrets and custom kinds), a fraction of the memory of the whole object.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct MetaOnly {
    #[serde(default)]
    pub metadata: ObjectMeta,
}

impl Object for MetaOnly {
    fn namespace(&self) -> &str {
        self.metadata.namespace()
    }
    fn name(&self) -> &str {
        self.metadata.name()
    }
    fn resource_version(&self) -> Option<&str> {
        self.metadata.resource_version.as_deref()
    }
    fn controller_owner(&self) -> Option<(&str, &str)> {
        self.metadata
            .controller()
            .map(|o| (o.kind.as_str(), o.name.as_str()))
    }
    fn label_map(&self) -> BTreeMap<String, String> {
        self.metadata.labels()
    }
    fn object_meta(&self) -> Cow<'_, ObjectMeta> {
        Cow::Borrowed(&self.metadata)
    }
    fn decode(mut v: Value, _kind: &KindInfo) -> Result<Self, serde_json::Error> {
        Ok(MetaOnly {
            metadata: ObjectMeta::deserialize(v["metadata"].take())?,
        })
    }
    fn decode_json(text: &str, _kind: &KindInfo) -> Result<Self, serde_json::Error> {
        let mut m: MetaOnly = serde_json::from_str(text)?;
        m.metadata.managed_fields = None;
        Ok(m)
    }
}

/// Any cached object seen only through its metadata (what the garbage collector reads of every kind): an
/// object-safe view of [`Object`], so caches of different types can be handed around together.
pub trait HasMetadata: Send + Sync {
    fn metadata(&self) -> Cow<'_, ObjectMeta>;
}

impl<T: Object> HasMetadata for T {
    fn metadata(&self) -> Cow<'_, ObjectMeta> {
        self.object_meta()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::apps::Deployment;
    use crate::api::core::Pod;

    #[test]
    fn types_know_their_kind() {
        assert_eq!(Pod::info().plural, "pods");
        assert_eq!(Pod::api_version(), "v1");
        assert_eq!(Deployment::info().plural, "deployments");
        assert_eq!(Deployment::api_version(), "apps/v1");
        assert!(Deployment::info().namespaced);
    }

    #[test]
    fn typed_and_generic_objects_agree_on_identity() {
        let v = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "a", "namespace": "ns", "resourceVersion": "7", "labels": {"app": "x"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u",
                "controller": true}]}});
        let pod: Pod = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(Object::key(&pod), "ns/a");
        assert_eq!(Object::key(&v), "ns/a");
        assert_eq!(Object::resource_version(&pod), Some("7"));
        assert_eq!(Object::resource_version(&v), Some("7"));
        assert_eq!(pod.controller_owner(), Some(("ReplicaSet", "rs")));
        assert_eq!(v.controller_owner(), Some(("ReplicaSet", "rs")));
        assert_eq!(pod.label_map(), v.label_map());
    }

    #[test]
    fn objects_decoded_from_text_leave_managed_fields_out_and_match_those_decoded_from_values() {
        let v = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "a", "namespace": "ns", "resourceVersion": "7", "labels": {"app": "x"},
            "managedFields": [{"manager": "m", "operation": "Update", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {}}}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}});
        let text = v.to_string();
        let kind = Pod::info();
        let pod = Pod::decode_json(&text, kind).unwrap();
        assert!(pod.metadata.managed_fields.is_none());
        let mut bare = v.clone();
        bare["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        assert_eq!(pod, Pod::decode(bare.clone(), kind).unwrap());
        let meta = MetaOnly::decode_json(&text, kind).unwrap();
        assert!(meta.metadata.managed_fields.is_none());
        assert_eq!(meta.metadata, pod.metadata);
        assert_eq!(Value::decode_json(&text, kind).unwrap(), bare);
        assert!(Pod::decode_json("{\"spec\": 5}", kind).is_err());
    }

    #[test]
    fn controller_ref_names_the_owner() {
        let mut d = Deployment::default();
        d.metadata.name = Some("web".into());
        d.metadata.uid = Some("u1".into());
        let r = d.controller_ref();
        assert_eq!(
            (r.api_version.as_str(), r.kind.as_str(), r.name.as_str()),
            ("apps/v1", "Deployment", "web")
        );
        assert_eq!(r.controller, Some(true));
    }
}
