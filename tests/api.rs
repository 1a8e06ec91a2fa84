//! The API server over real HTTPS: readiness, auth, CRUD semantics, validation errors, watch, paging, finalizers,
//! namespaces, durability across restarts and `kill -9`.

mod common;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use common::Server;
use serde_json::{json, Value};

fn cm(name: &str) -> String {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": "demo"}}, "data": {"k": "v"}}).to_string()
}

#[test]
fn server_is_ready_and_requires_the_token() {
    let s = Server::start();
    eprintln!("ready after {:?}", s.ready_after);
    let http = s.http();
    let v: Value = http
        .get(format!("{}/version", s.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(v["major"], "1");
    let r = http
        .get(format!("{}/api/v1/namespaces", s.url))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().unwrap();
    assert_eq!(
        (body["kind"].as_str(), body["reason"].as_str()),
        (Some("Status"), Some("Unauthorized"))
    );
    let (code, list) = s.call("GET", "/api/v1/namespaces", "", "");
    assert_eq!(code, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.contains(&ns), "{ns} missing from {names:?}");
    }
    let (code, apps) = s.call("GET", "/apis/apps/v1", "", "");
    assert_eq!(code, 200);
    let res: Vec<&str> = apps["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        res.contains(&"deployments/scale") && res.contains(&"deployments/status"),
        "{res:?}"
    );
}

#[test]
fn bad_input_gets_the_right_status_and_nothing_is_stored() {
    let s = Server::start();
    let base = "/api/v1/namespaces/default/configmaps";
    let (code, st) = s.call(
        "POST",
        base,
        "application/json",
        "{\"apiVersion\": \"v1\", ",
    );
    assert_eq!(
        (code, st["reason"].as_str()),
        (400, Some("BadRequest")),
        "{st}"
    );
    let (code, st) = s.call("POST", "/apis/apps/v1/namespaces/default/deployments", "application/json",
        &json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": "two"}}).to_string());
    assert_eq!(code, 400);
    assert!(
        st["message"].as_str().unwrap().contains("spec.replicas"),
        "{st}"
    );
    let (code, st) = s.call(
        "POST",
        &format!("{base}?fieldValidation=Strict"),
        "application/json",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "dta": {}})
            .to_string(),
    );
    assert_eq!(code, 400);
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"dta\""),
        "{st}"
    );
    let (code, st) = s.call(
        "POST",
        base,
        "application/json",
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}).to_string(),
    );
    assert_eq!(
        (code, st["reason"].as_str()),
        (422, Some("Invalid")),
        "{st}"
    );
    assert_eq!(st["details"]["causes"][0]["field"], "metadata.name");
    let (code, st) = s.call("POST", base, "application/json", &cm("Not_Valid"));
    assert_eq!(code, 422);
    assert!(
        st["message"].as_str().unwrap().contains("metadata.name"),
        "{st}"
    );
    let big = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"k": "x".repeat(4 * 1024 * 1024)}}).to_string();
    let (code, st) = s.call("POST", base, "application/json", &big);
    assert_eq!(
        (code, st["reason"].as_str()),
        (413, Some("RequestEntityTooLarge")),
        "{st}"
    );
    let (code, _) = s.call("GET", base, "", "");
    assert_eq!(code, 200, "the server keeps serving");
    let (_, list) = s.call("GET", base, "", "");
    assert_eq!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["metadata"]["name"] != "kube-root-ca.crt")
            .count(),
        0,
        "nothing partial was stored: {list}"
    );
    // Conflicts.
    let (code, created) = s.call("POST", base, "application/json", &cm("a"));
    assert_eq!(code, 201);
    let (code, st) = s.call("POST", base, "application/json", &cm("a"));
    assert_eq!((code, st["reason"].as_str()), (409, Some("AlreadyExists")));
    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = json!("1");
    stale["data"]["k"] = json!("changed");
    let (code, st) = s.call(
        "PUT",
        &format!("{base}/a"),
        "application/json",
        &stale.to_string(),
    );
    assert_eq!(
        (code, st["reason"].as_str()),
        (409, Some("Conflict")),
        "{st}"
    );
    let (_, now) = s.call("GET", &format!("{base}/a"), "", "");
    assert_eq!(now["data"]["k"], "v", "a stale update changes nothing");
    let (code, st) = s.call("PATCH", &format!("{base}/a"), "text/plain", "{}");
    assert_eq!(code, 415, "{st}");
    let (code, st) = s.call("GET", &format!("{base}/missing"), "", "");
    assert_eq!(
        (code, st["reason"].as_str(), st["details"]["kind"].as_str()),
        (404, Some("NotFound"), Some("configmaps"))
    );
    let (code, _) = s.call(
        "POST",
        "/api/v1/namespaces/nowhere/configmaps",
        "application/json",
        &cm("b"),
    );
    assert_eq!(code, 404, "creating in a missing namespace is refused");
}

#[test]
fn create_defaults_generation_and_status_subresource() {
    let s = Server::start();
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"generateName": "web-"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}},
        "status": {"replicas": 99}});
    let (code, d) = s.call(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        "application/json",
        &dep.to_string(),
    );
    assert_eq!(code, 201, "{d}");
    let name = d["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert_eq!(d["metadata"]["generation"], 1);
    assert!(d["metadata"]["uid"].is_string() && d["metadata"]["creationTimestamp"].is_string());
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert!(
        d.get("status").is_none(),
        "status is not writable on create: {d}"
    );
    let path = format!("/apis/apps/v1/namespaces/default/deployments/{name}");
    // A label change does not bump generation; a spec change does.
    let (_, d2) = s.call(
        "PATCH",
        &path,
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"x":"y"}}}"#,
    );
    assert_eq!(d2["metadata"]["generation"], 1);
    let (_, d3) = s.call(
        "PATCH",
        &path,
        "application/strategic-merge-patch+json",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"nginx:1.26"}]}}}}"#,
    );
    assert_eq!(d3["metadata"]["generation"], 2);
    assert_eq!(
        d3["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Status goes through /status only.
    let (_, d4) = s.call(
        "PATCH",
        &format!("{path}/status"),
        "application/merge-patch+json",
        r#"{"status":{"replicas":3}}"#,
    );
    assert_eq!(
        (
            d4["status"]["replicas"].as_i64(),
            d4["metadata"]["generation"].as_i64()
        ),
        (Some(3), Some(2))
    );
    let (_, d5) = s.call(
        "PATCH",
        &path,
        "application/merge-patch+json",
        r#"{"status":{"replicas":7}}"#,
    );
    // (The Deployment controller may have written status meanwhile; the request's own value never lands.)
    assert_ne!(
        d5["status"]["replicas"], 7,
        "status is ignored on the main resource"
    );
    // Scale.
    let (code, sc) = s.call(
        "PATCH",
        &format!("{path}/scale"),
        "application/merge-patch+json",
        r#"{"spec":{"replicas":4}}"#,
    );
    assert_eq!(code, 200, "{sc}");
    assert_eq!(
        (
            sc["kind"].as_str(),
            sc["spec"]["replicas"].as_i64(),
            sc["status"]["selector"].as_str()
        ),
        (Some("Scale"), Some(4), Some("app=web"))
    );
    // JSON patch.
    let (code, d6) = s.call(
        "PATCH",
        &path,
        "application/json-patch+json",
        r#"[{"op":"replace","path":"/spec/replicas","value":2}]"#,
    );
    assert_eq!((code, d6["spec"]["replicas"].as_i64()), (200, Some(2)));
    // Dry run stores nothing.
    let (code, _) = s.call(
        "PATCH",
        &format!("{path}?dryRun=All"),
        "application/merge-patch+json",
        r#"{"spec":{"replicas":9}}"#,
    );
    assert_eq!(code, 200);
    let (_, cur) = s.call("GET", &path, "", "");
    assert_eq!(cur["spec"]["replicas"], 2);
}

#[test]
fn server_side_apply_tracks_managers_and_conflicts() {
    let s = Server::start();
    let path = "/api/v1/namespaces/default/configmaps/ssa";
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1", "b": "2"}});
    let (code, v) = s.call(
        "PATCH",
        &format!("{path}?fieldManager=alice"),
        "application/apply-patch+yaml",
        &cfg.to_string(),
    );
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["metadata"]["managedFields"][0]["manager"], "alice");
    assert_eq!(v["metadata"]["managedFields"][0]["operation"], "Apply");
    let (code, _) = s.call(
        "PATCH",
        &format!("{path}?fieldManager=bob"),
        "application/merge-patch+json",
        r#"{"data":{"a":"bob"}}"#,
    );
    assert_eq!(code, 200);
    let (code, st) = s.call(
        "PATCH",
        &format!("{path}?fieldManager=alice"),
        "application/apply-patch+yaml",
        &cfg.to_string(),
    );
    assert_eq!(code, 409, "{st}");
    assert!(st["message"].as_str().unwrap().contains("bob"), "{st}");
    let (code, v) = s.call(
        "PATCH",
        &format!("{path}?fieldManager=alice&force=true"),
        "application/apply-patch+yaml",
        &cfg.to_string(),
    );
    assert_eq!((code, v["data"]["a"].as_str()), (200, Some("1")));
    // Dropping a field from the applied config removes it.
    let cfg2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"a": "1"}});
    let (_, v) = s.call(
        "PATCH",
        &format!("{path}?fieldManager=alice"),
        "application/apply-patch+yaml",
        &cfg2.to_string(),
    );
    assert_eq!(v["data"], json!({"a": "1"}));
    let (code, _) = s.call(
        "PATCH",
        path,
        "application/apply-patch+yaml",
        &cfg2.to_string(),
    );
    assert_eq!(code, 400, "apply needs a field manager");
}

#[test]
fn list_pages_and_selects() {
    let s = Server::start();
    for i in 0..7 {
        let mut c: Value = serde_json::from_str(&cm(&format!("c{i}"))).unwrap();
        c["metadata"]["labels"]["tier"] = json!(if i % 2 == 0 { "even" } else { "odd" });
        s.call(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            &c.to_string(),
        );
    }
    let mut names = Vec::new();
    let mut cont = String::new();
    let mut left = Vec::new();
    loop {
        let (code, page) = s.call(
            "GET",
            &format!("/api/v1/namespaces/default/configmaps?limit=3&continue={cont}"),
            "",
            "",
        );
        assert_eq!(code, 200, "{page}");
        left.push(page["metadata"]["remainingItemCount"].clone());
        if cont.is_empty() {
            // Written after the first page: the later pages still show the list as it was at its first.
            s.call(
                "POST",
                "/api/v1/namespaces/default/configmaps",
                "application/json",
                &cm("c7"),
            );
        }
        names.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
                .filter(|n| n != "kube-root-ca.crt"),
        );
        match page["metadata"]["continue"].as_str() {
            Some(c) => cont = c.to_string(),
            None => break,
        }
    }
    assert_eq!(names, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
    // Eight objects (with kube-root-ca.crt) in pages of 3: 5 left, 2 left, then no count on the last page.
    assert_eq!(left, [json!(5), json!(2), Value::Null]);
    let (_, odd) = s.call(
        "GET",
        "/api/v1/namespaces/default/configmaps?labelSelector=tier%3Dodd",
        "",
        "",
    );
    assert_eq!(odd["items"].as_array().unwrap().len(), 3);
    let (_, one) = s.call(
        "GET",
        "/api/v1/configmaps?fieldSelector=metadata.name%3Dc4",
        "",
        "",
    );
    assert_eq!(
        one["items"].as_array().unwrap().len(),
        1,
        "all-namespaces list with a name selector"
    );
    let (code, _) = s.call(
        "GET",
        "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20b",
        "",
        "",
    );
    assert_eq!(code, 400);
}

fn open_watch(s: &Server, query: &str) -> BufReader<reqwest::blocking::Response> {
    let c = s.http();
    let r = c
        .get(format!(
            "{}/api/v1/namespaces/default/configmaps?watch=true&{query}",
            s.url
        ))
        .bearer_auth(s.token())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    BufReader::new(r)
}

fn next_event(r: &mut BufReader<reqwest::blocking::Response>) -> Value {
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).unwrap() > 0, "watch ended");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v["type"] != "BOOKMARK" {
            return v;
        }
    }
}

#[test]
fn watch_streams_every_change_in_order() {
    let s = Server::start();
    let (_, list) = s.call("GET", "/api/v1/namespaces/default/configmaps", "", "");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut w = open_watch(
        &s,
        &format!("resourceVersion={rv}&allowWatchBookmarks=true"),
    );
    let mut sel = open_watch(&s, "labelSelector=pick%3Dyes");
    s.call(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        &cm("w1"),
    );
    s.call(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/w1",
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"pick":"yes"}}}"#,
    );
    s.call("DELETE", "/api/v1/namespaces/default/configmaps/w1", "", "");
    let kinds: Vec<String> = (0..3)
        .map(|_| next_event(&mut w)["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
    let e = next_event(&mut sel);
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("w1")),
        "an object that starts matching is ADDED"
    );
    assert_eq!(next_event(&mut sel)["type"], "DELETED");
}

#[test]
fn restart_keeps_data_and_kill_9_keeps_acknowledged_writes() {
    let s = Server::start();
    for i in 0..20 {
        let (code, _) = s.call(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            "application/json",
            &cm(&format!("k{i}")),
        );
        assert_eq!(code, 201);
    }
    let (_, before) = s.call("GET", "/api/v1/namespaces/default/configmaps/k19", "", "");
    let dir = s.kill9();
    let s2 = Server::start_in(dir);
    let (_, list) = s2.call(
        "GET",
        "/api/v1/namespaces/default/configmaps?labelSelector=app%3Ddemo",
        "",
        "",
    );
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        20,
        "every acknowledged create survived kill -9"
    );
    let (_, after) = s2.call("GET", "/api/v1/namespaces/default/configmaps/k19", "", "");
    assert_eq!(
        before["metadata"]["resourceVersion"],
        after["metadata"]["resourceVersion"]
    );
    assert_eq!(before["metadata"]["uid"], after["metadata"]["uid"]);
    // History before the restart is compacted: watching from there is 410 Expired.
    let mut w = open_watch(&s2, "resourceVersion=2");
    let e = next_event(&mut w);
    assert_eq!(
        (
            e["type"].as_str(),
            e["object"]["code"].as_i64(),
            e["object"]["reason"].as_str()
        ),
        (Some("ERROR"), Some(410), Some("Expired"))
    );
}

#[test]
fn finalizers_hold_deletion_and_namespaces_take_their_content() {
    let s = Server::start();
    let mut c: Value = serde_json::from_str(&cm("held")).unwrap();
    c["metadata"]["finalizers"] = json!(["example.com/hold"]);
    s.call(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        &c.to_string(),
    );
    let (code, v) = s.call(
        "DELETE",
        "/api/v1/namespaces/default/configmaps/held",
        "",
        "",
    );
    assert_eq!(code, 200);
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    let (code, _) = s.call("GET", "/api/v1/namespaces/default/configmaps/held", "", "");
    assert_eq!(code, 200, "still there while a finalizer is set");
    s.call(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/held",
        "application/merge-patch+json",
        r#"{"metadata":{"finalizers":null}}"#,
    );
    let (code, _) = s.call("GET", "/api/v1/namespaces/default/configmaps/held", "", "");
    assert_eq!(code, 404, "gone once the last finalizer is removed");

    s.call(
        "POST",
        "/api/v1/namespaces",
        "application/json",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team"}}"#,
    );
    s.call(
        "POST",
        "/api/v1/namespaces/team/configmaps",
        "application/json",
        &cm("inside"),
    );
    let (code, ns) = s.call("DELETE", "/api/v1/namespaces/team", "", "");
    assert_eq!(
        (code, ns["status"]["phase"].as_str()),
        (200, Some("Terminating"))
    );
    let (code, _) = s.call(
        "POST",
        "/api/v1/namespaces/team/configmaps",
        "application/json",
        &cm("late"),
    );
    assert_eq!(code, 403, "no new content in a terminating namespace");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _) = s.call("GET", "/api/v1/namespaces/team", "", "");
        if code == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "namespace not deleted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, left) = s.call("GET", "/api/v1/namespaces/team/configmaps", "", "");
    assert_eq!(left["items"].as_array().unwrap().len(), 0);

    // Another finalizer in spec.finalizers holds an emptied namespace until its owner finalizes it.
    s.call(
        "POST",
        "/api/v1/namespaces",
        "application/json",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"held"},
            "spec":{"finalizers":["example.com/vault","kubernetes"]}}"#,
    );
    s.call("DELETE", "/api/v1/namespaces/held", "", "");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, ns) = s.call("GET", "/api/v1/namespaces/held", "", "");
        if ns["spec"]["finalizers"] == serde_json::json!(["example.com/vault"]) {
            assert_eq!(ns["status"]["phase"], "Terminating");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the namespace controller never removed its finalizer: {ns}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, bad) = s.call(
        "PUT",
        "/api/v1/namespaces/held/finalize",
        "application/json",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"held"},"spec":{"finalizers":"no"}}"#,
    );
    assert_eq!(code, 400, "{bad}");
    let (code, _) = s.call(
        "PUT",
        "/api/v1/namespaces/held/finalize",
        "application/json",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"held"},"spec":{"finalizers":[]}}"#,
    );
    assert_eq!(code, 200);
    let (code, _) = s.call("GET", "/api/v1/namespaces/held", "", "");
    assert_eq!(code, 404, "finalized: the namespace is gone");
}

#[test]
fn tables_have_kubectl_columns() {
    let s = Server::start();
    s.call(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        &cm("t1"),
    );
    let c = s.http();
    let t: Value = c
        .get(format!(
            "{}/api/v1/namespaces/default/configmaps?labelSelector=app%3Ddemo",
            s.url
        ))
        .bearer_auth(s.token())
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(t["kind"], "Table");
    let cols: Vec<&str> = t["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(cols, ["Name", "Data", "Age"]);
    assert_eq!(t["rows"][0]["cells"][0], "t1");
    assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
}

#[test]
fn a_write_that_changes_nothing_keeps_the_resource_version() {
    let s = Server::start();
    let (_, a) = s.call(
        "POST",
        "/api/v1/namespaces/default/configmaps",
        "application/json",
        &cm("same"),
    );
    let rv = a["metadata"]["resourceVersion"].clone();
    let (_, b) = s.call(
        "PUT",
        "/api/v1/namespaces/default/configmaps/same",
        "application/json",
        &a.to_string(),
    );
    assert_eq!(
        b["metadata"]["resourceVersion"], rv,
        "an identical PUT is not a write"
    );
    let cfg =
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"same"},"data":{"k":"v"}}"#;
    let path = "/api/v1/namespaces/default/configmaps/same?fieldManager=m&force=true";
    let (_, c) = s.call("PATCH", path, "application/apply-patch+yaml", cfg);
    let rv2 = c["metadata"]["resourceVersion"].clone();
    let (_, d) = s.call("PATCH", path, "application/apply-patch+yaml", cfg);
    assert_eq!(
        d["metadata"]["resourceVersion"], rv2,
        "re-applying the same config is not a write"
    );
}

#[test]
fn deeply_nested_bodies_are_refused_at_once_naming_the_line() {
    let s = Server::start();
    let half = 512 * 1024;
    let flow = format!("{}{}", "[".repeat(half), "]".repeat(half));
    let compact = format!("data:\n  x:\n{}y\n", "- ".repeat(half));
    for (body, line) in [(flow, "line 1"), (compact, "line 3")] {
        let (code, v) = s.call(
            "POST",
            concat!("/", "api/v1/namespaces/default/configmaps"),
            "application/yaml",
            &body,
        );
        assert_eq!(code, 400, "{v}");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(line) && message.contains("nesting deeper than 128 levels"),
            "{message}"
        );
    }
    let json = format!("{}{}", "[".repeat(half), "]".repeat(half));
    let (code, _) = s.call(
        "POST",
        concat!("/", "api/v1/namespaces/default/configmaps"),
        "application/json",
        &json,
    );
    assert_eq!(code, 400);
    // The server is still itself.
    let (code, _) = s.call(
        "GET",
        concat!("/", "api/v1/namespaces/default/configmaps"),
        "",
        "",
    );
    assert_eq!(code, 200);
}

#[test]
fn nothing_new_is_created_in_a_terminating_namespace() {
    let s = Server::start();
    let (code, _) = s.call(
        "POST",
        concat!("/", "api/v1/namespaces"),
        "application/json",
        r#"{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"going"}}"#,
    );
    assert_eq!(code, 201);
    // A finalizer that nobody removes keeps the namespace Terminating.
    let (code, _) = s.call(
        "POST",
        concat!("/", "api/v1/namespaces/going/configmaps"),
        "application/json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","finalizers":["example.com/hold"]}}"#,
    );
    assert_eq!(code, 201);
    let (code, _) = s.call("DELETE", concat!("/", "api/v1/namespaces/going"), "", "");
    assert_eq!(code, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (code, v) = s.call(
            "POST",
            concat!("/", "api/v1/namespaces/going/configmaps"),
            "application/json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"late"}}"#,
        );
        if code == 403 {
            assert!(
                v["message"]
                    .as_str()
                    .unwrap()
                    .contains("because it is being terminated"),
                "{v}"
            );
            break;
        }
        assert_eq!(code, 201, "{v}");
        assert!(std::time::Instant::now() < deadline, "never refused");
        s.call(
            "DELETE",
            concat!("/", "api/v1/namespaces/going/configmaps/late"),
            "",
            "",
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A namespace that does not exist: 404.
    let (code, _) = s.call(
        "POST",
        concat!("/", "api/v1/namespaces/never/configmaps"),
        "application/json",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#,
    );
    assert_eq!(code, 404);
}

#[test]
fn metadata_only_get_list_and_watch_and_statuses_byte_for_byte() {
    use std::io::BufRead;
    let s = Server::start();
    let (code, _) = s.call(
        "POST",
        concat!("/", "api/v1/namespaces/default/configmaps"),
        "application/json",
        &cm("meta-1"),
    );
    assert_eq!(code, 201);
    let accept_list = "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    let get_json = |path: &str, accept: &str| -> serde_json::Value {
        s.http()
            .get(format!("{}{path}", s.url))
            .bearer_auth(s.token())
            .header("Accept", accept)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let list = get_json(
        concat!("/", "api/v1/namespaces/default/configmaps"),
        accept_list,
    );
    assert_eq!(list["kind"], "PartialObjectMetadataList");
    assert_eq!(list["apiVersion"], "meta.k8s.io/v1");
    let item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["metadata"]["name"] == "meta-1")
        .unwrap();
    assert_eq!(item["kind"], "PartialObjectMetadata");
    assert_eq!(item["metadata"]["name"], "meta-1");
    assert!(item.get("data").is_none(), "metadata only: {item}");
    let one = get_json(
        concat!("/", "api/v1/namespaces/default/configmaps/meta-1"),
        "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
    );
    assert_eq!(one["kind"], "PartialObjectMetadata");
    assert!(one["metadata"]["uid"].is_string());
    assert!(one.get("data").is_none());
    // A watch sends PartialObjectMetadata too.
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let watch = s
        .http()
        .get(format!(
            "{}{}?watch=1&resourceVersion={rv}",
            s.url,
            concat!("/", "api/v1/namespaces/default/configmaps")
        ))
        .bearer_auth(s.token())
        .header(
            "Accept",
            "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
        )
        .send()
        .unwrap();
    s.call(
        "POST",
        concat!("/", "api/v1/namespaces/default/configmaps"),
        "application/json",
        &cm("meta-2"),
    );
    let line = std::io::BufReader::new(watch)
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let ev: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["kind"], "PartialObjectMetadata");
    assert_eq!(ev["object"]["metadata"]["name"], "meta-2");

    // Conflict and not-found bodies as a Kubernetes 1.32 API server writes them.
    let body = |method: &str, path: &str, payload: &str| {
        let mut rb = s
            .http()
            .request(method.parse().unwrap(), format!("{}{path}", s.url))
            .bearer_auth(s.token());
        if !payload.is_empty() {
            rb = rb
                .header("Content-Type", "application/json")
                .body(payload.to_string());
        }
        rb.send().unwrap().text().unwrap()
    };
    assert_eq!(
        body(
            "POST",
            concat!("/", "api/v1/namespaces/default/configmaps"),
            &cm("meta-1")
        ),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"meta-1\\\" already exists\",\"reason\":\"AlreadyExists\",\"details\":{\"name\":\"meta-1\",\"kind\":\"configmaps\"},\"code\":409}\n"
    );
    assert_eq!(
        body(
            "GET",
            concat!("/", "apis/apps/v1/namespaces/default/deployments/none"),
            ""
        ),
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"deployments.apps \\\"none\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"none\",\"group\":\"apps\",\"kind\":\"deployments\"},\"code\":404}\n"
    );
}
