//! Streaming through the real legate binary: WebSocket upgrades, trailers,
//! `Expect: 100-continue`, large bodies in bounded memory and h2c
//! multiplexing. Real sockets on loopback; every wait is bounded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use super::support::client::send;
use super::support::{front_bootstrap, origin, route, static_cluster, Legate, H2C_OPTIONS};

/// How long any single network step may take before the test fails.
const STEP: Duration = Duration::from_secs(5);

/// One listener (`front`, AUTO codec) routing each prefix to its own STATIC
/// cluster (`c0`, `c1`, …) at the given address; `h2` clusters speak h2c.
fn proxy_config(routes: &[(&str, SocketAddr, bool)], hcm_extra: &str) -> String {
    let mut route_text = String::new();
    let mut clusters = String::new();
    for (i, (prefix, addr, h2)) in routes.iter().enumerate() {
        let name = format!("c{i}");
        route_text.push_str(&route(prefix, &name, ""));
        clusters.push_str(&static_cluster(&name, *addr, if *h2 { H2C_OPTIONS } else { "" }));
    }
    front_bootstrap(hcm_extra, &route_text, &clusters)
}

// ---------------------------------------------------------------------------
// Raw HTTP/1.1 over TCP: the tests control every byte on the client side.

/// Reads until `buf` holds a full message head (`\r\n\r\n`), returns the
/// head as text and leaves any bytes after it in `buf`.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    let fut = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = buf.drain(..end + 4).collect();
                return String::from_utf8_lossy(&head).into_owned();
            }
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.expect("read");
            assert!(
                n > 0,
                "connection closed before a full head; got {:?}",
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    timeout(STEP, fut).await.expect("a message head within 5 s")
}

/// Reads until `buf` holds at least `n` bytes; returns exactly `n` of them.
async fn read_exact_buffered(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> Vec<u8> {
    let fut = async {
        while buf.len() < n {
            let mut chunk = [0u8; 4096];
            let got = s.read(&mut chunk).await.expect("read");
            assert!(
                got > 0,
                "connection closed after {:?}, wanted {n} bytes",
                String::from_utf8_lossy(buf)
            );
            buf.extend_from_slice(&chunk[..got]);
        }
        buf.drain(..n).collect::<Vec<u8>>()
    };
    timeout(STEP, fut).await.expect("bytes within 5 s")
}

/// The value of header `name` in a raw head (case-insensitive name).
fn head_header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn status_of(head: &str) -> u16 {
    head.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {head:?}"))
}

// ---------------------------------------------------------------------------
// 1. WebSocket upgrade.

/// A raw TCP origin that accepts a WebSocket upgrade: it answers 101, sends
/// "hello\n" at once (server-first data in the same write as the head),
/// then echoes each line back as "pong:<line>\n" until EOF, then closes.
/// Reports each request head it got and counts connections.
struct WsOrigin {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: tokio::sync::mpsc::UnboundedReceiver<String>,
}

async fn ws_origin() -> WsOrigin {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepted = Arc::new(AtomicUsize::new(0));
    let (tx, heads) = tokio::sync::mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let head = read_head(&mut s, &mut buf).await;
                let _ = tx.send(head);
                let reply = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nhello\n";
                if s.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                loop {
                    while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=nl).collect();
                        let mut out = b"pong:".to_vec();
                        out.extend_from_slice(&line);
                        if s.write_all(&out).await.is_err() {
                            return;
                        }
                    }
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s.shutdown().await;
            });
        }
    });
    WsOrigin {
        addr,
        accepted,
        heads,
    }
}

const WS_REQUEST: &str = "GET /ws/chat HTTP/1.1\r\nHost: ws.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_tunnels_bytes_both_ways() {
    let mut ws = ws_origin().await;
    let hcm_extra = "          upgrade_configs: [{upgrade_type: websocket}]\n";
    let legate = Legate::start(&proxy_config(&[("/ws", ws.addr, false)], hcm_extra), &[]);
    let front = legate.addr("front");

    let mut s = TcpStream::connect(front).await.expect("connect");
    s.write_all(WS_REQUEST.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let head = read_head(&mut s, &mut buf).await;
    assert_eq!(status_of(&head), 101, "{head}");
    assert!(
        head_header(&head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{head}"
    );
    assert!(
        head_header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
        "{head}"
    );

    // What the origin was asked: the upgrade survived the hop.
    let seen = timeout(STEP, ws.heads.recv())
        .await
        .expect("origin got a request")
        .expect("head");
    assert!(seen.starts_with("GET /ws/chat HTTP/1.1\r\n"), "{seen}");
    assert!(
        head_header(&seen, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{seen}"
    );
    assert!(
        head_header(&seen, "connection").is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
        "{seen}"
    );
    assert_eq!(
        head_header(&seen, "sec-websocket-key"),
        Some("dGhlIHNhbXBsZSBub25jZQ==")
    );

    // Server-first bytes sent in the same segment as the 101 head.
    assert_eq!(read_exact_buffered(&mut s, &mut buf, 6).await, b"hello\n");
    // Then request/response rounds in both directions.
    for i in 0..3 {
        let msg = format!("ping {i}\n");
        s.write_all(msg.as_bytes()).await.expect("write");
        let want = format!("pong:ping {i}\n");
        let got = read_exact_buffered(&mut s, &mut buf, want.len()).await;
        assert_eq!(String::from_utf8_lossy(&got), want);
    }
    // A larger message crosses in several segments.
    let big: String = "x".repeat(200_000) + "\n";
    s.write_all(big.as_bytes()).await.expect("write");
    let got = read_exact_buffered(&mut s, &mut buf, big.len() + 5).await;
    assert_eq!(&got[..5], b"pong:");
    assert_eq!(&got[5..], big.as_bytes());

    // Half-close travels through: the origin sees EOF, closes, and the
    // client then reads EOF.
    s.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    timeout(STEP, s.read_to_end(&mut rest))
        .await
        .expect("EOF within 5 s after the client's half-close")
        .expect("read");
    assert!(rest.is_empty() && buf.is_empty(), "unexpected bytes {rest:?}");
    assert_eq!(ws.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_without_upgrade_configs_is_403() {
    let ws = ws_origin().await;
    let legate = Legate::start(&proxy_config(&[("/ws", ws.addr, false)], ""), &[]);
    let front = legate.addr("front");

    let mut s = TcpStream::connect(front).await.expect("connect");
    s.write_all(WS_REQUEST.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let head = read_head(&mut s, &mut buf).await;
    assert_eq!(status_of(&head), 403, "{head}");
    assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
    assert_eq!(head_header(&head, "upgrade"), None, "{head}");
    assert_eq!(head_header(&head, "content-length"), Some("0"), "{head}");
    assert_eq!(
        ws.accepted.load(Ordering::SeqCst),
        0,
        "a refused upgrade must not reach the origin"
    );
}

// ---------------------------------------------------------------------------
// 2. Trailers over h2c end to end.

/// An h2c-only origin: answers "hello world" in two data frames followed by
/// trailers `grpc-status: 0`, `grpc-message: ok`, plus a trailer
/// `x-request-trailer` echoing the request trailer `x-client-checksum`.
async fn trailers_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let version = format!("{:?}", req.version());
                    let collected = req.into_body().collect().await;
                    let (body_len, echoed) = match collected {
                        Ok(c) => {
                            let echoed = c
                                .trailers()
                                .and_then(|t| t.get("x-client-checksum"))
                                .cloned()
                                .unwrap_or_else(|| HeaderValue::from_static("none"));
                            (c.to_bytes().len(), echoed)
                        }
                        Err(_) => (0, HeaderValue::from_static("error")),
                    };
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    trailers.insert("grpc-message", HeaderValue::from_static("ok"));
                    trailers.insert("x-request-trailer", echoed);
                    let frames = vec![
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"hello "))),
                        Ok(Frame::data(Bytes::from_static(b"world"))),
                        Ok(Frame::trailers(trailers)),
                    ];
                    let mut resp = Response::new(StreamBody::new(futures_util::stream::iter(frames)));
                    resp.headers_mut()
                        .insert("content-type", HeaderValue::from_static("application/grpc"));
                    resp.headers_mut().insert(
                        "x-origin-version",
                        HeaderValue::from_str(&version).expect("value"),
                    );
                    resp.headers_mut()
                        .insert("x-origin-body-len", HeaderValue::from(body_len as u64));
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_response_and_request_trailers_pass_through() {
    let up = trailers_origin().await;
    let legate = Legate::start(&proxy_config(&[("/", up, true)], ""), &[]);
    let front = legate.addr("front");

    let tcp = timeout(STEP, TcpStream::connect(front))
        .await
        .expect("connect in time")
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);

    let mut req_trailers = HeaderMap::new();
    req_trailers.insert("x-client-checksum", HeaderValue::from_static("abc123"));
    let frames = vec![
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"request-body"))),
        Ok(Frame::trailers(req_trailers)),
    ];
    let req = Request::builder()
        .method("POST")
        .uri(format!("http://{front}/pkg.Service/Method"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .expect("request");
    let resp = timeout(STEP, sender.send_request(req))
        .await
        .expect("response in time")
        .expect("response");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), Version::HTTP_2);
    assert_eq!(
        resp.headers().get("x-origin-version").map(|v| v.as_bytes()),
        Some(&b"HTTP/2.0"[..]),
        "the cluster asks for h2c upstream"
    );
    assert_eq!(
        resp.headers().get("x-origin-body-len").map(|v| v.as_bytes()),
        Some(&b"12"[..])
    );
    let collected = timeout(STEP, resp.into_body().collect())
        .await
        .expect("body in time")
        .expect("body");
    let trailers = collected
        .trailers()
        .cloned()
        .expect("response trailers reach the client");
    assert_eq!(collected.to_bytes(), Bytes::from_static(b"hello world"));
    assert_eq!(trailers.get("grpc-status").map(|v| v.as_bytes()), Some(&b"0"[..]));
    assert_eq!(
        trailers.get("grpc-message").map(|v| v.as_bytes()),
        Some(&b"ok"[..])
    );
    assert_eq!(
        trailers.get("x-request-trailer").map(|v| v.as_bytes()),
        Some(&b"abc123"[..]),
        "request trailers reach the origin"
    );
}

// ---------------------------------------------------------------------------
// 3. Expect: 100-continue.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_then_body() {
    let up = origin::start("service1").await;
    let legate = Legate::start(&proxy_config(&[("/", up, false)], ""), &[]);
    let front = legate.addr("front");

    const N: usize = 100_000;
    let mut s = TcpStream::connect(front).await.expect("connect");
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: {N}\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write head");
    let mut buf = Vec::new();
    // The client waits for the interim response before sending anything.
    let interim = read_head(&mut s, &mut buf).await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n"),
        "wanted 100 Continue before the body, got {interim:?}"
    );
    s.write_all(&vec![b'b'; N]).await.expect("write body");
    let head = read_head(&mut s, &mut buf).await;
    assert_eq!(status_of(&head), 200, "{head}");
    let len: usize = head_header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("content-length in {head}"));
    let body = read_exact_buffered(&mut s, &mut buf, len).await;
    let seen: serde_json::Value = serde_json::from_slice(&body).expect("origin JSON");
    assert_eq!(seen["body_len"], N, "{seen}");
    assert_eq!(seen["method"], "POST");
}

/// Envoy's default (`proxy_100_continue: false`): the proxy answers
/// `100 Continue` itself and strips `Expect: 100-continue` from the request
/// it sends upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_not_forwarded_upstream_by_default() {
    let up = origin::start("service1").await;
    let legate = Legate::start(&proxy_config(&[("/", up, false)], ""), &[]);
    let front = legate.addr("front");

    let r = send(
        front,
        "POST",
        "/upload",
        &[("expect", "100-continue")],
        Bytes::from(vec![b'b'; 1000]),
        false,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["body_len"], 1000);
    assert!(
        seen["headers"].get("expect").is_none(),
        "the origin got `expect` (Envoy strips it unless proxy_100_continue): {}",
        seen["headers"]
    );
}

// ---------------------------------------------------------------------------
// 4. Large bodies in bounded memory.

const CHUNK: usize = 64 * 1024;

/// A body of `total` bytes produced 64 KiB at a time from one shared
/// buffer: never held whole.
fn generated_body(
    total: u64,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + 'static> {
    let chunk = Bytes::from(vec![b'z'; CHUNK]);
    StreamBody::new(futures_util::stream::unfold(total, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(CHUNK as u64) as usize;
            Some((Ok(Frame::data(chunk.slice(..n))), left - n as u64))
        }
    }))
}

/// An HTTP/1.1 + h2c origin: `POST /…/upload` counts the body without
/// keeping it and answers the count; `GET /…/download?bytes=N` streams N
/// bytes with a Content-Length.
async fn bulk_origin() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let counted = Arc::new(AtomicU64::new(0));
    let total = counted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let total = total.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let total = total.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let query = req.uri().query().unwrap_or("").to_string();
                        if path.ends_with("/download") {
                            let n: u64 = query
                                .split('&')
                                .find_map(|kv| kv.strip_prefix("bytes="))
                                .and_then(|v| v.parse().ok())
                                .unwrap_or(0);
                            let body = generated_body(n).boxed();
                            let mut resp = Response::new(body);
                            resp.headers_mut().insert("content-length", HeaderValue::from(n));
                            return Ok::<_, Infallible>(resp);
                        }
                        let mut body = req.into_body();
                        let mut n = 0u64;
                        while let Some(frame) = body.frame().await {
                            match frame {
                                Ok(f) => {
                                    if let Some(d) = f.data_ref() {
                                        n += d.len() as u64;
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                        total.fetch_add(n, Ordering::SeqCst);
                        let body = http_body_util::Full::new(Bytes::from(n.to_string()))
                            .map_err(|never: Infallible| match never {})
                            .boxed();
                        Ok(Response::new(body))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, counted)
}

/// VmRSS of `pid` in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kb * 1024
}

/// Samples `pid`'s RSS every 20 ms until stopped; the peak is in `peak`.
struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: std::thread::JoinHandle<()>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_bytes(pid)));
        let (s, p) = (stop.clone(), peak.clone());
        let task = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                p.fetch_max(rss_bytes(pid), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssWatch { stop, peak, task }
    }

    fn finish(self, pid: u32) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.task.join();
        self.peak.fetch_max(rss_bytes(pid), Ordering::SeqCst);
        self.peak.load(Ordering::SeqCst)
    }
}

type BoxBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// One client connection to legate: HTTP/1.1 or h2c (prior knowledge).
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<BoxBody>),
    H2(hyper::client::conn::http2::SendRequest<BoxBody>),
}

impl Sender {
    async fn connect(addr: SocketAddr, h2: bool) -> Sender {
        let tcp = timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        if h2 {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                    .await
                    .expect("h2 handshake");
            tokio::spawn(conn);
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .expect("h1 handshake");
            tokio::spawn(conn);
            Sender::H1(sender)
        }
    }

    /// `path` in the form the protocol wants: origin-form with `host` on
    /// HTTP/1.1, absolute on HTTP/2 (its `:authority`).
    fn request(&self, front: SocketAddr, path: &str) -> http::request::Builder {
        match self {
            Sender::H1(_) => Request::builder().uri(path).header("host", front.to_string()),
            Sender::H2(_) => Request::builder().uri(format!("http://{front}{path}")),
        }
    }

    async fn send(&mut self, req: Request<BoxBody>) -> Response<Incoming> {
        match self {
            Sender::H1(s) => {
                s.ready().await.expect("connection ready");
                s.send_request(req).await.expect("response")
            }
            Sender::H2(s) => {
                s.ready().await.expect("connection ready");
                s.send_request(req).await.expect("response")
            }
        }
    }
}

/// POSTs `total` generated bytes (chunked on HTTP/1.1) and returns the
/// origin's count.
async fn upload(sender: &mut Sender, front: SocketAddr, total: u64) -> u64 {
    let req = sender
        .request(front, "/bulk/upload")
        .method("POST")
        .body(generated_body(total).boxed())
        .expect("request");
    let resp = sender.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body)
        .parse()
        .unwrap_or_else(|_| panic!("origin count, got {body:?}"))
}

/// GETs `total` bytes and counts them frame by frame.
async fn download(sender: &mut Sender, front: SocketAddr, total: u64) -> u64 {
    let req = sender
        .request(front, &format!("/bulk/download?bytes={total}"))
        .body(Empty::<Bytes>::new().map_err(|never| match never {}).boxed())
        .expect("request");
    let resp = sender.send(req).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers().get("content-length").map(|v| v.as_bytes()),
        Some(total.to_string().as_bytes())
    );
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.expect("download frame").data_ref() {
            n += d.len() as u64;
        }
    }
    n
}

const BIG: u64 = 256 * 1024 * 1024;
const RSS_BUDGET: u64 = 32 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_streams_in_bounded_memory() {
    for h2 in [false, true] {
        large_upload(h2).await;
    }
}

async fn large_upload(h2: bool) {
    let (up, counted) = bulk_origin().await;
    let legate = Legate::start(&proxy_config(&[("/bulk", up, false)], ""), &[]);
    let front = legate.addr("front");
    let pid = legate.child.id();
    let proto = if h2 { "h2c" } else { "HTTP/1.1" };

    let mut sender = Sender::connect(front, h2).await;
    // Warm up the connection and the upstream pool first.
    assert_eq!(upload(&mut sender, front, 1 << 20).await, 1 << 20);
    let before = rss_bytes(pid);
    let watch = RssWatch::start(pid);
    let got = timeout(Duration::from_secs(120), upload(&mut sender, front, BIG))
        .await
        .expect("256 MiB upload within 120 s");
    let peak = watch.finish(pid);
    assert_eq!(got, BIG, "the origin counted every byte ({proto})");
    assert_eq!(counted.load(Ordering::SeqCst), BIG + (1 << 20));
    let growth = peak.saturating_sub(before);
    eprintln!(
        "{proto} upload: legate RSS {} KiB before, peak {} KiB",
        before / 1024,
        peak / 1024
    );
    assert!(
        growth < RSS_BUDGET,
        "legate RSS grew by {} KiB during a 256 MiB {proto} upload ({} KiB -> peak {} KiB)",
        growth / 1024,
        before / 1024,
        peak / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams_in_bounded_memory() {
    for h2 in [false, true] {
        large_download(h2).await;
    }
}

async fn large_download(h2: bool) {
    let (up, _) = bulk_origin().await;
    let legate = Legate::start(&proxy_config(&[("/bulk", up, false)], ""), &[]);
    let front = legate.addr("front");
    let pid = legate.child.id();
    let proto = if h2 { "h2c" } else { "HTTP/1.1" };

    let mut sender = Sender::connect(front, h2).await;
    assert_eq!(download(&mut sender, front, 1 << 20).await, 1 << 20);
    let before = rss_bytes(pid);
    let watch = RssWatch::start(pid);
    let got = timeout(Duration::from_secs(120), download(&mut sender, front, BIG))
        .await
        .expect("256 MiB download within 120 s");
    let peak = watch.finish(pid);
    assert_eq!(got, BIG, "the client counted every byte ({proto})");
    let growth = peak.saturating_sub(before);
    eprintln!(
        "{proto} download: legate RSS {} KiB before, peak {} KiB",
        before / 1024,
        peak / 1024
    );
    assert!(
        growth < RSS_BUDGET,
        "legate RSS grew by {} KiB during a 256 MiB {proto} download ({} KiB -> peak {} KiB)",
        growth / 1024,
        before / 1024,
        peak / 1024
    );
}

// ---------------------------------------------------------------------------
// 5. h2c multiplexing.

/// An HTTP/1.1 + h2c origin that sleeps `sleep_ms`, counts requests per
/// protocol, tracks the most requests it had in flight at once, and
/// answers with the request's query.
struct CountingOrigin {
    addr: SocketAddr,
    h1: Arc<AtomicUsize>,
    h2: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

async fn counting_origin() -> CountingOrigin {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let h1 = Arc::new(AtomicUsize::new(0));
    let h2 = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let counters = (h1.clone(), h2.clone(), max_in_flight.clone(), in_flight);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counters = counters.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (h1, h2, max, cur) = counters.clone();
                    async move {
                        let now = cur.fetch_add(1, Ordering::SeqCst) + 1;
                        max.fetch_max(now, Ordering::SeqCst);
                        let query = req.uri().query().unwrap_or("").to_string();
                        let ms: u64 = query
                            .split('&')
                            .find_map(|kv| kv.strip_prefix("sleep_ms="))
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0);
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        if req.version() == Version::HTTP_2 {
                            h2.fetch_add(1, Ordering::SeqCst);
                        } else {
                            h1.fetch_add(1, Ordering::SeqCst);
                        }
                        cur.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from(query))))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    CountingOrigin {
        addr,
        h1,
        h2,
        max_in_flight,
    }
}

/// Sends 50 concurrent GETs for `prefix` on one h2 connection; each
/// response must carry its own request's query back.
async fn fifty_concurrent(
    sender: &hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    front: SocketAddr,
    prefix: &str,
) {
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut sender = sender.clone();
        let uri = format!("http://{front}{prefix}/item?i={i}&sleep_ms=200");
        tasks.push(tokio::spawn(async move {
            let req = Request::builder()
                .uri(uri)
                .body(Empty::<Bytes>::new())
                .expect("request");
            let resp = sender.send_request(req).await.expect("response");
            let status = resp.status();
            let version = resp.version();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (i, status, version, body)
        }));
    }
    for t in tasks {
        let (i, status, version, body) = t.await.expect("task");
        assert_eq!(status, StatusCode::OK, "request {i}: {body:?}");
        assert_eq!(version, Version::HTTP_2);
        assert_eq!(body, Bytes::from(format!("i={i}&sleep_ms=200")), "request {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_multiplexes_fifty_concurrent_streams_on_one_connection() {
    let o = counting_origin().await;
    let legate = Legate::start(
        &proxy_config(&[("/h1", o.addr, false), ("/h2", o.addr, true)], ""),
        &[],
    );
    let front = legate.addr("front");

    let tcp = TcpStream::connect(front).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    let conn_task = tokio::spawn(conn);

    // Bounded, not timed: a hang fails the test, speed is for benchmarks.
    timeout(Duration::from_secs(30), fifty_concurrent(&sender, front, "/h1"))
        .await
        .expect("50 streams to an HTTP/1.1 cluster finish within 30 s");
    assert_eq!(o.h1.load(Ordering::SeqCst), 50);
    timeout(Duration::from_secs(30), fifty_concurrent(&sender, front, "/h2"))
        .await
        .expect("50 streams to an h2c cluster finish within 30 s");
    assert_eq!(o.h2.load(Ordering::SeqCst), 50);
    assert_eq!(o.h1.load(Ordering::SeqCst), 50);
    // The streams were served side by side, not one after another.
    assert!(
        o.max_in_flight.load(Ordering::SeqCst) > 1,
        "the origin never had two requests at once"
    );
    // Everything went over the one client connection.
    assert!(!conn_task.is_finished(), "the h2 connection is still open");
}
