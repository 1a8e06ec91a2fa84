//! Volumes end to end on a real `capstan up`: a ConfigMap mounted as files that change when the ConfigMap does, an
//! emptyDir shared by two containers, and a StatefulSet whose pods keep their data in claims provisioned by the
//! built-in `local-path` class - surviving the pod's deletion - and a projected volume of every source, with the real
//! kubectl.

mod common;

use std::time::Duration;

use common::{ok, within, Server};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn logs(s: &Server, k: &std::path::Path, pod: &str, container: &str) -> String {
    let out = s.kubectl(k, &["logs", pod, "-c", container]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn configmap_files_follow_their_configmap_and_an_empty_dir_is_shared() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    // Mount points inside the test's own directory: nothing is created elsewhere on the machine.
    let mnt = s.dir.path().join("mnt");
    let (cfg, shared) = (mnt.join("config"), mnt.join("shared"));
    s.kubectl_apply(
        &k,
        &format!(
            r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: greeting
data:
  greeting: hello
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: cfg
    configMap:
      name: greeting
  - name: scratch
    emptyDir: {{}}
  containers:
  - name: reader
    image: none
    command: ["sh", "-c", "while true; do echo \"says $(cat {cfg}/greeting)\"; sleep 0.3; done"]
    volumeMounts:
    - {{name: cfg, mountPath: "{cfg}", readOnly: true}}
  - name: writer
    image: none
    command: ["sh", "-c", "echo from-writer > {shared}/note; sleep 600"]
    volumeMounts:
    - {{name: scratch, mountPath: "{shared}"}}
  - name: peer
    image: none
    command: ["sh", "-c", "while ! cat {shared}/note; do sleep 0.2; done; sleep 600"]
    volumeMounts:
    - {{name: scratch, mountPath: "{shared}"}}
"#,
            cfg = cfg.display(),
            shared = shared.display()
        ),
    );
    within(LONG, "the reader sees the ConfigMap", || {
        logs(&s, &k, "reader", "reader")
            .contains("says hello")
            .then_some(())
    });
    within(LONG, "the peer reads what the writer wrote", || {
        logs(&s, &k, "reader", "peer")
            .contains("from-writer")
            .then_some(())
    });
    // The mounts are the containers' own: the machine's directories stay empty.
    assert!(
        std::fs::read_dir(&cfg).map(|d| d.count()).unwrap_or(0) == 0,
        "the host sees no projected files"
    );
    // A change to the ConfigMap reaches the running container.
    ok(&s.kubectl(
        &k,
        &[
            "patch",
            "configmap",
            "greeting",
            "-p",
            r#"{"data":{"greeting":"bonjour"}}"#,
        ],
    ));
    within(LONG, "the reader sees the change", || {
        logs(&s, &k, "reader", "reader")
            .contains("says bonjour")
            .then_some(())
    });
    // Read-only means read-only.
    let pod = s
        .call("GET", "/api/v1/namespaces/default/pods/reader", "", "")
        .1;
    assert_eq!(pod["status"]["phase"], "Running", "{pod}");
}

fn claims(s: &Server) -> Vec<Value> {
    let (_, list) = s.call(
        "GET",
        "/api/v1/namespaces/default/persistentvolumeclaims",
        "",
        "",
    );
    list["items"].as_array().cloned().unwrap_or_default()
}

#[test]
fn statefulset_pods_keep_their_data_in_provisioned_claims() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    let data = s.dir.path().join("mnt").join("data");
    s.kubectl_apply(
        &k,
        &format!(
            r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
spec:
  replicas: 3
  serviceName: web
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: none
        command: ["sh", "-c", "[ -f {d}/ordinal ] || echo $HOSTNAME > {d}/ordinal; echo boot >> {d}/boots; sleep 600"]
        volumeMounts:
        - {{name: data, mountPath: "{d}"}}
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 1Gi
"#,
            d = data.display()
        ),
    );
    ok(&s.kubectl(
        &k,
        &["rollout", "status", "statefulset/web", "--timeout=60s"],
    ));
    let bound = within(LONG, "three Bound claims", || {
        let c = claims(&s);
        (c.len() == 3 && c.iter().all(|c| c["status"]["phase"] == "Bound")).then_some(c)
    });
    let volume_of = |claim: &str| -> std::path::PathBuf {
        let c = bound
            .iter()
            .find(|c| c["metadata"]["name"] == claim)
            .unwrap();
        let pv_name = c["spec"]["volumeName"].as_str().unwrap();
        let pv = s
            .call(
                "GET",
                &format!("/api/v1/persistentvolumes/{pv_name}"),
                "",
                "",
            )
            .1;
        assert_eq!(pv["spec"]["storageClassName"], "local-path", "{pv}");
        std::path::PathBuf::from(pv["spec"]["hostPath"]["path"].as_str().unwrap())
    };
    let dir1 = volume_of("data-web-1");
    let read =
        |p: &std::path::Path, f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
    within(LONG, "web-1 wrote its ordinal", || {
        (read(&dir1, "ordinal").trim() == "web-1").then_some(())
    });
    assert_eq!(read(&volume_of("data-web-2"), "ordinal").trim(), "web-2");

    // web-1 comes back with its own data.
    ok(&s.kubectl(&k, &["delete", "pod", "web-1"]));
    within(LONG, "web-1 booted twice on the same claim", || {
        (read(&dir1, "boots").lines().count() == 2).then_some(())
    });
    assert_eq!(read(&dir1, "ordinal").trim(), "web-1");

    // Scaling down keeps the claims; deleting them (reclaim policy Delete) removes the volumes and their data.
    ok(&s.kubectl(&k, &["scale", "statefulset/web", "--replicas=0"]));
    within(LONG, "no pods", || {
        let (_, list) = s.call(
            "GET",
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb",
            "",
            "",
        );
        list["items"]
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(())
    });
    assert_eq!(claims(&s).len(), 3);
    ok(&s.kubectl(&k, &["delete", "pvc", "data-web-1"]));
    within(LONG, "the volume reclaimed", || {
        (!dir1.exists()).then_some(())
    });
}

#[test]
fn retained_volumes_outlive_their_claims_and_secret_values_stay_out_of_events() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    let mnt = s.dir.path().join("mnt");
    s.kubectl_apply(
        &k,
        &format!(
            r#"apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: keep
provisioner: capstan.io/local-path
reclaimPolicy: Retain
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: kept
spec:
  storageClassName: keep
  accessModes: ["ReadWriteOnce"]
  resources:
    requests:
      storage: 100Mi
---
apiVersion: v1
kind: Secret
metadata:
  name: token
stringData:
  token: s3cr3t-value-42
---
apiVersion: v1
kind: Pod
metadata:
  name: writer
spec:
  restartPolicy: Never
  volumes:
  - {{name: data, persistentVolumeClaim: {{claimName: kept}}}}
  - {{name: token, secret: {{secretName: token}}}}
  containers:
  - name: writer
    image: none
    command: ["sh", "-c", "cp {m}/token/token {m}/data/copy && echo written"]
    volumeMounts:
    - {{name: data, mountPath: "{m}/data"}}
    - {{name: token, mountPath: "{m}/token", readOnly: true}}
"#,
            m = mnt.display()
        ),
    );
    within(LONG, "the writer finished", || {
        let p = s
            .call("GET", "/api/v1/namespaces/default/pods/writer", "", "")
            .1;
        (p["status"]["phase"] == "Succeeded").then_some(())
    });
    let claim = s
        .call(
            "GET",
            "/api/v1/namespaces/default/persistentvolumeclaims/kept",
            "",
            "",
        )
        .1;
    let pv_name = claim["spec"]["volumeName"].as_str().unwrap().to_string();
    let pv = s
        .call(
            "GET",
            &format!("/api/v1/persistentvolumes/{pv_name}"),
            "",
            "",
        )
        .1;
    let dir = std::path::PathBuf::from(pv["spec"]["hostPath"]["path"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(dir.join("copy")).unwrap(),
        "s3cr3t-value-42"
    );
    // Retain: the claim goes, the volume is Released and the data stays.
    ok(&s.kubectl(&k, &["delete", "pod", "writer"]));
    ok(&s.kubectl(&k, &["delete", "pvc", "kept"]));
    within(LONG, "the volume Released", || {
        let pv = s
            .call(
                "GET",
                &format!("/api/v1/persistentvolumes/{pv_name}"),
                "",
                "",
            )
            .1;
        (pv["status"]["phase"] == "Released").then_some(())
    });
    assert!(dir.join("copy").exists(), "Retain keeps the data");
    // The secret's value is in no event and no log line of the writer.
    let events = ok(&s.kubectl(&k, &["get", "events", "-o", "json"]));
    assert!(!events.contains("s3cr3t-value-42"));
}

const PROJECTED: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {colour: blue}
---
apiVersion: v1
kind: Secret
metadata: {name: creds}
stringData: {user: admin}
---
apiVersion: v1
kind: Pod
metadata:
  name: projected
  labels: {app: shop, tier: web}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: none
    command: [bash, -c, 'cd $DIR && for f in colour creds/user labels name token; do echo "$f=$(cat $f | head -c 40)"; done']
    env: [{name: DIR, value: /etc/all}]
    volumeMounts: [{name: all, mountPath: /etc/all}]
  volumes:
  - name: all
    projected:
      sources:
      - configMap: {name: settings}
      - secret: {name: creds, items: [{key: user, path: creds/user}]}
      - downwardAPI:
          items:
          - {path: labels, fieldRef: {fieldPath: metadata.labels}}
          - {path: name, fieldRef: {fieldPath: metadata.name}}
      - serviceAccountToken: {path: token, expirationSeconds: 3600, audience: vault}
"#;

#[test]
fn a_projected_volume_holds_configmap_secret_downward_api_and_token_files() {
    let Some(k) = common::kubectl() else { return };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Without root the process runtime cannot mount at /etc/all; the volume code is the same either way.
        assert!(!common::required(), "mounting at /etc needs root");
        eprintln!("SKIP: mounting a volume at /etc/all needs root");
        return;
    }
    let s = Server::up(&[]);
    s.kubectl_apply(&k, PROJECTED);
    let out = within(LONG, "the pod's output", || {
        let text = logs(&s, &k, "projected", "c");
        text.contains("token=").then_some(text)
    });
    assert!(out.contains("colour=blue"), "{out}");
    assert!(out.contains("creds/user=admin"), "{out}");
    assert!(out.contains("labels=app=\"shop\""), "{out}");
    assert!(out.contains("name=projected"), "{out}");
    assert!(out.contains("token=eyJ"), "{out}");
    // TokenReview refuses what is not a token.
    let (_, v) = s.call(
        "POST",
        concat!("/", "apis/authentication.k8s.io/v1/tokenreviews"),
        "application/json",
        r#"{"spec":{"token":"not-a-token"}}"#,
    );
    assert_eq!(v["status"]["authenticated"], false);
}
