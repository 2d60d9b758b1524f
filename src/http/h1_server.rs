//! Downstream HTTP/1.1 connections, served by the connection's own task.
//!
//! The task reads a request head, hands the request to the proxy
//! (`proxy::handle`) and, while the proxy works, reads the request body
//! from the socket into a one-frame slot that the request body (read by the
//! upstream exchange) takes from. It then writes the response head and
//! body, and goes on with the next request. Requests on a connection are
//! served one after the other (pipelined ones wait in the read buffer).
//!
//! Why not hyper's server connection: measured with callgrind on the bench
//! (`bench/instructions`), hyper's dispatcher, with its head parsing into
//! 101 preallocated slots, body channel and write buffering, was a third of
//! the worker's user-space instructions per proxied request. HTTP/2 is still
//! served by hyper (`server.rs`), which this codec hands a connection to when
//! it starts with the HTTP/2 preface (codec AUTO).
//!
//! Envoy's HTTP/1 codec behaviour followed here (its `codec_impl.cc` and
//! `conn_manager_impl.cc`): codec errors get a local reply (`Bad Request`,
//! `Request Header Fields Too Large`, `Not Implemented`) with
//! `connection: close`, the `DPE` flag and Envoy's details, and are logged;
//! `request_headers_timeout` is 408 `request header timeout`;
//! `Expect: 100-continue` is answered at once unless `proxy_100_continue`;
//! HTTP/1 trailers are dropped (Envoy's `enable_trailers` is off by
//! default); an unknown status code's reason phrase is `Unknown`.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::body::{BodyError, DownstreamBody, ResponseBody};
use super::h1_wire::{
    decode_chunked, last_chunk, parse_decimal, poll_fill, poll_write_queue, put_line, put_value, queue_chunk,
    Chunked, ConnectionFields, Decoded, FieldKind, FieldSpans, RawHead, RawRequest,
};
use super::idle::IdleEntry;
use super::proxy::{self, ConnInfo};
use crate::stream_info::ResponseFlags;

/// The start of every HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long a draining connection that has not sent a request yet is kept
/// open for one to arrive (it then gets `connection: close`).
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_millis(500);

/// The upstream side of an upgrade (`101 Switching Protocols`), put in the
/// response's extensions by the proxy: once the 101 is written, the codec
/// tunnels the downstream connection to it.
#[derive(Clone)]
pub struct UpstreamUpgrade(pub hyper::upgrade::OnUpgrade);

/// What the codec leaves to its caller: an HTTP/2 connection (its preface
/// already read) for hyper.
pub struct HandOff {
    pub stream: TcpStream,
    pub read: Bytes,
}

/// Serves HTTP/1.1 requests on `stream` until the client closes it, an
/// error, the idle timeout, or a drain. With `sniff_h2`, a connection that
/// opens with the HTTP/2 preface is handed back instead.
pub async fn serve(
    stream: TcpStream,
    conn: Arc<ConnInfo>,
    drain: watch::Receiver<bool>,
    sniff_h2: bool,
) -> Option<HandOff> {
    let hcm = conn.listener.hcm.clone();
    let mut c = Connection {
        io: stream,
        read: BytesMut::new(),
        out: VecDeque::new(),
        head_buf: BytesMut::new(),
        drain: Box::pin(drained(drain.clone())),
        drain_rx: drain,
        drain_armed: false,
        draining: false,
        idle_after: hcm.idle_timeout,
        idle_entry: IdleEntry::default(),
        last_active: Instant::now(),
        served: 0,
        conn,
    };
    loop {
        let next = c.read_head(sniff_h2 && c.served == 0).await;
        c.idle_entry.disarm();
        let head = match next {
            Ok(Next::Request(head)) => head,
            Ok(Next::Http2) => {
                return Some(HandOff {
                    stream: c.io,
                    read: c.read.freeze(),
                })
            }
            Ok(Next::Close) => break,
            Err(reject) => {
                c.reject(None, reject).await;
                break;
            }
        };
        c.served += 1;
        if let Err(refusal) = head.framing {
            c.reject(Some(&head.parts), refusal).await;
            break;
        }
        match c.exchange(head).await {
            After::KeepAlive => c.last_active = Instant::now(),
            After::Close => break,
            After::Finished => return None,
            After::Tunnel(up) => {
                c.tunnel(up).await;
                return None;
            }
        }
    }
    let _ = c.io.shutdown().await;
    linger(&mut c.io).await;
    None
}

/// After our FIN, reads (and drops) what the client still sends, for a
/// bounded time and amount, before the socket is closed: closing with
/// unread bytes makes the kernel send a reset, which can destroy the
/// response the client has not read yet (e.g. a 413 or 404 answered
/// before the request body was read). Envoy's `delayed_close_timeout`
/// (1 s) and nginx's lingering close do the same.
pub(super) async fn linger(io: &mut TcpStream) {
    const LINGER_TIME: Duration = Duration::from_secs(1);
    const LINGER_BYTES: usize = 1024 * 1024;
    let mut buf = [0u8; 8 * 1024];
    let mut dropped = 0;
    let _ = tokio::time::timeout(LINGER_TIME, async {
        while dropped < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => dropped += n,
            }
        }
    })
    .await;
}

/// Resolves when the listener starts draining (or goes away).
pub(super) async fn drained(mut drain: watch::Receiver<bool>) {
    if !*drain.borrow_and_update() {
        let _ = drain.changed().await;
    }
}

struct Connection {
    io: TcpStream,
    read: BytesMut,
    /// Response bytes not written yet.
    out: VecDeque<Bytes>,
    /// Where response heads are written (see `queue_head`).
    head_buf: BytesMut,
    drain: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// The same signal, read without polling the future: once polled, the
    /// future stays registered and wakes this task when the drain starts,
    /// so afterwards an atomic load tells whether it has (polling the
    /// future each time was ~1k instructions per request).
    drain_rx: watch::Receiver<bool>,
    drain_armed: bool,
    draining: bool,
    /// `common_http_protocol_options.idle_timeout`, watched by the worker's
    /// idle sweeper while the connection waits for a request (see idle.rs).
    idle_after: Option<Duration>,
    idle_entry: IdleEntry,
    last_active: Instant,
    served: u32,
    conn: Arc<ConnInfo>,
}

/// What came after a request's end on the wire.
// Not boxed: one per request, returned once; a box would be an allocation.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(Head),
    Http2,
    Close,
}

/// Why a request was refused before the proxy saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Malformed(&'static str),
    HeadersTooLarge,
    TooManyHeaders,
    ContentLengthAndChunked,
    TransferEncoding,
    HeadersTimeout,
}

impl Refusal {
    /// Status, body, response flag and `%RESPONSE_CODE_DETAILS%`, as Envoy.
    fn reply(self) -> (StatusCode, &'static str, Option<ResponseFlags>, &'static str) {
        let dpe = Some(ResponseFlags::DOWNSTREAM_PROTOCOL_ERROR);
        match self {
            Refusal::Malformed(_) => (StatusCode::BAD_REQUEST, "Bad Request", dpe, "http1.codec_error"),
            Refusal::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request Header Fields Too Large",
                dpe,
                "http1.headers_too_large",
            ),
            Refusal::TooManyHeaders => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "Request Header Fields Too Large",
                dpe,
                "http1.too_many_headers",
            ),
            Refusal::ContentLengthAndChunked => (
                StatusCode::BAD_REQUEST,
                "Bad Request",
                dpe,
                "http1.content_length_and_chunked_not_allowed",
            ),
            Refusal::TransferEncoding => (
                StatusCode::NOT_IMPLEMENTED,
                "Not Implemented",
                dpe,
                "http1.invalid_transfer_encoding",
            ),
            Refusal::HeadersTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request header timeout",
                None,
                "request_header_timeout",
            ),
        }
    }
}

/// A parsed request head and how its body is framed.
struct Head {
    parts: http::request::Parts,
    /// Refused framing is answered after parsing, so the log has the
    /// request's method and path.
    framing: Result<BodyFraming, Refusal>,
    /// What its connection-level fields said (keep-alive is decided
    /// without lookups).
    connection: ConnectionFields,
    /// The head as it came, when it may go upstream so (`parts.headers` is
    /// empty then). Boxed: the request is moved a dozen times on its way
    /// upstream, and the head's spans and notes are a hundred bytes.
    raw: Option<Box<RawRequest>>,
}

/// How a request body is delimited (RFC 9112 §6.3, with Envoy's refusals).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// Decides a request's body framing from its headers. Envoy refuses a
/// request with both `content-length` and `transfer-encoding` (unless
/// `allow_chunked_length`, not supported), any transfer coding but exactly
/// `chunked` (501), and more than one `content-length` (even equal ones).
pub fn request_body_framing(headers: &HeaderMap) -> Result<BodyFraming, Refusal> {
    body_framing(
        headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .map(HeaderValue::as_bytes),
        headers.get_all(CONTENT_LENGTH).iter().map(HeaderValue::as_bytes),
    )
}

/// [`request_body_framing`] over the values of the `transfer-encoding` and
/// `content-length` fields, however the head is held.
fn body_framing<'a>(
    te: impl Iterator<Item = &'a [u8]>,
    mut cl: impl Iterator<Item = &'a [u8]>,
) -> Result<BodyFraming, Refusal> {
    let mut te = te.peekable();
    let has_te = te.peek().is_some();
    let (first_cl, second_cl) = (cl.next(), cl.next());
    if has_te && first_cl.is_some() {
        return Err(Refusal::ContentLengthAndChunked);
    }
    if has_te {
        let mut codings = te.flat_map(|v| v.split(|b| *b == b',')).map(<[u8]>::trim_ascii);
        return match (codings.next(), codings.next()) {
            (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(BodyFraming::Chunked),
            _ => Err(Refusal::TransferEncoding),
        };
    }
    match (first_cl, second_cl) {
        (None, _) => Ok(BodyFraming::None),
        (Some(v), None) => match parse_decimal(v) {
            Some(0) => Ok(BodyFraming::None),
            Some(n) => Ok(BodyFraming::Length(n)),
            None => Err(Refusal::Malformed("invalid content-length")),
        },
        _ => Err(Refusal::Malformed("multiple content-length headers")),
    }
}

/// Parses a request head at the start of `buf`, consuming it; `None` when
/// more bytes are needed. `max_headers` is `max_headers_count`. `keep_raw`:
/// nothing on this connection records request headers, so a request in
/// origin form that `RawRequest` accepts stays raw (its map left empty).
fn parse_head(
    buf: &mut BytesMut,
    max_headers: usize,
    max_bytes: usize,
    keep_raw: bool,
) -> Result<Option<Head>, Refusal> {
    // One slot more than allowed, to tell "too many" from "just enough".
    let slots_wanted = max_headers + 1;
    let mut stack = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
    let mut heap = Vec::new();
    let slots: &mut [MaybeUninit<httparse::Header<'_>>] = if slots_wanted <= stack.len() {
        &mut stack[..slots_wanted]
    } else {
        heap.resize_with(slots_wanted, MaybeUninit::uninit);
        &mut heap[..]
    };
    let mut request = httparse::Request::new(&mut []);
    let base = buf.as_ptr() as usize;
    let parsed =
        httparse::ParserConfig::default().parse_request_with_uninit_headers(&mut request, buf, slots);
    let (len, spans, method, target, version) = match parsed {
        Ok(httparse::Status::Complete(len)) => {
            if request.headers.len() > max_headers {
                return Err(Refusal::TooManyHeaders);
            }
            let method = Method::from_bytes(request.method.unwrap_or("").as_bytes())
                .map_err(|_| Refusal::Malformed("invalid method"))?;
            let path = request.path.unwrap_or("");
            let target = (
                path.as_ptr() as usize - base,
                path.as_ptr() as usize - base + path.len(),
            );
            let version = if request.version == Some(0) {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            };
            (
                len,
                FieldSpans::new(base, request.headers),
                method,
                target,
                version,
            )
        }
        Ok(httparse::Status::Partial) if buf.len() > max_bytes => return Err(Refusal::HeadersTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooManyHeaders),
        Err(_) => return Err(Refusal::Malformed("malformed request head")),
    };
    if len > max_bytes {
        return Err(Refusal::HeadersTooLarge);
    }
    let head = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(target.0..target.1))
        .map_err(|_| Refusal::Malformed("invalid request target"))?;
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.version = version;
    let mut raw = RawHead { head, spans };
    // An absolute-form target's authority overrides `host`: a map then.
    if keep_raw && uri.authority().is_none() {
        let (connection, plain) = raw.scan();
        match RawRequest::new(raw, connection, plain) {
            Ok(request) => {
                let framing = if connection.content_length || connection.transfer_encoding {
                    body_framing(
                        request.values(FieldKind::TransferEncoding),
                        request.values(FieldKind::ContentLength),
                    )
                } else {
                    Ok(BodyFraming::None)
                };
                match framing {
                    Ok(framing) => {
                        parts.uri = uri;
                        return Ok(Some(Head {
                            parts,
                            framing: Ok(framing),
                            connection,
                            raw: Some(Box::new(request)),
                        }));
                    }
                    // Refused: answered from a map, as any refusal.
                    Err(_) => raw = request.head,
                }
            }
            Err(back) => raw = back,
        }
    }
    // Room for what the proxy adds (x-request-id, x-forwarded-*, …)
    // without the map growing; the fields framing and keep-alive depend on
    // are noted on the way.
    let (headers, connection) = raw.spans.fields(&raw.head, 8).map_err(Refusal::Malformed)?;
    // Most requests (GETs) have neither field: no lookups then.
    let framing = if connection.content_length || connection.transfer_encoding {
        request_body_framing(&headers)
    } else {
        Ok(BodyFraming::None)
    };
    parts.uri = uri;
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        framing,
        connection,
        raw: None,
    }))
}

/// What the connection does after a response.
enum After {
    KeepAlive,
    Close,
    /// Close, and no lingering: the client said this request was its last
    /// (`connection: close`, or HTTP/1.0 without keep-alive) and all of it
    /// was read, so nothing unread can be in the socket to turn the close
    /// into a reset (nginx skips its lingering close then too). Saves a
    /// shutdown, a timer and a wake-up per connection.
    Finished,
    Tunnel(UpstreamUpgrade),
}

impl Connection {
    fn hcm(&self) -> &crate::model::listener::Hcm {
        &self.conn.listener.hcm
    }

    /// Polls the drain signal; true once draining.
    fn poll_draining(&mut self, cx: &mut Context<'_>) -> bool {
        if self.draining {
            return true;
        }
        let signalled = !self.drain_armed || self.drain_rx.has_changed().unwrap_or(true);
        if signalled {
            self.drain_armed = true;
            if self.drain.as_mut().poll(cx).is_ready() {
                self.draining = true;
            }
        }
        self.draining
    }

    /// Whether the idle timeout has passed; if not, the connection is in
    /// its worker's idle set until it has.
    fn idle_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(after) = self.idle_after else {
            return false;
        };
        let deadline = self.last_active + after;
        if deadline <= Instant::now() {
            return true;
        }
        self.idle_entry.arm(deadline, cx.waker());
        false
    }

    /// Waits for the next request head.
    async fn read_head(&mut self, sniff_h2: bool) -> Result<Next, Refusal> {
        let max_headers = self.hcm().max_headers_count as usize;
        // Envoy counts names and values against max_request_headers_kb; the
        // raw head also holds the request line and separators.
        let max_bytes = self.hcm().max_request_headers_kb as usize * 1024 + 8 * 1024;
        let headers_timeout = self.hcm().request_headers_timeout;
        // Heads are kept raw unless something records them (access logs,
        // formatted header values): those read a map.
        let keep_raw = !self.conn.records_headers;
        let mut head_timer: Option<Pin<Box<Sleep>>> = None;
        let mut grace: Option<Pin<Box<Sleep>>> = None;
        poll_fn(|cx| loop {
            if !self.read.is_empty() {
                if sniff_h2 && H2_PREFACE.starts_with(&self.read[..self.read.len().min(H2_PREFACE.len())]) {
                    if self.read.len() >= H2_PREFACE.len() {
                        return Poll::Ready(Ok(Next::Http2));
                    }
                } else if let Some(head) = parse_head(&mut self.read, max_headers, max_bytes, keep_raw)? {
                    return Poll::Ready(Ok(Next::Request(head)));
                }
                // The first bytes of a head arm request_headers_timeout.
                if head_timer.is_none() {
                    if let Some(t) = headers_timeout {
                        head_timer = Some(Box::pin(tokio::time::sleep(t)));
                    }
                }
            }
            if let Some(t) = head_timer.as_mut() {
                if t.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(Refusal::HeadersTimeout));
                }
            }
            if self.read.is_empty() {
                if self.poll_draining(cx) {
                    // A connection accepted just before the drain may have a
                    // request on its way: give it a moment to arrive.
                    if self.served > 0 {
                        return Poll::Ready(Ok(Next::Close));
                    }
                    let g = grace.get_or_insert_with(|| Box::pin(tokio::time::sleep(FIRST_REQUEST_GRACE)));
                    if g.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Ok(Next::Close));
                    }
                }
                if self.idle_expired(cx) {
                    self.hcm().stats.downstream_cx_idle_timeout.inc();
                    return Poll::Ready(Ok(Next::Close));
                }
            }
            match ready!(poll_fill(&self.io, &mut self.read, cx)) {
                Ok(0) | Err(_) => return Poll::Ready(Ok(Next::Close)),
                Ok(_) => {}
            }
        })
        .await
    }

    /// Answers a refused request and flushes the reply.
    async fn reject(&mut self, head: Option<&http::request::Parts>, refusal: Refusal) {
        let (status, body, flag, details) = refusal.reply();
        if refusal != Refusal::HeadersTimeout {
            self.hcm().stats.downstream_cx_protocol_error.inc();
        } else {
            self.hcm().stats.downstream_rq_header_timeout.inc();
        }
        tracing::debug!("refused a downstream request: {refusal:?}");
        let response = proxy::reject(&self.conn, head, status, body, flag, details);
        let framing = self.queue_head(&response, false, Version::HTTP_11, false);
        let mut body = response.into_body();
        let _ = poll_fn(|cx| self.poll_write_body(&mut body, framing, &mut None, cx)).await;
    }

    /// Serves one request: the proxy's work, the request body read
    /// meanwhile, then the response.
    async fn exchange(&mut self, head: Head) -> After {
        let Head {
            parts,
            framing,
            connection,
            raw,
        } = head;
        let framing = framing.unwrap_or(BodyFraming::None);
        let version = parts.version;
        let is_head = parts.method == Method::HEAD;
        let client_keep_alive = connection.keeps_alive(version);
        let expect_continue = version == Version::HTTP_11
            && framing != BodyFraming::None
            && parts
                .headers
                .get(EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let mut pump = match framing {
            BodyFraming::None => None,
            f => Some(Pump::new(f)),
        };
        let mut body = match &pump {
            None => RequestBody::empty(),
            Some(p) => RequestBody::new(p.slot.clone(), framing),
        };
        // A raw head's connection-level fields are skipped as it is written.
        body.hop_by_hop = connection.hop_by_hop && raw.is_none();
        body.raw = raw;
        if expect_continue {
            if !self.hcm().proxy_100_continue {
                // Envoy answers at once and counts it as a 1xx response.
                self.out
                    .push_back(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"));
                let stats = &self.hcm().stats;
                stats.downstream_rq_xx.record(100);
                stats.downstream_rq_completed.inc();
            } else if let Some(p) = pump.as_mut() {
                // The upstream's 100 is not relayed: ours goes when the
                // body is first asked for.
                p.send_continue = true;
            }
        }
        let request = Request::from_parts(parts, DownstreamBody::H1(body));
        let mut handler = std::pin::pin!(proxy::handle(self.conn.clone(), request));
        let mut drain_deadline: Option<Pin<Box<Sleep>>> = None;
        let mut broken = false;
        let response = poll_fn(|cx| {
            if !self.out.is_empty() && poll_write_queue(&self.io, &mut self.out, cx).is_ready() {
                // Written, or failed: then the response cannot be sent either.
                broken |= !self.out.is_empty();
                self.out.clear();
            }
            if let Some(p) = pump.as_mut() {
                if p.poll(&self.io, &mut self.read, &mut self.out, cx).is_ready() && p.failed {
                    broken = true;
                }
            } else if self.poll_client_gone(cx) {
                broken = true;
            }
            if broken {
                return Poll::Ready(None);
            }
            if self.poll_drain_expired(&mut drain_deadline, cx) {
                return Poll::Ready(None);
            }
            match handler.as_mut().poll(cx) {
                Poll::Ready(Ok(r)) => Poll::Ready(Some(r)),
                Poll::Ready(Err(never)) => match never {},
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        let Some(response) = response else {
            return After::Close;
        };
        let upgrade = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        // A request not fully received when its response starts ends the
        // connection, announced (Envoy's connection manager does the same).
        let request_complete = pump.as_ref().is_none_or(|p| p.done && !p.failed);
        let mut keep = client_keep_alive && !self.draining && !upgrade && request_complete;
        let framing = self.queue_head(&response, is_head, version, keep);
        keep &= framing.keeps_alive;
        let (mut parts, mut body) = response.into_parts();
        let written = poll_fn(|cx| {
            if self.poll_drain_expired(&mut drain_deadline, cx) {
                return Poll::Ready(Err(()));
            }
            self.poll_write_body(&mut body, framing, &mut pump, cx)
        })
        .await;
        drop(body);
        if written.is_err() {
            return After::Close;
        }
        if upgrade {
            return match parts.extensions.remove::<UpstreamUpgrade>() {
                Some(up) => After::Tunnel(up),
                None => After::Close,
            };
        }
        // A request body not read to its end leaves the connection unusable.
        let body_read = pump.is_none_or(|p| p.done && !p.failed);
        if keep && body_read {
            After::KeepAlive
        } else if !client_keep_alive && body_read && self.read.is_empty() {
            After::Finished
        } else {
            After::Close
        }
    }

    /// Once a drain has started, in-flight requests get `--drain-time-s`.
    fn poll_drain_expired(&mut self, deadline: &mut Option<Pin<Box<Sleep>>>, cx: &mut Context<'_>) -> bool {
        if !self.poll_draining(cx) {
            return false;
        }
        let drain_time = self.conn.drain_time;
        let d = deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(drain_time)));
        d.as_mut().poll(cx).is_ready()
    }

    /// While a body-less request is served: whether the client closed the
    /// connection (its request is then abandoned, as hyper and Envoy do).
    /// Pipelined requests are read ahead, up to a bound.
    fn poll_client_gone(&mut self, cx: &mut Context<'_>) -> bool {
        // Pipelined bytes are read ahead up to the listener's buffer limit.
        if self.read.len() >= self.conn.listener.buffer_limit {
            return false;
        }
        matches!(
            poll_fill(&self.io, &mut self.read, cx),
            Poll::Ready(Ok(0) | Err(_))
        )
    }

    /// Queues the response head; says how the body goes on the wire.
    fn queue_head(
        &mut self,
        response: &Response<ResponseBody>,
        is_head: bool,
        version: Version,
        keep_alive: bool,
    ) -> WireFraming {
        let status = response.status();
        let headers = response.headers();
        let body = response.body();
        let no_body = is_head || super::status_has_no_body(status);
        let raw = body.raw_head();
        let size = headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>()
            + raw.map_or(0, |r| r.head.len())
            + 160;
        // The connection's head buffer: the previous head's bytes are
        // written (and dropped) by now, so its storage is reused and a head
        // costs no allocation (a new buffer per head cost two: its bytes
        // and, frozen, their shared header).
        self.head_buf.reserve(size);
        let out = &mut self.head_buf;
        out.put_slice(if version == Version::HTTP_10 {
            b"HTTP/1.0 "
        } else {
            b"HTTP/1.1 "
        });
        out.put_slice(status.as_str().as_bytes());
        out.put_u8(b' ');
        out.put_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
        out.put_slice(b"\r\n");
        // One pass writes the fields and notes those the framing depends on.
        let mut noted = HeadNotes::default();
        match raw {
            Some(raw) => noted.put_raw(out, raw, headers),
            None => {
                for (name, value) in headers {
                    noted.put(out, name, value);
                }
            }
        }
        let HeadNotes {
            has_length,
            has_date,
            close_named,
        } = noted;
        let mut framing = WireFraming {
            chunked: false,
            skip_body: no_body,
            keeps_alive: keep_alive && !close_named,
        };
        if !no_body && !has_length {
            match body.size_hint().exact() {
                Some(n) => {
                    out.put_slice(b"content-length: ");
                    out.put_slice(itoa(n, &mut [0u8; 20]));
                    out.put_slice(b"\r\n");
                }
                None if version == Version::HTTP_11 => {
                    framing.chunked = true;
                    out.put_slice(b"transfer-encoding: chunked\r\n");
                }
                // HTTP/1.0: the body ends with the connection.
                None => framing.keeps_alive = false,
            }
        }
        if !has_date {
            out.put_slice(b"date: ");
            with_http_date(|d| out.put_slice(d));
            out.put_slice(b"\r\n");
        }
        if !framing.keeps_alive && !close_named && status != StatusCode::SWITCHING_PROTOCOLS {
            out.put_slice(b"connection: close\r\n");
        } else if framing.keeps_alive && version == Version::HTTP_10 {
            out.put_slice(b"connection: keep-alive\r\n");
        }
        out.put_slice(b"\r\n");
        self.out.push_back(self.head_buf.split().freeze());
        framing
    }

    /// Writes the response body (and what is queued before it), reading
    /// the request body on meanwhile. Err when the connection broke or the
    /// body failed (the client then sees the response cut short).
    fn poll_write_body(
        &mut self,
        body: &mut ResponseBody,
        framing: WireFraming,
        pump: &mut Option<Pump>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), ()>> {
        let mut body_done = framing.skip_body || body.is_end_stream();
        if body_done && framing.chunked {
            self.out.push_back(last_chunk(None));
        }
        loop {
            if let Some(p) = pump.as_mut() {
                // The request body goes on flowing (an origin may answer
                // before reading all of it); its failure only means the
                // connection is not reused.
                let _ = p.poll(&self.io, &mut self.read, &mut self.out, cx);
            }
            let mut body_pending = false;
            // The response is read ahead of a slow client up to the
            // listener's buffer limit (per_connection_buffer_limit_bytes).
            let limit = self.conn.listener.buffer_limit;
            while !body_done && self.out.iter().map(Bytes::len).sum::<usize>() < limit {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => {
                        body_pending = true;
                        break;
                    }
                    Poll::Ready(None) => {
                        body_done = true;
                        if framing.chunked {
                            self.out.push_back(last_chunk(None));
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!("response body failed: {e}");
                        return Poll::Ready(Err(()));
                    }
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) if data.is_empty() => {}
                        Ok(data) if framing.chunked => queue_chunk(&mut self.out, data),
                        Ok(data) => self.out.push_back(data),
                        // Trailers: dropped, as Envoy's HTTP/1 codec does
                        // unless enable_trailers; the body ends with them.
                        Err(_) => {}
                    },
                }
            }
            match poll_write_queue(&self.io, &mut self.out, cx) {
                // A body not sent (HEAD, 204, 304) completes its record when
                // dropped.
                Poll::Ready(Ok(())) if body_done => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) if body_pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                Poll::Pending => {
                    // The client takes nothing now: the response's timers
                    // run on (see `ResponseBody::poll_timers`).
                    if !body_done {
                        if let Poll::Ready(e) = body.poll_timers(cx) {
                            tracing::debug!("response body failed while the client took none of it: {e}");
                            return Poll::Ready(Err(()));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Joins the client to the upgraded upstream connection until either
    /// side closes.
    async fn tunnel(mut self, up: UpstreamUpgrade) {
        let Ok(up) = up.0.await else {
            return;
        };
        let mut up = hyper_util::rt::TokioIo::new(up);
        if !self.read.is_empty() && up.write_all(&self.read).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut self.io, &mut up).await;
    }
}

/// How a response body goes on the wire.
#[derive(Clone, Copy, Debug)]
struct WireFraming {
    chunked: bool,
    skip_body: bool,
    keeps_alive: bool,
}

pub(super) fn itoa(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

thread_local! {
    /// The `date` header value, formatted once a second per worker.
    static DATE_CACHE: std::cell::RefCell<(u64, [u8; 29])> = const { std::cell::RefCell::new((0, [0; 29])) };
}

pub(super) fn with_http_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                c.1.copy_from_slice(text.as_bytes());
                c.0 = secs;
            }
        }
        f(&c.1);
    });
}

/// One frame on its way from the connection to the request body.
#[derive(Default)]
struct Slot {
    frame: Option<Result<Frame<Bytes>, BodyError>>,
    /// No frame follows the one in `frame` (or none is left).
    end: bool,
    /// The body has been asked for a frame (what `100 Continue` waits for;
    /// the socket is not read for the body before).
    wanted: bool,
    reader: Option<Waker>,
    writer: Option<Waker>,
    /// The request body was dropped.
    abandoned: bool,
}

type SharedSlot = Arc<Mutex<Slot>>;

fn lock(slot: &SharedSlot) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// The reading side of a request body: the connection task fills the
/// slot, one frame at a time (memory stays bounded whatever the body size).
pub struct RequestBody {
    slot: Option<SharedSlot>,
    exact: Option<u64>,
    ended: bool,
    /// The request's map holds a hop-by-hop field (told here, where the
    /// head was parsed, so the proxy skips the walk when it holds none).
    hop_by_hop: bool,
    /// The request's head as it came, while it has no map (carried with
    /// the body, which goes wherever the request goes).
    raw: Option<Box<RawRequest>>,
}

impl RequestBody {
    fn empty() -> RequestBody {
        RequestBody {
            slot: None,
            exact: Some(0),
            ended: true,
            hop_by_hop: true,
            raw: None,
        }
    }

    fn new(slot: SharedSlot, framing: BodyFraming) -> RequestBody {
        RequestBody {
            slot: Some(slot),
            exact: match framing {
                BodyFraming::Length(n) => Some(n),
                _ => None,
            },
            ended: false,
            hop_by_hop: true,
            raw: None,
        }
    }

    /// Whether the request's map may hold hop-by-hop fields.
    pub fn has_hop_by_hop_fields(&self) -> bool {
        self.hop_by_hop
    }

    /// The request's head, while it is kept raw.
    pub fn raw_head(&self) -> Option<&RawRequest> {
        self.raw.as_deref()
    }

    pub fn raw_head_mut(&mut self) -> Option<&mut RawRequest> {
        self.raw.as_deref_mut()
    }

    /// Turns a raw head into the request's map: its fields, the ones the
    /// proxy added to it, then any in `headers` (appended, as they would
    /// have been to a map). Nothing to do for a request with a map already.
    pub fn materialize(&mut self, headers: &mut HeaderMap) -> Result<(), &'static str> {
        let Some(raw) = self.raw.take() else {
            return Ok(());
        };
        let added = std::mem::take(headers);
        let (mut map, hop_by_hop) = raw.into_map(added.len() + 4)?;
        let mut last = None;
        for (name, value) in added {
            // The iterator names a field only at its first value.
            if let Some(n) = name {
                last = Some(n);
            }
            if let Some(n) = &last {
                map.append(n.clone(), value);
            }
        }
        *headers = map;
        self.hop_by_hop = hop_by_hop;
        Ok(())
    }

    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let Some(slot) = &self.slot else {
            return Poll::Ready(None);
        };
        let mut s = lock(slot);
        if let Some(frame) = s.frame.take() {
            if s.end || frame.is_err() {
                self.ended = true;
            }
            if let Some(w) = s.writer.take() {
                w.wake();
            }
            return Poll::Ready(Some(frame));
        }
        if s.end {
            self.ended = true;
            return Poll::Ready(None);
        }
        s.wanted = true;
        s.reader = Some(cx.waker().clone());
        if let Some(w) = s.writer.take() {
            w.wake();
        }
        Poll::Pending
    }

    pub fn is_end_stream(&self) -> bool {
        self.ended
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.exact {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let Some(slot) = &self.slot {
            let mut s = lock(slot);
            s.abandoned = true;
            if let Some(w) = s.writer.take() {
                w.wake();
            }
        }
    }
}

/// The connection's side of a request body: decodes it from the read
/// buffer into the slot when the body wants a frame.
struct Pump {
    slot: SharedSlot,
    state: PumpState,
    /// Send `100 Continue` when the body is first asked for.
    send_continue: bool,
    done: bool,
    failed: bool,
}

#[derive(Clone, Copy)]
enum PumpState {
    Length(u64),
    Chunked(Chunked),
}

impl Pump {
    fn new(framing: BodyFraming) -> Pump {
        Pump {
            slot: Arc::new(Mutex::new(Slot::default())),
            state: match framing {
                BodyFraming::Length(n) => PumpState::Length(n),
                _ => PumpState::Chunked(Chunked::Size),
            },
            send_continue: false,
            done: false,
            failed: false,
        }
    }

    fn deliver(&mut self, frame: Result<Frame<Bytes>, BodyError>, end: bool) {
        let mut s = lock(&self.slot);
        s.frame = Some(frame);
        s.end = end;
        if let Some(r) = s.reader.take() {
            r.wake();
        }
    }

    fn fail(&mut self, what: String) -> Poll<()> {
        self.failed = true;
        self.done = true;
        self.deliver(Err(BodyError::from(what)), true);
        Poll::Ready(())
    }

    /// Ready once the body has been read to its end, failed, or was
    /// abandoned by its reader.
    fn poll(
        &mut self,
        io: &TcpStream,
        read: &mut BytesMut,
        out: &mut VecDeque<Bytes>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        loop {
            if self.done {
                return Poll::Ready(());
            }
            {
                let mut s = lock(&self.slot);
                if s.abandoned {
                    // Nobody reads the rest: the connection cannot be reused.
                    self.done = true;
                    self.failed = true;
                    return Poll::Ready(());
                }
                if !s.wanted || s.frame.is_some() {
                    s.writer = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
            if std::mem::take(&mut self.send_continue) {
                out.push_back(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"));
                let _ = poll_write_queue(io, out, cx);
            }
            match &mut self.state {
                PumpState::Length(left) if !read.is_empty() => {
                    let n = (read.len() as u64).min(*left) as usize;
                    let data = read.split_to(n).freeze();
                    *left -= n as u64;
                    let end = *left == 0;
                    self.done = end;
                    self.deliver(Ok(Frame::data(data)), end);
                    continue;
                }
                PumpState::Length(_) => {}
                PumpState::Chunked(state) => match decode_chunked(state, read) {
                    Err(what) => return self.fail(format!("malformed chunked request body: {what}")),
                    Ok(Decoded::Data(data)) => {
                        self.deliver(Ok(Frame::data(data)), false);
                        continue;
                    }
                    Ok(Decoded::Trailers(t)) => {
                        self.done = true;
                        self.deliver(Ok(Frame::trailers(t)), true);
                        continue;
                    }
                    Ok(Decoded::End) => {
                        self.done = true;
                        let mut s = lock(&self.slot);
                        s.end = true;
                        if let Some(r) = s.reader.take() {
                            r.wake();
                        }
                        continue;
                    }
                    Ok(Decoded::NeedMore) => {}
                },
            }
            match ready!(poll_fill(io, read, cx)) {
                Ok(0) => return self.fail("the client closed the connection in the request body".into()),
                Err(e) => return self.fail(format!("request body read failed: {e}")),
                Ok(_) => {}
            }
        }
    }
}

/// What a response head's fields said, noted as they are written: the
/// framing and the connection's fate depend on them.
#[derive(Default)]
struct HeadNotes {
    has_length: bool,
    has_date: bool,
    close_named: bool,
}

impl HeadNotes {
    /// Writes the origin's fields as they came but for the connection-level
    /// ones, with `own` (the proxy's fields, what the response's map holds
    /// then) in place of same-named ones and after the rest.
    fn put_raw(&mut self, out: &mut BytesMut, raw: &RawHead, own: &HeaderMap) {
        // The proxy's fields (a handful) gathered once for the check each
        // origin field gets; a map iterator per field cost more.
        const FEW: usize = 8;
        let mut few = [None; FEW];
        let many: Vec<_>;
        let own: &[Option<(&HeaderName, &HeaderValue)>] = if own.len() <= FEW {
            for (slot, field) in few.iter_mut().zip(own) {
                *slot = Some(field);
            }
            &few[..own.len()]
        } else {
            many = own.iter().map(Some).collect();
            &many
        };
        // Which of `own` are written already, by position (the first 64).
        let mut written = 0u64;
        for (kind, name, value, line) in raw.lines() {
            match kind {
                // Connection-level: not forwarded (RFC 9110 §7.6.1); this
                // codec frames the body itself.
                FieldKind::Connection
                | FieldKind::KeepAlive
                | FieldKind::ProxyConnection
                | FieldKind::TransferEncoding => continue,
                _ => {}
            }
            let mut replaced = false;
            for (i, (n, v)) in own.iter().flatten().enumerate() {
                if name.len() == n.as_str().len() && name.eq_ignore_ascii_case(n.as_str().as_bytes()) {
                    replaced = true;
                    if i < 64 && written & (1 << i) == 0 {
                        written |= 1 << i;
                        self.put(out, n, v);
                    }
                }
            }
            if replaced {
                continue;
            }
            self.note(kind, value);
            put_line(out, name, value, line);
        }
        for (i, (n, v)) in own.iter().flatten().enumerate() {
            if i >= 64 || written & (1 << i) == 0 {
                self.put(out, n, v);
            }
        }
    }

    /// Writes a field of the response's map, noting it.
    fn put(&mut self, out: &mut BytesMut, name: &HeaderName, value: &HeaderValue) {
        let kind = if name == CONTENT_LENGTH {
            FieldKind::ContentLength
        } else if name == DATE {
            FieldKind::Date
        } else if name == CONNECTION {
            FieldKind::Connection
        } else {
            FieldKind::Other
        };
        self.note(kind, value.as_bytes());
        out.put_slice(name.as_str().as_bytes());
        put_value(out, value.as_bytes());
    }

    fn note(&mut self, kind: FieldKind, value: &[u8]) {
        match kind {
            FieldKind::ContentLength => self.has_length = true,
            FieldKind::Date => self.has_date = true,
            FieldKind::Connection => {
                self.close_named |= value
                    .split(|b| *b == b',')
                    .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::h1_wire::headers;
    use super::*;

    #[test]
    fn request_body_framing_as_envoy() {
        use BodyFraming::*;
        type Case = (
            &'static [(&'static str, &'static str)],
            Result<BodyFraming, Refusal>,
        );
        let cases: &[Case] = &[
            (&[], Ok(None)),
            (&[("content-length", "0")], Ok(None)),
            (&[("content-length", "12")], Ok(Length(12))),
            (&[("transfer-encoding", "chunked")], Ok(Chunked)),
            (&[("transfer-encoding", "Chunked")], Ok(Chunked)),
            (
                &[("transfer-encoding", "chunked"), ("content-length", "3")],
                Err(Refusal::ContentLengthAndChunked),
            ),
            (
                &[("transfer-encoding", "gzip"), ("content-length", "3")],
                Err(Refusal::ContentLengthAndChunked),
            ),
            (&[("transfer-encoding", "gzip")], Err(Refusal::TransferEncoding)),
            (
                &[("transfer-encoding", "gzip, chunked")],
                Err(Refusal::TransferEncoding),
            ),
            (
                &[("transfer-encoding", "chunked, gzip")],
                Err(Refusal::TransferEncoding),
            ),
            (
                &[("transfer-encoding", "chunked"), ("transfer-encoding", "chunked")],
                Err(Refusal::TransferEncoding),
            ),
            (
                &[("content-length", "-1")],
                Err(Refusal::Malformed("invalid content-length")),
            ),
            (
                &[("content-length", "3, 3")],
                Err(Refusal::Malformed("invalid content-length")),
            ),
            (
                &[("content-length", "3"), ("content-length", "3")],
                Err(Refusal::Malformed("multiple content-length headers")),
            ),
        ];
        for (h, want) in cases {
            assert_eq!(request_body_framing(&headers(h)), *want, "{h:?}");
        }
    }

    #[test]
    fn request_heads_parse_incrementally_and_refuse_as_envoy() {
        let wire = b"POST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-A: 1\r\n\r\nhiGET";
        let end = wire.len() - 5;
        for keep_raw in [false, true] {
            for cut in 0..end {
                let mut buf = BytesMut::from(&wire[..cut]);
                assert!(
                    parse_head(&mut buf, 100, 64 * 1024, keep_raw).unwrap().is_none(),
                    "cut {cut}"
                );
            }
            let mut buf = BytesMut::from(&wire[..]);
            let head = parse_head(&mut buf, 100, 64 * 1024, keep_raw).unwrap().unwrap();
            assert_eq!(head.parts.method, Method::POST);
            assert_eq!(head.parts.uri, "/a?b=1");
            assert_eq!(head.parts.version, Version::HTTP_11);
            match &head.raw {
                Some(raw) => {
                    assert!(keep_raw && head.parts.headers.is_empty());
                    assert_eq!((raw.host(), raw.field_count, raw.field_bytes), ("x", 3, 24));
                }
                None => assert_eq!(
                    (keep_raw, head.parts.headers["host"].as_bytes()),
                    (false, &b"x"[..])
                ),
            }
            assert_eq!(head.framing, Ok(BodyFraming::Length(2)));
            assert_eq!(&buf[..], b"hiGET");
        }

        // (wire, max headers, max head bytes, refusal)
        let refusals: &[(&[u8], usize, usize, Refusal)] = &[
            (
                b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n",
                1,
                1024,
                Refusal::TooManyHeaders,
            ),
            (
                b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
                1,
                1024,
                Refusal::TooManyHeaders,
            ),
            (b"GET / HTTP/1.1\r\nA: 1\r\n", 10, 16, Refusal::HeadersTooLarge),
            (
                b"GET / HTTP/1.1\r\nA: 1\r\n\r\n",
                10,
                16,
                Refusal::HeadersTooLarge,
            ),
            (
                b"G@T / HTTP/1.1\r\n\r\n",
                10,
                1024,
                Refusal::Malformed("malformed request head"),
            ),
            (
                b"GET / HTTP/1.1\r\nBad Name: 1\r\n\r\n",
                10,
                1024,
                Refusal::Malformed("malformed request head"),
            ),
        ];
        for keep_raw in [false, true] {
            for (wire, max, bytes, want) in refusals {
                let mut buf = BytesMut::from(&wire[..]);
                assert_eq!(
                    parse_head(&mut buf, *max, *bytes, keep_raw).err(),
                    Some(*want),
                    "{}",
                    String::from_utf8_lossy(wire)
                );
            }
            // Refused framing comes with the parsed request and its map (for
            // the log).
            let mut buf =
                BytesMut::from(&b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"[..]);
            let head = parse_head(&mut buf, 10, 1024, keep_raw).unwrap().unwrap();
            assert_eq!(
                (head.parts.uri.path(), head.framing, head.raw.is_none()),
                ("/p", Err(Refusal::TransferEncoding), true)
            );
            assert_eq!(head.parts.headers["host"], "x");
            // Exactly max_headers_count is fine.
            let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n"[..]);
            assert!(parse_head(&mut buf, 3, 1024, keep_raw).unwrap().is_some());
            let mut buf = BytesMut::from(&b"GET /old HTTP/1.0\r\n\r\n"[..]);
            assert_eq!(
                parse_head(&mut buf, 3, 1024, keep_raw)
                    .unwrap()
                    .unwrap()
                    .parts
                    .version,
                Version::HTTP_10
            );
        }
    }

    #[test]
    fn a_request_stays_raw_only_when_its_fields_need_no_map() {
        // (fields after the request line, stays raw, framing)
        let cases: &[(&str, bool, Result<BodyFraming, Refusal>)] = &[
            ("Host: x\r\nUser-Agent: u\r\n", true, Ok(BodyFraming::None)),
            ("HOST: x:80\r\nAccept: */*\r\n", true, Ok(BodyFraming::None)),
            (
                "Host: x\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n",
                true,
                Ok(BodyFraming::None),
            ),
            (
                "Host: x\r\nContent-Length: 5\r\n",
                true,
                Ok(BodyFraming::Length(5)),
            ),
            ("Host: x\r\nContent-Length: 0\r\n", true, Ok(BodyFraming::None)),
            (
                "Host: x\r\nTransfer-Encoding: chunked\r\n",
                true,
                Ok(BodyFraming::Chunked),
            ),
            // No host, or two: the map path answers as Envoy does.
            ("User-Agent: u\r\n", false, Ok(BodyFraming::None)),
            ("Host: x\r\nHost: y\r\n", false, Ok(BodyFraming::None)),
            ("Host: é\r\n", false, Ok(BodyFraming::None)),
            // Fields Envoy's rules read or replace.
            (
                "Host: x\r\nX-Forwarded-For: 10.0.0.1\r\n",
                false,
                Ok(BodyFraming::None),
            ),
            (
                "Host: x\r\nx-forwarded-proto: https\r\n",
                false,
                Ok(BodyFraming::None),
            ),
            ("Host: x\r\nX-Request-Id: a\r\n", false, Ok(BodyFraming::None)),
            (
                "Host: x\r\nX-Envoy-Internal: true\r\n",
                false,
                Ok(BodyFraming::None),
            ),
            (
                "Host: x\r\nx-envoy-upstream-rq-timeout-ms: 5\r\n",
                false,
                Ok(BodyFraming::None),
            ),
            (
                "Host: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n",
                false,
                Ok(BodyFraming::Length(1)),
            ),
            // Hop-by-hop rules beyond skipping fields.
            ("Host: x\r\nConnection: x-other\r\n", false, Ok(BodyFraming::None)),
            ("Host: x\r\nTE: trailers\r\n", false, Ok(BodyFraming::None)),
            ("Host: x\r\nUpgrade: websocket\r\n", false, Ok(BodyFraming::None)),
            // Refused framing: from a map.
            (
                "Host: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n",
                false,
                Err(Refusal::Malformed("multiple content-length headers")),
            ),
            (
                "Host: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n",
                false,
                Err(Refusal::ContentLengthAndChunked),
            ),
            (
                "Host: x\r\nContent-Length: z\r\n",
                false,
                Err(Refusal::Malformed("invalid content-length")),
            ),
        ];
        for (fields, raw, framing) in cases {
            let wire = format!("POST /p HTTP/1.1\r\n{fields}\r\n").into_bytes();
            let mut buf = BytesMut::from(&wire[..]);
            let head = parse_head(&mut buf, 100, 64 * 1024, true).unwrap().unwrap();
            assert_eq!((head.raw.is_some(), &head.framing), (*raw, framing), "{fields:?}");
            assert_eq!(head.parts.headers.is_empty(), *raw, "{fields:?}");
        }
        // An absolute-form target names the authority: a map.
        let mut buf = BytesMut::from(&b"GET http://a/p HTTP/1.1\r\nHost: b\r\n\r\n"[..]);
        assert!(parse_head(&mut buf, 100, 64 * 1024, true)
            .unwrap()
            .unwrap()
            .raw
            .is_none());
    }

    #[test]
    fn integers_and_dates_format() {
        for n in [0u64, 7, 10, 1234567890, u64::MAX] {
            assert_eq!(itoa(n, &mut [0; 20]), n.to_string().as_bytes());
        }
        let mut got = Vec::new();
        with_http_date(|d| got.extend_from_slice(d));
        let text = String::from_utf8(got).unwrap();
        assert!(httpdate::parse_http_date(&text).is_ok(), "{text}");
    }
}
