//! The object model: Kubernetes kinds as serde types with Kubernetes' exact JSON names, JSON Schemas derived with
//! schemars, the kind registry that drives discovery, routing and tables, selectors, defaulting and validation.
//! This module is pure data and rules: it must not do I/O.

pub mod apps;
pub mod batch;
/// Table columns per kind (kubectl's), shared with the TUI through `capstan-present`.
pub use capstan_present::columns;
pub mod core;
pub mod crd;
pub mod defaults;
pub mod exec;
pub mod gitops;
pub mod manifest;
pub mod meta;
pub mod network;
pub mod openapi;
pub mod other;
pub mod protobuf;
pub mod rbac;
pub mod registry;
pub mod resource;
pub mod selector;
pub mod shrink;
pub mod smp;
pub mod spdy;
pub mod tokens;
pub mod validation;

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

pub use meta::{ObjectMeta, TypeMeta};

/// The cluster's DNS domain (`<svc>.<ns>.svc.cluster.local`), shared by the DNS server and the pods' resolv.conf.
pub const CLUSTER_DOMAIN: &str = "cluster.local";
pub use resource::{HasMetadata, MetaOnly, Object, Resource};

/// A part of an object that Capstan stores exactly as given but does not model field by field (yet), such as a
/// container's `securityContext`. Its schema is an open object, so any content is accepted and kept. The registry
/// lists where these sit, so the API server can warn that such fields are stored but not acted on.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Opaque(pub serde_json::Value);

impl JsonSchema for Opaque {
    fn schema_name() -> Cow<'static, str> {
        "Opaque".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"x-kubernetes-preserve-unknown-fields": true, "x-capstan-opaque": true})
    }
}

/// `IntOrString` (ports, maxSurge, ...): either an integer or a string such as `"25%"` or `"http"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl Default for IntOrString {
    fn default() -> Self {
        IntOrString::Int(0)
    }
}

impl IntOrString {
    /// Resolves an absolute or percentage value against `total`, rounding up or down as asked.
    pub fn scaled(&self, total: i64, round_up: bool) -> Option<i64> {
        match self {
            IntOrString::Int(i) => Some(*i),
            IntOrString::String(s) => {
                let pct: i64 = s.strip_suffix('%')?.trim().parse().ok()?;
                let num = pct * total;
                Some(if round_up {
                    (num + 99) / 100
                } else {
                    num / 100
                })
            }
        }
    }
}

impl JsonSchema for IntOrString {
    fn schema_name() -> Cow<'static, str> {
        "IntOrString".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"x-kubernetes-int-or-string": true, "anyOf": [{"type": "integer"}, {"type": "string"}]})
    }
}

/// A resource quantity (`500m`, `128Mi`, `1`). Numbers are accepted and stored in their canonical string form, like
/// Kubernetes does.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Default)]
#[serde(transparent)]
pub struct Quantity(pub String);

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match v {
            serde_json::Value::String(s) => Ok(Quantity(s)),
            serde_json::Value::Number(n) => Ok(Quantity(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "quantity must be a string or a number, got {other}"
            ))),
        }
    }
}

impl JsonSchema for Quantity {
    fn schema_name() -> Cow<'static, str> {
        "Quantity".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"x-kubernetes-int-or-string": true, "x-capstan-quantity": true,
            "anyOf": [{"type": "integer"}, {"type": "number"}, {"type": "string"}]})
    }
}

impl Quantity {
    /// The value in milli-units (cpu `500m` -> 500, memory `1Ki` -> 1_024_000), or None if it does not parse.
    pub fn millis(&self) -> Option<i128> {
        parse_quantity_millis(&self.0)
    }
}

/// Parses a Kubernetes quantity into milli-units (one implementation, shared with the terminal UI).
pub use capstan_units::parse_quantity_millis;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_to_millis() {
        assert_eq!(parse_quantity_millis("500m"), Some(500));
        assert_eq!(parse_quantity_millis("1"), Some(1000));
        assert_eq!(parse_quantity_millis("0.5"), Some(500));
        assert_eq!(parse_quantity_millis("1Ki"), Some(1_024_000));
        assert_eq!(
            parse_quantity_millis("128Mi"),
            Some(128 * 1024 * 1024 * 1000)
        );
        assert_eq!(parse_quantity_millis("1e3"), Some(1_000_000));
        assert_eq!(parse_quantity_millis("abc"), None);
        assert_eq!(parse_quantity_millis("12Q"), None);
    }

    #[test]
    fn int_or_string_scales_percentages() {
        assert_eq!(IntOrString::String("25%".into()).scaled(10, true), Some(3));
        assert_eq!(IntOrString::String("25%".into()).scaled(10, false), Some(2));
        assert_eq!(IntOrString::Int(4).scaled(10, false), Some(4));
    }

    #[test]
    fn numeric_quantity_becomes_string() {
        let q: Quantity = serde_json::from_value(serde_json::json!(2)).unwrap();
        assert_eq!(q.0, "2");
    }
}
