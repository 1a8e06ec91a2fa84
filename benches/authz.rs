//! Authorization cost: the same requests as the admin (`system:masters`, allowed without looking at RBAC) and as
//! a user whose rights come from a RoleBinding to `edit` (every request evaluated against the cluster's bindings),
//! through real HTTPS against a real `capstan server`: ConfigMap creates per second at 1 and 16 clients, and the
//! latency of GETs - once without and once with the audit log (`--audit-log`). Target (issue 16): RBAC and audit
//! cost less than 10%.
//!
//! Run: `cargo bench --bench authz` (`CAPSTAN_BENCH_QUICK=1` for a short run).

use std::process::Command;
use std::time::Instant;

use serde_json::json;

mod common;
use common::{pct, rate};

fn client_with(ca: &str, cert: &str, key: &str) -> reqwest::Client {
    capstan::sys::init_crypto();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = rustls_pemfile::certs(&mut cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = rustls_pemfile::private_key(&mut key.as_bytes())
        .unwrap()
        .unwrap();
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .pool_max_idle_per_host(256)
        .build()
        .unwrap()
}

/// Creates/s at 1 and 16 clients, GET p99, and the server's CPU µs per create at 1 and 16 clients, for one who.
type Measured = (Vec<f64>, f64, Vec<f64>);

#[tokio::main]
async fn main() {
    let quick = std::env::var("CAPSTAN_BENCH_QUICK").is_ok();
    let total = if quick { 1_000 } else { 10_000 };
    let plain = measure(&["server"], total).await;
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("audit.log");
    let audited = measure(&["server", "--audit-log", log.to_str().unwrap()], total).await;
    let lines = std::fs::read_to_string(&log)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    let (admin, user) = (&plain[0], &plain[1]);
    let cost = |other: &Measured, what: &str| {
        println!(
            "{what}: creates {:.1}% / {:.1}% slower at 1 / 16 clients; server CPU per create {:+.1}% / {:+.1}%; \
             GET p99 {:+.1}%",
            (1.0 - other.0[0] / admin.0[0]) * 100.0,
            (1.0 - other.0[1] / admin.0[1]) * 100.0,
            (other.2[0] / admin.2[0] - 1.0) * 100.0,
            (other.2[1] / admin.2[1] - 1.0) * 100.0,
            (other.1 / admin.1 - 1.0) * 100.0
        )
    };
    cost(user, "RBAC cost");
    cost(&audited[0], "audit cost (admin)");
    cost(&audited[1], "RBAC + audit cost");
    println!("audit log: {lines} events written");
}

/// A `capstan server` with `args`; the admin's and alice's numbers.
async fn measure(args: &[&str], total: usize) -> Vec<Measured> {
    let s = common::start(args).await;
    println!("capstan {}", args.join(" "));
    let post = |path: String, body: serde_json::Value| {
        let (c, url, auth) = (s.client.clone(), s.url.clone(), s.auth.clone());
        async move { common::post(&c, &url, &auth, &path, &body).await }
    };
    post(
        concat!("/", "api/v1/namespaces").into(),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}),
    )
    .await;
    post(
        concat!("/", "apis/rbac.authorization.k8s.io/v1/namespaces/a/rolebindings").into(),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "team-a"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"kind": "Group", "name": "team-a", "apiGroup": "rbac.authorization.k8s.io"}]}),
    )
    .await;
    // A few more bindings, as a cluster has.
    for i in 0..20 {
        post(
            concat!("/", "apis/rbac.authorization.k8s.io/v1/clusterrolebindings").into(),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": format!("other-{i}")},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"kind": "User", "name": format!("user-{i}"), "apiGroup": "rbac.authorization.k8s.io"}]}),
        )
        .await;
    }
    let kc = s.dir.path().join("alice.kubeconfig");
    let out = Command::new(env!("CARGO_BIN_EXE_capstan"))
        .arg("--data-dir")
        .arg(s.dir.path())
        .args([
            "kubeconfig",
            "create",
            "--user",
            "alice",
            "--group",
            "team-a",
            "-o",
        ])
        .arg(&kc)
        .output()
        .unwrap();
    assert!(out.status.success());
    let cfg = capstan::client::config::Kubeconfig::load(&kc)
        .unwrap()
        .target()
        .unwrap();
    let (cert, key) = cfg.credentials.certificate.unwrap();
    let ca = std::fs::read_to_string(s.dir.path().join("ca.crt")).unwrap();
    let alice = client_with(&ca, &cert, &key);

    // Rounds alternate between the two (admin, alice, admin, alice, ...) so that neither gains from running first
    // on a smaller store or a cooler machine; each figure is the median of its rounds. Besides the rate, the
    // server's own CPU time per create, which the benchmark's client (on the same cores) does not blur.
    let rounds = if total >= 5_000 { 5 } else { 3 };
    let whos = [
        (
            "admin (system:masters)",
            s.client.clone(),
            Some(s.auth.clone()),
        ),
        ("alice (RBAC: edit via a RoleBinding)", alice.clone(), None),
    ];
    let per_round = total / rounds;
    let mut rates = vec![vec![Vec::new(); 2]; whos.len()];
    let mut cpu = vec![vec![Vec::new(); 2]; whos.len()];
    for round in 0..rounds {
        for (w, (who, client, auth)) in whos.iter().enumerate() {
            for (c, clients) in [1usize, 16].into_iter().enumerate() {
                let (cl, url, auth) = (client.clone(), s.url.clone(), auth.clone());
                let tag = format!("{}-{clients}-{round}", who.len());
                let before = common::cpu_secs(s.pid);
                let r = rate(clients, per_round, move |i| {
                    let (c, url, auth, tag) = (cl.clone(), url.clone(), auth.clone(), tag.clone());
                    async move {
                        let mut req = c
                            .post(format!("{url}/api/v1/namespaces/a/configmaps"))
                            .json(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                                "metadata": {"name": format!("cm-{tag}-{i}")}, "data": {"k": "v"}}));
                        if let Some(a) = &auth {
                            req = req.header("Authorization", a);
                        }
                        let r = req.send().await.unwrap();
                        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
                    }
                })
                .await;
                cpu[w][c].push((common::cpu_secs(s.pid) - before) * 1e6 / per_round as f64);
                rates[w][c].push(r);
            }
        }
    }
    let mut results = Vec::new();
    for (w, (who, client, auth)) in whos.iter().enumerate() {
        let mut lat = Vec::new();
        for _ in 0..(total / 5) {
            let mut req = client.get(format!(
                "{}/api/v1/namespaces/a/configmaps/cm-{}-1-0-0",
                s.url,
                who.len()
            ));
            if let Some(a) = &auth {
                req = req.header("Authorization", a);
            }
            let t = Instant::now();
            let r = req.send().await.unwrap();
            assert!(r.status().is_success());
            r.bytes().await.unwrap();
            lat.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (p50, p99) = (pct(&mut lat.clone(), 0.5), pct(&mut lat, 0.99));
        let line: Vec<f64> = rates[w].iter_mut().map(|r| pct(r, 0.5)).collect();
        let us: Vec<f64> = cpu[w].iter_mut().map(|r| pct(r, 0.5)).collect();
        println!(
            "{who}: creates/s {:.0} (1 client), {:.0} (16 clients); server CPU per create {:.0} / {:.0} µs; \
             GET p50 {p50:.3} ms, p99 {p99:.3} ms",
            line[0], line[1], us[0], us[1]
        );
        results.push((line, p99, us));
    }
    results
}
