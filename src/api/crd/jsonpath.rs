//! The JSONPath subset CRDs use in `additionalPrinterColumns` and `selectableFields` (Kubernetes' JSONPath without
//! the `{}` template braces): fields (`.spec.replicas`, `['app.kubernetes.io/name']`, escaped dots), indexes
//! (`[0]`, `[-1]`), wildcards (`[*]`, `.*`) and filters comparing a field with a literal
//! (`[?(@.type=="Ready")]`, also `!=`, and `[?(@.field)]` for presence).

use serde_json::Value;

/// One step of a path.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    Filter {
        path: Vec<String>,
        op: Option<(bool, Value)>,
    },
}

/// A parsed path.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    steps: Vec<Step>,
    text: String,
}

impl Path {
    /// Parses `.a.b[0]`, with or without Kubernetes' `{...}` braces.
    pub fn parse(text: &str) -> Result<Path, String> {
        let t = text.trim();
        let t = t
            .strip_prefix('{')
            .and_then(|s| s.strip_suffix('}'))
            .unwrap_or(t);
        let t = t.strip_prefix('$').unwrap_or(t);
        let chars: Vec<char> = t.chars().collect();
        let mut steps = Vec::new();
        let mut i = 0;
        let bad = |why: &str| Err(format!("{text:?}: {why}"));
        if !chars.is_empty() && chars[0] != '.' && chars[0] != '[' {
            return bad("a path must start with '.'");
        }
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    i += 1;
                    let mut name = String::new();
                    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
                        if chars[i] == '\\' && i + 1 < chars.len() {
                            i += 1;
                        }
                        name.push(chars[i]);
                        i += 1;
                    }
                    if name == "*" {
                        steps.push(Step::All);
                    } else if name.is_empty() {
                        if i < chars.len() {
                            return bad("empty field name");
                        }
                    } else {
                        steps.push(Step::Field(name));
                    }
                }
                '[' => {
                    let Some(end) = closing(&chars, i) else {
                        return bad("unclosed '['");
                    };
                    let inner: String = chars[i + 1..end].iter().collect();
                    steps.push(bracket(inner.trim()).map_err(|e| format!("{text:?}: {e}"))?);
                    i = end + 1;
                }
                c => return bad(&format!("unexpected {c:?}")),
            }
        }
        Ok(Path {
            steps,
            text: text.to_string(),
        })
    }

    /// The path as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every value the path reaches in `v`.
    pub fn find<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        let mut cur = vec![v];
        for step in &self.steps {
            let mut next = Vec::new();
            for c in cur {
                apply(step, c, &mut next);
            }
            cur = next;
        }
        cur
    }

    /// The printed cell of a printer column: one value as it is, several joined by spaces, none as null.
    pub fn cell(&self, v: &Value) -> Value {
        let found = self.find(v);
        match found.as_slice() {
            [] => Value::Null,
            [one] => (*one).clone(),
            many => Value::String(
                many.iter()
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        }
    }
}

fn closing(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0;
    let mut quote: Option<char> = None;
    for (j, &c) in chars.iter().enumerate().skip(open) {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

fn unquote(s: &str) -> Option<String> {
    let s = s.trim();
    let q = s.chars().next()?;
    if (q == '\'' || q == '"') && s.len() >= 2 && s.ends_with(q) {
        Some(s[1..s.len() - 1].to_string())
    } else {
        None
    }
}

fn bracket(inner: &str) -> Result<Step, String> {
    if inner == "*" {
        return Ok(Step::All);
    }
    if let Some(name) = unquote(inner) {
        return Ok(Step::Field(name));
    }
    if let Ok(n) = inner.parse::<i64>() {
        return Ok(Step::Index(n));
    }
    if let Some(f) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        let f = f.trim();
        let (lhs, op) = match f.find("==").or_else(|| f.find("!=")) {
            Some(at) => {
                let eq = &f[at..at + 2] == "==";
                let rhs = f[at + 2..].trim();
                let lit = match unquote(rhs) {
                    Some(s) => Value::String(s),
                    None => serde_json::from_str(rhs)
                        .map_err(|_| format!("cannot read the literal {rhs:?}"))?,
                };
                (f[..at].trim(), Some((eq, lit)))
            }
            None => (f, None),
        };
        let path = lhs
            .strip_prefix('@')
            .ok_or_else(|| format!("a filter must start with '@', got {lhs:?}"))?;
        let path: Vec<String> = path
            .split('.')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        return Ok(Step::Filter { path, op });
    }
    Err(format!("unsupported subscript [{inner}]"))
}

fn apply<'a>(step: &Step, v: &'a Value, out: &mut Vec<&'a Value>) {
    match step {
        Step::Field(name) => {
            if let Some(c) = v.get(name.as_str()) {
                out.push(c);
            }
        }
        Step::Index(n) => {
            if let Some(a) = v.as_array() {
                let i = if *n < 0 { a.len() as i64 + n } else { *n };
                if let Some(c) = usize::try_from(i).ok().and_then(|i| a.get(i)) {
                    out.push(c);
                }
            }
        }
        Step::All => match v {
            Value::Array(a) => out.extend(a.iter()),
            Value::Object(m) => out.extend(m.values()),
            _ => {}
        },
        Step::Filter { path, op } => {
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                Value::Object(m) => m.values().collect(),
                _ => Vec::new(),
            };
            for item in items {
                let mut cur = Some(item);
                for p in path {
                    cur = cur.and_then(|c| c.get(p.as_str()));
                }
                let keep = match (op, cur) {
                    (None, found) => found.is_some_and(|f| !f.is_null()),
                    (Some((eq, lit)), Some(found)) => (found == lit) == *eq,
                    (Some((eq, _)), None) => !*eq,
                };
                if keep {
                    out.push(item);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_reach_fields_indexes_and_filters() {
        let v = json!({"spec": {"replicas": 3, "hosts": ["a", "b"]},
            "metadata": {"labels": {"app.kubernetes.io/name": "x"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Issuing", "status": "False"}]}});
        let cell = |p: &str| Path::parse(p).unwrap().cell(&v);
        assert_eq!(cell(".spec.replicas"), json!(3));
        assert_eq!(cell(".spec.hosts[0]"), json!("a"));
        assert_eq!(cell(".spec.hosts[-1]"), json!("b"));
        assert_eq!(cell(".spec.hosts[*]"), json!("a b"));
        assert_eq!(
            cell(".status.conditions[?(@.type==\"Ready\")].status"),
            json!("True")
        );
        assert_eq!(
            cell(".status.conditions[?(@.type == 'Issuing')].status"),
            json!("False")
        );
        assert_eq!(
            cell(".metadata.labels['app.kubernetes.io/name']"),
            json!("x")
        );
        assert_eq!(
            cell(".metadata.labels.app\\.kubernetes\\.io/name"),
            json!("x")
        );
        assert_eq!(cell("{.spec.replicas}"), json!(3));
        assert_eq!(cell(".spec.missing"), Value::Null);
        assert!(Path::parse("spec.x").is_err());
        assert!(Path::parse(".spec[").is_err());
    }
}
