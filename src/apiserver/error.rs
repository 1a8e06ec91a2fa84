//! API errors. Every failure of a request becomes a `metav1.Status` here, and only here, with Kubernetes' codes and
//! reasons (404 NotFound, 409 AlreadyExists/Conflict, 422 Invalid with causes, 410 Expired, ...).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::api::validation::FieldError;

/// An error that is answered as a Status.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

pub type Result<T, E = ApiError> = std::result::Result<T, E>;

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }
    pub fn not_found(qualified: &str, name: &str) -> Self {
        let mut e = Self::new(404, "NotFound", format!("{qualified} \"{name}\" not found"));
        let (kind, group) = split_qualified(qualified);
        e.details = Some(json!({"name": name, "group": group, "kind": kind}));
        e
    }
    pub fn already_exists(qualified: &str, name: &str) -> Self {
        let mut e = Self::new(
            409,
            "AlreadyExists",
            format!("{qualified} \"{name}\" already exists"),
        );
        let (kind, group) = split_qualified(qualified);
        e.details = Some(json!({"name": name, "group": group, "kind": kind}));
        e
    }
    pub fn conflict(qualified: &str, name: &str, why: &str) -> Self {
        let mut e = Self::new(
            409,
            "Conflict",
            format!("Operation cannot be fulfilled on {qualified} \"{name}\": {why}"),
        );
        let (kind, group) = split_qualified(qualified);
        e.details = Some(json!({"name": name, "group": group, "kind": kind}));
        e
    }
    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }
    pub fn invalid(kind: &str, group: &str, name: &str, errors: &[FieldError]) -> Self {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        let message = if list.len() == 1 {
            format!("{qualified} \"{name}\" is invalid: {}", list[0])
        } else {
            format!("{qualified} \"{name}\" is invalid: [{}]", list.join(", "))
        };
        let causes: Vec<serde_json::Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason.cause(), "message": e.body(), "field": e.field}))
            .collect();
        ApiError {
            code: 422,
            reason: "Invalid",
            message,
            details: Some(json!({"name": name, "group": group, "kind": kind, "causes": causes})),
        }
    }
    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }
    pub fn method_not_allowed(what: &str) -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource: {what}"),
        )
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(403, "Forbidden", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }
    pub fn too_large() -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            "Request entity too large: limit is 3145728",
        )
    }
    pub fn unsupported_media(ct: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"))
    }

    /// The Status object, its fields in Kubernetes' order (kind, apiVersion, metadata, status, message, reason,
    /// details, code) and empty detail fields left out, as Kubernetes writes them (`group` is omitted for the core
    /// group).
    pub fn status(&self) -> serde_json::Value {
        let mut s = serde_json::Map::new();
        s.insert("kind".into(), json!("Status"));
        s.insert("apiVersion".into(), json!("v1"));
        s.insert("metadata".into(), json!({}));
        s.insert("status".into(), json!("Failure"));
        if !self.message.is_empty() {
            s.insert("message".into(), json!(self.message));
        }
        if !self.reason.is_empty() {
            s.insert("reason".into(), json!(self.reason));
        }
        if let Some(d) = &self.details {
            s.insert("details".into(), details(d));
        }
        s.insert("code".into(), json!(self.code));
        serde_json::Value::Object(s)
    }
}

/// StatusDetails in Kubernetes' field order (name, group, kind, uid, causes, retryAfterSeconds), empty ones left out.
fn details(d: &serde_json::Value) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for field in [
        "name",
        "group",
        "kind",
        "uid",
        "causes",
        "retryAfterSeconds",
    ] {
        match d.get(field) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(v)) if v.is_empty() => {}
            Some(serde_json::Value::Array(v)) if v.is_empty() => {}
            Some(v) => {
                out.insert(field.into(), v.clone());
            }
        }
    }
    serde_json::Value::Object(out)
}

fn split_qualified(q: &str) -> (String, String) {
    match q.split_once('.') {
        Some((k, g)) => (k.to_string(), g.to_string()),
        None => (q.to_string(), String::new()),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            // Kubernetes' JSON encoder ends every body with a newline.
            format!("{}\n", self.status()),
        )
            .into_response()
    }
}

impl From<crate::store::Error> for ApiError {
    fn from(e: crate::store::Error) -> Self {
        use crate::store::Error as S;
        match e {
            S::Compacted { requested, compacted } => ApiError::expired(format!(
                "The resourceVersion for the provided list is too old: {requested} (oldest available is {compacted})"
            )),
            S::NotFound(k) => ApiError::new(404, "NotFound", format!("{k} not found")),
            S::AlreadyExists(k) => ApiError::new(409, "AlreadyExists", format!("{k} already exists")),
            S::Conflict { .. } => ApiError::new(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_written_as_kubernetes_writes_them() {
        let body = |e: ApiError| {
            let resp = e.into_response();
            let bytes =
                futures::executor::block_on(axum::body::to_bytes(resp.into_body(), 1 << 20))
                    .unwrap();
            String::from_utf8(bytes.to_vec()).unwrap()
        };
        assert_eq!(
            body(ApiError::already_exists("deployments.apps", "x")),
            concat!(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
                r#""message":"deployments.apps \"x\" already exists","reason":"AlreadyExists","#,
                r#""details":{"name":"x","group":"apps","kind":"deployments"},"code":409}"#,
                "\n"
            )
        );
        assert_eq!(
            body(ApiError::not_found("configmaps", "gone")),
            concat!(
                r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","#,
                r#""message":"configmaps \"gone\" not found","reason":"NotFound","#,
                r#""details":{"name":"gone","kind":"configmaps"},"code":404}"#,
                "\n"
            )
        );
    }
}
