//! The `legate` binary: Envoy's command line in front of the library.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use legate::cli::{component_directives, Args, Mode};
use legate::config;

fn init_logging(args: &Args) -> Result<(), String> {
    let mut filter = EnvFilter::new(args.log_level.directive());
    if let Some(spec) = &args.component_log_level {
        for d in component_directives(spec)? {
            filter = filter.add_directive(d.parse().map_err(|e| format!("--component-log-level: {e}"))?);
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    match &args.log_path {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("--log-path {}: {e}", path.display()))?;
            builder.with_ansi(false).with_writer(std::sync::Mutex::new(file)).init();
        }
        None => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = init_logging(&args) {
        eprintln!("legate: {e}");
        return ExitCode::FAILURE;
    }
    let loaded = match config::load_bootstrap(args.config_path.as_deref(), args.config_yaml.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            // stderr directly as well as the log: a bad config must be seen
            // even with `-l off` or `--log-path`.
            eprintln!("legate: error initializing configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let shown = args
        .config_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "--config-yaml".to_string());
    match args.mode {
        Mode::Validate => {
            if args.print_config {
                match config::to_yaml(&loaded.dynamic) {
                    Ok(y) => print!("{y}"),
                    Err(e) => {
                        eprintln!("legate: cannot print the config: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
            println!("configuration '{shown}' OK");
            ExitCode::SUCCESS
        }
        Mode::InitOnly => ExitCode::SUCCESS,
        Mode::Serve => {
            eprintln!("legate: the data plane is not in this build yet; use --mode validate");
            ExitCode::FAILURE
        }
    }
}
