//! Command-line options, compatible with Envoy's (`envoy --help`): a user can
//! swap `envoy` for `legate` in a command line or a Dockerfile.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Load the config and serve traffic (default).
    Serve,
    /// Load and check the config, print `configuration '<path>' OK` and exit.
    Validate,
    /// Load the config and initialise, then exit (as Envoy's init_only).
    #[value(name = "init_only")]
    InitOnly,
}

/// Envoy's log levels; `warn` is accepted for `warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    #[value(alias = "warn")]
    Warning,
    Error,
    Critical,
    Off,
}

impl LogLevel {
    /// The `tracing` filter directive for this level.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warn",
            LogLevel::Error | LogLevel::Critical => "error",
            LogLevel::Off => "off",
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "legate",
    version,
    // A flag given twice takes the last value (wrapper scripts append flags).
    args_override_self = true,
    about = "legate: an Envoy-compatible sidecar and front proxy",
    long_about = "legate: an Envoy-compatible sidecar and front proxy.\n\nRun it where you ran envoy: `legate -c front-envoy.yaml`. The options below are Envoy's."
)]
pub struct Args {
    /// Path to the bootstrap config (.yaml, .yml or .json).
    #[arg(short = 'c', long = "config-path", value_name = "PATH")]
    pub config_path: Option<PathBuf>,

    /// Bootstrap YAML merged over the config file (protobuf merge: scalars
    /// replaced, messages merged, lists appended), as in Envoy.
    #[arg(long = "config-yaml", value_name = "YAML")]
    pub config_yaml: Option<String>,

    /// serve: run; validate: check the config and exit; init_only: initialise and exit.
    #[arg(long, value_enum, default_value = "serve")]
    pub mode: Mode,

    /// With --mode validate: print the effective config, in its v3 form, as YAML
    /// (upgrades a v2 file).
    #[arg(long = "print-config")]
    pub print_config: bool,

    /// Log level: trace, debug, info, warning (warn), error, critical, off.
    #[arg(
        short = 'l',
        long = "log-level",
        value_enum,
        default_value = "info",
        ignore_case = true
    )]
    pub log_level: LogLevel,

    /// Per-component levels, e.g. `upstream:debug,config:trace` (Envoy's syntax).
    #[arg(long = "component-log-level", value_name = "COMPONENT:LEVEL,...")]
    pub component_log_level: Option<String>,

    /// Write logs to this file instead of stderr.
    #[arg(long = "log-path", value_name = "PATH")]
    pub log_path: Option<PathBuf>,

    /// Number of data-plane worker threads (default: number of cores).
    #[arg(long)]
    pub concurrency: Option<usize>,

    /// Node id (overrides the bootstrap's node.id).
    #[arg(long = "service-node")]
    pub service_node: Option<String>,

    /// Node cluster (overrides the bootstrap's node.cluster).
    #[arg(long = "service-cluster")]
    pub service_cluster: Option<String>,

    /// Node zone (overrides the bootstrap's node.locality.zone).
    #[arg(long = "service-zone")]
    pub service_zone: Option<String>,

    /// Seconds to let connections drain on shutdown or listener change.
    #[arg(long = "drain-time-s", default_value_t = 600)]
    pub drain_time_s: u64,

    /// Accepted for compatibility; legate has no hot restart, so this only
    /// bounds shutdown like --drain-time-s.
    #[arg(long = "parent-shutdown-time-s", default_value_t = 900)]
    pub parent_shutdown_time_s: u64,

    /// Accepted for compatibility and ignored: legate has no hot restart and
    /// no shared memory to identify.
    #[arg(long = "base-id", default_value_t = 0)]
    pub base_id: u32,

    /// Accepted for compatibility and ignored: legate has no hot restart.
    #[arg(long = "restart-epoch", default_value_t = 0)]
    pub restart_epoch: u32,

    /// legate's sidecar mode: stream LDS/CDS (and their RDS/EDS) over ADS
    /// from this control plane (HOST:PORT, h2c). Repeat for failover: tried
    /// in order. The file's static_resources serve until the control plane's
    /// config is complete, and whenever it cannot be reached at startup.
    #[arg(long = "xds-server", value_name = "HOST:PORT", env = "LEGATE_XDS_SERVER",
          value_delimiter = ',', action = clap::ArgAction::Append)]
    pub xds_server: Vec<String>,

    /// With --xds-server: use incremental (delta) xDS instead of state of the world.
    #[arg(long = "xds-delta")]
    pub xds_delta: bool,

    /// With --xds-server: keep the last accepted control-plane config in DIR
    /// and serve it at startup when the control plane is unreachable.
    #[arg(long = "xds-cache", value_name = "DIR", env = "LEGATE_XDS_CACHE")]
    pub xds_cache: Option<PathBuf>,
}

/// Parses `--component-log-level` into `tracing` directives (`legate::<c>=<level>`).
pub fn component_directives(spec: &str) -> Result<Vec<String>, String> {
    spec.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|part| {
            let (component, level) = part
                .split_once(':')
                .ok_or_else(|| format!("`{part}`: expected component:level"))?;
            let level = LogLevel::from_str(level.trim(), true)
                .map_err(|_| format!("`{part}`: unknown level `{level}`"))?;
            Ok(format!("legate::{}={}", component.trim(), level.directive()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_command_lines_parse() {
        let a = Args::try_parse_from(["legate", "-c", "f.yaml", "--mode", "validate", "-l", "warn"]).unwrap();
        assert_eq!(a.mode, Mode::Validate);
        assert_eq!(a.log_level, LogLevel::Warning);
        let a = Args::try_parse_from([
            "legate",
            "--config-path",
            "f.yaml",
            "--concurrency",
            "2",
            "--service-node",
            "n",
            "--base-id",
            "3",
        ])
        .unwrap();
        assert_eq!(a.concurrency, Some(2));
        assert_eq!(a.service_node.as_deref(), Some("n"));
        assert!(Args::try_parse_from(["legate", "--mode", "bogus"]).is_err());
        assert!(Args::try_parse_from(["legate", "-l", "loud"]).is_err());
    }

    #[test]
    fn xds_servers_repeat_and_split() {
        let a = Args::try_parse_from([
            "legate",
            "--xds-server",
            "cp1:18000",
            "--xds-server",
            "cp2:18000,cp3:18000",
            "--xds-delta",
        ])
        .unwrap();
        assert_eq!(a.xds_server, vec!["cp1:18000", "cp2:18000", "cp3:18000"]);
        assert!(a.xds_delta);
        let a = Args::try_parse_from(["legate", "-c", "f.yaml"]).unwrap();
        assert!(a.xds_server.is_empty() || std::env::var_os("LEGATE_XDS_SERVER").is_some());
    }

    #[test]
    fn component_levels() {
        assert_eq!(
            component_directives("upstream:debug,config:warning").unwrap(),
            vec!["legate::upstream=debug", "legate::config=warn"]
        );
        assert!(component_directives("upstream").is_err());
        assert!(component_directives("upstream:loud").is_err());
    }
}
