//! legate: an Envoy-compatible sidecar and front proxy.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod proto;
