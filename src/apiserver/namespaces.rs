//! What the API server itself does for Namespaces (as kube-apiserver does): a Namespace being deleted stays, in
//! phase Terminating, until its `spec.finalizers` are empty - the namespace controller empties it and then removes
//! the `kubernetes` finalizer through the `namespaces/{name}/finalize` subresource, and that write removes it. The
//! emptying itself is the controller's work (`controllers::namespace`), never the API server's.

use serde_json::{json, Value};

use super::error::{ApiError, Result};
use super::handlers::{Query, Target};
use super::Server;

pub use crate::api::core::NAMESPACE_FINALIZER as FINALIZER;

/// Whether a Namespace being deleted has nothing left holding it (metadata and spec finalizers both empty).
pub fn finalized(ns: &Value) -> bool {
    let empty = |v: &Value| v.as_array().is_none_or(|a| a.is_empty());
    empty(&ns["metadata"]["finalizers"]) && empty(&ns["spec"]["finalizers"])
}

impl Server {
    /// `PUT namespaces/{name}/finalize`: replaces the Namespace's `spec.finalizers` and nothing else; a terminating
    /// Namespace left with no finalizer is removed by that write.
    pub async fn finalize_namespace(
        &self,
        t: &Target,
        body: Value,
        q: &Query,
        warnings: &mut Vec<String>,
    ) -> Result<Value> {
        let name = t.name.as_deref().unwrap_or("");
        let (mut current, _) = self.get_object(t.kind, None, name).await?;
        let finalizers = match &body["spec"]["finalizers"] {
            Value::Null => json!([]),
            f @ Value::Array(_) => f.clone(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "spec.finalizers must be a list of strings, got {other}"
                )))
            }
        };
        if !current["spec"].is_object() {
            current["spec"] = json!({});
        }
        current["spec"]["finalizers"] = finalizers;
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str() {
            current["metadata"]["resourceVersion"] = json!(rv);
        }
        let plain = Target {
            sub: None,
            ..t.clone()
        };
        self.update(&plain, current, q, warnings).await
    }
}
