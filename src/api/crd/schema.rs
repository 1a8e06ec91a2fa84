//! A CRD's structural schema applied to custom objects, in kube-apiserver's order: prune (unknown fields dropped
//! unless `x-kubernetes-preserve-unknown-fields`, nulls dropped where not `nullable`), default (`default` on write and
//! on read from storage), validate (OpenAPI v3 value validations with kube-openapi's messages, list types, embedded
//! resources), then the CEL rules ([`super::cel`]) when nothing blocking was found.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::cel::{self, Rules};
use crate::api::validation::{err, FieldError, Reason};

/// A compiled schema: the schema as written plus its regular expressions and CEL programs, compiled once.
#[derive(Debug)]
pub struct Compiled {
    root: Value,
    patterns: HashMap<String, regex::Regex>,
    rules: Rules,
}

const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];

/// Kubernetes' note when CEL rules were skipped because of errors found before them.
pub const RULES_SKIPPED: &str =
    "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation";

impl Compiled {
    /// Compiles a CRD version's `openAPIV3Schema`; an error names the schema path.
    pub fn new(root: &Value) -> Result<Compiled, String> {
        let mut c = Compiled {
            root: root.clone(),
            patterns: HashMap::new(),
            rules: Rules::default(),
        };
        c.compile(root, "")?;
        Ok(c)
    }

    fn compile(&mut self, s: &Value, path: &str) -> Result<(), String> {
        let Some(m) = s.as_object() else {
            return Err(format!("{}: must be an object", at(path)));
        };
        if let Some(t) = m.get("type") {
            if !t.as_str().is_some_and(|t| TYPES.contains(&t)) {
                return Err(format!(
                    "{}.type: Unsupported value: {t}: supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\"",
                    at(path)
                ));
            }
        }
        if let Some(p) = m.get("pattern").and_then(Value::as_str) {
            let re =
                regex::Regex::new(p).map_err(|e| format!("{}.pattern: {p:?}: {e}", at(path)))?;
            self.patterns.insert(p.to_string(), re);
        }
        if let Some(v) = m.get("x-kubernetes-validations") {
            self.rules
                .compile(v)
                .map_err(|e| format!("{}.x-kubernetes-validations: {e}", at(path)))?;
        }
        if let Some(props) = m.get("properties").and_then(Value::as_object) {
            for (k, child) in props {
                self.compile(child, &format!("{path}.properties[{k}]"))?;
            }
        }
        for key in ["items", "additionalProperties", "not"] {
            if let Some(child) = m.get(key).filter(|c| c.is_object()) {
                self.compile(child, &format!("{path}.{key}"))?;
            }
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            for (i, child) in m
                .get(key)
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                self.compile(child, &format!("{path}.{key}[{i}]"))?;
            }
        }
        Ok(())
    }

    /// The schema as written.
    pub fn schema(&self) -> &Value {
        &self.root
    }

    /// The schema's lists by field name, for merging: `x-kubernetes-list-type: map` lists by their first key, every
    /// other list atomic (None), as server-side apply treats a custom object's lists.
    pub fn list_keys(&self) -> HashMap<String, Option<&'static str>> {
        fn intern(s: &str) -> &'static str {
            static KEYS: std::sync::OnceLock<
                std::sync::Mutex<std::collections::HashSet<&'static str>>,
            > = std::sync::OnceLock::new();
            let mut set = KEYS
                .get_or_init(Default::default)
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(k) = set.get(s) {
                return k;
            }
            let k: &'static str = Box::leak(s.to_string().into_boxed_str());
            set.insert(k);
            k
        }
        fn walk(s: &Value, out: &mut HashMap<String, Option<&'static str>>) {
            for (name, child) in props(s).into_iter().flatten() {
                if child.get("type").and_then(Value::as_str) == Some("array") {
                    let key = (child.get("x-kubernetes-list-type").and_then(Value::as_str)
                        == Some("map"))
                    .then(|| {
                        child
                            .get("x-kubernetes-list-map-keys")
                            .and_then(Value::as_array)
                            .and_then(|k| k.first())
                            .and_then(Value::as_str)
                            .map(intern)
                    })
                    .flatten();
                    out.entry(name.clone()).or_insert(key);
                }
                walk(child, out);
            }
            for key in ["items", "additionalProperties"] {
                if let Some(c) = s.get(key).filter(|c| c.is_object()) {
                    walk(c, out);
                }
            }
        }
        let mut out = HashMap::new();
        walk(&self.root, &mut out);
        out
    }

    /// Drops what the schema does not declare; returns the paths of the unknown fields dropped.
    pub fn prune(&self, obj: &mut Value) -> Vec<String> {
        let mut unknown = Vec::new();
        prune(&self.root, obj, "", true, &mut unknown);
        unknown
    }

    /// Fills in the schema's defaults.
    pub fn default(&self, obj: &mut Value) {
        default(&self.root, obj, true);
    }

    /// Validates `obj` (already pruned and defaulted); `old` is the stored object on update, for CEL transition
    /// rules.
    pub fn validate(&self, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut v = Validator {
            c: self,
            errs: Vec::new(),
            blocking: false,
        };
        v.walk(&self.root, obj, "", true);
        if self.rules.is_empty() {
            return v.errs;
        }
        if v.blocking {
            v.errs.push(err(
                "<nil>",
                Reason::Invalid,
                format!("\"null\": {RULES_SKIPPED}"),
            ));
            return v.errs;
        }
        let mut errs = v.errs;
        cel::check(&self.root, &self.rules, obj, old, "", &mut errs);
        errs
    }
}

fn at(path: &str) -> String {
    format!("openAPIV3Schema{path}")
}

/// The keys of an `x-kubernetes-list-type: map` list.
pub(super) fn map_keys(s: &Value) -> Vec<&str> {
    s.get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(s: &Value, name: &str) -> bool {
    s.get(name).and_then(Value::as_bool).unwrap_or(false)
}

fn props(s: &Value) -> Option<&Map<String, Value>> {
    s.get("properties").and_then(Value::as_object)
}

/// The schema of the values of a map (`additionalProperties` as a schema).
fn additional(s: &Value) -> Option<&Value> {
    s.get("additionalProperties").filter(|a| a.is_object())
}

fn prune(s: &Value, v: &mut Value, path: &str, root: bool, unknown: &mut Vec<String>) {
    // A value of the wrong type is left to validation, which names the type it should have.
    if let Some(t) = s.get("type").and_then(Value::as_str) {
        if !type_ok(t, v) {
            return;
        }
    }
    match v {
        Value::Object(map) => {
            let embedded = root || flag(s, "x-kubernetes-embedded-resource");
            let keep_unknown = flag(s, "x-kubernetes-preserve-unknown-fields")
                || s.get("additionalProperties") == Some(&Value::Bool(true));
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let p = join(path, &k);
                let child_schema = props(s).and_then(|p| p.get(&k)).or_else(|| additional(s));
                match child_schema {
                    Some(cs) => {
                        if map[&k].is_null() && !flag(cs, "nullable") {
                            map.remove(&k);
                        } else if let Some(child) = map.get_mut(&k) {
                            prune(cs, child, &p, false, unknown);
                        }
                    }
                    None if keep_unknown => {}
                    None => {
                        map.remove(&k);
                        unknown.push(p);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(is, item, &format!("{path}[{i}]"), false, unknown);
                }
            }
        }
        _ => {}
    }
}

fn default(s: &Value, v: &mut Value, root: bool) {
    match v {
        Value::Object(map) => {
            if let Some(ps) = props(s) {
                for (k, cs) in ps {
                    if root && k == "metadata" {
                        continue;
                    }
                    if let Some(d) = cs.get("default") {
                        let missing = match map.get(k) {
                            None => true,
                            Some(Value::Null) => !flag(cs, "nullable"),
                            Some(_) => false,
                        };
                        if missing {
                            map.insert(k.clone(), d.clone());
                        }
                    }
                }
            }
            for (k, child) in map.iter_mut() {
                if root && k == "metadata" {
                    continue;
                }
                if let Some(cs) = props(s).and_then(|p| p.get(k)).or_else(|| additional(s)) {
                    default(cs, child, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for item in items {
                    default(is, item, false);
                }
            }
        }
        _ => {}
    }
}

/// The JSON type name of a value, as kube-openapi names it in messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(want: &str, v: &Value) -> bool {
    match want {
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        other => type_name(v) == other,
    }
}

fn num(v: &Value) -> String {
    v.to_string()
}

struct Validator<'a> {
    c: &'a Compiled,
    errs: Vec<FieldError>,
    /// Errors of the kinds that stop CEL rules from running (types, required, enums, lengths, counts).
    blocking: bool,
}

impl Validator<'_> {
    fn push(&mut self, field: &str, reason: Reason, detail: String, blocking: bool) {
        self.blocking |= blocking;
        self.errs.push(err(field, reason, detail));
    }

    /// `field: Invalid value: <v>: field in body <what>`.
    fn invalid(&mut self, path: &str, shown: &str, what: String, blocking: bool) {
        self.push(
            path,
            Reason::Invalid,
            format!("{shown}: {path} in body {what}"),
            blocking,
        );
    }

    fn walk(&mut self, s: &Value, v: &Value, path: &str, root: bool) {
        let nullable = flag(s, "nullable");
        if v.is_null() {
            if !nullable {
                if let Some(t) = s.get("type").and_then(Value::as_str) {
                    self.invalid(
                        path,
                        "\"null\"",
                        format!("must be of type {t}: \"null\""),
                        true,
                    );
                }
            }
            return;
        }
        if flag(s, "x-kubernetes-int-or-string") {
            if !(v.is_i64() || v.is_u64() || v.is_string()) {
                let got = type_name(v);
                self.invalid(
                    path,
                    &format!("\"{got}\""),
                    format!("must be of type integer or string: \"{got}\""),
                    true,
                );
                return;
            }
        } else if let Some(t) = s.get("type").and_then(Value::as_str) {
            if !type_ok(t, v) {
                let got = type_name(v);
                self.invalid(
                    path,
                    &format!("\"{got}\""),
                    format!("must be of type {t}: \"{got}\""),
                    true,
                );
                return;
            }
        }
        self.values(s, v, path);
        match v {
            Value::Object(map) => self.object(s, map, path, root),
            Value::Array(items) => self.array(s, items, path),
            _ => {}
        }
        self.combinators(s, v, path);
    }

    fn values(&mut self, s: &Value, v: &Value, path: &str) {
        if let Some(e) = s.get("enum").and_then(Value::as_array) {
            if !e.contains(v) {
                let list: Vec<String> = e.iter().map(num).collect();
                self.push(
                    path,
                    Reason::NotSupported,
                    format!("{}: supported values: {}", num(v), list.join(", ")),
                    true,
                );
            }
        }
        if let Some(n) = v.as_f64() {
            let excl_max = flag(s, "exclusiveMaximum");
            let excl_min = flag(s, "exclusiveMinimum");
            if let Some(max) = s.get("maximum").filter(|m| m.is_number()) {
                let limit = max.as_f64().unwrap_or(f64::MAX);
                if n > limit || (excl_max && n == limit) {
                    let rel = if excl_max {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    self.invalid(
                        path,
                        &num(v),
                        format!("should be {rel} {}", num(max)),
                        false,
                    );
                }
            }
            if let Some(min) = s.get("minimum").filter(|m| m.is_number()) {
                let limit = min.as_f64().unwrap_or(f64::MIN);
                if n < limit || (excl_min && n == limit) {
                    let rel = if excl_min {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    self.invalid(
                        path,
                        &num(v),
                        format!("should be {rel} {}", num(min)),
                        false,
                    );
                }
            }
            if let Some(m) = s.get("multipleOf").and_then(Value::as_f64) {
                if m > 0.0 && (n / m).fract().abs() > 1e-9 {
                    self.invalid(path, &num(v), format!("should be a multiple of {m}"), false);
                }
            }
        }
        if let Some(text) = v.as_str() {
            let len = text.chars().count() as u64;
            if let Some(max) = s.get("maxLength").and_then(Value::as_u64) {
                if len > max {
                    self.push(
                        path,
                        Reason::TooLong,
                        format!("may not be more than {max} bytes"),
                        true,
                    );
                }
            }
            if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
                if len < min {
                    self.invalid(
                        path,
                        &num(v),
                        format!("should be at least {min} chars long"),
                        false,
                    );
                }
            }
            if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                if let Some(re) = self.c.patterns.get(p) {
                    if !re.is_match(text) {
                        self.invalid(path, &num(v), format!("should match '{p}'"), false);
                    }
                }
            }
            if let Some(f) = s.get("format").and_then(Value::as_str) {
                if !format_ok(f, text) {
                    self.invalid(
                        path,
                        &num(v),
                        format!("must be of type {f}: {}", num(v)),
                        false,
                    );
                }
            }
        }
    }

    fn object(&mut self, s: &Value, map: &Map<String, Value>, path: &str, root: bool) {
        if let Some(req) = s.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if map.get(r).is_none_or(Value::is_null) {
                    self.push(&join(path, r), Reason::Required, String::new(), true);
                }
            }
        }
        let count = map.len() as u64;
        if let Some(max) = s.get("maxProperties").and_then(Value::as_u64) {
            if count > max {
                self.push(
                    path,
                    Reason::TooMany,
                    format!("{count}: must have at most {max} items"),
                    true,
                );
            }
        }
        if let Some(min) = s.get("minProperties").and_then(Value::as_u64) {
            if count < min {
                self.invalid(
                    path,
                    &count.to_string(),
                    format!("should have at least {min} properties"),
                    false,
                );
            }
        }
        let embedded = flag(s, "x-kubernetes-embedded-resource");
        if embedded {
            for f in ["apiVersion", "kind"] {
                if map.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                    self.push(
                        &join(path, f),
                        Reason::Required,
                        "must not be empty".into(),
                        true,
                    );
                }
            }
        }
        for (k, child) in map {
            if (root || embedded) && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            let p = join(path, k);
            if let Some(cs) = props(s).and_then(|ps| ps.get(k)) {
                self.walk(cs, child, &p, false);
            } else if let Some(a) = additional(s) {
                self.walk(a, child, &p, false);
            }
        }
    }

    fn array(&mut self, s: &Value, items: &[Value], path: &str) {
        let count = items.len() as u64;
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64) {
            if count > max {
                self.push(
                    path,
                    Reason::TooMany,
                    format!("{count}: must have at most {max} items"),
                    true,
                );
            }
        }
        if let Some(min) = s.get("minItems").and_then(Value::as_u64) {
            if count < min {
                self.invalid(
                    path,
                    &count.to_string(),
                    format!("should have at least {min} items"),
                    false,
                );
            }
        }
        let list_type = s.get("x-kubernetes-list-type").and_then(Value::as_str);
        if flag(s, "uniqueItems") || list_type == Some("set") {
            for (i, item) in items.iter().enumerate() {
                if items[..i].contains(item) {
                    self.push(&format!("{path}[{i}]"), Reason::Duplicate, num(item), false);
                }
            }
        }
        if list_type == Some("map") {
            let keys = map_keys(s);
            let key_of = |item: &Value| -> Vec<Value> {
                keys.iter()
                    .map(|k| item.get(*k).cloned().unwrap_or(Value::Null))
                    .collect()
            };
            for (i, item) in items.iter().enumerate() {
                let mine = key_of(item);
                if items[..i].iter().any(|o| key_of(o) == mine) {
                    let shown: Map<String, Value> = keys
                        .iter()
                        .zip(mine.iter())
                        .map(|(k, v)| (k.to_string(), v.clone()))
                        .collect();
                    self.push(
                        &format!("{path}[{i}]"),
                        Reason::Duplicate,
                        Value::Object(shown).to_string(),
                        false,
                    );
                }
            }
        }
        if let Some(is) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                self.walk(is, item, &format!("{path}[{i}]"), false);
            }
        }
    }

    /// `allOf`, `anyOf`, `oneOf` and `not`, which in a structural schema hold value validations only.
    fn combinators(&mut self, s: &Value, v: &Value, path: &str) {
        let passes = |sub: &Value, c: &Compiled| {
            let mut probe = Validator {
                c,
                errs: Vec::new(),
                blocking: false,
            };
            probe.walk(sub, v, path, false);
            probe.errs.is_empty()
        };
        if let Some(all) = s.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.walk(sub, v, path, false);
            }
        }
        if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
            if !any.iter().any(|sub| passes(sub, self.c)) {
                self.invalid(
                    path,
                    &format!("\"{}\"", type_name(v)),
                    "must validate at least one schema (anyOf)".into(),
                    false,
                );
            }
        }
        if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
            let n = one.iter().filter(|sub| passes(sub, self.c)).count();
            if n != 1 {
                self.invalid(
                    path,
                    &format!("\"{}\"", type_name(v)),
                    "must validate one and only one schema (oneOf)".into(),
                    false,
                );
            }
        }
        if let Some(not) = s.get("not").filter(|n| n.is_object()) {
            if passes(not, self.c) {
                self.invalid(
                    path,
                    &format!("\"{}\"", type_name(v)),
                    "must not validate the schema (not)".into(),
                    false,
                );
            }
        }
    }
}

/// The string formats Kubernetes checks; unknown formats pass.
fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "date-time" | "datetime" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
        "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
        "byte" => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        "uuid" => uuid::Uuid::parse_str(s).is_ok() && s.len() == 36,
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok()
        }),
        "hostname" => crate::api::validation::dns1123_subdomain(s).is_ok(),
        "int32" => s.parse::<i32>().is_ok(),
        "int64" => s.parse::<i64>().is_ok(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Compiled {
        Compiled::new(&json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["name"], "properties": {
                "name": {"type": "string", "maxLength": 5, "pattern": "^[a-z]+$"},
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "port": {"x-kubernetes-int-or-string": true},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "items": {"type": "array", "maxItems": 2, "x-kubernetes-list-type": "map",
                    "x-kubernetes-list-map-keys": ["name"],
                    "items": {"type": "object", "properties": {"name": {"type": "string"},
                        "size": {"type": "integer", "default": 3}}}},
                "opt": {"type": "string", "nullable": true}}},
            "status": {"type": "object", "properties": {"observedGeneration": {"type": "integer", "default": -1}},
                "default": {}}}}))
        .unwrap()
    }

    fn fields(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn prunes_unknown_fields_but_keeps_preserved_ones() {
        let s = schema();
        let mut v = json!({"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a", "labels": {"k": "v"}},
            "spec": {"name": "a", "extra": 1, "free": {"anything": {"deep": true}}, "opt": null, "mode": null,
                "items": [{"name": "i", "junk": 2}]}, "other": 3});
        let unknown = s.prune(&mut v);
        assert_eq!(unknown, vec!["spec.extra", "spec.items[0].junk", "other"]);
        assert_eq!(v["spec"]["free"]["anything"]["deep"], true);
        assert_eq!(v["spec"]["opt"], Value::Null);
        assert!(v["spec"].get("opt").is_some(), "nullable nulls stay");
        assert!(v["spec"].get("mode").is_none(), "other nulls go");
        assert_eq!(v["metadata"]["labels"]["k"], "v");
    }

    #[test]
    fn defaults_fill_missing_fields_at_every_depth() {
        let s = schema();
        let mut v = json!({"spec": {"name": "a", "items": [{"name": "i"}]}});
        s.default(&mut v);
        assert_eq!(v["spec"]["replicas"], 1);
        assert_eq!(v["spec"]["items"][0]["size"], 3);
        assert_eq!(
            v["status"]["observedGeneration"], -1,
            "a defaulted object gets its own defaults"
        );
    }

    #[test]
    fn validation_messages_are_kubernetes_own() {
        let s = schema();
        let v = json!({"spec": {"replicas": "three", "mode": "c"}});
        assert_eq!(
            fields(&s.validate(&v, None)),
            vec![
                "spec.name: Required value",
                "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\"",
                "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
            ]
        );
        let v = json!({"spec": {"name": "ABCDEFG", "replicas": 11, "port": true,
            "items": [{"name": "x"}, {"name": "x"}, {"name": "y"}]}});
        assert_eq!(
            fields(&s.validate(&v, None)),
            vec![
                "spec.name: Too long: may not be more than 5 bytes",
                "spec.name: Invalid value: \"ABCDEFG\": spec.name in body should match '^[a-z]+$'",
                "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
                "spec.port: Invalid value: \"boolean\": spec.port in body must be of type integer or string: \"boolean\"",
                "spec.items: Too many: 3: must have at most 2 items",
                "spec.items[1]: Duplicate value: {\"name\":\"x\"}",
            ]
        );
        assert!(s
            .validate(
                &json!({"spec": {"name": "ok", "port": "http", "labels": {"a": "b"}}}),
                None
            )
            .is_empty());
        assert_eq!(
            fields(&s.validate(&json!({"spec": {"name": "ok", "labels": {"a": 1}}}), None)),
            vec!["spec.labels.a: Invalid value: \"integer\": spec.labels.a in body must be of type string: \"integer\""]
        );
    }

    #[test]
    fn bad_schemas_are_refused_with_their_path() {
        let e = Compiled::new(&json!({"type": "object", "properties": {"a": {"type": "str"}}}))
            .unwrap_err();
        assert!(e.starts_with("openAPIV3Schema.properties[a].type"), "{e}");
        let e = Compiled::new(&json!({"type": "string", "pattern": "(unclosed"})).unwrap_err();
        assert!(e.contains("pattern"), "{e}");
    }
}
