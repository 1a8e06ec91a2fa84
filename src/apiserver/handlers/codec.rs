//! The storage codec: objects as the store keeps them (compact JSON with metadata first, so a key's identity can be read
//! without a full parse) and request bodies parsed from JSON or YAML.

use super::*;

/// Decodes a stored value and stamps its resourceVersion.
pub fn decode(kv: &crate::store::KeyValue) -> Value {
    let mut v: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
    }
    v
}

pub(super) const STORED_PREFIX: &[u8] = b"{\"metadata\":{";

/// Serializes an object for the store with `metadata` first (and no resourceVersion), so reads can stamp the
/// resourceVersion into the bytes without parsing them.
pub fn to_stored(obj: &Value) -> Result<Vec<u8>> {
    use serde::ser::{SerializeMap, Serializer};
    /// An object's metadata without its resourceVersion, serialized in place (no copy of the object).
    struct Meta<'a>(&'a serde_json::Map<String, Value>);
    impl serde::Serialize for Meta<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            let fields = self.0.iter().filter(|(k, _)| *k != "resourceVersion");
            s.collect_map(fields)
        }
    }
    let empty = serde_json::Map::new();
    let m = obj.as_object().unwrap_or(&empty);
    let mut out = Vec::with_capacity(1024);
    let mut ser = serde_json::Serializer::new(&mut out);
    let err = |e: serde_json::Error| ApiError::internal(e.to_string());
    let mut map = ser.serialize_map(None).map_err(err)?;
    if let Some(meta) = m.get("metadata") {
        match meta.as_object() {
            Some(fields) => map.serialize_entry("metadata", &Meta(fields)),
            None => map.serialize_entry("metadata", meta),
        }
        .map_err(err)?;
    }
    for (k, v) in m.iter().filter(|(k, _)| *k != "metadata") {
        map.serialize_entry(k, v).map_err(err)?;
    }
    map.end().map_err(err)?;
    Ok(out)
}

/// The stored object as JSON bytes with its resourceVersion stamped - without parsing it.
pub fn raw(kv: &crate::store::KeyValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(kv.value.len() + 32);
    raw_into(kv, &mut out);
    out
}

/// [`raw`], appended to `out`.
pub fn raw_into(kv: &crate::store::KeyValue, out: &mut Vec<u8>) {
    match kv.value.strip_prefix(STORED_PREFIX) {
        Some(rest) => {
            use std::io::Write;
            out.reserve(kv.value.len() + 32);
            out.extend_from_slice(STORED_PREFIX);
            let _ = write!(out, "\"resourceVersion\":\"{}\"", kv.mod_revision);
            if !rest.starts_with(b"}") {
                out.push(b',');
            }
            out.extend_from_slice(rest);
        }
        None => {
            let _ = serde_json::to_writer(out, &decode(kv));
        }
    }
}

/// Bytes of a list body assembled before they are sent.
const LIST_CHUNK: usize = 256 << 10;

/// A list's body in chunks of about [`LIST_CHUNK`] bytes: `head`, the stored objects, the closing brackets.
pub fn list_chunks(
    head: Vec<u8>,
    kvs: Vec<crate::store::KeyValue>,
) -> impl futures::Stream<Item = std::result::Result<bytes::Bytes, std::io::Error>> {
    // What is left to send, about (each object gains its resourceVersion and a comma).
    let mut left: usize = kvs.iter().map(|kv| kv.value.len() + 40).sum::<usize>() + 2;
    let mut items = kvs.into_iter().enumerate();
    let mut first = Some(head);
    let mut done = false;
    futures::stream::iter(std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut out = first.take().unwrap_or_default();
        out.reserve(left.min(LIST_CHUNK + 8192));
        while out.len() < LIST_CHUNK {
            match items.next() {
                Some((i, kv)) => {
                    if i > 0 {
                        out.push(b',');
                    }
                    left = left.saturating_sub(kv.value.len() + 40);
                    raw_into(&kv, &mut out);
                }
                None => {
                    out.extend_from_slice(b"]}");
                    done = true;
                    break;
                }
            }
        }
        Some(Ok(bytes::Bytes::from(out)))
    }))
}

/// Parses a request body holding an object of `kind`: JSON, YAML, or Kubernetes protobuf (what kubectl's `create`
/// generators send).
pub fn parse_object(body: &[u8], content_type: &str, kind: &KindInfo) -> Result<Value> {
    if content_type.starts_with("application/vnd.kubernetes.protobuf") {
        return crate::api::protobuf::object(body, kind.group, kind.version, kind.kind)
            .map_err(|e| ApiError::bad_request(e.to_string()));
    }
    parse_body(body, content_type)
}

/// Parses a body as JSON, or YAML when the content type says so. Errors name the line.
pub fn parse_body(body: &[u8], content_type: &str) -> Result<Value> {
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        return Err(ApiError::unsupported_media(content_type));
    }
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    if content_type.contains("yaml") {
        use crate::api::manifest::{yaml_too_deep, MAX_DEPTH};
        if let Some(line) = yaml_too_deep(body, MAX_DEPTH) {
            return Err(ApiError::bad_request(format!(
                "error decoding YAML body: line {line}: nesting deeper than {MAX_DEPTH} levels"
            )));
        }
        let v: Value = serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML body: {e}")))?;
        return Ok(v);
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: {e} (line {}, column {})",
            e.line(),
            e.column()
        ))
    })
}

/// The fields of an object a filter reads, as a tree of names: a name with nothing under it is kept whole.
#[derive(Default, Debug, PartialEq)]
pub struct Paths(std::collections::BTreeMap<String, Paths>);

impl Paths {
    /// Adds a dotted path (`spec.nodeName`); the shorter of two overlapping paths wins (it keeps more).
    pub fn add(&mut self, path: &str) {
        let mut cur = self;
        let mut parts = path.split('.').peekable();
        while let Some(p) = parts.next() {
            let fresh = !cur.0.contains_key(p);
            let next = cur.0.entry(p.to_string()).or_default();
            if !fresh && next.0.is_empty() {
                return; // already kept whole
            }
            if parts.peek().is_none() {
                next.0.clear();
                return;
            }
            cur = next;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Decodes only the fields under `paths` of a stored object (the rest is skipped without being built): what a
/// label or field selector needs, at a fraction of a full decode.
pub fn sparse(bytes: &[u8], paths: &Paths) -> Value {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    Pick(paths).deserialize(&mut de).unwrap_or(Value::Null)
}

/// Deserializes a value keeping only the fields named in the tree (the whole value when the tree is empty).
struct Pick<'a>(&'a Paths);

impl<'de> serde::de::DeserializeSeed<'de> for Pick<'_> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Value, D::Error> {
        if self.0.is_empty() {
            serde::Deserialize::deserialize(d)
        } else {
            d.deserialize_any(self)
        }
    }
}

impl<'de> serde::de::Visitor<'de> for Pick<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match self.0 .0.get(k.as_ref()) {
                Some(sub) => {
                    let v = map.next_value_seed(Pick(sub))?;
                    out.insert(k.into_owned(), v);
                }
                None => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    // Anything but an object where the paths go on: nothing further down to pick, so nothing is kept.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_keeps_only_the_paths_asked_for_and_whole_subtrees_under_a_short_path() {
        let pod = json!({"metadata": {"name": "p", "labels": {"app": "web", "tier": "a"},
            "annotations": {"big": "x".repeat(100)}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready"}]}});
        let bytes = serde_json::to_vec(&pod).unwrap();
        let mut paths = Paths::default();
        paths.add("metadata.labels");
        paths.add("spec.nodeName");
        paths.add("status.phase.deeper");
        assert_eq!(
            sparse(&bytes, &paths),
            json!({"metadata": {"labels": {"app": "web", "tier": "a"}},
                "spec": {"nodeName": "n1"}, "status": {"phase": null}})
        );
        // A shorter path keeps the whole subtree, whichever order they come in.
        paths.add("status");
        let mut other = Paths::default();
        other.add("status");
        other.add("status.phase");
        assert_eq!(sparse(&bytes, &other)["status"], pod["status"]);
        assert_eq!(sparse(&bytes, &paths)["status"], pod["status"]);
        assert_eq!(sparse(b"not json", &paths), Value::Null);
    }

    #[test]
    fn stored_bytes_put_metadata_first_without_the_resource_version_and_read_back_stamped() {
        let obj = json!({"kind": "Pod", "apiVersion": "v1", "spec": {"nodeName": "n"},
            "metadata": {"name": "p", "resourceVersion": "9", "labels": {"a": "b"}}});
        let bytes = to_stored(&obj).unwrap();
        assert!(bytes.starts_with(STORED_PREFIX));
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"metadata":{"name":"p","labels":{"a":"b"}},"kind":"Pod","apiVersion":"v1","spec":{"nodeName":"n"}}"#
        );
        let kv = crate::store::KeyValue {
            key: "k".into(),
            value: bytes.into(),
            create_revision: 12,
            mod_revision: 12,
        };
        let mut want = obj.clone();
        want["metadata"]["resourceVersion"] = json!("12");
        assert_eq!(serde_json::from_slice::<Value>(&raw(&kv)).unwrap(), want);
        assert_eq!(decode(&kv), want);
        assert_eq!(to_stored(&json!("odd")).unwrap(), b"{}");
    }

    #[test]
    fn a_filter_matches_stored_bytes_as_it_matches_the_decoded_object() {
        let pods = [
            json!({"metadata": {"name": "a", "labels": {"app": "web"}}, "spec": {"nodeName": "n1"}}),
            json!({"metadata": {"name": "b", "labels": {"app": "db"}}, "spec": {"nodeName": "n2"}}),
            json!({"metadata": {"name": "c"}, "spec": {}, "status": {"phase": "Failed"}}),
            json!({"metadata": {"name": "d", "labels": {"app": "web"}}, "spec": "odd"}),
        ];
        let queries = [
            ("labelSelector", "app=web"),
            ("labelSelector", "app!=web"),
            ("labelSelector", "!app"),
            ("fieldSelector", "spec.nodeName=n1"),
            ("fieldSelector", "spec.nodeName!=n1,status.phase!=Failed"),
            ("fieldSelector", "metadata.name=c"),
        ];
        for (k, v) in queries {
            let mut q = Query::new();
            q.insert(k.into(), v.into());
            let f = Filter::from_query(&q).unwrap();
            for pod in &pods {
                let bytes = serde_json::to_vec(pod).unwrap();
                assert_eq!(f.matches_bytes(&bytes), f.matches(pod), "{k}={v} on {pod}");
            }
        }
    }

    #[test]
    fn a_list_body_in_bounded_chunks_is_the_list_of_the_stored_objects() {
        use futures::StreamExt;
        let kv = |i: i64| crate::store::KeyValue {
            key: format!("k{i}"),
            value: to_stored(
                &json!({"metadata": {"name": format!("p{i}")}, "data": {"x": "y".repeat(1000)}}),
            )
            .unwrap()
            .into(),
            create_revision: i,
            mod_revision: i,
        };
        for n in [0, 1, 700] {
            let kvs: Vec<_> = (1..=n).map(kv).collect();
            let chunks: Vec<bytes::Bytes> = futures::executor::block_on(
                list_chunks(b"{\"items\":[".to_vec(), kvs.clone())
                    .map(|c| c.unwrap())
                    .collect(),
            );
            assert!(
                chunks.iter().all(|c| c.len() < LIST_CHUNK + 2048),
                "no chunk much past the bound"
            );
            assert_eq!(
                chunks.len(),
                1 + (n as usize * 1100) / LIST_CHUNK,
                "{n} objects"
            );
            let whole: Vec<u8> = chunks.concat();
            let list: Value = serde_json::from_slice(&whole).unwrap();
            let want: Vec<Value> = kvs.iter().map(decode).collect();
            assert_eq!(list, json!({"items": want}));
        }
    }
}
