//! The persistent volume controller: binds each PersistentVolumeClaim to a PersistentVolume - the one it names, or
//! the smallest Available volume of its StorageClass whose capacity and access modes cover the request - and, when
//! none fits and the class is Capstan's `local-path` (the default class, like k3s's local-path-provisioner),
//! provisions one: a directory per claim under the storage directory, served as a `hostPath` volume. A claim without
//! `storageClassName` gets the default class; `""` means static volumes only. When a claim goes away its volume is
//! Released; with reclaim policy Delete the volume (and a provisioned directory) is deleted, with Retain it stays.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;

use crate::api::core::{
    HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec,
};
use crate::api::meta::ObjectMeta;
use crate::api::other::StorageClass;
use crate::api::Quantity;
use crate::client::events::Recorder;
use crate::client::informer::Cache;
use crate::client::{Api, Client, Patch};
use crate::runtime::Action;

use super::{Error, Result};

/// The provisioner name of Capstan's built-in class.
pub const LOCAL_PATH: &str = "capstan.io/local-path";
/// The annotation marking the default StorageClass.
pub const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

pub struct Context {
    pub client: Client,
    pub volumes: Cache<PersistentVolume>,
    pub classes: Cache<StorageClass>,
    pub claims: Cache<PersistentVolumeClaim>,
    /// Where `local-path` volumes live (one directory per claim).
    pub storage: PathBuf,
}

fn bytes(q: Option<&Quantity>) -> i128 {
    q.and_then(Quantity::millis).unwrap_or(0) / 1000
}

fn requested(claim: &PersistentVolumeClaim) -> Option<&Quantity> {
    claim
        .spec
        .as_ref()?
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("storage")
}

fn capacity(pv: &PersistentVolume) -> Option<&Quantity> {
    pv.spec.as_ref()?.capacity.as_ref()?.get("storage")
}

fn claim_ref(pv: &PersistentVolume) -> Option<&ObjectReference> {
    pv.spec.as_ref()?.claim_ref.as_ref()
}

fn pv_phase(pv: &PersistentVolume) -> &str {
    pv.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// The class a claim asks for: its own, or the default class when it names none (`""` names none on purpose).
fn class_of(claim: &PersistentVolumeClaim, classes: &Cache<StorageClass>) -> String {
    match claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
    {
        Some(c) => c.to_string(),
        None => classes
            .list()
            .iter()
            .find(|c| {
                c.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_CLASS))
                    .is_some_and(|v| v == "true")
            })
            .map(|c| c.metadata.name().to_string())
            .unwrap_or_default(),
    }
}

/// Whether a volume can serve a claim.
pub fn fits(pv: &PersistentVolume, claim: &PersistentVolumeClaim, class: &str) -> bool {
    let Some(spec) = pv.spec.as_ref() else {
        return false;
    };
    let pv_modes = spec.access_modes.clone().unwrap_or_default();
    let claim_modes = claim
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    spec.storage_class_name.as_deref().unwrap_or("") == class
        && bytes(capacity(pv)) >= bytes(requested(claim))
        && claim_modes.iter().all(|m| pv_modes.contains(m))
}

/// One reconcile of one claim.
pub async fn reconcile(claim: Arc<PersistentVolumeClaim>, ctx: Arc<Context>) -> Result<Action> {
    let bound = claim.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    if claim.metadata.deletion_timestamp.is_some() || bound {
        return Ok(Action::await_change());
    }
    let class = class_of(&claim, &ctx.classes);
    let pv = match matching_volume(&claim, &ctx, &class) {
        Some(pv) => pv.as_ref().clone(),
        None => match provision(&claim, &ctx, &class).await? {
            Some(pv) => pv,
            None => return Ok(Action::await_change()),
        },
    };
    bind(&claim, &pv, &ctx, &class).await?;
    Ok(Action::await_change())
}

/// The volume for a claim: the one it names, one already reserved for it, or the smallest free one that fits.
fn matching_volume(
    claim: &PersistentVolumeClaim,
    ctx: &Context,
    class: &str,
) -> Option<Arc<PersistentVolume>> {
    let ns = claim.metadata.namespace();
    let name = claim.metadata.name();
    let uid = claim.metadata.uid.as_deref().unwrap_or_default();
    let wanted = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|v| !v.is_empty());
    let class = class.to_string();
    ctx.volumes
        .list()
        .into_iter()
        .filter(|pv| {
            let r = claim_ref(pv);
            let reserved = r.is_some_and(|r| {
                r.uid.as_deref() == Some(uid)
                    || (r.name.as_deref() == Some(name) && r.namespace.as_deref() == Some(ns))
            });
            match wanted {
                Some(w) => pv.metadata.name() == w,
                None => {
                    reserved || r.is_none() && pv_phase(pv) != "Released" && fits(pv, claim, &class)
                }
            }
        })
        .min_by_key(|pv| bytes(capacity(pv)))
}

/// A new volume for the claim, when its class provisions with [`LOCAL_PATH`]: a directory under the storage root
/// and a PersistentVolume reserved for the claim. None (with a FailedBinding event) when nothing can be provisioned.
async fn provision(
    claim: &PersistentVolumeClaim,
    ctx: &Context,
    class: &str,
) -> Result<Option<PersistentVolume>> {
    let recorder = Recorder::new(&ctx.client, "persistentvolume-controller");
    let spec = claim.spec.clone().unwrap_or_default();
    let sc = ctx.classes.get("", class);
    let provisioner = sc.as_ref().map(|c| c.provisioner.as_str()).unwrap_or("");
    if spec.volume_name.as_deref().is_some_and(|v| !v.is_empty()) || provisioner != LOCAL_PATH {
        recorder.normal(
            claim,
            "FailedBinding",
            if class.is_empty() {
                "no persistent volumes available for this claim and no storage class is set"
                    .to_string()
            } else {
                format!("no persistent volumes available for this claim and storage class \"{class}\" provisions none here")
            },
        );
        return Ok(None);
    }
    let uid = claim.metadata.uid.as_deref().unwrap_or_default();
    let dir = ctx.storage.join(format!("pvc-{uid}"));
    std::fs::create_dir_all(&dir).map_err(|e| Error::Provision(dir.clone(), e))?;
    let reclaim = sc
        .and_then(|c| c.reclaim_policy.clone())
        .unwrap_or_else(|| "Delete".into());
    let pv = PersistentVolume {
        api_version: "v1".into(),
        kind: "PersistentVolume".into(),
        metadata: ObjectMeta {
            name: Some(format!("pvc-{uid}")),
            annotations: Some([(PROVISIONED_BY.to_string(), LOCAL_PATH.to_string())].into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: requested(claim).map(|q| [("storage".to_string(), q.clone())].into()),
            access_modes: spec.access_modes.clone(),
            storage_class_name: Some(class.to_string()),
            persistent_volume_reclaim_policy: Some(reclaim),
            host_path: Some(HostPathVolumeSource {
                path: dir.display().to_string(),
                type_: None,
            }),
            claim_ref: Some(reference_to(claim)),
            ..Default::default()
        }),
        status: None,
    };
    let pvs = Api::<PersistentVolume>::all(&ctx.client);
    let made = match pvs.create(&pv).await {
        Ok(v) => v,
        Err(e) if e.code() == Some(409) => pvs.get(pv.metadata.name()).await?,
        Err(e) => return Err(e.into()),
    };
    recorder.normal(
        claim,
        "ProvisioningSucceeded",
        format!(
            "Successfully provisioned volume {} using {LOCAL_PATH}",
            made.metadata.name()
        ),
    );
    Ok(Some(made))
}

/// Binds both ways: the volume's claimRef and phase, then the claim's volumeName and status.
async fn bind(
    claim: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    ctx: &Context,
    class: &str,
) -> Result<()> {
    let pvs = Api::<PersistentVolume>::all(&ctx.client);
    let claims = Api::<PersistentVolumeClaim>::namespaced(&ctx.client, claim.metadata.namespace());
    let name = claim.metadata.name();
    let uid = claim.metadata.uid.as_deref().unwrap_or_default();
    let spec = claim.spec.clone().unwrap_or_default();
    let pv_name = pv.metadata.name().to_string();
    if claim_ref(pv).and_then(|r| r.uid.as_deref()) != Some(uid) {
        let patch = json!({"metadata": {"resourceVersion": pv.metadata.resource_version},
            "spec": {"claimRef": reference_to(claim)}});
        pvs.patch(&pv_name, &Patch::Merge(patch)).await?;
    }
    pvs.patch_status(
        &pv_name,
        &Patch::Merge(json!({"status": {"phase": "Bound"}})),
    )
    .await?;
    if spec.volume_name.as_deref() != Some(pv_name.as_str()) {
        let mut patch = json!({"spec": {"volumeName": pv_name}});
        if spec.storage_class_name.is_none() && !class.is_empty() {
            patch["spec"]["storageClassName"] = json!(class);
        }
        claims.patch(name, &Patch::Merge(patch)).await?;
    }
    let pv_spec = pv.spec.clone().unwrap_or_default();
    let status = json!({"status": {"phase": "Bound", "accessModes": pv_spec.access_modes,
        "capacity": pv_spec.capacity}});
    claims.patch_status(name, &Patch::Strategic(status)).await?;
    Ok(())
}

/// The reference a volume keeps to the claim it is bound to.
fn reference_to(claim: &PersistentVolumeClaim) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        namespace: claim.metadata.namespace.clone(),
        name: claim.metadata.name.clone(),
        uid: claim.metadata.uid.clone(),
        ..Default::default()
    }
}

/// One reconcile of one volume: Available when free, Released when its claim is gone, then reclaimed.
pub async fn reconcile_volume(pv: Arc<PersistentVolume>, ctx: Arc<Context>) -> Result<Action> {
    let name = pv.metadata.name().to_string();
    let pvs = Api::<PersistentVolume>::all(&ctx.client);
    if pv.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let phase = pv_phase(&pv);
    let set_phase = |p: &'static str| {
        let pvs = pvs.clone();
        let name = name.clone();
        async move {
            pvs.patch_status(&name, &Patch::Merge(json!({"status": {"phase": p}})))
                .await
        }
    };
    let Some(r) = claim_ref(&pv) else {
        if phase != "Available" {
            set_phase("Available").await?;
        }
        return Ok(Action::await_change());
    };
    let (claim_ns, claim_name) = (
        r.namespace.as_deref().unwrap_or(""),
        r.name.as_deref().unwrap_or(""),
    );
    let ref_uid = r.uid.as_deref().unwrap_or("");
    let gone = match ctx.claims.get(claim_ns, claim_name) {
        None => true,
        Some(c) => !ref_uid.is_empty() && c.metadata.uid.as_deref() != Some(ref_uid),
    };
    if !gone {
        return Ok(Action::await_change());
    }
    // Only after the claim is truly gone (the cache could be behind): ask the server.
    if let Ok(c) = Api::<PersistentVolumeClaim>::namespaced(&ctx.client, claim_ns)
        .get(claim_name)
        .await
    {
        if c.metadata.uid.as_deref() == Some(ref_uid) {
            return Ok(Action::await_change());
        }
    }
    let spec = pv.spec.clone().unwrap_or_default();
    match spec.persistent_volume_reclaim_policy.as_deref() {
        Some("Delete") => {
            let provisioned_here = pv
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(PROVISIONED_BY))
                .is_some_and(|p| p == LOCAL_PATH);
            if provisioned_here {
                if let Some(hp) = &spec.host_path {
                    let path = PathBuf::from(&hp.path);
                    if path.starts_with(&ctx.storage) {
                        let _ = std::fs::remove_dir_all(&path);
                    }
                }
            }
            pvs.delete_all(std::slice::from_ref(&name)).await?;
            tracing::info!(volume = %name, "claim gone: volume deleted (reclaim policy Delete)");
        }
        _ => {
            if phase != "Released" {
                set_phase("Released").await?;
            }
        }
    }
    Ok(Action::await_change())
}

/// Maps a volume to the claim it is reserved for (so binding continues when the volume changes).
pub fn claim_mapper() -> crate::runtime::controller::Mapper<PersistentVolume> {
    Arc::new(|pv: &PersistentVolume| match claim_ref(pv) {
        Some(ObjectReference {
            namespace,
            name: Some(name),
            ..
        }) if !name.is_empty() => vec![format!("{}/{name}", namespace.as_deref().unwrap_or(""))],
        _ => Vec::new(),
    })
}

/// Maps a claim to the volume reserved for it (so a deleted claim releases its volume).
pub fn volume_mapper(
    volumes: Cache<PersistentVolume>,
) -> crate::runtime::controller::Mapper<PersistentVolumeClaim> {
    Arc::new(move |claim: &PersistentVolumeClaim| {
        volumes
            .list()
            .iter()
            .filter(|pv| {
                claim_ref(pv).is_some_and(|r| {
                    r.namespace == claim.metadata.namespace && r.name == claim.metadata.name
                })
            })
            .map(|pv| format!("/{}", pv.metadata.name()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_volume_fits_by_class_size_and_modes() {
        let pv: PersistentVolume = typed(
            json!({"spec": {"storageClassName": "fast", "capacity": {"storage": "2Gi"},
            "accessModes": ["ReadWriteOnce", "ReadOnlyMany"]}}),
        );
        let claim = |size: &str, mode: &str| -> PersistentVolumeClaim {
            typed(
                json!({"spec": {"resources": {"requests": {"storage": size}}, "accessModes": [mode]}}),
            )
        };
        assert!(fits(&pv, &claim("1Gi", "ReadWriteOnce"), "fast"));
        assert!(fits(&pv, &claim("2048Mi", "ReadOnlyMany"), "fast"));
        assert!(!fits(&pv, &claim("3Gi", "ReadWriteOnce"), "fast"));
        assert!(!fits(&pv, &claim("1Gi", "ReadWriteMany"), "fast"));
        assert!(!fits(&pv, &claim("1Gi", "ReadWriteOnce"), "slow"));
        let classes = Cache::of([typed::<StorageClass>(
            json!({"metadata": {"name": "local-path",
            "annotations": {DEFAULT_CLASS: "true"}}, "provisioner": LOCAL_PATH}),
        )]);
        assert_eq!(
            class_of(&typed(json!({"spec": {}})), &classes),
            "local-path"
        );
        assert_eq!(
            class_of(&typed(json!({"spec": {"storageClassName": ""}})), &classes),
            ""
        );
    }
}
