//! Snapshot tests of every view, drawn with ratatui's TestBackend from a fixed store and a fixed clock, so ages are
//! stable; commit SHAs are masked by an insta filter. Keys drive the app as a user would.

use std::sync::Arc;

use capstan_tui::actions::KeyMap;
use capstan_tui::app::Mode;
use capstan_tui::{App, Event, Request, Theme};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde_json::{json, Value};

const NOW: &str = "2026-01-01T12:00:00Z";

fn ago(secs: i64) -> String {
    let now = chrono::DateTime::parse_from_rfc3339(NOW).unwrap();
    (now - chrono::Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn meta(ns: &str, name: &str, uid: &str, age: i64) -> Value {
    json!({"namespace": ns, "name": name, "uid": uid, "creationTimestamp": ago(age)})
}

fn pod(name: &str, rs_uid: &str, ip: &str, status: Value, age: i64) -> Value {
    json!({"kind": "Pod", "metadata": {"namespace": "demo", "name": name, "uid": format!("uid-{name}"),
        "creationTimestamp": ago(age), "labels": {"app": "hello"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "hello-abc", "uid": rs_uid}]},
        "spec": {"nodeName": "node-a", "containers": [{"name": "hello", "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
        "status": status.as_object().cloned().map(|mut m| { m.insert("podIP".into(), json!(ip)); Value::Object(m) }).unwrap()})
}

/// A small cluster mid-rollout: an app at its third commit, a Deployment going from v1 to v2.
fn fixture() -> App {
    let mut app = App::new(KeyMap::defaults(), false, "https://127.0.0.1:6443");
    app.now = Some(
        chrono::DateTime::parse_from_rfc3339(NOW)
            .unwrap()
            .with_timezone(&chrono::Utc),
    );
    let s = &mut app.store;
    s.insert(
        "applications",
        json!({"kind": "Application", "metadata": meta("default", "shop", "uid-app", 3600),
            "spec": {"source": {"repoURL": "/srv/git/shop", "path": "deploy"}},
            "status": {"sync": {"status": "Synced", "revision": "3c0ffee1234567890"},
                "health": {"status": "Progressing"},
                "operationState": {"phase": "Succeeded", "finishedAt": ago(5), "message": "synced 3c0ffee"},
                "syncWindow": {"open": false, "message": "sync window: deny (0 17 * * 5 for 64h) until 2026-12-07T09:00:00Z"},
                "resources": [
                    {"kind": "Deployment", "namespace": "demo", "name": "hello", "status": "Synced", "health": {"status": "Progressing"}},
                    {"kind": "Service", "namespace": "demo", "name": "hello", "status": "Synced", "health": {"status": "Healthy"}},
                    {"kind": "ConfigMap", "namespace": "demo", "name": "hello-config", "status": "Synced", "health": {"status": "Healthy"}}]}}),
    );
    for (seq, sha, msg, trigger, result, health, age) in [
        (
            1,
            "a1b2c3d4e5f6a7b8",
            "initial manifests",
            "startup",
            "Succeeded",
            "Healthy",
            3000,
        ),
        (
            2,
            "b2c3d4e5f6a7b8c9",
            "hello v2",
            "push",
            "Succeeded",
            "Degraded",
            600,
        ),
        (
            3,
            "3c0ffee1234567890",
            "Roll back shop to a1b2c3d",
            "rollback",
            "Succeeded",
            "Progressing",
            5,
        ),
    ] {
        s.insert(
            "syncrecords",
            json!({"kind": "SyncRecord", "metadata": meta("default", &format!("shop-{seq}"), &format!("uid-rec-{seq}"), age),
                "spec": {"application": "shop", "sequence": seq, "revision": sha, "author": "Ada Lovelace <ada@example.com>",
                    "message": msg, "trigger": trigger, "result": result, "health": health, "finishedAt": ago(age),
                    "created": if seq == 1 { json!(["a", "b", "c"]) } else { json!([]) },
                    "updated": if seq == 1 { json!([]) } else { json!(["deploy"]) }, "pruned": []}}),
        );
    }
    s.insert(
        "deployments",
        json!({"kind": "Deployment", "metadata": {"namespace": "demo", "name": "hello", "uid": "uid-dep", "generation": 3,
                "creationTimestamp": ago(3600)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "hello"}}},
            "status": {"observedGeneration": 3, "replicas": 4, "updatedReplicas": 2, "readyReplicas": 3, "availableReplicas": 3,
                "conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}}),
    );
    s.insert(
        "deployments",
        json!({"kind": "Deployment", "metadata": {"namespace": "kube-system", "name": "coredns", "uid": "uid-dns", "generation": 1,
                "creationTimestamp": ago(86400 * 3)},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1,
                "conditions": [{"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}}),
    );
    for (name, uid, rev, want, ready, age) in [
        ("hello-old", "uid-rs-old", "2", 2, 2, 3000),
        ("hello-new", "uid-rs-new", "3", 2, 1, 5),
    ] {
        s.insert(
            "replicasets",
            json!({"kind": "ReplicaSet", "metadata": {"namespace": "demo", "name": name, "uid": uid, "creationTimestamp": ago(age),
                    "annotations": {"deployment.kubernetes.io/revision": rev},
                    "ownerReferences": [{"kind": "Deployment", "name": "hello", "uid": "uid-dep"}]},
                "spec": {"replicas": want}, "status": {"replicas": want, "readyReplicas": ready}}),
        );
    }
    let running = json!({"phase": "Running", "containerStatuses": [{"name": "hello", "ready": true, "restartCount": 0, "state": {"running": {}}}]});
    s.insert(
        "pods",
        pod(
            "hello-old-x1",
            "uid-rs-old",
            "10.244.0.2",
            running.clone(),
            3000,
        ),
    );
    s.insert(
        "pods",
        pod(
            "hello-old-x2",
            "uid-rs-old",
            "10.244.0.3",
            running.clone(),
            2990,
        ),
    );
    s.insert(
        "pods",
        pod("hello-new-y1", "uid-rs-new", "10.244.0.4", running, 5),
    );
    s.insert(
        "pods",
        pod(
            "hello-new-y2",
            "uid-rs-new",
            "10.244.0.5",
            json!({"phase": "Running", "containerStatuses": [{"name": "hello", "ready": false, "restartCount": 2,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
            4,
        ),
    );
    s.insert(
        "services",
        json!({"kind": "Service", "metadata": meta("demo", "hello", "uid-svc", 3600),
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "selector": {"app": "hello"},
                "ports": [{"port": 8080, "protocol": "TCP", "nodePort": 30080}]}}),
    );
    s.insert(
        "services",
        json!({"kind": "Service", "metadata": meta("demo", "front", "uid-lb", 60),
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.11", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 31000}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "127.97.0.1"}]}}}),
    );
    s.insert(
        "nodes",
        json!({"kind": "Node", "metadata": {"name": "node-a", "uid": "uid-node", "creationTimestamp": ago(7200)},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True"}, {"type": "MemoryPressure", "status": "False"}]}}),
    );
    s.insert(
        "nodes",
        json!({"kind": "Node", "metadata": {"name": "node-b", "uid": "uid-node-b", "creationTimestamp": ago(7200)},
            "spec": {"unschedulable": true},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "True"}]}}),
    );
    for (i, (ty, reason, obj, msg, age)) in [
        (
            "Normal",
            "ScalingReplicaSet",
            "hello",
            "Scaled up replica set hello-new to 2",
            6,
        ),
        (
            "Warning",
            "BackOff",
            "hello-new-y2",
            "Back-off restarting failed container hello",
            2,
        ),
        (
            "Normal",
            "Scheduled",
            "hello-new-y1",
            "Successfully assigned demo/hello-new-y1 to node-a",
            5,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let kind = if obj == "hello" { "Deployment" } else { "Pod" };
        let uid = if obj == "hello" {
            "uid-dep".to_string()
        } else {
            format!("uid-{obj}")
        };
        s.insert(
            "events",
            json!({"kind": "Event", "metadata": meta("demo", &format!("ev{i}"), &format!("uid-ev{i}"), age),
                "type": ty, "reason": reason, "message": msg, "lastTimestamp": ago(age),
                "involvedObject": {"kind": kind, "name": obj, "uid": uid}}),
        );
    }
    s.insert(
        "jobs",
        json!({"kind": "Job", "metadata": meta("demo", "report-29000000", "uid-job", 120),
            "spec": {"completions": 1},
            "status": {"succeeded": 1, "startTime": ago(120), "completionTime": ago(117),
                "conditions": [{"type": "Complete", "status": "True"}]}}),
    );
    s.insert(
        "cronjobs",
        json!({"kind": "CronJob", "metadata": meta("demo", "report", "uid-cj", 3600),
            "spec": {"schedule": "*/5 * * * *"}, "status": {"lastScheduleTime": ago(120)}}),
    );
    s.insert(
        "configmaps",
        json!({"kind": "ConfigMap", "metadata": meta("demo", "hello-config", "uid-cm", 3600),
            "data": {"MESSAGE": "Hello", "LEVEL": "info"}}),
    );
    s.insert(
        "secrets",
        json!({"kind": "Secret", "metadata": meta("demo", "db", "uid-sec", 3600), "type": "Opaque",
            "data": {"password": "aHVudGVyMg=="}}),
    );
    app
}

fn render(app: &mut App, w: u16, h: u16, color: bool) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| capstan_tui::draw::draw(f, app, Theme { color }))
        .unwrap();
    format!("{}", t.backend())
}

fn key(app: &mut App, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
}

fn typed(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, KeyCode::Char(c));
    }
}

fn command(app: &mut App, cmd: &str) {
    key(app, KeyCode::Char(':'));
    typed(app, cmd);
    key(app, KeyCode::Enter);
}

macro_rules! snap {
    ($name:expr, $screen:expr) => {
        insta::with_settings!({filters => vec![(r"\b[0-9a-f]{7}\b", "[sha]")]}, {
            insta::assert_snapshot!($name, $screen);
        });
    };
}

#[test]
fn applications_and_an_apps_objects() {
    let mut app = fixture();
    snap!("applications", render(&mut app, 100, 12, true));
    key(&mut app, KeyCode::Enter);
    snap!("app_objects", render(&mut app, 100, 12, true));
}

#[test]
fn history_with_the_rollout_panel_and_a_rollback_confirmation() {
    let mut app = fixture();
    typed(&mut app, "h");
    snap!("history", render(&mut app, 110, 16, true));
    key(&mut app, KeyCode::Down);
    key(&mut app, KeyCode::Down);
    typed(&mut app, "R");
    assert_eq!(
        app.take_requests(),
        vec![Request::PrepareRollback {
            namespace: "default".into(),
            app: "shop".into(),
            revision: "a1b2c3d4e5f6a7b8".into()
        }]
    );
    app.handle_event(Event::Confirm {
        title: "Roll shop back to a1b2c3d? A revert commit with this change is written to its repository:".into(),
        body: "--- a/deploy/hello.yaml\n+++ b/deploy/hello.yaml\n@@ -1,2 +1,2 @@\n-  value: \"v2\"\n+  value: \"v1\"".into(),
        request: Request::Rollback {
            namespace: "default".into(),
            app: "shop".into(),
            revision: "a1b2c3d4e5f6a7b8".into(),
        },
    });
    snap!("rollback_confirm", render(&mut app, 110, 16, true));
    typed(&mut app, "y");
    assert!(matches!(
        app.take_requests().as_slice(),
        [Request::Rollback { revision, .. }] if revision == "a1b2c3d4e5f6a7b8"
    ));
    // Enter on a commit: what its sync changed, then the commit's diff as the binary sends it.
    key(&mut app, KeyCode::Enter);
    assert!(matches!(
        app.take_requests().as_slice(),
        [Request::CommitDiff { revision, .. }] if revision == "a1b2c3d4e5f6a7b8"
    ));
    app.handle_event(Event::Text {
        title: "commit a1b2c3d".into(),
        body: "commit a1b2c3d4e5f6a7b8\nAuthor: Ada Lovelace <ada@example.com>\n\n    initial manifests\n\ndiff --git a/deploy/hello.yaml b/deploy/hello.yaml\n+kind: Deployment".into(),
    });
    snap!("commit_diff", render(&mut app, 90, 18, true));
}

#[test]
fn workloads_views() {
    let mut app = fixture();
    command(&mut app, "deploy");
    snap!("deployments", render(&mut app, 120, 12, true));
    key(&mut app, KeyCode::Enter);
    snap!("deployment_pods", render(&mut app, 110, 14, true));
    command(&mut app, "rs");
    snap!("replicasets", render(&mut app, 100, 12, true));
    command(&mut app, "job");
    snap!("jobs", render(&mut app, 100, 11, true));
    command(&mut app, "cj");
    snap!("cronjobs", render(&mut app, 100, 11, true));
}

#[test]
fn services_nodes_events_and_config_views() {
    let mut app = fixture();
    command(&mut app, "svc");
    snap!("services", render(&mut app, 110, 12, true));
    command(&mut app, "no");
    snap!("nodes", render(&mut app, 100, 12, true));
    command(&mut app, "ev");
    snap!("events", render(&mut app, 120, 13, true));
    command(&mut app, "cm");
    snap!("configmaps", render(&mut app, 80, 11, true));
    command(&mut app, "secret");
    let hidden = render(&mut app, 100, 11, true);
    assert!(!hidden.contains("hunter2"), "{hidden}");
    snap!("secrets_hidden", hidden);
    typed(&mut app, "x");
    assert!(render(&mut app, 100, 11, true).contains("password=hunter2"));
}

#[test]
fn pods_filter_describe_yaml_and_logs() {
    let mut app = fixture();
    command(&mut app, "po");
    key(&mut app, KeyCode::Char('/'));
    typed(&mut app, "new");
    key(&mut app, KeyCode::Enter);
    snap!("pods_filtered", render(&mut app, 110, 13, true));
    key(&mut app, KeyCode::Down);
    typed(&mut app, "d");
    snap!("describe_pod", render(&mut app, 100, 30, true));
    key(&mut app, KeyCode::Esc);
    typed(&mut app, "l");
    let reqs = app.take_requests();
    let Some(Request::Logs { stream, pod, .. }) = reqs.first().cloned() else {
        panic!("{reqs:?}")
    };
    assert_eq!(pod, "hello-new-y2");
    app.handle_event(Event::Log {
        stream,
        lines: (1..=30).map(|i| format!("line {i}: serving")).collect(),
    });
    snap!("logs", render(&mut app, 80, 12, true));
    key(&mut app, KeyCode::Esc);
    assert_eq!(app.take_requests(), vec![Request::StopLogs { stream }]);
    command(&mut app, "cm");
    typed(&mut app, "y");
    snap!("yaml_configmap", render(&mut app, 80, 16, true));
}

#[test]
fn help_readonly_and_small_terminals_without_colour() {
    let mut app = fixture();
    typed(&mut app, "?");
    assert!(matches!(app.mode, Mode::Help));
    snap!("help", render(&mut app, 110, 34, true));
    key(&mut app, KeyCode::Esc);
    // 80x24 with no colours: everything still fits and reads.
    command(&mut app, "deploy");
    snap!("deployments_80x24_plain", render(&mut app, 80, 24, false));
    // Read-only: the mutating actions are neither shown nor carried out.
    let mut ro = fixture();
    ro.readonly = true;
    command(&mut ro, "deploy");
    let screen = render(&mut ro, 120, 12, true);
    assert!(
        screen.contains("[read-only]") && !screen.contains("scale") && !screen.contains("delete"),
        "{screen}"
    );
    ro.handle_key(KeyEvent::new(KeyCode::Char('d'), KeyModifiers::CONTROL));
    typed(&mut ro, "s");
    assert!(ro.take_requests().is_empty());
    assert!(matches!(ro.mode, Mode::Normal));
}

#[test]
fn delete_and_scale_ask_first_and_bad_input_is_refused() {
    let mut app = fixture();
    command(&mut app, "deploy");
    app.handle_key(KeyEvent::new(KeyCode::Char('d'), KeyModifiers::CONTROL));
    snap!("delete_confirm", render(&mut app, 100, 13, true));
    typed(&mut app, "n");
    assert!(app.take_requests().is_empty());
    typed(&mut app, "s");
    key(&mut app, KeyCode::Backspace);
    typed(&mut app, "x");
    key(&mut app, KeyCode::Enter);
    assert!(app.take_requests().is_empty());
    let screen = render(&mut app, 100, 13, true);
    assert!(
        screen.contains("replicas must be a whole number"),
        "{screen}"
    );
    typed(&mut app, "s");
    key(&mut app, KeyCode::Backspace);
    typed(&mut app, "5");
    key(&mut app, KeyCode::Enter);
    assert_eq!(
        app.take_requests(),
        vec![Request::Scale {
            kind: "deployments".into(),
            namespace: "demo".into(),
            name: "hello".into(),
            replicas: 5
        }]
    );
}

#[test]
fn live_changes_and_a_lost_connection_show_up() {
    let mut app = fixture();
    command(&mut app, "deploy");
    let mut dep = app
        .store
        .get("deployments", "demo", "hello")
        .unwrap()
        .as_ref()
        .clone();
    dep["status"]["updatedReplicas"] = json!(3);
    dep["status"]["availableReplicas"] = json!(3);
    dep["status"]["replicas"] = json!(3);
    app.handle_event(Event::Applied {
        kind: "deployments".into(),
        object: Arc::new(dep),
    });
    app.handle_event(Event::Connection(Some("connection refused".into())));
    let screen = render(&mut app, 120, 12, true);
    assert!(screen.contains("██████████ 3/3"), "{screen}");
    assert!(
        screen.contains("disconnected: connection refused"),
        "{screen}"
    );
    app.handle_event(Event::Connection(None));
    assert!(render(&mut app, 120, 12, true).contains("connected"));
}

#[test]
fn custom_kinds_of_crds_are_listed_with_their_printer_columns() {
    let mut app = fixture();
    command(&mut app, "certificates");
    assert!(
        render(&mut app, 120, 12, false).contains("unknown command or kind"),
        "not a kind before the cluster serves it"
    );
    app.handle_event(Event::Kinds(vec![capstan_tui::kinds::CustomKind {
        resource: "certificates.cert-manager.io".into(),
        title: "Certificate".into(),
        aliases: vec![
            "certificates".into(),
            "certificate".into(),
            "cert".into(),
            "certs".into(),
        ],
        namespaced: true,
        columns: vec!["Ready".into(), "Secret".into(), "Age".into()],
    }]));
    let cert = json!({"kind": "Certificate", "metadata": meta("demo", "web", "uid-cert", 600),
        "__cells": ["True", "web-tls", ago(600)]});
    app.handle_event(Event::Listed {
        kind: "certificates.cert-manager.io".into(),
        objects: vec![Arc::new(cert)],
    });
    command(&mut app, "cert");
    let screen = render(&mut app, 120, 12, false);
    for want in ["NAMESPACE", "READY", "SECRET", "web-tls", "True", "10m"] {
        assert!(screen.contains(want), "{want} in\n{screen}");
    }
}
