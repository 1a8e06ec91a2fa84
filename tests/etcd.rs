//! The etcd backend against a real etcd: the store conformance suite (the same one the embedded store passes),
//! keys under a prefix, and `capstan server --store etcd://...` serving the API with kubectl.
#![cfg(feature = "etcd")]

mod common;
#[path = "common/etcd.rs"]
mod etcd;

use std::sync::Arc;

use capstan::store::etcd::{Etcd, Options};
use capstan::store::DynStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_etcd_backend_passes_the_store_conformance_suite() {
    let Some(server) = etcd::Etcd::start() else {
        return;
    };
    let mut opts = Options::from_url(&server.url()).unwrap();
    opts.prefix = "/capstan-test".into();
    let store: DynStore = Arc::new(Etcd::connect(&opts).await.unwrap());
    capstan::store::conformance::run(store.clone()).await;
    // Every key lives under the prefix, and reads strip it.
    let raw = Etcd::connect(&Options::from_url(&server.url()).unwrap())
        .await
        .unwrap();
    let under = capstan::store::Store::list(&raw, "/capstan-test/registry/c/many/", 0, None, 0)
        .await
        .unwrap();
    assert_eq!(under.kvs.len(), 64);
    let mine = capstan::store::Store::get(store.as_ref(), "/registry/c/many/000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mine.key, "/registry/c/many/000");
}

#[tokio::test]
async fn an_unreachable_etcd_is_a_clear_error() {
    let opts = Options::from_url("etcd://127.0.0.1:1").unwrap();
    let e = Etcd::connect(&opts).await.unwrap_err().to_string();
    assert!(e.contains("127.0.0.1:1"), "{e}");
}

#[test]
fn two_servers_on_one_etcd_share_the_cluster_and_its_identity() {
    use common::{ok, within, Server, BIN};
    use std::io::BufRead;
    use std::time::Duration;
    let Some(k) = common::kubectl() else { return };
    let Some(server) = etcd::Etcd::start() else {
        return;
    };
    let url = server.url();
    let a = Server::start_with(&["--store", &url]);
    let token = a.data_dir().join("token");

    // A wrong token is refused by name, and the new server's directory is left without the cluster's keys.
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("wrong-token"), "not-the-token").unwrap();
    let out = std::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(bad.path().join("data"))
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--store",
            &url,
            "--token-file",
        ])
        .arg(bad.path().join("wrong-token"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("does not open this cluster's bootstrap data"),
        "{said}"
    );
    assert!(!bad.path().join("data/ca.key").exists());

    let b = Server::start_with(&["--store", &url, "--token-file", token.to_str().unwrap()]);
    assert_eq!(a.ca(), b.ca(), "one cluster CA");
    assert_eq!(a.token(), b.token(), "the same admin credentials");

    // A write through one is read through the other, and seen by a watch on the other.
    ok(&a.kubectl(&k, &["create", "configmap", "shared", "--from-literal=k=v"]));
    let got = ok(&b.kubectl(
        &k,
        &["get", "configmap", "shared", "-o", "jsonpath={.data.k}"],
    ));
    assert_eq!(got, "v");
    let (_, list) = b.call(
        "GET",
        concat!("/", "api/v1/namespaces/default/configmaps"),
        "",
        "",
    );
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let watch = b
        .http()
        .get(format!(
            "{}{}?watch=1&resourceVersion={rv}",
            b.url,
            concat!("/", "api/v1/namespaces/default/configmaps")
        ))
        .bearer_auth(b.token())
        .send()
        .unwrap();
    ok(&a.kubectl(
        &k,
        &["create", "configmap", "through-a", "--from-literal=k=w"],
    ));
    let mut lines = std::io::BufReader::new(watch).lines();
    let seen = lines
        .by_ref()
        .take(20)
        .map_while(Result::ok)
        .any(|l| l.contains("\"through-a\""));
    assert!(
        seen,
        "server b's watch sees the write made through server a"
    );
    // One controller manager leads; a Deployment through b is rolled out.
    ok(&b.kubectl(
        &k,
        &[
            "create",
            "deployment",
            "web",
            "--image=none",
            "--",
            "sleep",
            "60",
        ],
    ));
    within(Duration::from_secs(30), "the ReplicaSet made once", || {
        let (_, rs) = a.call(
            "GET",
            concat!("/", "apis/apps/v1/namespaces/default/replicasets"),
            "",
            "",
        );
        (rs["items"].as_array().map(Vec::len) == Some(1)).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let (_, rs) = b.call(
        "GET",
        concat!("/", "apis/apps/v1/namespaces/default/replicasets"),
        "",
        "",
    );
    assert_eq!(rs["items"].as_array().unwrap().len(), 1, "not made twice");

    // A key rotated through one server reaches the other: Secrets written through either read through both.
    ok(&a.kubectl(
        &k,
        &[
            "create",
            "secret",
            "generic",
            "before",
            "--from-literal=p=one",
        ],
    ));
    let said = ok(&a.capstan(&["secrets", "rotate-key"]));
    assert!(said.contains("is active"), "{said}");
    ok(&b.kubectl(
        &k,
        &[
            "create",
            "secret",
            "generic",
            "after",
            "--from-literal=p=two",
        ],
    ));
    for s in [&a, &b] {
        for (name, want) in [("before", "b25l"), ("after", "dHdv")] {
            let got = ok(&s.kubectl(&k, &["get", "secret", name, "-o", "jsonpath={.data.p}"]));
            assert_eq!(got, want, "{name} through {}", s.url);
        }
    }
    let keys = |s: &Server| {
        let ring: serde_json::Value =
            serde_json::from_slice(&std::fs::read(s.data_dir().join("encryption.json")).unwrap())
                .unwrap();
        ring["active"].as_str().unwrap().to_string()
    };
    within(Duration::from_secs(10), "b follows the new key", || {
        (keys(&a) == keys(&b)).then_some(())
    });
    assert_ne!(keys(&a), "key1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_larger_than_one_etcd_response_are_read_whole() {
    use capstan::store::Store;
    let Some(server) = etcd::Etcd::start() else {
        return;
    };
    let store = Etcd::connect(&Options::from_url(&server.url()).unwrap())
        .await
        .unwrap();
    // 2,500 values of 2 KiB: 5 MB, more than etcd's 4 MiB response limit.
    let value = vec![b'x'; 2048];
    let mut tasks = Vec::new();
    let store = Arc::new(store);
    for chunk in 0..10 {
        let (s, v) = (store.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                s.create(&format!("/big/{chunk:02}-{i:04}"), v.clone())
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = store.list("/big/", 0, None, 0).await.unwrap();
    assert_eq!(all.kvs.len(), 2500);
    assert_eq!(all.remaining, 0);
    let mut keys: Vec<&str> = all.kvs.iter().map(|k| k.key.as_str()).collect();
    let sorted = {
        let mut s = keys.clone();
        s.sort();
        s
    };
    assert_eq!(keys, sorted, "in key order");
    keys.dedup();
    assert_eq!(keys.len(), 2500);
    let page = store.list("/big/", 0, None, 1500).await.unwrap();
    assert_eq!((page.kvs.len(), page.remaining), (1500, 1000));
    let rest = store
        .list("/big/", page.revision, Some(&page.kvs[1499].key), 0)
        .await
        .unwrap();
    assert_eq!(rest.kvs.len(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_store_carrying_on_from_a_restored_revision_passes_the_conformance_suite() {
    let Some(server) = etcd::Etcd::start() else {
        return;
    };
    let mut opts = Options::from_url(&server.url()).unwrap();
    opts.prefix = "/restored".into();
    let mut store = Etcd::connect(&opts).await.unwrap();
    store.continue_from(1_000_000).await.unwrap();
    let store: DynStore = Arc::new(store);
    let rev = store.revision().await.unwrap();
    assert!(rev >= 1_000_000, "{rev}");
    capstan::store::conformance::run(store.clone()).await;
    // A new connection reads the offset back; revisions before it are history etcd never had.
    let again = Etcd::connect(&opts).await.unwrap();
    assert!(capstan::store::Store::revision(&again).await.unwrap() > 1_000_000);
    let old = capstan::store::Store::list(&again, "/", 999_999, None, 0).await;
    assert!(
        matches!(old, Err(capstan::store::Error::Compacted { .. })),
        "{old:?}"
    );
    // Only an empty store can carry on from elsewhere.
    let mut full = Etcd::connect(&opts).await.unwrap();
    let e = full.continue_from(5).await.unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
}

#[test]
fn a_cluster_of_the_example_repository_migrates_to_etcd_with_its_pods_and_history() {
    use common::{ok, within, Server, BIN};
    use serde_json::Value;
    use std::time::Duration;
    let Some(k) = common::kubectl() else { return };
    let Some(etcd) = etcd::Etcd::start() else {
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let ranges = common::ranges(&["up"]);
    let mut args: Vec<&str> = vec![
        "up",
        "--keep-pods",
        "--listen",
        &listen,
        "--node-name",
        "node-m",
    ];
    args.extend(ranges.iter().map(String::as_str));
    // `capstan up` follows the example repository (examples/repo) by default.
    let s = Server::run_in(tempfile::tempdir().unwrap(), &args);
    let hello_pods = |s: &Server| -> Vec<(String, i64)> {
        let (_, list) = s.call(
            "GET",
            concat!("/", "api/v1/namespaces/demo/pods?labelSelector=app%3Dhello"),
            "",
            "",
        );
        let mut pods: Vec<(String, i64)> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| {
                p["status"]["conditions"].as_array().is_some_and(|c| {
                    c.iter()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
                })
            })
            .map(|p| {
                (
                    p["metadata"]["uid"].as_str().unwrap_or("").to_string(),
                    p["status"]["containerStatuses"][0]["restartCount"]
                        .as_i64()
                        .unwrap_or(-1),
                )
            })
            .collect();
        pods.sort();
        pods
    };
    let records = |s: &Server| -> Vec<String> {
        let (_, list) = s.call(
            "GET",
            concat!("/", "apis/gitops.capstan.io/v1/syncrecords"),
            "",
            "",
        );
        let mut names: Vec<String> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["metadata"]["name"].as_str().map(String::from))
            .collect();
        names.sort();
        names
    };
    let before = within(Duration::from_secs(90), "the example running", || {
        let pods = hello_pods(&s);
        (pods.len() == 2 && !records(&s).is_empty()).then_some(pods)
    });
    let history = records(&s);
    let (_, list) = s.call("GET", concat!("/", "api/v1/configmaps"), "", "");
    let old_rv: i64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let dir = s.stop();

    // The stopped server's embedded store is copied into etcd and set aside.
    let out = std::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["store", "migrate", "--to", &etcd.url()])
        .output()
        .unwrap();
    let said = ok(&out);
    assert!(said.contains("copied"), "{said}");
    assert!(!dir.path().join("store.redb").exists());
    // A second migration finds nothing to copy and says so.
    let again = std::process::Command::new(BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["store", "migrate", "--to", &etcd.url()])
        .output()
        .unwrap();
    assert!(!again.status.success());

    let url = etcd.url();
    let mut args2 = args.clone();
    args2.extend(["--store", url.as_str()]);
    let t = Server::run_in(dir, &args2);
    // The same pods, never restarted; the Application's history is all there; kubectl sees the example.
    let after = within(Duration::from_secs(60), "the pods adopted", || {
        let pods = hello_pods(&t);
        (pods.len() == 2).then_some(pods)
    });
    assert_eq!(after, before, "same pods, not restarted");
    let now = records(&t);
    assert!(
        history.iter().all(|h| now.contains(h)),
        "history kept: {history:?} vs {now:?}"
    );
    let got = ok(&t.kubectl(
        &k,
        &[
            "get",
            "configmap",
            "-n",
            "demo",
            "hello-config",
            "-o",
            "jsonpath={.data.MESSAGE}",
        ],
    ));
    assert_eq!(got, "Hello from Capstan");
    // resourceVersions carry on past the old store's.
    let (code, made): (u16, Value) = t.call(
        "POST",
        concat!("/", "api/v1/namespaces/default/configmaps"),
        "application/json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"after-migration"}}"#,
    );
    assert_eq!(code, 201, "{made}");
    let rv: i64 = made["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv > old_rv, "{rv} > {old_rv}");
}

/// etcd's count of its open watches.
async fn etcd_watches(endpoint: &str) -> u64 {
    capstan::sys::init_crypto();
    let text = reqwest::get(format!("http://{endpoint}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .expect("etcd reports its watchers")
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

/// The next item of a watch, within 20 s.
async fn within(
    s: &mut capstan::store::WatchStream,
) -> Option<capstan::store::Result<capstan::store::Event>> {
    use futures::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(20), s.next())
        .await
        .expect("an event within 20 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchers_of_one_store_share_one_etcd_watch_which_outlives_an_etcd_restart() {
    use capstan::store::Store;
    let Some(mut server) = etcd::Etcd::start() else {
        return;
    };
    let store = Etcd::connect(&Options::from_url(&server.url()).unwrap())
        .await
        .unwrap();
    let base = store.revision().await.unwrap();
    let mut first = store.watch("/registry/s/", base).await.unwrap();
    let shared = etcd_watches(&server.endpoint).await;
    assert_eq!(shared, 1, "the first watch opened the shared one");
    let mut each = Vec::new();
    for i in 0..20 {
        each.push(
            store
                .watch(&format!("/registry/s/{i}/"), base)
                .await
                .unwrap(),
        );
    }
    assert_eq!(
        etcd_watches(&server.endpoint).await,
        shared,
        "20 more watchers, no more watches in etcd"
    );
    let r = store
        .create("/registry/s/3/x", b"x".to_vec())
        .await
        .unwrap();
    assert_eq!(within(&mut first).await.unwrap().unwrap().revision(), r);
    assert_eq!(within(&mut each[3]).await.unwrap().unwrap().revision(), r);

    // etcd restarts: its watchers are told to watch again, and watching works again.
    server.restart();
    assert!(
        matches!(within(&mut first).await, Some(Err(_))),
        "a watcher learns its events may have a gap"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let now = loop {
        match store.revision().await {
            Ok(r) => break r,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await
            }
            Err(e) => panic!("etcd did not come back: {e}"),
        }
    };
    let mut again = store.watch("/registry/s/", now).await.unwrap();
    let r2 = store
        .create("/registry/s/after", b"y".to_vec())
        .await
        .unwrap();
    assert_eq!(within(&mut again).await.unwrap().unwrap().revision(), r2);
    drop((again, first, each));
    // The shared watch is open again and serves new watchers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let _more = store.watch("/registry/s/", r2).await.unwrap();
        let n = etcd_watches(&server.endpoint).await;
        if n == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watchers after the restart share one etcd watch again ({n} open)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
