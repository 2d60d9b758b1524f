//! Upstream HTTP/1.1 exchanges driven by the request's own task.
//!
//! The request head and body are written, and the response read, by
//! whoever polls the exchange: the proxy's request future until the
//! response head arrives, then the downstream response body. There is no
//! connection task and no channel between the two sides; a pooled
//! connection is a socket and its read buffer.
//!
//! Why not hyper's client connection: measured with callgrind on the bench
//! (`bench/run`'s h1 keep-alive), hyper's connection task with its request
//! channel, response oneshot and body channel was ~30% of the worker's
//! user-space instructions per proxied request.
//!
//! Upgrades (`101 Switching Protocols`) still go through hyper, on a
//! connection of their own (see `upstream.rs`).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::header::CONTENT_LENGTH;
use http::{HeaderMap, Method, Response, StatusCode, Version};
use hyper::body::{Body as _, Frame, SizeHint};

use super::body::RequestBody;
use super::h1_wire::{
    decode_chunked, last_chunk, parse_decimal, poll_fill, poll_write_queue, put_fields, queue_chunk, Chunked,
    ConnectionFields, Decoded, FieldKind, FieldSpans, RawHead, RawRequest, MAX_HEAD_BYTES,
};
use super::upstream::{Counted, Key};

/// Response headers accepted from an upstream (hyper's and Envoy's default).
const MAX_RESPONSE_HEADERS: usize = 100;
/// 1xx responses accepted before the final one.
const MAX_INFORMATIONAL: u32 = 32;

/// An upstream HTTP/1.1 connection: the socket (counted in the cluster's
/// stats while open) and what was read from it but not consumed yet.
pub struct Conn {
    io: Counted,
    read: BytesMut,
    /// What is left to write of the current request. It lives with the
    /// connection, so its storage is reused request after request (a
    /// connection goes back to its pool only once it is empty).
    pending: VecDeque<Bytes>,
}

impl Conn {
    pub fn new(io: Counted) -> Conn {
        Conn {
            io,
            read: BytesMut::new(),
            pending: VecDeque::new(),
        }
    }

    /// An idle pooled connection is usable when the peer has neither closed
    /// it nor sent anything since its last response. Costs no syscall when
    /// the socket was never reported readable while idle.
    pub fn is_usable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.stream().poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                matches!(self.io.stream().try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Reads more into the buffer; `Ok(0)` is the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        poll_fill(self.io.stream(), &mut self.read, cx)
    }
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Error {
    /// The connection ended (or broke) before any byte of a response: on a
    /// reused connection with nothing else to send, the request may be
    /// retried on another one.
    ClosedBeforeResponse(Option<io::Error>),
    Io(io::Error),
    /// The upstream broke HTTP/1.1 framing.
    Protocol(&'static str),
    /// The downstream request body failed while being forwarded.
    RequestBody(super::body::BodyError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::ClosedBeforeResponse(None) => f.write_str("connection closed before the response"),
            Error::ClosedBeforeResponse(Some(e)) => write!(f, "connection broke before the response: {e}"),
            Error::Io(e) => write!(f, "upstream connection error: {e}"),
            Error::Protocol(what) => write!(f, "upstream protocol error: {what}"),
            Error::RequestBody(e) => write!(f, "request body error: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// How a request body is framed on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFraming {
    /// No body. `content-length: 0` is added for methods that normally
    /// carry one, so the origin does not wait for it.
    Empty { announce_zero: bool },
    /// The request carries its own `content-length`.
    Length,
    /// Unknown length: `transfer-encoding: chunked` is added.
    Chunked,
}

/// Decides the request's framing from its method, whether it has a
/// `content-length`, and its body.
pub fn request_framing(
    method: &Method,
    has_content_length: bool,
    body_empty: bool,
    exact: Option<u64>,
) -> RequestFraming {
    if has_content_length {
        return RequestFraming::Length;
    }
    if body_empty || exact == Some(0) {
        let announce_zero = *method == Method::POST || *method == Method::PUT || *method == Method::PATCH;
        return RequestFraming::Empty { announce_zero };
    }
    RequestFraming::Chunked
}

/// The request line and headers, as sent: `raw`'s lines (a head kept as
/// the client sent it) then `headers`, or `headers` alone.
pub fn encode_head(
    method: &Method,
    target: &str,
    raw: Option<&RawRequest>,
    headers: &HeaderMap,
    framing: RequestFraming,
) -> Bytes {
    let size = headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + raw.map_or(0, |r| {
            r.head.head.len()
                + r.added
                    .iter()
                    .map(|(n, v)| n.as_str().len() + v.len() + 4)
                    .sum::<usize>()
        })
        + target.len()
        + 64;
    let mut out = BytesMut::with_capacity(size);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    if let Some(raw) = raw {
        raw.put_fields(&mut out);
    }
    put_fields(&mut out, headers);
    match framing {
        RequestFraming::Empty { announce_zero: true } => out.put_slice(b"content-length: 0\r\n"),
        RequestFraming::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    out.put_slice(b"\r\n");
    out.freeze()
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFraming {
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (which then cannot be reused).
    Close,
}

pub fn response_framing(
    request_was_head: bool,
    status: StatusCode,
    version: Version,
    raw: &RawHead,
    noted: &ConnectionFields,
) -> Result<ResponseFraming, &'static str> {
    if request_was_head || super::status_has_no_body(status) {
        return Ok(ResponseFraming::None);
    }
    // The elements of the comma-separated lists of every field of a kind.
    let tokens = |kind: FieldKind| {
        raw.iter()
            .filter(move |(k, _, _)| *k == kind)
            .flat_map(|(_, _, v)| v.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
    };
    if noted.transfer_encoding {
        if version == Version::HTTP_10 {
            // RFC 9112 §6.1: faulty framing (hyper refuses it too).
            return Err("transfer-encoding in an HTTP/1.0 response");
        }
        let last = tokens(FieldKind::TransferEncoding)
            .filter(|t| !t.is_empty())
            .last();
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case(b"chunked") => ResponseFraming::Chunked,
            _ => ResponseFraming::Close,
        });
    }
    if !noted.content_length {
        return Ok(ResponseFraming::Close);
    }
    let mut length = None;
    for part in tokens(FieldKind::ContentLength) {
        let n = parse_decimal(part).ok_or("invalid content-length")?;
        if length.is_some_and(|l| l != n) {
            return Err("conflicting content-length values");
        }
        length = Some(n);
    }
    Ok(match length {
        Some(0) => ResponseFraming::None,
        Some(n) => ResponseFraming::Length(n),
        None => ResponseFraming::Close,
    })
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    version: Version,
    raw: Box<RawHead>,
    connection: ConnectionFields,
    /// The head may be passed on as it came (`RawHead::scan`).
    plain: bool,
}

/// Parses a response head at the start of `buf`, consuming it; `None` when
/// more bytes are needed.
fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, &'static str> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let base = buf.as_ptr() as usize;
    let (len, status, version, spans) = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut response, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) => {
            let status = StatusCode::from_u16(response.code.unwrap_or(0)).map_err(|_| "invalid status")?;
            let version = if response.version == Some(0) {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            };
            (len, status, version, FieldSpans::new(base, response.headers))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => return Err("response head too large"),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err("too many response headers"),
        Err(_) => return Err("malformed response head"),
    };
    // Boxed now: a response head is moved several times on its way out.
    let mut raw = Box::new(RawHead {
        head: buf.split_to(len).freeze(),
        spans,
    });
    let (connection, plain) = raw.scan();
    Ok(Some(Head {
        status,
        version,
        raw,
        connection,
        plain: plain && status != StatusCode::SWITCHING_PROTOCOLS,
    }))
}

/// The request side of an exchange: the body still to forward (what is
/// left to write is the connection's `pending`).
struct Writer {
    body: Option<RequestBody>,
    chunked: bool,
    /// Writing failed (the origin closed or reset): nothing more is sent,
    /// but a response it sent before may still be read.
    broken: Option<io::Error>,
}

impl Writer {
    fn is_done(&self, conn: &Conn) -> bool {
        conn.pending.is_empty() && self.body.is_none() && self.broken.is_none()
    }

    /// Pumps unless broken; a write failure only marks it broken (the
    /// caller goes on reading), a request body failure is returned.
    fn poll_pump_tolerant(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Result<(), Error> {
        if self.broken.is_some() {
            return Ok(());
        }
        match self.poll_pump(conn, cx) {
            Poll::Ready(Err(Error::Io(e))) => {
                self.broken = Some(e);
                Ok(())
            }
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    fn poll_flush(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        poll_write_queue(conn.io.stream(), &mut conn.pending, cx).map_err(Error::Io)
    }

    /// Writes what is pending and forwards the request body as it comes.
    /// Ready(Ok) once everything is written.
    fn poll_pump(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            ready!(self.poll_flush(conn, cx))?;
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(Ok(()));
            };
            match ready!(Pin::new(body).poll_frame(cx)) {
                None => {
                    if self.chunked {
                        conn.pending.push_back(last_chunk(None));
                    }
                    self.body = None;
                }
                Some(Err(e)) => return Poll::Ready(Err(Error::RequestBody(e))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if self.chunked => queue_chunk(&mut conn.pending, data),
                    Ok(data) => conn.pending.push_back(data),
                    Err(frame) => {
                        // Trailers end the body; HTTP/1.1 carries them only
                        // in the chunked encoding.
                        if let (true, Ok(trailers)) = (self.chunked, frame.into_trailers()) {
                            conn.pending.push_back(last_chunk(Some(&trailers)));
                            self.body = None;
                        }
                    }
                },
            }
        }
    }
}

/// Sends a request (its encoded head, then `body`) on `conn` and waits for
/// the response head. The response body reads from the same connection,
/// which goes back to `key`'s pool when both directions ended cleanly.
/// `raw_ok`: the caller writes the response to an HTTP/1.1 client and
/// changes none of its fields, so the head may stay raw (`Body::raw_head`).
pub async fn exchange(
    mut conn: Conn,
    key: Key,
    head: Bytes,
    body: Option<RequestBody>,
    chunked: bool,
    request_was_head: bool,
    raw_ok: bool,
) -> Result<Response<Box<Body>>, Error> {
    conn.pending.clear();
    conn.pending.push_back(head);
    let mut writer = Writer {
        body,
        chunked,
        broken: None,
    };
    let (mut got_bytes, mut informational) = (false, 0);
    let head =
        poll_fn(|cx| poll_response_head(&mut conn, &mut writer, &mut got_bytes, &mut informational, cx))
            .await?;
    let framing = response_framing(
        request_was_head,
        head.status,
        head.version,
        &head.raw,
        &head.connection,
    )
    .map_err(Error::Protocol)?;
    // A transfer coding wins over a content-length (RFC 9112 §6.3), which
    // must not be forwarded (it would misframe the response downstream);
    // a message with both is suspect, so its connection is not reused.
    let both = head.connection.transfer_encoding && head.connection.content_length;
    let reusable = framing != ResponseFraming::Close
        && !both
        && head.status != StatusCode::SWITCHING_PROTOCOLS
        && head.connection.keeps_alive(head.version);
    // The head stays as it came when the caller can write it so and it
    // needs no change; otherwise it becomes a map (room for what the proxy
    // adds: x-envoy-upstream-service-time, server…).
    let (headers, raw, hop_by_hop) = if raw_ok && head.plain {
        (HeaderMap::new(), Some(head.raw), false)
    } else {
        let (mut map, _) = head
            .raw
            .spans
            .fields(&head.raw.head, 4)
            .map_err(Error::Protocol)?;
        if both {
            map.remove(CONTENT_LENGTH);
        }
        (map, None, head.connection.hop_by_hop)
    };
    // Boxed here, where it is made: the body holds the connection and is
    // a few hundred bytes, which each move on the way out would copy.
    let mut response = Response::new(Box::new(Body {
        state: match framing {
            ResponseFraming::None => State::Done,
            ResponseFraming::Length(n) => State::Length(n),
            ResponseFraming::Chunked => State::Chunked(Chunked::Size),
            ResponseFraming::Close => State::UntilClose,
        },
        conn: Some(conn),
        writer,
        key,
        reusable,
        raw,
        hop_by_hop,
    }));
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = headers;
    let body = response.body_mut();
    if body.state == State::Done {
        body.finish();
    }
    Ok(response)
}

/// `got_bytes`: whether any response byte arrived (then a failure is not
/// one that a retry on another connection could fix).
fn poll_response_head(
    conn: &mut Conn,
    writer: &mut Writer,
    got_bytes: &mut bool,
    informational: &mut u32,
    cx: &mut Context<'_>,
) -> Poll<Result<Head, Error>> {
    loop {
        // The request keeps flowing while we wait (an origin may answer
        // before it has read the whole body, e.g. a 413).
        writer.poll_pump_tolerant(conn, cx)?;
        if !conn.read.is_empty() {
            *got_bytes = true;
            match parse_head(&mut conn.read).map_err(Error::Protocol)? {
                // 1xx other than 101 (not forwarded: hyper's behaviour
                // too); the final response follows.
                Some(head)
                    if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS =>
                {
                    // Bounded: an origin streaming 1xx heads must not hold
                    // the worker in this loop.
                    *informational += 1;
                    if *informational > MAX_INFORMATIONAL {
                        return Poll::Ready(Err(Error::Protocol("too many 1xx responses")));
                    }
                    continue;
                }
                Some(head) => return Poll::Ready(Ok(head)),
                None => {}
            }
        }
        let filled = match conn.poll_fill(cx) {
            // Nothing to read yet and the request cannot be written: the
            // write error is the answer.
            Poll::Pending if writer.broken.is_some() && !*got_bytes => {
                Poll::Ready(Err(writer.broken.take().expect("checked")))
            }
            other => other,
        };
        match ready!(filled) {
            Ok(0) if conn.read.is_empty() && !*got_bytes => {
                return Poll::Ready(Err(Error::ClosedBeforeResponse(writer.broken.take())))
            }
            Ok(0) => return Poll::Ready(Err(Error::Protocol("connection closed in the response head"))),
            Ok(_) => {}
            Err(e) if !*got_bytes && conn.read.is_empty() => {
                return Poll::Ready(Err(Error::ClosedBeforeResponse(Some(e))))
            }
            Err(e) => return Poll::Ready(Err(Error::Io(e))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

/// A response body read from its upstream connection.
pub struct Body {
    state: State,
    conn: Option<Conn>,
    writer: Writer,
    key: Key,
    reusable: bool,
    /// The response's fields when they were left as they came (then the
    /// response's own map holds only what the proxy added).
    raw: Option<Box<RawHead>>,
    /// The response's map holds a hop-by-hop field.
    hop_by_hop: bool,
}

impl Body {
    /// Whether the response's map may hold hop-by-hop fields (a raw head's
    /// are skipped as it is written).
    pub fn has_hop_by_hop_fields(&self) -> bool {
        self.hop_by_hop
    }

    /// The origin's fields, when the head was passed through raw.
    pub fn raw_head(&self) -> Option<&RawHead> {
        self.raw.as_deref()
    }

    /// The response has ended: the connection goes back to its pool when
    /// the request was fully written too and nothing extra was received.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(conn) = self.conn.take() {
            if self.reusable && self.writer.is_done(&conn) && conn.read.is_empty() {
                super::upstream::check_in(self.key, conn);
            }
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if this.state == State::Done {
                this.finish();
                return Poll::Ready(None);
            }
            // Keep forwarding the request body, if any is left.
            if let Err(e) = this.writer.poll_pump_tolerant(conn, cx) {
                return this.fail(e);
            }
            match this.state {
                State::Length(left) if !conn.read.is_empty() => {
                    let n = (conn.read.len() as u64).min(left) as usize;
                    let data = conn.read.split_to(n).freeze();
                    this.state = if left == n as u64 {
                        State::Done
                    } else {
                        State::Length(left - n as u64)
                    };
                    if this.state == State::Done {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::UntilClose if !conn.read.is_empty() => {
                    let data = conn.read.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked(mut chunked) => {
                    let step = decode_chunked(&mut chunked, &mut conn.read);
                    this.state = State::Chunked(chunked);
                    match step {
                        Err(what) => return this.fail(Error::Protocol(what)),
                        Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Ok(Decoded::Trailers(t)) => {
                            this.finish();
                            return Poll::Ready(Some(Ok(Frame::trailers(t))));
                        }
                        Ok(Decoded::End) => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Ok(Decoded::NeedMore) => {}
                    }
                }
                _ => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if this.state == State::UntilClose => {
                    this.reusable = false;
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::Protocol("connection closed in the response body")),
                Ok(_) => {}
                Err(e) => return this.fail(Error::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::h1_wire::{headers, raw_head};
    use super::*;
    use http::{HeaderName, HeaderValue};

    /// Header name/value pairs of a table case.
    type Pairs = &'static [(&'static str, &'static str)];

    #[test]
    fn response_framing_follows_rfc_9112() {
        use ResponseFraming::*;
        let ok = StatusCode::OK;
        // (HEAD request, status, headers, framing)
        let cases: &[(bool, StatusCode, Pairs, Result<ResponseFraming, &str>)] = &[
            (false, ok, &[("content-length", "100")], Ok(Length(100))),
            (false, ok, &[("content-length", "0")], Ok(None)),
            (true, ok, &[("content-length", "100")], Ok(None)),
            (false, StatusCode::NO_CONTENT, &[], Ok(None)),
            (
                false,
                StatusCode::NOT_MODIFIED,
                &[("content-length", "5")],
                Ok(None),
            ),
            (false, StatusCode::SWITCHING_PROTOCOLS, &[], Ok(None)),
            (false, ok, &[("transfer-encoding", "chunked")], Ok(Chunked)),
            (false, ok, &[("transfer-encoding", "gzip, chunked")], Ok(Chunked)),
            (false, ok, &[("transfer-encoding", "chunked, gzip")], Ok(Close)),
            // transfer-encoding wins over content-length
            (
                false,
                ok,
                &[("transfer-encoding", "chunked"), ("content-length", "3")],
                Ok(Chunked),
            ),
            (false, ok, &[], Ok(Close)),
            (false, ok, &[("content-length", "7, 7")], Ok(Length(7))),
            (
                false,
                ok,
                &[("content-length", "7"), ("content-length", "8")],
                Err("conflicting content-length values"),
            ),
            (
                false,
                ok,
                &[("content-length", "-1")],
                Err("invalid content-length"),
            ),
            (
                false,
                ok,
                &[("content-length", "1e3")],
                Err("invalid content-length"),
            ),
        ];
        for (head, status, h, want) in cases {
            assert_eq!(
                response_framing(*head, *status, Version::HTTP_11, &raw_head(h), &noted(h)),
                *want,
                "{head} {status} {h:?}"
            );
        }
        // HTTP/1.0 has no transfer codings (RFC 9112 §6.1).
        let te = raw_head(&[("transfer-encoding", "chunked")]);
        assert_eq!(
            response_framing(
                false,
                ok,
                Version::HTTP_10,
                &te,
                &noted(&[("transfer-encoding", "chunked")])
            ),
            Err("transfer-encoding in an HTTP/1.0 response")
        );
        assert_eq!(
            response_framing(
                false,
                ok,
                Version::HTTP_10,
                &raw_head(&[("content-length", "3")]),
                &noted(&[("content-length", "3")])
            ),
            Ok(Length(3))
        );
    }

    /// The notes the head parser takes of the framing fields in `pairs`.
    fn noted(pairs: &[(&str, &str)]) -> ConnectionFields {
        ConnectionFields {
            content_length: pairs
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length")),
            transfer_encoding: pairs
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding")),
            ..ConnectionFields::default()
        }
    }

    #[test]
    fn request_framing_and_head_encoding() {
        let h = headers(&[("host", "a"), ("x-b", "1")]);
        // (method, extra headers, (body empty, exact size), framing, added line)
        type Case = (Method, Pairs, (bool, Option<u64>), RequestFraming, &'static str);
        let cases: &[Case] = &[
            (
                Method::GET,
                &[],
                (true, Some(0)),
                RequestFraming::Empty { announce_zero: false },
                "",
            ),
            (
                Method::POST,
                &[],
                (true, Some(0)),
                RequestFraming::Empty { announce_zero: true },
                "content-length: 0\r\n",
            ),
            (
                Method::POST,
                &[("content-length", "3")],
                (false, Some(3)),
                RequestFraming::Length,
                "",
            ),
            (
                Method::PUT,
                &[],
                (false, None),
                RequestFraming::Chunked,
                "transfer-encoding: chunked\r\n",
            ),
        ];
        for (method, extra, (empty, exact), want, line) in cases {
            let mut hh = h.clone();
            for (k, v) in *extra {
                hh.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            let framing = request_framing(method, hh.contains_key(CONTENT_LENGTH), *empty, *exact);
            assert_eq!(framing, *want, "{method}");
            let text = String::from_utf8(encode_head(method, "/p?q=1", None, &hh, framing).to_vec()).unwrap();
            let extra_lines: String = extra.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
            assert_eq!(
                text,
                format!("{method} /p?q=1 HTTP/1.1\r\nhost: a\r\nx-b: 1\r\n{extra_lines}{line}\r\n")
            );
        }
    }

    #[test]
    fn a_raw_request_head_goes_out_with_the_proxys_fields_after_it() {
        // As a client wrote it: names in any case, connection-level fields,
        // a value with spaces around it.
        let mut raw = crate::http::h1_wire::raw_head(&[
            ("Host", "a:80"),
            ("Connection", "keep-alive"),
            ("User-Agent", "t/1"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("X-Spaced", "  v  "),
        ]);
        let (connection, plain) = raw.scan();
        let mut raw = RawRequest::new(raw, connection, plain).ok().expect("stays raw");
        raw.added.push((
            http::HeaderName::from_static("x-forwarded-proto"),
            http::HeaderValue::from_static("http"),
        ));
        // A map beside a raw head (none on the proxy's path) follows it.
        let added = crate::http::h1_wire::headers(&[("x-request-id", "r")]);
        let framing = request_framing(&Method::POST, raw.connection.content_length, false, None);
        assert_eq!(framing, RequestFraming::Chunked);
        let text = encode_head(&Method::POST, "/p", Some(&raw), &added, framing);
        assert_eq!(
            String::from_utf8(text.to_vec()).unwrap(),
            "POST /p HTTP/1.1\r\nhost: a:80\r\nuser-agent: t/1\r\nx-spaced: v\r\n\
             x-forwarded-proto: http\r\nx-request-id: r\r\ntransfer-encoding: chunked\r\n\r\n"
        );
    }

    #[test]
    fn response_head_parses_incrementally_and_shares_values() {
        let wire = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b\r\nX-A: c\r\n\r\nhi";
        for cut in 1..wire.len() - 2 {
            let mut buf = BytesMut::from(&wire[..cut]);
            if cut < wire.len() - 2 {
                assert!(parse_head(&mut buf).unwrap().is_none(), "cut {cut}");
            }
        }
        let mut buf = BytesMut::from(&wire[..]);
        let head = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(head.status, StatusCode::CREATED);
        assert_eq!(head.version, Version::HTTP_11);
        assert!(head.plain && head.connection.content_length);
        let (headers, _) = head.raw.spans.fields(&head.raw.head, 0).unwrap();
        assert_eq!(headers["content-length"], "2");
        let all: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(all, ["b", "c"]);
        assert_eq!(&buf[..], b"hi");
        let mut bad = BytesMut::from(&b"HTTP/1.1 abc\r\n\r\n"[..]);
        assert_eq!(parse_head(&mut bad).err(), Some("malformed response head"));
        let mut v10 = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\n"[..]);
        assert_eq!(parse_head(&mut v10).unwrap().unwrap().version, Version::HTTP_10);
    }
}
