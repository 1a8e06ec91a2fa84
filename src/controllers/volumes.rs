//! The persistent volume controller: binds each PersistentVolumeClaim to a PersistentVolume - the one it names, or
//! the smallest Available volume of its StorageClass whose capacity and access modes cover the request - and, when
//! none fits and the class is Capstan's `local-path` (the default class, like k3s's local-path-provisioner),
//! provisions one: a directory per claim under the storage directory, served as a `hostPath` volume. A claim without
//! `storageClassName` gets the default class; `""` means static volumes only. When a claim goes away its volume is
//! Released; with reclaim policy Delete the volume (and a provisioned directory) is deleted, with Retain it stays.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::parse_quantity_millis;
use crate::api::registry;
use crate::client::informer::Cache;
use crate::client::Client;
use crate::runtime::Action;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Client(#[from] crate::client::Error),
    #[error("provisioning {0}: {1}")]
    Provision(PathBuf, std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The provisioner name of Capstan's built-in class.
pub const LOCAL_PATH: &str = "capstan.io/local-path";
/// The annotation marking the default StorageClass.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

pub struct Context {
    pub client: Client,
    pub volumes: Cache,
    pub classes: Cache,
    pub claims: Cache,
    /// Where `local-path` volumes live (one directory per claim).
    pub storage: PathBuf,
}

fn s<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn bytes(v: &Value) -> i128 {
    v.as_str().and_then(parse_quantity_millis).unwrap_or(0) / 1000
}

fn modes(v: &Value, pointer: &str) -> Vec<String> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(String::from))
        .collect()
}

/// The class a claim asks for: its own, or the default class when it names none (`""` names none on purpose).
fn class_of(claim: &Value, classes: &Cache) -> String {
    match claim["spec"]["storageClassName"].as_str() {
        Some(c) => c.to_string(),
        None => classes
            .list()
            .iter()
            .find(|c| {
                s(
                    c,
                    &format!("/metadata/annotations/{}", DEFAULT_CLASS.replace('/', "~1")),
                ) == "true"
            })
            .map(|c| s(c, "/metadata/name").to_string())
            .unwrap_or_default(),
    }
}

/// Whether a volume can serve a claim.
pub fn fits(pv: &Value, claim: &Value, class: &str) -> bool {
    let want = bytes(&claim["spec"]["resources"]["requests"]["storage"]);
    let have = bytes(&pv["spec"]["capacity"]["storage"]);
    let pv_modes = modes(pv, "/spec/accessModes");
    s(pv, "/spec/storageClassName") == class
        && have >= want
        && modes(claim, "/spec/accessModes")
            .iter()
            .all(|m| pv_modes.contains(m))
}

/// One reconcile of one claim.
pub async fn reconcile(claim: Arc<Value>, ctx: Arc<Context>) -> Result<Action> {
    let ns = s(&claim, "/metadata/namespace").to_string();
    let name = s(&claim, "/metadata/name").to_string();
    let uid = s(&claim, "/metadata/uid").to_string();
    let pv_kind = registry::lookup("persistentvolumes").expect("pv kind");
    let pvc_kind = registry::lookup("persistentvolumeclaims").expect("pvc kind");
    if claim["metadata"]["deletionTimestamp"].is_string() || s(&claim, "/status/phase") == "Bound" {
        return Ok(Action::await_change());
    }
    let class = class_of(&claim, &ctx.classes);
    let me = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": ns, "uid": uid}});
    // The volume: named by the claim, already reserved for it, or the smallest that fits.
    let wanted = claim["spec"]["volumeName"]
        .as_str()
        .filter(|v| !v.is_empty());
    let mut candidates: Vec<Arc<Value>> = ctx
        .volumes
        .list()
        .into_iter()
        .filter(|pv| {
            let reserved = s(pv, "/spec/claimRef/uid") == uid
                || (s(pv, "/spec/claimRef/name") == name
                    && s(pv, "/spec/claimRef/namespace") == ns);
            match wanted {
                Some(w) => s(pv, "/metadata/name") == w,
                None => {
                    reserved
                        || pv["spec"]["claimRef"].is_null()
                            && s(pv, "/status/phase") != "Released"
                            && fits(pv, &claim, &class)
                }
            }
        })
        .collect();
    candidates.sort_by_key(|pv| bytes(&pv["spec"]["capacity"]["storage"]));
    let pv = match candidates.into_iter().next() {
        Some(pv) => pv.as_ref().clone(),
        None => {
            let provisioner = ctx
                .classes
                .get("", &class)
                .map(|c| s(&c, "/provisioner").to_string())
                .unwrap_or_default();
            if wanted.is_some() || provisioner != LOCAL_PATH {
                crate::client::events::spawn_record(
                    &ctx.client,
                    me,
                    "persistentvolume-controller",
                    "Normal",
                    "FailedBinding",
                    if class.is_empty() {
                        "no persistent volumes available for this claim and no storage class is set"
                            .to_string()
                    } else {
                        format!("no persistent volumes available for this claim and storage class \"{class}\" provisions none here")
                    },
                );
                return Ok(Action::await_change());
            }
            let dir = ctx.storage.join(format!("pvc-{uid}"));
            std::fs::create_dir_all(&dir).map_err(|e| Error::Provision(dir.clone(), e))?;
            let reclaim = ctx
                .classes
                .get("", &class)
                .and_then(|c| c["reclaimPolicy"].as_str().map(String::from))
                .unwrap_or_else(|| "Delete".into());
            let pv = json!({"apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": format!("pvc-{uid}"), "annotations": {PROVISIONED_BY: LOCAL_PATH}},
                "spec": {"capacity": {"storage": claim["spec"]["resources"]["requests"]["storage"]},
                    "accessModes": claim["spec"]["accessModes"], "storageClassName": class,
                    "persistentVolumeReclaimPolicy": reclaim, "hostPath": {"path": dir.display().to_string()},
                    "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid}}});
            let made = match ctx.client.create(pv_kind, None, &pv).await {
                Ok(v) => v,
                Err(e) if e.code() == Some(409) => {
                    ctx.client
                        .get(pv_kind, None, s(&pv, "/metadata/name"))
                        .await?
                }
                Err(e) => return Err(e.into()),
            };
            crate::client::events::spawn_record(
                &ctx.client,
                me.clone(),
                "persistentvolume-controller",
                "Normal",
                "ProvisioningSucceeded",
                format!(
                    "Successfully provisioned volume {} using {LOCAL_PATH}",
                    s(&made, "/metadata/name")
                ),
            );
            made
        }
    };
    // Bind both ways: the volume's claimRef and phase, then the claim's volumeName and status.
    let pv_name = s(&pv, "/metadata/name").to_string();
    if s(&pv, "/spec/claimRef/uid") != uid {
        ctx.client
            .patch(pv_kind, None, &pv_name, "application/merge-patch+json",
                &json!({"metadata": {"resourceVersion": pv["metadata"]["resourceVersion"]},
                    "spec": {"claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid}}}))
            .await?;
    }
    ctx.client
        .patch_status(pv_kind, None, &pv_name, &json!({"phase": "Bound"}))
        .await?;
    if s(&claim, "/spec/volumeName") != pv_name {
        let mut patch = json!({"spec": {"volumeName": pv_name}});
        if claim["spec"]["storageClassName"].is_null() && !class.is_empty() {
            patch["spec"]["storageClassName"] = json!(class);
        }
        ctx.client
            .patch(
                pvc_kind,
                Some(&ns),
                &name,
                "application/merge-patch+json",
                &patch,
            )
            .await?;
    }
    ctx.client
        .patch_status(
            pvc_kind,
            Some(&ns),
            &name,
            &json!({"phase": "Bound",
            "accessModes": pv["spec"]["accessModes"], "capacity": pv["spec"]["capacity"]}),
        )
        .await?;
    Ok(Action::await_change())
}

/// One reconcile of one volume: Available when free, Released when its claim is gone, then reclaimed.
pub async fn reconcile_volume(pv: Arc<Value>, ctx: Arc<Context>) -> Result<Action> {
    let name = s(&pv, "/metadata/name").to_string();
    let pv_kind = registry::lookup("persistentvolumes").expect("pv kind");
    if pv["metadata"]["deletionTimestamp"].is_string() {
        return Ok(Action::await_change());
    }
    let claim_ref = &pv["spec"]["claimRef"];
    let phase = s(&pv, "/status/phase");
    if claim_ref.is_null() {
        if phase != "Available" {
            ctx.client
                .patch_status(pv_kind, None, &name, &json!({"phase": "Available"}))
                .await?;
        }
        return Ok(Action::await_change());
    }
    let claim = ctx
        .claims
        .get(s(claim_ref, "/namespace"), s(claim_ref, "/name"));
    let gone = match &claim {
        None => true,
        Some(c) => {
            !s(claim_ref, "/uid").is_empty() && s(c, "/metadata/uid") != s(claim_ref, "/uid")
        }
    };
    if !gone {
        return Ok(Action::await_change());
    }
    // Only after the claim is truly gone (the cache could be behind): ask the server.
    if let Ok(c) = ctx
        .client
        .get(
            registry::lookup("persistentvolumeclaims").expect("pvc kind"),
            Some(s(claim_ref, "/namespace")),
            s(claim_ref, "/name"),
        )
        .await
    {
        if s(&c, "/metadata/uid") == s(claim_ref, "/uid") {
            return Ok(Action::await_change());
        }
    }
    match s(&pv, "/spec/persistentVolumeReclaimPolicy") {
        "Delete" => {
            if s(
                &pv,
                &format!(
                    "/metadata/annotations/{}",
                    PROVISIONED_BY.replace('/', "~1")
                ),
            ) == LOCAL_PATH
            {
                let path = PathBuf::from(s(&pv, "/spec/hostPath/path"));
                if path.starts_with(&ctx.storage) {
                    let _ = std::fs::remove_dir_all(&path);
                }
            }
            crate::client::Api::<crate::api::core::PersistentVolume>::all(&ctx.client)
                .delete_all(std::slice::from_ref(&name))
                .await?;
            tracing::info!(volume = %name, "claim gone: volume deleted (reclaim policy Delete)");
        }
        _ => {
            if phase != "Released" {
                ctx.client
                    .patch_status(pv_kind, None, &name, &json!({"phase": "Released"}))
                    .await?;
            }
        }
    }
    Ok(Action::await_change())
}

/// Maps a volume to the claim it is reserved for (so binding continues when the volume changes).
pub fn claim_mapper() -> crate::runtime::controller::Mapper {
    Arc::new(|pv: &Value| {
        let ns = s(pv, "/spec/claimRef/namespace");
        let name = s(pv, "/spec/claimRef/name");
        if name.is_empty() {
            Vec::new()
        } else {
            vec![format!("{ns}/{name}")]
        }
    })
}

/// Maps a claim to the volume reserved for it (so a deleted claim releases its volume).
pub fn volume_mapper(volumes: Cache) -> crate::runtime::controller::Mapper {
    Arc::new(move |claim: &Value| {
        let (ns, name) = (s(claim, "/metadata/namespace"), s(claim, "/metadata/name"));
        volumes
            .list()
            .iter()
            .filter(|pv| {
                s(pv, "/spec/claimRef/namespace") == ns && s(pv, "/spec/claimRef/name") == name
            })
            .map(|pv| format!("/{}", s(pv, "/metadata/name")))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_fits_by_class_size_and_modes() {
        let pv = json!({"spec": {"storageClassName": "fast", "capacity": {"storage": "2Gi"},
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany"]}});
        let claim = |size: &str, mode: &str| json!({"spec": {"resources": {"requests": {"storage": size}}, "accessModes": [mode]}});
        assert!(fits(&pv, &claim("1Gi", "ReadWriteOnce"), "fast"));
        assert!(fits(&pv, &claim("2048Mi", "ReadOnlyMany"), "fast"));
        assert!(!fits(&pv, &claim("3Gi", "ReadWriteOnce"), "fast"));
        assert!(!fits(&pv, &claim("1Gi", "ReadWriteMany"), "fast"));
        assert!(!fits(&pv, &claim("1Gi", "ReadWriteOnce"), "slow"));
        let classes = Cache::of([json!({"metadata": {"name": "local-path",
            "annotations": {DEFAULT_CLASS: "true"}}, "provisioner": LOCAL_PATH})]);
        assert_eq!(class_of(&json!({"spec": {}}), &classes), "local-path");
        assert_eq!(
            class_of(&json!({"spec": {"storageClassName": ""}}), &classes),
            ""
        );
    }
}
