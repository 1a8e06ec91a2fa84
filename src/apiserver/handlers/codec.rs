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
    let mut out = serde_json::Map::new();
    if let Some(m) = obj.as_object() {
        if let Some(meta) = m.get("metadata") {
            let mut meta = meta.clone();
            if let Some(mm) = meta.as_object_mut() {
                mm.remove("resourceVersion");
            }
            out.insert("metadata".into(), meta);
        }
        for (k, v) in m {
            if k != "metadata" {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| ApiError::internal(e.to_string()))
}

/// The stored object as JSON bytes with its resourceVersion stamped - without parsing it.
pub fn raw(kv: &crate::store::KeyValue) -> Vec<u8> {
    match kv.value.strip_prefix(STORED_PREFIX) {
        Some(rest) => {
            let mut out = Vec::with_capacity(kv.value.len() + 32);
            out.extend_from_slice(STORED_PREFIX);
            out.extend_from_slice(
                format!("\"resourceVersion\":\"{}\"", kv.mod_revision).as_bytes(),
            );
            if !rest.starts_with(b"}") {
                out.push(b',');
            }
            out.extend_from_slice(rest);
            out
        }
        None => serde_json::to_vec(&decode(kv)).unwrap_or_default(),
    }
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
