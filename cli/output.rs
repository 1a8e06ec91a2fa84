//! Output printers: kubectl-style tables from the server's Table responses, and describe.

use capstan::api::registry::KindInfo;
use serde_json::Value;

/// The Accept header kubectl sends for tables.
pub const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

/// Renders a Table like kubectl: upper-case headers, columns padded with three spaces.
pub fn render_table(
    table: &Value,
    kind: &KindInfo,
    wide: bool,
    with_namespace: bool,
    with_kind: bool,
) -> String {
    let defs = table["columnDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let keep: Vec<usize> = defs
        .iter()
        .enumerate()
        .filter(|(_, d)| wide || d["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<String> = Vec::new();
    if with_namespace {
        header.push("NAMESPACE".into());
    }
    header.extend(
        keep.iter()
            .map(|i| defs[*i]["name"].as_str().unwrap_or("").to_ascii_uppercase()),
    );
    rows.push(header);
    let prefix = if kind.group.is_empty() {
        kind.singular.to_string()
    } else {
        format!("{}.{}", kind.singular, kind.group)
    };
    for r in table["rows"].as_array().into_iter().flatten() {
        let cells = r["cells"].as_array().cloned().unwrap_or_default();
        let mut row = Vec::new();
        if with_namespace {
            row.push(
                r.pointer("/object/metadata/namespace")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            );
        }
        for (j, i) in keep.iter().enumerate() {
            let mut text = cells.get(*i).map(cell).unwrap_or_default();
            if j == 0 && with_kind && defs[*i]["format"] == "name" {
                text = format!("{prefix}/{text}");
            }
            row.push(text);
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, text) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(text);
            } else {
                line.push_str(&format!("{:<w$}   ", text, w = widths[c]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
