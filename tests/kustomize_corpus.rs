//! Kustomize's own end-to-end cases (`tests/fixtures/kustomize`, from kustomize's `api/krusty` tests; see its
//! README): every case is built with Capstan's kustomize as `kubectl kustomize` would build it (same flags) and must
//! print exactly kustomize's output, or fail with kustomize's error text. The cases Capstan does not match yet are
//! listed in `GAPS`, each with why; a listed case that starts passing fails the test too, so the list stays true.

use std::path::{Path, PathBuf};

use capstan::gitops::kustomize::{self, Options, Reorder, Tree};

/// Cases Capstan's kustomize does not reproduce yet (none now; a case listed here that starts passing fails the
/// test, so the list stays exact).
const GAPS: &[&str] = &[];

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kustomize/cases")
}

fn load(root: &Path, at: &Path, tree: &mut Tree) {
    for e in std::fs::read_dir(at).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            load(root, &p, tree);
        } else {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            tree.insert(rel, std::fs::read(&p).unwrap());
        }
    }
}

/// Builds one case: Ok(()) when it matches kustomize, else what differs.
fn run(case: &Path) -> Result<(), String> {
    let spec: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(case.join("case.yaml")).unwrap()).unwrap();
    let input = case.join("input");
    let mut tree = Tree::new();
    load(&input, &input, &mut tree);
    let build = spec["build"].as_str().unwrap();
    let dir = build.strip_prefix("input").unwrap().trim_start_matches('/');
    let flags: Vec<&str> = spec["flags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str())
        .collect();
    let opts = Options {
        reorder: if flags.contains(&"--reorder=none") {
            Reorder::None
        } else {
            Reorder::Legacy
        },
        load_anywhere: flags.contains(&"--load-restrictor=LoadRestrictionsNone"),
    };
    let got = kustomize::build_with(&tree, dir, &opts).map(|r| kustomize::to_yaml(&r));
    match spec["expect"].as_str().unwrap() {
        "output" => {
            let want = std::fs::read_to_string(case.join("expected.yaml")).unwrap();
            match got {
                Ok(g) if g == want => Ok(()),
                Ok(g) => Err(first_difference(&want, &g)),
                Err(e) => Err(format!("failed: {}", e[0])),
            }
        }
        _ => {
            let want = std::fs::read_to_string(case.join("expected-error.txt")).unwrap();
            match got {
                Ok(_) => Err(format!("built, but kustomize fails with {want:?}")),
                Err(e) => {
                    let all: Vec<String> = e.iter().map(ToString::to_string).collect();
                    if all.iter().any(|m| m.contains(want.trim())) {
                        Ok(())
                    } else {
                        Err(format!(
                            "error {:?}, kustomize's contains {want:?}",
                            all.join("; ")
                        ))
                    }
                }
            }
        }
    }
}

fn first_difference(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    let at = w
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(w.len().min(g.len()));
    format!(
        "line {}: want {:?}, got {:?}",
        at + 1,
        w.get(at).unwrap_or(&"<end>"),
        g.get(at).unwrap_or(&"<end>")
    )
}

#[test]
fn kustomize_corpus_builds_as_kustomize_builds() {
    let mut names: Vec<String> = std::fs::read_dir(cases())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let (mut passed, mut unexpected, mut fixed) = (0, Vec::new(), Vec::new());
    for n in &names {
        let out = std::panic::catch_unwind(|| run(&cases().join(n)))
            .unwrap_or_else(|_| Err("panicked".into()));
        let gap = GAPS.contains(&n.as_str());
        match out {
            Ok(()) => {
                passed += 1;
                if gap {
                    fixed.push(n.clone());
                }
            }
            Err(e) if !gap => unexpected.push(format!("{n}: {e}")),
            Err(e) => eprintln!("known gap {n}: {e}"),
        }
    }
    eprintln!(
        "kustomize corpus: {passed} of {} cases match kustomize",
        names.len()
    );
    assert!(
        unexpected.is_empty() && fixed.is_empty(),
        "{} cases differ from kustomize:\n{}\nlisted in GAPS but now pass: {fixed:?}",
        unexpected.len(),
        unexpected.join("\n")
    );
}
