//! legate: an Envoy-compatible sidecar and front proxy.
#![forbid(unsafe_code)]

// Admin interface and stats store (issue 4).
pub mod admin;
pub mod allocator;
pub mod stats;

pub mod access_log;
pub mod cli;
pub mod config;
pub mod http;
pub mod local_info;
pub mod model;
pub mod proto;
pub mod runtime;
pub mod stream_info;
pub mod xds;
