//! Kubernetes' protobuf encoding, decoded into the JSON objects the rest of Capstan works with. kubectl's `create`
//! generators (`kubectl create namespace|deployment|configmap|secret|job ...`) send their objects as
//! `application/vnd.kubernetes.protobuf`: a `k8s\0` magic, then a `runtime.Unknown` envelope whose `raw` bytes are
//! the object. Field numbers come from `proto_fields.json` (built by `scripts/gen_proto_fields.py`). A field number
//! the table does not know is an error, never silently dropped. Only decoding: Capstan answers in JSON.

use std::collections::HashMap;
use std::sync::OnceLock;

use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Map, Value};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("protobuf body: {0}")]
    Malformed(String),
    #[error("protobuf body: no schema for {0}")]
    Unknown(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Deserialize)]
struct Field {
    tag: u32,
    json: String,
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    repeated: bool,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    value: Option<String>,
}

/// Go's protobuf encoding writes every non-pointer field, so zero values arrive for fields the sender never set
/// (`imagePullPolicy: ""`, `nodePort: 0`). Like Go's JSON encoding (`omitempty`), they are dropped - except for
/// these fields, where Kubernetes uses a pointer and zero or false is a real choice.
const KEEP_ZERO: &[&str] = &[
    "replicas",
    "parallelism",
    "completions",
    "backoffLimit",
    "terminationGracePeriodSeconds",
    "revisionHistoryLimit",
    "successfulJobsHistoryLimit",
    "failedJobsHistoryLimit",
    "partition",
    "ttlSecondsAfterFinished",
    "priority",
    "minAvailable",
    "maxUnavailable",
    "maxSurge",
    "containerPort",
    "port",
    "exitCode",
    "restartCount",
    "startingDeadlineSeconds",
    "gracePeriodSeconds",
];
const KEEP_FALSE: &[&str] = &[
    "automountServiceAccountToken",
    "enableServiceLinks",
    "allocateLoadBalancerNodePorts",
    "hostUsers",
    "ready",
];

fn unset(f: &Field, v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_i64() == Some(0) && !KEEP_ZERO.contains(&f.json.as_str()),
        Value::Bool(b) => !b && !KEEP_FALSE.contains(&f.json.as_str()),
        Value::Null => true,
        _ => false,
    }
}

fn table() -> &'static HashMap<String, Vec<Field>> {
    static T: OnceLock<HashMap<String, Vec<Field>>> = OnceLock::new();
    T.get_or_init(|| serde_json::from_str(include_str!("proto_fields.json")).unwrap_or_default())
}

fn bad(m: impl Into<String>) -> Error {
    Error::Malformed(m.into())
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self
                .b
                .split_first()
                .ok_or_else(|| bad("truncated varint"))?;
            self.b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(bad("varint too long"))
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() < n {
            return Err(bad("truncated field"));
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    /// (field number, wire type, payload): varints and fixed values come back as their raw bytes' value.
    fn next(&mut self) -> Result<Option<(u32, Wire<'a>)>> {
        if self.b.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = (key >> 3) as u32;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed(u64::from_le_bytes(
                self.bytes(8)?.try_into().map_err(|_| bad("fixed64"))?,
            )),
            2 => {
                let n = self.varint()? as usize;
                Wire::Len(self.bytes(n)?)
            }
            5 => Wire::Fixed(u64::from(u32::from_le_bytes(
                self.bytes(4)?.try_into().map_err(|_| bad("fixed32"))?,
            ))),
            w => return Err(bad(format!("unsupported wire type {w}"))),
        };
        Ok(Some((tag, wire)))
    }
}

enum Wire<'a> {
    Varint(u64),
    Fixed(u64),
    Len(&'a [u8]),
}

fn scalar(ty: &str, w: &Wire) -> Result<Vec<Value>> {
    let one = |v: u64| -> Value {
        match ty {
            "bool" => json!(v != 0),
            "int32" => json!(v as i64 as i32),
            _ => json!(v as i64),
        }
    };
    match w {
        Wire::Varint(v) | Wire::Fixed(v) => Ok(vec![one(*v)]),
        // Packed repeated scalars.
        Wire::Len(b) => {
            let mut r = Reader { b };
            let mut out = Vec::new();
            while !r.b.is_empty() {
                out.push(one(r.varint()?));
            }
            Ok(out)
        }
    }
}

fn len<'a>(w: &Wire<'a>, what: &str) -> Result<&'a [u8]> {
    match w {
        Wire::Len(b) => Ok(b),
        _ => Err(bad(format!("{what}: expected a length-delimited field"))),
    }
}

fn text(b: &[u8]) -> Result<String> {
    String::from_utf8(b.to_vec()).map_err(|_| bad("string is not UTF-8"))
}

/// Decodes one message of the named type into JSON.
// Long by design: one table - each of Kubernetes' special types with its JSON form, then the generic field loop;
// split, the table would be scattered over as many functions.
pub fn message(b: &[u8], name: &str) -> Result<Value> {
    let short = name.rsplit('.').next().unwrap_or(name);
    let mut r = Reader { b };
    // Kubernetes' special types have their own JSON forms.
    match name {
        "apimachinery.pkg.apis.meta.v1.Time" | "apimachinery.pkg.apis.meta.v1.MicroTime" => {
            let (mut secs, mut nanos) = (0i64, 0i64);
            while let Some((tag, w)) = r.next()? {
                if let Wire::Varint(v) = w {
                    match tag {
                        1 => secs = v as i64,
                        2 => nanos = v as i64,
                        _ => {}
                    }
                }
            }
            if secs == 0 && nanos == 0 {
                return Ok(Value::Null); // Go's zero time: unset
            }
            let t = chrono::DateTime::from_timestamp(secs, nanos as u32)
                .ok_or_else(|| bad("time out of range"))?;
            let fmt = if short == "MicroTime" {
                chrono::SecondsFormat::Micros
            } else {
                chrono::SecondsFormat::Secs
            };
            return Ok(json!(t.to_rfc3339_opts(fmt, true)));
        }
        "apimachinery.pkg.api.resource.Quantity" => {
            while let Some((tag, w)) = r.next()? {
                if tag == 1 {
                    return Ok(json!(text(len(&w, "quantity")?)?));
                }
            }
            return Ok(json!("0"));
        }
        "apimachinery.pkg.util.intstr.IntOrString" => {
            let (mut ty, mut i, mut s) = (0u64, 0i64, String::new());
            while let Some((tag, w)) = r.next()? {
                match (tag, w) {
                    (1, Wire::Varint(v)) => ty = v,
                    (2, Wire::Varint(v)) => i = v as i64 as i32 as i64,
                    (3, w) => s = text(len(&w, "strVal")?)?,
                    _ => {}
                }
            }
            return Ok(if ty == 1 { json!(s) } else { json!(i) });
        }
        "apimachinery.pkg.runtime.RawExtension" | "apimachinery.pkg.apis.meta.v1.FieldsV1" => {
            while let Some((tag, w)) = r.next()? {
                if tag == 1 {
                    let raw = len(&w, "raw")?;
                    return serde_json::from_slice(raw)
                        .map_err(|e| bad(format!("embedded JSON: {e}")));
                }
            }
            return Ok(json!({}));
        }
        _ => {}
    }
    let fields = table()
        .get(name)
        .ok_or_else(|| Error::Unknown(name.to_string()))?;
    let mut out = Map::new();
    while let Some((tag, w)) = r.next()? {
        let f = fields
            .iter()
            .find(|f| f.tag == tag)
            .ok_or_else(|| bad(format!("{short}: unknown field number {tag}")))?;
        let mut values: Vec<Value> = Vec::new();
        match f.ty.as_str() {
            "string" => values.push(json!(text(len(&w, &f.json)?)?)),
            "bytes" => values.push(json!(
                base64::engine::general_purpose::STANDARD.encode(len(&w, &f.json)?)
            )),
            "message" => {
                let m = f.message.as_deref().unwrap_or("");
                values.push(message(len(&w, &f.json)?, m)?);
            }
            "map" => {
                let mut er = Reader {
                    b: len(&w, &f.json)?,
                };
                let (mut k, mut v) = (String::new(), Value::Null);
                while let Some((etag, ew)) = er.next()? {
                    match etag {
                        1 => k = text(len(&ew, "map key")?)?,
                        2 => {
                            v = match f.value.as_deref() {
                                Some("string") => json!(text(len(&ew, "map value")?)?),
                                Some("bytes") => json!(base64::engine::general_purpose::STANDARD
                                    .encode(len(&ew, "map value")?)),
                                Some("message") => message(
                                    len(&ew, "map value")?,
                                    f.message.as_deref().unwrap_or(""),
                                )?,
                                _ => scalar("int64", &ew)?.pop().unwrap_or(Value::Null),
                            }
                        }
                        _ => {}
                    }
                }
                let entry = out.entry(f.json.clone()).or_insert_with(|| json!({}));
                if let Some(m) = entry.as_object_mut() {
                    m.insert(k, v);
                }
                continue;
            }
            other => values.extend(scalar(other, &w)?),
        }
        if !f.repeated {
            values.retain(|v| !unset(f, v));
        }
        if f.repeated {
            let entry = out.entry(f.json.clone()).or_insert_with(|| json!([]));
            if let Some(a) = entry.as_array_mut() {
                a.extend(values);
            }
        } else if let Some(v) = values.pop() {
            out.insert(f.json.clone(), v);
        }
    }
    Ok(Value::Object(out))
}

/// Decodes a `application/vnd.kubernetes.protobuf` request body of an object of `group`/`version`/`kind`.
pub fn object(body: &[u8], group: &str, version: &str, kind: &str) -> Result<Value> {
    let rest = body
        .strip_prefix(b"k8s\0")
        .ok_or_else(|| bad("missing the k8s protobuf magic"))?;
    let mut r = Reader { b: rest };
    let (mut raw, mut api_version, mut kind_name) = (None, String::new(), String::new());
    while let Some((tag, w)) = r.next()? {
        match tag {
            1 => {
                let mut tr = Reader {
                    b: len(&w, "typeMeta")?,
                };
                while let Some((t, tw)) = tr.next()? {
                    match t {
                        1 => api_version = text(len(&tw, "apiVersion")?)?,
                        2 => kind_name = text(len(&tw, "kind")?)?,
                        _ => {}
                    }
                }
            }
            2 => raw = Some(len(&w, "raw")?),
            3 if !len(&w, "contentEncoding")?.is_empty() => {
                return Err(bad("content encodings are not supported"))
            }
            _ => {}
        }
    }
    let kind_name = if kind_name.is_empty() {
        kind.to_string()
    } else {
        kind_name
    };
    // meta.k8s.io's types (DeleteOptions) live in apimachinery; the API groups' under `api.<group>`.
    let name = match group {
        "" => format!("api.core.{version}.{kind_name}"),
        "meta.k8s.io" => format!("apimachinery.pkg.apis.meta.{version}.{kind_name}"),
        g => format!(
            "api.{}.{version}.{kind_name}",
            g.split('.').next().unwrap_or(g)
        ),
    };
    let mut obj = message(raw.ok_or_else(|| bad("no object in the envelope"))?, &name)?;
    if let Some(m) = obj.as_object_mut() {
        let av = if api_version.is_empty() {
            if group.is_empty() {
                version.to_string()
            } else {
                format!("{group}/{version}")
            }
        } else {
            api_version
        };
        m.insert("apiVersion".into(), json!(av));
        m.insert("kind".into(), json!(kind_name));
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn ld(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
        varint(out, u64::from(tag) << 3 | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    fn vi(out: &mut Vec<u8>, tag: u32, v: u64) {
        varint(out, u64::from(tag) << 3);
        varint(out, v);
    }

    #[test]
    fn decodes_a_deployment_envelope() {
        // metadata{name: "web", labels{app: web}}, spec{replicas: 2, template{spec{containers[{name, image}]}}}
        let mut entry = Vec::new();
        ld(&mut entry, 1, b"app");
        ld(&mut entry, 2, b"web");
        let mut meta = Vec::new();
        ld(&mut meta, 1, b"web");
        ld(&mut meta, 11, &entry);
        let mut container = Vec::new();
        ld(&mut container, 1, b"nginx");
        ld(&mut container, 2, b"nginx:1.25");
        let mut podspec = Vec::new();
        ld(&mut podspec, 2, &container);
        let mut template = Vec::new();
        ld(&mut template, 2, &podspec);
        let mut spec = Vec::new();
        vi(&mut spec, 1, 2);
        ld(&mut spec, 3, &template);
        let mut dep = Vec::new();
        ld(&mut dep, 1, &meta);
        ld(&mut dep, 2, &spec);
        let mut tm = Vec::new();
        ld(&mut tm, 1, b"apps/v1");
        ld(&mut tm, 2, b"Deployment");
        let mut body = b"k8s\0".to_vec();
        ld(&mut body, 1, &tm);
        ld(&mut body, 2, &dep);
        let v = object(&body, "apps", "v1", "Deployment").unwrap();
        assert_eq!(v["apiVersion"], "apps/v1");
        assert_eq!(v["metadata"]["labels"]["app"], "web");
        assert_eq!(v["spec"]["replicas"], 2);
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx:1.25"
        );
    }

    #[test]
    fn unknown_fields_and_garbage_are_errors() {
        let mut meta = Vec::new();
        ld(&mut meta, 99, b"x");
        assert!(message(&meta, "apimachinery.pkg.apis.meta.v1.ObjectMeta").is_err());
        assert!(object(b"nope", "", "v1", "Pod").is_err());
        assert!(
            message(&[0x0a, 0x05, b'a'], "api.core.v1.Namespace").is_err(),
            "truncated"
        );
    }

    #[test]
    fn special_types_take_their_json_forms() {
        let mut q = Vec::new();
        ld(&mut q, 1, b"500m");
        assert_eq!(
            message(&q, "apimachinery.pkg.api.resource.Quantity").unwrap(),
            json!("500m")
        );
        let mut i = Vec::new();
        vi(&mut i, 1, 1);
        ld(&mut i, 3, b"http");
        assert_eq!(
            message(&i, "apimachinery.pkg.util.intstr.IntOrString").unwrap(),
            json!("http")
        );
        let mut t = Vec::new();
        vi(&mut t, 1, 1_700_000_000);
        assert_eq!(
            message(&t, "apimachinery.pkg.apis.meta.v1.Time").unwrap(),
            json!("2023-11-14T22:13:20Z")
        );
    }
}
