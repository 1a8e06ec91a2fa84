//! Jobs and CronJobs end to end on a real `capstan up`: real processes run to completion, driven by the real kubectl
//! (`apply`, `wait --for=condition=...`, `logs`, `create job --from=cronjob/...`).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{ok, within, Server};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn job_pods(s: &Server, job: &str) -> Vec<Value> {
    let (code, list) = s.call(
        "GET",
        &format!("/api/v1/namespaces/default/pods?labelSelector=job-name%3D{job}"),
        "",
        "",
    );
    assert_eq!(code, 200, "{list}");
    list["items"].as_array().cloned().unwrap_or_default()
}

fn get(s: &Server, path: &str) -> Value {
    s.call("GET", path, "", "").1
}

fn running(p: &Value) -> bool {
    p["metadata"]["deletionTimestamp"].is_null()
        && !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
}

#[test]
fn a_job_of_5_completions_never_runs_more_than_2_at_once_and_completes() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    s.kubectl_apply(
        &k,
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: five
spec:
  completions: 5
  parallelism: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: none
        command: ["sh", "-c", "sleep 0.5; echo done"]
"#,
    );
    let start = Instant::now();
    let mut most = 0;
    let mut seen = BTreeSet::new();
    loop {
        let pods = job_pods(&s, "five");
        most = most.max(pods.iter().filter(|p| running(p)).count());
        seen.extend(
            pods.iter()
                .filter_map(|p| p["metadata"]["name"].as_str().map(String::from)),
        );
        let job = get(&s, "/apis/batch/v1/namespaces/default/jobs/five");
        if job["status"]["succeeded"] == 5 {
            break;
        }
        assert!(start.elapsed() < LONG, "not complete in time: {job}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(most <= 2, "{most} pods ran at once");
    assert_eq!(most, 2, "parallelism 2 is used");
    assert_eq!(seen.len(), 5, "{seen:?}");
    ok(&s.kubectl(
        &k,
        &[
            "wait",
            "--for=condition=complete",
            "job/five",
            "--timeout=30s",
        ],
    ));
    let job = get(&s, "/apis/batch/v1/namespaces/default/jobs/five");
    assert!(job["status"]["completionTime"].is_string(), "{job}");
    assert!(job["status"]["startTime"].is_string(), "{job}");
    assert_eq!(job["status"]["active"].as_i64().unwrap_or(0), 0, "{job}");
    let out = ok(&s.kubectl(&k, &["get", "job", "five"]));
    assert!(out.contains("5/5"), "{out}");
}

#[test]
fn a_failing_job_stops_at_its_backoff_limit_with_a_failed_condition() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    s.kubectl_apply(
        &k,
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: broken
spec:
  backoffLimit: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: none
        command: ["sh", "-c", "exit 3"]
"#,
    );
    ok(&s.kubectl(
        &k,
        &[
            "wait",
            "--for=condition=failed",
            "job/broken",
            "--timeout=60s",
        ],
    ));
    let job = get(&s, "/apis/batch/v1/namespaces/default/jobs/broken");
    let failed = job["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .cloned()
        .unwrap();
    assert_eq!(failed["reason"], "BackoffLimitExceeded", "{job}");
    assert_eq!(
        job["status"]["failed"], 3,
        "backoffLimit 2 allows three tries: {job}"
    );
    // Nothing more is started.
    std::thread::sleep(Duration::from_secs(2));
    let pods = job_pods(&s, "broken");
    assert_eq!(pods.len(), 3, "{pods:?}");
    assert!(pods.iter().all(|p| p["status"]["phase"] == "Failed"));
    let events = ok(&s.kubectl(
        &k,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=broken",
        ],
    ));
    assert!(events.contains("BackoffLimitExceeded"), "{events}");
}

#[test]
fn an_indexed_job_gives_each_pod_its_completion_index() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    s.kubectl_apply(
        &k,
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: indexed
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: none
        command: ["sh", "-c", "echo index=$JOB_COMPLETION_INDEX"]
"#,
    );
    ok(&s.kubectl(
        &k,
        &[
            "wait",
            "--for=condition=complete",
            "job/indexed",
            "--timeout=60s",
        ],
    ));
    let job = get(&s, "/apis/batch/v1/namespaces/default/jobs/indexed");
    assert_eq!(job["status"]["completedIndexes"], "0-2", "{job}");
    let mut said = BTreeSet::new();
    for p in job_pods(&s, "indexed") {
        let name = p["metadata"]["name"].as_str().unwrap();
        let index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(name.starts_with(&format!("indexed-{index}-")), "{name}");
        let log = ok(&s.kubectl(&k, &["logs", name]));
        assert_eq!(log.trim(), format!("index={index}"));
        said.insert(index);
    }
    assert_eq!(said.into_iter().collect::<Vec<_>>(), ["0", "1", "2"]);
}

#[test]
fn a_suspended_job_runs_nothing_until_resumed_and_a_finished_job_expires_after_its_ttl() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    s.kubectl_apply(
        &k,
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: later
spec:
  suspend: true
  ttlSecondsAfterFinished: 2
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: work
        image: none
        command: ["true"]
"#,
    );
    within(LONG, "the Suspended condition", || {
        let job = get(&s, "/apis/batch/v1/namespaces/default/jobs/later");
        job["status"]["conditions"]
            .as_array()
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Suspended" && c["status"] == "True")
            })
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        job_pods(&s, "later").is_empty(),
        "a suspended job starts no pod"
    );
    ok(&s.kubectl(
        &k,
        &[
            "patch",
            "job",
            "later",
            "-p",
            r#"{"spec":{"suspend":false}}"#,
        ],
    ));
    ok(&s.kubectl(
        &k,
        &[
            "wait",
            "--for=condition=complete",
            "job/later",
            "--timeout=60s",
        ],
    ));
    // ttlSecondsAfterFinished: the Job and, by garbage collection, its pod go away.
    within(LONG, "the job deleted after its TTL", || {
        let (code, _) = s.call(
            "GET",
            "/apis/batch/v1/namespaces/default/jobs/later",
            "",
            "",
        );
        (code == 404).then_some(())
    });
    within(LONG, "its pod collected", || {
        job_pods(&s, "later").is_empty().then_some(())
    });
}

#[test]
fn a_cronjob_creates_jobs_on_schedule_and_kubectl_can_start_one_by_hand() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    s.kubectl_apply(
        &k,
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: tick
spec:
  schedule: "* * * * *"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers:
          - name: tick
            image: none
            command: ["sh", "-c", "date; echo tick"]
"#,
    );
    // A Job made by hand from the template works at once.
    ok(&s.kubectl(&k, &["create", "job", "by-hand", "--from=cronjob/tick"]));
    ok(&s.kubectl(
        &k,
        &[
            "wait",
            "--for=condition=complete",
            "job/by-hand",
            "--timeout=60s",
        ],
    ));
    let by_hand = get(&s, "/apis/batch/v1/namespaces/default/jobs/by-hand");
    assert_eq!(
        by_hand["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );
    // The schedule's first time comes within a minute: a Job named after its scheduled minute.
    let scheduled = within(Duration::from_secs(75), "a scheduled job", || {
        let list = get(&s, "/apis/batch/v1/namespaces/default/jobs");
        list["items"].as_array().and_then(|items| {
            items
                .iter()
                .find(|j| {
                    j["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("tick-"))
                })
                .cloned()
        })
    });
    let name = scheduled["metadata"]["name"].as_str().unwrap().to_string();
    let minutes: i64 = name.trim_start_matches("tick-").parse().unwrap();
    let at = scheduled["metadata"]["annotations"]
        ["batch.kubernetes.io/cronjob-scheduled-timestamp"]
        .as_str()
        .unwrap()
        .to_string();
    let at_t = chrono::DateTime::parse_from_rfc3339(&at).unwrap();
    assert_eq!(at_t.timestamp(), minutes * 60, "{at}");
    assert_eq!(
        scheduled["metadata"]["ownerReferences"][0]["kind"],
        "CronJob"
    );
    ok(&s.kubectl(
        &k,
        &[
            "wait",
            "--for=condition=complete",
            &format!("job/{name}"),
            "--timeout=60s",
        ],
    ));
    let cj = within(LONG, "lastSuccessfulTime", || {
        let cj = get(&s, "/apis/batch/v1/namespaces/default/cronjobs/tick");
        cj["status"]["lastSuccessfulTime"].is_string().then_some(cj)
    });
    assert_eq!(
        cj["status"]["lastScheduleTime"]
            .as_str()
            .map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap().timestamp()),
        Some(minutes * 60),
        "{cj}"
    );
    let out = ok(&s.kubectl(&k, &["get", "cronjob", "tick"]));
    assert!(out.contains("* * * * *"), "{out}");
}

#[test]
fn forbid_skips_a_run_while_one_is_active_and_history_limits_prune_old_jobs() {
    let Some(k) = common::kubectl() else { return };
    let s = Server::up(&[]);
    s.kubectl_apply(
        &k,
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: slow
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          terminationGracePeriodSeconds: 1
          containers:
          - {name: slow, image: none, command: ["sleep", "600"]}
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: quick
spec:
  schedule: "* * * * *"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - {name: quick, image: none, command: ["true"]}
"#,
    );
    let jobs_of = |cj: &str| -> Vec<Value> {
        let list = get(&s, "/apis/batch/v1/namespaces/default/jobs");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == cj)
            .cloned()
            .collect()
    };
    // The first minute: one Job each.
    let first = within(Duration::from_secs(75), "the first scheduled runs", || {
        let (slow, quick) = (jobs_of("slow"), jobs_of("quick"));
        (slow.len() == 1 && quick.len() == 1)
            .then(|| quick[0]["metadata"]["name"].as_str().unwrap().to_string())
    });
    // The next minute: the slow one is still running, so Forbid skips it; the quick one runs again and only the
    // newest finished Job is kept.
    let second = within(
        Duration::from_secs(75),
        "the quick CronJob's second run",
        || {
            let quick = jobs_of("quick");
            quick
                .iter()
                .find(|j| j["metadata"]["name"] != first.as_str())
                .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
        },
    );
    within(LONG, "the first quick Job pruned", || {
        let names: Vec<String> = jobs_of("quick")
            .iter()
            .map(|j| j["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        (names == [second.clone()]).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        jobs_of("slow").len(),
        1,
        "Forbid: no second Job while the first runs"
    );
    let cj = get(&s, "/apis/batch/v1/namespaces/default/cronjobs/slow");
    assert_eq!(
        cj["status"]["active"].as_array().map_or(0, Vec::len),
        1,
        "{cj}"
    );
}
