//! GitOps end to end: real git repositories (made with the real `git`), a real `capstan up`, Applications created
//! through the API, and the user's tools - kubectl and `capstan app`.

mod common;
#[path = "common/githttp.rs"]
mod githttp;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{ok, within, Server};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

struct Repo {
    dir: PathBuf,
}

impl Repo {
    fn new(root: &Path) -> Repo {
        let dir = root.join("repo");
        std::fs::create_dir_all(dir.join("app")).unwrap();
        let r = Repo { dir };
        r.git(&["init", "-q", "-b", "main"]);
        r
    }
    fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(&self.dir)
            .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
            .args(args)
            .output()
            .expect("git");
        ok(&out)
    }
    fn write(&self, file: &str, text: &str) {
        std::fs::write(self.dir.join("app").join(file), text).unwrap();
    }
    /// Writes a file anywhere in the repository (outside the app's directory too).
    fn write_at(&self, path: &str, text: &str) {
        let p = self.dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    fn remove(&self, file: &str) {
        std::fs::remove_file(self.dir.join("app").join(file)).unwrap();
    }
    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }
}

/// Makes an empty bare repository (an "upstream") at `dir`, default branch main.
fn bare(dir: &Path) {
    let st = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success());
}

/// The subject of the newest commit of a bare repository.
fn last_subject(git_dir: &Path) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(git_dir)
        .args(["log", "-1", "--format=%s"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn deployment(version: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  progressDeadlineSeconds: 3
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: none
        command: ["sleep", "600"]
        env:
        - {{name: VERSION, value: "{version}"}}
{extra}"#
    )
}

fn application(s: &Server, repo: &Repo, policy: Value) {
    let app = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {"source": {"repoURL": repo.dir.display().to_string(), "path": "app"},
                 "destination": {"namespace": "default"}, "syncPolicy": policy}});
    let (code, v) = s.call(
        "POST",
        "/apis/gitops.capstan.io/v1/namespaces/default/applications",
        "application/json",
        &app.to_string(),
    );
    assert_eq!(code, 201, "{v}");
}

fn get(s: &Server, path: &str) -> Value {
    s.call("GET", path, "", "").1
}

fn app(s: &Server) -> Value {
    get(
        s,
        "/apis/gitops.capstan.io/v1/namespaces/default/applications/shop",
    )
}

fn template_version(s: &Server) -> Option<String> {
    let d = get(s, "/apis/apps/v1/namespaces/default/deployments/web");
    d.pointer("/spec/template/spec/containers/0/env/0/value")
        .and_then(Value::as_str)
        .map(String::from)
}

fn history(s: &Server) -> Vec<Value> {
    let list = get(
        s,
        "/apis/gitops.capstan.io/v1/namespaces/default/syncrecords?labelSelector=capstan.io/application%3Dshop",
    );
    let mut items = list["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|r| r["spec"]["sequence"].as_i64().unwrap_or(0));
    items
}

fn available(s: &Server) -> bool {
    let a = app(s);
    a["status"]["sync"]["status"] == "Synced" && a["status"]["health"]["status"] == "Healthy"
}

#[test]
fn commits_apply_roll_and_prune_and_annotated_objects_survive() {
    let s = Server::up(&[]);
    let repo = Repo::new(s.dir.path());
    repo.write("web.yaml", &deployment("v1", ""));
    repo.write(
        "settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  COLOR: blue\n",
    );
    repo.write(
        "keep.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: keep\n  annotations:\n    capstan.io/prune: \"false\"\ndata: {}\n",
    );
    let first = repo.commit("first");
    application(&s, &repo, json!({}));
    within(LONG, "the first commit Synced and Healthy", || {
        available(&s).then_some(())
    });
    assert_eq!(app(&s)["status"]["sync"]["revision"], first.as_str());
    assert_eq!(template_version(&s).as_deref(), Some("v1"));
    // An edit rolls the Deployment.
    repo.write("web.yaml", &deployment("v2", ""));
    let second = repo.commit("v2");
    within(LONG, "v2 rolled out", || {
        (template_version(&s).as_deref() == Some("v2") && available(&s)).then_some(())
    });
    assert_eq!(app(&s)["status"]["sync"]["revision"], second.as_str());
    // Removing files prunes what they held, except what is annotated to stay.
    repo.remove("settings.yaml");
    repo.remove("keep.yaml");
    repo.commit("drop config");
    within(LONG, "settings pruned", || {
        let (code, _) = s.call(
            "GET",
            "/api/v1/namespaces/default/configmaps/settings",
            "",
            "",
        );
        (code == 404).then_some(())
    });
    let (code, _) = s.call("GET", "/api/v1/namespaces/default/configmaps/keep", "", "");
    assert_eq!(code, 200, "the annotated ConfigMap survives");
    let h = within(LONG, "three records", || {
        let h = history(&s);
        (h.len() >= 3).then_some(h)
    });
    let triggers: Vec<&str> = h
        .iter()
        .map(|r| r["spec"]["trigger"].as_str().unwrap())
        .collect();
    assert_eq!(&triggers[..3], ["startup", "push", "push"]);
    assert_eq!(h[1]["spec"]["message"], "v2");
    assert!(
        h[1]["spec"]["updated"]
            .to_string()
            .contains("Deployment/default/web"),
        "{}",
        h[1]
    );
    assert!(
        h[2]["spec"]["pruned"]
            .to_string()
            .contains("ConfigMap/default/settings"),
        "{}",
        h[2]
    );
    assert_eq!(h[0]["spec"]["author"], "Test <test@example.com>");
}

#[test]
fn a_bad_commit_applies_nothing_and_the_next_good_one_does() {
    let s = Server::up(&[]);
    let repo = Repo::new(s.dir.path());
    repo.write("web.yaml", &deployment("v1", ""));
    repo.commit("good");
    application(&s, &repo, json!({}));
    within(LONG, "Synced", || available(&s).then_some(()));
    // A valid new object next to an invalid one: neither is applied.
    repo.write(
        "extra.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  A: \"1\"\n",
    );
    repo.write(
        "web.yaml",
        &deployment("v2", "      restartPolicy: Sometimes\n"),
    );
    repo.commit("bad field");
    let a = within(LONG, "Failed", || {
        let a = app(&s);
        (a["status"]["sync"]["status"] == "Failed").then_some(a)
    });
    let msg = a["status"]["operationState"]["message"].as_str().unwrap();
    assert!(
        msg.contains("app/web.yaml:1") && msg.contains("restartPolicy"),
        "{msg}"
    );
    let (code, _) = s.call("GET", "/api/v1/namespaces/default/configmaps/extra", "", "");
    assert_eq!(code, 404, "nothing of a failed commit is applied");
    assert_eq!(
        template_version(&s).as_deref(),
        Some("v1"),
        "the last good state keeps running"
    );
    // Broken YAML: the same.
    repo.write(
        "web.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec: [\n",
    );
    repo.commit("broken yaml");
    within(LONG, "Failed naming the file and line", || {
        let a = app(&s);
        let m = a["status"]["operationState"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        (a["status"]["sync"]["status"] == "Failed"
            && m.contains("app/web.yaml")
            && m.contains("line"))
        .then_some(())
    });
    // The next good commit applies.
    repo.write("web.yaml", &deployment("v3", ""));
    repo.commit("fixed");
    within(LONG, "v3 and extra applied", || {
        let (code, _) = s.call("GET", "/api/v1/namespaces/default/configmaps/extra", "", "");
        (code == 200 && template_version(&s).as_deref() == Some("v3") && available(&s))
            .then_some(())
    });
    let results: Vec<String> = history(&s)
        .iter()
        .map(|r| r["spec"]["result"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        &results[..4],
        ["Succeeded", "Failed", "Failed", "Succeeded"]
    );
}

/// What the `deployer` ServiceAccount may do: ConfigMaps in `default`, nothing else.
const DEPLOYER: &str = r#"{"apiVersion": "v1", "kind": "List", "items": [
 {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "deployer", "namespace": "default"}},
 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
  "metadata": {"name": "configmaps", "namespace": "default"},
  "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]},
 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
  "metadata": {"name": "deployer", "namespace": "default"},
  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmaps"},
  "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": "default"}]}]}"#;

#[test]
fn an_app_with_a_service_account_may_only_apply_what_it_may_write() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    s.kubectl_apply(&k, DEPLOYER);
    let repo = Repo::new(s.dir.path());
    repo.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  colour: blue\n",
    );
    repo.commit("settings");
    let shop = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {"source": {"repoURL": repo.dir.display().to_string(), "path": "app"},
                 "destination": {"namespace": "default", "serviceAccountName": "deployer"}}});
    let (code, v) = s.call(
        "POST",
        "/apis/gitops.capstan.io/v1/namespaces/default/applications",
        "application/json",
        &shop.to_string(),
    );
    assert_eq!(code, 201, "{v}");
    within(LONG, "the ConfigMap applied as deployer", || {
        let cm = get(&s, "/api/v1/namespaces/default/configmaps/settings");
        (cm["data"]["colour"] == "blue").then_some(())
    });
    // A commit that changes the ConfigMap and adds a ClusterRole: refused with the 403, nothing applied.
    repo.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  colour: red\n",
    );
    repo.write(
        "role.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: sneaky\nrules: []\n",
    );
    repo.commit("escalate");
    let a = within(LONG, "Failed", || {
        let a = app(&s);
        (a["status"]["sync"]["status"] == "Failed").then_some(a)
    });
    let msg = a["status"]["operationState"]["message"].as_str().unwrap();
    assert!(
        msg.contains("app/role.yaml")
            && msg.contains(r#"User "system:serviceaccount:default:deployer" cannot"#)
            && msg.contains("clusterroles"),
        "{msg}"
    );
    let cm = get(&s, "/api/v1/namespaces/default/configmaps/settings");
    assert_eq!(
        cm["data"]["colour"], "blue",
        "nothing of the commit applied"
    );
    let (code, _) = s.call(
        "GET",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/sneaky",
        "",
        "",
    );
    assert_eq!(code, 404);
}

#[test]
fn self_heal_reverts_a_kubectl_scale_and_records_it() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    let repo = Repo::new(s.dir.path());
    repo.write("web.yaml", &deployment("v1", ""));
    repo.commit("first");
    application(&s, &repo, json!({}));
    within(LONG, "Synced", || available(&s).then_some(()));
    ok(&s.kubectl(&k, &["scale", "deployment/web", "--replicas=3"]));
    within(LONG, "replicas back to 1", || {
        let d = get(&s, "/apis/apps/v1/namespaces/default/deployments/web");
        (d["spec"]["replicas"] == 1).then_some(())
    });
    let heal = within(LONG, "a self-heal record", || {
        history(&s)
            .into_iter()
            .find(|r| r["spec"]["trigger"] == "self-heal")
    });
    assert!(
        heal["spec"]["error"]
            .as_str()
            .unwrap()
            .contains("spec.replicas"),
        "{heal}"
    );
    // Replicas owned by an autoscaler (here: kubectl's field manager) are not drift once the app says so.
    let (code, v) = s.call(
        "PATCH",
        "/apis/gitops.capstan.io/v1/namespaces/default/applications/shop",
        "application/merge-patch+json",
        r#"{"spec":{"ignoreDifferences":[{"group":"apps","kind":"Deployment","managedFieldsManagers":["kubectl"]}]}}"#,
    );
    assert_eq!(code, 200, "{v}");
    // (The sync the spec change asks for re-applies the commit: scale only once it is done.)
    within(LONG, "the app's new spec observed", || {
        let a = app(&s);
        (a["status"]["observedGeneration"] == a["metadata"]["generation"]).then_some(())
    });
    ok(&s.kubectl(&k, &["scale", "deployment/web", "--replicas=2"]));
    std::thread::sleep(Duration::from_secs(3));
    let d = get(&s, "/apis/apps/v1/namespaces/default/deployments/web");
    assert_eq!(d["spec"]["replicas"], 2, "left alone");
    assert_eq!(app(&s)["status"]["sync"]["status"], "Synced");
    let diff = ok(&s.capstan(&["app", "diff", "shop"]));
    assert!(!diff.contains("spec.replicas"), "{diff}");
}

#[test]
fn rollback_is_a_revert_commit_and_auto_rollback_reverts_a_degraded_commit() {
    let s = Server::up(&[]);
    let repo = Repo::new(s.dir.path());
    repo.write("web.yaml", &deployment("v1", ""));
    let v1 = repo.commit("v1");
    application(&s, &repo, json!({"autoRollback": true}));
    within(LONG, "v1 Healthy", || {
        (available(&s) && history(&s).iter().any(|r| r["spec"]["health"] == "Healthy"))
            .then_some(())
    });
    repo.write("web.yaml", &deployment("v2", ""));
    repo.commit("v2");
    within(LONG, "v2 Healthy", || {
        let h = history(&s);
        (template_version(&s).as_deref() == Some("v2")
            && available(&s)
            && h.last().is_some_and(|r| r["spec"]["health"] == "Healthy"))
        .then_some(())
    });
    // A user's rollback: a new commit restoring v1's content.
    let out = s.capstan(&["app", "rollback", "shop"]);
    let text = ok(&out);
    assert!(text.contains(&v1[..7]), "{text}");
    let log = repo.git(&["log", "--format=%s", "-1"]);
    assert!(log.starts_with("Roll back shop to"), "{log}");
    within(LONG, "back on v1", || {
        (template_version(&s).as_deref() == Some("v1") && available(&s)).then_some(())
    });
    assert!(history(&s)
        .iter()
        .any(|r| r["spec"]["trigger"] == "rollback"));
    // autoRollback: a commit whose readiness never passes goes Degraded at its progress deadline and is reverted.
    repo.write(
        "web.yaml",
        &deployment(
            "broken",
            "        readinessProbe:\n          exec:\n            command: [\"false\"]\n          periodSeconds: 1\n",
        ),
    );
    repo.commit("broken readiness");
    within(Duration::from_secs(90), "reverted automatically", || {
        let log = repo.git(&["log", "--format=%s%n%b", "-1"]);
        (log.starts_with("Roll back shop to") && log.contains("Automatic rollback")).then_some(())
    });
    within(LONG, "healthy again without the broken template", || {
        (template_version(&s).as_deref() == Some("v1") && available(&s)).then_some(())
    });
    // Once only: the history shows one automatic revert after the broken commit.
    let out = ok(&s.capstan(&["app", "history", "shop"]));
    assert!(out.contains("rollback"), "{out}");
}

#[test]
fn a_remote_follows_signed_webhooks_and_rollback_pushes_its_commit() {
    let s = Server::up(&[]);
    let root = s.dir.path();
    let upstream = root.join("upstream.git");
    bare(&upstream);
    let repo = Repo::new(root);
    repo.write("web.yaml", &deployment("v1", ""));
    let v1 = repo.commit("v1");
    repo.git(&["remote", "add", "origin", upstream.to_str().unwrap()]);
    repo.git(&["push", "-q", "origin", "main"]);
    // Webhooks are signed with the secret the server made at first start; `capstan app webhook-secret` prints it.
    let secret = ok(&s.capstan(&["app", "webhook-secret"]))
        .trim()
        .to_string();
    assert!(secret.len() >= 32, "{secret}");
    let url = format!("file://{}", upstream.display());
    let app_obj = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {"source": {"repoURL": url, "path": "app"}, "interval": "1h"}});
    let (code, v) = s.call(
        "POST",
        "/apis/gitops.capstan.io/v1/namespaces/default/applications",
        "application/json",
        &app_obj.to_string(),
    );
    assert_eq!(code, 201, "{v}");
    within(LONG, "v1 synced from the remote", || {
        (available(&s) && app(&s)["status"]["sync"]["revision"] == v1.as_str()).then_some(())
    });
    repo.write("web.yaml", &deployment("v2", ""));
    let v2 = repo.commit("v2");
    repo.git(&["push", "-q", "origin", "main"]);
    let http = s.http();
    let hook = |body: &str, sig: &str| {
        let r = http
            .post(format!("{}/hooks/git", s.url))
            .header("Content-Type", "application/json")
            .header("X-Hub-Signature-256", sig)
            .body(body.to_string())
            .send()
            .unwrap();
        let code = r.status().as_u16();
        (code, r.text().unwrap_or_default())
    };
    let body = json!({"repository": {"clone_url": format!("{url}.git")}}).to_string();
    let (code, text) = hook(
        &body,
        &capstan::apiserver::webhook::sign(body.as_bytes(), b"wrong"),
    );
    assert_eq!(code, 401, "{text}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        template_version(&s).as_deref(),
        Some("v1"),
        "a refused webhook triggers nothing"
    );
    let (code, text) = hook(&body, "");
    assert_eq!(code, 401, "an unsigned payload is refused: {text}");
    let (code, text) = hook(
        &body,
        &capstan::apiserver::webhook::sign(body.as_bytes(), secret.as_bytes()),
    );
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("default/shop"), "{text}");
    within(LONG, "v2 synced after the webhook", || {
        (template_version(&s).as_deref() == Some("v2")
            && app(&s)["status"]["sync"]["revision"] == v2.as_str())
        .then_some(())
    });
    assert!(history(&s)
        .iter()
        .any(|r| r["spec"]["trigger"] == "webhook"));
    // Rollback against a remote: the revert commit is pushed there.
    within(LONG, "v2 Healthy", || {
        history(&s)
            .last()
            .is_some_and(|r| r["spec"]["health"] == "Healthy")
            .then_some(())
    });
    let out = ok(&s.capstan(&["app", "rollback", "shop"]));
    assert!(out.contains(&v1[..7]), "{out}");
    let subject = last_subject(&upstream);
    assert!(subject.starts_with("Roll back shop to"), "{subject}");
    let (code, _) = hook(
        &body,
        &capstan::apiserver::webhook::sign(body.as_bytes(), secret.as_bytes()),
    );
    assert_eq!(code, 200);
    within(LONG, "back on v1", || {
        (template_version(&s).as_deref() == Some("v1")).then_some(())
    });
}

/// Files of the documentation corpus Kubernetes itself refuses although MALFORMED.txt does not list them (see
/// tests/corpus.rs).
const CORPUS_ALSO_INVALID: &[&str] = &[
    "application/job/job-tmpl.yaml",
    "secret/tls-auth-secret.yaml",
    "service/networking/dual-stack-ipv6-svc.yaml",
    "service/networking/dual-stack-ipv6-lb-svc.yaml",
];

#[test]
fn a_repository_of_the_documentation_examples_syncs_and_bad_files_fail_the_commit() {
    // The control plane only (no node agent): the examples' containers are not run on this machine.
    let s = Server::start();
    let corpus = common::corpus();
    let malformed: Vec<String> = std::fs::read_to_string(corpus.join("MALFORMED.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    let repo = Repo::new(s.dir.path());
    let mut files = Vec::new();
    let mut stack = vec![corpus.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut taken = std::collections::BTreeSet::new();
    let mut namespaces = std::collections::BTreeSet::new();
    let mut unsupported = None;
    let mut copied = 0;
    for f in &files {
        let rel = f
            .strip_prefix(&corpus)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if malformed.contains(&rel) || CORPUS_ALSO_INVALID.contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let docs = match capstan::api::manifest::parse(&rel, &text) {
            Ok(d) => d,
            Err(e) => {
                if unsupported.is_none() && e.to_string().contains("is not served by Capstan") {
                    unsupported = Some((rel.clone(), text.clone()));
                }
                continue;
            }
        };
        // One definition per object: a file that would redefine one already taken is left out whole.
        let ids: Vec<String> = docs
            .iter()
            .map(|d| {
                format!(
                    "{}/{}/{}",
                    d.kind.kind,
                    d.namespace().unwrap_or("default"),
                    d.name()
                )
            })
            .collect();
        if docs
            .iter()
            .any(|d| d.name().is_empty() || d.kind.kind == "Namespace")
            || ids.iter().any(|i| taken.contains(i))
        {
            continue;
        }
        taken.extend(ids);
        namespaces.extend(docs.iter().filter_map(|d| d.namespace().map(String::from)));
        let dest = repo.dir.join("app").join(&rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(dest, text).unwrap();
        copied += docs.len();
    }
    let ns_yaml: String = namespaces
        .iter()
        .filter(|n| !["default", "kube-system", "kube-public"].contains(&n.as_str()))
        .map(|n| format!("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {n}\n"))
        .collect();
    repo.write("namespaces.yaml", &ns_yaml);
    let good = repo.commit("the documentation's examples");
    assert!(copied > 150, "only {copied} documents");
    application(&s, &repo, json!({}));
    within(Duration::from_secs(120), "the examples synced", || {
        let a = app(&s);
        (a["status"]["sync"]["revision"] == good.as_str()
            && a["status"]["lastSyncedRevision"] == good.as_str())
        .then_some(())
    });
    let records = history(&s);
    let created = records[0]["spec"]["created"].as_array().map_or(0, Vec::len);
    assert!(
        created >= copied,
        "created {created} of {copied} ({:?})",
        records[0]["spec"]["error"]
    );
    // An unsupported kind fails the whole commit, naming the file and the kind.
    let (file, text) = unsupported.expect("the corpus has a kind Capstan does not serve");
    repo.write("unsupported.yaml", &text);
    repo.commit("unsupported kind");
    let msg = within(LONG, "Failed", || {
        let a = app(&s);
        (a["status"]["sync"]["status"] == "Failed").then(|| {
            a["status"]["operationState"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
    });
    assert!(
        msg.contains("app/unsupported.yaml") && msg.contains("is not served by Capstan"),
        "{file}: {msg}"
    );
    // So does each malformed file.
    repo.remove("unsupported.yaml");
    for m in &malformed {
        let text = std::fs::read_to_string(corpus.join(m)).unwrap();
        repo.write("malformed.yaml", &text);
        let sha = repo.commit(&format!("malformed {m}"));
        let msg = within(LONG, "Failed", || {
            let a = app(&s);
            (a["status"]["lastAttemptedRevision"] == sha.as_str()
                && a["status"]["operationState"]["phase"] == "Failed")
                .then(|| {
                    a["status"]["operationState"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                })
        });
        assert!(msg.contains("app/malformed.yaml"), "{m}: {msg}");
        assert_eq!(
            app(&s)["status"]["lastSyncedRevision"],
            good.as_str(),
            "{m}: nothing applied"
        );
    }
}

#[test]
fn a_kustomize_overlay_on_a_base_elsewhere_in_the_repository_syncs_and_rolls_on_a_generator_change()
{
    let s = Server::up(&[]);
    let repo = Repo::new(s.dir.path());
    repo.write_at(
        "base/kustomization.yaml",
        "resources:\n- web.yaml\nconfigMapGenerator:\n- name: settings\n  literals: [COLOR=blue]\n",
    );
    repo.write_at(
        "base/web.yaml",
        &deployment(
            "v1",
            "        envFrom:\n        - configMapRef: {name: settings}\n",
        ),
    );
    let overlay = |color: &str, extra: &str| {
        format!("resources:\n- ../base\nnamePrefix: prod-\ncommonLabels:\n  env: prod\nconfigMapGenerator:\n- name: settings\n  behavior: merge\n  literals: [COLOR={color}]\n{extra}")
    };
    repo.write("kustomization.yaml", &overlay("green", ""));
    repo.commit("kustomized");
    application(&s, &repo, json!({}));
    let deployment_of = || get(&s, "/apis/apps/v1/namespaces/default/deployments/prod-web");
    let config_of = |d: &Value| {
        d.pointer("/spec/template/spec/containers/0/envFrom/0/configMapRef/name")
            .and_then(Value::as_str)
            .map(String::from)
    };
    let first = within(LONG, "the overlay Synced and Healthy", || {
        let d = deployment_of();
        (available(&s) && d["metadata"]["labels"]["env"] == "prod")
            .then(|| config_of(&d))
            .flatten()
    });
    assert!(first.starts_with("prod-settings-"), "{first}");
    let cm = get(
        &s,
        &format!("/api/v1/namespaces/default/configmaps/{first}"),
    );
    assert_eq!(cm["data"]["COLOR"], "green", "{cm}");
    let d = deployment_of();
    assert_eq!(d["spec"]["selector"]["matchLabels"]["env"], "prod");

    // A changed literal is a new ConfigMap name, so the Deployment rolls and the old ConfigMap is pruned.
    repo.write("kustomization.yaml", &overlay("red", ""));
    repo.commit("red");
    let second = within(LONG, "the new ConfigMap rolled out", || {
        let d = deployment_of();
        config_of(&d).filter(|c| *c != first && available(&s))
    });
    let cm = get(
        &s,
        &format!("/api/v1/namespaces/default/configmaps/{second}"),
    );
    assert_eq!(cm["data"]["COLOR"], "red");
    within(LONG, "the old ConfigMap pruned", || {
        let (code, _) = s.call(
            "GET",
            &format!("/api/v1/namespaces/default/configmaps/{first}"),
            "",
            "",
        );
        (code == 404).then_some(())
    });

    // A field Capstan's kustomize does not carry out fails the commit, naming file, line and field; nothing changes.
    repo.write(
        "kustomization.yaml",
        &overlay("black", "helmCharts:\n- name: x\n"),
    );
    repo.commit("with a chart");
    let message = within(LONG, "the commit failed", || {
        let a = app(&s);
        (a["status"]["sync"]["status"] == "Failed")
            .then(|| {
                a["status"]["operationState"]["message"]
                    .as_str()
                    .map(String::from)
            })
            .flatten()
    });
    assert!(
        message.contains("app/kustomization.yaml:10: helmCharts: Helm charts are not supported"),
        "{message}"
    );
    assert_eq!(
        config_of(&deployment_of()).as_deref(),
        Some(second.as_str())
    );
}

#[test]
fn one_repository_of_a_base_and_two_overlays_with_patches_and_a_component_deploys_two_applications()
{
    let s = Server::up(&[]);
    let repo = Repo::new(s.dir.path());
    repo.write_at(
        "base/kustomization.yaml",
        "resources:\n- web.yaml\n- svc.yaml\n",
    );
    repo.write_at("base/web.yaml", &deployment("v1", ""));
    repo.write_at(
        "base/svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    );
    // A component: monitoring for whichever overlay takes it (a patch and an object of its own).
    repo.write_at(
        "components/monitoring/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources:\n- rules.yaml\npatches:\n- target: {kind: Deployment}\n  patch: |\n    apiVersion: apps/v1\n    kind: Deployment\n    metadata:\n      name: any\n      annotations:\n        prometheus.io/scrape: \"true\"\n",
    );
    repo.write_at(
        "components/monitoring/rules.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: alert-rules\ndata:\n  rules: up == 0\n",
    );
    repo.write_at(
        "overlays/staging/kustomization.yaml",
        "resources:\n- ../../base\nnamePrefix: staging-\nlabels:\n- pairs: {env: staging}\npatches:\n- patch: |\n    apiVersion: apps/v1\n    kind: Deployment\n    metadata:\n      name: web\n    spec:\n      template:\n        spec:\n          containers:\n          - name: c\n            env:\n            - {name: STAGE, value: staging}\n",
    );
    repo.write_at(
        "overlays/production/kustomization.yaml",
        "resources:\n- ../../base\ncomponents:\n- ../../components/monitoring\nnamePrefix: prod-\nlabels:\n- pairs: {env: production}\npatches:\n- target: {group: apps, kind: Deployment, name: web}\n  patch: |\n    - op: replace\n      path: /spec/replicas\n      value: 2\npatchesStrategicMerge:\n- stage.yaml\n",
    );
    repo.write_at(
        "overlays/production/stage.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n    spec:\n      containers:\n      - name: c\n        env:\n        - {name: STAGE, value: production}\n",
    );
    repo.commit("base, two overlays, a component");
    for (name, path) in [
        ("staging", "overlays/staging"),
        ("production", "overlays/production"),
    ] {
        let (code, v) = create_app(&s, name, &repo, path, json!([]));
        assert_eq!(code, 201, "{v}");
    }
    let ready = |name: &str, replicas: i64| {
        let d = get(
            &s,
            &format!("/apis/apps/v1/namespaces/default/deployments/{name}"),
        );
        (d["status"]["readyReplicas"] == replicas).then_some(d)
    };
    let staging = within(LONG, "staging's Deployment ready", || {
        ready("staging-web", 1)
    });
    let prod = within(
        LONG,
        "production's Deployment ready with 2 replicas",
        || ready("prod-web", 2),
    );
    let env = |d: &Value| d["spec"]["template"]["spec"]["containers"][0]["env"].clone();
    assert_eq!(
        env(&staging),
        json!([{"name": "STAGE", "value": "staging"}, {"name": "VERSION", "value": "v1"}])
    );
    assert_eq!(
        env(&prod),
        json!([{"name": "STAGE", "value": "production"}, {"name": "VERSION", "value": "v1"}])
    );
    assert_eq!(staging["metadata"]["labels"]["env"], "staging");
    assert_eq!(prod["metadata"]["labels"]["env"], "production");
    // The component's patch and object are production's only.
    assert_eq!(
        prod["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert!(staging["metadata"]["annotations"]["prometheus.io/scrape"].is_null());
    assert_eq!(
        get(
            &s,
            concat!("/api", "/v1/namespaces/default/configmaps/prod-alert-rules")
        )["data"]["rules"],
        "up == 0"
    );
    let (code, _) = s.call(
        "GET",
        concat!(
            "/api",
            "/v1/namespaces/default/configmaps/staging-alert-rules"
        ),
        "",
        "",
    );
    assert_eq!(code, 404);
    for svc in ["staging-web", "prod-web"] {
        let v = get(&s, &format!("/api/v1/namespaces/default/services/{svc}"));
        assert_eq!(v["spec"]["selector"]["app"], "web", "{v}");
    }
}

fn create_plugin_app(s: &Server, name: &str, repo: &Repo, plugin: Value) {
    let app = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"source": {"repoURL": repo.dir.display().to_string(), "path": "site", "plugin": plugin},
                 "destination": {"namespace": "default"}}});
    let (code, v) = s.call(
        "POST",
        "/apis/gitops.capstan.io/v1/namespaces/default/applications",
        "application/json",
        &app.to_string(),
    );
    assert_eq!(code, 201, "{v}");
}

/// The failure message of an app whose sync failed.
fn failed_with(s: &Server, name: &str) -> String {
    within(LONG, "the commit failed", || {
        let a = get(
            s,
            &format!("/apis/gitops.capstan.io/v1/namespaces/default/applications/{name}"),
        );
        (a["status"]["sync"]["status"] == "Failed")
            .then(|| {
                a["status"]["operationState"]["message"]
                    .as_str()
                    .map(String::from)
            })
            .flatten()
    })
}

#[test]
fn render_plugins_declared_on_the_server_render_apps_and_a_failing_or_slow_one_fails_the_commit() {
    let s = Server::up(&[
        "--render-plugin",
        r#"gen=sed -e "s/@NAME@/$CAPSTAN_ENV_NAME/" -e "s/@ARG@/$1/" -e "s/@APP@/$CAPSTAN_APP_NAME/" -e "s/@LEAK@/${CARGO_MANIFEST_DIR:-none}/" -e "s/@UID@/$(id -u)/" site.tmpl"#,
        "--render-plugin",
        "broken=echo 'chart site not found' >&2; exit 3",
        "--render-plugin",
        "slow=echo 'still thinking' >&2; sleep 30",
        "--render-plugin-timeout",
        "2s",
    ]);
    let repo = Repo::new(s.dir.path());
    repo.write_at(
        "site/site.tmpl",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: \"@NAME@\"\ndata:\n  arg: \"@ARG@\"\n  app: \"@APP@\"\n  leak: \"@LEAK@\"\n  uid: \"@UID@\"\n",
    );
    // With a plugin, the directory's own manifests are the plugin's business, not read.
    repo.write_at(
        "site/plain.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n",
    );
    repo.commit("a template");
    create_plugin_app(
        &s,
        "rendered",
        &repo,
        json!({"name": "gen", "env": [{"name": "NAME", "value": "from-plugin"}], "args": ["first"]}),
    );
    let cm = within(LONG, "the plugin's ConfigMap applied", || {
        let v = get(&s, "/api/v1/namespaces/default/configmaps/from-plugin");
        v["data"].is_object().then_some(v)
    });
    assert_eq!(cm["data"]["arg"], "first", "{cm}");
    assert_eq!(cm["data"]["app"], "rendered");
    assert_eq!(
        cm["data"]["leak"], "none",
        "the server's environment reached the plugin"
    );
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(
            cm["data"]["uid"], "65534",
            "a root server runs plugins as nobody"
        );
    }
    let (code, _) = s.call("GET", "/api/v1/namespaces/default/configmaps/plain", "", "");
    assert_eq!(code, 404);

    create_plugin_app(&s, "broken", &repo, json!({"name": "broken"}));
    let m = failed_with(&s, "broken");
    assert!(m.contains("chart site not found") && m.contains("3"), "{m}");
    create_plugin_app(&s, "slow", &repo, json!({"name": "slow"}));
    let m = failed_with(&s, "slow");
    assert!(
        m.contains("ran past its timeout") && m.contains("still thinking"),
        "{m}"
    );
    create_plugin_app(&s, "unknown", &repo, json!({"name": "helm"}));
    let m = failed_with(&s, "unknown");
    assert!(
        m.contains("no render plugin named \"helm\"") && m.contains("gen"),
        "{m}"
    );
}

/// Creates the Application "shop" following `url` (path app, polled every second) with credentials from `secret`.
fn remote_application(s: &Server, url: &str, secret: &str) {
    let app_obj = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {"source": {"repoURL": url, "path": "app", "secretRef": {"name": secret}},
                 "interval": "1s"}});
    let (code, v) = s.call(
        "POST",
        "/apis/gitops.capstan.io/v1/namespaces/default/applications",
        "application/json",
        &app_obj.to_string(),
    );
    assert_eq!(code, 201, "{v}");
}

/// Waits for the app's last operation to have failed with a message containing `want`; returns the message.
fn sync_failure(s: &Server, want: &str) -> String {
    within(LONG, want, || {
        let m = app(s)["status"]["operationState"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        m.contains(want).then_some(m)
    })
}

/// A remote served over smart HTTP (the real `git http-backend`) that wants a password: the Application's
/// secretRef supplies it, a missing or wrong one is a clear failure that applies nothing, and a rollback pushes with it.
fn remote_with_credentials(tls: bool) {
    let s = Server::up(&[]);
    let root = s.dir.path();
    let srv_root = root.join("srv");
    std::fs::create_dir_all(&srv_root).unwrap();
    let upstream = srv_root.join("shop.git");
    bare(&upstream);
    // Pushes over smart HTTP need this on the server side.
    let st = Command::new("git")
        .arg("--git-dir")
        .arg(&upstream)
        .args(["config", "http.receivepack", "true"])
        .status()
        .unwrap();
    assert!(st.success());
    let repo = Repo::new(root);
    repo.write("web.yaml", &deployment("v1", ""));
    let v1 = repo.commit("v1");
    repo.git(&["remote", "add", "origin", upstream.to_str().unwrap()]);
    repo.git(&["push", "-q", "origin", "main"]);

    let material = tls.then(|| {
        let dir = root.join("srv-tls");
        std::fs::create_dir_all(&dir).unwrap();
        capstan::apiserver::tls::load_or_create(&dir, &capstan::apiserver::tls::default_names())
            .unwrap()
    });
    let server = githttp::GitHttp::start(
        &srv_root,
        "deployer",
        "t0ken",
        material
            .as_ref()
            .map(|m| (m.cert_pem.clone(), m.key_pem.clone())),
    );
    let url = format!("{}/shop.git", server.url);
    remote_application(&s, &url, "git-creds");
    let failure = |want: &str| sync_failure(&s, want);
    let m = failure("secret default/git-creds (spec.source.secretRef) does not exist");
    assert!(m.contains(&url), "{m}");
    let put_secret = |password: &str, method: &str, path: &str| {
        let mut data = json!({"username": "deployer", "password": password});
        if let Some(m) = &material {
            data["ca.crt"] = json!(m.ca_pem);
        }
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "git-creds", "namespace": "default"}, "stringData": data});
        let (code, v) = s.call(method, path, "application/json", &secret.to_string());
        assert!(code == 200 || code == 201, "{v}");
    };
    put_secret("wrong", "POST", "/api/v1/namespaces/default/secrets");
    failure("the remote refused the credentials (credentials: secret default/git-creds)");
    assert_eq!(
        template_version(&s),
        None,
        "nothing is applied without the repository"
    );
    put_secret(
        "t0ken",
        "PUT",
        "/api/v1/namespaces/default/secrets/git-creds",
    );
    within(LONG, "v1 synced through the authenticated remote", || {
        (available(&s) && app(&s)["status"]["sync"]["revision"] == v1.as_str()).then_some(())
    });
    repo.write("web.yaml", &deployment("v2", ""));
    let v2 = repo.commit("v2");
    repo.git(&["push", "-q", "origin", "main"]);
    within(LONG, "v2 polled and synced", || {
        (template_version(&s).as_deref() == Some("v2")
            && available(&s)
            && app(&s)["status"]["sync"]["revision"] == v2.as_str())
        .then_some(())
    });
    within(LONG, "v2 recorded Healthy", || {
        history(&s)
            .last()
            .is_some_and(|r| r["spec"]["health"] == "Healthy")
            .then_some(())
    });
    // The rollback commit is pushed over the same authenticated transport.
    let out = ok(&s.capstan(&["app", "rollback", "shop"]));
    assert!(out.contains(&v1[..7]), "{out}");
    let subject = last_subject(&upstream);
    assert!(subject.starts_with("Roll back shop to"), "{subject}");
    within(LONG, "back on v1", || {
        (template_version(&s).as_deref() == Some("v1")).then_some(())
    });
}

#[test]
fn a_remote_over_http_authenticates_with_its_secret_and_rollback_pushes_with_it() {
    remote_with_credentials(false);
}

#[cfg(feature = "https")]
#[test]
fn a_remote_over_https_with_a_private_ca_authenticates_with_its_secret() {
    remote_with_credentials(true);
}

/// A real OpenSSH server on 127.0.0.1 for git over ssh: its own host key and config in a temp dir, one authorized
/// key. It needs root (sshd drops privileges) and the sshd binary.
#[cfg(feature = "ssh")]
struct Sshd {
    child: std::process::Child,
    port: u16,
}

#[cfg(feature = "ssh")]
impl Sshd {
    fn start(dir: &Path, authorized: &str) -> Option<Sshd> {
        let sshd = Path::new("/usr/sbin/sshd");
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !sshd.exists() || !root {
            assert!(
                !common::required(),
                "the ssh test needs root and /usr/sbin/sshd (CAPSTAN_REQUIRE_EXTERNAL=1)"
            );
            eprintln!("SKIP: the ssh test needs root and /usr/sbin/sshd");
            return None;
        }
        std::fs::create_dir_all("/run/sshd").unwrap();
        let host_key = dir.join("host_ed25519");
        ok(&Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&host_key)
            .output()
            .unwrap());
        let keys = dir.join("authorized_keys");
        std::fs::write(&keys, authorized).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
                 PermitRootLogin prohibit-password\nPidFile {}\n",
                host_key.display(),
                keys.display(),
                dir.join("sshd.pid").display()
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .spawn()
            .unwrap();
        within(Duration::from_secs(10), "sshd listening", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Some(Sshd { child, port })
    }
}

#[cfg(feature = "ssh")]
impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(feature = "ssh")]
#[test]
fn a_remote_over_ssh_uses_the_key_and_known_hosts_of_its_secret() {
    let s = Server::up(&[]);
    let root = s.dir.path();
    let keys = root.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let client_key = keys.join("id_ed25519");
    ok(&Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&client_key)
        .output()
        .unwrap());
    let public = std::fs::read_to_string(keys.join("id_ed25519.pub")).unwrap();
    let Some(sshd) = Sshd::start(&keys, &public) else {
        return;
    };
    let upstream = root.join("shop.git");
    bare(&upstream);
    let repo = Repo::new(root);
    repo.write("web.yaml", &deployment("v1", ""));
    let v1 = repo.commit("v1");
    repo.git(&["remote", "add", "origin", upstream.to_str().unwrap()]);
    repo.git(&["push", "-q", "origin", "main"]);

    let host_pub = std::fs::read_to_string(keys.join("host_ed25519.pub")).unwrap();
    let host_line = |key: &str| format!("[127.0.0.1]:{} {}", sshd.port, key.trim());
    let put_secret = |known_hosts: &str, method: &str, path: &str| {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "git-ssh", "namespace": "default"},
            "stringData": {"identity": std::fs::read_to_string(&client_key).unwrap(),
                           "identity.pub": public, "known_hosts": known_hosts}});
        let (code, v) = s.call(method, path, "application/json", &secret.to_string());
        assert!(code == 200 || code == 201, "{v}");
    };
    // A known_hosts that lists another key for the host: refused before any credential is sent.
    let other = std::fs::read_to_string(keys.join("id_ed25519.pub")).unwrap();
    let other_key: Vec<&str> = other.split_whitespace().take(2).collect();
    put_secret(
        &host_line(&other_key.join(" ")),
        "POST",
        "/api/v1/namespaces/default/secrets",
    );
    let url = format!("ssh://root@127.0.0.1:{}{}", sshd.port, upstream.display());
    remote_application(&s, &url, "git-ssh");
    sync_failure(&s, "does not match known_hosts");
    let host_key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    put_secret(
        &host_line(&host_key.join(" ")),
        "PUT",
        "/api/v1/namespaces/default/secrets/git-ssh",
    );
    within(LONG, "v1 synced over ssh", || {
        (available(&s) && app(&s)["status"]["sync"]["revision"] == v1.as_str()).then_some(())
    });
}

/// cert-manager's CRDs, an Issuer and a Certificate in one commit (the kinds are not served until the CRDs are).
fn cert_manager_commit(repo: &Repo) {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crds/cert-manager");
    for f in [
        "cert-manager.io_issuers.yaml",
        "cert-manager.io_certificates.yaml",
    ] {
        repo.write(f, &std::fs::read_to_string(corpus.join(f)).unwrap());
    }
    repo.write(
        "issuer.yaml",
        "apiVersion: cert-manager.io/v1\nkind: Issuer\nmetadata:\n  name: selfsigned\nspec:\n  selfSigned: {}\n---\n\
         apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata:\n  name: web\nspec:\n  secretName: web-tls\n  \
         dnsNames: [web.example.com]\n  issuerRef: {name: selfsigned, kind: Issuer}\n",
    );
}

#[test]
fn a_commit_with_crds_and_their_custom_objects_syncs_in_one_go_and_reverting_it_removes_them() {
    let s = Server::up(&[]);
    let repo = Repo::new(s.dir.path());
    repo.write(
        "settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  COLOR: blue\n",
    );
    repo.commit("config only");
    application(&s, &repo, json!({}));
    within(LONG, "the first commit synced", || {
        (app(&s)["status"]["sync"]["status"] == "Synced").then_some(())
    });
    // A custom object that breaks its CRD's schema fails the whole commit, naming file and field.
    cert_manager_commit(&repo);
    repo.write(
        "bad.yaml",
        "apiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata:\n  name: bad\nspec:\n  issuerRef: {name: selfsigned}\n",
    );
    repo.commit("cert-manager, with a bad certificate");
    let why = sync_failure(&s, "bad.yaml");
    assert!(why.contains("spec.secretName: Required value"), "{why}");
    let (code, _) = s.call(
        "GET",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/issuers.cert-manager.io",
        "",
        "",
    );
    assert_eq!(code, 404, "nothing of the bad commit was applied");
    repo.remove("bad.yaml");
    let good = repo.commit("cert-manager");
    within(LONG, "the CRDs and their objects applied", || {
        let a = app(&s);
        (a["status"]["sync"]["revision"] == good.as_str()
            && a["status"]["sync"]["status"] == "Synced")
            .then_some(())
    });
    let issuer = get(
        &s,
        "/apis/cert-manager.io/v1/namespaces/default/issuers/selfsigned",
    );
    assert_eq!(issuer["spec"]["selfSigned"], json!({}), "{issuer}");
    let cert = get(
        &s,
        "/apis/cert-manager.io/v1/namespaces/default/certificates/web",
    );
    assert_eq!(cert["spec"]["secretName"], "web-tls", "{cert}");
    let record = history(&s).into_iter().last().unwrap();
    assert!(
        record["spec"]["created"]
            .to_string()
            .contains("Certificate/default/web"),
        "{record}"
    );
    // Without a controller writing their conditions, custom objects stay Progressing ...
    assert_eq!(app(&s)["status"]["health"]["status"], "Progressing");
    // ... unless the Application says how to judge their kinds.
    let (code, v) = s.call(
        "PATCH",
        "/apis/gitops.capstan.io/v1/namespaces/default/applications/shop",
        "application/merge-patch+json",
        r#"{"spec":{"health":[
            {"group":"cert-manager.io","kind":"Issuer","healthy":"has(self.spec.selfSigned)"},
            {"group":"cert-manager.io","kind":"Certificate","healthy":"self.spec.secretName == 'web-tls'"}]}}"#,
    );
    assert_eq!(code, 200, "{v}");
    within(LONG, "Healthy by the app's rules", || {
        (app(&s)["status"]["health"]["status"] == "Healthy").then_some(())
    });
    // Reverting the commit removes the objects and the CRDs.
    repo.git(&["revert", "--no-commit", "HEAD~2..HEAD"]);
    repo.commit("Revert cert-manager");
    within(LONG, "the CRDs pruned", || {
        let (code, _) = s.call(
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/certificates.cert-manager.io",
            "",
            "",
        );
        (code == 404).then_some(())
    });
    let (code, _) = s.call(
        "GET",
        "/apis/cert-manager.io/v1/namespaces/default/issuers/selfsigned",
        "",
        "",
    );
    assert_eq!(code, 404);
}

/// The rollback scenario of a quick push: `v1` becomes available, `v2` is pushed half a second later, and
/// `capstan app rollback` (no `--to`) must still find `v1` - Healthy as the watches saw it, not as a periodic look
/// would have. For a local repository, and for a remote one (polled every second; the revert is pushed there).
fn quick_push_then_rollback(remote: bool) {
    let s = Server::up(&[]);
    let root = s.dir.path();
    let repo = Repo::new(root);
    let upstream = root.join("upstream.git");
    let push = || {
        if remote {
            repo.git(&["push", "-q", "origin", "main"]);
        }
    };
    repo.write("web.yaml", &deployment("v1", ""));
    let v1 = repo.commit("initial");
    if remote {
        bare(&upstream);
        repo.git(&["remote", "add", "origin", upstream.to_str().unwrap()]);
        push();
        let app_obj = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
            "metadata": {"name": "shop", "namespace": "default"},
            "spec": {"source": {"repoURL": format!("file://{}", upstream.display()), "path": "app"},
                     "interval": "1s"}});
        let (code, v) = s.call(
            "POST",
            "/apis/gitops.capstan.io/v1/namespaces/default/applications",
            "application/json",
            &app_obj.to_string(),
        );
        assert_eq!(code, 201, "{v}");
    } else {
        application(&s, &repo, json!({}));
    }
    // Ready as the API server tells it - not as a periodic look of the GitOps controller would.
    within(LONG, "v1 available", || {
        let d = get(&s, "/apis/apps/v1/namespaces/default/deployments/web");
        (template_version(&s).as_deref() == Some("v1")
            && d["status"]["availableReplicas"].as_i64() == d["spec"]["replicas"].as_i64()
            && d["status"]["updatedReplicas"].as_i64() == d["spec"]["replicas"].as_i64())
        .then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    repo.write("web.yaml", &deployment("v2", ""));
    repo.commit("two");
    push();
    within(LONG, "v2 synced", || {
        (template_version(&s).as_deref() == Some("v2")).then_some(())
    });
    let out = s.capstan(&["app", "rollback", "shop"]);
    let text = ok(&out);
    assert!(text.contains(&v1[..7]), "{text}");
    let first = history(&s).into_iter().next().unwrap();
    assert!(first["spec"]["healthyAt"].is_string(), "{first}");
    if remote {
        let subject = last_subject(&upstream);
        assert!(subject.starts_with("Roll back shop to"), "{subject}");
    }
    within(LONG, "back on v1", || {
        (template_version(&s).as_deref() == Some("v1")).then_some(())
    });
}

#[test]
fn a_revision_replaced_half_a_second_after_it_became_healthy_is_still_the_rollback_target() {
    quick_push_then_rollback(false);
}

#[test]
fn a_remote_revision_replaced_half_a_second_after_it_became_healthy_is_still_the_rollback_target() {
    quick_push_then_rollback(true);
}

#[test]
fn capstan_app_create_and_delete_with_and_without_cascade() {
    let s = Server::up(&[]);
    let repo = Repo::new(s.dir.path());
    repo.write(
        "settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  COLOR: blue\n",
    );
    repo.commit("config");
    let dir = repo.dir.display().to_string();
    ok(&s.capstan(&["app", "create", "shop", "--repo", &dir, "--path", "app"]));
    within(LONG, "synced", || {
        (app(&s)["status"]["sync"]["status"] == "Synced").then_some(())
    });
    let cm = "/api/v1/namespaces/default/configmaps/settings";
    assert_eq!(s.call("GET", cm, "", "").0, 200);
    // Without --cascade the objects stay (orphaned, as in Argo CD).
    ok(&s.capstan(&["app", "delete", "shop"]));
    within(LONG, "the app gone", || {
        (s.call(
            "GET",
            "/apis/gitops.capstan.io/v1/namespaces/default/applications/shop",
            "",
            "",
        )
        .0 == 404)
            .then_some(())
    });
    assert_eq!(
        s.call("GET", cm, "", "").0,
        200,
        "objects stay without --cascade"
    );
    // With --cascade they go first.
    ok(&s.capstan(&["app", "create", "shop", "--repo", &dir, "--path", "app"]));
    within(LONG, "synced again", || {
        (app(&s)["status"]["sync"]["status"] == "Synced").then_some(())
    });
    let out = ok(&s.capstan(&["app", "delete", "shop", "--cascade"]));
    assert!(out.contains("with the objects it applied"), "{out}");
    within(LONG, "the ConfigMap deleted with the app", || {
        (s.call("GET", cm, "", "").0 == 404).then_some(())
    });
    within(LONG, "the app gone", || {
        (s.call(
            "GET",
            "/apis/gitops.capstan.io/v1/namespaces/default/applications/shop",
            "",
            "",
        )
        .0 == 404)
            .then_some(())
    });
}

fn create_app(s: &Server, name: &str, repo: &Repo, path: &str, depends_on: Value) -> (u16, Value) {
    let app = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"source": {"repoURL": repo.dir.display().to_string(), "path": path},
                 "destination": {"namespace": "default"}, "dependsOn": depends_on}});
    s.call(
        "POST",
        "/apis/gitops.capstan.io/v1/namespaces/default/applications",
        "application/json",
        &app.to_string(),
    )
}

#[test]
fn an_app_waits_for_the_apps_it_depends_on_and_cycles_are_refused() {
    let s = Server::up(&[]);
    let repo = Repo::new(s.dir.path());
    repo.write_at("db/web.yaml", &deployment("v1", ""));
    repo.write_at(
        "site/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: site\ndata:\n  COLOR: blue\n",
    );
    repo.commit("two apps");
    // `site` depends on `db`, which does not exist yet: it waits, applying nothing.
    let (code, v) = create_app(&s, "site", &repo, "site", json!([{"name": "db"}]));
    assert_eq!(code, 201, "{v}");
    let get_app = |name: &str| {
        get(
            &s,
            &format!("/apis/gitops.capstan.io/v1/namespaces/default/applications/{name}"),
        )
    };
    within(LONG, "site waiting", || {
        let m = get_app("site")["status"]["operationState"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        m.contains("waiting for dependency default/db")
            .then_some(())
    });
    let cm = "/api/v1/namespaces/default/configmaps/site";
    assert_eq!(s.call("GET", cm, "", "").0, 404);
    // A cycle is refused at create.
    let (code, v) = create_app(&s, "db", &repo, "db", json!([{"name": "site"}]));
    assert_eq!(code, 422, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("a dependency cycle: default/db -> default/site -> default/db"),
        "{v}"
    );
    // Once `db` is Healthy (its Deployment ready), `site` syncs.
    let (code, v) = create_app(&s, "db", &repo, "db", json!([]));
    assert_eq!(code, 201, "{v}");
    within(LONG, "site synced after db", || {
        (s.call("GET", cm, "", "").0 == 200).then_some(())
    });
    let db = get_app("db");
    assert_eq!(db["status"]["health"]["status"], "Healthy", "{db}");
}

/// What a test receiver got: each body with its signature header.
type Received = std::sync::Arc<std::sync::Mutex<Vec<(Value, String)>>>;

/// A plain HTTP receiver on loopback: every POST body with its signature header.
fn receiver() -> (String, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let (mut len, mut sig) = (0usize, String::new());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 && line.trim() != "" {
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("x-capstan-signature:") {
                    sig = line.split_once(':').unwrap().1.trim().to_string();
                }
                line.clear();
            }
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            if let Ok(mut v) = serde_json::from_slice::<Value>(&body) {
                // Whether the signature is the HMAC-SHA256 of these very bytes under the test's secret.
                let good = sig == capstan::gitops::notifications::sign(b"s3cret", &body);
                v["__signed"] = json!(good);
                seen.lock().unwrap().push((v, sig));
            }
            let mut c = conn;
            let _ =
                c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, got)
}

#[test]
fn receivers_get_signed_notifications_and_one_that_is_down_does_not_slow_syncs() {
    let s = Server::up(&[]);
    let repo = Repo::new(s.dir.path());
    repo.write("web.yaml", &deployment("v1", ""));
    repo.commit("v1");
    let (url, got) = receiver();
    let dead = format!(
        "http://127.0.0.1:{}/hook",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let (code, v) = s.call(
        "POST",
        "/api/v1/namespaces/default/secrets",
        "application/json",
        &json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook"},
            "stringData": {"secret": "s3cret"}})
        .to_string(),
    );
    assert_eq!(code, 201, "{v}");
    application(&s, &repo, json!({"autoRollback": true}));
    let (code, v) = s.call(
        "PATCH",
        "/apis/gitops.capstan.io/v1/namespaces/default/applications/shop",
        "application/merge-patch+json",
        &json!({"spec": {"notifications": [
            {"url": url, "events": ["synced", "healthy", "degraded", "rolled-back"], "secretRef": {"name": "hook"}},
            {"url": dead, "events": ["synced", "healthy", "degraded", "rolled-back"]}]}}).to_string(),
    );
    assert_eq!(code, 200, "{v}");
    within(LONG, "v1 Healthy", || available(&s).then_some(()));
    // A commit breaking readiness: Degraded at its deadline, rolled back, each told to the receiver.
    repo.write(
        "web.yaml",
        &deployment(
            "broken",
            "        readinessProbe:\n          exec:\n            command: [\"false\"]\n          periodSeconds: 1\n",
        ),
    );
    repo.commit("broken readiness");
    let events = |got: &Received| -> Vec<String> {
        got.lock()
            .unwrap()
            .iter()
            .map(|(v, _)| v["event"].as_str().unwrap_or("").to_string())
            .collect()
    };
    within(
        Duration::from_secs(90),
        "synced, degraded and rolled-back posts",
        || {
            let e = events(&got);
            (e.iter().any(|x| x == "synced")
                && e.iter().any(|x| x == "degraded")
                && e.iter().any(|x| x == "rolled-back"))
            .then_some(())
        },
    );
    for (body, sig) in got.lock().unwrap().iter() {
        assert!(
            sig.starts_with("sha256=") && body["__signed"] == true,
            "signed: {body} {sig}"
        );
        assert_eq!(body["application"], "shop");
    }
    let degraded = got
        .lock()
        .unwrap()
        .iter()
        .find(|(v, _)| v["event"] == "degraded")
        .cloned()
        .unwrap()
        .0;
    assert!(
        degraded["resources"]
            .to_string()
            .contains("\"name\":\"web\""),
        "{degraded}"
    );
    // The Application's Events tell the same.
    let evs = get(
        &s,
        "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name%3Dshop",
    );
    let reasons: Vec<&str> = evs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str())
        .collect();
    assert!(
        reasons.contains(&"Degraded") && reasons.contains(&"RolledBack"),
        "{reasons:?}"
    );
    // A receiver that is down does not hold syncs back: a new commit still syncs at once.
    repo.write(
        "settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  COLOR: blue\n",
    );
    repo.commit("config");
    within(Duration::from_secs(10), "the next commit synced", || {
        (s.call(
            "GET",
            "/api/v1/namespaces/default/configmaps/settings",
            "",
            "",
        )
        .0 == 200)
            .then_some(())
    });
}

#[test]
fn a_deny_window_holds_commits_until_a_forced_sync() {
    let s = Server::up(&[]);
    let repo = Repo::new(s.dir.path());
    repo.write(
        "settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  COLOR: blue\n",
    );
    repo.commit("blue");
    application(&s, &repo, json!({}));
    within(LONG, "synced", || {
        (app(&s)["status"]["sync"]["status"] == "Synced").then_some(())
    });
    // A malformed window is refused, naming the field.
    let path = "/apis/gitops.capstan.io/v1/namespaces/default/applications/shop";
    let (code, v) = s.call(
        "PATCH",
        path,
        "application/merge-patch+json",
        r#"{"spec":{"syncWindows":[{"schedule":"* * * * *","duration":"forever","kind":"deny"}]}}"#,
    );
    assert_eq!(code, 422, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("spec.syncWindows[0].duration"),
        "{v}"
    );
    // A deny window open all the time (every minute, for two minutes).
    let (code, v) = s.call(
        "PATCH",
        path,
        "application/merge-patch+json",
        r#"{"spec":{"syncWindows":[{"schedule":"* * * * *","duration":"2m","kind":"deny"}]}}"#,
    );
    assert_eq!(code, 200, "{v}");
    repo.write(
        "settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  COLOR: green\n",
    );
    repo.commit("green");
    let held = within(LONG, "held by the window", || {
        let m = app(&s)["status"]["operationState"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string();
        m.starts_with("sync window: deny").then_some(m)
    });
    assert!(held.contains("until"), "{held}");
    // The window is shown: on the app's status (the TUI's WINDOW column) and by `capstan app get`.
    assert_eq!(app(&s)["status"]["syncWindow"]["open"], false);
    let shown = ok(&s.capstan(&["app", "get", "shop"]));
    assert!(
        shown.contains("Windows:     sync window: deny (* * * * * for 2m) until")
            && shown.contains("deny   * * * * *        for 2m"),
        "{shown}"
    );
    let color =
        || get(&s, "/api/v1/namespaces/default/configmaps/settings")["data"]["COLOR"].clone();
    assert_eq!(color(), "blue");
    ok(&s.capstan(&["app", "sync", "shop"]));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(color(), "blue", "a plain manual sync waits too");
    ok(&s.capstan(&["app", "sync", "shop", "--force"]));
    within(LONG, "forced through", || {
        (color() == "green").then_some(())
    });
}

#[test]
fn an_app_of_apps_deploys_the_applications_in_its_repository_and_pruning_one_prunes_it() {
    let s = Server::up(&[]);
    let repo = Repo::new(s.dir.path());
    repo.write_at(
        "team/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: team-settings\ndata:\n  COLOR: blue\n",
    );
    let child = format!(
        "apiVersion: gitops.capstan.io/v1\nkind: Application\nmetadata:\n  name: team\nspec:\n  source:\n    repoURL: {}\n    path: team\n",
        repo.dir.display()
    );
    repo.write("team-app.yaml", &child);
    repo.write(
        "settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  COLOR: blue\n",
    );
    repo.commit("an app of apps");
    application(&s, &repo, json!({}));
    let child_path = "/apis/gitops.capstan.io/v1/namespaces/default/applications/team";
    within(LONG, "the child app synced its own content", || {
        (s.call(
            "GET",
            "/api/v1/namespaces/default/configmaps/team-settings",
            "",
            "",
        )
        .0 == 200)
            .then_some(())
    });
    assert_eq!(
        get(&s, child_path)["metadata"]["labels"]["capstan.io/app"],
        "shop"
    );
    repo.remove("team-app.yaml");
    repo.commit("drop the team app");
    within(LONG, "the child Application pruned", || {
        (s.call("GET", child_path, "", "").0 == 404).then_some(())
    });
}

#[test]
fn the_history_keeps_revision_history_limit_records() {
    let s = Server::up(&[]);
    let repo = Repo::new(s.dir.path());
    let config = |n: usize| {
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  N: \"{n}\"\n"
        )
    };
    repo.write("settings.yaml", &config(0));
    repo.commit("config 0");
    let body = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {"source": {"repoURL": repo.dir.display().to_string(), "path": "app"},
                 "destination": {"namespace": "default"}, "revisionHistoryLimit": 3}});
    let (code, v) = s.call(
        "POST",
        "/apis/gitops.capstan.io/v1/namespaces/default/applications",
        "application/json",
        &body.to_string(),
    );
    assert_eq!(code, 201, "{v}");
    within(LONG, "synced", || available(&s).then_some(()));
    for n in 1..=5 {
        repo.write("settings.yaml", &config(n));
        let head = repo.commit(&format!("config {n}"));
        within(LONG, "the commit synced and Healthy", || {
            let a = app(&s);
            (a["status"]["sync"]["revision"] == head.as_str() && available(&s)).then_some(())
        });
    }
    // Six syncs (the first and five commits): the three newest records are kept.
    within(LONG, "the history pruned to 3", || {
        let seqs: Vec<i64> = history(&s)
            .iter()
            .filter_map(|r| r["spec"]["sequence"].as_i64())
            .collect();
        (seqs == [4, 5, 6]).then_some(())
    });
}
