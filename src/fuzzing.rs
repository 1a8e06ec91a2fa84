//! Fuzz targets: every parser that takes bytes from outside - manifests, selectors, quantities, patches,
//! server-side apply, kustomize builds, WAL segments, protobuf bodies, SPDY and channel frames - behind one entry,
//! [`run`], so the `cargo fuzz` targets in `fuzz/` and the corpus replay in `tests/fuzz_corpus.rs` call exactly the
//! same code. A target may return an error for bad input; it must never panic or hang.
//!
//! Inputs that hold several texts (a patch and its target, a kustomization and its files) split them at lines of
//! `=====`.

use serde_json::Value;

/// The targets, by name (the name is also the fuzz target's and its corpus directory's).
pub const TARGETS: &[&str] = &[
    "manifest",
    "selector",
    "quantity",
    "patch",
    "apply",
    "kustomize",
    "wal",
    "protobuf",
    "frames",
];

/// Runs target `name` on `data`. Unknown names panic (a mistake in the caller, not an input).
pub fn run(name: &str, data: &[u8]) {
    match name {
        "manifest" => manifest(data),
        "selector" => selector(data),
        "quantity" => quantity(data),
        "patch" => patch(data),
        "apply" => apply(data),
        "kustomize" => kustomize(data),
        "wal" => wal(data),
        "protobuf" => protobuf(data),
        "frames" => frames(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// The texts of an input that holds several, split at lines of `=====`.
pub fn parts(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data)
        .split("\n=====\n")
        .map(str::to_string)
        .collect()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

/// YAML and JSON manifests, as `capstan apply -f` and GitOps read them.
fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::api::manifest::parse("fuzz.yaml", &text);
    let _ = crate::api::manifest::parse_any("fuzz.yaml", &text);
}

/// Label and field selectors, parsed and matched against labels and an object of the input's own.
fn selector(data: &[u8]) {
    let p = parts(data);
    let text = &p[0];
    let labels: std::collections::BTreeMap<String, String> = p
        .get(1)
        .map(|l| {
            l.lines()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    if let Ok(s) = crate::api::selector::Selector::parse(text) {
        s.matches(&labels);
        // What a selector prints parses back to the same selector.
        let again = crate::api::selector::Selector::parse(&s.to_string())
            .expect("a printed selector parses");
        assert_eq!(again.to_string(), s.to_string(), "selector {text:?}");
    }
    if let Ok(f) = crate::api::selector::FieldSelector::parse(text) {
        f.matches(&json(p.get(1).map(String::as_str).unwrap_or("{}")));
    }
}

/// Quantities (`500m`, `1Gi`, `1e3`).
fn quantity(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::api::parse_quantity_millis(&text);
}

/// Strategic merge, JSON merge and JSON patches of a target by a patch.
fn patch(data: &[u8]) {
    let p = parts(data);
    let target = json(&p[0]);
    let patch = json(p.get(1).map(String::as_str).unwrap_or("null"));
    let mut t = target.clone();
    let _ = crate::api::smp::strategic_merge(&mut t, &patch);
    let mut t = target.clone();
    let _ = crate::api::smp::strategic_merge_prepending(&mut t, &patch);
    let mut t = target.clone();
    crate::apiserver::patch::merge_patch(&mut t, &patch);
    let mut t = target;
    let _ = crate::apiserver::patch::json_patch(&mut t, &patch);
}

/// Server-side apply of a configuration onto a current object, by two managers in turn.
fn apply(data: &[u8]) {
    let p = parts(data);
    let current = json(&p[0]);
    let config = json(p.get(1).map(String::as_str).unwrap_or("{}"));
    let t = "2026-01-01T00:00:00Z";
    if let Ok(after) =
        crate::apiserver::patch::apply(&current, &config, "one", "v1", false, false, t)
    {
        let _ = crate::apiserver::patch::apply(&after, &current, "two", "v1", true, false, t);
    }
}

/// A kustomize build: the first text is `kustomization.yaml`; each other one is a file, its path on its first line.
fn kustomize(data: &[u8]) {
    let p = parts(data);
    let mut tree = crate::gitops::kustomize::Tree::new();
    tree.insert("kustomization.yaml".into(), p[0].clone().into_bytes());
    for text in p.iter().skip(1) {
        let (path, body) = text.split_once('\n').unwrap_or((text, ""));
        tree.insert(path.trim().to_string(), body.as_bytes().to_vec());
    }
    let _ = crate::gitops::kustomize::build(&tree, "");
}

/// A WAL segment: its replay either yields records or names the damage.
fn wal(data: &[u8]) {
    match crate::store::embedded::wal::decode_all(data) {
        Ok(r) => assert!(r.torn <= data.len()),
        Err(c) => assert!(c.offset < c.next_valid && c.next_valid < data.len()),
    }
}

/// Protobuf request bodies (`application/vnd.kubernetes.protobuf`) of a few kinds.
fn protobuf(data: &[u8]) {
    for (group, kind) in [
        ("", "Pod"),
        ("", "ConfigMap"),
        ("apps", "Deployment"),
        ("", "Service"),
    ] {
        let _ = crate::api::protobuf::object(data, group, "v1", kind);
    }
}

/// Frames from the network: SPDY/3.1 (kubectl's port-forward), the channel protocols of exec and port-forward, and
/// port-forward's query.
fn frames(data: &[u8]) {
    let mut codec = crate::api::spdy::Codec::new();
    let mut buf = data.to_vec();
    // Each decode takes a frame off the front or stops: bounded by the input's length.
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
    for protocol in ["v5.channel.k8s.io", "base64.channel.k8s.io"] {
        let f = crate::api::exec::Framing::of(protocol);
        let _ = f.decode(data, true);
        let _ = f.decode(data, false);
    }
    let text = String::from_utf8_lossy(data);
    let _ = crate::api::exec::forwarded_ports(&text);
    let _ = crate::api::exec::Options::parse(&text);
    // A watch's answer, in chunks cut at every seventh byte and whole: the same events either way.
    let mut whole = crate::client::WatchDecoder::default();
    let at_once: Vec<String> = whole
        .push(data)
        .into_iter()
        .map(|e| format!("{e:?}"))
        .collect();
    let mut cut = crate::client::WatchDecoder::default();
    let mut in_chunks: Vec<String> = Vec::new();
    for chunk in data.chunks(7) {
        in_chunks.extend(cut.push(chunk).into_iter().map(|e| format!("{e:?}")));
    }
    assert_eq!(
        at_once, in_chunks,
        "a watch answer decoded differently when cut into chunks"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_target_takes_empty_and_odd_input() {
        for t in super::TARGETS {
            for input in [
                &b""[..],
                b"\xff\xfe",
                b"=====",
                b"{}\n=====\n[]",
                b"\0\0\0\0",
            ] {
                super::run(t, input);
            }
        }
    }
}
