//! The fuzz corpora replayed as ordinary tests: every input kept in `fuzz/corpus/<target>/` (seeds and what
//! `cargo fuzz` found interesting) and `fuzz/regressions/<target>/` (inputs that once crashed or hung a target) runs
//! through the same entry the fuzzer calls, `capstan::fuzzing::run`. None may panic or take more than 10 s.

use std::path::Path;
use std::time::Duration;

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_fuzz_corpus_input_runs_without_panic_or_hang() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut failures = Vec::new();
    for target in capstan::fuzzing::TARGETS {
        let seeds = inputs(&root.join("corpus").join(target));
        assert!(!seeds.is_empty(), "no corpus for fuzz target {target}");
        let regressions = inputs(&root.join("regressions").join(target));
        for file in seeds.into_iter().chain(regressions) {
            let data = std::fs::read(&file).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let t = target.to_string();
            std::thread::spawn(move || {
                let r = std::panic::catch_unwind(|| capstan::fuzzing::run(&t, &data));
                let _ = tx.send(r.is_ok());
            });
            match rx.recv_timeout(Duration::from_secs(10)) {
                Ok(true) => {}
                Ok(false) => failures.push(format!("{target}: {} panicked", file.display())),
                Err(_) => failures.push(format!("{target}: {} ran over 10 s", file.display())),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
