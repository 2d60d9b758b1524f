//! Starting the mock and the handle tests and `main` drive it with.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::core::Core;
use crate::registry::{lock, ClientInfo, Event};
use crate::resource_type::ResourceType;
use crate::services::Router;
use crate::snapshot::Snapshot;
use crate::Error;

/// Options for [`Server::start_with`].
#[derive(Clone, Debug)]
pub struct Options {
    /// How many events `/events` and [`Handle::events`] keep.
    pub event_capacity: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options { event_capacity: 2000 }
    }
}

/// The xDS server.
pub struct Server;

impl Server {
    /// Binds `addr` (port 0 for any) and serves `snapshot` over ADS and the
    /// per-type services, SotW and delta, until [`Handle::shutdown`].
    pub async fn start(addr: SocketAddr, snapshot: Snapshot) -> Result<Handle, Error> {
        Server::start_with(addr, snapshot, Options::default()).await
    }

    pub async fn start_with(addr: SocketAddr, snapshot: Snapshot, options: Options) -> Result<Handle, Error> {
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
            what: format!("cannot bind the xDS address {addr}"),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| Error::Io {
            what: "cannot read the xDS address".into(),
            source,
        })?;
        let core = Core::new(snapshot, options.event_capacity);
        let task = tokio::spawn(serve_grpc(listener, core.clone()));
        Ok(Handle {
            core,
            addr,
            tasks: Mutex::new(vec![task]),
            admin_addr: Mutex::new(None),
        })
    }
}

async fn serve_grpc(listener: TcpListener, core: Arc<Core>) {
    let mut shutdown = core.shutdown.subscribe();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (sock, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, go on.
                        tracing::warn!("xDS accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = sock.set_nodelay(true);
                tokio::spawn(serve_connection(sock, peer, core.clone(), shutdown.clone()));
            }
            _ = shutdown.changed() => break,
        }
    }
}

async fn serve_connection(
    sock: tokio::net::TcpStream,
    peer: SocketAddr,
    core: Arc<Core>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // A 10,000-cluster response is tens of MB: large windows keep it from
    // crawling through 64 KiB flow-control steps.
    builder
        .timer(TokioTimer::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(8 << 20)
        .max_frame_size(1 << 20)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    let conn = builder.serve_connection(TokioIo::new(sock), Router::new(core, peer));
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("xDS connection from {peer}: {e}");
            }
        }
        _ = shutdown.changed() => {
            // Streams end on the same signal; let their trailers out.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

/// A running mock. Dropping it does not stop the server; call
/// [`Handle::shutdown`].
pub struct Handle {
    core: Arc<Core>,
    addr: SocketAddr,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    admin_addr: Mutex<Option<SocketAddr>>,
}

impl Handle {
    /// The xDS (gRPC) address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin HTTP address, once [`Handle::start_admin`] ran.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        *lock(&self.admin_addr)
    }

    /// The snapshot being served.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.core.current().snapshot.clone()
    }

    /// The `version_info` being served.
    pub fn version(&self) -> String {
        self.core.current().version.clone()
    }

    /// Replaces the snapshot, bumps the version and pushes the changes to
    /// every subscribed stream. Returns the new version.
    pub fn set_snapshot(&self, snapshot: Snapshot) -> String {
        self.core.publish(snapshot, "set_snapshot").version.clone()
    }

    /// Adds or replaces one resource (YAML/JSON, with or without `@type`),
    /// for every node (`node: None`) or as an override for one node.
    /// Returns the new version.
    pub fn upsert(&self, node: Option<&str>, ty: ResourceType, yaml: &str) -> Result<String, Error> {
        let (_, p) = self.core.edit("upsert", |s| s.upsert_yaml(node, ty, yaml))?;
        Ok(p.version.clone())
    }

    /// Removes one resource; [`Error::NotFound`] if it is not there.
    /// Returns the new version.
    pub fn remove(&self, node: Option<&str>, ty: ResourceType, name: &str) -> Result<String, Error> {
        let (_, p) = self.core.edit("remove", |s| {
            if s.remove(node, ty, name) {
                Ok(())
            } else {
                Err(Error::NotFound(format!("no {} named `{name}`", ty.key())))
            }
        })?;
        Ok(p.version.clone())
    }

    /// The connected streams.
    pub fn clients(&self) -> Vec<ClientInfo> {
        self.core.registry.clients()
    }

    /// The retained events, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.core.registry.events_since(0)
    }

    /// Waits at most `timeout` for an event matching `pred` (already
    /// retained ones included).
    pub async fn wait_for_event(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        self.core.registry.wait_for(timeout, pred).await
    }

    /// Serves the JSON admin API on `addr` (port 0 for any); returns its
    /// address.
    pub async fn start_admin(&self, addr: SocketAddr) -> Result<SocketAddr, Error> {
        let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
            what: format!("cannot bind the admin address {addr}"),
            source,
        })?;
        let local = listener.local_addr().map_err(|source| Error::Io {
            what: "cannot read the admin address".into(),
            source,
        })?;
        let task = tokio::spawn(crate::admin::serve(listener, self.core.clone(), self.addr));
        lock(&self.tasks).push(task);
        *lock(&self.admin_addr) = Some(local);
        Ok(local)
    }

    /// Watches a snapshot file: each change is decoded and checked; a good
    /// file is published, a broken one is rejected (logged, in `/events`)
    /// and the previous snapshot stays.
    pub fn watch_file(&self, path: impl Into<PathBuf>) -> Result<(), Error> {
        let task = crate::file_watch::spawn(path.into(), self.core.clone())?;
        lock(&self.tasks).push(task);
        Ok(())
    }

    /// Ends every stream and stops serving.
    pub async fn shutdown(self) {
        self.core.shutdown.send_replace(true);
        let tasks: Vec<_> = lock(&self.tasks).drain(..).collect();
        for mut t in tasks {
            if tokio::time::timeout(Duration::from_secs(3), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }
}
