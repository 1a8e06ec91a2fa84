//! List and watch filters: label and field selectors, matched on keys where they can be and on objects where not.

use super::*;

/// Label and field selectors of a request, matched against stored objects - parsing them only when the selectors
/// look past the name and namespace.
pub struct Filter {
    pub labels: Selector,
    pub fields: FieldSelector,
    /// The fields the selectors read (labels, field paths): all an object is decoded for to match it.
    reads: Paths,
}

impl Filter {
    pub fn from_query(q: &Query) -> Result<Self> {
        let mut f = Filter {
            labels: match q.get("labelSelector") {
                Some(s) => Selector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?,
                None => Selector::everything(),
            },
            fields: match q.get("fieldSelector") {
                Some(s) => {
                    FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?
                }
                None => FieldSelector::default(),
            },
            reads: Paths::default(),
        };
        if !f.labels.is_empty() {
            f.reads.add("metadata.labels");
        }
        for (p, _, _) in &f.fields.terms {
            f.reads.add(p);
        }
        Ok(f)
    }

    /// A custom kind takes field selectors on `metadata.name`, `metadata.namespace` and its CRD's
    /// `selectableFields` only, as Kubernetes answers: `field label not supported: ...`.
    pub fn check_fields(&self, kind: &KindInfo) -> Result<()> {
        let Some(custom) = registry::custom(kind) else {
            return Ok(());
        };
        for (p, _, _) in &self.fields.terms {
            if p != "metadata.name" && p != "metadata.namespace" && !custom.selectable.contains(p) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {p}"
                )));
            }
        }
        Ok(())
    }

    /// Whether matching needs the object's content (not just its key).
    pub fn needs_object(&self) -> bool {
        !self.labels.is_empty()
            || self
                .fields
                .terms
                .iter()
                .any(|(p, _, _)| p != "metadata.name" && p != "metadata.namespace")
    }

    /// Matches by key alone; only valid when `!needs_object()`.
    pub fn matches_key(&self, kind: &KindInfo, key: &str) -> bool {
        let (ns, name) = key_identity(kind, key);
        self.fields.terms.iter().all(|(p, eq, want)| {
            let have = if p == "metadata.name" { name } else { ns };
            (have == want) == *eq
        })
    }

    pub fn matches(&self, v: &Value) -> bool {
        self.fields.matches(v) && self.labels.matches(&obj_labels(v))
    }

    /// Matches stored bytes, decoding only the fields the selectors read.
    pub fn matches_bytes(&self, bytes: &[u8]) -> bool {
        self.matches(&sparse(bytes, &self.reads))
    }

    pub fn matches_kv(&self, kind: &KindInfo, kv: &crate::store::KeyValue) -> bool {
        if self.needs_object() {
            self.matches_bytes(&kv.value)
        } else {
            self.matches_key(kind, &kv.key)
        }
    }
}
