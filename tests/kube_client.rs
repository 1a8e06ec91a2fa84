//! Compatibility with a client library nobody here wrote: the `kube` crate (kube-rs) with k8s-openapi types lists,
//! watches (with bookmarks, through kube-runtime's watcher), creates, server-side applies and deletes.

mod common;

use std::time::Duration;

use common::Server;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher;

async fn client(s: &Server) -> kube::Client {
    capstan::sys::init_crypto();
    let kc = kube::config::Kubeconfig::read_from(s.kubeconfig()).expect("kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .expect("config");
    kube::Client::try_from(cfg).expect("client")
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_lists_watches_creates_applies_and_deletes() {
    let s = tokio::task::spawn_blocking(Server::start).await.unwrap();
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");

    // Create and list.
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("from-kube".into());
    cm.data = Some([("a".to_string(), "1".to_string())].into());
    let created = cms
        .create(&PostParams::default(), &cm)
        .await
        .expect("create");
    assert!(created.metadata.uid.is_some());
    let list = cms.list(&ListParams::default()).await.expect("list");
    assert!(list
        .items
        .iter()
        .any(|i| i.metadata.name.as_deref() == Some("from-kube")));

    // A raw watch with bookmarks from the list's resourceVersion sees a change made afterwards.
    let rv = list.metadata.resource_version.clone().unwrap();
    let mut w = cms
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .expect("watch")
        .boxed();
    let apply = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"x": "y"}});
    let applied: ConfigMap = cms
        .patch(
            "applied",
            &PatchParams::apply("kube-test"),
            &Patch::Apply(&apply),
        )
        .await
        .expect("apply");
    assert_eq!(applied.data.unwrap()["x"], "y");
    let ev = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match w.try_next().await.expect("watch event") {
                Some(WatchEvent::Added(o)) if o.metadata.name.as_deref() == Some("applied") => {
                    return o
                }
                Some(_) => continue,
                None => panic!("watch ended"),
            }
        }
    })
    .await
    .expect("event within 10s");
    assert_eq!(ev.metadata.name.as_deref(), Some("applied"));

    // kube-runtime's watcher (list + watch, bookmarks) delivers the initial state and later deletes.
    let mut stream = watcher(cms.clone(), watcher::Config::default()).boxed();
    let mut seen_init = false;
    let deleter = {
        let cms = cms.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            cms.delete("from-kube", &DeleteParams::default())
                .await
                .expect("delete");
        })
    };
    tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(ev) = stream.try_next().await.expect("watcher") {
            match ev {
                watcher::Event::InitDone => seen_init = true,
                watcher::Event::Delete(o) if o.metadata.name.as_deref() == Some("from-kube") => {
                    return
                }
                _ => {}
            }
        }
    })
    .await
    .expect("watcher saw the delete");
    assert!(seen_init);
    deleter.await.unwrap();

    // Typed apps/v1 objects and server-side apply with a field manager.
    let deps: Api<Deployment> = Api::namespaced(c.clone(), "default");
    let dep = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "kd"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "kd"}},
                 "template": {"metadata": {"labels": {"app": "kd"}}, "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}});
    let d: Deployment = deps
        .patch(
            "kd",
            &PatchParams::apply("kube-test").force(),
            &Patch::Apply(&dep),
        )
        .await
        .expect("apply deployment");
    assert_eq!(d.spec.replicas, Some(2));
    assert!(d
        .metadata
        .managed_fields
        .unwrap()
        .iter()
        .any(|m| m.manager.as_deref() == Some("kube-test")));
    let scale = deps.get_scale("kd").await.expect("scale");
    assert_eq!(scale.spec.unwrap().replicas, Some(2));
    deps.delete("kd", &DeleteParams::default())
        .await
        .expect("delete deployment");
    let err = deps.get("kd").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref e) if e.code == 404),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kube_rs_metadata_only_lists_watches_and_error_statuses() {
    let s = tokio::task::spawn_blocking(Server::start).await.unwrap();
    let c = client(&s).await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("meta".into());
    cm.data = Some([("big".to_string(), "x".repeat(1000))].into());
    cms.create(&PostParams::default(), &cm).await.unwrap();
    // Metadata only (PartialObjectMetadataList / PartialObjectMetadata), as controller-runtime's metadata
    // informers and garbage collectors ask.
    let list = cms
        .list_metadata(&ListParams::default())
        .await
        .expect("list_metadata");
    let item = list
        .items
        .iter()
        .find(|i| i.metadata.name.as_deref() == Some("meta"))
        .expect("listed");
    assert!(item.metadata.uid.is_some());
    let one = cms.get_metadata("meta").await.expect("get_metadata");
    assert_eq!(one.metadata.name.as_deref(), Some("meta"));
    let rv = list.metadata.resource_version.clone().unwrap();
    let mut w = cms
        .watch_metadata(&WatchParams::default().timeout(10), &rv)
        .await
        .expect("watch_metadata")
        .boxed();
    let mut later = ConfigMap::default();
    later.metadata.name = Some("meta-later".into());
    cms.create(&PostParams::default(), &later).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(ev) = w.try_next().await.expect("event") {
            if let WatchEvent::Added(o) = ev {
                if o.metadata.name.as_deref() == Some("meta-later") {
                    return true;
                }
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(seen, "the metadata watch saw the create");
    // Errors come back as Kubernetes' Status, which kube-rs decodes into its error type.
    match cms.create(&PostParams::default(), &cm).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 409);
            assert_eq!(e.reason, "AlreadyExists");
            assert_eq!(e.message, "configmaps \"meta\" already exists");
        }
        other => panic!("expected a conflict: {other:?}"),
    }
    match cms.get("nothing-here").await {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (404, "NotFound")),
        other => panic!("expected not found: {other:?}"),
    }
}
