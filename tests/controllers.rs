//! The controllers in a real `capstan server`: a ReplicaSet keeps its pods, replaces deleted ones, scales both ways
//! (surplus pods least valuable first), adopts matching orphans and releases pods that stop matching.

mod common;

use common::{eventually, Server};
use serde_json::{json, Value};

fn owned_pods(s: &Server, uid: &str) -> Vec<Value> {
    let (_, list) = s.call(
        "GET",
        "/api/v1/namespaces/default/pods?labelSelector=app%3Drs",
        "",
        "",
    );
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|r| r["uid"] == uid && r["controller"] == true))
        })
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .cloned()
        .collect()
}

#[test]
fn replicaset_keeps_scales_adopts_and_releases_pods() {
    let s = Server::start();
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "rs"}},
                 "template": {"metadata": {"labels": {"app": "rs"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1.36", "command": ["sleep", "3600"]}]}}}});
    let (code, created) = s.call(
        "POST",
        "/apis/apps/v1/namespaces/default/replicasets",
        "application/json",
        &rs.to_string(),
    );
    assert_eq!(code, 201, "{created}");
    let uid = created["metadata"]["uid"].as_str().unwrap().to_string();
    let pods = eventually("three pods", || {
        Some(owned_pods(&s, &uid)).filter(|p| p.len() == 3)
    });
    assert!(pods
        .iter()
        .all(|p| p["metadata"]["name"].as_str().unwrap().starts_with("web-")));
    eventually("status.replicas 3", || {
        let (_, r) = s.call(
            "GET",
            "/apis/apps/v1/namespaces/default/replicasets/web",
            "",
            "",
        );
        (r["status"]["replicas"] == 3 && r["status"]["observedGeneration"] == 1).then_some(())
    });

    // A deleted pod is replaced.
    let victim = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
    s.call(
        "DELETE",
        &format!("/api/v1/namespaces/default/pods/{victim}"),
        "",
        "",
    );
    eventually("a replacement", || {
        let now = owned_pods(&s, &uid);
        (now.len() == 3 && now.iter().all(|p| p["metadata"]["name"] != victim.as_str()))
            .then_some(())
    });

    // Scale down and up.
    s.call(
        "PATCH",
        "/apis/apps/v1/namespaces/default/replicasets/web/scale",
        "application/merge-patch+json",
        r#"{"spec":{"replicas":1}}"#,
    );
    eventually("one pod", || {
        (owned_pods(&s, &uid).len() == 1).then_some(())
    });
    s.call(
        "PATCH",
        "/apis/apps/v1/namespaces/default/replicasets/web/scale",
        "application/merge-patch+json",
        r#"{"spec":{"replicas":2}}"#,
    );
    eventually("two pods", || {
        (owned_pods(&s, &uid).len() == 2).then_some(())
    });

    // An orphan that matches is adopted (and, being surplus, the least valuable pod goes).
    let orphan = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "labels": {"app": "rs"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
    s.call(
        "POST",
        "/api/v1/namespaces/default/pods",
        "application/json",
        &orphan.to_string(),
    );
    eventually("adopted, still two pods", || {
        let (code, o) = s.call("GET", "/api/v1/namespaces/default/pods/orphan", "", "");
        let adopted = code == 404 || o["metadata"]["ownerReferences"][0]["uid"] == uid.as_str();
        (adopted && owned_pods(&s, &uid).len() == 2).then_some(())
    });

    // A pod relabelled out of the selector is released and replaced.
    let keep = owned_pods(&s, &uid)[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    s.call(
        "PATCH",
        &format!("/api/v1/namespaces/default/pods/{keep}"),
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"app":"other"}}}"#,
    );
    eventually("released and replaced", || {
        let (_, p) = s.call(
            "GET",
            &format!("/api/v1/namespaces/default/pods/{keep}"),
            "",
            "",
        );
        let released = p["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|o| o.is_empty());
        (released && owned_pods(&s, &uid).len() == 2).then_some(())
    });
}

fn make_rs(s: &Server, name: &str, app: &str) -> String {
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": app}},
                 "template": {"metadata": {"labels": {"app": app}},
                              "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}});
    let (code, created) = s.call(
        "POST",
        "/apis/apps/v1/namespaces/default/replicasets",
        "application/json",
        &rs.to_string(),
    );
    assert_eq!(code, 201, "{created}");
    created["metadata"]["uid"].as_str().unwrap().to_string()
}

fn pods_with(s: &Server, app: &str) -> Vec<Value> {
    let (_, list) = s.call(
        "GET",
        &format!("/api/v1/namespaces/default/pods?labelSelector=app%3D{app}"),
        "",
        "",
    );
    list["items"].as_array().unwrap().clone()
}

#[test]
fn deleting_an_owner_deletes_or_orphans_its_dependents() {
    let s = Server::start();
    // Background (the default): the ReplicaSet goes at once, the garbage collector removes its pods.
    make_rs(&s, "bg", "bg");
    eventually("two pods", || {
        (pods_with(&s, "bg").len() == 2).then_some(())
    });
    s.call(
        "DELETE",
        "/apis/apps/v1/namespaces/default/replicasets/bg",
        "",
        "",
    );
    eventually("pods collected", || {
        pods_with(&s, "bg").is_empty().then_some(())
    });

    // Orphan: the pods stay, without the reference.
    make_rs(&s, "or", "or");
    eventually("two pods", || {
        (pods_with(&s, "or").len() == 2).then_some(())
    });
    s.call(
        "DELETE",
        "/apis/apps/v1/namespaces/default/replicasets/or",
        "application/json",
        r#"{"propagationPolicy":"Orphan"}"#,
    );
    eventually("owner gone", || {
        let (code, _) = s.call(
            "GET",
            "/apis/apps/v1/namespaces/default/replicasets/or",
            "",
            "",
        );
        (code == 404).then_some(())
    });
    let left = pods_with(&s, "or");
    assert_eq!(left.len(), 2, "orphaned pods remain");
    assert!(left.iter().all(|p| p["metadata"]["ownerReferences"]
        .as_array()
        .is_none_or(|r| r.is_empty())));

    // Foreground: the owner stays (with deletionTimestamp) until its pods are gone.
    make_rs(&s, "fg", "fg");
    eventually("two pods", || {
        (pods_with(&s, "fg").len() == 2).then_some(())
    });
    let (_, v) = s.call(
        "DELETE",
        "/apis/apps/v1/namespaces/default/replicasets/fg",
        "application/json",
        r#"{"propagationPolicy":"Foreground"}"#,
    );
    assert!(
        v["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "foregroundDeletion"),
        "{v}"
    );
    eventually("pods and then the owner gone", || {
        let (code, _) = s.call(
            "GET",
            "/apis/apps/v1/namespaces/default/replicasets/fg",
            "",
            "",
        );
        (code == 404 && pods_with(&s, "fg").is_empty()).then_some(())
    });
}

#[test]
fn replication_controller_keeps_its_pods() {
    let s = Server::start();
    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "legacy"},
        "spec": {"replicas": 2, "template": {"metadata": {"labels": {"app": "legacy"}},
                 "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}}}});
    let (code, created) = s.call(
        "POST",
        "/api/v1/namespaces/default/replicationcontrollers",
        "application/json",
        &rc.to_string(),
    );
    assert_eq!(code, 201, "{created}");
    assert_eq!(
        created["spec"]["selector"]["app"], "legacy",
        "the selector defaults to the template's labels"
    );
    eventually("two pods owned by the RC", || {
        let pods = pods_with(&s, "legacy");
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController"))
        .then_some(())
    });
    eventually("status.replicas 2", || {
        let (_, r) = s.call(
            "GET",
            "/api/v1/namespaces/default/replicationcontrollers/legacy",
            "",
            "",
        );
        (r["status"]["replicas"] == 2).then_some(())
    });
}
