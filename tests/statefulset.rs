//! StatefulSets end to end on a real `capstan up` with the real kubectl: ordered start, stable names and claims, a
//! deleted pod coming back under its name, scale-down from the top keeping claims, and partitioned rolling updates
//! from the highest ordinal down, with history and undo.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{ok, within, Server};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn web(replicas: u32, version: &str, partition: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  replicas: {replicas}
  serviceName: web
  selector:
    matchLabels: {{app: web}}
  updateStrategy:
    rollingUpdate: {{partition: {partition}}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: capstan/demo-app
        command: ["capstan", "demo-app"]
        env:
        - {{name: VERSION, value: "{version}"}}
        readinessProbe:
          httpGet: {{path: /healthz, port: 8080}}
          periodSeconds: 1
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 1Gi
"#
    )
}

/// The set's live pods: name -> (ready, VERSION, uid).
fn pods(s: &Server) -> BTreeMap<String, (bool, String, String)> {
    let (_, list) = s.call(
        "GET",
        "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
        "",
        "",
    );
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            (
                p["metadata"]["name"].as_str().unwrap().to_string(),
                (
                    ready,
                    p["spec"]["containers"][0]["env"][0]["value"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    p["metadata"]["uid"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect()
}

fn claims(s: &Server) -> Vec<String> {
    let (_, list) = s.call(
        "GET",
        "/api/v1/namespaces/default/persistentvolumeclaims",
        "",
        "",
    );
    let mut names: Vec<String> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn versions(s: &Server) -> Vec<(String, String)> {
    pods(s).into_iter().map(|(n, (_, v, _))| (n, v)).collect()
}

#[test]
fn a_statefulset_starts_in_order_keeps_names_and_claims_and_updates_from_the_top() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    s.kubectl_apply(&k, &web(3, "v1", 0));
    // Ordered start: a pod exists only once every lower ordinal is Ready.
    let start = Instant::now();
    loop {
        let p = pods(&s);
        for i in 1..3 {
            if p.contains_key(&format!("web-{i}")) {
                let below = p.get(&format!("web-{}", i - 1));
                assert!(
                    below.is_some_and(|(ready, _, _)| *ready),
                    "web-{i} exists before web-{} is Ready: {p:?}",
                    i - 1
                );
            }
        }
        if p.len() == 3 && p.values().all(|(r, _, _)| *r) {
            break;
        }
        assert!(start.elapsed() < LONG, "not all Ready: {p:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "statefulset/web", "--timeout=60s"],
    ));
    assert_eq!(claims(&s), ["data-web-0", "data-web-1", "data-web-2"]);
    let pod = s
        .call("GET", "/api/v1/namespaces/default/pods/web-1", "", "")
        .1;
    assert_eq!(pod["spec"]["hostname"], "web-1");
    assert_eq!(pod["spec"]["subdomain"], "web");
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "data")
        .cloned()
        .unwrap();
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], "data-web-1");

    // A deleted pod comes back under its name (a new pod), with the same claim.
    let old_uid = pods(&s)["web-1"].2.clone();
    ok(&s.kubectl(&k, &["delete", "pod", "web-1", "--wait=false"]));
    within(LONG, "web-1 back and Ready", || {
        let p = pods(&s);
        p.get("web-1")
            .is_some_and(|(ready, _, uid)| *ready && *uid != old_uid)
            .then_some(())
    });
    assert_eq!(claims(&s).len(), 3);

    // A partitioned update replaces only ordinals >= partition, from the top; then the rest.
    s.kubectl_apply(&k, &web(3, "v2", 2));
    within(LONG, "web-2 on v2 only", || {
        let v = versions(&s);
        (v == [
            ("web-0".into(), "v1".into()),
            ("web-1".into(), "v1".into()),
            ("web-2".into(), "v2".into()),
        ] && pods(&s).values().all(|(r, _, _)| *r))
        .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        versions(&s)[0].1,
        "v1",
        "below the partition nothing changes"
    );
    s.kubectl_apply(&k, &web(3, "v2", 0));
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "statefulset/web", "--timeout=60s"],
    ));
    assert!(
        versions(&s).iter().all(|(_, v)| v == "v2"),
        "{:?}",
        versions(&s)
    );
    let st: Value = s
        .call(
            "GET",
            "/apis/apps/v1/namespaces/default/statefulsets/web",
            "",
            "",
        )
        .1["status"]
        .clone();
    assert_eq!(st["currentRevision"], st["updateRevision"], "{st}");
    assert_eq!(st["updatedReplicas"], 3, "{st}");
    let history = ok(&s.kubectl(&k, &["rollout", "history", "statefulset/web"]));
    assert!(history.contains('1') && history.contains('2'), "{history}");
    ok(&s.kubectl(&k, &["rollout", "undo", "statefulset/web"]));
    within(LONG, "undo back on v1", || {
        let p = pods(&s);
        (p.len() == 3 && p.values().all(|(r, v, _)| *r && v == "v1")).then_some(())
    });

    // Scale down from the top; claims stay.
    ok(&s.kubectl(&k, &["scale", "statefulset/web", "--replicas=1"]));
    within(LONG, "only web-0 left", || {
        (pods(&s).keys().cloned().collect::<Vec<_>>() == ["web-0"]).then_some(())
    });
    assert_eq!(claims(&s), ["data-web-0", "data-web-1", "data-web-2"]);
}
