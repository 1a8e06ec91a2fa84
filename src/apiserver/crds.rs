//! What kube-apiserver's apiextensions part does, in the API server: it follows the stored CustomResourceDefinitions
//! (a list, then a watch), checks each one's names against the kinds already served in its group, serves the
//! accepted ones through the kind registry (discovery, routing, OpenAPI and tables follow from there) and writes
//! their status (`NamesAccepted`, `Established`, `acceptedNames`, `storedVersions`). A CRD being deleted keeps
//! serving until its custom objects are gone - deleted through the normal path, so their finalizers hold - and then
//! loses its `customresourcecleanup` finalizer and goes. Every server of a cluster does this for itself, so each
//! serves every CRD within milliseconds of its write; the status they write is the same.

use serde_json::{json, Value};

use super::error::{ApiError, Result};
use super::handlers::{key, Query, Target, WriteOpts};
use super::Server;
use crate::api::crd::{self, CustomResourceDefinition};
use crate::api::meta::{format_time, now};
use crate::api::registry::{self, KindInfo};
use crate::api::validation::FieldError;

/// The field manager of the status the API server writes.
const MANAGER: &str = "kube-apiserver";

fn crd_kind() -> &'static KindInfo {
    registry::by_resource("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .expect("the CRD kind is served")
}

/// A custom object's schema validation and CEL rules (`old`: the stored object, for transition rules).
pub fn validate(kind: &KindInfo, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    match registry::custom(kind)
        .as_ref()
        .and_then(|c| c.schema.as_ref())
    {
        Some(schema) => schema.validate(obj, old),
        None => Vec::new(),
    }
}

/// A custom object as a client of `kind`'s version reads it: the schema's defaults applied (defaults also apply on
/// read from storage) and `apiVersion` the requested version (conversion `None`).
pub fn present(kind: &KindInfo, obj: &mut Value) {
    if !kind.is_custom() || !obj.is_object() {
        return;
    }
    if let Some(schema) = registry::custom(kind)
        .as_ref()
        .and_then(|c| c.schema.as_ref())
    {
        schema.default(obj);
    }
    obj["apiVersion"] = json!(kind.api_version());
}

/// The apiVersion custom objects of `kind` are stored with: the CRD's storage version.
pub fn storage_api_version(kind: &KindInfo) -> String {
    match registry::custom(kind) {
        Some(c) if !kind.group.is_empty() => format!("{}/{}", kind.group, c.storage_version),
        _ => kind.api_version(),
    }
}

/// The warning a deprecated version gets on every request.
pub fn deprecation(kind: &KindInfo) -> Option<String> {
    registry::custom(kind).and_then(|c| c.deprecation.clone())
}

/// Why a CRD's names cannot be accepted: another kind of its group already uses one.
fn conflict(c: &CustomResourceDefinition) -> Option<String> {
    let names = &c.spec.names;
    let mine: Vec<String> = std::iter::once(names.plural.clone())
        .chain(names.singular.clone())
        .chain(names.short_names.clone().unwrap_or_default())
        .collect();
    for k in registry::all()
        .into_iter()
        .filter(|k| k.group == c.spec.group)
    {
        if registry::custom(k).is_some_and(|cv| cv.crd == c.metadata.name()) {
            continue;
        }
        if let Some(n) = mine.iter().find(|n| {
            k.plural == n.as_str()
                || k.singular == n.as_str()
                || k.short_names.contains(&n.as_str())
        }) {
            return Some(format!("{n:?} is already in use"));
        }
        if k.kind == names.kind {
            return Some(format!("{:?} is already in use", names.kind));
        }
    }
    None
}

/// `KubernetesAPIApprovalPolicyConformant` for CRDs of protected groups (`*.k8s.io`, `*.kubernetes.io`).
fn approval_condition(stored: &Value, status: &mut Value, now: &str) {
    if let Some(approved) = crd::api_approval(stored) {
        let (reason, message) = if approved {
            (
                "ApprovedAnnotation",
                "approved in annotation api-approved.kubernetes.io".to_string(),
            )
        } else {
            let ann = stored
                .pointer("/metadata/annotations/api-approved.kubernetes.io")
                .and_then(Value::as_str)
                .unwrap_or("");
            if ann.is_empty() {
                ("MissingAnnotation", "protected groups must have approval annotation \"api-approved.kubernetes.io\", see https://github.com/kubernetes/enhancements/pull/1111".to_string())
            } else {
                ("UnapprovedAnnotation", format!("not approved: {ann:?}"))
            }
        };
        crd::set_condition(
            status,
            "KubernetesAPIApprovalPolicyConformant",
            approved,
            reason,
            &message,
            now,
        );
    }
}

/// The status a CRD should have now.
fn status_of(
    c: &CustomResourceDefinition,
    stored: &Value,
    accepted: Result<(), String>,
    now: &str,
) -> Value {
    let mut status = stored.get("status").cloned().unwrap_or(json!({}));
    match &accepted {
        Ok(()) => {
            crd::set_condition(
                &mut status,
                "NamesAccepted",
                true,
                "NoConflicts",
                "no conflicts found",
                now,
            );
            crd::set_condition(
                &mut status,
                "Established",
                true,
                "InitialNamesAccepted",
                "the initial names have been accepted",
                now,
            );
            let mut names = serde_json::to_value(&c.spec.names).unwrap_or(json!({}));
            if names.get("singular").is_none() {
                names["singular"] = json!(c.spec.names.kind.to_ascii_lowercase());
            }
            if names.get("listKind").is_none() {
                names["listKind"] = json!(format!("{}List", c.spec.names.kind));
            }
            status["acceptedNames"] = names;
        }
        Err(why) => {
            crd::set_condition(
                &mut status,
                "NamesAccepted",
                false,
                "MultipleNamesNotAllowed",
                why,
                now,
            );
            crd::set_condition(
                &mut status,
                "Established",
                false,
                "NotAccepted",
                "not all names are accepted",
                now,
            );
            if status.get("acceptedNames").is_none() {
                status["acceptedNames"] = json!({"plural": "", "kind": ""});
            }
        }
    }
    approval_condition(stored, &mut status, now);
    if c.metadata.deletion_timestamp.is_some() {
        crd::set_condition(
            &mut status,
            "Terminating",
            true,
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
            now,
        );
    }
    let mut versions: Vec<Value> = status["storedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(v) = c.spec.versions.iter().find(|v| v.storage) {
        if !versions.contains(&json!(v.name)) {
            versions.push(json!(v.name));
        }
    }
    status["storedVersions"] = json!(versions);
    status
}

impl Server {
    /// Reads every stored CRD and serves the accepted ones; returns the revision read at, to watch from. Called before
    /// the server takes requests, so custom kinds are served from its first request.
    pub async fn load_crds(&self) -> Result<i64> {
        let prefix = key(crd_kind(), None, None);
        let listed = self.store.list(&prefix, 0, None, 0).await?;
        for kv in &listed.kvs {
            let v = super::handlers::decode(kv);
            self.crd_changed(v, kv.mod_revision).await;
        }
        Ok(listed.revision)
    }

    /// Keeps the served custom kinds following the stored CRDs, from `revision` on (a fresh list after any
    /// interruption).
    pub async fn follow_crds(self, mut revision: i64) {
        use futures::StreamExt;
        let prefix = key(crd_kind(), None, None);
        loop {
            match self.store.watch(&prefix, revision).await {
                Ok(mut events) => {
                    while let Some(Ok(ev)) = events.next().await {
                        let name = ev.kv.key.rsplit('/').next().unwrap_or("").to_string();
                        match ev.kind {
                            crate::store::EventType::Put => {
                                let v = super::handlers::decode(&ev.kv);
                                self.crd_changed(v, ev.kv.mod_revision).await;
                            }
                            crate::store::EventType::Delete => registry::remove_custom(&name),
                        }
                    }
                }
                Err(e) => tracing::debug!("watching CRDs: {e}"),
            }
            if *self.stopping.borrow() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            revision = match self.load_crds().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!("listing CRDs: {e}");
                    continue;
                }
            };
        }
    }

    /// One CRD written: serve it (or not), write its status, and clean up after a deletion.
    async fn crd_changed(&self, stored: Value, rev: i64) {
        let name = stored
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let c: CustomResourceDefinition = match serde_json::from_value(stored.clone()) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(crd = %name, "a stored CRD cannot be read: {e}");
                return;
            }
        };
        let accepted = match conflict(&c) {
            Some(why) => Err(why),
            None => match c.served() {
                Ok(served) => {
                    registry::set_custom(&name, served);
                    Ok(())
                }
                Err(errs) => Err(errs
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")),
            },
        };
        if accepted.is_err() {
            registry::remove_custom(&name);
        }
        let status = status_of(&c, &stored, accepted, &format_time(&now()));
        if stored.get("status") != Some(&status) {
            let mut next = stored.clone();
            next["status"] = status;
            let opts = WriteOpts {
                dry_run: false,
                validation: "Ignore".into(),
                manager: MANAGER.into(),
                subresource: "status".into(),
            };
            if let Err(e) = self
                .write(
                    crd_kind(),
                    None,
                    next,
                    Some((&stored, rev)),
                    &opts,
                    &mut Vec::new(),
                )
                .await
            {
                tracing::debug!(crd = %name, "writing CRD status: {}", e.message);
            }
            // The status write comes back as a watch event; the rest happens then.
            return;
        }
        if c.metadata.deletion_timestamp.is_some() {
            let server = self.clone();
            tokio::spawn(async move {
                if let Err(e) = server.clean_up_crd(&name).await {
                    tracing::debug!(crd = %name, "cleaning up: {}", e.message);
                }
            });
        }
    }

    /// Deletes a CRD's custom objects; once none is left, removes the CRD's cleanup finalizer (which ends it).
    async fn clean_up_crd(&self, name: &str) -> Result<()> {
        let Some(kind) = registry::all().into_iter().find(|k| {
            registry::custom(k).is_some_and(|c| c.crd == name && c.storage_version == k.version)
        }) else {
            return self.drop_cleanup_finalizer(name).await;
        };
        loop {
            let (items, _, _, _) = self.list_objects(kind, None, &Query::new()).await?;
            if items.is_empty() {
                break;
            }
            for item in &items {
                let t = Target {
                    kind,
                    namespace: item
                        .pointer("/metadata/namespace")
                        .and_then(Value::as_str)
                        .map(String::from),
                    name: item
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .map(String::from),
                    sub: None,
                };
                if item.pointer("/metadata/deletionTimestamp").is_none() {
                    if let Err(e) = self.delete(&t, b"", &Query::new()).await {
                        if e.code != 404 {
                            tracing::debug!("deleting {:?}: {}", t.name, e.message);
                        }
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            // Still being deleted? (Another server may have finished it.)
            if self.get_object(crd_kind(), None, name).await.is_err() {
                return Ok(());
            }
        }
        self.drop_cleanup_finalizer(name).await
    }

    async fn drop_cleanup_finalizer(&self, name: &str) -> Result<()> {
        let (current, rev) = self.get_object(crd_kind(), None, name).await?;
        let mut next = current.clone();
        let Some(list) = next
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        else {
            return Ok(());
        };
        list.retain(|f| f != crd::CLEANUP_FINALIZER);
        let opts = WriteOpts {
            dry_run: false,
            validation: "Ignore".into(),
            manager: MANAGER.into(),
            subresource: String::new(),
        };
        self.write(
            crd_kind(),
            None,
            next,
            Some((&current, rev)),
            &opts,
            &mut Vec::new(),
        )
        .await
        .map(|_| ())
        .or_else(|e: ApiError| if e.code == 404 { Ok(()) } else { Err(e) })
    }
}
