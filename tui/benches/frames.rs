//! Frame time and memory of the TUI with a large cluster: 5,000 pods (100 Deployments of 50 in 20 namespaces, on 50
//! nodes) in the store, one pod changing before every frame as a watch would report it, drawn into a 200x50
//! TestBackend (the terminal's own write of the changed cells is not included). Reports p50/p99/max per view and the
//! resident memory the store adds. Run: `cargo bench -p capstan-tui --bench frames`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_tui::actions::KeyMap;
use capstan_tui::{App, Event, Theme};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use serde_json::{json, Value};

const PODS: usize = 5000;
const FRAMES: usize = 600;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4)
}

fn pod(i: usize, restarts: u64) -> Value {
    let dep = i / 50;
    json!({"kind": "Pod", "metadata": {"namespace": format!("team-{}", dep % 20), "name": format!("web-{dep}-{i}"),
            "uid": format!("pod-{i}"), "creationTimestamp": "2026-01-01T11:00:00Z", "labels": {"app": format!("web-{dep}")},
            "ownerReferences": [{"kind": "ReplicaSet", "name": format!("web-{dep}-rs"), "uid": format!("rs-{dep}")}]},
        "spec": {"nodeName": format!("node-{}", i % 50), "containers": [{"name": "web",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]},
        "status": {"phase": "Running", "podIP": format!("10.244.{}.{}", i / 250, i % 250 + 2),
            "containerStatuses": [{"name": "web", "ready": true, "restartCount": restarts, "state": {"running": {}}}]}})
}

fn cluster() -> App {
    let mut app = App::new(KeyMap::defaults(), false, "https://127.0.0.1:6443");
    for i in 0..PODS {
        app.store.insert("pods", pod(i, 0));
    }
    for d in 0..PODS / 50 {
        app.store.insert(
            "deployments",
            json!({"kind": "Deployment", "metadata": {"namespace": format!("team-{}", d % 20), "name": format!("web-{d}"),
                "uid": format!("dep-{d}"), "generation": 1, "creationTimestamp": "2026-01-01T11:00:00Z"},
                "spec": {"replicas": 50}, "status": {"observedGeneration": 1, "replicas": 50, "updatedReplicas": 50,
                "readyReplicas": 50, "availableReplicas": 50}}),
        );
        app.store.insert(
            "replicasets",
            json!({"kind": "ReplicaSet", "metadata": {"namespace": format!("team-{}", d % 20), "name": format!("web-{d}-rs"),
                "uid": format!("rs-{d}"), "annotations": {"deployment.kubernetes.io/revision": "1"},
                "ownerReferences": [{"kind": "Deployment", "name": format!("web-{d}"), "uid": format!("dep-{d}")}]},
                "spec": {"replicas": 50}, "status": {"replicas": 50, "readyReplicas": 50}}),
        );
    }
    for n in 0..50 {
        app.store.insert(
            "nodes",
            json!({"kind": "Node", "metadata": {"name": format!("node-{n}"), "uid": format!("node-{n}")},
                "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "pods": "110"},
                    "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
    }
    app
}

fn command(app: &mut App, cmd: &str) {
    app.handle_key(KeyEvent::new(KeyCode::Char(':'), KeyModifiers::NONE));
    for c in cmd.chars() {
        app.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
    app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
}

fn measure(app: &mut App, label: &str) {
    let mut term = Terminal::new(TestBackend::new(200, 50)).unwrap();
    let theme = Theme { color: true };
    let mut times = Vec::with_capacity(FRAMES);
    for f in 0..FRAMES {
        // A watch event before each frame: one pod restarts.
        app.handle_event(Event::Applied {
            kind: "pods".into(),
            object: Arc::new(pod((f * 37) % PODS, f as u64)),
        });
        if f % 3 == 0 {
            app.handle_key(KeyEvent::new(KeyCode::Down, KeyModifiers::NONE));
        }
        let t = Instant::now();
        term.draw(|fr| capstan_tui::draw::draw(fr, app, theme))
            .unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    let pct = |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<34} p50 {:>6.2} ms   p99 {:>6.2} ms   max {:>6.2} ms   ({FRAMES} frames)",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(*times.last().unwrap())
    );
}

fn main() {
    let before = rss_kib();
    let mut app = cluster();
    let after = rss_kib();
    println!(
        "store of {PODS} pods, {} deployments, 50 nodes: +{:.1} MiB resident ({:.1} MiB in all)",
        PODS / 50,
        (after.saturating_sub(before)) as f64 / 1024.0,
        after as f64 / 1024.0
    );
    command(&mut app, "po");
    measure(&mut app, "pods, all namespaces");
    app.handle_key(KeyEvent::new(KeyCode::Char('/'), KeyModifiers::NONE));
    for c in "web-7".chars() {
        app.handle_key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE));
    }
    app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    measure(&mut app, "pods, filtered");
    command(&mut app, "deploy");
    measure(&mut app, "deployments (rollout bars)");
    app.handle_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    measure(&mut app, "one deployment's pods");
    command(&mut app, "no");
    measure(&mut app, "nodes (requests summed from pods)");
    println!(
        "resident memory at the end: {:.1} MiB",
        rss_kib() as f64 / 1024.0
    );
}
