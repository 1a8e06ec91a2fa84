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

mod operator {
    //! A small operator written with kube-rs's controller runtime: its CRD comes from a `CustomResource` derive, and
    //! its controller makes a ConfigMap per custom object and writes the object's status.

    use super::*;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::runtime::controller::{Action, Controller};
    use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
    use schemars::JsonSchema;
    use serde::{Deserialize, Serialize};
    use std::sync::Arc;

    #[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema)]
    #[kube(
        group = "demo.capstan.dev",
        version = "v1",
        kind = "Greeting",
        namespaced,
        status = "GreetingStatus",
        shortname = "gr",
        printcolumn = r#"{"name": "Message", "type": "string", "jsonPath": ".spec.message"}"#
    )]
    pub struct GreetingSpec {
        pub message: String,
        #[serde(default)]
        pub copies: u32,
    }

    #[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    pub struct GreetingStatus {
        pub ready: bool,
        pub observed_generation: Option<i64>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error(transparent)]
    struct Failed(#[from] kube::Error);

    async fn reconcile(g: Arc<Greeting>, c: Arc<kube::Client>) -> Result<Action, Failed> {
        let ns = g.namespace().unwrap_or_default();
        let name = g.name_any();
        let cms: Api<ConfigMap> = Api::namespaced((*c).clone(), &ns);
        let owner = g.controller_owner_ref(&()).expect("owner reference");
        let text = g.spec.message.repeat(g.spec.copies.max(1) as usize);
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("{name}-greeting"), "ownerReferences": [owner]},
            "data": {"text": text}});
        cms.patch(
            &format!("{name}-greeting"),
            &PatchParams::apply("greeter").force(),
            &Patch::Apply(&cm),
        )
        .await?;
        let greetings: Api<Greeting> = Api::namespaced((*c).clone(), &ns);
        let status = serde_json::json!({"status": {"ready": true, "observedGeneration": g.metadata.generation}});
        greetings
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
        Ok(Action::await_change())
    }

    fn on_error(_: Arc<Greeting>, _: &Failed, _: Arc<kube::Client>) -> Action {
        Action::requeue(Duration::from_millis(200))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn an_operator_built_with_kube_runtime_converges_on_capstan() {
        let s = tokio::task::spawn_blocking(Server::start).await.unwrap();
        let c = client(&s).await;
        let crds: Api<CustomResourceDefinition> = Api::all(c.clone());
        crds.create(&PostParams::default(), &Greeting::crd())
            .await
            .expect("create the CRD");
        let established = async {
            loop {
                let crd = crds
                    .get("greetings.demo.capstan.dev")
                    .await
                    .expect("get CRD");
                let ok = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
                    cs.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                });
                if ok {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), established)
            .await
            .expect("the CRD Established");

        let greetings: Api<Greeting> = Api::namespaced(c.clone(), "default");
        let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
        let controller = Controller::new(greetings.clone(), watcher::Config::default())
            .owns(cms.clone(), watcher::Config::default())
            .run(reconcile, on_error, Arc::new(c.clone()))
            .for_each(|_| async {});
        let running = tokio::spawn(controller);

        let hello = Greeting::new(
            "hello",
            GreetingSpec {
                message: "hi ".into(),
                copies: 1,
            },
        );
        greetings
            .create(&PostParams::default(), &hello)
            .await
            .expect("create a Greeting");
        let converged = |want: &'static str| {
            let (greetings, cms) = (greetings.clone(), cms.clone());
            async move {
                loop {
                    let g = greetings.get("hello").await.expect("get");
                    let cm = cms.get_opt("hello-greeting").await.expect("get cm");
                    let text = cm.and_then(|c| c.data).and_then(|d| d.get("text").cloned());
                    let status = g.status.clone().unwrap_or_default();
                    if text.as_deref() == Some(want)
                        && status.ready
                        && status.observed_generation == g.metadata.generation
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(15), converged("hi "))
            .await
            .expect("the operator made the ConfigMap and wrote status");
        // A spec change: the generation moves, the operator follows.
        greetings
            .patch(
                "hello",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"copies": 3}})),
            )
            .await
            .expect("patch spec");
        tokio::time::timeout(Duration::from_secs(15), converged("hi hi hi "))
            .await
            .expect("the operator followed the change");
        let g = greetings.get("hello").await.unwrap();
        assert_eq!(g.metadata.generation, Some(2));
        // Someone deleting the ConfigMap: the controller (which owns it) makes it again.
        cms.delete("hello-greeting", &DeleteParams::default())
            .await
            .expect("delete the ConfigMap");
        tokio::time::timeout(Duration::from_secs(15), converged("hi hi hi "))
            .await
            .expect("the owned ConfigMap made again");
        running.abort();
        // Deleting the custom object: the garbage collector deletes what it owns.
        greetings
            .delete("hello", &DeleteParams::default())
            .await
            .expect("delete the Greeting");
        let collected = async {
            while cms
                .get_opt("hello-greeting")
                .await
                .expect("get cm")
                .is_some()
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(30), collected)
            .await
            .expect("the ConfigMap owned by the deleted Greeting garbage-collected");
    }
}
