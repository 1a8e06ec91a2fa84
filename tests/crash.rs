//! kill -9 of a server in the middle of 16 concurrent writers, ten times over: every create the server acknowledged
//! (201) is there after it restarts - on the embedded store and, with the `etcd` feature, on etcd.

mod common;
#[cfg(feature = "etcd")]
#[path = "common/etcd.rs"]
mod etcd;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Server;

const WRITERS: usize = 16;
const ROUNDS: usize = 10;

/// One round: writers create ConfigMaps until the server is killed; returns the names it acknowledged.
fn write_until_killed(s: Server, round: usize) -> (tempfile::TempDir, Vec<String>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let (url, token) = (s.url.clone(), s.token());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (acked, stop, http) = (acked.clone(), stop.clone(), s.http());
            let (url, token) = (url.clone(), token.clone());
            std::thread::spawn(move || {
                for i in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let name = format!("r{round}-w{w}-{i}");
                    let body = format!(
                        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","labels":{{"crash":"r{round}"}}}}}}"#
                    );
                    let sent = http
                        .post(format!(
                            "{url}{}",
                            concat!("/", "api/v1/namespaces/default/configmaps")
                        ))
                        .bearer_auth(&token)
                        .header("Content-Type", "application/json")
                        .body(body)
                        .send();
                    match sent {
                        Ok(r) if r.status().as_u16() == 201 => {
                            acked.lock().unwrap().push(name)
                        }
                        Ok(r) => panic!("create {name}: {}", r.status()),
                        // The server died under it.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300 + 70 * round as u64));
    let dir = s.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    (dir, acked)
}

fn names(s: &Server, round: usize) -> std::collections::HashSet<String> {
    let (_, list) = s.call(
        "GET",
        &format!(
            "{}?labelSelector=crash%3Dr{round}",
            concat!("/", "api/v1/namespaces/default/configmaps")
        ),
        "",
        "",
    );
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn rounds(extra: &[&str]) {
    let mut s = Server::start_with(extra);
    let mut total = 0;
    for round in 0..ROUNDS {
        let (dir, acked) = write_until_killed(s, round);
        assert!(!acked.is_empty(), "round {round}: some writes were made");
        s = Server::start_in_with(dir, extra);
        let stored = names(&s, round);
        let lost: Vec<&String> = acked.iter().filter(|n| !stored.contains(*n)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged creates lost: {lost:?}"
        );
        total += acked.len();
    }
    eprintln!("{ROUNDS} kills under {WRITERS} writers: {total} acknowledged creates, none lost");
}

#[test]
fn kill_9_under_16_writers_loses_no_acknowledged_write_on_the_embedded_store() {
    rounds(&[]);
}

#[cfg(feature = "etcd")]
#[test]
fn kill_9_under_16_writers_loses_no_acknowledged_write_on_etcd() {
    let Some(store) = etcd::Etcd::start() else {
        return;
    };
    let url = store.url();
    rounds(&["--store", &url]);
}
