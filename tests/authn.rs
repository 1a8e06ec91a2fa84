//! Authentication by client certificate: `capstan kubeconfig create` issues a kubeconfig whose certificate (signed
//! by the cluster CA) names the user (CN) and group (O); the real kubectl's `auth whoami` reports them through
//! SelfSubjectReview; a certificate of another CA is refused during the handshake; a token still works.

mod common;

use std::process::Command;

use common::{fails, ok, Server, BIN};

fn kubectl_as(
    k: &std::path::Path,
    kubeconfig: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    let cache = tempfile::tempdir().unwrap();
    Command::new(k)
        .env("KUBECONFIG", kubeconfig)
        .arg("--cache-dir")
        .arg(cache.path())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn kubeconfig_create_issues_a_client_certificate_that_names_the_user_and_group() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::start();
    let alice = s.data_dir().join("alice.kubeconfig");
    let out = Command::new(BIN)
        .arg("--data-dir")
        .arg(s.data_dir())
        .args([
            "kubeconfig",
            "create",
            "--user",
            "alice",
            "--group",
            "team-a",
            "--ttl",
            "1h",
            "-o",
        ])
        .arg(&alice)
        .output()
        .unwrap();
    ok(&out);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&alice).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&alice).unwrap();
    assert!(
        text.contains("client-certificate-data") && !text.contains("token:"),
        "{text}"
    );
    let who: serde_json::Value = serde_json::from_str(&ok(&kubectl_as(
        &k,
        &alice,
        &["auth", "whoami", "-o", "json"],
    )))
    .unwrap();
    assert_eq!(who["kind"], "SelfSubjectReview");
    assert_eq!(who["status"]["userInfo"]["username"], "alice");
    assert_eq!(
        who["status"]["userInfo"]["groups"],
        serde_json::json!(["team-a", "system:authenticated"])
    );
    // Capstan's own client speaks with the certificate too.
    let listed = ok(&Command::new(BIN)
        .arg("--kubeconfig")
        .arg(&alice)
        .args(["get", "namespaces"])
        .output()
        .unwrap());
    assert!(listed.contains("default"), "{listed}");
    // The admin token still works, and is the admin.
    let admin = ok(&kubectl_as(&k, &s.kubeconfig(), &["auth", "whoami"]));
    assert!(
        admin.contains("capstan-admin") && admin.contains("system:masters"),
        "{admin}"
    );

    // A certificate from another cluster's CA is no one here.
    let other = Server::start();
    let mallory = other.data_dir().join("mallory.kubeconfig");
    ok(&Command::new(BIN)
        .arg("--data-dir")
        .arg(other.data_dir())
        .args(["kubeconfig", "create", "--user", "mallory", "-o"])
        .arg(&mallory)
        .output()
        .unwrap());
    let mut kc: serde_json::Value = serde_json::to_value(
        serde_yaml_ng::from_str::<serde_yaml_ng::Value>(
            &std::fs::read_to_string(&mallory).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    // Point it at the first server (trusting its CA): the handshake refuses the stranger's certificate.
    let first: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(s.kubeconfig()).unwrap()).unwrap();
    kc["clusters"] = serde_json::to_value(&first["clusters"]).unwrap();
    std::fs::write(&mallory, serde_json::to_string(&kc).unwrap()).unwrap();
    let refused = fails(&kubectl_as(&k, &mallory, &["get", "namespaces"]));
    assert!(
        refused.contains("certificate")
            || refused.contains("Unauthorized")
            || refused.contains("tls"),
        "{refused}"
    );

    // Clear errors: two groups (one per certificate for now), and a directory without the cluster CA.
    let two = fails(
        &Command::new(BIN)
            .arg("--data-dir")
            .arg(s.data_dir())
            .args([
                "kubeconfig",
                "create",
                "--user",
                "bob",
                "--group",
                "a",
                "--group",
                "b",
            ])
            .output()
            .unwrap(),
    );
    assert!(two.contains("one group per client certificate"), "{two}");
    let empty = tempfile::tempdir().unwrap();
    let nowhere = fails(
        &Command::new(BIN)
            .arg("--data-dir")
            .arg(empty.path())
            .args(["kubeconfig", "create", "--user", "bob"])
            .output()
            .unwrap(),
    );
    assert!(
        nowhere.contains("server's kubeconfig") || nowhere.contains("no cluster CA"),
        "{nowhere}"
    );
}
