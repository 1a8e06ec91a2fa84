//! The import rules of ARCHITECTURE.md ("Who may import whom"), checked on the source: every `crate::<module>` a
//! library module names (outside comments) must be one its row allows, or one of the known exceptions listed here -
//! so a new dependency against the design fails this test instead of creeping in.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

const MODULES: &[&str] = &[
    "api",
    "store",
    "apiserver",
    "client",
    "runtime",
    "controllers",
    "daemons",
    "scheduler",
    "node",
    "proxy",
    "cloud",
    "gitops",
    "image",
    "sys",
    "fuzzing",
];

/// What each module may use (its own paths aside).
fn allowed(module: &str) -> &'static [&'static str] {
    match module {
        "sys" => &[],
        "api" | "store" => &["sys"],
        "image" => &["api", "sys"],
        "apiserver" => &["api", "store", "sys"],
        "client" => &["api", "sys"],
        "runtime" => &["api", "client", "sys"],
        "controllers" => &["api", "client", "runtime", "sys", "scheduler"],
        "scheduler" | "cloud" | "gitops" => &["api", "client", "runtime", "sys"],
        "proxy" => &["api", "client", "runtime", "sys"],
        "node" => &["api", "client", "runtime", "image", "sys"],
        "daemons" => &[
            "api",
            "client",
            "runtime",
            "sys",
            "controllers",
            "scheduler",
            "cloud",
            "gitops",
            "node",
            "proxy",
            "image",
            "apiserver",
            "store",
        ],
        "fuzzing" => &["api", "apiserver", "store", "gitops", "client"],
        other => panic!("no rule for module {other}"),
    }
}

/// Imports that run against the rules today, each to be removed (ARCHITECTURE.md, "Known exceptions"): (importing
/// module, imported path prefix).
const KNOWN_EXCEPTIONS: &[(&str, &str)] = &[];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Every `crate::a::b` path named in code (comments skipped) of one module's files.
fn imports(module: &str) -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let dir = root.join(module);
    if dir.is_dir() {
        rust_files(&dir, &mut files);
    } else {
        files.push(root.join(format!("{module}.rs")));
    }
    let mut out = BTreeSet::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let path: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                out.insert(path.trim_end_matches(':').to_string());
            }
        }
    }
    out
}

#[test]
fn modules_import_only_what_architecture_md_allows() {
    let mut violations = Vec::new();
    for module in MODULES {
        for path in imports(module) {
            let top = path.split("::").next().unwrap_or("");
            if top == *module || !MODULES.contains(&top) {
                continue;
            }
            let excepted = KNOWN_EXCEPTIONS
                .iter()
                .any(|(m, p)| m == module && path.starts_with(p));
            if !allowed(module).contains(&top) && !excepted {
                violations.push(format!("src/{module} uses crate::{path}"));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against ARCHITECTURE.md:\n{}",
        violations.join("\n")
    );
}

#[test]
fn known_exceptions_are_still_real() {
    // An exception that no longer occurs must leave the list (and ARCHITECTURE.md), so the list stays true.
    for (module, prefix) in KNOWN_EXCEPTIONS {
        assert!(
            imports(module).iter().any(|p| p.starts_with(prefix)),
            "src/{module} no longer uses crate::{prefix}: remove it from KNOWN_EXCEPTIONS and ARCHITECTURE.md"
        );
    }
}

#[test]
fn the_cli_starts_processes_through_daemons_never_the_store_or_api_server() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("cli"),
        &mut files,
    );
    let mut violations = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("capstan::store") || code.contains("capstan::apiserver") {
                violations.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "cli/ uses the store or the API server directly (ARCHITECTURE.md):\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_terminal_ui_never_touches_the_store() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tui/src"),
        &mut files,
    );
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            !text.contains("capstan::store"),
            "{} uses the store; clients talk to the API server",
            f.display()
        );
    }
}
