//! Helpers shared by the integration tests: running the real `legate`
//! binary and writing config files to a private temp directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `legate` binary cargo built for this test run.
pub fn legate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_legate"))
}

/// Result of one `legate` run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn run(args: &[&str]) -> Run {
    Command::new(legate_bin())
        .args(args)
        .output()
        .expect("the legate binary runs")
        .into()
}

/// A temp dir holding config files; removed on drop.
pub struct Dir(pub tempfile::TempDir);

impl Dir {
    pub fn new() -> Dir {
        Dir(tempfile::tempdir().expect("temp dir"))
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, text).expect("write config");
        p
    }
}

/// `legate --mode validate -c <path>`.
pub fn validate(path: &Path) -> Run {
    run(&["--mode", "validate", "-c", path.to_str().expect("utf-8 path")])
}

/// The shared conformance corpus (`../shared/conformance/envoy-examples`),
/// or `LEGATE_CONFORMANCE_DIR`. Missing is a test failure, not a skip.
pub fn conformance_dir() -> PathBuf {
    if let Ok(d) = std::env::var("LEGATE_CONFORMANCE_DIR") {
        return PathBuf::from(d);
    }
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/envoy-examples");
    assert!(
        d.is_dir(),
        "conformance corpus not found at {} (set LEGATE_CONFORMANCE_DIR)",
        d.display()
    );
    d
}
