//! A build's output: the order (`sortOptions`, else the caller's `--reorder`: kustomize's legacy order or the order
//! of accumulation) and the YAML text, written as kustomize writes it (keys sorted, sequences at their key's
//! indentation, each string in the style go-yaml chooses: plain, single- or double-quoted or a literal block, long
//! lines folded at 80 columns) so `capstan kustomize` prints what `kubectl kustomize` prints, byte for byte.
//! Also reading YAML texts the way kustomize does (one value per document).

use serde::Deserialize;
use serde_json::Value;

use super::resource::Res;

/// The order of a build's output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reorder {
    /// Kustomize's legacy order: Namespaces and other kinds others depend on first, webhooks last.
    Legacy,
    /// The order the kustomization accumulated them.
    None,
}

/// Resolved sort: None keeps the order; Some((first, last)) sorts legacy-style with those kind lists.
pub(super) type Order = Option<(Vec<String>, Vec<String>)>;

const FIRST: &[&str] = &[
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];
const LAST: &[&str] = &[
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// The order `sortOptions` asks for, else the caller's.
pub(super) fn order_of(sort: &Value, reorder: Reorder) -> Result<Order, String> {
    let owned = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    if sort.is_null() {
        return Ok(match reorder {
            Reorder::Legacy => Some((owned(FIRST), owned(LAST))),
            Reorder::None => None,
        });
    }
    match sort["order"].as_str() {
        Some("fifo") => {
            if !sort["legacySortOptions"].is_null() {
                return Err("the field 'sortOptions.legacySortOptions' is set but the selected sort order is 'fifo', not 'legacy'".into());
            }
            Ok(None)
        }
        Some("legacy") => {
            let o = &sort["legacySortOptions"];
            if o.is_null() {
                return Ok(Some((owned(FIRST), owned(LAST))));
            }
            let list = |f: &str| -> Vec<String> {
                o[f].as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            Ok(Some((list("orderFirst"), list("orderLast"))))
        }
        _ => Err("the field 'sortOptions.order' must be one of [fifo, legacy]".into()),
    }
}

/// Sorts a build's objects as `order` says.
pub(super) fn sort(res: &mut [Res], order: &Order) {
    let Some((first, last)) = order else { return };
    let rank = |k: &str| -> i64 {
        if let Some(i) = first.iter().position(|f| f == k) {
            return i as i64 - first.len() as i64;
        }
        last.iter().position(|l| l == k).map_or(0, |i| 1 + i as i64)
    };
    let gvk_string = |r: &Res| {
        let (g, v) = r.group_version();
        let or = |s: &str, d: &str| {
            if s.is_empty() {
                d.to_string()
            } else {
                s.to_string()
            }
        };
        format!("{}_{}_{}", or(g, "~G"), or(v, "~V"), or(r.kind(), "~K"))
    };
    let id_string = |r: &Res| {
        let id = r.id();
        let or = |s: &str, d: &str| {
            if s.is_empty() {
                d.to_string()
            } else {
                s.to_string()
            }
        };
        let gvk = format!(
            "{}.{}.{}",
            id.kind,
            or(&id.version, "[noVer]"),
            or(&id.group, "[noGrp]")
        );
        format!("{gvk}|{}|{}", or(&id.namespace, "~X"), or(&id.name, "~N"))
    };
    res.sort_by(|a, b| {
        let same_gvk = a.api_version() == b.api_version() && a.kind() == b.kind();
        if !same_gvk {
            let (ra, rb) = (rank(a.kind()), rank(b.kind()));
            if ra != rb {
                return ra.cmp(&rb);
            }
            let (ga, gb) = (gvk_string(a), gvk_string(b));
            if a.kind() == "Namespace"
                && b.kind() == "Namespace"
                && (a.group_version().0.is_empty() || b.group_version().0.is_empty())
            {
                return gb.cmp(&ga);
            }
            return ga.cmp(&gb);
        }
        id_string(a).cmp(&id_string(b))
    });
}

/// The documents of a YAML (or JSON) text; empty documents are null.
pub(super) fn yaml_docs(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(text) {
        let v = Value::deserialize(de).map_err(yaml_error)?;
        out.push(v);
    }
    Ok(out)
}

/// A YAML error in go-yaml's words where they differ (some tools match on them).
pub(super) fn yaml_error(e: serde_yaml_ng::Error) -> String {
    let s = e.to_string();
    if let Some((_, rest)) = s.split_once("duplicate entry with key ") {
        let key = rest.split(" at ").next().unwrap_or(rest);
        return format!("mapping key {key} already defined ({s})");
    }
    s
}

/// The objects as `kubectl kustomize` prints them: YAML documents separated by `---`.
pub fn to_yaml(res: &[Res]) -> String {
    let docs: Vec<String> = res
        .iter()
        .map(|r| {
            let mut out = String::new();
            Emitter { out: &mut out }.doc(&r.object);
            out
        })
        .collect();
    docs.join("---\n")
}

const WIDTH: usize = 80;

struct Emitter<'o> {
    out: &'o mut String,
}

impl Emitter<'_> {
    fn column(&self) -> usize {
        let line = self.out.rsplit('\n').next().unwrap_or("");
        line.chars().count()
    }

    /// Starts a line at `col` (unless the output is at the start of a line already).
    fn line(&mut self, col: usize) {
        if !self.out.is_empty() {
            self.out.push('\n');
        }
        self.out.push_str(&" ".repeat(col));
    }

    /// A document: its value and a final line break.
    fn doc(&mut self, v: &Value) {
        match v {
            Value::Object(m) if !m.is_empty() => self.map(m, 0, false),
            Value::Array(a) if !a.is_empty() => self.seq(a, 0, false),
            other => self.scalar(other, 2),
        }
        self.out.push('\n');
    }

    /// A mapping with its keys at `col`; with `inline_first`, the first key continues the current line (`- key:`).
    fn map(&mut self, m: &serde_json::Map<String, Value>, col: usize, inline_first: bool) {
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        for (i, k) in keys.into_iter().enumerate() {
            if i > 0 || !inline_first {
                self.line(col);
            }
            self.key(k);
            self.out.push(':');
            match &m[k] {
                Value::Object(c) if !c.is_empty() => self.map(c, col + 2, false),
                // A sequence under a key starts at the key's column.
                Value::Array(a) if !a.is_empty() => self.seq(a, col, false),
                other => {
                    self.out.push(' ');
                    self.scalar(other, col + 2);
                }
            }
        }
    }

    /// A sequence with its dashes at `col`.
    fn seq(&mut self, a: &[Value], col: usize, inline_first: bool) {
        for (i, item) in a.iter().enumerate() {
            if i > 0 || !inline_first {
                self.line(col);
            }
            self.out.push_str("- ");
            match item {
                Value::Object(c) if !c.is_empty() => self.map(c, col + 2, true),
                Value::Array(x) if !x.is_empty() => self.seq(x, col + 2, true),
                other => self.scalar(other, col + 2),
            }
        }
    }

    fn key(&mut self, k: &str) {
        let a = analyze(k);
        let plain_ok = needs_no_tag(k) && a.block_plain && !a.multiline && !k.is_empty();
        if plain_ok {
            self.out.push_str(k);
        } else if a.single && !a.multiline && !k.is_empty() {
            self.single(k, usize::MAX, false);
        } else {
            self.double(k, usize::MAX, false);
        }
    }

    /// A scalar; `indent` is where folded continuation lines and block content start.
    fn scalar(&mut self, v: &Value, indent: usize) {
        match v {
            Value::Null => self.out.push_str("null"),
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => self.out.push_str(&n.to_string()),
            Value::Object(_) => self.out.push_str("{}"),
            Value::Array(_) => self.out.push_str("[]"),
            Value::String(s) => self.string(s, indent),
        }
    }

    fn string(&mut self, s: &str, indent: usize) {
        let a = analyze(s);
        if s.contains('\n') && needs_no_tag_or_any(s) {
            if a.block {
                return self.literal(s, indent);
            }
            return self.double(s, indent, true);
        }
        if needs_no_tag(s) && a.block_plain && !s.is_empty() {
            return self.plain(s, indent);
        }
        if !needs_no_tag(s) {
            // go-yaml asks for double quotes for a string that would read as another type.
            return self.double(s, indent, true);
        }
        if a.single {
            return self.single(s, indent, true);
        }
        self.double(s, indent, true)
    }

    fn write_indent(&mut self, indent: usize) {
        self.out.push('\n');
        self.out.push_str(&" ".repeat(indent));
    }

    fn plain(&mut self, s: &str, indent: usize) {
        let chars: Vec<char> = s.chars().collect();
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                if !spaces && self.column() > WIDTH && i + 1 < chars.len() && chars[i + 1] != ' ' {
                    self.write_indent(indent);
                } else {
                    self.out.push(c);
                }
                spaces = true;
            } else {
                self.out.push(c);
                spaces = false;
            }
        }
    }

    fn single(&mut self, s: &str, indent: usize, breaks_ok: bool) {
        self.out.push('\'');
        let chars: Vec<char> = s.chars().collect();
        let (mut spaces, mut breaks) = (false, false);
        for (i, &c) in chars.iter().enumerate() {
            if c == ' ' {
                if breaks_ok
                    && !spaces
                    && self.column() > WIDTH
                    && i != 0
                    && i + 1 != chars.len()
                    && chars[i + 1] != ' '
                {
                    self.write_indent(indent);
                } else {
                    self.out.push(c);
                }
                spaces = true;
            } else if c == '\n' {
                if !breaks {
                    self.out.push('\n');
                }
                self.out.push('\n');
                breaks = true;
            } else {
                if breaks {
                    self.out.push_str(&" ".repeat(indent));
                }
                if c == '\'' {
                    self.out.push_str("''");
                } else {
                    self.out.push(c);
                }
                spaces = false;
                breaks = false;
            }
        }
        self.out.push('\'');
    }

    fn double(&mut self, s: &str, indent: usize, breaks_ok: bool) {
        self.out.push('"');
        let chars: Vec<char> = s.chars().collect();
        let mut spaces = false;
        for (i, &c) in chars.iter().enumerate() {
            if !printable(c) || c == '\u{feff}' || is_break(c) || c == '"' || c == '\\' {
                self.out.push('\\');
                match c {
                    '\0' => self.out.push('0'),
                    '\u{7}' => self.out.push('a'),
                    '\u{8}' => self.out.push('b'),
                    '\t' => self.out.push('t'),
                    '\n' => self.out.push('n'),
                    '\u{b}' => self.out.push('v'),
                    '\u{c}' => self.out.push('f'),
                    '\r' => self.out.push('r'),
                    '\u{1b}' => self.out.push('e'),
                    '"' => self.out.push('"'),
                    '\\' => self.out.push('\\'),
                    '\u{85}' => self.out.push('N'),
                    '\u{a0}' => self.out.push('_'),
                    '\u{2028}' => self.out.push('L'),
                    '\u{2029}' => self.out.push('P'),
                    c if (c as u32) <= 0xff => self.out.push_str(&format!("x{:02X}", c as u32)),
                    c if (c as u32) <= 0xffff => self.out.push_str(&format!("u{:04X}", c as u32)),
                    c => self.out.push_str(&format!("U{:08X}", c as u32)),
                }
                spaces = false;
            } else if c == ' ' {
                if breaks_ok && !spaces && self.column() > WIDTH && i != 0 && i + 1 != chars.len() {
                    self.write_indent(indent);
                    if chars[i + 1] == ' ' {
                        self.out.push('\\');
                    }
                } else {
                    self.out.push(c);
                }
                spaces = true;
            } else {
                self.out.push(c);
                spaces = false;
            }
        }
        self.out.push('"');
    }

    fn literal(&mut self, s: &str, indent: usize) {
        self.out.push('|');
        let chars: Vec<char> = s.chars().collect();
        if chars.first().is_some_and(|&c| c == ' ' || is_break(c)) {
            self.out.push('2');
        }
        let n = chars.len();
        if !is_break(chars[n - 1]) {
            self.out.push('-');
        } else if n == 1 || is_break(chars[n - 2]) {
            self.out.push('+');
        }
        let mut breaks = true;
        self.out.push('\n');
        let mut at_line_start = true;
        // The final line break is the one that ends the line of the next key (or the document).
        let body = if is_break(chars[n - 1]) {
            &chars[..n - 1]
        } else {
            &chars[..]
        };
        for &c in body {
            if is_break(c) {
                self.out.push('\n');
                breaks = true;
                at_line_start = true;
            } else {
                if breaks && at_line_start {
                    self.out.push_str(&" ".repeat(indent));
                }
                self.out.push(c);
                breaks = false;
                at_line_start = false;
            }
        }
    }
}

fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// go-yaml's printable characters (a tab is not; characters beyond the Basic Multilingual Plane are not).
fn printable(c: char) -> bool {
    let u = c as u32;
    u == 0x0a
        || (0x20..=0x7e).contains(&u)
        || (0xa0..=0xd7ff).contains(&u)
        || ((0xe000..=0xfffd).contains(&u) && u != 0xfeff)
}

/// Which styles a string may be written in, as libyaml's emitter decides.
struct Analysis {
    multiline: bool,
    block_plain: bool,
    single: bool,
    block: bool,
}

fn analyze(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            multiline: false,
            block_plain: true,
            single: true,
            block: false,
        };
    }
    let chars: Vec<char> = s.chars().collect();
    let (mut block_ind, mut special, mut line_breaks) = (false, false, false);
    let (mut leading_space, mut leading_break, mut trailing_space, mut trailing_break) =
        (false, false, false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut prev_space, mut prev_break) = (false, false);
    if s.starts_with("---") || s.starts_with("...") {
        block_ind = true;
    }
    let mut preceded_ws = true;
    for (i, &c) in chars.iter().enumerate() {
        let next = chars.get(i + 1).copied();
        let followed_ws = next.is_none_or(|n| n == ' ' || n == '\t' || is_break(n));
        if i == 0 {
            match c {
                '#' | ',' | '[' | ']' | '{' | '}' | '&' | '*' | '!' | '|' | '>' | '\'' | '"'
                | '%' | '@' | '`' => block_ind = true,
                '?' | ':' if followed_ws => block_ind = true,
                '-' if followed_ws => block_ind = true,
                _ => {}
            }
        } else {
            match c {
                ':' if followed_ws => block_ind = true,
                '#' if preceded_ws => block_ind = true,
                _ => {}
            }
        }
        if !printable(c) && !is_break(c) || c == '\u{feff}' {
            special = true;
        }
        if is_break(c) {
            line_breaks = true;
        }
        if c == ' ' {
            if i == 0 {
                leading_space = true;
            }
            if i + 1 == chars.len() {
                trailing_space = true;
            }
            if prev_break {
                break_space = true;
            }
            prev_space = true;
            prev_break = false;
        } else if is_break(c) {
            if i == 0 {
                leading_break = true;
            }
            if i + 1 == chars.len() {
                trailing_break = true;
            }
            if prev_space {
                space_break = true;
            }
            prev_break = true;
            prev_space = false;
        } else {
            prev_space = false;
            prev_break = false;
        }
        preceded_ws = c == ' ' || c == '\t' || is_break(c);
    }
    let mut a = Analysis {
        multiline: line_breaks,
        block_plain: true,
        single: true,
        block: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.block_plain = false;
    }
    if trailing_space {
        a.block = false;
    }
    if break_space {
        a.block_plain = false;
        a.single = false;
    }
    if space_break || special {
        a.block_plain = false;
        a.single = false;
        a.block = false;
    }
    if line_breaks {
        a.block_plain = false;
    }
    if block_ind {
        a.block_plain = false;
    }
    a
}

/// A string go-yaml may write without quotes as far as types go: it would not read back as a number, a boolean
/// or null (YAML 1.1's old booleans and sexagesimal floats included).
fn needs_no_tag(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    let reserved = [
        "true", "false", "null", "~", "y", "yes", "n", "no", "on", "off", ".inf", "-.inf", "+.inf",
        ".nan",
    ];
    if reserved.contains(&lower.as_str())
        && (s == lower || s == s.to_ascii_uppercase() || capitalized(s))
    {
        return false;
    }
    !looks_numeric(s)
}

fn needs_no_tag_or_any(_s: &str) -> bool {
    true
}

fn capitalized(s: &str) -> bool {
    let mut c = s.chars();
    c.next().is_some_and(|f| f.is_ascii_uppercase())
        && c.as_str() == c.as_str().to_ascii_lowercase()
}

/// Whether a string reads as a number in YAML (ints in decimal, octal `0o`, hex `0x`, binary `0b`, floats,
/// sexagesimal `1:20`, with `_` separators).
fn looks_numeric(s: &str) -> bool {
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    if t.is_empty() {
        return false;
    }
    let t2 = t.replace('_', "");
    if let Some(h) = t2.strip_prefix("0x") {
        return !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit());
    }
    if let Some(o) = t2.strip_prefix("0o") {
        return !o.is_empty() && o.chars().all(|c| ('0'..='7').contains(&c));
    }
    if let Some(b) = t2.strip_prefix("0b") {
        return !b.is_empty() && b.chars().all(|c| c == '0' || c == '1');
    }
    if t2.chars().all(|c| c.is_ascii_digit()) {
        return true;
    }
    // Sexagesimal: digits groups separated by ':' (YAML 1.1).
    if t.contains(':') && !t.starts_with(':') {
        let parts: Vec<&str> = t.split(':').collect();
        if parts.iter().skip(1).all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_digit() || c == '_' || c == '.')
        }) && parts[0].chars().all(|c| c.is_ascii_digit() || c == '_')
            && !parts[0].is_empty()
        {
            return true;
        }
    }
    // Floats: digits with one '.', optional exponent.
    let (mant, exp) = match t2.find(['e', 'E']) {
        Some(i) => (&t2[..i], Some(&t2[i + 1..])),
        None => (t2.as_str(), None),
    };
    let mant_ok = {
        let (a, b) = mant.split_once('.').unwrap_or((mant, ""));
        let digits = |x: &str| x.chars().all(|c| c.is_ascii_digit());
        (mant.contains('.') || exp.is_some())
            && digits(a)
            && digits(b)
            && !(a.is_empty() && b.is_empty())
    };
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.chars().all(|c| c.is_ascii_digit())
    });
    mant_ok && exp_ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn yaml(v: Value) -> String {
        to_yaml(&[Res::new("x", 1, v)])
    }

    #[test]
    fn writes_as_kustomize_writes() {
        assert_eq!(
            yaml(json!({"kind": "Pod", "spec": {"containers": [{"name": "a", "args": ["x", "1", "true"]}]}, "metadata": {"labels": {}}})),
            "kind: Pod\nmetadata:\n  labels: {}\nspec:\n  containers:\n  - args:\n    - x\n    - \"1\"\n    - \"true\"\n    name: a\n"
        );
        assert_eq!(
            yaml(json!({"a": "*/1 * * * *", "b": "", "c": "x\ny\n", "d": "it's"})),
            "a: '*/1 * * * *'\nb: \"\"\nc: |\n  x\n  y\nd: it's\n"
        );
        assert_eq!(
            yaml(json!({"a": [[1, 2], {"b": [3]}]})),
            "a:\n- - 1\n  - 2\n- b:\n  - 3\n"
        );
    }
}
