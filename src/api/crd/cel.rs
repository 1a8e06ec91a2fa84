//! CEL validation rules of CRD schemas (`x-kubernetes-validations`), evaluated with the `cel` crate: `self` is the
//! value at the rule's schema node, `oldSelf` the stored value at the same place on update (rules that use it are
//! transition rules, skipped on create and where no old value correlates). `message`, `messageExpression`, `reason`
//! and `fieldPath` shape the error as Kubernetes does. Kubernetes' string and list extension libraries are
//! available. Each object's rules run within a cost budget (Kubernetes' per-request limit), counted in values
//! visited.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::schema::join;
use crate::api::validation::{err, FieldError, Reason};

/// Kubernetes' runtime cost budget of all rules of one request; a value visited costs 1 here.
pub const COST_BUDGET: u64 = 10_000_000;

/// The compiled programs of a schema, by source text.
#[derive(Default)]
pub struct Rules {
    programs: HashMap<String, cel::Program>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Rules({})", self.programs.len())
    }
}

fn env() -> &'static Arc<cel::Env> {
    static ENV: std::sync::OnceLock<Arc<cel::Env>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = cel::Env::stdlib();
        let _ = env.add_extension(cel::extensions::strings);
        let _ = env.add_extension(cel::extensions::lists);
        let _ = env.add_extension(cel::extensions::math);
        Arc::new(env)
    })
}

impl Rules {
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    /// Compiles the rules of one `x-kubernetes-validations` list.
    pub fn compile(&mut self, list: &Value) -> Result<(), String> {
        let Some(items) = list.as_array() else {
            return Err("must be a list".into());
        };
        for (i, item) in items.iter().enumerate() {
            let Some(rule) = item.get("rule").and_then(Value::as_str) else {
                return Err(format!("[{i}].rule: Required value"));
            };
            let program = env().compile(rule).map_err(|e| {
                format!("[{i}].rule: Invalid value: {rule:?}: compilation failed: {e}")
            })?;
            self.programs.insert(rule.to_string(), program);
            if let Some(m) = item.get("messageExpression").and_then(Value::as_str) {
                let program = env().compile(m).map_err(|e| {
                    format!(
                        "[{i}].messageExpression: Invalid value: {m:?}: compilation failed: {e}"
                    )
                })?;
                self.programs.insert(m.to_string(), program);
            }
            if let Some(r) = item.get("reason").and_then(Value::as_str) {
                if !matches!(
                    r,
                    "FieldValueInvalid"
                        | "FieldValueForbidden"
                        | "FieldValueRequired"
                        | "FieldValueDuplicate"
                ) {
                    return Err(format!(
                        "[{i}].reason: Unsupported value: {r:?}: supported values: \"FieldValueDuplicate\", \"FieldValueForbidden\", \"FieldValueInvalid\", \"FieldValueRequired\""
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Evaluates a boolean CEL expression with `self` bound to `v` (the language and libraries of CRD rules).
pub fn eval_bool(expr: &str, v: &Value) -> Result<bool, String> {
    let program = env().compile(expr).map_err(|e| format!("{expr:?}: {e}"))?;
    let mut ctx = cel::Context::with_env(env().clone());
    ctx.add_variable_from_value("self", to_cel(v));
    match program.execute(&ctx) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(format!("{expr:?} gave {other:?}, not a bool")),
        Err(e) => Err(format!("{expr:?}: {e}")),
    }
}

/// A JSON value as CEL sees it (integers are `int`, as Kubernetes decodes them).
pub fn to_cel(v: &Value) -> cel::Value {
    match v {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => cel::Value::Int(i),
            None => cel::Value::Float(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(a) => cel::Value::List(Arc::new(a.iter().map(to_cel).collect())),
        Value::Object(m) => {
            let map: HashMap<String, cel::Value> =
                m.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            cel::Value::from(map)
        }
    }
}

struct Walk<'a> {
    rules: &'a Rules,
    errs: &'a mut Vec<FieldError>,
    spent: u64,
}

/// Runs every rule of `schema` over `obj` (and `old`, for transition rules), appending failures to `errs`.
pub fn check(
    schema: &Value,
    rules: &Rules,
    obj: &Value,
    old: Option<&Value>,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    let mut w = Walk {
        rules,
        errs,
        spent: 0,
    };
    w.node(schema, obj, old, path, true);
}

impl Walk<'_> {
    fn node(&mut self, s: &Value, v: &Value, old: Option<&Value>, path: &str, root: bool) {
        if v.is_null() {
            return;
        }
        self.spent += 1;
        if self.spent > COST_BUDGET {
            return;
        }
        if let Some(list) = s.get("x-kubernetes-validations").and_then(Value::as_array) {
            for rule in list {
                self.rule(rule, v, old, path);
            }
        }
        match v {
            Value::Object(map) => {
                let props = s.get("properties").and_then(Value::as_object);
                let extra = s.get("additionalProperties").filter(|a| a.is_object());
                for (k, child) in map {
                    if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    let cs = props.and_then(|p| p.get(k)).or(extra);
                    if let Some(cs) = cs {
                        let o = old.and_then(|o| o.get(k));
                        let p = if props.is_some_and(|p| p.contains_key(k)) {
                            join(path, k)
                        } else {
                            format!("{path}[{k}]")
                        };
                        self.node(cs, child, o, &p, false);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(is) = s.get("items") {
                    let keys = super::schema::map_keys(s);
                    let is_map =
                        s.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map");
                    for (i, item) in items.iter().enumerate() {
                        // Only map lists correlate items with the old list (by their keys).
                        let o = if is_map {
                            old.and_then(Value::as_array).and_then(|olds| {
                                olds.iter()
                                    .find(|o| keys.iter().all(|k| o.get(*k) == item.get(*k)))
                            })
                        } else {
                            None
                        };
                        self.node(is, item, o, &format!("{path}[{i}]"), false);
                    }
                }
            }
            _ => {}
        }
    }

    fn rule(&mut self, rule: &Value, v: &Value, old: Option<&Value>, path: &str) {
        let Some(text) = rule.get("rule").and_then(Value::as_str) else {
            return;
        };
        let Some(program) = self.rules.programs.get(text) else {
            return;
        };
        let transition = program.references().has_variable("oldSelf");
        if transition && old.is_none() {
            return;
        }
        let mut ctx = cel::Context::with_env(env().clone());
        ctx.add_variable_from_value("self", to_cel(v));
        if let Some(o) = old {
            ctx.add_variable_from_value("oldSelf", to_cel(o));
        }
        let field = match rule.get("fieldPath").and_then(Value::as_str) {
            Some(fp) => format!("{path}{fp}"),
            None => path.to_string(),
        };
        let shown = format!("\"{}\"", super::schema::type_name(v));
        match program.execute(&ctx) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => {
                let message = rule
                    .get("messageExpression")
                    .and_then(Value::as_str)
                    .and_then(|m| self.rules.programs.get(m))
                    .and_then(|p| match p.execute(&ctx) {
                        Ok(cel::Value::String(s)) if !s.trim().is_empty() => Some(s.to_string()),
                        _ => None,
                    })
                    .or_else(|| {
                        rule.get("message")
                            .and_then(Value::as_str)
                            .map(String::from)
                    })
                    .unwrap_or_else(|| format!("failed rule: {text}"));
                let (reason, detail) = match rule.get("reason").and_then(Value::as_str) {
                    Some("FieldValueForbidden") => (Reason::Forbidden, message),
                    Some("FieldValueRequired") => (Reason::Required, message),
                    Some("FieldValueDuplicate") => (Reason::Duplicate, message),
                    _ => (Reason::Invalid, format!("{shown}: {message}")),
                };
                self.errs.push(err(&field, reason, detail));
            }
            Ok(other) => self.errs.push(err(
                &field,
                Reason::Invalid,
                format!("{shown}: rule {text:?} gave {other:?}, not a bool"),
            )),
            Err(e) => self.errs.push(err(
                &field,
                Reason::Invalid,
                format!("{shown}: rule evaluation error: {e}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(schema: Value, obj: Value, old: Option<Value>) -> Vec<String> {
        let c = super::super::schema::Compiled::new(&schema).unwrap();
        c.validate(&obj, old.as_ref())
            .into_iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn rules_see_self_and_name_the_field() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [
                {"rule": "(has(self.a) ? 1 : 0) + (has(self.b) ? 1 : 0) == 1", "message": "exactly one of a or b"},
                {"rule": "self.n.lowerAscii() == self.n", "messageExpression": "'n must be lower case, not ' + self.n"},
                {"rule": "self.items.all(i, i > 0)", "fieldPath": ".items", "reason": "FieldValueForbidden"}],
            "properties": {"a": {"type": "string"}, "b": {"type": "string"}, "n": {"type": "string"},
                "items": {"type": "array", "items": {"type": "integer"}}}}}});
        assert_eq!(
            run(
                schema.clone(),
                json!({"spec": {"a": "x", "n": "ok", "items": [1]}}),
                None
            ),
            Vec::<String>::new()
        );
        assert_eq!(
            run(
                schema,
                json!({"spec": {"a": "x", "b": "y", "n": "OK", "items": [0]}}),
                None
            ),
            vec![
                "spec: Invalid value: \"object\": exactly one of a or b",
                "spec: Invalid value: \"object\": n must be lower case, not OK",
                "spec.items: Forbidden: failed rule: self.items.all(i, i > 0)",
            ]
        );
    }

    #[test]
    fn transition_rules_compare_with_the_old_object() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "size": {"type": "integer", "x-kubernetes-validations": [
                {"rule": "self >= oldSelf", "message": "size may not shrink"}]}}}}});
        let obj = json!({"spec": {"size": 2}});
        assert!(
            run(schema.clone(), obj.clone(), None).is_empty(),
            "no oldSelf on create"
        );
        assert!(run(
            schema.clone(),
            obj.clone(),
            Some(json!({"spec": {"size": 1}}))
        )
        .is_empty());
        assert_eq!(
            run(schema, obj, Some(json!({"spec": {"size": 3}}))),
            vec!["spec.size: Invalid value: \"integer\": size may not shrink"]
        );
    }

    #[test]
    fn blocking_errors_skip_rules_with_kubernetes_note() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": "self.kind == 'A'"}],
            "properties": {"kind": {"type": "string", "enum": ["A", "B"]}}}}});
        let errs = run(schema, json!({"spec": {"kind": "C"}}), None);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[1].ends_with(super::super::schema::RULES_SKIPPED),
            "{errs:?}"
        );
    }

    #[test]
    fn uncompilable_rules_are_refused() {
        let e = super::super::schema::Compiled::new(&json!({"type": "object",
            "x-kubernetes-validations": [{"rule": "self.a ==="}]}))
        .unwrap_err();
        assert!(e.contains("compilation failed"), "{e}");
    }
}
