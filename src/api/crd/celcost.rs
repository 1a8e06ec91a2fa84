//! The static cost of a CRD's CEL rules, estimated when the CRD is written, as Kubernetes does before it accepts
//! one: each rule's worst-case cost (from the schema's `maxLength`, `maxItems` and `maxProperties`, or - where a
//! bound is missing - from the largest request the API server takes, 3 MiB) times the number of places it can run
//! (the sizes of the lists and maps above it) must stay within 10,000,000, and all rules together within
//! 100,000,000. The cost model follows CEL's: one unit per variable, field selection, index and call; string
//! and list work proportional to size (a tenth of a unit per character); a comprehension (`all`, `exists`, `map`,
//! `filter`, ...) costs its body once per element of its range. An unbounded list walked inside a walk of itself is
//! what this exists to refuse, with Kubernetes' message.

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use serde_json::Value;

/// Kubernetes' limit for one rule (`StaticEstimatedCostLimit`).
pub const RULE_LIMIT: u64 = 10_000_000;
/// Kubernetes' limit for all rules of one schema (`StaticEstimatedCRDCostLimit`).
pub const SCHEMA_LIMIT: u64 = 100_000_000;
/// The largest request body the API server takes; unbounded sizes are estimated from it.
const MAX_REQUEST: u64 = 3 * 1024 * 1024;

/// A cost problem: the schema path (below `openAPIV3Schema`) and Kubernetes' message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CostError {
    pub path: String,
    pub message: String,
}

/// Kubernetes' wording of a budget overrun.
fn over_budget(what: &str, cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    let factor = if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    };
    format!(
        "{what} exceeds budget by factor of {factor} (try simplifying the rule, or adding maxItems, maxProperties, \
         and maxLength where arrays, maps, and strings are declared)"
    )
}

/// Estimates every rule of the schema `root`; the problems found (none when it fits the budgets).
pub fn check(root: &Value) -> Vec<CostError> {
    let mut walk = Walk {
        errors: Vec::new(),
        total: 0,
        expensive: Vec::new(),
    };
    walk.node(root, "", 1);
    if walk.total > SCHEMA_LIMIT {
        walk.expensive.sort_by_key(|e| std::cmp::Reverse(e.1));
        for (path, _) in walk.expensive.iter().take(4) {
            walk.errors.push(CostError {
                path: path.clone(),
                message: "contributed to estimated rule cost total exceeding cost limit for entire OpenAPIv3 schema"
                    .into(),
            });
        }
        walk.errors.push(CostError {
            path: String::new(),
            message: over_budget(
                "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema",
                walk.total,
                SCHEMA_LIMIT,
            ),
        });
    }
    walk.errors
}

struct Walk {
    errors: Vec<CostError>,
    total: u64,
    /// Rules costing at least 1% of the per-rule limit, with their cost.
    expensive: Vec<(String, u64)>,
}

impl Walk {
    /// `times`: how many values this schema node can describe in one object.
    fn node(&mut self, s: &Value, path: &str, times: u64) {
        for (i, rule) in s
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            for (key, what) in [
                ("rule", "estimated rule cost"),
                ("messageExpression", "estimated messageExpression cost"),
            ] {
                let Some(text) = rule.get(key).and_then(Value::as_str) else {
                    continue;
                };
                let Ok(ast) = cel::parser::Parser::new().parse(text) else {
                    continue; // compilation reports it
                };
                let cost = Estimator { self_schema: s }
                    .cost(&ast, &mut Vec::new())
                    .cost
                    .saturating_mul(times);
                let at = format!("{path}.x-kubernetes-validations[{i}].{key}");
                if cost > RULE_LIMIT {
                    self.errors.push(CostError {
                        path: at.clone(),
                        message: over_budget(what, cost, RULE_LIMIT),
                    });
                }
                self.total = self.total.saturating_add(cost);
                if cost >= RULE_LIMIT / 100 {
                    self.expensive.push((at, cost));
                }
            }
        }
        if let Some(props) = s.get("properties").and_then(Value::as_object) {
            for (k, child) in props {
                self.node(child, &format!("{path}.properties[{k}]"), times);
            }
        }
        if let Some(items) = s.get("items").filter(|i| i.is_object()) {
            self.node(
                items,
                &format!("{path}.items"),
                times.saturating_mul(max_size(s)),
            );
        }
        if let Some(extra) = s.get("additionalProperties").filter(|a| a.is_object()) {
            let path = format!("{path}.additionalProperties");
            self.node(extra, &path, times.saturating_mul(max_size(s)));
        }
    }
}

/// The least number of bytes a value of schema `s` takes in JSON.
fn min_serialized(s: &Value) -> u64 {
    if s.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return 1;
    }
    match s.get("type").and_then(Value::as_str) {
        Some("string") => 2,
        Some("integer") | Some("number") => 1,
        Some("boolean") => 4,
        Some("array") | Some("object") => 2,
        _ => 1,
    }
}

/// The largest size of a value of schema `s`: characters of a string, items of a list, entries of a map - declared,
/// or the most a request could hold.
fn max_size(s: &Value) -> u64 {
    let declared = |key: &str| s.get(key).and_then(Value::as_u64);
    match s.get("type").and_then(Value::as_str) {
        Some("string") => {
            declared("maxLength").unwrap_or(match s.get("format").and_then(Value::as_str) {
                Some("date") => 12,
                Some("date-time") => 34,
                Some("duration") => 206,
                _ => MAX_REQUEST - 2,
            })
        }
        Some("array") => declared("maxItems").unwrap_or_else(|| {
            let item = s.get("items").map(min_serialized).unwrap_or(1);
            (MAX_REQUEST - 2) / (item + 1)
        }),
        Some("object") => declared("maxProperties").unwrap_or_else(|| {
            let value = s
                .get("additionalProperties")
                .map(min_serialized)
                .unwrap_or(1);
            // "key":value, per entry.
            (MAX_REQUEST - 2) / (value + 4)
        }),
        _ => MAX_REQUEST - 2,
    }
}

/// What an expression costs at most, how big its value can be, and its schema when known.
#[derive(Clone, Copy)]
struct Est<'s> {
    cost: u64,
    size: u64,
    schema: Option<&'s Value>,
}

impl<'s> Est<'s> {
    fn plain(cost: u64) -> Est<'s> {
        Est {
            cost,
            size: 1,
            schema: None,
        }
    }
}

/// A tenth of a unit per character or element (CEL's traversal factor), rounded up.
fn traversal(n: u64) -> u64 {
    n.div_ceil(10)
}

struct Estimator<'s> {
    self_schema: &'s Value,
}

impl<'s> Estimator<'s> {
    /// `scope`: comprehension variables in reach, innermost last, with what they hold.
    fn cost(&self, e: &IdedExpr, scope: &mut Vec<(String, Est<'s>)>) -> Est<'s> {
        match &e.expr {
            Expr::Unspecified => Est::plain(0),
            Expr::Literal(l) => Est {
                cost: 0,
                size: match l {
                    LiteralValue::String(s) => s.chars().count() as u64,
                    LiteralValue::Bytes(b) => b.len() as u64,
                    _ => 1,
                },
                schema: None,
            },
            Expr::Ident(name) => {
                if let Some((_, est)) = scope.iter().rev().find(|(n, _)| n == name) {
                    return Est { cost: 1, ..*est };
                }
                match name.as_str() {
                    "self" | "oldSelf" => Est {
                        cost: 1,
                        size: max_size(self.self_schema),
                        schema: Some(self.self_schema),
                    },
                    _ => Est::plain(1),
                }
            }
            Expr::Select(sel) => {
                let operand = self.cost(&sel.operand, scope);
                let field = operand.schema.and_then(|s| {
                    s.get("properties")
                        .and_then(|p| p.get(&sel.field))
                        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
                });
                if sel.test {
                    return Est::plain(operand.cost.saturating_add(1));
                }
                Est {
                    cost: operand.cost.saturating_add(1),
                    size: field.map(max_size).unwrap_or(MAX_REQUEST),
                    schema: field,
                }
            }
            Expr::List(list) => {
                let mut cost = 10u64; // building a list
                for item in &list.elements {
                    cost = cost.saturating_add(self.cost(item, scope).cost);
                }
                Est {
                    cost,
                    size: list.elements.len() as u64,
                    schema: None,
                }
            }
            Expr::Map(map) => {
                let mut cost = 30u64; // building a map
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(m) = &entry.expr {
                        cost = cost
                            .saturating_add(self.cost(&m.key, scope).cost)
                            .saturating_add(self.cost(&m.value, scope).cost);
                    }
                }
                Est {
                    cost,
                    size: map.entries.len() as u64,
                    schema: None,
                }
            }
            Expr::Struct(st) => {
                let mut cost = 40u64;
                for entry in &st.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        cost = cost.saturating_add(self.cost(&f.value, scope).cost);
                    }
                }
                Est::plain(cost)
            }
            Expr::Comprehension(c) => {
                let range = self.cost(&c.iter_range, scope);
                // Iterating a list yields its items, a map its keys.
                let element = match range.schema {
                    Some(s) if s.get("type").and_then(Value::as_str) == Some("array") => {
                        let items = s.get("items");
                        Est {
                            cost: 1,
                            size: items.map(max_size).unwrap_or(MAX_REQUEST),
                            schema: items,
                        }
                    }
                    _ => Est {
                        cost: 1,
                        size: MAX_REQUEST,
                        schema: None,
                    },
                };
                let init = self.cost(&c.accu_init, scope);
                scope.push((c.iter_var.clone(), element));
                if let Some(v2) = &c.iter_var2 {
                    scope.push((v2.clone(), element));
                }
                // The accumulator of map/filter grows to the range's size.
                scope.push((
                    c.accu_var.clone(),
                    Est {
                        cost: 1,
                        size: range.size,
                        schema: None,
                    },
                ));
                let per_step = self
                    .cost(&c.loop_cond, scope)
                    .cost
                    .saturating_add(self.cost(&c.loop_step, scope).cost);
                let result = self.cost(&c.result, scope);
                scope.truncate(scope.len() - if c.iter_var2.is_some() { 3 } else { 2 });
                Est {
                    cost: range
                        .cost
                        .saturating_add(init.cost)
                        .saturating_add(range.size.saturating_mul(per_step))
                        .saturating_add(result.cost),
                    size: range.size,
                    schema: None,
                }
            }
            Expr::Call(call) => {
                self.call(&call.func_name, call.target.as_deref(), &call.args, scope)
            }
        }
    }

    fn call(
        &self,
        name: &str,
        target: Option<&IdedExpr>,
        args: &[IdedExpr],
        scope: &mut Vec<(String, Est<'s>)>,
    ) -> Est<'s> {
        let target = target.map(|t| self.cost(t, scope));
        let args: Vec<Est<'s>> = args.iter().map(|a| self.cost(a, scope)).collect();
        let inputs = target
            .iter()
            .chain(args.iter())
            .fold(0u64, |acc, e| acc.saturating_add(e.cost));
        // The receiver (or first argument) and the second value, for the size-dependent costs.
        let first = target.or_else(|| args.first().copied());
        let second = if target.is_some() {
            args.first().copied()
        } else {
            args.get(1).copied()
        };
        let size = |e: Option<Est>| e.map(|e| e.size).unwrap_or(1);
        let (own, result_size, schema) = match name {
            // Short-circuiting operators add nothing of their own.
            "_&&_" | "_||_" | "_?_:_" | "!_" | "@not_strictly_false" => (0, 1, None),
            "_[_]" => {
                let element = first.and_then(|f| f.schema).and_then(|s| {
                    s.get("items")
                        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
                });
                (1, element.map(max_size).unwrap_or(MAX_REQUEST), element)
            }
            "_==_" | "_!=_" | "_<_" | "_<=_" | "_>_" | "_>=_" => {
                (1 + traversal(size(first).min(size(second))), 1, None)
            }
            "_+_" => {
                let total = size(first).saturating_add(size(second));
                (1 + traversal(total), total, None)
            }
            "@in" => {
                // Membership in a list compares with each item; in a map it is a lookup.
                let list = args
                    .get(1)
                    .and_then(|l| l.schema)
                    .is_some_and(|s| s.get("type").and_then(Value::as_str) == Some("array"))
                    || args.get(1).is_some_and(|l| l.schema.is_none());
                let n = if list { size(args.get(1).copied()) } else { 1 };
                (1u64.saturating_add(n), 1, None)
            }
            "contains" => (
                1 + traversal(size(first).saturating_mul(size(second))),
                1,
                None,
            ),
            "startsWith" | "endsWith" => (1 + traversal(size(second)), 1, None),
            "matches" => {
                let pattern = size(second);
                (
                    1 + traversal(size(first)).saturating_mul(pattern.div_ceil(4).max(1)),
                    1,
                    None,
                )
            }
            "lowerAscii" | "upperAscii" | "trim" | "replace" | "reverse" | "substring"
            | "charAt" | "indexOf" | "lastIndexOf" | "join" | "split" | "format" | "quote" => {
                let n = size(first);
                (1 + traversal(n), n, None)
            }
            "isSorted" | "sum" | "min" | "max" | "indexOfList" | "lastIndexOfList" => {
                (1 + size(first), 1, None)
            }
            "url" | "isURL" | "ip" | "isIP" | "cidr" | "isCIDR" | "quantity" | "isQuantity"
            | "semver" | "isSemver" => (1 + traversal(size(first)), 1, None),
            "size" | "has" | "int" | "uint" | "double" | "string" | "bool" | "bytes" | "type"
            | "duration" | "timestamp" | "dyn" => (1, 1, None),
            _ => (1, 1, None),
        };
        Est {
            cost: inputs.saturating_add(own),
            size: result_size,
            schema,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules_on(list: Value, rule: &str) -> Value {
        json!({"type": "object", "properties": {"spec": {"type": "object",
            "x-kubernetes-validations": [{"rule": rule}],
            "properties": {"names": list}}}})
    }

    #[test]
    fn a_walk_inside_a_walk_of_an_unbounded_list_is_refused() {
        let schema = rules_on(
            json!({"type": "array", "items": {"type": "string"}}),
            "self.names.all(x, self.names.exists(y, x == y))",
        );
        let errs = check(&schema);
        assert_eq!(
            errs[0].path,
            ".properties[spec].x-kubernetes-validations[0].rule"
        );
        assert!(errs[0]
            .message
            .starts_with("estimated rule cost exceeds budget by factor of more than 100x"));
        assert!(errs.last().unwrap().message.starts_with(
            "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema"
        ));
    }

    #[test]
    fn bounds_make_the_same_rule_affordable() {
        let schema = rules_on(
            json!({"type": "array", "maxItems": 50, "items": {"type": "string", "maxLength": 64}}),
            "self.names.all(x, self.names.exists(y, x == y))",
        );
        assert_eq!(check(&schema), vec![]);
    }

    #[test]
    fn simple_rules_on_unbounded_values_are_affordable() {
        for rule in [
            "self.names.size() < 10",
            "self.names.all(x, x.size() < 64)",
            "has(self.names) || self.names == oldSelf.names",
        ] {
            let schema = rules_on(json!({"type": "array", "items": {"type": "string"}}), rule);
            assert_eq!(check(&schema), vec![], "{rule}");
        }
    }

    #[test]
    fn a_rule_under_unbounded_lists_runs_once_per_item() {
        // A string check is cheap once, but it runs for every item of every list above it.
        let schema = json!({"type": "object", "properties": {"outer": {"type": "array", "items": {
            "type": "array", "items": {"type": "string",
                "x-kubernetes-validations": [{"rule": "self.matches('^[a-z]+$')"}]}}}}});
        let errs = check(&schema);
        assert_eq!(
            errs[0].path,
            ".properties[outer].items.items.x-kubernetes-validations[0].rule"
        );
        let bounded = json!({"type": "object", "properties": {"outer": {"type": "array", "maxItems": 10,
            "items": {"type": "array", "maxItems": 10, "items": {"type": "string", "maxLength": 63,
                "x-kubernetes-validations": [{"rule": "self.matches('^[a-z]+$')"}]}}}}});
        assert_eq!(check(&bounded), vec![]);
    }

    #[test]
    fn the_factor_is_worded_as_kubernetes_words_it() {
        assert!(over_budget("x", 25_000_000, RULE_LIMIT).contains("by factor of 2.5x (try"));
        assert!(over_budget("x", 12_000_000, RULE_LIMIT).contains("by factor of 1.200000x"));
        assert!(over_budget("x", u64::MAX, RULE_LIMIT).contains("by factor of more than 100x"));
    }
}
