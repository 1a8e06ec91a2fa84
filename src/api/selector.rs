//! Label selectors (the string syntax `a=b,c!=d,e in (x,y),f notin (z),g,!h` and the structured `LabelSelector`)
//! and field selectors (`metadata.name=x,status.phase!=Running`), parsed once and matched many times.

use std::collections::BTreeMap;

use super::meta::LabelSelector;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("invalid label selector {selector:?}: {reason}")]
    Label { selector: String, reason: Invalid },
    #[error("invalid field selector {selector:?}: {reason}")]
    Field { selector: String, reason: Invalid },
}

/// What is wrong inside a selector.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Invalid {
    #[error("key {0:?} has an invalid prefix")]
    Prefix(String),
    #[error("invalid label key {0:?}")]
    Key(String),
    #[error("invalid label value {0:?}")]
    Value(String),
    #[error("expected a parenthesised value set, got {0:?}")]
    NotASet(String),
    #[error("a value set must not be empty")]
    EmptySet,
    #[error("values must be non-empty for In and NotIn")]
    NoValues,
    #[error("values must be empty for Exists and DoesNotExist")]
    UnwantedValues,
    #[error("unknown operator {0:?}")]
    Operator(String),
    #[error("term {0:?} has no operator")]
    NoOperator(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq)]
pub enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Eq(k, v) => labels.get(k) == Some(v),
            Requirement::NotEq(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        }
    }
}

/// A parsed label selector: all requirements must hold. An empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selector {
    pub requirements: Vec<Requirement>,
    /// A structured selector that can match nothing (Kubernetes' "nil selector" for some kinds).
    pub nothing: bool,
}

impl Selector {
    pub fn everything() -> Self {
        Selector::default()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty() && !self.nothing
    }

    /// Parses the string syntax used in `?labelSelector=` and `-l`.
    pub fn parse(s: &str) -> Result<Self> {
        let err = |reason: Invalid| Error::Label {
            selector: s.to_string(),
            reason,
        };
        let mut requirements = Vec::new();
        for term in split_terms(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            if let Some(key) = term.strip_prefix('!') {
                let key = key.trim();
                check_key(key).map_err(err)?;
                requirements.push(Requirement::NotExists(key.to_string()));
            } else if let Some((k, v)) = term.split_once("!=") {
                requirements.push(Requirement::NotEq(
                    key_of(k).map_err(err)?,
                    value_of(v).map_err(err)?,
                ));
            } else if let Some((k, v)) = term.split_once("==") {
                requirements.push(Requirement::Eq(
                    key_of(k).map_err(err)?,
                    value_of(v).map_err(err)?,
                ));
            } else if let Some((k, v)) = term.split_once('=') {
                requirements.push(Requirement::Eq(
                    key_of(k).map_err(err)?,
                    value_of(v).map_err(err)?,
                ));
            } else if let Some((k, rest)) = split_set_op(term, " notin ") {
                let vs = parse_set(rest).map_err(err)?;
                requirements.push(Requirement::NotIn(key_of(k).map_err(err)?, vs));
            } else if let Some((k, rest)) = split_set_op(term, " in ") {
                let vs = parse_set(rest).map_err(err)?;
                requirements.push(Requirement::In(key_of(k).map_err(err)?, vs));
            } else {
                check_key(term).map_err(err)?;
                requirements.push(Requirement::Exists(term.to_string()));
            }
        }
        Ok(Selector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a structured `LabelSelector` (matchLabels + matchExpressions).
    pub fn from_label_selector(ls: &LabelSelector) -> Result<Self> {
        let mut requirements = Vec::new();
        for (k, v) in ls.match_labels.iter().flatten() {
            requirements.push(Requirement::Eq(k.clone(), v.clone()));
        }
        for e in ls.match_expressions.iter().flatten() {
            let values = e.values.clone().unwrap_or_default();
            let bad = |reason: Invalid| Error::Label {
                selector: format!("{e:?}"),
                reason,
            };
            requirements.push(match e.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => return Err(bad(Invalid::NoValues)),
                "In" => Requirement::In(e.key.clone(), values),
                "NotIn" => Requirement::NotIn(e.key.clone(), values),
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(bad(Invalid::UnwantedValues))
                }
                "Exists" => Requirement::Exists(e.key.clone()),
                "DoesNotExist" => Requirement::NotExists(e.key.clone()),
                other => return Err(bad(Invalid::Operator(other.to_string()))),
            });
        }
        Ok(Selector {
            requirements,
            nothing: false,
        })
    }

    /// A selector from a plain map (Service, ReplicationController).
    pub fn from_map(m: &BTreeMap<String, String>) -> Self {
        Selector {
            requirements: m
                .iter()
                .map(|(k, v)| Requirement::Eq(k.clone(), v.clone()))
                .collect(),
            nothing: false,
        }
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .requirements
            .iter()
            .map(|r| match r {
                Requirement::Eq(k, v) => format!("{k}={v}"),
                Requirement::NotEq(k, v) => format!("{k}!={v}"),
                Requirement::In(k, vs) => format!("{k} in ({})", vs.join(",")),
                Requirement::NotIn(k, vs) => format!("{k} notin ({})", vs.join(",")),
                Requirement::Exists(k) => k.clone(),
                Requirement::NotExists(k) => format!("!{k}"),
            })
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn split_set_op<'a>(term: &'a str, op: &str) -> Option<(&'a str, &'a str)> {
    let i = term.find(op)?;
    Some((&term[..i], &term[i + op.len()..]))
}

fn parse_set(rest: &str) -> std::result::Result<Vec<String>, Invalid> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| Invalid::NotASet(rest.to_string()))?;
    let vs: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if vs.is_empty() {
        return Err(Invalid::EmptySet);
    }
    for v in &vs {
        check_value(v)?;
    }
    Ok(vs)
}

fn key_of(k: &str) -> std::result::Result<String, Invalid> {
    let k = k.trim();
    check_key(k)?;
    Ok(k.to_string())
}

fn value_of(v: &str) -> std::result::Result<String, Invalid> {
    let v = v.trim();
    check_value(v)?;
    Ok(v.to_string())
}

/// A label name or value's text: at most 63 of alphanumerics, `-`, `_`, `.`, beginning and ending with an
/// alphanumeric.
fn is_label_text(t: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    t.len() <= 63
        && edge(t.chars().next())
        && edge(t.chars().last())
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A DNS-1123 subdomain (a label key's prefix): at most 253 of lowercase alphanumerics, `-` and `.`, each
/// dot-separated part beginning and ending with an alphanumeric.
fn is_dns_subdomain(p: &str) -> bool {
    p.len() <= 253
        && p.split('.').all(|part| {
            let edge =
                |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
            edge(part.chars().next())
                && edge(part.chars().last())
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

fn check_key(k: &str) -> std::result::Result<(), Invalid> {
    let name = match k.rsplit_once('/') {
        Some((prefix, name)) => {
            if !is_dns_subdomain(prefix) {
                return Err(Invalid::Prefix(k.to_string()));
            }
            name
        }
        None => k,
    };
    if !is_label_text(name) {
        return Err(Invalid::Key(k.to_string()));
    }
    Ok(())
}

fn check_value(v: &str) -> std::result::Result<(), Invalid> {
    if !v.is_empty() && !is_label_text(v) {
        return Err(Invalid::Value(v.to_string()));
    }
    Ok(())
}

/// The labels of an object in JSON form.
pub fn labels_of(v: &serde_json::Value) -> BTreeMap<String, String> {
    v.pointer("/metadata/labels")
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// A parsed field selector: `path=value`, `path==value` or `path!=value` terms, all of which must hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FieldSelector {
    pub terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self> {
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, eq, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                return Err(Error::Field {
                    selector: s.into(),
                    reason: Invalid::NoOperator(term.to_string()),
                });
            };
            terms.push((path.trim().to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector { terms })
    }

    /// The value a term requires for `metadata.name`, if the selector pins one (used to narrow list ranges).
    pub fn exact(&self, path: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|(p, eq, _)| p == path && *eq)
            .map(|(_, _, v)| v.as_str())
    }

    /// Matches against a JSON object by dotted path; an absent field reads as "".
    pub fn matches(&self, obj: &serde_json::Value) -> bool {
        self.terms.iter().all(|(path, eq, want)| {
            let mut cur = obj;
            let mut found = true;
            for part in path.split('.') {
                match cur.get(part) {
                    Some(v) => cur = v,
                    None => {
                        found = false;
                        break;
                    }
                }
            }
            let have = if !found {
                String::new()
            } else {
                match cur {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                }
            };
            (have == *want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator_of_the_string_syntax() {
        let s = Selector::parse("a=b,c!=d,e in (x,y),f notin (z),g,!h").unwrap();
        assert_eq!(s.requirements.len(), 6);
        assert!(s.matches(&labels(&[("a", "b"), ("e", "x"), ("g", "1")])));
        assert!(!s.matches(&labels(&[("a", "b"), ("e", "x"), ("g", "1"), ("h", "")])));
        assert!(!s.matches(&labels(&[("a", "b"), ("c", "d"), ("e", "x"), ("g", "1")])));
        assert!(!s.matches(&labels(&[("a", "b"), ("e", "q"), ("g", "1")])));
        assert!(!s.matches(&labels(&[("a", "b"), ("e", "x"), ("f", "z"), ("g", "1")])));
        assert_eq!(s.to_string(), "a=b,c!=d,e in (x,y),f notin (z),g,!h");
    }

    #[test]
    fn rejects_malformed_selectors() {
        assert!(Selector::parse("a in x").is_err());
        assert!(Selector::parse("a=b c").is_err());
        assert!(Selector::parse("e in ()").is_err());
    }

    #[test]
    fn structured_selector_matches_like_kubernetes() {
        let ls: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]},
                                 {"key": "canary", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        let s = Selector::from_label_selector(&ls).unwrap();
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("canary", "1")])));
        let bad: LabelSelector = serde_json::from_value(
            serde_json::json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}),
        )
        .unwrap();
        assert!(Selector::from_label_selector(&bad).is_err());
    }

    #[test]
    fn field_selector_matches_paths() {
        let f = FieldSelector::parse("metadata.name=web,status.phase!=Failed").unwrap();
        let obj = serde_json::json!({"metadata": {"name": "web"}, "status": {"phase": "Running"}});
        assert!(f.matches(&obj));
        assert_eq!(f.exact("metadata.name"), Some("web"));
        let obj2 = serde_json::json!({"metadata": {"name": "web"}, "status": {"phase": "Failed"}});
        assert!(!f.matches(&obj2));
        assert!(FieldSelector::parse("metadata.name").is_err());
    }
}
