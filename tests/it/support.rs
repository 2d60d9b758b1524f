//! Helpers shared by the integration tests: running the real `legate`
//! binary and writing config files to a private temp directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `legate` binary cargo built for this test run.
pub fn legate_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_legate"))
}

/// Result of one `legate` run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

pub fn run(args: &[&str]) -> Run {
    Command::new(legate_bin())
        .args(args)
        .output()
        .expect("the legate binary runs")
        .into()
}

/// A temp dir holding config files; removed on drop.
pub struct Dir(pub tempfile::TempDir);

impl Dir {
    pub fn new() -> Dir {
        Dir(tempfile::tempdir().expect("temp dir"))
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.path().join(name);
        std::fs::write(&p, text).expect("write config");
        p
    }
}

/// `legate --mode validate -c <path>`.
pub fn validate(path: &Path) -> Run {
    run(&["--mode", "validate", "-c", path.to_str().expect("utf-8 path")])
}

/// The shared conformance corpus (`../shared/conformance/envoy-examples`),
/// or `LEGATE_CONFORMANCE_DIR`. Missing is a test failure, not a skip.
pub fn conformance_dir() -> PathBuf {
    if let Ok(d) = std::env::var("LEGATE_CONFORMANCE_DIR") {
        return PathBuf::from(d);
    }
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/envoy-examples");
    assert!(
        d.is_dir(),
        "conformance corpus not found at {} (set LEGATE_CONFORMANCE_DIR)",
        d.display()
    );
    d
}

// ---------------------------------------------------------------------------
// A running legate process and test origins.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A `legate` serving a config; killed on drop. Listener addresses are read
/// from its log (`listener NAME listening on ADDR`), so configs use port 0.
pub struct Legate {
    pub child: Child,
    pub listeners: HashMap<String, SocketAddr>,
    /// The admin listener's address (`admin address: ADDR` in the log).
    pub admin: Option<SocketAddr>,
    /// Keeps the log forwarder running (lines are also echoed to stderr).
    _log: mpsc::Receiver<String>,
    _dir: Dir,
}

impl Legate {
    /// Starts legate on `config` (YAML) with extra args; waits until all
    /// workers have started (bounded: 20 s).
    pub fn start(config: &str, extra: &[&str]) -> Legate {
        let dir = Dir::new();
        let path = dir.write("legate.yaml", config);
        let mut child = Command::new(legate_bin())
            .arg("-c")
            .arg(&path)
            .args(["--concurrency", "2", "-l", "info"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start legate");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[legate] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut listeners = HashMap::new();
        let mut admin = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split("listener ").nth(1) {
                        if let Some((name, addr)) = rest.split_once(" listening on ") {
                            listeners
                                .insert(name.to_string(), addr.trim().parse().expect("listener address"));
                        }
                    }
                    if let Some(rest) = line.split("admin address: ").nth(1) {
                        admin = Some(rest.trim().parse().expect("admin address"));
                    }
                    if line.contains("workers started") {
                        break;
                    }
                }
                Err(_) => {
                    let status = child.try_wait().ok().flatten();
                    let _ = child.kill();
                    panic!("legate did not start within 20 s (exit: {status:?})");
                }
            }
        }
        Legate {
            child,
            listeners,
            admin,
            _log: rx,
            _dir: dir,
        }
    }

    pub fn addr(&self, listener: &str) -> SocketAddr {
        *self
            .listeners
            .get(listener)
            .unwrap_or_else(|| panic!("no listener {listener}: {:?}", self.listeners))
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Legate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An origin that reads each request head and answers `answer` as it is
/// (whatever it holds, well-formed or not), then waits for the client to
/// close.
pub async fn canned_origin(answer: &'static [u8]) -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut b).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = s.write_all(answer).await;
                while matches!(s.read(&mut b).await, Ok(n) if n > 0) {}
            });
        }
    });
    addr
}

pub mod origin {
    //! A real HTTP origin (HTTP/1.1 and h2c on one port) that answers with
    //! a JSON description of the request it received.

    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper::{Request, Response};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;

    /// Starts an origin named `name` on 127.0.0.1:0 in the background.
    /// `?sleep_ms=N` in the query makes it wait N ms before answering.
    pub async fn start(name: &'static str) -> SocketAddr {
        start_at("127.0.0.1:0".parse().expect("address"), name)
            .await
            .expect("bind origin")
    }

    /// [`start`] on a given address (e.g. another loopback IP, a fixed port).
    pub async fn start_at(at: SocketAddr, name: &'static str) -> std::io::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(at).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(name, req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(addr)
    }

    async fn answer(name: &'static str, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let sleep = req
            .uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("sleep_ms="));
        if let Some(ms) = sleep.and_then(|m| m.parse::<u64>().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let mut headers = serde_json::Map::new();
        for (k, v) in req.headers() {
            headers.insert(
                k.as_str().to_string(),
                serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
            );
        }
        let version = format!("{:?}", req.version());
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let json = serde_json::json!({
            "origin": name,
            "method": method,
            "uri": uri,
            "version": version,
            "headers": headers,
            "body_len": body.len(),
        });
        let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
        resp.headers_mut()
            .insert("x-origin", name.parse().expect("header value"));
        resp.headers_mut()
            .insert("content-type", "application/json".parse().expect("header value"));
        Ok(resp)
    }
}

pub mod client {
    //! Real HTTP clients (hyper) for the tests: HTTP/1.1 and h2c.

    use std::net::SocketAddr;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::Request;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    pub struct Reply {
        pub status: u16,
        pub headers: http::HeaderMap,
        pub body: String,
    }

    impl Reply {
        pub fn json(&self) -> serde_json::Value {
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
        }
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers.get(name).and_then(|v| v.to_str().ok())
        }
    }

    pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
        send(addr, "GET", path, headers, Bytes::new(), false).await
    }

    pub async fn send(
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
        h2: bool,
    ) -> Reply {
        let client: Client<_, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).http2_only(h2).build_http();
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = client
            .request(req.body(Full::new(body)).expect("request"))
            .await
            .expect("response");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

// ---------------------------------------------------------------------------
// Config builders shared by the whole-process tests.

/// Cluster options that make a cluster speak h2c upstream.
pub const H2C_OPTIONS: &str = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: {http2_protocol_options: {}}\n";

/// A v3 bootstrap with one listener `front` on 127.0.0.1:0 (HCM
/// `stat_prefix: ingress_http`, codec AUTO, route config `local_route` with
/// one `*` virtual host). `hcm_extra` lines are HCM fields (10-space
/// indent), `routes` are route entries (14-space indent), `clusters` are
/// cluster entries (2-space indent, e.g. from [`static_cluster`]).
pub fn front_bootstrap(hcm_extra: &str, routes: &str, clusters: &str) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: front
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          codec_type: AUTO
          stat_prefix: ingress_http
{hcm_extra}
          route_config:
            name: local_route
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
{routes}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
{clusters}
"#
    )
}

/// A STATIC cluster `name` with one endpoint; `extra` lines are cluster
/// fields (4-space indent, e.g. [`H2C_OPTIONS`]).
pub fn static_cluster(name: &str, addr: SocketAddr, extra: &str) -> String {
    format!(
        "  - name: {name}\n    type: STATIC\n{extra}    load_assignment:\n      cluster_name: {name}\n      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: {ip}, port_value: {port}}}}}}}}}]}}]\n",
        ip = addr.ip(),
        port = addr.port()
    )
}

/// A route entry sending `prefix` to `cluster`, with extra RouteAction fields.
pub fn route(prefix: &str, cluster: &str, action_extra: &str) -> String {
    format!("              - match: {{prefix: \"{prefix}\"}}\n                route: {{cluster: {cluster}{action_extra}}}\n")
}
