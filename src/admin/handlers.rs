//! The endpoint table, request dispatch (Envoy's `AdminImpl::makeRequest`),
//! `/`, `/help`, and the small state-changing endpoints.

use std::sync::Arc;
use std::time::Duration;

use super::{
    clusters, config_dump, logging, server_info, stats_format, AdminState, Query, Reply, ServerState,
};

/// One admin endpoint, as Envoy registers it (`makeHandler`).
pub struct Endpoint {
    pub path: &'static str,
    pub help: &'static str,
    /// Changes server state: POST only.
    pub mutates: bool,
    /// `(name, help, enum choices)`.
    pub params: &'static [(&'static str, &'static str, &'static [&'static str])],
    handler: fn(&AdminState, &Query) -> Reply,
}

const FORMAT_TEXT_JSON: &[&str] = &["text", "json"];

/// Every endpoint legate serves, sorted by path (the order `/help` and `/`
/// print; lookup is by exact path, so order does not matter for dispatch).
pub static ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        path: "/",
        help: "Admin home page",
        mutates: false,
        params: &[],
        handler: home,
    },
    Endpoint {
        path: "/certs",
        help: "print certs on machine",
        mutates: false,
        params: &[],
        handler: server_info::certs,
    },
    Endpoint {
        path: "/clusters",
        help: "upstream cluster status",
        mutates: false,
        params: &[],
        handler: clusters::clusters,
    },
    Endpoint {
        path: "/config_dump",
        help: "dump current Envoy configs (experimental)",
        mutates: false,
        params: &[
            ("resource", "The resource to dump", &[]),
            (
                "mask",
                "The mask to apply. When both resource and mask are specified, the mask is applied to \
                 every element in the desired repeated field so that only a subset of fields are \
                 returned. The mask is parsed as a ProtobufWkt::FieldMask",
                &[],
            ),
            (
                "name_regex",
                "Dump only the currently loaded configurations whose names match the specified regex. \
                 Can be used with both resource and mask query parameters.",
                &[],
            ),
            (
                "include_eds",
                "Dump currently loaded configuration including EDS. See the response definition for \
                 more information",
                &[],
            ),
        ],
        handler: config_dump::config_dump,
    },
    Endpoint {
        path: "/config_source",
        help: "where the config in force comes from (legate sidecar mode: fallback, cache or control_plane)",
        mutates: false,
        params: &[],
        handler: config_source,
    },
    Endpoint {
        path: "/drain_listeners",
        help: "drain listeners",
        mutates: true,
        params: &[
            (
                "graceful",
                "When draining listeners, enter a graceful drain period prior to closing listeners. \
                 This behaviour and duration is configurable via server options or CLI",
                &[],
            ),
            (
                "skip_exit",
                "When draining listeners, do not exit after the drain period. This must be used with \
                 graceful",
                &[],
            ),
            (
                "inboundonly",
                "Drains all inbound listeners. traffic_direction field in \
                 envoy_v3_api_msg_config.listener.v3.Listener is used to determine whether a listener \
                 is inbound or outbound.",
                &[],
            ),
        ],
        handler: drain_listeners,
    },
    Endpoint {
        path: "/healthcheck/fail",
        help: "cause the server to fail health checks",
        mutates: true,
        params: &[],
        handler: healthcheck_fail,
    },
    Endpoint {
        path: "/healthcheck/ok",
        help: "cause the server to pass health checks",
        mutates: true,
        params: &[],
        handler: healthcheck_ok,
    },
    Endpoint {
        path: "/help",
        help: "print out list of admin commands",
        mutates: false,
        params: &[],
        handler: help_handler,
    },
    Endpoint {
        path: "/hot_restart_version",
        help: "print the hot restart compatibility version",
        mutates: false,
        params: &[],
        handler: server_info::hot_restart_version,
    },
    Endpoint {
        path: "/listeners",
        help: "print listener info",
        mutates: false,
        params: &[("format", "File format to use", FORMAT_TEXT_JSON)],
        handler: clusters::listeners,
    },
    Endpoint {
        path: "/logging",
        help: "query/change logging levels",
        mutates: true,
        params: &[
            (
                "paths",
                "Change multiple logging levels by setting to \
                 <logger_name1>:<desired_level1>,<logger_name2>:<desired_level2>.",
                &[],
            ),
            (
                "level",
                "desired logging level, this will change all loggers's level",
                &[
                    "", "trace", "debug", "info", "warning", "error", "critical", "off",
                ],
            ),
        ],
        handler: logging::logging,
    },
    Endpoint {
        path: "/memory",
        help: "print current allocation/heap usage",
        mutates: false,
        params: &[],
        handler: server_info::memory,
    },
    Endpoint {
        path: "/quitquitquit",
        help: "exit the server",
        mutates: true,
        params: &[],
        handler: quitquitquit,
    },
    Endpoint {
        path: "/ready",
        help: "print server state, return 200 if LIVE, otherwise return 503",
        mutates: false,
        params: &[],
        handler: server_info::ready,
    },
    Endpoint {
        path: "/reopen_logs",
        help: "reopen access logs",
        mutates: true,
        params: &[],
        handler: reopen_logs,
    },
    Endpoint {
        path: "/reset_counters",
        help: "reset all counters to zero",
        mutates: true,
        params: &[],
        handler: reset_counters,
    },
    Endpoint {
        path: "/runtime",
        help: "print runtime values",
        mutates: false,
        params: &[],
        handler: server_info::runtime,
    },
    Endpoint {
        path: "/runtime_modify",
        help: "Adds or modifies runtime values as passed in query parameters. To delete a previously \
               added key, use an empty string as the value. Note that deletion only applies to \
               overrides added via this endpoint; values loaded from disk can be modified via \
               override but not deleted. E.g. ?key1=value1&key2=value2...",
        mutates: true,
        params: &[],
        handler: server_info::runtime_modify,
    },
    Endpoint {
        path: "/server_info",
        help: "print server version/status information",
        mutates: false,
        params: &[],
        handler: server_info::server_info,
    },
    Endpoint {
        path: "/stats",
        help: "print server stats",
        mutates: false,
        params: &[
            (
                "usedonly",
                "Only include stats that have been written by system since restart",
                &[],
            ),
            (
                "filter",
                "Regular expression (Google re2) for filtering stats",
                &[],
            ),
            ("format", "Format to use", &["text", "json", "prometheus"]),
            (
                "type",
                "Stat types to include.",
                &["All", "Counters", "Histograms", "Gauges", "TextReadouts"],
            ),
            (
                "histogram_buckets",
                "Histogram bucket display mode",
                &["cumulative", "disjoint", "summary"],
            ),
        ],
        handler: stats_format::stats,
    },
    Endpoint {
        path: "/stats/prometheus",
        help: "print server stats in prometheus format",
        mutates: false,
        params: &[
            (
                "usedonly",
                "Only include stats that have been written by system since restart",
                &[],
            ),
            (
                "text_readouts",
                "Render text_readouts as new gaugues with value 0 (increases Prometheus data size)",
                &[],
            ),
            (
                "filter",
                "Regular expression (Google re2) for filtering stats",
                &[],
            ),
        ],
        handler: stats_format::prometheus_handler,
    },
];

/// Envoy's dispatch: exact match on the path (query stripped); a
/// state-changing endpoint answers anything but POST with 405; an unknown
/// path gets 404 and the help text.
pub fn dispatch(state: &AdminState, method: &str, path_and_query: &str) -> Reply {
    let path = path_and_query.split('?').next().unwrap_or("");
    if !path_allowed(state, path) {
        return Reply::text(403, "");
    }
    let Some(ep) = ENDPOINTS.iter().find(|e| e.path == path) else {
        return Reply::text(404, format!("invalid path. {}", help_text()));
    };
    if ep.mutates && method != "POST" {
        tracing::error!(
            "admin path \"{}\" mutates state, method={method} rather than POST",
            ep.path
        );
        return Reply::text(405, format!("Method {method} not allowed, POST required."));
    }
    let query = Query::parse(path_and_query);
    (ep.handler)(state, &query)
}

/// `admin.allow_paths`: when set, only matching paths are served (403
/// otherwise), as Envoy's admin filter does.
fn path_allowed(state: &AdminState, path: &str) -> bool {
    use crate::proto::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
    let Some(admin) = &state.bootstrap.admin else {
        return true;
    };
    if admin.allow_paths.is_empty() {
        return true;
    }
    admin.allow_paths.iter().any(|m| {
        let fold = |s: &str| {
            if m.ignore_case {
                s.to_ascii_lowercase()
            } else {
                s.to_string()
            }
        };
        let p = fold(path);
        match &m.match_pattern {
            Some(MatchPattern::Exact(x)) => p == fold(x),
            Some(MatchPattern::Prefix(x)) => p.starts_with(&fold(x)),
            Some(MatchPattern::Suffix(x)) => p.ends_with(&fold(x)),
            Some(MatchPattern::Contains(x)) => p.contains(&fold(x)),
            Some(MatchPattern::SafeRegex(r)) => regex::Regex::new(&format!("^(?:{})$", r.regex))
                .map(|re| re.is_match(path))
                .unwrap_or(false),
            None => false,
        }
    })
}

/// `admin commands are:` and one line per endpoint (Envoy's `getHelp`).
pub fn help_text() -> String {
    let mut out = String::from("admin commands are:\n");
    for ep in ENDPOINTS {
        let post = if ep.mutates { " (POST)" } else { "" };
        out.push_str(&format!("  {}{post}: {}\n", ep.path, ep.help));
        for (name, help, choices) in ep.params {
            out.push_str(&format!("      {name}: {help}"));
            if !choices.is_empty() {
                out.push_str(&format!("; One of ({})", choices.join(", ")));
            }
            out.push('\n');
        }
    }
    out
}

fn help_handler(_: &AdminState, _: &Query) -> Reply {
    Reply::text(200, help_text())
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The admin home page: a table with a link (GET) or a button (POST) and a
/// description per endpoint.
fn home(_: &AdminState, _: &Query) -> Reply {
    let mut rows = String::new();
    for ep in ENDPOINTS.iter().filter(|e| e.path != "/") {
        let name = html_escape(ep.path.trim_start_matches('/'));
        let link = if ep.mutates {
            format!(
                "<form action='{name}' method='post' class='home-form'>\
                 <button class='button-as-link'>{name}</button></form>"
            )
        } else {
            format!("<a href='{name}'>{name}</a>")
        };
        rows.push_str(&format!(
            "  <tr class='home-row'><td class='home-data'>{link}</td>\
             <td class='home-data'>{}</td></tr>\n",
            html_escape(ep.help)
        ));
        for (param, help, _) in ep.params {
            rows.push_str(&format!(
                "  <tr class='home-row'><td class='option'>{}</td><td class='home-data'>{}</td></tr>\n",
                html_escape(param),
                html_escape(help)
            ));
        }
    }
    Reply::html(format!(
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n  <title>Envoy Admin</title>\n\
         <style>\n    .home-table {{ font-family: sans-serif; font-size: medium; border-collapse: collapse; }}\n\
         .home-row:nth-child(even) {{ background-color: #dddddd; }}\n\
         .home-data {{ border: 1px solid #dddddd; text-align: left; padding: 8px; }}\n\
         .option {{ padding-left: 3em; font-style: italic; }}\n\
         .home-form {{ margin-bottom: 0; }}\n\
         .button-as-link {{ background: none; border: none; color: blue; \
         text-decoration: underline; cursor: pointer; padding: 0; font: inherit; }}\n  </style>\n\
         </head>\n<body>\n<table class='home-table'>\n  <thead>\n    \
         <th class='home-data'>Command</th>\n    <th class='home-data'>Description</th>\n  </thead>\n\
         <tbody>\n{rows}</tbody>\n</table>\n</body>\n</html>\n"
    ))
}

fn healthcheck_fail(state: &AdminState, _: &Query) -> Reply {
    state.set_healthcheck_failed(true);
    Reply::text(200, "OK\n")
}

fn healthcheck_ok(state: &AdminState, _: &Query) -> Reply {
    state.set_healthcheck_failed(false);
    Reply::text(200, "OK\n")
}

/// Stops the listeners (all, or `?inboundonly` the INBOUND ones) from
/// accepting; their connections close once their requests are done
/// (HTTP/1 `connection: close`, HTTP/2 GOAWAY). legate keeps running
/// afterwards, with or without `skip_exit` (documented difference).
fn drain_listeners(state: &AdminState, q: &Query) -> Reply {
    let graceful = q.has("graceful");
    if q.has("skip_exit") && !graceful {
        return Reply::text(400, "skip_exit requires graceful\n");
    }
    let inbound_only = q.has("inboundonly");
    if let Some(drain) = &state.drain_listeners {
        let n = drain(inbound_only);
        tracing::info!("/drain_listeners: draining {n} listener(s)");
        crate::stats::store()
            .gauge("listener_manager.total_listeners_draining")
            .set(n as i64);
    }
    Reply::text(200, "OK\n")
}

/// Answers `OK`, then ends the runtime's shutdown wait (graceful exit).
fn quitquitquit(state: &AdminState, _: &Query) -> Reply {
    tracing::info!("shutting down: /quitquitquit");
    state.set_state(ServerState::Draining);
    let quit: Arc<tokio::sync::Notify> = state.quit.clone();
    // Shortly after, so this response is written before the drain starts.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        quit.notify_one();
    });
    Reply::text(200, "OK\n")
}

fn reset_counters(_: &AdminState, _: &Query) -> Reply {
    crate::stats::store().reset_counters();
    Reply::text(200, "OK\n")
}

fn reopen_logs(_: &AdminState, _: &Query) -> Reply {
    crate::access_log::sink::reopen_all();
    Reply::text(200, "OK\n")
}

/// `GET /config_source` (legate): JSON with `source` (`fallback`, `cache`
/// or `control_plane`), the servers, whether a stream is up, the versions
/// per type and since when. Without xDS the bootstrap is the fallback.
fn config_source(state: &AdminState, _: &Query) -> Reply {
    let v = match &state.xds {
        Some(x) => x.config_source(),
        None => serde_json::json!({"source": "fallback", "servers": [], "connected": false, "versions": {}}),
    };
    Reply::json(200, super::pretty_json(&v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_sorted_and_unique() {
        let paths: Vec<&str> = ENDPOINTS.iter().map(|e| e.path).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(paths, sorted);
    }

    #[test]
    fn help_lines() {
        let h = help_text();
        assert!(h.starts_with("admin commands are:\n"));
        assert!(h.contains("\n  /quitquitquit (POST): exit the server\n"), "{h}");
        assert!(h.contains("\n  /stats: print server stats\n"), "{h}");
        assert!(h.contains("\n      usedonly: Only include stats"), "{h}");
    }
}
