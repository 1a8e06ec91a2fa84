//! The terminal UI end to end, in a real terminal: `capstan tui` runs in a pseudo-terminal (portable-pty) whose
//! output is interpreted by a VT100 parser (vt100), against a real `capstan up` following a real git repository.
//! The test types keys as a user would and reads the screen.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ok, Server};
use portable_pty::{native_pty_system, CommandBuilder, PtySize};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

struct Repo {
    dir: PathBuf,
}

impl Repo {
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
    fn commit_version(&self, version: &str, message: &str) {
        std::fs::write(
            self.dir.join("app").join("hello.yaml"),
            format!(
                r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  namespace: default
spec:
  replicas: 2
  # Each new pod counts as available a second after it is ready: the rollout stays on screen long enough to see.
  minReadySeconds: 1
  selector:
    matchLabels: {{app: hello}}
  template:
    metadata:
      labels: {{app: hello}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: hello
        image: capstan/demo-app
        command: ["capstan", "demo-app"]
        env:
        - name: VERSION
          value: "{version}"
        readinessProbe:
          httpGet: {{path: /healthz, port: 8080}}
          periodSeconds: 1
"#
            ),
        )
        .unwrap();
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
    }
}

/// `capstan tui` in a pseudo-terminal, its screen kept by a VT100 parser.
struct Tui {
    _master: Box<dyn portable_pty::MasterPty + Send>,
    writer: Box<dyn Write + Send>,
    screen: Arc<Mutex<vt100::Parser>>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
}

impl Tui {
    fn start(kubeconfig: &Path, config_home: &Path, cols: u16, rows: u16) -> Tui {
        let pair = native_pty_system()
            .openpty(PtySize {
                rows,
                cols,
                pixel_width: 0,
                pixel_height: 0,
            })
            .expect("a pseudo-terminal");
        let mut cmd = CommandBuilder::new(common::BIN);
        cmd.arg("--kubeconfig");
        cmd.arg(kubeconfig);
        cmd.arg("tui");
        cmd.env("TERM", "xterm-256color");
        // No config of the machine's user: a fresh config home.
        cmd.env("XDG_CONFIG_HOME", config_home);
        let child = pair.slave.spawn_command(cmd).expect("spawn capstan tui");
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader().unwrap();
        let writer = pair.master.take_writer().unwrap();
        let screen = Arc::new(Mutex::new(vt100::Parser::new(
            std::num::NonZeroU16::new(rows).unwrap(),
            std::num::NonZeroU16::new(cols).unwrap(),
            0,
        )));
        let s = screen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().process(&buf[..n]);
            }
        });
        Tui {
            _master: pair.master,
            writer,
            screen,
            child,
        }
    }

    fn screen(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    /// Types `keys`, then gives the TUI a moment (an Esc followed at once by a key would read as Alt-key).
    fn keys(&mut self, keys: &str) {
        self.writer.write_all(keys.as_bytes()).unwrap();
        self.writer.flush().unwrap();
        std::thread::sleep(Duration::from_millis(250));
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LONG;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// The screen line that shows `name` in a table.
fn row<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == name))
}

fn pods_answer(s: &Server, version: &str) -> bool {
    let pods = s
        .call(
            "GET",
            "/api/v1/namespaces/default/pods?labelSelector=app=hello",
            "",
            "",
        )
        .1;
    let live: Vec<&Value> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    live.len() == 2
        && live.iter().all(|p| {
            let ip = p["status"]["podIP"].as_str().unwrap_or("");
            reqwest::blocking::Client::new()
                .get(format!("http://{ip}:8080/"))
                .timeout(Duration::from_secs(2))
                .send()
                .ok()
                .and_then(|r| r.json::<Value>().ok())
                .is_some_and(|v| v["version"] == version)
        })
}

#[test]
fn watch_a_rollout_and_roll_back_from_the_history_in_a_real_terminal() {
    capstan::sys::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let repo = Repo {
        dir: tmp.path().join("repo"),
    };
    std::fs::create_dir_all(repo.dir.join("app")).unwrap();
    repo.git(&["init", "-q", "-b", "main"]);
    repo.commit_version("v1", "hello v1");
    let s = Server::up(&[]);
    let app = json!({"apiVersion": "gitops.capstan.io/v1", "kind": "Application",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {"source": {"repoURL": repo.dir.display().to_string(), "path": "app"},
                 "destination": {"namespace": "default"},
                 "syncPolicy": {"automated": true, "prune": true, "selfHeal": true}}});
    let (code, v) = s.call(
        "POST",
        "/apis/gitops.capstan.io/v1/namespaces/default/applications",
        "application/json",
        &app.to_string(),
    );
    assert_eq!(code, 201, "{v}");

    let mut tui = Tui::start(
        &s.dir.path().join("kubeconfig"),
        &tmp.path().join("config"),
        120,
        36,
    );
    // It opens on the Applications, live: the app appears and syncs.
    tui.wait_for("the application synced", |sc| {
        row(sc, "shop").is_some_and(|l| l.contains("Synced"))
    });
    // The Deployment becomes Ready on screen.
    tui.keys(":deploy\r");
    tui.wait_for("hello 2/2 ready", |sc| {
        row(sc, "hello").is_some_and(|l| l.contains("2/2") && l.contains("██████████ 2/2"))
    });

    // A commit rolls it out: the progress shows, then revision 2 complete.
    repo.commit_version("v2", "hello v2");
    let started = Instant::now();
    let mut saw_progress = false;
    loop {
        let sc = tui.screen();
        let line = row(&sc, "hello").unwrap_or("").to_string();
        if line.contains('░') {
            saw_progress = true;
        }
        if saw_progress && line.contains("██████████ 2/2") && line.contains(" 2 ")
        {
            break;
        }
        assert!(
            started.elapsed() < LONG,
            "the rollout never completed on screen:\n{sc}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The new commit is in the Application's history.
    tui.keys(":apps\r");
    tui.wait_for("the apps view", |sc| row(sc, "shop").is_some());
    tui.keys("h");
    let sc = tui.wait_for("hello v2 in the history", |sc| {
        sc.contains("History (2)") && sc.contains("hello v2") && sc.contains("hello v1")
    });
    let v2_line = sc.lines().position(|l| l.contains("hello v2")).unwrap();
    let v1_line = sc.lines().position(|l| l.contains("hello v1")).unwrap();
    assert!(v2_line < v1_line, "newest first:\n{sc}");

    // Roll back to v1 from the history: the confirm dialog shows the revert diff first.
    tui.keys("j");
    tui.keys("R");
    let sc = tui.wait_for("the rollback's confirm dialog", |sc| {
        sc.contains("Confirm") && sc.contains("value: \"v1\"")
    });
    assert!(sc.contains("-          value: \"v2\""), "{sc}");
    assert!(sc.contains("+          value: \"v1\""), "{sc}");
    tui.keys("y");
    tui.wait_for("the revert commit in the history", |sc| {
        sc.contains("History (3)") && sc.contains("Roll back shop to")
    });
    assert!(
        repo.git(&["log", "-1", "--format=%s"])
            .starts_with("Roll back shop to"),
        "the revert commit is in the repository"
    );
    // The rollout back is followed on the same screen: revision 3, complete.
    tui.wait_for("the rollback's rollout complete in the panel", |sc| {
        sc.lines()
            .any(|l| l.contains("deploy/hello") && l.contains("2/2 updated") && l.contains("rev 3"))
    });
    common::within(LONG, "the old template running", || {
        pods_answer(&s, "v1").then_some(())
    });

    // Ctrl-C leaves cleanly.
    tui.keys("\x03");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = tui.child.try_wait().unwrap() {
            assert!(status.success(), "capstan tui exited with {status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "capstan tui did not quit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_crds_kind_is_listed_in_a_real_terminal_with_its_printer_columns() {
    capstan::sys::init_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start();
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "crontabs.stable.example.com"},
        "spec": {"group": "stable.example.com", "scope": "Namespaced",
            "names": {"plural": "crontabs", "singular": "crontab", "kind": "CronTab", "shortNames": ["ct"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object",
                    "properties": {"cronSpec": {"type": "string"}, "image": {"type": "string"}}}}}},
                "additionalPrinterColumns": [{"name": "Schedule", "type": "string", "jsonPath": ".spec.cronSpec"},
                    {"name": "Image", "type": "string", "jsonPath": ".spec.image"}]}]}});
    let (code, v) = s.call(
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        "application/json",
        &crd.to_string(),
    );
    assert_eq!(code, 201, "{v}");
    common::eventually("the CronTab kind served", || {
        let (code, _) = s.call("GET", "/apis/stable.example.com/v1/crontabs", "", "");
        (code == 200).then_some(())
    });
    let ct = json!({"apiVersion": "stable.example.com/v1", "kind": "CronTab",
        "metadata": {"name": "nightly", "namespace": "default"},
        "spec": {"cronSpec": "0 3 * * *", "image": "backup:1"}});
    let (code, v) = s.call(
        "POST",
        "/apis/stable.example.com/v1/namespaces/default/crontabs",
        "application/json",
        &ct.to_string(),
    );
    assert_eq!(code, 201, "{v}");
    let mut tui = Tui::start(
        &s.dir.path().join("kubeconfig"),
        &tmp.path().join("config"),
        120,
        20,
    );
    tui.wait_for("the TUI up", |sc| sc.contains("Applications"));
    // The kind is learned from discovery at start; `:ct` (its short name) lists it with the CRD's columns.
    // (Typed again while the kind is not known yet: the first answer may be `unknown command or kind`.)
    let listed = |sc: &str| {
        row(sc, "nightly").is_some_and(|l| l.contains("0 3 * * *") && l.contains("backup:1"))
    };
    let deadline = Instant::now() + LONG;
    let screen = loop {
        tui.keys(":ct\r");
        let sc = tui.screen();
        if listed(&sc) {
            break sc;
        }
        assert!(
            Instant::now() < deadline,
            "the CronTab never listed; the screen:\n{sc}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        screen.contains("SCHEDULE") && screen.contains("IMAGE"),
        "{screen}"
    );
}
