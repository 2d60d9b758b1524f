//! Downstream HTTP/2 (h2c) through the real legate binary: the protocol's
//! rules as a client sees them on the wire (GOAWAY and RST_STREAM codes,
//! flow control, CONTINUATION, PING), and how the connection manager
//! treats HTTP/2 streams (431, `Expect: 100-continue`, resets logged as
//! `DC`, idle timeout, drain). A raw client writes and reads frames
//! byte by byte; hyper's HTTP/2 client checks many streams at once.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use legate::http::h2_frame::{self as frame, flag, kind, setting, Head, Reason};
use legate::http::hpack::{Decoder, Field};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::support::client::get;
use super::support::{front_bootstrap, origin, route, static_cluster, Legate};

/// How long any single network step may take before the test fails.
const STEP: Duration = Duration::from_secs(5);

const ADMIN: &str = "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n";

/// One listener `front` (codec AUTO) routing everything to `origin`, with
/// HCM lines `hcm_extra`, and an admin listener.
fn config(origin: SocketAddr, hcm_extra: &str) -> String {
    front_bootstrap(hcm_extra, &route("/", "o", ""), &static_cluster("o", origin, "")) + ADMIN
}

/// An HPACK literal field without indexing, new name (RFC 7541 §6.2.2),
/// with lengths of any size.
fn lit(name: &str, value: &str) -> Vec<u8> {
    let mut b = vec![0u8];
    for s in [name, value] {
        let mut n = s.len();
        if n < 127 {
            b.push(n as u8);
        } else {
            b.push(127);
            n -= 127;
            while n >= 128 {
                b.push((n % 128) as u8 | 0x80);
                n /= 128;
            }
            b.push(n as u8);
        }
        b.extend_from_slice(s.as_bytes());
    }
    b
}

/// A GET's header block for `path` (`:method GET`, `:scheme http` by
/// static index, the rest as literals).
fn get_block(path: &str) -> Vec<u8> {
    [
        vec![0x82, 0x86],
        lit(":path", path),
        lit(":authority", "legate.test"),
    ]
    .concat()
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame::put_head(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

fn headers(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
    frame(kind::HEADERS, flags | flag::END_HEADERS, stream, block)
}

/// A request's header block as HEADERS (`first` bytes of it, END_STREAM)
/// and CONTINUATION frames of at most 16 KiB.
fn header_frames(stream: u32, block: &[u8], first: usize) -> Vec<u8> {
    let (head, rest) = block.split_at(first.min(block.len()));
    let mut wire = frame(kind::HEADERS, flag::END_STREAM, stream, head);
    let pieces: Vec<&[u8]> = rest.chunks(16 * 1024).collect();
    for (i, p) in pieces.iter().enumerate() {
        let last = i + 1 == pieces.len();
        wire.extend(frame(
            kind::CONTINUATION,
            if last { flag::END_HEADERS } else { 0 },
            stream,
            p,
        ));
    }
    wire
}

/// A client that writes frames as given and reads legate's one by one.
struct Raw {
    s: TcpStream,
    buf: Vec<u8>,
    hpack: Decoder,
}

impl Raw {
    /// Connects and sends the preface and `settings`.
    async fn connect(addr: SocketAddr, settings: &[(u16, u32)]) -> Raw {
        let s = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let mut raw = Raw {
            s,
            buf: Vec::new(),
            hpack: Decoder::new(4096),
        };
        let mut hello = frame::PREFACE.to_vec();
        frame::put_settings(&mut hello, settings);
        raw.send(&hello).await;
        raw
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("write");
    }

    /// The next frame, or None at the end of the connection. legate's
    /// PINGs are answered on the way, as any client does.
    async fn next(&mut self) -> Option<(Head, Vec<u8>)> {
        loop {
            if let Some(head) = Head::parse(&self.buf) {
                if self.buf.len() >= 9 + head.len {
                    let payload = self.buf[9..9 + head.len].to_vec();
                    self.buf.drain(..9 + head.len);
                    if head.kind == kind::PING && !head.has(flag::ACK) {
                        let _ = self.s.write_all(&frame(kind::PING, flag::ACK, 0, &payload)).await;
                    }
                    return Some((head, payload));
                }
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = tokio::time::timeout(STEP, self.s.read(&mut chunk))
                .await
                .expect("a frame within 5 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next frame of `kind` (others are skipped).
    async fn next_of(&mut self, want: u8) -> (Head, Vec<u8>) {
        loop {
            let (head, payload) = self.next().await.expect("the connection to stay open");
            if head.kind == want {
                return (head, payload);
            }
            if head.kind == kind::HEADERS {
                self.decode(&head, &payload);
            }
        }
    }

    /// A response's fields (HPACK state follows every block legate sends).
    fn decode(&mut self, head: &Head, payload: &[u8]) -> Vec<(String, String)> {
        assert!(
            head.has(flag::END_HEADERS),
            "legate's small blocks fit in one frame"
        );
        let mut fields = Vec::new();
        self.hpack
            .decode(payload, |f| {
                fields.push(match f {
                    Field::Pseudo(_, v) => (":status".to_string(), String::from_utf8_lossy(&v).into_owned()),
                    Field::Header(n, v) => {
                        (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())
                    }
                });
                Ok(())
            })
            .expect("legate's header block decodes");
        fields
    }

    /// The next response head: its `:status` and fields.
    async fn response(&mut self, stream: u32) -> (u16, Vec<(String, String)>, bool) {
        loop {
            let (head, payload) = self.next_of(kind::HEADERS).await;
            let fields = self.decode(&head, &payload);
            if head.stream == stream {
                let status = fields[0].1.parse().expect("a :status first");
                return (status, fields, head.has(flag::END_STREAM));
            }
        }
    }

    /// A stream's body, read until END_STREAM.
    async fn body(&mut self, stream: u32) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let (head, payload) = self.next_of(kind::DATA).await;
            if head.stream == stream {
                body.extend_from_slice(&payload);
                if head.has(flag::END_STREAM) {
                    return body;
                }
            }
        }
    }

    /// Reads until the connection ends; the GOAWAY seen on the way, as
    /// (last stream id, error code).
    async fn goaway_then_close(&mut self) -> (u32, u32) {
        let mut goaway = None;
        while let Some((head, payload)) = self.next().await {
            if head.kind == kind::GOAWAY {
                let last = u32::from_be_bytes(payload[0..4].try_into().unwrap());
                let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
                goaway = Some((last, code));
            }
        }
        goaway.expect("a GOAWAY before the connection closed")
    }
}

/// Serves `svc` on a new loopback port, each connection on a task: HTTP/1.1
/// and h2c, or h2c only.
async fn spawn_origin<F, Fut, B>(svc: F, h2_only: bool) -> SocketAddr
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let svc = hyper::service::service_fn(svc.clone());
            tokio::spawn(async move {
                let io = TokioIo::new(stream);
                // Errors end the connection, which is all a test origin does.
                if h2_only {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    addr
}

/// An origin that answers `/bytes/N` with N bytes, byte i being i % 251 (a
/// pattern that shows any misplaced or lost frame).
async fn bytes_origin() -> SocketAddr {
    spawn_origin(
        |req: Request<Incoming>| async move {
            let n: usize = req
                .uri()
                .path()
                .trim_start_matches("/bytes/")
                .parse()
                .unwrap_or(0);
            let all: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from(all))))
        },
        false,
    )
    .await
}

fn pattern_ok(body: &[u8]) -> bool {
    body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8)
}

/// hyper's HTTP/2 client on a new connection to `addr`.
async fn h2_client<B>(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<B>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    sender
}

/// A stat's value from the admin interface.
async fn stat(legate: &Legate, name: &str) -> u64 {
    let admin = legate.admin.expect("admin");
    let r = get(admin, &format!("/stats?filter=^{name}$"), &[]).await;
    r.body
        .trim()
        .rsplit(": ")
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in {:?}", r.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_end_the_connection_with_goaway_protocol_error() {
    let o = origin::start("o").await;
    let legate = Legate::start(&config(o, ""), &[]);
    let front = legate.addr("front");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "an uppercase field name",
            [get_block("/"), lit("X-Big", "1")].concat(),
        ),
        (
            "a connection-specific field",
            [get_block("/"), lit("connection", "keep-alive")].concat(),
        ),
        ("no :path", [vec![0x82, 0x86], lit(":authority", "a")].concat()),
        (
            "a pseudo-header after a field",
            [vec![0x82, 0x86], lit("a", "b"), lit(":path", "/")].concat(),
        ),
        (
            "te other than trailers",
            [get_block("/"), lit("te", "gzip")].concat(),
        ),
    ];
    for (what, block) in &cases {
        let mut c = Raw::connect(front, &[]).await;
        c.send(&headers(1, flag::END_STREAM, block)).await;
        let (last, code) = c.goaway_then_close().await;
        assert_eq!((last, code), (0, Reason::PROTOCOL_ERROR.0), "{what}");
    }
    // A compression error is COMPRESSION_ERROR.
    let mut c = Raw::connect(front, &[]).await;
    c.send(&headers(1, flag::END_STREAM, &[0xff, 0x70])).await;
    assert_eq!(c.goaway_then_close().await, (0, Reason::COMPRESSION_ERROR.0));
    assert_eq!(
        stat(&legate, "http.ingress_http.downstream_cx_protocol_error").await,
        cases.len() as u64 + 1
    );
    // The listener serves on.
    let mut c = Raw::connect(front, &[]).await;
    c.send(&headers(1, flag::END_STREAM, &get_block("/ok"))).await;
    assert_eq!(c.response(1).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_over_max_concurrent_streams_is_refused() {
    let o = origin::start("o").await;
    let legate = Legate::start(
        &config(
            o,
            "          http2_protocol_options: {max_concurrent_streams: 1}\n",
        ),
        &[],
    );
    let mut c = Raw::connect(legate.addr("front"), &[]).await;
    c.send(&headers(1, flag::END_STREAM, &get_block("/?sleep_ms=300")))
        .await;
    c.send(&headers(3, flag::END_STREAM, &get_block("/"))).await;
    let (head, code) = c.next_of(kind::RST_STREAM).await;
    assert_eq!(
        (head.stream, code),
        (3, Reason::REFUSED_STREAM.0.to_be_bytes().to_vec())
    );
    // The first goes on, and once it is done another may open.
    assert_eq!(c.response(1).await.0, 200);
    c.body(1).await;
    c.send(&headers(5, flag::END_STREAM, &get_block("/"))).await;
    assert_eq!(c.response(5).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_over_max_request_headers_kb_get_431_through_continuations() {
    let o = origin::start("o").await;
    let legate = Legate::start(&config(o, ""), &[]);
    let mut c = Raw::connect(legate.addr("front"), &[]).await;
    // 70 KiB of fields, over the 60 KiB default, in 16 KiB frames.
    let block = [get_block("/"), lit("x-big", &"v".repeat(70 * 1024))].concat();
    c.send(&header_frames(1, &block, 16 * 1024)).await;
    assert_eq!(c.response(1).await.0, 431);
    // Within the limit, the same request through CONTINUATIONs is served.
    let block = [get_block("/"), lit("x-big", &"v".repeat(40 * 1024))].concat();
    c.send(&header_frames(3, &block, 10_000)).await;
    assert_eq!(c.response(3).await.0, 200);
    let body = String::from_utf8(c.body(3).await).unwrap();
    assert!(body.contains(&"v".repeat(40 * 1024)), "the origin got the field");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_before_the_body() {
    let o = origin::start("o").await;
    let legate = Legate::start(&config(o, ""), &[]);
    let mut c = Raw::connect(legate.addr("front"), &[]).await;
    let block = [
        vec![0x83, 0x86], // :method POST, :scheme http
        lit(":path", "/upload"),
        lit(":authority", "legate.test"),
        lit("expect", "100-continue"),
    ]
    .concat();
    c.send(&headers(1, 0, &block)).await;
    let (status, _, end) = c.response(1).await;
    assert_eq!((status, end), (100, false));
    c.send(&frame(kind::DATA, flag::END_STREAM, 1, b"hello")).await;
    assert_eq!(c.response(1).await.0, 200);
    let body: serde_json::Value = serde_json::from_slice(&c.body(1).await).unwrap();
    assert_eq!(body["body_len"], 5);
    assert!(body["headers"].get("expect").is_none(), "not forwarded: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_is_sent_only_what_its_windows_allow() {
    let o = bytes_origin().await;
    let legate = Legate::start(&config(o, ""), &[]);
    // The client allows 1,000 bytes per stream (and the connection's
    // initial 65,535).
    let mut c = Raw::connect(legate.addr("front"), &[(setting::INITIAL_WINDOW_SIZE, 1000)]).await;
    c.send(&headers(1, flag::END_STREAM, &get_block("/bytes/100000")))
        .await;
    assert_eq!(c.response(1).await.0, 200);
    let mut got = Vec::new();
    while got.len() < 1000 {
        let (head, payload) = c.next_of(kind::DATA).await;
        assert_eq!(head.stream, 1);
        got.extend(payload);
    }
    assert_eq!(got.len(), 1000, "exactly the stream window");
    // Nothing more until the window grows.
    let more = tokio::time::timeout(Duration::from_millis(300), c.next()).await;
    assert!(more.is_err(), "legate sent past the window: {more:?}");
    // The stream may take it all now; the connection's window limits.
    c.send(&frame(kind::WINDOW_UPDATE, 0, 1, &200_000u32.to_be_bytes()))
        .await;
    while got.len() < 65_535 {
        got.extend(c.next_of(kind::DATA).await.1);
    }
    assert_eq!(got.len(), 65_535, "exactly the connection window");
    c.send(&frame(kind::WINDOW_UPDATE, 0, 0, &200_000u32.to_be_bytes()))
        .await;
    got.extend(c.body(1).await);
    assert_eq!(got.len(), 100_000);
    assert!(pattern_ok(&got), "bytes in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_responses_arrive_whole_on_one_connection() {
    let o = bytes_origin().await;
    let legate = Legate::start(&config(o, ""), &[]);
    let front = legate.addr("front");
    let sender = h2_client(front).await;
    let sizes = [
        1usize,
        16_384,
        16_385,
        100_000,
        1 << 20,
        2 << 20,
        3 << 20,
        777_777,
    ];
    let fetches = sizes.iter().map(|&n| {
        let mut sender = sender.clone();
        async move {
            let req = Request::get(format!("http://{front}/bytes/{n}"))
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            let resp = sender.send_request(req).await.expect("response");
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (n, body)
        }
    });
    let all = tokio::time::timeout(Duration::from_secs(30), futures_util::future::join_all(fetches))
        .await
        .expect("8 downloads within 30 s");
    for (n, body) in all {
        assert_eq!(body.len(), n);
        assert!(pattern_ok(&body), "{n} bytes in order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_is_logged_as_dc_and_the_connection_goes_on() {
    // "start", then nothing for 5 s.
    let o = super::timeouts::stalling_origin(Duration::from_secs(5)).await;
    let dir = super::support::Dir::new();
    let log = dir.0.path().join("access.log");
    let hcm = format!(
        "          access_log:\n          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n              log_format: {{text_format_source: {{inline_string: \"%REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% %PROTOCOL%\\n\"}}}}\n",
        log.display()
    );
    let mut legate = Legate::start(&config(o, &hcm), &[]);
    let mut c = Raw::connect(legate.addr("front"), &[]).await;
    c.send(&headers(1, flag::END_STREAM, &get_block("/stall"))).await;
    assert_eq!(c.response(1).await.0, 200);
    assert_eq!(c.next_of(kind::DATA).await.1, b"start");
    c.send(&frame(kind::RST_STREAM, 0, 1, &Reason::CANCEL.0.to_be_bytes()))
        .await;
    // The connection serves the next stream.
    c.send(&headers(3, flag::END_STREAM, &get_block("/next"))).await;
    assert_eq!(c.response(3).await.0, 200);
    let (head, data) = c.next_of(kind::DATA).await;
    assert_eq!((head.stream, data.as_slice()), (3, &b"start"[..]));
    assert_eq!(stat(&legate, "http.ingress_http.downstream_rq_rx_reset").await, 1);
    c.send(&frame(kind::RST_STREAM, 0, 3, &Reason::CANCEL.0.to_be_bytes()))
        .await;
    let _ = tokio::task::spawn_blocking(move || legate.terminate()).await;
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(logged, "/stall 200 DC HTTP/2\n/next 200 DC HTTP/2\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_is_answered_with_its_payload() {
    let o = origin::start("o").await;
    let legate = Legate::start(&config(o, ""), &[]);
    let mut c = Raw::connect(legate.addr("front"), &[]).await;
    c.send(&frame(kind::PING, 0, 0, b"legate!!")).await;
    let (head, payload) = c.next_of(kind::PING).await;
    assert_eq!((head.flags, payload.as_slice()), (flag::ACK, &b"legate!!"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_gets_goaway_after_idle_timeout() {
    let o = origin::start("o").await;
    let hcm = "          common_http_protocol_options: {idle_timeout: 0.2s}\n";
    let legate = Legate::start(&config(o, hcm), &[]);
    let mut c = Raw::connect(legate.addr("front"), &[]).await;
    c.send(&headers(1, flag::END_STREAM, &get_block("/"))).await;
    assert_eq!(c.response(1).await.0, 200);
    c.body(1).await;
    // The idle sweeper looks once a second: GOAWAY within a few.
    assert_eq!(c.goaway_then_close().await, (1, Reason::NO_ERROR.0));
    assert_eq!(
        stat(&legate, "http.ingress_http.downstream_cx_idle_timeout").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_sends_goaway_and_lets_the_open_stream_finish() {
    let o = origin::start("o").await;
    let mut legate = Legate::start(&config(o, ""), &[]);
    let mut c = Raw::connect(legate.addr("front"), &[]).await;
    c.send(&headers(1, flag::END_STREAM, &get_block("/?sleep_ms=700")))
        .await;
    // Give the request time to reach legate, then SIGTERM.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let pid = legate.child.id().to_string();
    let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    // First the notice (nothing refused yet), then, once its PING is
    // answered, the final GOAWAY naming stream 1.
    let (_, notice) = c.next_of(kind::GOAWAY).await;
    assert_eq!(
        notice[..8],
        [0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0],
        "notice: 2^31-1, NO_ERROR"
    );
    let (_, last) = c.next_of(kind::GOAWAY).await;
    assert_eq!(
        last[..8],
        [0, 0, 0, 1, 0, 0, 0, 0],
        "final: last stream 1, NO_ERROR"
    );
    // A stream opened after the GOAWAY is not served.
    c.send(&headers(3, flag::END_STREAM, &get_block("/"))).await;
    let (status, _, _) = c.response(1).await;
    assert_eq!(status, 200);
    let body: serde_json::Value = serde_json::from_slice(&c.body(1).await).unwrap();
    assert_eq!(body["uri"], "/?sleep_ms=700");
    assert!(
        c.next().await.is_none(),
        "the connection closes once the stream is done"
    );
    let exit = tokio::task::spawn_blocking(move || legate.terminate())
        .await
        .unwrap();
    assert_eq!(exit.and_then(|s| s.code()), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_request_is_read_after_a_download_larger_than_the_buffer_limit() {
    let o = bytes_origin().await;
    let legate = Legate::start(&config(o, ""), &[]);
    // Windows far above the 1 MiB buffer limit: legate's output backlog,
    // not flow control, is what holds the response back.
    let mut c = Raw::connect(legate.addr("front"), &[(setting::INITIAL_WINDOW_SIZE, 1 << 30)]).await;
    c.send(&frame(kind::WINDOW_UPDATE, 0, 0, &(1u32 << 30).to_be_bytes()))
        .await;
    for round in 0..3u32 {
        let (big, small) = (4 * round + 1, 4 * round + 3);
        c.send(&headers(big, flag::END_STREAM, &get_block("/bytes/8388608")))
            .await;
        // Not read for a while: the socket fills and legate's backlog
        // reaches the limit. The next request arrives meanwhile.
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.send(&headers(small, flag::END_STREAM, &get_block("/bytes/100")))
            .await;
        let mut bodies = std::collections::HashMap::<u32, Vec<u8>>::new();
        let mut ended = 0;
        while ended < 2 {
            let (head, payload) = c.next().await.expect("the connection to stay open");
            match head.kind {
                kind::HEADERS => {
                    c.decode(&head, &payload);
                }
                kind::DATA => {
                    bodies.entry(head.stream).or_default().extend(payload);
                    ended += usize::from(head.has(flag::END_STREAM));
                }
                _ => {}
            }
        }
        assert_eq!(bodies[&big].len(), 8 << 20, "round {round}");
        assert_eq!(bodies[&small].len(), 100, "round {round}");
        assert!(pattern_ok(&bodies[&big]) && pattern_ok(&bodies[&small]));
    }
}

/// An HTTP/2 origin that counts each request body and answers its length.
async fn h2_counting_origin() -> SocketAddr {
    spawn_origin(
        |req: Request<Incoming>| async move {
            let n = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(0);
            Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from(
                n.to_string(),
            ))))
        },
        true,
    )
    .await
}

/// Uploads through an HTTP/2 cluster: the request bodies are read by
/// hyper's upstream connection (another task), and the window each gives
/// back must reach the client, or concurrent uploads exhaust the
/// connection's smallest window and stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_to_an_http2_cluster_keep_the_windows_open() {
    let o = h2_counting_origin().await;
    let hcm = "          http2_protocol_options: {initial_stream_window_size: 65535, initial_connection_window_size: 65535}\n";
    let cfg = front_bootstrap(
        hcm,
        &route("/", "o", ""),
        &static_cluster("o", o, super::support::H2C_OPTIONS),
    );
    let legate = Legate::start(&cfg, &[]);
    let front = legate.addr("front");
    let sender = h2_client(front).await;
    let uploads = (0..8).map(|i| {
        let mut sender = sender.clone();
        async move {
            let n = 200_000 + i * 1000;
            let req = Request::post(format!("http://{front}/up/{i}"))
                .body(http_body_util::Full::new(Bytes::from(vec![b'u'; n])))
                .unwrap();
            let resp = sender.send_request(req).await.expect("response");
            assert_eq!(resp.status(), 200);
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            assert_eq!(body, n.to_string().as_bytes(), "upload {i}");
        }
    });
    tokio::time::timeout(Duration::from_secs(20), futures_util::future::join_all(uploads))
        .await
        .expect("8 uploads of 200 KB through 64 KiB windows within 20 s");
}

/// The "rapid reset" attack (CVE-2023-44487): 300 streams opened, each
/// followed at once by `then(id)`. Returns the RST_STREAMs legate sent, the
/// GOAWAY's error code and `downstream_rq_too_many_premature_resets`.
async fn rapid_reset(then: fn(u32) -> Vec<u8>) -> (u32, Option<u32>, u64) {
    let o = origin::start("o").await;
    let legate = Legate::start(&config(o, ""), &[]);
    let mut c = Raw::connect(legate.addr("front"), &[]).await;
    let mut wire = Vec::new();
    for i in 0..300u32 {
        let id = 2 * i + 1;
        wire.extend(headers(id, flag::END_STREAM, &get_block("/?sleep_ms=2000")));
        wire.extend(then(id));
    }
    c.send(&wire).await;
    let (mut resets, mut goaway) = (0, None);
    while let Some((head, payload)) = c.next().await {
        match head.kind {
            kind::RST_STREAM => resets += 1,
            kind::GOAWAY => goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap())),
            _ => {}
        }
    }
    let cut = stat(
        &legate,
        "http.ingress_http.downstream_rq_too_many_premature_resets",
    )
    .await;
    (resets, goaway, cut)
}

/// Streams the client resets before their responses: the 250th closes the
/// connection (Envoy's premature reset limit, before 500 have ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resetting_most_streams_early_is_cut_off() {
    let (resets, goaway, cut) =
        rapid_reset(|id| frame(kind::RST_STREAM, 0, id, &Reason::CANCEL.0.to_be_bytes())).await;
    assert_eq!((resets, goaway, cut), (0, Some(Reason::ENHANCE_YOUR_CALM.0), 1));
}

/// The same with the resets sent by legate: each stream gets a stream
/// error (WINDOW_UPDATE of 0) right after its request. Those count too, as
/// in Envoy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_provoking_stream_errors_is_cut_off_like_one_resetting() {
    let (resets, goaway, cut) =
        rapid_reset(|id| frame(kind::WINDOW_UPDATE, 0, id, &0u32.to_be_bytes())).await;
    assert_eq!(
        (resets, goaway, cut),
        (250, Some(Reason::ENHANCE_YOUR_CALM.0), 1),
        "the 250th premature reset ends the connection"
    );
}

/// A client that stops opening its window: the response waits, and the
/// stream idle timeout still ends the stream (a reset, logged `SI`), as
/// Envoy's does, instead of holding it and its upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_opens_no_window_is_cut_off_by_the_stream_idle_timeout() {
    let o = bytes_origin().await;
    let dir = super::support::Dir::new();
    let log = dir.write("access.log", "");
    let hcm = format!(
        "          stream_idle_timeout: 0.5s\n{}",
        super::timeouts::details_log(&log)
    );
    let legate = Legate::start(&config(o, &hcm), &[]);
    let mut c = Raw::connect(legate.addr("front"), &[(setting::INITIAL_WINDOW_SIZE, 1000)]).await;
    c.send(&headers(1, flag::END_STREAM, &get_block("/bytes/100000")))
        .await;
    assert_eq!(c.response(1).await.0, 200);
    let (head, payload) = c.next_of(kind::RST_STREAM).await;
    assert_eq!(head.stream, 1);
    assert_eq!(payload, Reason::INTERNAL_ERROR.0.to_be_bytes());
    assert_eq!(
        stat(&legate, "http.ingress_http.downstream_rq_idle_timeout").await,
        1
    );
    assert_eq!(
        super::timeouts::logged_at_exit(legate, &log).await,
        "200 SI stream_idle_timeout\n"
    );
}

/// An origin answering a plain request with `101 Switching Protocols`: the
/// client, which asked for no upgrade (and over HTTP/2 could not have),
/// gets a 502 UPE, not a 101 (an HTTP/2 HEADERS frame with :status 101
/// would be malformed, RFC 9113 §8.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unasked_for_101_from_the_origin_is_a_502() {
    let o = super::support::canned_origin(
        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: x\r\n\r\n",
    )
    .await;
    let legate = Legate::start(&config(o, ""), &[]);
    let front = legate.addr("front");
    let r = get(front, "/", &[]).await;
    assert_eq!(r.status, 502, "HTTP/1.1: {}", r.body);
    assert_eq!(
        r.body,
        "upstream connect error or disconnect/reset before headers. reset reason: protocol error"
    );
    let mut sender = h2_client::<http_body_util::Empty<Bytes>>(front).await;
    let req = Request::get(format!("http://{front}/"))
        .body(http_body_util::Empty::new())
        .unwrap();
    let resp = tokio::time::timeout(STEP, sender.send_request(req))
        .await
        .expect("an answer in time")
        .expect("a response, not a stream error");
    assert_eq!(resp.status(), 502, "HTTP/2");
}

/// A client with open windows that stops reading its socket: legate's
/// outbox fills, the stream waits on it, and its idle timeout still ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_cut_off_by_the_stream_idle_timeout() {
    let o = super::timeouts::big_body_origin().await;
    let legate = Legate::start(&config(o, "          stream_idle_timeout: 0.5s\n"), &[]);
    let mut c = Raw::connect(
        legate.addr("front"),
        &[(setting::INITIAL_WINDOW_SIZE, 0x7fff_ffff)],
    )
    .await;
    let mut wire = frame(kind::WINDOW_UPDATE, 0, 0, &0x7fff_0000u32.to_be_bytes());
    wire.extend(headers(1, flag::END_STREAM, &get_block("/")));
    c.send(&wire).await;
    let mut timed_out = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        timed_out = stat(&legate, "http.ingress_http.downstream_rq_idle_timeout").await;
        if timed_out == 1 {
            break;
        }
    }
    assert_eq!(timed_out, 1, "the stalled response was not timed out within 5 s");
}
