//! Envoy-compatible HTTP access logging: `access_log` entries of the HTTP
//! connection manager, listeners and admin.
//!
//! Config load builds each entry once — filter compiled, format parsed, file
//! opened — into an [`AccessLog`]; the data plane calls [`AccessLog::log`]
//! when a response ends, which renders one line and queues it to the sink's
//! writer thread without blocking (see [`sink`]).

pub mod filter;
pub mod format;
pub mod sink;

pub use filter::AccessLogFilter;
pub use format::Format;
pub use sink::{dropped_lines, flush_all, reopen_all, AccessLogSink, Target};

use prost::Message;

use crate::proto::envoy::config::accesslog::v3 as pb;
use crate::proto::envoy::extensions::access_loggers::file::v3::{file_access_log, FileAccessLog};
use crate::proto::envoy::extensions::access_loggers::stream::v3::{
    stderr_access_log, stdout_access_log, StderrAccessLog, StdoutAccessLog,
};
use crate::stream_info::StreamInfo;

/// One configured access logger.
#[derive(Debug)]
pub struct AccessLog {
    name: String,
    filter: Option<AccessLogFilter>,
    format: Format,
    sink: AccessLogSink,
}

impl AccessLog {
    pub fn new(
        name: String,
        filter: Option<AccessLogFilter>,
        format: Format,
        sink: AccessLogSink,
    ) -> AccessLog {
        AccessLog {
            name,
            filter,
            format,
            sink,
        }
    }

    /// Builds one `envoy.config.accesslog.v3.AccessLog`. Errors start with
    /// the field path inside it (`typed_config.log_format.text_format: …`).
    pub fn build(log: &pb::AccessLog) -> Result<AccessLog, String> {
        let filter = log
            .filter
            .as_ref()
            .map(AccessLogFilter::compile)
            .transpose()
            .map_err(|e| format!("filter.{e}"))?;
        let Some(pb::access_log::ConfigType::TypedConfig(any)) = &log.config_type else {
            return Err(format!("access log `{}` needs a `typed_config`", log.name));
        };
        let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
        let decode_err = |e: prost::DecodeError| format!("typed_config: cannot decode {type_name}: {e}");
        let (format, target) = match type_name {
            "envoy.extensions.access_loggers.file.v3.FileAccessLog"
            | "envoy.config.accesslog.v2.FileAccessLog" => {
                let f = FileAccessLog::decode(any.value.as_slice()).map_err(decode_err)?;
                file_format(&f).map_err(|e| format!("typed_config.{e}"))?
            }
            "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog" => {
                let s = StdoutAccessLog::decode(any.value.as_slice()).map_err(decode_err)?;
                let format = match &s.access_log_format {
                    Some(stdout_access_log::AccessLogFormat::LogFormat(sfs)) => {
                        Format::from_proto(sfs).map_err(|e| format!("typed_config.log_format.{e}"))?
                    }
                    None => Format::default_text(),
                };
                (format, Target::Stdout)
            }
            "envoy.extensions.access_loggers.stream.v3.StderrAccessLog" => {
                let s = StderrAccessLog::decode(any.value.as_slice()).map_err(decode_err)?;
                let format = match &s.access_log_format {
                    Some(stderr_access_log::AccessLogFormat::LogFormat(sfs)) => {
                        Format::from_proto(sfs).map_err(|e| format!("typed_config.log_format.{e}"))?
                    }
                    None => Format::default_text(),
                };
                (format, Target::Stderr)
            }
            other => {
                return Err(format!(
                    "typed_config: access logger `{other}` is not supported by legate yet \
                     (supported: FileAccessLog, StdoutAccessLog, StderrAccessLog)"
                ))
            }
        };
        let sink = AccessLogSink::open(target).map_err(|e| format!("typed_config.path: {e}"))?;
        Ok(AccessLog {
            name: log.name.clone(),
            filter,
            format,
            sink,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn sink(&self) -> &AccessLogSink {
        &self.sink
    }

    /// Whether the filter lets this request through.
    pub fn wants(&self, info: &StreamInfo) -> bool {
        self.filter.as_ref().is_none_or(|f| f.evaluate(info))
    }

    /// Logs one finished request (if the filter passes). Never blocks.
    pub fn log(&self, info: &StreamInfo) {
        if self.wants(info) {
            self.sink.write(self.format.render(info));
        }
    }

    /// The line `log` would write, filter aside (admin, tests).
    pub fn render(&self, info: &StreamInfo) -> String {
        self.format.render(info)
    }
}

/// The format and destination of a `FileAccessLog` (legacy `format`,
/// `json_format`, `typed_json_format`, or `log_format`).
fn file_format(f: &FileAccessLog) -> Result<(Format, Target), String> {
    use file_access_log::AccessLogFormat as F;
    if f.path.is_empty() {
        return Err("path: must not be empty".into());
    }
    let format = match &f.access_log_format {
        None => Format::default_text(),
        Some(F::Format(s)) if s.is_empty() => Format::default_text(),
        Some(F::Format(s)) => Format::text(s, false).map_err(|e| format!("format: {e}"))?,
        // Current Envoy keeps operator types for the legacy field as well.
        Some(F::JsonFormat(st)) => Format::json(st, false).map_err(|e| format!("json_format{e}"))?,
        Some(F::TypedJsonFormat(st)) => {
            Format::json(st, false).map_err(|e| format!("typed_json_format{e}"))?
        }
        Some(F::LogFormat(sfs)) => Format::from_proto(sfs).map_err(|e| format!("log_format.{e}"))?,
    };
    Ok((format, Target::from_path(&f.path)))
}

/// Builds a list of `access_log` entries; an error names the entry
/// (`access_log[1].filter.…: …`).
pub fn build_all(logs: &[pb::AccessLog]) -> Result<Vec<AccessLog>, String> {
    logs.iter()
        .enumerate()
        .map(|(i, l)| AccessLog::build(l).map_err(|e| format!("access_log[{i}].{e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::envoy::config::core::v3::{substitution_format_string, SubstitutionFormatString};
    use http::{HeaderMap, Method, Version};
    use std::time::Duration;

    fn any<M: Message>(type_name: &str, m: &M) -> prost_types::Any {
        prost_types::Any {
            type_url: format!("type.googleapis.com/{type_name}"),
            value: m.encode_to_vec(),
        }
    }

    fn file_log(path: &str, format: Option<file_access_log::AccessLogFormat>) -> pb::AccessLog {
        pb::AccessLog {
            name: "envoy.access_loggers.file".into(),
            filter: None,
            config_type: Some(pb::access_log::ConfigType::TypedConfig(any(
                "envoy.extensions.access_loggers.file.v3.FileAccessLog",
                &FileAccessLog {
                    path: path.into(),
                    access_log_format: format,
                },
            ))),
        }
    }

    fn info(code: u16) -> StreamInfo {
        let mut i = StreamInfo::new(
            Method::GET,
            "/x",
            "h",
            Version::HTTP_11,
            HeaderMap::new(),
            "1.2.3.4:5".parse().unwrap(),
            "5.6.7.8:80".parse().unwrap(),
        );
        i.response_code = code;
        i.end = Some(Duration::from_millis(3));
        i
    }

    #[test]
    fn file_logger_filters_formats_and_writes() {
        use pb::access_log_filter::FilterSpecifier as S;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut log = file_log(
            path.to_str().unwrap(),
            Some(file_access_log::AccessLogFormat::LogFormat(
                SubstitutionFormatString {
                    format: Some(substitution_format_string::Format::TextFormat(
                        "%RESPONSE_CODE% %REQ(:PATH)%\n".into(),
                    )),
                    ..Default::default()
                },
            )),
        );
        log.filter = Some(pb::AccessLogFilter {
            filter_specifier: Some(S::StatusCodeFilter(pb::StatusCodeFilter {
                comparison: Some(pb::ComparisonFilter {
                    op: pb::comparison_filter::Op::Ge as i32,
                    value: Some(crate::proto::envoy::config::core::v3::RuntimeUInt32 {
                        default_value: 400,
                        runtime_key: String::new(),
                    }),
                }),
            })),
        });
        let logs = build_all(&[log]).unwrap();
        assert_eq!(logs.len(), 1);
        logs[0].log(&info(200));
        logs[0].log(&info(503));
        logs[0].sink().flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "503 /x\n");
    }

    #[test]
    fn legacy_formats_and_default() {
        use file_access_log::AccessLogFormat as F;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.log");
        let p = p.to_str().unwrap();
        let i = info(200);
        let build = |f: Option<F>| AccessLog::build(&file_log(p, f)).unwrap();
        assert!(build(None)
            .render(&i)
            .contains("\"GET /x HTTP/1.1\" 200 - 0 0 3 - \"-\" \"-\" \"-\" \"h\" \"-\"\n"));
        assert_eq!(
            build(Some(F::Format(String::new()))).render(&i),
            build(None).render(&i)
        );
        assert_eq!(build(Some(F::Format("%RESPONSE_CODE%".into()))).render(&i), "200");
        let st = prost_types::Struct {
            fields: [(
                "code".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue("%RESPONSE_CODE%".into())),
                },
            )]
            .into_iter()
            .collect(),
        };
        assert_eq!(
            build(Some(F::JsonFormat(st.clone()))).render(&i),
            "{\"code\":200}\n"
        );
        assert_eq!(build(Some(F::TypedJsonFormat(st))).render(&i), "{\"code\":200}\n");
    }

    #[test]
    fn stream_loggers_build() {
        let stdout = pb::AccessLog {
            name: "out".into(),
            filter: None,
            config_type: Some(pb::access_log::ConfigType::TypedConfig(any(
                "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                &StdoutAccessLog {
                    access_log_format: None,
                },
            ))),
        };
        let stderr = pb::AccessLog {
            name: "err".into(),
            filter: None,
            config_type: Some(pb::access_log::ConfigType::TypedConfig(any(
                "envoy.extensions.access_loggers.stream.v3.StderrAccessLog",
                &StderrAccessLog {
                    access_log_format: Some(stderr_access_log::AccessLogFormat::LogFormat(
                        SubstitutionFormatString {
                            format: Some(substitution_format_string::Format::TextFormat(
                                "%PROTOCOL%\n".into(),
                            )),
                            ..Default::default()
                        },
                    )),
                },
            ))),
        };
        let logs = build_all(&[stdout, stderr]).unwrap();
        assert_eq!(logs[0].sink().target(), &Target::Stdout);
        assert_eq!(logs[0].name(), "out");
        assert!(logs[0].render(&info(200)).starts_with('['));
        assert_eq!(logs[1].sink().target(), &Target::Stderr);
        assert_eq!(logs[1].render(&info(200)), "HTTP/1.1\n");
    }

    #[test]
    fn errors_name_the_entry_and_field() {
        use pb::access_log_filter::FilterSpecifier as S;
        let dir = tempfile::tempdir().unwrap();
        let ok_path = dir.path().join("ok.log");
        let ok = file_log(ok_path.to_str().unwrap(), None);
        let mut bad_filter = ok.clone();
        bad_filter.filter = Some(pb::AccessLogFilter {
            filter_specifier: Some(S::ResponseFlagFilter(pb::ResponseFlagFilter {
                flags: vec!["ZZ".into()],
            })),
        });
        let bad_format = file_log(
            ok_path.to_str().unwrap(),
            Some(file_access_log::AccessLogFormat::Format("%WHAT%".into())),
        );
        let unknown_type = pb::AccessLog {
            name: "x".into(),
            filter: None,
            config_type: Some(pb::access_log::ConfigType::TypedConfig(prost_types::Any {
                type_url:
                    "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig"
                        .into(),
                value: vec![],
            })),
        };
        let cases: Vec<(Vec<pb::AccessLog>, &str)> = vec![
            (
                vec![ok.clone(), bad_filter],
                "access_log[1].filter.response_flag_filter.flags[0]: unknown response flag `ZZ`",
            ),
            (
                vec![bad_format],
                "access_log[0].typed_config.format: unknown or unsupported command operator `%WHAT%`",
            ),
            (
                vec![file_log("", None)],
                "access_log[0].typed_config.path: must not be empty",
            ),
            (
                vec![file_log("/nonexistent-dir/x/y.log", None)],
                "access_log[0].typed_config.path: cannot open",
            ),
            (vec![unknown_type], "HttpGrpcAccessLogConfig` is not supported"),
            (
                vec![pb::AccessLog {
                    name: "n".into(),
                    ..Default::default()
                }],
                "needs a `typed_config`",
            ),
        ];
        for (logs, want) in cases {
            let err = build_all(&logs).unwrap_err();
            assert!(err.contains(want), "error `{err}` should contain `{want}`");
        }
    }
}
