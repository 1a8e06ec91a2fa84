//! The typed client: `Api<K>` reads and writes objects of one kind as Rust types (`Api<Pod>`, `Api<Deployment>`),
//! the way kube-rs' `Api` does. The kind's path comes from its [`Resource`] implementation, so a component never
//! spells a group, version or plural. Raw JSON requests stay on [`Client`] for what is genuinely generic.

use std::marker::PhantomData;

use serde::Serialize;
use serde_json::Value;

use super::{resource_path, typed, Client, Error, Result};
use crate::api::Resource;

/// A patch, by the content type the API server reads it with.
#[derive(Clone, Debug)]
pub enum Patch<T: Serialize> {
    /// `application/merge-patch+json` (RFC 7386).
    Merge(T),
    /// `application/strategic-merge-patch+json`: lists merge by their keys (conditions by `type`, ...).
    Strategic(T),
    /// `application/json-patch+json` (RFC 6902): a list of operations.
    Json(T),
}

impl<T: Serialize> Patch<T> {
    fn content_type(&self) -> &'static str {
        match self {
            Patch::Merge(_) => "application/merge-patch+json",
            Patch::Strategic(_) => "application/strategic-merge-patch+json",
            Patch::Json(_) => "application/json-patch+json",
        }
    }
    fn body(&self) -> Result<Vec<u8>> {
        let (Patch::Merge(b) | Patch::Strategic(b) | Patch::Json(b)) = self;
        serde_json::to_vec(b).map_err(|e| Error::Decode(e.to_string()))
    }
}

/// Objects of kind `K`, in one namespace or (for cluster-scoped kinds and cluster-wide lists) in all.
pub struct Api<K> {
    client: Client,
    namespace: Option<String>,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Api {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            kind: PhantomData,
        }
    }
}

impl<K: Resource> Api<K> {
    /// Objects in namespace `ns` (for a cluster-scoped kind the namespace is ignored).
    pub fn namespaced(client: &Client, ns: &str) -> Self {
        Api {
            client: client.clone(),
            namespace: Some(ns.to_string()),
            kind: PhantomData,
        }
    }

    /// Objects in every namespace (lists), or of a cluster-scoped kind.
    pub fn all(client: &Client) -> Self {
        Api {
            client: client.clone(),
            namespace: None,
            kind: PhantomData,
        }
    }

    /// The same kind in the namespace of `obj` (which may be of another kind: a controller writing what an object
    /// owns).
    pub fn beside(client: &Client, obj: &impl Resource) -> Self {
        Self::namespaced(client, obj.meta().namespace())
    }

    fn ns(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    fn path(&self, name: Option<&str>) -> String {
        resource_path(K::info(), self.ns(), name)
    }

    pub async fn get(&self, name: &str) -> Result<K> {
        typed(self.client.get(K::info(), self.ns(), name).await?)
    }

    /// Like [`get`](Self::get), with 404 as `None`.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>> {
        match self.get(name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists objects; `query` is a query string without `?` (`labelSelector=app%3Dweb`, or empty).
    pub async fn list(&self, query: &str) -> Result<Vec<K>> {
        let mut list = self.client.list(K::info(), self.ns(), query).await?;
        match list["items"].take() {
            Value::Array(items) => items.into_iter().map(typed).collect(),
            _ => Ok(Vec::new()),
        }
    }

    /// Creates `obj` (in its own namespace when this `Api` spans all namespaces).
    pub async fn create(&self, obj: &K) -> Result<K> {
        let ns = self.ns().or(obj.meta().namespace.as_deref());
        let body = serde_json::to_value(obj).map_err(|e| Error::Decode(e.to_string()))?;
        typed(self.client.create(K::info(), ns, &body).await?)
    }

    /// Replaces the object (an update guarded by the `resourceVersion` it carries).
    pub async fn replace(&self, name: &str, obj: &K) -> Result<K> {
        let ns = self.ns().or(obj.meta().namespace.as_deref());
        let body = serde_json::to_value(obj).map_err(|e| Error::Decode(e.to_string()))?;
        typed(self.client.replace(K::info(), ns, name, &body).await?)
    }

    pub async fn patch<P: Serialize>(&self, name: &str, patch: &Patch<P>) -> Result<K> {
        self.patch_at(&self.path(Some(name)), patch).await
    }

    /// Patches the `status` subresource; `patch` is the whole patch (`{"status": {...}}`).
    pub async fn patch_status<P: Serialize>(&self, name: &str, patch: &Patch<P>) -> Result<K> {
        self.patch_at(&format!("{}/status", self.path(Some(name))), patch)
            .await
    }

    async fn patch_at<P: Serialize>(&self, path: &str, patch: &Patch<P>) -> Result<K> {
        let body = patch.body()?;
        typed(
            self.client
                .request(
                    reqwest::Method::PATCH,
                    path,
                    Some((patch.content_type(), body)),
                    None,
                )
                .await?,
        )
    }

    /// Server-side apply of `obj` (a whole object or the fields this manager owns) as `manager`.
    pub async fn apply(
        &self,
        name: &str,
        obj: &impl Serialize,
        manager: &str,
        force: bool,
    ) -> Result<K> {
        let body = serde_json::to_value(obj).map_err(|e| Error::Decode(e.to_string()))?;
        typed(
            self.client
                .apply(K::info(), self.ns(), name, &body, manager, force)
                .await?,
        )
    }

    /// Deletes with a propagation policy (`Background`, `Foreground`, `Orphan`); a missing object is an error
    /// (404).
    pub async fn delete(&self, name: &str, propagation: &str) -> Result<()> {
        self.client
            .delete(K::info(), self.ns(), name, propagation)
            .await
            .map(drop)
    }

    /// Deletes with explicit DeleteOptions (grace period, preconditions).
    pub async fn delete_with(&self, name: &str, options: &Value) -> Result<()> {
        self.client
            .delete_with(K::info(), self.ns(), name, options)
            .await
            .map(drop)
    }

    /// Deletes `names` (background propagation); ones already gone are not an error. Returns the names it deleted.
    pub async fn delete_all(&self, names: &[String]) -> Result<Vec<String>> {
        let mut done = Vec::new();
        for n in names {
            match self.delete(n, "Background").await {
                Ok(()) => done.push(n.clone()),
                Err(e) if e.code() == Some(404) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::apps::Deployment;
    use crate::api::core::{Node, Pod};

    fn client() -> Client {
        Client::new("https://127.0.0.1:1", "t", None).unwrap()
    }

    #[test]
    fn paths_come_from_the_type() {
        assert_eq!(
            Api::<Pod>::namespaced(&client(), "demo").path(Some("a")),
            "/api/v1/namespaces/demo/pods/a"
        );
        assert_eq!(
            Api::<Deployment>::all(&client()).path(None),
            "/apis/apps/v1/deployments"
        );
        // A cluster-scoped kind ignores the namespace.
        assert_eq!(
            Api::<Node>::namespaced(&client(), "demo").path(Some("n1")),
            "/api/v1/nodes/n1"
        );
    }

    #[test]
    fn patches_carry_their_content_type() {
        let p = Patch::Merge(serde_json::json!({"a": 1}));
        assert_eq!(p.content_type(), "application/merge-patch+json");
        assert_eq!(p.body().unwrap(), br#"{"a":1}"#);
        assert_eq!(
            Patch::Strategic(()).content_type(),
            "application/strategic-merge-patch+json"
        );
        assert_eq!(
            Patch::Json(()).content_type(),
            "application/json-patch+json"
        );
    }
}
