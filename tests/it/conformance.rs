//! The conformance check: `legate --mode validate` on every real Envoy config
//! in the shared corpus, compared with the expectation table in
//! tests/conformance/expected.txt. The table is the honest record of what
//! loads: when an outcome changes (a feature lands, or breaks), this fails
//! until the table is updated (`LEGATE_UPDATE_CONFORMANCE=1 cargo test conformance`).

use std::path::Path;

use super::support::{conformance_dir, validate};

const TABLE: &str = "tests/conformance/expected.txt";

/// `OK`, or the error without its `<file>:<line>: ` prefix' file part.
fn outcome(path: &Path) -> String {
    let r = validate(path);
    if r.code == Some(0) {
        return "OK".to_string();
    }
    let prefix = format!("legate: error initializing configuration: {}:", path.display());
    let err = r
        .stderr
        .lines()
        .find(|l| l.starts_with("legate: "))
        .unwrap_or("(no error line)");
    match err.strip_prefix(&prefix) {
        Some(rest) => format!("line {rest}"),
        None => err.to_string(),
    }
}

#[test]
fn corpus_outcomes_match_the_expectation_table() {
    let dir = conformance_dir();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("read the corpus")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 20, "corpus has only {} files", files.len());
    let actual: String = files
        .iter()
        .map(|p| format!("{}\t{}\n", p.file_name().unwrap().to_string_lossy(), outcome(p)))
        .collect();
    let table_path = Path::new(env!("CARGO_MANIFEST_DIR")).join(TABLE);
    if std::env::var_os("LEGATE_UPDATE_CONFORMANCE").is_some() {
        std::fs::write(&table_path, &actual).expect("write the table");
    }
    let expected = std::fs::read_to_string(&table_path).unwrap_or_default();
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .filter(|l| !actual.lines().any(|a| a == *l))
            .map(|l| format!("- {l}"))
            .chain(
                actual
                    .lines()
                    .filter(|a| !expected.lines().any(|l| l == *a))
                    .map(|a| format!("+ {a}")),
            )
            .collect();
        panic!(
            "conformance outcomes changed (- table, + now); if intended, run LEGATE_UPDATE_CONFORMANCE=1 cargo test conformance\n{}",
            diff.join("\n")
        );
    }
}
