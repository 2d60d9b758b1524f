//! Timeouts and connection limits: stream idle timeouts (408 SI before the
//! response, a reset after it), the route timeout over a streaming
//! response, the `x-envoy-upstream-rq-timeout-ms` override, and
//! `max_requests_per_connection`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::support::client::get;
use super::support::{front_bootstrap, origin, route, static_cluster, Legate};

/// An origin that answers headers and "start" at once, then stalls for
/// `stall` before sending "end".
pub(super) async fn stalling_origin(stall: Duration) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    let chunks = futures_util::stream::unfold(0u8, move |step| async move {
                        match step {
                            0 => Some((Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"start"))), 1)),
                            1 => {
                                tokio::time::sleep(stall).await;
                                Some((Ok(Frame::data(Bytes::from_static(b"end"))), 2))
                            }
                            _ => None,
                        }
                    });
                    Ok::<_, Infallible>(hyper::Response::new(StreamBody::new(chunks)))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// An origin that answers any request with 64 MiB in 64 KiB chunks, at
/// once: more than loopback's socket buffers and a listener's 1 MiB hold.
pub(super) async fn big_body_origin() -> SocketAddr {
    static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    let chunks = futures_util::stream::iter(
                        (0..1024).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from_static(&CHUNK)))),
                    );
                    Ok::<_, Infallible>(hyper::Response::new(StreamBody::new(chunks)))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A GET through `front` to `stalling_origin` gets the 200 and "start",
/// then the connection ends, long before the origin's 5 s stall would.
async fn assert_cut_off_after_start(front: SocketAddr) {
    let mut s = tokio::net::TcpStream::connect(front).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(4), s.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "legate kept the stalled stream open");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("start") && !text.contains("end"), "{text}");
}

/// What the first read on `s` brings (up to 8 KiB, within 5 s).
async fn first_answer(s: &mut tokio::net::TcpStream) -> String {
    let mut got = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut got))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&got[..n]).into_owned()
}

const ADMIN: &str = "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n";

/// HCM lines: an access log at `path` with the status, flags and details.
pub(super) fn details_log(path: &std::path::Path) -> String {
    format!(
        "          access_log:\n          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n              log_format: {{text_format_source: {{inline_string: \"%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\\n\"}}}}\n",
        path.display()
    )
}

/// What `legate` logged, once it has exited (logs are flushed at exit).
pub(super) async fn logged_at_exit(mut legate: Legate, path: &std::path::Path) -> String {
    let _ = tokio::task::spawn_blocking(move || legate.terminate()).await;
    std::fs::read_to_string(path).unwrap_or_default()
}

fn config(origin: SocketAddr, route_extra: &str, hcm_extra: &str) -> String {
    front_bootstrap(
        hcm_extra,
        &route("/", "origin", route_extra),
        &static_cluster("origin", origin, ""),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_before_the_response_is_408_si() {
    let o = origin::start("slow").await;
    let legate = Legate::start(&(config(o, ", idle_timeout: 0.3s", "") + ADMIN), &[]);
    let r = get(legate.addr("front"), "/?sleep_ms=3000", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (408, "stream timeout"));
    let admin = legate.admin.expect("admin address");
    let stat = |n: &'static str| super::xds::stat(admin, n);
    assert_eq!(
        stat("http.ingress_http.downstream_rq_idle_timeout").await,
        Some(1)
    );
    // A local reply, not a reset.
    assert_eq!(stat("http.ingress_http.downstream_rq_tx_reset").await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_after_the_response_started_resets_the_stream() {
    let o = stalling_origin(Duration::from_secs(5)).await;
    let dir = super::support::Dir::new();
    let log = dir.write("access.log", "");
    let hcm = format!("          stream_idle_timeout: 0.3s\n{}", details_log(&log));
    let legate = Legate::start(&(config(o, "", &hcm) + ADMIN), &[]);
    assert_cut_off_after_start(legate.addr("front")).await;
    let admin = legate.admin.expect("admin address");
    let stat = |n: &'static str| super::xds::stat(admin, n);
    assert_eq!(
        stat("http.ingress_http.downstream_rq_idle_timeout").await,
        Some(1)
    );
    assert_eq!(stat("http.ingress_http.downstream_rq_tx_reset").await, Some(1));
    assert_eq!(
        stat("http.ingress_http.rq_reset_after_downstream_response_started").await,
        Some(0)
    );
    // The status sent, and why it was cut off, as Envoy logs a reset.
    assert_eq!(logged_at_exit(legate, &log).await, "200 SI stream_idle_timeout\n");
}

/// A client that asks for a large body and reads none of it: once the
/// socket and the connection's buffer are full, nothing moves, and the
/// stream idle timeout ends the stream (logged `SI`) instead of holding it
/// and its upstream connection for as long as the client likes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_cut_off_by_the_stream_idle_timeout() {
    let o = big_body_origin().await;
    let dir = super::support::Dir::new();
    let log = dir.write("access.log", "");
    let hcm = format!("          stream_idle_timeout: 0.5s\n{}", details_log(&log));
    let legate = Legate::start(&(config(o, "", &hcm) + ADMIN), &[]);
    let mut s = tokio::net::TcpStream::connect(legate.addr("front"))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let admin = legate.admin.expect("admin address");
    let mut timed_out = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        timed_out = super::xds::stat(admin, "http.ingress_http.downstream_rq_idle_timeout").await;
        if timed_out == Some(1) {
            break;
        }
    }
    assert_eq!(
        timed_out,
        Some(1),
        "the stalled response was not timed out within 5 s"
    );
    drop(s);
    assert_eq!(logged_at_exit(legate, &log).await, "200 SI stream_idle_timeout\n");
}

/// Envoy's route `timeout` starts once the whole request has arrived: a
/// slow upload does not use it up, a slow answer after it still does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_starts_when_the_request_has_arrived() {
    let o = origin::start("o").await;
    let legate = Legate::start(&config(o, ", timeout: 0.5s", ""), &[]);
    let front = legate.addr("front");
    let mut s = tokio::net::TcpStream::connect(front).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12345")
        .await
        .unwrap();
    // Longer than the route timeout, before the body is complete.
    tokio::time::sleep(Duration::from_millis(900)).await;
    s.write_all(b"67890").await.unwrap();
    let text = first_answer(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"body_len\":10"), "{text}");
    // Once the request is complete, the origin has the timeout to answer.
    let r = get(front, "/?sleep_ms=1500", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (504, "upstream request timeout"));
}

/// Envoy's route `timeout` spans until the response is complete: one still
/// streaming when it passes is reset (UT), counted by the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_timeout_resets_a_response_still_streaming() {
    let o = stalling_origin(Duration::from_secs(5)).await;
    let dir = super::support::Dir::new();
    let log = dir.write("access.log", "");
    let legate = Legate::start(&(config(o, ", timeout: 0.4s", &details_log(&log)) + ADMIN), &[]);
    assert_cut_off_after_start(legate.addr("front")).await;
    let admin = legate.admin.expect("admin address");
    let stat = |n: &'static str| super::xds::stat(admin, n);
    assert_eq!(stat("cluster.origin.upstream_rq_timeout").await, Some(1));
    assert_eq!(stat("http.ingress_http.downstream_rq_tx_reset").await, Some(1));
    assert_eq!(
        stat("http.ingress_http.downstream_rq_idle_timeout").await,
        Some(0)
    );
    assert_eq!(
        logged_at_exit(legate, &log).await,
        "200 UT upstream_response_timeout\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_rq_timeout_header_overrides_the_route_timeout() {
    let o = origin::start("o").await;
    // Only an internal request may set its timeout: the loopback peer is
    // made internal (no address is by default).
    let hcm = "          use_remote_address: true\n          internal_address_config: {cidr_ranges: [{address_prefix: 127.0.0.1, prefix_len: 32}]}\n";
    let legate = Legate::start(&config(o, "", hcm), &[]);
    let front = legate.addr("front");
    let r = get(
        front,
        "/?sleep_ms=2000",
        &[("x-envoy-upstream-rq-timeout-ms", "200")],
    )
    .await;
    assert_eq!((r.status, r.body.as_str()), (504, "upstream request timeout"));
    let r = get(front, "/", &[("x-envoy-upstream-rq-timeout-ms", "5000")]).await;
    assert_eq!(r.status, 200);
    let seen = r.json();
    assert_eq!(seen["headers"]["x-envoy-expected-rq-timeout-ms"], "5000");
    assert!(
        seen["headers"].get("x-envoy-upstream-rq-timeout-ms").is_none(),
        "{seen}"
    );
    assert_eq!(seen["headers"]["x-envoy-internal"], "true");

    // An external request's timeout header is dropped before the router.
    let legate = Legate::start(&config(o, "", ""), &[]);
    let r = get(
        legate.addr("front"),
        "/",
        &[("x-envoy-upstream-rq-timeout-ms", "5000")],
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = r.json();
    assert_eq!(seen["headers"]["x-envoy-expected-rq-timeout-ms"], "15000");
    assert!(seen["headers"].get("x-envoy-internal").is_none(), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_closes_after_the_last_one() {
    let o = origin::start("o").await;
    let hcm = "          common_http_protocol_options: {max_requests_per_connection: 2}\n";
    let legate = Legate::start(&config(o, "", hcm), &[]);
    let mut s = tokio::net::TcpStream::connect(legate.addr("front"))
        .await
        .unwrap();
    let mut all = Vec::new();
    for _ in 0..2 {
        s.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    }
    // After the second response legate closes the connection.
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the connection stayed open");
    let text = String::from_utf8_lossy(&all);
    assert_eq!(text.matches("HTTP/1.1 200").count(), 2, "{text}");
    assert_eq!(text.matches("connection: close").count(), 1, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_per_connection_sends_goaway_on_http2() {
    let o = origin::start("o").await;
    let hcm = "          common_http_protocol_options: {max_requests_per_connection: 2}\n";
    let cfg =
        config(o, "", hcm) + "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n";
    let legate = Legate::start(&cfg, &[]);
    let tcp = tokio::net::TcpStream::connect(legate.addr("front"))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    for _ in 0..2 {
        let req = http::Request::get("http://x/")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let r = sender.send_request(req).await.unwrap();
        assert_eq!(r.status(), 200);
        http_body_util::BodyExt::collect(r.into_body()).await.unwrap();
    }
    // GOAWAY after the second request: with no stream left the connection
    // ends (the client's connection task returns).
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(ended.is_ok(), "the HTTP/2 connection stayed open");
    let admin = legate.admin.expect("admin");
    let r = get(admin, "/stats?filter=downstream_cx_max_requests_reached", &[]).await;
    assert_eq!(
        r.body.trim(),
        "http.ingress_http.downstream_cx_max_requests_reached: 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_is_408_when_the_body_does_not_arrive() {
    let o = origin::start("o").await;
    let legate = Legate::start(&config(o, "", "          request_timeout: 0.3s\n"), &[]);
    let front = legate.addr("front");
    // Half a body, then silence: the request never completes.
    let mut s = tokio::net::TcpStream::connect(front).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n12345")
        .await
        .unwrap();
    let text = first_answer(&mut s).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.ends_with("request timeout"), "{text}");
    // A complete request is not affected by the same timeout, even when the
    // origin takes longer than it to answer.
    let r = get(front, "/?sleep_ms=600", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_is_426_unless_accepted() {
    let o = origin::start("o").await;
    async fn ask(front: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(front).await.unwrap();
        s.write_all(b"GET /old HTTP/1.0\r\n\r\n").await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
            .await
            .expect("answer")
            .unwrap();
        String::from_utf8_lossy(&got).into_owned()
    }
    let refused = Legate::start(&config(o, "", ""), &[]);
    let text = ask(refused.addr("front")).await;
    // (hyper writes the status line in the client's HTTP/1.0.)
    assert!(
        text.starts_with("HTTP/1.0 426 ") || text.starts_with("HTTP/1.1 426 "),
        "{text}"
    );

    let hcm =
        "          http_protocol_options: {accept_http_10: true, default_host_for_http_10: legacy.example}\n";
    let accepted = Legate::start(&config(o, "", hcm), &[]);
    let text = ask(accepted.addr("front")).await;
    assert!(text.contains(" 200 OK\r\n"), "{text}");
    assert!(text.contains("\"host\":\"legacy.example\""), "{text}");
}
