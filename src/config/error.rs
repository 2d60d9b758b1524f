//! Config errors: every one names the file, the field path and the line (where
//! the parser knows it) and says what was expected.

use std::fmt;

/// What went wrong, coarsely; the message says the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The file could not be read.
    Io,
    /// Not valid YAML/JSON.
    Syntax,
    /// Valid YAML, but not a valid Envoy message (unknown field, wrong type…).
    Schema,
    /// A well-formed message that breaks one of Envoy's constraints.
    Invalid,
    /// A real Envoy field or extension that legate does not implement.
    NotSupported,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub kind: ErrorKind,
    /// The file the config came from ("--config-yaml" for the flag, empty if none).
    pub file: String,
    /// Field path such as `static_resources.clusters[1].connect_timeout`.
    pub path: String,
    /// 1-based line, 0 when unknown.
    pub line: u64,
    pub message: String,
}

impl ConfigError {
    pub fn new(kind: ErrorKind, path: &str, line: u64, message: impl Into<String>) -> Self {
        ConfigError {
            kind,
            file: String::new(),
            path: path.to_string(),
            line,
            message: message.into(),
        }
    }

    pub fn schema(path: &str, line: u64, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Schema, path, line, message)
    }

    pub fn invalid(path: &str, line: u64, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, path, line, message)
    }

    pub fn not_supported(path: &str, line: u64, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotSupported, path, line, message)
    }

    /// Attaches the file name (errors are built deep in the decoder, which
    /// does not know where its input came from).
    pub fn in_file(mut self, file: &str) -> Self {
        if self.file.is_empty() {
            self.file = file.to_string();
        }
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.file.is_empty() {
            write!(f, "{}", self.file)?;
            if self.line > 0 {
                write!(f, ":{}", self.line)?;
            }
            f.write_str(": ")?;
        } else if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        if self.kind == ErrorKind::NotSupported {
            f.write_str("not supported: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A legacy or ignored construct that still loads; logged at startup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// The file the construct is in (set by the loader).
    pub file: String,
    pub path: String,
    pub line: u64,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.file.is_empty() {
            write!(f, "{}", self.file)?;
            if self.line > 0 {
                write!(f, ":{}", self.line)?;
            }
            f.write_str(": ")?;
        } else if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Field-path helpers: `child("a.b", "c")` is `a.b.c`, `index("a", 2)` is `a[2]`.
pub fn child(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}
