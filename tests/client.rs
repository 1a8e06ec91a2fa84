//! Capstan's own client against a real server: typed requests, and the informer cache following creates, updates
//! and deletes made by someone else.

mod common;

use std::time::{Duration, Instant};

use capstan::api::registry;
use capstan::client::informer::{Change, Informer};
use capstan::client::Client;
use common::Server;
use serde_json::json;

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn informer_cache_follows_the_cluster() {
    let s = tokio::task::spawn_blocking(Server::start).await.unwrap();
    let client = Client::from_kubeconfig(&s.kubeconfig()).unwrap();
    let cm = registry::lookup("cm").unwrap();
    client
        .create(
            cm,
            Some("default"),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "before"}}),
        )
        .await
        .unwrap();
    let inf = Informer::start(client.clone(), cm, Some("default".into()), String::new());
    let mut changes = inf.changes.subscribe();
    let cache = inf.cache.clone();
    tokio::task::spawn_blocking(move || {
        wait_for("initial list", || cache.get("default", "before").is_some())
    })
    .await
    .unwrap();

    // Changes by another client arrive in the cache, in order.
    client
        .create(cm, Some("default"), &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "after"}, "data": {"a": "1"}}))
        .await
        .unwrap();
    client
        .patch(
            cm,
            Some("default"),
            "after",
            "application/merge-patch+json",
            &json!({"data": {"a": "2"}}),
        )
        .await
        .unwrap();
    client
        .delete(cm, Some("default"), "before", "Background")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 {
        match tokio::time::timeout_at(deadline, changes.recv())
            .await
            .expect("changes")
            .expect("channel")
        {
            Change::Applied(o) => seen.push(format!(
                "applied {} {}",
                o["metadata"]["name"].as_str().unwrap(),
                o["data"]["a"].as_str().unwrap_or("-")
            )),
            Change::Deleted(o) => seen.push(format!(
                "deleted {}",
                o["metadata"]["name"].as_str().unwrap()
            )),
            Change::Resynced => {}
        }
    }
    assert_eq!(
        seen,
        ["applied after 1", "applied after 2", "deleted before"]
    );
    assert!(inf.cache.get("default", "before").is_none());
    assert_eq!(inf.cache.get("default", "after").unwrap()["data"]["a"], "2");
    // Besides kube-root-ca.crt, which every namespace holds.
    assert_eq!(
        inf.cache
            .list()
            .iter()
            .filter(|o| o["metadata"]["name"] != "kube-root-ca.crt")
            .count(),
        1
    );

    // Typed errors carry the Status.
    let err = client
        .get(cm, Some("default"), "missing")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(404));
    assert!(
        err.to_string().contains("configmaps \"missing\" not found"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_of_several_servers_fails_over_from_one_that_cannot_be_reached() {
    let s = tokio::task::spawn_blocking(Server::start).await.unwrap();
    // Nothing listens on port 1: the first server cannot be reached, the second serves.
    let servers = format!("https://127.0.0.1:1,{}", s.url);
    let client = Client::new(&servers, &s.token(), Some(&s.ca())).unwrap();
    let cm = registry::lookup("cm").unwrap();
    let made = client
        .create(
            cm,
            Some("default"),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "failed-over"}}),
        )
        .await
        .unwrap();
    assert_eq!(made["metadata"]["name"], "failed-over");
    // Every clone now uses the live server first; the list of servers is kept.
    assert_eq!(client.clone().base(), s.url);
    assert_eq!(client.servers().len(), 2);
    // The CLI takes more servers with --servers, after its kubeconfig's (here: one that cannot be reached).
    let dir = tempfile::tempdir().unwrap();
    let kc = std::fs::read_to_string(s.kubeconfig())
        .unwrap()
        .replace(&s.url, "https://127.0.0.1:1");
    std::fs::write(dir.path().join("kubeconfig"), kc).unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("--kubeconfig")
        .arg(dir.path().join("kubeconfig"))
        .args(["--servers", &s.url, "get", "configmap", "failed-over"])
        .output()
        .unwrap();
    let said = common::ok(&out);
    assert!(said.contains("failed-over"), "{said}");
    // With no live server at all, the error names one that was tried.
    let out = std::process::Command::new(common::BIN)
        .arg("--kubeconfig")
        .arg(dir.path().join("kubeconfig"))
        .args(["get", "configmap"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:1"));
}
