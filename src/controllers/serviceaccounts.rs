//! The ServiceAccount and root-CA publishers (kube-controller-manager's `serviceaccount` and `root-ca-cert-publisher`
//! controllers): every active Namespace gets a ServiceAccount `default` and a ConfigMap `kube-root-ca.crt` holding
//! the cluster CA under `ca.crt` (what pods mount to trust the API server); looked at again every minute, so one
//! deleted or changed is restored.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::api::core::{ConfigMap, Namespace, ServiceAccount};
use crate::api::meta::ObjectMeta;
use crate::client::{Api, Client};
use crate::runtime::Action;

use super::Result;

/// The ConfigMap every namespace holds the cluster CA in.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";

pub struct Context {
    pub client: Client,
    /// The cluster CA (PEM); empty: no ConfigMap is published.
    pub ca_pem: String,
}

/// One reconcile of one Namespace.
pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Context>) -> Result<Action> {
    if ns.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name();
    let accounts = Api::<ServiceAccount>::namespaced(&ctx.client, name);
    if accounts.get_opt("default").await?.is_none() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                namespace: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match accounts.create(&sa).await {
            Ok(_) => tracing::debug!(namespace = name, "created the default ServiceAccount"),
            Err(e) if e.code() == Some(409) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !ctx.ca_pem.is_empty() {
        let maps = Api::<ConfigMap>::namespaced(&ctx.client, name);
        let want = BTreeMap::from([("ca.crt".to_string(), ctx.ca_pem.clone())]);
        match maps.get_opt(ROOT_CA_CONFIGMAP).await? {
            Some(cm) if cm.data.as_ref() == Some(&want) => {}
            Some(mut cm) => {
                cm.data = Some(want);
                maps.replace(ROOT_CA_CONFIGMAP, &cm).await?;
            }
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ROOT_CA_CONFIGMAP.into()),
                        namespace: Some(name.to_string()),
                        annotations: Some(BTreeMap::from([(
                            "kubernetes.io/description".to_string(),
                            "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.".to_string(),
                        )])),
                        ..Default::default()
                    },
                    data: Some(want),
                    ..Default::default()
                };
                match maps.create(&cm).await {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(409) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(Action::requeue(std::time::Duration::from_secs(60)))
}
