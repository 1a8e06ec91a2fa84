//! CustomResourceDefinition benchmarks through real HTTPS against a real `capstan server` process: how long a CRD
//! takes from its create to Established (a small one, and prometheus-operator's 833 KB Prometheus CRD), and creates per
//! second of custom objects with a large schema (Prometheus) against ConfigMaps, in the same run.
//!
//! Run: `cargo bench --bench crds` (`CAPSTAN_BENCH_QUICK=1` for a short run).

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

mod common;
use common::{pct, rate, rss_kb};

fn fixture(path: &str) -> Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/crds")
        .join(path);
    let text = std::fs::read_to_string(&p).unwrap();
    let de = serde_yaml_ng::Deserializer::from_str(&text).next().unwrap();
    Value::deserialize(de).unwrap()
}

/// POSTs a CRD and polls it until Established; the time from sending the create to seeing the condition.
async fn create_until_established(s: &common::Capstan, crd: &Value) -> Duration {
    let base = format!(
        "{}/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        s.url
    );
    let name = crd["metadata"]["name"].as_str().unwrap().to_string();
    let start = Instant::now();
    let r = s
        .client
        .post(&base)
        .header("Authorization", &s.auth)
        .json(crd)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "create {name}: {}",
        r.text().await.unwrap()
    );
    loop {
        let v: Value = s
            .client
            .get(format!("{base}/{name}"))
            .header("Authorization", &s.auth)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let established = v["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        });
        if established {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

#[tokio::main]
async fn main() {
    let quick = std::env::var("CAPSTAN_BENCH_QUICK").is_ok();
    let scale = if quick { 4 } else { 1 };
    let s = common::start(&["server"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kb(s.pid);

    // Small CRDs: create to Established.
    let mut small = Vec::new();
    for i in 0..(40 / scale) {
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("widgets.g{i}.example.com")},
            "spec": {"group": format!("g{i}.example.com"), "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer", "default": 1}}}}}}}]}});
        small.push(create_until_established(&s, &crd).await.as_secs_f64() * 1000.0);
    }
    println!(
        "small CRD create -> Established: p50 {:.1} ms, p99 {:.1} ms ({} CRDs)",
        pct(&mut small, 0.5),
        pct(&mut small, 0.99),
        small.len()
    );
    let prometheus = fixture("prometheus-operator/monitoring.coreos.com_prometheuses.yaml");
    let big = create_until_established(&s, &prometheus).await;
    println!(
        "Prometheus CRD ({} KB as JSON) create -> Established: {:.1} ms",
        prometheus.to_string().len() / 1024,
        big.as_secs_f64() * 1000.0
    );
    let with_crds = rss_kb(s.pid);

    // Creates per second: Prometheus objects (validated, pruned and defaulted against the big schema), then as many
    // ConfigMaps of about the same content.
    let sample = fixture("prometheus-operator/samples/prometheus.yaml");
    for conc in [1usize, 16] {
        let total = if conc == 1 {
            1000 / scale
        } else {
            4000 / scale
        };
        let (c, url, auth, sample) = (
            s.client.clone(),
            s.url.clone(),
            s.auth.clone(),
            sample.clone(),
        );
        let proms = rate(conc, total, move |i| {
            let (c, url, auth) = (c.clone(), url.clone(), auth.clone());
            let mut body = sample.clone();
            body["metadata"]["name"] = json!(format!("p{conc}-{i}"));
            async move {
                let r = c
                    .post(format!(
                        "{url}/apis/monitoring.coreos.com/v1/namespaces/default/prometheuses"
                    ))
                    .header("Authorization", auth)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success(), "{}", r.text().await.unwrap());
            }
        })
        .await;
        let (c, url, auth) = (s.client.clone(), s.url.clone(), s.auth.clone());
        let cms = rate(conc, total, move |i| {
            let (c, url, auth) = (c.clone(), url.clone(), auth.clone());
            async move {
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("c{conc}-{i}"), "labels": {"prometheus": "shards"}},
                    "data": {"serviceAccountName": "prometheus", "replicas": "2"}});
                let r = c.post(format!("{url}/api/v1/namespaces/default/configmaps"))
                    .header("Authorization", auth).json(&body).send().await.unwrap();
                assert!(r.status().is_success());
            }
        })
        .await;
        println!(
            "creates/s with {conc} client(s): Prometheus {proms:.0} vs ConfigMap {cms:.0} ({:.2}x)",
            proms / cms
        );
    }
    println!(
        "server RSS: idle {:.1} MB, after the CRDs {:.1} MB, at the end {:.1} MB",
        idle as f64 / 1024.0,
        with_crds as f64 / 1024.0,
        rss_kb(s.pid) as f64 / 1024.0
    );
}
