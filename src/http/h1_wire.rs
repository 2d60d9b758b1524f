//! HTTP/1.1 wire pieces shared by the downstream server codec
//! (`h1_server`) and the upstream client (`h1_client`): field lines,
//! content-length and chunk-size parsing, the chunked decoder, keep-alive
//! rules, and reading and writing a socket through a buffer without a
//! connection task.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, EXPECT, HOST, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Version};

use tokio::io::Interest;
use tokio::net::TcpStream;

/// A head (or a chunk-size line, or trailers) larger than this is a
/// protocol error.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Fields accepted in chunked trailers.
const MAX_TRAILERS: usize = 100;
/// How much is read from a socket at a time.
pub const READ_CHUNK: usize = 8 * 1024;

/// Reads more of `stream` into `buf`; `Ok(0)` is the end of the stream.
///
/// A read that returns less than it had room for has emptied the socket's
/// receive queue, so the socket's readiness is cleared there and then, as
/// nginx does: otherwise the next read would be a `recvfrom` answering
/// EAGAIN (measured with `strace -c` on the bench: two of the four reads per
/// proxied request were). New data sets the readiness again through epoll.
pub fn poll_fill(stream: &TcpStream, buf: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
    loop {
        let room = buf.capacity() - buf.len();
        let mut got = None;
        let read = stream.try_io(Interest::READABLE, || {
            let n = stream.try_read_buf(buf)?;
            got = Some(n);
            if n > 0 && n < room {
                // Drained: tell the reactor, so the next read waits for epoll.
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(n)
            }
        });
        match (read, got) {
            (_, Some(n)) => return Poll::Ready(Ok(n)),
            (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => {
                ready!(stream.poll_read_ready(cx))?;
            }
            (Err(e), None) => return Poll::Ready(Err(e)),
            (Ok(n), None) => return Poll::Ready(Ok(n)),
        }
    }
}

/// Writes everything queued in `pending` (vectored, up to 8 buffers a
/// call); Ready(Ok) once the queue is empty.
pub fn poll_write_queue(
    stream: &TcpStream,
    pending: &mut VecDeque<Bytes>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while !pending.is_empty() {
        let written = {
            let mut slices = [IoSlice::new(&[]); 8];
            let mut n = 0;
            for (slot, b) in slices.iter_mut().zip(pending.iter()) {
                *slot = IoSlice::new(b);
                n += 1;
            }
            match stream.try_write_vectored(&slices[..n]) {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    ready!(stream.poll_write_ready(cx))?;
                    continue;
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        };
        let mut left = written;
        while left > 0 {
            let front = pending.front_mut().expect("written bytes were pending");
            if front.len() <= left {
                left -= front.len();
                pending.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
    }
    Poll::Ready(Ok(()))
}

/// One chunk of a chunked body: its size line, data and CRLF, queued
/// without copying the data.
pub fn queue_chunk(pending: &mut VecDeque<Bytes>, data: Bytes) {
    pending.push_back(Bytes::from(format!("{:x}\r\n", data.len())));
    pending.push_back(data);
    pending.push_back(Bytes::from_static(b"\r\n"));
}

/// The last chunk of a chunked body, with its trailers if any.
pub fn last_chunk(trailers: Option<&HeaderMap>) -> Bytes {
    match trailers {
        None => Bytes::from_static(b"0\r\n\r\n"),
        Some(t) => {
            let mut out = BytesMut::from(&b"0\r\n"[..]);
            put_fields(&mut out, t);
            out.put_slice(b"\r\n");
            out.freeze()
        }
    }
}

/// Where each field of a just-parsed head lies in the read buffer: offsets
/// rather than slices, so that the head can be frozen and the field values
/// shared with it instead of copied. On the heap: an inline array for the
/// usual handful made the struct half a KiB, copied at every move (five
/// per request), which cost more than the allocation.
pub struct FieldSpans {
    spans: Vec<Span>,
}

/// Offsets of one field's name and value (a head is at most tens of KiB),
/// and the field's kind once `RawHead::scan` has told it.
#[derive(Clone, Copy, Default)]
struct Span {
    name: (u32, u32),
    value: (u32, u32),
    kind: FieldKind,
}

impl Span {
    /// Whether the field's line in `head` is `name: value` and CRLF, as a
    /// writer puts it.
    fn is_canonical(&self, head: &[u8]) -> bool {
        let (n1, v0, v1) = (self.name.1 as usize, self.value.0 as usize, self.value.1 as usize);
        v0 == n1 + 2 && head.get(n1..v0) == Some(b": ") && head.get(v1..v1 + 2) == Some(b"\r\n")
    }
}

impl FieldSpans {
    /// `base`: the address of the buffer httparse parsed `fields` from.
    pub fn new(base: usize, fields: &[httparse::Header<'_>]) -> FieldSpans {
        let span = |h: &httparse::Header<'_>| {
            let name = (h.name.as_ptr() as usize - base) as u32;
            let value = (h.value.as_ptr() as usize - base) as u32;
            Span {
                name: (name, name + h.name.len() as u32),
                value: (value, value + h.value.len() as u32),
                kind: FieldKind::Other,
            }
        };
        FieldSpans {
            spans: fields.iter().map(span).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    fn spans(&self) -> &[Span] {
        &self.spans
    }

    fn spans_mut(&mut self) -> &mut [Span] {
        &mut self.spans
    }

    /// Each field's kind (`Other` until `RawHead::scan`), name and value as
    /// they came, read from `head` (the buffer the spans were taken from).
    pub fn iter<'a>(&'a self, head: &'a [u8]) -> impl Iterator<Item = (FieldKind, &'a [u8], &'a [u8])> + 'a {
        let at = |(from, to): (u32, u32)| from as usize..to as usize;
        self.spans()
            .iter()
            .map(move |s| (s.kind, &head[at(s.name)], &head[at(s.value)]))
    }

    /// The fields as a map sharing `head` (the frozen buffer), with room for
    /// `room` more, and what the connection-level ones said.
    ///
    /// The fields that only served this connection stay out of the map:
    /// `keep-alive`, `proxy-connection`, and a `connection` whose every
    /// option is `close` or `keep-alive` (the usual one). Every proxy drops
    /// them (RFC 9110 §7.6.1) and inserting them only to remove them again
    /// cost more hashed lookups than the rest of the head (measured with
    /// `bench/instructions`). A `connection` that names anything else stays,
    /// for `headers::remove_hop_by_hop` and upgrades.
    pub fn fields(&self, head: &Bytes, room: usize) -> Result<(HeaderMap, ConnectionFields), &'static str> {
        let mut map = HeaderMap::with_capacity(self.len() + room);
        let mut noted = ConnectionFields::default();
        for span in self.spans() {
            let (from, to) = (span.value.0 as usize, span.value.1 as usize);
            let value = &head[from..to];
            let raw_name = &head[span.name.0 as usize..span.name.1 as usize];
            // The kind `scan` told, else told here: a field of a known kind
            // takes its name from a constant, not from parsing (which cost
            // the HTTP/2 response path a few hundred instructions a field).
            let kind = match span.kind {
                FieldKind::Other => field_kind(raw_name),
                kind => kind,
            };
            if noted.note(kind, value) {
                noted.hop_by_hop = true;
            } else if kind == FieldKind::Connection {
                // Only `close` or `keep-alive`: said, and dropped.
                continue;
            }
            let name = match kind {
                FieldKind::Connection => CONNECTION,
                FieldKind::ContentLength => CONTENT_LENGTH,
                FieldKind::TransferEncoding => TRANSFER_ENCODING,
                FieldKind::Te => TE,
                FieldKind::Upgrade => UPGRADE,
                FieldKind::KeepAlive | FieldKind::ProxyConnection => continue,
                FieldKind::Date => DATE,
                FieldKind::Host => HOST,
                FieldKind::Expect => EXPECT,
                FieldKind::Other
                | FieldKind::XForwardedFor
                | FieldKind::XForwardedProto
                | FieldKind::XRequestId
                | FieldKind::XEnvoy => HeaderName::from_bytes(raw_name).map_err(|_| "invalid header name")?,
            };
            let value =
                HeaderValue::from_maybe_shared(head.slice(from..to)).map_err(|_| "invalid header value")?;
            map.append(name, value);
        }
        Ok((map, noted))
    }
}

/// The fields a connection-level rule or the framing looks at, told apart
/// by name (any case) without building a `HeaderName`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FieldKind {
    /// Any field legate does not look at by name.
    #[default]
    Other,
    Connection,
    KeepAlive,
    ProxyConnection,
    TransferEncoding,
    ContentLength,
    Te,
    Upgrade,
    Date,
    /// The request's own fields that legate reads or sets (a request with
    /// any of these but `host` goes through a header map: see
    /// `RawRequest`).
    Host,
    Expect,
    XForwardedFor,
    XForwardedProto,
    XRequestId,
    /// Any `x-envoy-*` field: internal or control ones (Envoy's rules for
    /// them are applied on a map).
    XEnvoy,
}

/// The kind of a field by its name, a token (RFC 9110 §5.1, checked by
/// httparse) in any case.
pub fn field_kind(name: &[u8]) -> FieldKind {
    let is = |known: &[u8]| token_is(name, known);
    // The length picks the candidate, so a field costs one comparison at most.
    match name.len() {
        2 if is(b"te") => FieldKind::Te,
        4 if is(b"date") => FieldKind::Date,
        4 if is(b"host") => FieldKind::Host,
        6 if is(b"expect") => FieldKind::Expect,
        7 if is(b"upgrade") => FieldKind::Upgrade,
        10 if is(b"connection") => FieldKind::Connection,
        10 if is(b"keep-alive") => FieldKind::KeepAlive,
        12 if is(b"x-request-id") => FieldKind::XRequestId,
        14 if is(b"content-length") => FieldKind::ContentLength,
        15 if is(b"x-forwarded-for") => FieldKind::XForwardedFor,
        16 if is(b"proxy-connection") => FieldKind::ProxyConnection,
        17 if is(b"transfer-encoding") => FieldKind::TransferEncoding,
        17 if is(b"x-forwarded-proto") => FieldKind::XForwardedProto,
        n if n > 8 && token_is(&name[..8], b"x-envoy-") => FieldKind::XEnvoy,
        _ => FieldKind::Other,
    }
}

/// Whether `token` (of `known`'s length, at most 24 bytes) is `known` in
/// any case. `known` holds lowercase letters and `-`, each with the 0x20
/// bit set: a token byte OR 0x20 equals one only when it is that letter in
/// either case or that `-` (no token byte is 0x0D; nor is any byte of a
/// field value, which httparse checked too, so values may be compared).
/// Compared eight bytes at a time (overlapping words for the tail): a field
/// name is classified for every field of every head, and byte-wise case
/// folding was a tenth of the raw head's cost.
fn token_is(token: &[u8], known: &[u8]) -> bool {
    let n = known.len();
    debug_assert!(token.len() == n && n <= 24);
    if n < 8 {
        let fold = |b: &[u8]| {
            let mut w = [0u8; 8];
            w[..n].copy_from_slice(b);
            u64::from_le_bytes(w)
        };
        let mask = u64::MAX >> (64 - 8 * n as u32);
        return fold(token) | (0x2020_2020_2020_2020 & mask) == fold(known);
    }
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let same = |at: usize| word(token, at) | 0x2020_2020_2020_2020 == word(known, at);
    same(0) && (n <= 16 || same(8)) && same(n - 8)
}

/// A response head kept as the origin sent it: its bytes and where its
/// fields are. An HTTP/1.1 response on its way to an HTTP/1.1 client with
/// nothing to change but the proxy's own additions is written from this
/// (`h1_server`), without building a header map only to serialise it
/// again (that map was a tenth of the instructions a proxied request cost,
/// measured with `bench/instructions`).
pub struct RawHead {
    pub head: Bytes,
    pub spans: FieldSpans,
}

impl RawHead {
    /// Each field's kind (told by `scan`), name and value.
    pub fn iter(&self) -> impl Iterator<Item = (FieldKind, &[u8], &[u8])> {
        self.spans.iter(&self.head)
    }

    /// Each field's kind, name and value and, when the field stands on the
    /// wire exactly as a writer puts it (`name: value` and CRLF), that
    /// whole line: copied in one piece instead of four.
    pub fn lines(&self) -> impl Iterator<Item = (FieldKind, &[u8], &[u8], Option<&[u8]>)> {
        let head = &self.head[..];
        self.spans.spans().iter().map(move |s| {
            let (n0, n1) = (s.name.0 as usize, s.name.1 as usize);
            let (v0, v1) = (s.value.0 as usize, s.value.1 as usize);
            (
                s.kind,
                &head[n0..n1],
                &head[v0..v1],
                s.is_canonical(head).then(|| &head[n0..v1 + 2]),
            )
        })
    }

    /// Tells each field's kind (kept, so that the framing and the writer
    /// compare no names again); returns what the connection-level fields
    /// said (as `FieldSpans::fields` notes them), and whether the head can be passed on as it is: only when
    /// removing the hop-by-hop fields needs no more than skipping
    /// `connection`, `keep-alive`, `proxy-connection` and
    /// `transfer-encoding` as they are written (no `connection` naming
    /// other fields, no `te` or `upgrade`), and the framing is unambiguous
    /// (not both `transfer-encoding` and `content-length`).
    pub fn scan(&mut self) -> (ConnectionFields, bool) {
        let mut noted = ConnectionFields::default();
        let mut plain = true;
        let head = &self.head;
        let spans = self.spans.spans_mut();
        for span in spans {
            let kind = field_kind(&head[span.name.0 as usize..span.name.1 as usize]);
            span.kind = kind;
            let value = &head[span.value.0 as usize..span.value.1 as usize];
            // A hop-by-hop field that skipping it as it is written would not
            // handle: it goes to the map (and its walk) instead.
            if noted.note(kind, value) {
                noted.hop_by_hop = true;
                plain = false;
            }
        }
        plain &= !(noted.content_length && noted.transfer_encoding);
        (noted, plain)
    }
}

/// A request head kept as the client sent it: written upstream from its
/// own lines (names lowercased, connection-level fields left out) with the
/// proxy's additions after them, instead of becoming a header map that is
/// only serialised again (that map, the proxy's edits on it and the
/// encoding cost about 2,400 of the 27,200 instructions of a proxied
/// request, measured with `bench/instructions`). The proxy turns it into a
/// map the moment anything needs one (`body::materialize`): header
/// matchers, header mutations, rewrites, access logs, an HTTP/2 upstream…
pub struct RawRequest {
    pub head: RawHead,
    /// The `host` field's value, the request's authority.
    host: (u32, u32),
    /// What its connection-level fields said (as `RawHead::scan` notes them).
    pub connection: ConnectionFields,
    /// The fields a map of the head would hold (all but the connection-only
    /// ones), and their names' and values' bytes: what
    /// `max_headers_count` and `max_request_headers_kb` are checked against.
    pub field_count: usize,
    pub field_bytes: usize,
    /// The fields the proxy adds, in order (`x-forwarded-proto`,
    /// `x-request-id`…): none of them is among the request's own (`new`),
    /// so each is a plain addition, with no map to keep them in.
    pub added: Vec<(HeaderName, HeaderValue)>,
}

impl RawRequest {
    /// `raw` (just scanned, `plain` as `RawHead::scan` said) as a request
    /// that may go upstream as it came, or `raw` back when it must become a
    /// map: a hop-by-hop rule needs more than skipping fields (not `plain`),
    /// it has no single `host` of visible ASCII (the map path answers or
    /// picks as Envoy does), or it carries a field whose Envoy rules the
    /// proxy applies on a map (`x-forwarded-for`, `x-forwarded-proto`,
    /// `x-request-id`, `expect`, any `x-envoy-*`). Without those, what the
    /// proxy adds (`x-forwarded-*`, `x-request-id`…) follows the request's
    /// fields and replaces none of them.
    pub fn new(raw: RawHead, connection: ConnectionFields, plain: bool) -> Result<RawRequest, RawHead> {
        if !plain {
            return Err(raw);
        }
        let mut host = None;
        let (mut count, mut bytes) = (0, 0);
        for s in raw.spans.spans() {
            match s.kind {
                FieldKind::Host if host.is_none() => host = Some(s.value),
                FieldKind::Host
                | FieldKind::Expect
                | FieldKind::XForwardedFor
                | FieldKind::XForwardedProto
                | FieldKind::XRequestId
                | FieldKind::XEnvoy => return Err(raw),
                // Never in a map (`FieldSpans::fields`).
                FieldKind::Connection | FieldKind::KeepAlive | FieldKind::ProxyConnection => continue,
                _ => {}
            }
            count += 1;
            bytes += (s.name.1 - s.name.0 + s.value.1 - s.value.0) as usize;
        }
        let Some(host) = host else {
            return Err(raw);
        };
        // What `HeaderValue::to_str` accepts, as the map path reads it:
        // httparse let through no control byte but HTAB, nor DEL, so ASCII.
        if !raw.head[host.0 as usize..host.1 as usize].is_ascii() {
            return Err(raw);
        }
        Ok(RawRequest {
            head: raw,
            host,
            connection,
            field_count: count,
            field_bytes: bytes,
            added: Vec::new(),
        })
    }

    /// The `host` field's value.
    pub fn host(&self) -> &str {
        let value = &self.head.head[self.host.0 as usize..self.host.1 as usize];
        // Checked to be ASCII in `new`.
        std::str::from_utf8(value).unwrap_or_default()
    }

    /// The values of the fields of `kind`, in order.
    pub fn values(&self, kind: FieldKind) -> impl Iterator<Item = &[u8]> {
        self.head
            .spans
            .spans()
            .iter()
            .filter(move |s| s.kind == kind)
            .map(|s| &self.head.head[s.value.0 as usize..s.value.1 as usize])
    }

    /// Its fields and then the added ones as a map (`FieldSpans::fields`),
    /// and whether the map holds a hop-by-hop field.
    pub fn into_map(self, room: usize) -> Result<(HeaderMap, bool), &'static str> {
        let (mut map, noted) = self.head.spans.fields(&self.head.head, self.added.len() + room)?;
        for (name, value) in self.added {
            map.append(name, value);
        }
        Ok((map, noted.hop_by_hop))
    }

    /// How many fields its map would hold, and their names' and values'
    /// bytes, the added ones included.
    pub fn size(&self) -> (usize, usize) {
        let added: usize = self.added.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
        (self.field_count + self.added.len(), self.field_bytes + added)
    }

    /// Writes its fields as they go upstream: its own (names lowercased,
    /// the connection-level ones and `transfer-encoding`, which the writer
    /// frames itself, left out), then the added ones.
    pub fn put_fields(&self, out: &mut BytesMut) {
        self.put_own_fields(out);
        for (name, value) in &self.added {
            out.put_slice(name.as_str().as_bytes());
            put_value(out, value.as_bytes());
        }
    }

    fn put_own_fields(&self, out: &mut BytesMut) {
        let skipped = |kind| {
            matches!(
                kind,
                FieldKind::Connection
                    | FieldKind::KeepAlive
                    | FieldKind::ProxyConnection
                    | FieldKind::TransferEncoding
            )
        };
        let head = &self.head.head[..];
        let spans = self.head.spans.spans();
        // Usually every line stays and stands as a writer puts it: the
        // block is then copied in one piece and its names lowercased where
        // they landed (line by line was a sixth of the raw path's cost).
        let block = match (spans.first(), spans.last()) {
            (Some(first), Some(last)) => Some((first.name.0 as usize, last.value.1 as usize + 2)),
            _ => None,
        };
        let whole = block.is_some()
            && spans.iter().all(|s| !skipped(s.kind) && s.is_canonical(head))
            && spans.windows(2).all(|w| w[1].name.0 == w[0].value.1 + 2);
        if let (true, Some((from, to))) = (whole, block) {
            let at = out.len();
            out.put_slice(&head[from..to]);
            for s in spans {
                let name = at + s.name.0 as usize - from..at + s.name.1 as usize - from;
                out[name].make_ascii_lowercase();
            }
            return;
        }
        for (kind, name, value, line) in self.head.lines() {
            if !skipped(kind) {
                put_line(out, name, value, line);
            }
        }
    }
}

/// What a head's connection-level fields said, noted while the head became
/// a map: keep-alive and framing are then decided without lookups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectionFields {
    /// `connection: close`.
    pub close: bool,
    /// `connection: keep-alive`.
    pub keep_alive: bool,
    pub content_length: bool,
    pub transfer_encoding: bool,
    /// A hop-by-hop field went into the map (a `connection` naming other
    /// fields, `te`, `upgrade`, `transfer-encoding`): only then does the
    /// proxy need `headers::remove_hop_by_hop`'s walk over the names.
    pub hop_by_hop: bool,
}

impl ConnectionFields {
    /// Notes what a field of `kind` says about the framing and the
    /// connection; true when it is hop-by-hop in a way that skipping it as
    /// it is written would not handle (a `connection` naming other fields,
    /// `te`, `upgrade`).
    fn note(&mut self, kind: FieldKind, value: &[u8]) -> bool {
        match kind {
            FieldKind::Connection => self.note_connection(value),
            FieldKind::Te | FieldKind::Upgrade => true,
            FieldKind::ContentLength => {
                self.content_length = true;
                false
            }
            FieldKind::TransferEncoding => {
                self.transfer_encoding = true;
                self.hop_by_hop = true;
                false
            }
            _ => false,
        }
    }

    /// Notes one `connection` field's options; true when it names anything
    /// besides `close` and `keep-alive` (so it must stay in the map).
    fn note_connection(&mut self, value: &[u8]) -> bool {
        // The usual value is one of the two alone: no splitting then.
        match value.len() {
            5 if token_is(value, b"close") => {
                self.close = true;
                return false;
            }
            10 if token_is(value, b"keep-alive") => {
                self.keep_alive = true;
                return false;
            }
            _ => {}
        }
        let mut others = false;
        for option in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            if option.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if option.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if !option.is_empty() {
                others = true;
            }
        }
        others
    }

    /// Whether the connection may carry another message after this one
    /// (HTTP/1.1 unless `connection: close`; HTTP/1.0 only with `keep-alive`).
    pub fn keeps_alive(&self, version: Version) -> bool {
        if version == Version::HTTP_10 {
            self.keep_alive && !self.close
        } else {
            !self.close
        }
    }
}

/// One field of a raw head as `RawHead::lines` gives it, its name
/// lowercased (as from a map, and as Envoy writes names): the whole line in
/// one copy when it stands canonically.
pub fn put_line(out: &mut BytesMut, name: &[u8], value: &[u8], line: Option<&[u8]>) {
    let at = out.len();
    match line {
        Some(line) => out.put_slice(line),
        None => {
            out.put_slice(name);
            put_value(out, value);
        }
    }
    out[at..at + name.len()].make_ascii_lowercase();
}

/// What follows a field's name in a head.
pub fn put_value(out: &mut BytesMut, value: &[u8]) {
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// `name: value` lines, as in a head or a chunked body's trailers.
pub fn put_fields(out: &mut BytesMut, fields: &HeaderMap) {
    for (name, value) in fields {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
}

pub fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter()
        .try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunked {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailers (possibly none) up to an empty line.
    Trailers,
}

/// One step of the chunked decoder over `buf`.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    NeedMore,
}

pub fn decode_chunked(state: &mut Chunked, buf: &mut BytesMut) -> Result<Decoded, &'static str> {
    loop {
        match *state {
            Chunked::Size => {
                let Some(eol) = find_crlf(buf) else {
                    return if buf.len() > MAX_HEAD_BYTES {
                        Err("chunk size line too long")
                    } else {
                        Ok(Decoded::NeedMore)
                    };
                };
                let line = buf.split_to(eol + 2);
                let size = parse_chunk_size(&line[..eol]).ok_or("invalid chunk size")?;
                *state = if size == 0 {
                    Chunked::Trailers
                } else {
                    Chunked::Data(size)
                };
            }
            Chunked::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let n = (buf.len() as u64).min(left) as usize;
                let data = buf.split_to(n).freeze();
                *state = if left == n as u64 {
                    Chunked::DataEnd
                } else {
                    Chunked::Data(left - n as u64)
                };
                return Ok(Decoded::Data(data));
            }
            Chunked::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Decoded::NeedMore);
                }
                if &buf[..2] != b"\r\n" {
                    return Err("missing CRLF after chunk data");
                }
                buf.advance(2);
                *state = Chunked::Size;
            }
            Chunked::Trailers => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    return Ok(Decoded::End);
                }
                let mut slots = [httparse::EMPTY_HEADER; MAX_TRAILERS];
                match httparse::parse_headers(buf, &mut slots) {
                    Ok(httparse::Status::Complete((len, parsed))) => {
                        let mut trailers = HeaderMap::new();
                        for h in parsed {
                            let name = HeaderName::from_bytes(h.name.as_bytes())
                                .map_err(|_| "invalid trailer name")?;
                            let value =
                                HeaderValue::from_bytes(h.value).map_err(|_| "invalid trailer value")?;
                            trailers.append(name, value);
                        }
                        buf.advance(len);
                        return Ok(Decoded::Trailers(trailers));
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                        return Err("trailers too large")
                    }
                    Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                    Err(_) => return Err("malformed trailers"),
                }
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// A chunk-size line without its CRLF (RFC 9112 §7.1): hex digits (leading
/// zeros allowed), then optional whitespace and `;` extensions, which are
/// ignored but must not hold control characters.
pub fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return None;
    }
    let rest = &line[digits..];
    let ext = rest.trim_ascii_start();
    let tail_ok = (ext.is_empty() && rest.iter().all(|b| *b == b' ' || *b == b'\t'))
        || (ext.first() == Some(&b';')
            && ext
                .iter()
                .all(|b| *b == b'\t' || (0x20..0x7f).contains(b) || *b >= 0x80));
    if !tail_ok {
        return None;
    }
    line[..digits].iter().try_fold(0u64, |n, d| {
        let v = u64::from((*d as char).to_digit(16)?);
        n.checked_mul(16)?.checked_add(v)
    })
}

/// A response head as an origin would send it with the fields in `pairs`,
/// parsed and scanned (for table-driven tests).
#[cfg(test)]
pub fn raw_head(pairs: &[(&str, &str)]) -> RawHead {
    let mut text = String::from("HTTP/1.1 200 OK\r\n");
    for (k, v) in pairs {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    let head = Bytes::from(text);
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut slots);
    assert!(response.parse(&head).unwrap().is_complete());
    let spans = FieldSpans::new(head.as_ptr() as usize, response.headers);
    let mut raw = RawHead {
        head: head.clone(),
        spans,
    };
    raw.scan();
    raw
}

/// A field map from name/value pairs (for table-driven tests).
#[cfg(test)]
pub fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_kinds_by_name_in_any_case() {
        use FieldKind::*;
        let cases: &[(&str, FieldKind)] = &[
            ("connection", Connection),
            ("Connection", Connection),
            ("CONNECTION", Connection),
            ("keep-alive", KeepAlive),
            ("Keep-Alive", KeepAlive),
            ("proxy-connection", ProxyConnection),
            ("Transfer-Encoding", TransferEncoding),
            ("content-length", ContentLength),
            ("Content-Length", ContentLength),
            ("TE", Te),
            ("Upgrade", Upgrade),
            ("Date", Date),
            ("Host", Host),
            ("HOST", Host),
            ("Expect", Expect),
            ("X-Request-ID", XRequestId),
            ("X-Forwarded-For", XForwardedFor),
            ("x-forwarded-proto", XForwardedProto),
            ("X-Envoy-Internal", XEnvoy),
            ("x-envoy-upstream-rq-timeout-ms", XEnvoy),
            ("x-envoy-a", XEnvoy),
            // Same lengths, other names.
            ("x-envoy-", Other),
            ("x-envoyxa", Other),
            ("x-forwarded-fox", Other),
            ("x-forwarded-prot0", Other),
            ("x-request-ix", Other),
            ("hosx", Other),
            ("expecx", Other),
            ("content-type", Other),
            ("contentXlength", Other),
            ("content_length", Other),
            ("keep_alive", Other),
            ("connectiom", Other),
            ("Connectiom", Other),
            ("xonnection", Other),
            ("transfer-encodinG", TransferEncoding),
            ("transfer-encodinx", Other),
            ("xransfer-encoding", Other),
            ("proxy-connectioN", ProxyConnection),
            ("proxy-connectioX", Other),
            ("upgradx", Other),
            ("DATE", Date),
            ("dat\r", Other),
            ("tx", Other),
            ("xe", Other),
            ("server", Other),
            ("", Other),
        ];
        for (name, want) in cases {
            assert_eq!(field_kind(name.as_bytes()), *want, "{name}");
        }
    }

    #[test]
    fn a_raw_head_is_plain_unless_a_hop_by_hop_rule_needs_more_than_skipping() {
        type Fields = &'static [(&'static str, &'static str)];
        // (fields, plain, noted close, noted content-length)
        let cases: &[(Fields, bool, bool, bool)] = &[
            (&[("Server", "o"), ("Content-Length", "3")], true, false, true),
            (
                &[("Connection", "keep-alive"), ("Keep-Alive", "timeout=5")],
                true,
                false,
                false,
            ),
            (&[("connection", "Close")], true, true, false),
            (&[("Connection", "close, x-private")], false, true, false),
            (&[("TE", "trailers")], false, false, false),
            (&[("Upgrade", "websocket")], false, false, false),
            (&[("Transfer-Encoding", "chunked")], true, false, false),
            (
                &[("Transfer-Encoding", "chunked"), ("Content-Length", "3")],
                false,
                false,
                true,
            ),
        ];
        for (pairs, plain, close, length) in cases {
            let mut raw = raw_head(pairs);
            let (noted, got) = raw.scan();
            assert_eq!(
                (got, noted.close, noted.content_length),
                (*plain, *close, *length),
                "{pairs:?}"
            );
            // The kinds stay with the fields.
            for (kind, name, _) in raw.iter() {
                assert_eq!(kind, field_kind(name));
            }
        }
    }

    #[test]
    fn a_map_is_marked_when_a_hop_by_hop_field_went_into_it() {
        type Fields = &'static [(&'static str, &'static str)];
        let cases: &[(Fields, bool)] = &[
            (&[("Host", "a"), ("Accept", "*/*")], false),
            // Dropped while the map is built: nothing left to remove.
            (
                &[("Connection", "keep-alive"), ("Keep-Alive", "timeout=5")],
                false,
            ),
            (&[("Proxy-Connection", "close")], false),
            (&[("Connection", "keep-alive, X-Drop")], true),
            (&[("Transfer-Encoding", "chunked")], true),
            (&[("TE", "trailers")], true),
            (&[("Upgrade", "websocket")], true),
        ];
        for (pairs, want) in cases {
            let mut raw = raw_head(pairs);
            let (map, noted) = raw.spans.fields(&raw.head, 0).unwrap();
            assert_eq!(noted.hop_by_hop, *want, "{pairs:?}");
            // The raw scan notes the same.
            assert_eq!(raw.scan().0, noted, "{pairs:?}");
            assert!(!map.contains_key("keep-alive") && !map.contains_key("proxy-connection"));
        }
    }

    #[test]
    fn a_map_names_every_field_as_parsing_its_name_would() {
        // Known kinds take a constant name; the rest are parsed. Either
        // way the map must read as if every name had been parsed, before
        // `scan` has told the kinds and after.
        let pairs: &[(&str, &str)] = &[
            ("HOST", "a"),
            ("Date", "Thu, 03 Dec 2026 18:00:00 GMT"),
            ("content-length", "0"),
            ("Expect", "100-continue"),
            ("X-Forwarded-For", "10.0.0.1"),
            ("x-forwarded-proto", "http"),
            ("X-Request-Id", "r"),
            ("X-Envoy-Internal", "true"),
            ("Content-Type", "text/plain"),
            ("X-Date", "d"),
            ("Dates", "e"),
            ("Connection", "keep-alive, x-drop"),
            ("TE", "trailers"),
            ("Upgrade", "websocket"),
        ];
        for scanned in [false, true] {
            let mut raw = raw_head(pairs);
            if scanned {
                raw.scan();
            }
            let (map, _) = raw.spans.fields(&raw.head, 0).unwrap();
            let got: Vec<_> = map
                .iter()
                .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
                .collect();
            let want: Vec<_> = pairs
                .iter()
                .map(|(n, v)| (HeaderName::from_bytes(n.as_bytes()).unwrap(), *v))
                .collect();
            let want: Vec<_> = want.iter().map(|(n, v)| (n.as_str(), *v)).collect();
            assert_eq!(got, want, "scanned: {scanned}");
        }
    }

    /// Decoded data and the one trailer expected, or the error.
    type Decoding = Result<(&'static [u8], Option<(&'static str, &'static str)>), &'static str>;

    #[test]
    fn chunk_size_lines() {
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"5", Some(5)),
            (b"1a", Some(26)),
            (b"00000000000000000010", Some(16)),
            (b"A;name=value", Some(10)),
            (b"A ;name", Some(10)),
            (b"A\t; name=\"quoted\"", Some(10)),
            (b"0", Some(0)),
            (b"", None),
            (b" 5", None),
            (b"5x", None),
            (b"5;ext\x00", None),
            (b"5;ext\nmore", None),
            (b"-1", None),
            (b"10000000000000000", None),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_chunk_size(line),
                *want,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    /// Turns `fields` (a head's field lines) into a map and its notes.
    fn noted(fields: &str) -> (HeaderMap, ConnectionFields) {
        let wire = Bytes::from(format!("HTTP/1.1 200 OK\r\n{fields}\r\n"));
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut slots);
        assert!(response.parse(&wire).unwrap().is_complete(), "{fields:?}");
        FieldSpans::new(wire.as_ptr() as usize, response.headers)
            .fields(&wire, 0)
            .unwrap()
    }

    #[test]
    fn keep_alive_by_version_and_connection_options() {
        let cases: &[(Version, &str, bool)] = &[
            (Version::HTTP_11, "", true),
            (Version::HTTP_11, "connection: close\r\n", false),
            (Version::HTTP_11, "connection: keep-alive, Close\r\n", false),
            (
                Version::HTTP_11,
                "connection: keep-alive\r\nconnection: close\r\n",
                false,
            ),
            (Version::HTTP_10, "", false),
            (Version::HTTP_10, "connection: Keep-Alive\r\n", true),
            (Version::HTTP_10, "connection: x-a, keep-alive\r\n", true),
            (Version::HTTP_11, "connection: CLOSE\r\n", false),
            (Version::HTTP_11, "connection: clos\r\n", true),
            (Version::HTTP_11, "connection: closer\r\n", true),
            (Version::HTTP_10, "connection: KEEP-ALIVE\r\n", true),
            (Version::HTTP_10, "connection: keep_alive\r\n", false),
            (Version::HTTP_10, "connection: keep alive\r\n", false),
        ];
        for (v, fields, want) in cases {
            assert_eq!(noted(fields).1.keeps_alive(*v), *want, "{v:?} {fields:?}");
        }
    }

    #[test]
    fn connection_only_fields_stay_out_of_the_map() {
        // (fields, names left in the map, content_length, transfer_encoding)
        let cases: &[(&str, &[&str], bool, bool)] = &[
            ("connection: keep-alive\r\nx-a: 1\r\n", &["x-a"], false, false),
            (
                "Connection: close\r\nkeep-alive: timeout=5\r\n",
                &[],
                false,
                false,
            ),
            (
                "proxy-connection: keep-alive\r\ncontent-length: 3\r\n",
                &["content-length"],
                true,
                false,
            ),
            // Naming another field (or `upgrade`), `connection` stays.
            (
                "connection: x-a, close\r\nx-a: 1\r\n",
                &["connection", "x-a"],
                false,
                false,
            ),
            (
                "connection: Upgrade\r\nupgrade: websocket\r\n",
                &["connection", "upgrade"],
                false,
                false,
            ),
            (
                "transfer-encoding: chunked\r\n",
                &["transfer-encoding"],
                false,
                true,
            ),
        ];
        for (fields, names, cl, te) in cases {
            let (map, noted) = noted(fields);
            let got: Vec<&str> = map.keys().map(HeaderName::as_str).collect();
            assert_eq!(got, *names, "{fields:?}");
            assert_eq!(
                (noted.content_length, noted.transfer_encoding),
                (*cl, *te),
                "{fields:?}"
            );
        }
    }

    /// Feeds `wire` to the chunked decoder `step` bytes at a time.
    fn decode_all(wire: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>, bool), &'static str> {
        let mut state = Chunked::Size;
        let mut buf = BytesMut::new();
        let (mut data, mut trailers, mut ended) = (Vec::new(), None, false);
        let mut fed = 0;
        loop {
            match decode_chunked(&mut state, &mut buf)? {
                Decoded::Data(d) => data.extend_from_slice(&d),
                Decoded::Trailers(t) => {
                    trailers = Some(t);
                    ended = true;
                    break;
                }
                Decoded::End => {
                    ended = true;
                    break;
                }
                Decoded::NeedMore if fed >= wire.len() => break,
                Decoded::NeedMore => {
                    let end = (fed + step).min(wire.len());
                    buf.extend_from_slice(&wire[fed..end]);
                    fed = end;
                }
            }
        }
        Ok((data, trailers, ended))
    }

    #[test]
    fn chunked_bodies_decode_at_any_split() {
        let cases: &[(&[u8], Decoding)] = &[
            (
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                Ok((b"hello world", None)),
            ),
            (b"A;ext=1\r\n0123456789\r\n0\r\n\r\n", Ok((b"0123456789", None))),
            (
                b"3\r\nabc\r\n0\r\ngrpc-status: 0\r\n\r\n",
                Ok((b"abc", Some(("grpc-status", "0")))),
            ),
            (b"zz\r\n", Err("invalid chunk size")),
            (b"3\r\nabcX\r\n", Err("missing CRLF after chunk data")),
        ];
        for (wire, want) in cases {
            for step in [1, 2, 3, 7, wire.len()] {
                let got = decode_all(wire, step);
                match want {
                    Ok((data, trailer)) => {
                        let (d, t, ended) = got.unwrap_or_else(|e| panic!("{e}: {wire:?} step {step}"));
                        assert_eq!(&d, data, "step {step}");
                        assert!(ended, "step {step}");
                        match trailer {
                            Some((k, v)) => assert_eq!(t.unwrap()[*k], *v),
                            None => assert!(t.is_none()),
                        }
                    }
                    Err(e) => assert_eq!(got.err(), Some(*e), "step {step}"),
                }
            }
        }
    }
}
