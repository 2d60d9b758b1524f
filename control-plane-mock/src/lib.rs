//! control-plane-mock: a small, correct xDS v3 control plane for local
//! development, demos and tests.
//!
//! It serves ADS and the per-type services (LDS, RDS, CDS, EDS), SotW and
//! delta, from a [`Snapshot`] decoded with legate's own config loader. Tests
//! use it in-process:
//!
//! ```no_run
//! # async fn demo() -> Result<(), control_plane_mock::Error> {
//! use control_plane_mock::{ResourceType, Server, Snapshot};
//! let snapshot = Snapshot::from_yaml("clusters: [{name: a, type: STATIC}]")?;
//! let handle = Server::start("127.0.0.1:0".parse().unwrap(), snapshot).await?;
//! // point a client at handle.addr() ...
//! handle.upsert(None, ResourceType::Cluster, "{name: b, type: STATIC}")?; // pushed at once
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Layout: `snapshot*` and `check` own the data, `subscription`, `sotw` and
//! `delta` the protocol (pure state machines), `stream` drives one stream,
//! `services` and `server` are the gRPC side, `admin` the HTTP API,
//! `file_watch` the snapshot file.

#![forbid(unsafe_code)]

mod admin;
mod check;
mod core;
pub mod delta;
mod file_watch;
mod registry;
mod resource_type;
mod server;
mod services;
mod snapshot;
mod snapshot_file;
mod snapshot_json;
pub mod sotw;
mod stream;
mod subscription;

pub use registry::{ClientInfo, Event, EventKind, Nack, TypeStatus};
pub use resource_type::ResourceType;
pub use server::{Handle, Options, Server};
pub use snapshot::{Resource, Resources, Snapshot};

use legate::config::ConfigError;

/// Everything that can go wrong, with a message a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A snapshot or resource that does not decode or breaks Envoy's rules:
    /// file, line, field path and what was expected.
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Watch(String),
}

impl Error {
    /// Names the file a config error came from.
    pub fn in_file(self, name: &str) -> Error {
        match self {
            Error::Config(e) => Error::Config(e.in_file(name)),
            Error::Invalid(m) => Error::Invalid(format!("{name}: {m}")),
            other => other,
        }
    }
}
