//! legate's own HTTP/1.1 server codec, on raw sockets: Envoy's local
//! replies for refused requests (logged with DPE and Envoy's details),
//! `request_headers_timeout`, `idle_timeout`, pipelining, HTTP/1.0
//! keep-alive, chunked request bodies, and the connection-level fields
//! that stop at the proxy.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::{front_bootstrap, origin, route, static_cluster, Dir, Legate};

/// Sends `wire` on a new connection and reads until the peer closes it
/// (bounded by 5 s).
async fn exchange_until_close(front: SocketAddr, wire: &[u8]) -> String {
    let mut s = TcpStream::connect(front).await.unwrap();
    s.write_all(wire).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got))
        .await
        .expect("the connection closes")
        .unwrap_or_default();
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads from `s` until `got` holds `n` complete responses, each framed by
/// its content-length (bounded by 5 s).
async fn read_responses(s: &mut TcpStream, n: usize) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        let mut out = Vec::new();
        let mut rest = text.as_str();
        while let Some(end) = rest.find("\r\n\r\n") {
            let head = &rest[..end];
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if rest.len() < end + 4 + len {
                break;
            }
            out.push(rest[..end + 4 + len].to_string());
            rest = &rest[end + 4 + len..];
        }
        if out.len() >= n {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} responses: {text}",
            out.len()
        );
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                panic!("connection ended after {} of {n} responses: {text}", out.len())
            }
            Ok(Ok(k)) => got.extend_from_slice(&buf[..k]),
        }
    }
}

const LOG_FORMAT: &str = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %REQ(:METHOD)%\\n";

fn access_log(path: &std::path::Path) -> String {
    format!(
        "          access_log:\n          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n              log_format: {{text_format_source: {{inline_string: \"{LOG_FORMAT}\"}}}}\n",
        path.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_get_envoys_local_replies_and_are_logged() {
    let o = origin::start("o").await;
    let dir = Dir::new();
    let log = dir.0.path().join("access.log");
    let mut legate = Legate::start(
        &front_bootstrap(
            &access_log(&log),
            &route("/", "o", ""),
            &static_cluster("o", o, ""),
        ),
        &[],
    );
    let front = legate.addr("front");
    let many: String = (0..101).map(|i| format!("x-h{i}: v\r\n")).collect();
    // (request, status line, body)
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n".into(),
            "HTTP/1.1 400 Bad Request",
            "Bad Request",
        ),
        (
            format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
            "HTTP/1.1 431 Request Header Fields Too Large",
            "Request Header Fields Too Large",
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .into(),
            "HTTP/1.1 400 Bad Request",
            "Bad Request",
        ),
        (
            "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n".into(),
            "HTTP/1.1 501 Not Implemented",
            "Not Implemented",
        ),
    ];
    for (wire, status, body) in &cases {
        let text = exchange_until_close(front, wire.as_bytes()).await;
        assert!(text.starts_with(status), "{wire:?} → {text}");
        let lower = text.to_ascii_lowercase();
        assert!(lower.contains("\r\nconnection: close\r\n"), "{text}");
        assert!(lower.contains("\r\ncontent-type: text/plain\r\n"), "{text}");
        assert!(lower.contains("\r\nserver: envoy\r\n"), "{text}");
        assert!(text.ends_with(&format!("\r\n\r\n{body}")), "{text}");
    }
    // A good request still works, on a new connection.
    let text = exchange_until_close(front, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");

    let _ = tokio::task::spawn_blocking(move || legate.terminate()).await;
    let logged = std::fs::read_to_string(&log).expect("access log written");
    let lines: Vec<&str> = logged.lines().collect();
    assert_eq!(
        lines,
        [
            "400 DPE http1.codec_error -",
            "431 DPE http1.too_many_headers -",
            "400 DPE http1.content_length_and_chunked_not_allowed POST",
            "501 DPE http1.invalid_transfer_encoding POST",
            "200 - via_upstream GET",
        ],
        "{logged}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_headers_timeout_is_408_and_idle_connections_close() {
    let o = origin::start("o").await;
    let hcm = "          request_headers_timeout: 0.3s\n          common_http_protocol_options: {idle_timeout: 0.6s}\n";
    let legate = Legate::start(
        &front_bootstrap(hcm, &route("/", "o", ""), &static_cluster("o", o, "")),
        &[],
    );
    let front = legate.addr("front");

    // Half a head, then nothing: 408 once request_headers_timeout passes.
    let started = Instant::now();
    let text = exchange_until_close(front, b"GET / HTTP/1.1\r\nHo").await;
    assert!(text.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nrequest header timeout"), "{text}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );

    // A served keep-alive connection left idle is closed after idle_timeout,
    // without a response.
    let mut s = TcpStream::connect(front).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let first = read_responses(&mut s, 1).await;
    assert!(first[0].starts_with("HTTP/1.1 200 OK\r\n"), "{}", first[0]);
    let idle_from = Instant::now();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("closed by the idle timeout")
        .unwrap_or_default();
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_millis(500), "closed after {idle:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_chunked_bodies_pass() {
    let o = origin::start("o").await;
    let legate = Legate::start(
        &front_bootstrap("", &route("/", "o", ""), &static_cluster("o", o, "")),
        &[],
    );
    let front = legate.addr("front");
    let mut s = TcpStream::connect(front).await.unwrap();
    // Three requests in one write: a GET, a chunked POST (with chunk
    // extensions and a trailer), and a POST with a content-length.
    s.write_all(
        b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /second HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n\
          POST /third HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nabcd",
    )
    .await
    .unwrap();
    let replies = read_responses(&mut s, 3).await;
    for (reply, (path, body_len)) in replies
        .iter()
        .zip([("/first", 0), ("/second", 11), ("/third", 4)])
    {
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        let json: serde_json::Value =
            serde_json::from_str(&reply[reply.find("\r\n\r\n").unwrap() + 4..]).unwrap();
        assert_eq!(json["uri"], path, "{reply}");
        assert_eq!(json["body_len"], body_len, "{reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_keep_alive_is_honoured() {
    let o = origin::start("o").await;
    let hcm = "          http_protocol_options: {accept_http_10: true}\n";
    let legate = Legate::start(
        &front_bootstrap(hcm, &route("/", "o", ""), &static_cluster("o", o, "")),
        &[],
    );
    let front = legate.addr("front");
    let mut s = TcpStream::connect(front).await.unwrap();
    for path in ["/one", "/two"] {
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let reply = read_responses(&mut s, 1).await.remove(0);
        assert!(reply.starts_with("HTTP/1.0 200 OK\r\n"), "{reply}");
        assert!(
            reply
                .to_ascii_lowercase()
                .contains("\r\nconnection: keep-alive\r\n"),
            "{reply}"
        );
    }
    // Without keep-alive, HTTP/1.0 closes after the response.
    let text = exchange_until_close(front, b"GET /three HTTP/1.0\r\nHost: x\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.0 200 OK\r\n"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("\r\nconnection: close\r\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_before_the_request_body_is_read_reaches_the_client() {
    let o = origin::start("o").await;
    let routes = "              - match: {prefix: \"/direct\"}\n                direct_response: {status: 200, body: {inline_string: \"early\"}}\n";
    let legate = Legate::start(&front_bootstrap("", routes, &static_cluster("o", o, "")), &[]);
    let front = legate.addr("front");
    let s = TcpStream::connect(front).await.unwrap();
    let (mut rx, mut tx) = s.into_split();
    tx.write_all(b"POST /direct HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n")
        .await
        .unwrap();
    // Half a megabyte of the body follows at once; legate answers without
    // reading it, then closes: the answer must not be lost to a reset.
    let writer = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..8 {
            if tx.write_all(&chunk).await.is_err() {
                break;
            }
        }
        tx
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), rx.read_to_end(&mut got)).await;
    drop(writer.await);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("\r\nconnection: close\r\n"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\nearly"), "{text}");
}

const ADMIN: &str = "admin:\n  address: {socket_address: {address: 127.0.0.1, port_value: 0}}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_abandoned_by_its_client_is_logged_with_dc() {
    let o = origin::start("o").await;
    let dir = Dir::new();
    let log = dir.0.path().join("access.log");
    let mut legate = Legate::start(
        &(front_bootstrap(
            &access_log(&log),
            &route("/", "o", ""),
            &static_cluster("o", o, ""),
        ) + ADMIN),
        &[],
    );
    let front = legate.addr("front");
    // The origin answers after 1.5 s; the client hangs up after 0.3 s.
    let mut s = TcpStream::connect(front).await.unwrap();
    s.write_all(b"GET /slow?sleep_ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let admin = legate.admin.expect("admin address");
    let stat = |n: &'static str| super::xds::stat(admin, n);
    assert_eq!(stat("http.ingress_http.downstream_rq_rx_reset").await, Some(1));
    assert_eq!(stat("http.ingress_http.downstream_rq_tx_reset").await, Some(0));
    let _ = tokio::task::spawn_blocking(move || legate.terminate()).await;
    let logged = std::fs::read_to_string(&log).expect("access log written");
    assert_eq!(logged.lines().collect::<Vec<_>>(), ["0 DC - GET"], "{logged}");
}

/// An origin that records each request head it reads and answers with
/// connection-level fields of its own (and one it names in `connection`).
async fn hop_by_hop_origin() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    scripted_origin(
        "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, X-Resp-Drop\r\n\
         Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\n\
         X-Resp-Drop: 1\r\nX-Resp-Keep: 1\r\nContent-Length: 2\r\n\r\nok",
    )
    .await
}

/// An origin answering every request head (requests here have no body)
/// with `reply`, byte for byte; the heads it got come out of the channel.
async fn scripted_origin(reply: &'static str) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head: Vec<u8> = got.drain(..end + 4).collect();
                        let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
                        if s.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// The lower-cased field names of a head.
fn field_names(head: &str) -> Vec<String> {
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, _)| n.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn connection_level_fields_stop_at_the_proxy_both_ways() {
    let (origin, mut heads) = hop_by_hop_origin().await;
    let legate = Legate::start(
        &front_bootstrap("", &route("/", "o", ""), &static_cluster("o", origin, "")),
        &[],
    );
    let front = legate.addr("front");
    let mut s = TcpStream::connect(front).await.unwrap();
    // Twice on one connection: the client's keep-alive holds although its
    // `connection` field went no further.
    for i in 0..2 {
        s.write_all(
            b"GET /hop HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Drop\r\n\
              Keep-Alive: timeout=9\r\nProxy-Connection: keep-alive\r\nX-Drop: 1\r\n\
              TE: trailers\r\nX-Keep: 1\r\n\r\n",
        )
        .await
        .unwrap();
        let reply = read_responses(&mut s, 1).await.remove(0);
        assert!(reply.starts_with("HTTP/1.1 200"), "request {i}: {reply}");
        let names = field_names(&reply);
        assert!(names.contains(&"x-resp-keep".to_string()), "request {i}: {reply}");
        for gone in ["connection", "keep-alive", "proxy-connection", "x-resp-drop"] {
            assert!(
                !names.contains(&gone.to_string()),
                "request {i}: {gone} in {reply}"
            );
        }
        let seen = tokio::time::timeout(Duration::from_secs(5), heads.recv())
            .await
            .expect("the origin got the request")
            .unwrap();
        let names = field_names(&seen);
        for kept in ["x-keep", "te"] {
            assert!(
                names.contains(&kept.to_string()),
                "request {i}: no {kept} in {seen}"
            );
        }
        for gone in ["keep-alive", "proxy-connection", "x-drop"] {
            assert!(
                !names.contains(&gone.to_string()),
                "request {i}: {gone} in {seen}"
            );
        }
    }
}

/// A response legate changes only by its own fields is written from the
/// origin's head as it came (names lowercased); one with response header
/// mutations goes through a header map. The client must not be able to
/// tell the two apart: same fields, same order, the origin's `server` and
/// `x-envoy-upstream-service-time` replaced where they stood, its
/// `date` kept, its connection-level fields dropped.
#[tokio::test]
async fn a_response_head_reads_the_same_written_raw_or_from_a_map() {
    let (origin, _heads) = scripted_origin(
        "HTTP/1.1 200 OK\r\nX-First: 1\r\nServer: origin/1.0\r\nSet-Cookie: a=1\r\n\
         Set-Cookie: b=2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
         X-Envoy-Upstream-Service-Time: 999\r\nDate: Tue, 01 Jan 2030 00:00:00 GMT\r\n\
         X-Empty: \r\nCONTENT-LENGTH: 2\r\n\r\nok",
    )
    .await;
    let routes = format!(
        "{}              - match: {{prefix: \"/map\"}}\n                route: {{cluster: o}}\n                response_headers_to_add: [{{header: {{key: x-added, value: \"1\"}}}}]\n",
        route("/raw", "o", "")
    );
    let legate = Legate::start(
        &front_bootstrap("", &routes, &static_cluster("o", origin, "")),
        &[],
    );
    let mut s = TcpStream::connect(legate.addr("front")).await.unwrap();
    let want = [
        "x-first: 1",
        "server: envoy",
        "set-cookie: a=1",
        "set-cookie: b=2",
        "x-envoy-upstream-service-time: ?",
        "date: Tue, 01 Jan 2030 00:00:00 GMT",
        "x-empty: ",
        "content-length: 2",
    ];
    // Twice each, on one connection: the connection stays usable.
    for path in ["/raw", "/map", "/raw", "/map"] {
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let reply = read_responses(&mut s, 1).await.remove(0);
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "ok", "{path}: {reply}");
        let mut lines = head.lines();
        assert_eq!(lines.next(), Some("HTTP/1.1 200 OK"), "{path}: {reply}");
        let fields: Vec<String> = lines
            .filter(|l| *l != "x-added: 1")
            .map(|l| match l.strip_prefix("x-envoy-upstream-service-time: ") {
                // legate's own measure, never the origin's 999.
                Some(ms) if ms != "999" && ms.parse::<u64>().is_ok() => {
                    "x-envoy-upstream-service-time: ?".into()
                }
                _ => l.to_string(),
            })
            .collect();
        assert_eq!(fields, want, "{path}: {reply}");
        assert_eq!(head.contains("x-added: 1"), path == "/map", "{path}: {reply}");
    }
}

/// A request head legate changes only by its own additions is forwarded
/// from the client's lines (names lowercased); one whose route has request
/// header mutations goes through a header map. The origin must not be able
/// to tell the two apart: same fields in the same order, connection-level
/// fields dropped, legate's additions after the client's fields. Repeated
/// names are the one difference: the raw head keeps the client's order,
/// as Envoy does; the map groups them by name.
#[tokio::test]
async fn a_request_head_reads_the_same_forwarded_raw_or_from_a_map() {
    let (origin, mut heads) = scripted_origin("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").await;
    let routes = format!(
        "{}              - match: {{prefix: \"/map\"}}\n                route: {{cluster: o}}\n                request_headers_to_add: [{{header: {{key: x-added, value: \"1\"}}}}]\n",
        route("/raw", "o", "")
    );
    // An edge proxy: x-forwarded-for and x-envoy-external-address are added too.
    let legate = Legate::start(
        &front_bootstrap(
            "          use_remote_address: true\n",
            &routes,
            &static_cluster("o", origin, ""),
        ),
        &[],
    );
    let mut s = TcpStream::connect(legate.addr("front")).await.unwrap();
    let want = [
        "GET /P HTTP/1.1",
        "host: example.com:8080",
        "user-agent: t/1",
        "accept: */*",
        "x-spaced: v",
        "x-empty: ",
        "content-length: 0",
        "x-forwarded-for: ?",
        "x-forwarded-proto: http",
        "x-envoy-external-address: 127.0.0.1",
        "x-request-id: ?",
        "x-envoy-expected-rq-timeout-ms: 15000",
    ];
    for path in ["/raw", "/map", "/raw", "/map"] {
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: t/1\r\n\
                 Connection: keep-alive\r\nAccept: */*\r\nKeep-Alive: timeout=9\r\n\
                 X-Spaced:   v  \r\nX-Empty:\r\nCONTENT-LENGTH: 0\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let reply = read_responses(&mut s, 1).await.remove(0);
        assert!(reply.starts_with("HTTP/1.1 200"), "{path}: {reply}");
        assert_eq!(origin_saw(&mut heads, path).await, want, "{path}");
    }
    // Repeated names: in the client's order raw, grouped from a map.
    for (path, order) in [
        ("/raw", ["x-a: 1", "x-b: 2", "x-a: 3"]),
        ("/map", ["x-a: 1", "x-a: 3", "x-b: 2"]),
    ] {
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-B: 2\r\nX-A: 3\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        read_responses(&mut s, 1).await;
        let fields = origin_saw(&mut heads, path).await;
        let got: Vec<&str> = fields
            .iter()
            .map(String::as_str)
            .filter(|l| l.starts_with("x-a") || l.starts_with("x-b"))
            .collect();
        assert_eq!(got, order, "{path}: {fields:?}");
    }
}

/// The next head `scripted_origin` got, line by line, with `path` as `/P`
/// and the values that differ from request to request (the request id, the
/// address appended to x-forwarded-for) as `?`; `x-added: 1` left out.
async fn origin_saw(heads: &mut tokio::sync::mpsc::UnboundedReceiver<String>, path: &str) -> Vec<String> {
    let head = tokio::time::timeout(Duration::from_secs(5), heads.recv())
        .await
        .expect("the origin got the request")
        .unwrap();
    head.lines()
        .filter(|l| !l.is_empty() && *l != "x-added: 1")
        .map(|l| {
            let l = l.replace(path, "/P");
            match l.split_once(": ") {
                Some((n @ ("x-request-id" | "x-forwarded-for"), v)) if !v.is_empty() => format!("{n}: ?"),
                _ => l,
            }
        })
        .collect()
}
