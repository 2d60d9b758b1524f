//! `POST /logging`: lists the loggers (legate's components) with their
//! levels and changes them, in Envoy's formats.
//!
//! Changing a level needs a way to swap the process's `tracing` filter,
//! which the binary owns: it registers one with [`set_reloader`] (a
//! `tracing_subscriber::reload` handle applying an `EnvFilter` directive
//! string). Without one, `/logging` lists the levels and refuses changes.

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use clap::Parser;

use super::{AdminState, Query, Reply};

/// Applies a complete `EnvFilter` directive string (`info,legate::http=debug`).
pub type Reloader = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

static RELOADER: OnceLock<Reloader> = OnceLock::new();

/// Registers the filter swap used by `/logging` (first call wins).
pub fn set_reloader(f: Reloader) {
    let _ = RELOADER.set(f);
}

/// legate's loggers: its top-level modules (what `--component-log-level`
/// names as `legate::<component>`).
const LOGGERS: &[&str] = &[
    "access_log",
    "admin",
    "cli",
    "config",
    "http",
    "model",
    "runtime",
    "stats",
];

/// Envoy's level names, in spdlog's order.
const LEVELS: &[&str] = &["trace", "debug", "info", "warning", "error", "critical", "off"];

struct Levels {
    /// The level of everything not named (other crates included).
    base: String,
    per_logger: BTreeMap<String, String>,
}

fn directive(level: &str) -> &'static str {
    match level {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" | "critical" => "error",
        _ => "off",
    }
}

fn levels(state: &AdminState) -> &'static Mutex<Levels> {
    static L: OnceLock<Mutex<Levels>> = OnceLock::new();
    L.get_or_init(|| {
        let (base, components) = match crate::cli::Args::try_parse_from(&state.args) {
            Ok(a) => (
                match a.log_level {
                    crate::cli::LogLevel::Trace => "trace",
                    crate::cli::LogLevel::Debug => "debug",
                    crate::cli::LogLevel::Info => "info",
                    crate::cli::LogLevel::Warning => "warning",
                    crate::cli::LogLevel::Error => "error",
                    crate::cli::LogLevel::Critical => "critical",
                    crate::cli::LogLevel::Off => "off",
                }
                .to_string(),
                a.component_log_level.unwrap_or_default(),
            ),
            Err(_) => ("info".to_string(), String::new()),
        };
        let mut per_logger: BTreeMap<String, String> =
            LOGGERS.iter().map(|l| (l.to_string(), base.clone())).collect();
        for part in components.split(',') {
            if let Some((c, l)) = part.split_once(':') {
                if let Some(slot) = per_logger.get_mut(c.trim()) {
                    *slot = l.trim().to_ascii_lowercase();
                }
            }
        }
        Mutex::new(Levels { base, per_logger })
    })
}

fn compose(l: &Levels) -> String {
    let mut d = directive(&l.base).to_string();
    for (name, level) in &l.per_logger {
        if directive(level) != directive(&l.base) {
            d.push_str(&format!(",legate::{name}={}", directive(level)));
        }
    }
    d
}

fn level_ok(s: &str) -> Option<String> {
    let s = s.to_ascii_lowercase();
    let s = if s == "warn" { "warning".to_string() } else { s };
    LEVELS.contains(&s.as_str()).then_some(s)
}

/// Applies the query's changes to a copy; Err is Envoy's error message.
fn apply(l: &mut Levels, q: &Query) -> Result<bool, String> {
    let mut changed = false;
    for (k, v) in &q.0 {
        match k.as_str() {
            "level" => {
                if v.is_empty() {
                    continue;
                }
                let lv = level_ok(v).ok_or_else(|| format!("unknown logger level: {v}"))?;
                l.base = lv.clone();
                for slot in l.per_logger.values_mut() {
                    *slot = lv.clone();
                }
                changed = true;
            }
            "paths" => {
                for pair in v.split(',').filter(|p| !p.is_empty()) {
                    let (name, lv) = pair
                        .split_once(':')
                        .ok_or_else(|| format!("invalid paths entry: {pair}"))?;
                    let lv = level_ok(lv).ok_or_else(|| format!("unknown logger level: {lv}"))?;
                    let slot = l
                        .per_logger
                        .get_mut(name)
                        .ok_or_else(|| format!("unknown logger name: {name}"))?;
                    *slot = lv;
                    changed = true;
                }
            }
            name => {
                let lv = level_ok(v).ok_or_else(|| format!("unknown logger level: {v}"))?;
                let slot = l
                    .per_logger
                    .get_mut(name)
                    .ok_or_else(|| format!("unknown logger name: {name}"))?;
                *slot = lv;
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// `POST /logging[?level=..|?paths=..|?<name>=<level>]`.
pub fn logging(state: &AdminState, q: &Query) -> Reply {
    let lock = levels(state);
    let mut cur = lock.lock().unwrap_or_else(|e| e.into_inner());
    let mut next = Levels {
        base: cur.base.clone(),
        per_logger: cur.per_logger.clone(),
    };
    let mut out = String::new();
    let mut code = 200;
    let result = apply(&mut next, q).and_then(|changed| {
        if !changed {
            return Ok(());
        }
        let reload = RELOADER
            .get()
            .ok_or("changing log levels at runtime is not supported yet by this legate build")?;
        reload(&compose(&next))?;
        *cur = next;
        Ok(())
    });
    if let Err(e) = result {
        code = 404;
        out.push_str(&format!("error: {e}\n\n"));
        out.push_str(
            "usage: /logging?<name>=<level> (change single level)\n\
             usage: /logging?paths=name1:level1,name2:level2,... (change multiple levels)\n\
             usage: /logging?level=<level> (change all levels)\n",
        );
        out.push_str("levels: ");
        for l in LEVELS {
            out.push_str(l);
            out.push(' ');
        }
        out.push('\n');
    }
    out.push_str("active loggers:\n");
    for (name, level) in &cur.per_logger {
        out.push_str(&format!("  {name}: {level}\n"));
    }
    out.push('\n');
    Reply::text(code, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Levels {
        Levels {
            base: "info".into(),
            per_logger: LOGGERS
                .iter()
                .map(|l| (l.to_string(), "info".to_string()))
                .collect(),
        }
    }

    #[test]
    fn changes_and_directives() {
        let mut l = fresh();
        assert_eq!(apply(&mut l, &Query::parse("/logging")), Ok(false));
        assert_eq!(compose(&l), "info");
        assert_eq!(apply(&mut l, &Query::parse("/logging?http=debug")), Ok(true));
        assert_eq!(compose(&l), "info,legate::http=debug");
        apply(&mut l, &Query::parse("/logging?paths=config:trace,admin:warning")).expect("ok");
        assert_eq!(
            compose(&l),
            "info,legate::admin=warn,legate::config=trace,legate::http=debug"
        );
        apply(&mut l, &Query::parse("/logging?level=error")).expect("ok");
        assert_eq!(compose(&l), "error");
        assert!(apply(&mut l, &Query::parse("/logging?nope=debug")).is_err());
        assert!(apply(&mut l, &Query::parse("/logging?level=loud")).is_err());
    }
}
