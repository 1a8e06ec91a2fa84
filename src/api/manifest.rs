//! Parsing manifests: the multi-document YAML and JSON texts of files (read by their callers), each document mapped
//! to its kind in the registry. Errors name the file, the document and the line, and every document is read before anything is
//! sent, so a bad file never leaves a half-applied set.

use serde_json::Value;

use super::registry::{self, KindInfo};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: document {doc}: {message}")]
    Document {
        file: String,
        doc: usize,
        message: Problem,
    },
}

/// What is wrong with one document of a manifest file.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("a manifest must be a mapping with apiVersion, kind and metadata")]
    NotAMapping,
    #[error("apiVersion not set")]
    NoApiVersion,
    #[error("kind not set")]
    NoKind,
    #[error("no kind {kind:?} is served in version {version:?}")]
    NotInVersion { kind: String, version: String },
    #[error("kind {kind:?} ({version}) is not served by Capstan")]
    NotServed { kind: String, version: String },
    #[error("metadata must be a mapping")]
    Metadata,
    /// A problem with one item of a `kind: List`.
    #[error("item {0}: {1}")]
    Item(usize, Box<Problem>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

thread_local! {
    /// Kinds of CRDs read alongside the manifests being parsed, not served yet (see [`with_pending`]).
    static PENDING: std::cell::RefCell<Vec<&'static KindInfo>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` (which parses manifests on this thread) with `kinds` resolvable as if served: the custom kinds of CRDs in
/// the same set of manifests, so a commit may carry a CRD and objects of its kind together.
pub fn with_pending<T>(kinds: Vec<&'static KindInfo>, f: impl FnOnce() -> T) -> T {
    let before = PENDING.with(|p| std::mem::replace(&mut *p.borrow_mut(), kinds));
    let out = f();
    PENDING.with(|p| *p.borrow_mut() = before);
    out
}

/// The kinds the CRDs in `texts` (manifest files) define, resolved with [`registry::provisional`]; files that fail
/// to parse are left to the parse that reports them.
pub fn kinds_of_crds<'a>(texts: impl Iterator<Item = &'a str>) -> Vec<&'static KindInfo> {
    use serde::Deserialize;
    let mut out = Vec::new();
    for text in texts.filter(|t| t.contains("CustomResourceDefinition")) {
        let mut values = Vec::new();
        if text.trim_start().starts_with('{') {
            values.extend(serde_json::from_str::<Value>(text).ok());
        } else {
            for de in serde_yaml_ng::Deserializer::from_str(text) {
                match Value::deserialize(de) {
                    Ok(v) => values.push(v),
                    Err(_) => break,
                }
            }
        }
        for v in values {
            if v["kind"] != "CustomResourceDefinition"
                || v["apiVersion"] != "apiextensions.k8s.io/v1"
            {
                continue;
            }
            let Ok(crd) = serde_json::from_value::<super::crd::CustomResourceDefinition>(v) else {
                continue;
            };
            if let Ok(served) = crd.served() {
                out.extend(served.iter().map(registry::provisional));
            }
        }
    }
    out
}

/// One object read from a file.
#[derive(Clone, Debug)]
pub struct Document {
    pub file: String,
    pub index: usize,
    pub kind: &'static KindInfo,
    pub object: Value,
}

impl Document {
    pub fn name(&self) -> &str {
        self.object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    pub fn namespace(&self) -> Option<&str> {
        self.object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
    }
}

/// Parses the documents of one file's text.
pub fn parse(file: &str, text: &str) -> Result<Vec<Document>> {
    let mut docs = Vec::new();
    for (doc, v, item) in values_of(file, text)? {
        docs.push(one(file, doc, v).map_err(|m| Error::Document {
            file: file.into(),
            doc,
            message: match item {
                Some(j) => Problem::Item(j, Box::new(m)),
                None => m,
            },
        })?);
    }
    Ok(docs)
}

/// The objects of one file's text, of any kind (nothing is checked against the served kinds): each with the number
/// of its document. Items of a `List` (or any `...List` with `items`) are objects of their own.
pub fn parse_any(file: &str, text: &str) -> Result<Vec<(usize, Value)>> {
    Ok(values_of(file, text)?
        .into_iter()
        .map(|(doc, v, _)| (doc, v))
        .collect())
}

/// The object values of a text: (document number, object, item number within a List).
fn values_of(file: &str, text: &str) -> Result<Vec<(usize, Value, Option<usize>)>> {
    use serde::Deserialize;
    let mut values: Vec<Value> = Vec::new();
    let trimmed = text.trim_start();
    if file.ends_with(".json")
        || trimmed.starts_with('{') && serde_json::from_str::<Value>(text).is_ok()
    {
        let v: Value = serde_json::from_str(text).map_err(|e| Error::Parse {
            file: file.into(),
            message: format!("line {}, column {}: {e}", e.line(), e.column()),
        })?;
        values.push(v);
    } else {
        if let Some(line) = yaml_too_deep(text.as_bytes(), MAX_DEPTH) {
            return Err(Error::Parse {
                file: file.into(),
                message: format!("line {line}: nesting deeper than {MAX_DEPTH} levels"),
            });
        }
        for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let v = Value::deserialize(de).map_err(|e| {
                let loc = e
                    .location()
                    .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
                    .unwrap_or_default();
                Error::Parse {
                    file: file.into(),
                    message: format!("document {}: {loc}{e}", i + 1),
                }
            })?;
            let mut v = v;
            octal_modes(&mut v);
            values.push(v);
        }
    }
    let mut out = Vec::new();
    for (i, v) in values.into_iter().enumerate() {
        if v.is_null() {
            continue;
        }
        let doc = i + 1;
        if !v.is_object() {
            return Err(Error::Document {
                file: file.into(),
                doc,
                message: Problem::NotAMapping,
            });
        }
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind.ends_with("List") && v.get("items").is_some_and(Value::is_array) {
            for (j, item) in v["items"].as_array().into_iter().flatten().enumerate() {
                out.push((doc, item.clone(), Some(j)));
            }
            continue;
        }
        out.push((doc, v, None));
    }
    Ok(out)
}

/// The served kind of an object (or of a CRD read alongside it, see [`with_pending`]).
pub fn kind_of(v: &Value) -> std::result::Result<&'static KindInfo, Problem> {
    let api_version = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or(Problem::NoApiVersion)?;
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(Problem::NoKind)?;
    registry::by_kind(api_version, kind)
        .or_else(|| {
            PENDING.with(|p| {
                p.borrow()
                    .iter()
                    .copied()
                    .find(|k| k.kind == kind && k.api_version() == api_version)
            })
        })
        .ok_or_else(|| {
            let (kind, version) = (kind.to_string(), api_version.to_string());
            if registry::KINDS.iter().any(|k| k.kind == kind) {
                Problem::NotInVersion { kind, version }
            } else {
                Problem::NotServed { kind, version }
            }
        })
}

fn one(file: &str, index: usize, v: Value) -> std::result::Result<Document, Problem> {
    let info = kind_of(&v)?;
    if !v.get("metadata").is_none_or(Value::is_object) {
        return Err(Problem::Metadata);
    }
    Ok(Document {
        file: file.into(),
        index,
        kind: info,
        object: v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_with_kinds() {
        let docs = parse("x.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b}\n").unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].kind.kind, "Deployment");
    }

    #[test]
    fn errors_name_file_document_and_problem() {
        let e = parse(
            "x.yaml",
            "apiVersion: v1\nkind: ConfigMap\n---\nkind: Widget\napiVersion: example.com/v1\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("x.yaml: document 2") && e.to_string().contains("Widget"),
            "{e}"
        );
        let e = parse("y.yaml", "a: [1\n").unwrap_err();
        assert!(
            e.to_string().contains("y.yaml") && e.to_string().contains("line"),
            "{e}"
        );
        let e = parse("z.yaml", "kind: Pod\nmetadata: {name: p}\n").unwrap_err();
        assert!(e.to_string().contains("apiVersion not set"), "{e}");
    }
}

/// The line (1-based) where document `index` (1-based, as in errors) of a YAML text begins: the first line after its
/// `---` separator (documents are split on lines that start with `---`).
pub fn doc_line(text: &str, index: usize) -> usize {
    let mut doc = 1;
    let mut seen_content = false;
    for (n, line) in text.lines().enumerate() {
        if line.starts_with("---") {
            // A leading separator opens the first document rather than ending it.
            if seen_content {
                doc += 1;
            }
            seen_content = true;
            if doc == index {
                return n + 2;
            }
            continue;
        }
        if !line.trim().is_empty() && !line.trim_start().starts_with('#') && !seen_content {
            seen_content = true;
            if index == 1 {
                return n + 1;
            }
        }
    }
    1
}

#[cfg(test)]
mod line_tests {
    #[test]
    fn finds_where_documents_begin() {
        let t = "# c\napiVersion: v1\n---\nkind: A\n---\n\nkind: B\n";
        assert_eq!(super::doc_line(t, 1), 2);
        assert_eq!(super::doc_line(t, 2), 4);
        assert_eq!(super::doc_line(t, 3), 6);
        let t = "---\na: 1\n---\nb: 2\n";
        assert_eq!(super::doc_line(t, 1), 2);
        assert_eq!(super::doc_line(t, 2), 4);
    }
}

/// File modes written the YAML 1.1 way (`defaultMode: 0644`, `mode: 01777`) are octal integers to kubectl's YAML
/// reader (go-yaml); this YAML 1.2 reader sees strings. Mode fields holding such a plain octal string become the
/// integer kubectl would send.
fn octal_modes(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "defaultMode" || k == "mode" {
                    if let Some(s) = x.as_str() {
                        let digits = s.strip_prefix('0').unwrap_or("");
                        if !digits.is_empty() && digits.chars().all(|c| ('0'..='7').contains(&c)) {
                            if let Ok(n) = i64::from_str_radix(digits, 8) {
                                *x = Value::from(n);
                                continue;
                            }
                        }
                    }
                }
                octal_modes(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(octal_modes),
        _ => {}
    }
}

#[cfg(test)]
mod octal_tests {
    #[test]
    fn file_modes_read_like_kubectl() {
        let docs = super::parse(
            "p.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  volumes:\n  - name: a\n    emptyDir: {mode: 01777}\n  - name: b\n    configMap: {name: c, defaultMode: 0644, items: [{key: k, path: k, mode: 0400}]}\n  - name: d\n    secret: {secretName: s, defaultMode: 420}\n",
        )
        .unwrap();
        let v = &docs[0].object["spec"]["volumes"];
        assert_eq!(v[0]["emptyDir"]["mode"], 1023);
        assert_eq!(v[1]["configMap"]["defaultMode"], 420);
        assert_eq!(v[1]["configMap"]["items"][0]["mode"], 256);
        assert_eq!(v[2]["secret"]["defaultMode"], 420);
    }
}

/// How deep a manifest or request body may nest (JSON's parser stops at the same depth).
pub const MAX_DEPTH: usize = 128;

/// The line where a YAML text first nests deeper than `max` levels - block mappings and sequences by their
/// indentation (and `- ` or `? ` entries that open a level on the same line), flow collections by their brackets -
/// found in one pass before parsing, so a deeply nested body is refused at once instead of keeping the parser busy
/// (its time grows with the square of the depth).
pub fn yaml_too_deep(text: &[u8], max: usize) -> Option<usize> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (n, line) in text.split(|b| *b == b'\n').enumerate() {
        let indent = line.iter().take_while(|b| **b == b' ').count();
        let rest = &line[indent..];
        if flow == 0 && !rest.is_empty() && rest[0] != b'#' {
            while indents.last().is_some_and(|i| *i >= indent) {
                indents.pop();
            }
            indents.push(indent);
            let mut col = indent;
            let mut r = rest;
            while r.len() >= 2 && (r[0] == b'-' || r[0] == b'?') && r[1] == b' ' {
                col += 2;
                indents.push(col);
                r = &r[2..];
                while r.first() == Some(&b' ') {
                    r = &r[1..];
                    col += 1;
                }
            }
        }
        let mut quote: Option<u8> = None;
        for &b in rest {
            match (quote, b) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, b'"' | b'\'') => quote = Some(b),
                (None, b'#') => break,
                (None, b'[' | b'{') => flow += 1,
                (None, b']' | b'}') => flow = flow.saturating_sub(1),
                _ => {}
            }
            if indents.len() + flow > max {
                return Some(n + 1);
            }
        }
        if indents.len() + flow > max {
            return Some(n + 1);
        }
    }
    None
}

#[cfg(test)]
mod depth_tests {
    use super::*;

    #[test]
    fn deep_yaml_is_found_before_parsing_and_ordinary_yaml_passes() {
        let flow = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(yaml_too_deep(flow.as_bytes(), 128), Some(1));
        let compact = format!("{}x\n", "- ".repeat(200));
        assert_eq!(yaml_too_deep(compact.as_bytes(), 128), Some(1));
        let block: String = (0..200)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        assert_eq!(yaml_too_deep(block.as_bytes(), 128), Some(129));
        let deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web  # [not a bracket\n  labels: {app: web}\nspec:\n  template:\n    spec:\n      containers:\n      - name: c\n        command: [\"sh\", \"-c\", \"echo ]]]\"]\n        env:\n        - {name: A, value: \"[\"}\n";
        assert_eq!(yaml_too_deep(deployment.as_bytes(), 128), None);
        assert_eq!(yaml_too_deep(deployment.as_bytes(), 5), Some(11));
    }
}
