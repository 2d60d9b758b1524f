//! The server side of an HTTP/2 connection as a state machine (RFC 9113):
//! bytes in, events and frames out, no I/O and no futures. `h2_server`
//! drives it with a socket and the requests' futures.
//!
//! It owns what the protocol says about a connection: the preface and
//! settings, stream states and identifiers, HPACK, both directions of
//! flow control, and the errors. Each stream carries a value of the
//! driver's (`T`: the request's work), which goes back to the driver when
//! the stream ends.
//!
//! Envoy's behaviour followed here (its HTTP/2 codec over nghttp2, with
//! the default `override_stream_error_on_invalid_http_message: false`): a
//! malformed request (a bad field, a missing or repeated pseudo-header, a
//! connection-specific field, a body longer or shorter than its
//! content-length) ends the whole connection with GOAWAY PROTOCOL_ERROR,
//! not just its stream. A stream over SETTINGS_MAX_CONCURRENT_STREAMS is
//! refused (RST_STREAM REFUSED_STREAM), so the client may retry it.

use std::collections::HashMap;
use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Method, Uri};

use super::h2_frame::{self as frame, flag, kind, setting, Head, Reason};
use super::hpack::{self, DecodeError, Field, Pseudo};

/// What a connection announces and enforces.
#[derive(Clone, Debug)]
pub struct Config {
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: what a client may send on a stream
    /// before legate has passed it on (the per-stream buffer bound).
    pub initial_stream_window: u32,
    /// The connection's receive window (over all streams).
    pub initial_connection_window: u32,
    /// `max_request_headers_kb` in bytes: a request over it is kept to
    /// just over it (the proxy then answers 431), its block still decoded.
    pub max_header_bytes: usize,
    /// `max_headers_count`, kept the same way.
    pub max_headers_count: usize,
}

/// A connection error: GOAWAY with `reason` has been queued, and the
/// connection should close once it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnError {
    pub reason: Reason,
    pub detail: &'static str,
}

fn fail<X>(reason: Reason, detail: &'static str) -> Result<X, ConnError> {
    Err(ConnError { reason, detail })
}

/// What the driver is told.
pub enum Event<T> {
    /// A new stream: its request head, and whether the request ends with it.
    Request {
        key: usize,
        head: RequestHead,
        end_stream: bool,
    },
    /// Request body bytes. They hold flow-control window until the driver
    /// `release`s them (once passed on, or dropped).
    Data {
        key: usize,
        data: Bytes,
        end_stream: bool,
    },
    Trailers {
        key: usize,
        trailers: HeaderMap,
    },
    /// The stream ended abnormally: the client reset it, or it broke a
    /// rule of its own (RST_STREAM sent). Its value is handed back.
    Reset {
        user: T,
        reason: Reason,
        by_peer: bool,
    },
    /// The client sent GOAWAY: it opens no more streams.
    GoAway,
}

/// A request's head, as the proxy wants it: an origin-form URI, and the
/// `:authority` as `host`.
#[derive(Debug)]
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub content_length: Option<u64>,
    /// Over `max_request_headers_kb` or `max_headers_count` (pseudo-header
    /// fields included): to be answered 431, not proxied. `headers` then
    /// holds only what came before the limit.
    pub too_large: bool,
}

struct Stream<T> {
    id: u32,
    /// What legate may still send (may go negative after a SETTINGS change).
    send_window: i64,
    /// What the client may still send before a WINDOW_UPDATE.
    recv_window: i64,
    /// Bytes released by the driver and not yet given back to the client.
    recv_unreleased: u32,
    /// Bytes handed to the driver (DATA events) and not released yet: given
    /// back to the connection's window when the stream goes.
    held: u64,
    /// The client sent END_STREAM.
    remote_closed: bool,
    /// The driver waits for send window.
    blocked: bool,
    content_length: Option<u64>,
    received: u64,
    user: T,
}

/// HEADERS awaiting its CONTINUATION frames.
struct Partial {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Preface,
    /// The client's first frame must be SETTINGS.
    FirstSettings,
    Open,
}

/// Frames on their way out: control frames and heads are appended to
/// `tail`; large DATA payloads queue as they are (no copy).
#[derive(Default)]
pub struct Outbox {
    chunks: VecDeque<Bytes>,
    /// The bytes in `chunks`.
    chunked: usize,
    tail: Vec<u8>,
    /// Of `tail` (when `chunks` is empty), what is written already.
    tail_written: usize,
}

/// DATA payloads up to this size are copied into the frame buffer: one
/// write for many small responses, instead of a queue entry each.
const COPY_MAX: usize = 4096;

impl Outbox {
    pub fn len(&self) -> usize {
        self.chunked + self.tail.len() - self.tail_written
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.tail.len() == self.tail_written
    }

    fn push_bytes(&mut self, data: Bytes) {
        if data.len() <= COPY_MAX {
            self.tail.extend_from_slice(&data);
            return;
        }
        if self.tail.len() > self.tail_written {
            let tail = Bytes::from(std::mem::take(&mut self.tail)).slice(self.tail_written..);
            self.chunked += tail.len();
            self.chunks.push_back(tail);
        } else {
            self.tail.clear();
        }
        self.tail_written = 0;
        self.chunked += data.len();
        self.chunks.push_back(data);
    }

    /// Up to 16 buffers of what is to be written, in order.
    pub fn slices<'a>(&'a self, out: &mut [std::io::IoSlice<'a>; 16]) -> usize {
        let mut n = 0;
        for c in self.chunks.iter().take(15) {
            out[n] = std::io::IoSlice::new(c);
            n += 1;
        }
        if self.chunks.len() <= 15 && self.tail.len() > self.tail_written {
            out[n] = std::io::IoSlice::new(&self.tail[self.tail_written..]);
            n += 1;
        }
        n
    }

    /// `n` bytes from the front were written.
    pub fn advance(&mut self, mut n: usize) {
        while n > 0 {
            match self.chunks.front_mut() {
                Some(c) if c.len() <= n => {
                    n -= c.len();
                    self.chunked -= c.len();
                    self.chunks.pop_front();
                }
                Some(c) => {
                    c.advance(n);
                    self.chunked -= n;
                    return;
                }
                None => {
                    self.tail_written += n;
                    break;
                }
            }
        }
        if self.chunks.is_empty() && self.tail_written >= self.tail.len() {
            self.tail.clear();
            self.tail_written = 0;
        }
    }
}

/// Stream ids legate reset recently: DATA already on its way for them is
/// dropped quietly instead of answered with RST_STREAM each.
const RECENT_RESETS: usize = 64;

/// DATA payloads shorter than this are copied out of the read buffer: a
/// slice would keep the whole buffer (16 KiB or more) alive for a few
/// bytes of window.
const SLICE_MIN: usize = 4096;

/// Frames with an empty payload and no END_STREAM (DATA, HEADERS,
/// CONTINUATION) in a row before the connection is closed: Envoy's
/// `max_consecutive_inbound_frames_with_empty_payload` default. They have
/// no legitimate use and each costs a pass.
const MAX_EMPTY_FRAMES: u32 = 1;

/// The GOAWAY a graceful shutdown starts with (RFC 9113 §6.8) names the
/// largest stream id, and a PING with this payload follows it.
const NOTICE_LAST_STREAM: u32 = frame::MAX_WINDOW;
const SHUTDOWN_PING: [u8; 8] = *b"legate:G";

pub struct Conn<T> {
    cfg: Config,
    phase: Phase,
    decoder: hpack::Decoder,
    pub encoder: hpack::Encoder,
    peer_max_frame: usize,
    peer_initial_window: i64,
    send_window: i64,
    recv_window: i64,
    recv_unreleased: u32,
    streams: slab::Slab<Stream<T>>,
    ids: HashMap<u32, usize, foldhash::fast::RandomState>,
    /// The highest stream id the client has used.
    last_opened: u32,
    /// The last stream processed, once the final GOAWAY is sent.
    goaway: Option<u32>,
    /// A shutdown notice (GOAWAY with the largest id) is out.
    notice_sent: bool,
    /// Its PING came back: the final GOAWAY is due.
    notice_acked: bool,
    /// Frames with an empty payload in a row.
    empty_frames: u32,
    partial: Option<Partial>,
    recent_resets: [u32; RECENT_RESETS],
    recent_next: usize,
    /// Streams that were waiting for send window and now have some.
    writable: Vec<usize>,
    /// A stream waits for the connection's send window.
    conn_blocked: bool,
    pub out: Outbox,
}

impl<T: Default> Conn<T> {
    /// A connection whose preface the client has yet to send (the bytes
    /// given to `read` start with it). Legate's SETTINGS are queued.
    pub fn new(cfg: Config) -> Conn<T> {
        let mut out = Outbox::default();
        let mut settings = vec![
            (setting::MAX_CONCURRENT_STREAMS, cfg.max_concurrent_streams),
            (setting::INITIAL_WINDOW_SIZE, cfg.initial_stream_window),
        ];
        if let Ok(bytes) = u32::try_from(cfg.max_header_bytes) {
            settings.push((setting::MAX_HEADER_LIST_SIZE, bytes));
        }
        frame::put_settings(&mut out.tail, &settings);
        let conn_window = cfg
            .initial_connection_window
            .clamp(frame::DEFAULT_WINDOW, frame::MAX_WINDOW);
        if conn_window > frame::DEFAULT_WINDOW {
            frame::put_window_update(&mut out.tail, 0, conn_window - frame::DEFAULT_WINDOW);
        }
        Conn {
            phase: Phase::Preface,
            decoder: hpack::Decoder::new(4096),
            encoder: hpack::Encoder::default(),
            peer_max_frame: frame::DEFAULT_MAX_FRAME_SIZE as usize,
            peer_initial_window: i64::from(frame::DEFAULT_WINDOW),
            send_window: i64::from(frame::DEFAULT_WINDOW),
            recv_window: i64::from(conn_window),
            recv_unreleased: 0,
            streams: slab::Slab::new(),
            ids: HashMap::default(),
            last_opened: 0,
            goaway: None,
            notice_sent: false,
            notice_acked: false,
            empty_frames: 0,
            partial: None,
            recent_resets: [0; RECENT_RESETS],
            recent_next: 0,
            writable: Vec::new(),
            conn_blocked: false,
            out,
            cfg,
        }
    }

    /// Open streams (those the driver still holds).
    pub fn active(&self) -> usize {
        self.streams.len()
    }

    /// The final GOAWAY is out: no new stream will be served.
    pub fn goaway_sent(&self) -> bool {
        self.goaway.is_some()
    }

    /// A graceful shutdown has started (a notice or the final GOAWAY).
    pub fn shutting_down(&self) -> bool {
        self.notice_sent || self.goaway.is_some()
    }

    /// The shutdown notice's PING came back: every stream the client
    /// opened before it saw the notice has arrived.
    pub fn notice_acknowledged(&self) -> bool {
        self.notice_acked
    }

    pub fn user_mut(&mut self, key: usize) -> Option<&mut T> {
        self.streams.get_mut(key).map(|s| &mut s.user)
    }

    fn stream_id(&self, key: usize) -> Option<u32> {
        self.streams.get(key).map(|s| s.id)
    }

    /// Streams that got send window since the last call.
    pub fn take_writable(&mut self, into: &mut Vec<usize>) {
        into.append(&mut self.writable);
    }

    /// Sends GOAWAY: streams up to the last one opened are finished, later
    /// ones ignored. Graceful (NO_ERROR) for a drain or a request limit.
    /// The last stream id never goes up from one GOAWAY to the next.
    pub fn go_away(&mut self, reason: Reason, detail: &'static str) {
        if self.goaway.is_some() && reason == Reason::NO_ERROR {
            return;
        }
        let last = self.goaway.map_or(self.last_opened, |g| g.min(self.last_opened));
        self.goaway = Some(last);
        frame::put_goaway(&mut self.out.tail, last, reason, detail.as_bytes());
    }

    /// Starts a graceful shutdown as nghttp2 and Envoy do: a GOAWAY naming
    /// the largest stream id (nothing refused yet) and a PING. The final
    /// GOAWAY (`go_away`) is for the driver to send once the PING is back
    /// (`notice_acknowledged`) or Envoy's `drain_timeout` has passed, so a
    /// request the client sent before it saw the notice is still served.
    pub fn start_shutdown(&mut self) {
        if self.shutting_down() {
            return;
        }
        self.notice_sent = true;
        frame::put_goaway(&mut self.out.tail, NOTICE_LAST_STREAM, Reason::NO_ERROR, b"");
        frame::put_head(&mut self.out.tail, 8, kind::PING, 0, 0);
        self.out.tail.extend_from_slice(&SHUTDOWN_PING);
    }

    fn conn_error(&mut self, e: ConnError) -> ConnError {
        self.go_away(e.reason, e.detail);
        e
    }

    /// Parses what `buf` holds, up to the next event for the driver.
    /// Ok(None): `buf` needs more bytes. After an Err, GOAWAY is queued
    /// and the connection is done.
    pub fn read(&mut self, buf: &mut BytesMut) -> Result<Option<Event<T>>, ConnError> {
        match self.read_inner(buf) {
            Err(e) => Err(self.conn_error(e)),
            ok => ok,
        }
    }

    fn read_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Event<T>>, ConnError> {
        loop {
            if self.phase == Phase::Preface {
                let n = buf.len().min(frame::PREFACE.len());
                if buf[..n] != frame::PREFACE[..n] {
                    return fail(Reason::PROTOCOL_ERROR, "invalid connection preface");
                }
                if n < frame::PREFACE.len() {
                    return Ok(None);
                }
                buf.advance(n);
                self.phase = Phase::FirstSettings;
            }
            let Some(head) = Head::parse(buf) else {
                return Ok(None);
            };
            // Legate never raises SETTINGS_MAX_FRAME_SIZE.
            if head.len > frame::DEFAULT_MAX_FRAME_SIZE as usize {
                return fail(
                    Reason::FRAME_SIZE_ERROR,
                    "frame larger than SETTINGS_MAX_FRAME_SIZE",
                );
            }
            if buf.len() < frame::HEADER_LEN + head.len {
                return Ok(None);
            }
            if self.phase == Phase::FirstSettings && (head.kind != kind::SETTINGS || head.has(flag::ACK)) {
                return fail(Reason::PROTOCOL_ERROR, "the first frame is not SETTINGS");
            }
            if let Some(p) = &self.partial {
                if head.kind != kind::CONTINUATION || head.stream != p.stream {
                    return fail(Reason::PROTOCOL_ERROR, "a header block interrupted");
                }
            }
            self.count_empty(&head, &buf[frame::HEADER_LEN..frame::HEADER_LEN + head.len])?;
            if head.kind == kind::DATA {
                // Large DATA keeps its bytes: split off, not copied.
                let payload = if head.len >= SLICE_MIN {
                    buf.split_to(frame::HEADER_LEN + head.len)
                        .freeze()
                        .slice(frame::HEADER_LEN..)
                } else {
                    let copy = Bytes::copy_from_slice(&buf[frame::HEADER_LEN..frame::HEADER_LEN + head.len]);
                    buf.advance(frame::HEADER_LEN + head.len);
                    copy
                };
                if let Some(e) = self.on_data(head, payload)? {
                    return Ok(Some(e));
                }
                continue;
            }
            let event = {
                let payload = &buf[frame::HEADER_LEN..frame::HEADER_LEN + head.len];
                // Copied out of `buf` only where needed (header blocks).
                self.on_frame(head, payload)?
            };
            buf.advance(frame::HEADER_LEN + head.len);
            if let Some(e) = event {
                return Ok(Some(e));
            }
        }
    }

    /// Empty DATA, HEADERS or CONTINUATION frames without END_STREAM, in a
    /// row: more than `MAX_EMPTY_FRAMES` ends the connection. A frame of
    /// padding alone is empty too (Envoy counts the payload less padding).
    fn count_empty(&mut self, head: &Head, payload: &[u8]) -> Result<(), ConnError> {
        if !matches!(head.kind, kind::DATA | kind::HEADERS | kind::CONTINUATION) {
            return Ok(());
        }
        // A HEADERS frame's priority fields are not content either. A
        // malformed pad length counts as content: the frame's own handler
        // reports it.
        let priority = if head.kind == kind::HEADERS && head.has(flag::PRIORITY) {
            5
        } else {
            0
        };
        let content = frame::unpad(head, payload).is_none_or(|r| r.len() > priority);
        if content || head.has(flag::END_STREAM) {
            self.empty_frames = 0;
            return Ok(());
        }
        self.empty_frames += 1;
        if self.empty_frames > MAX_EMPTY_FRAMES {
            return fail(Reason::ENHANCE_YOUR_CALM, "too many frames with an empty payload");
        }
        Ok(())
    }

    /// A stream the client has not opened: above any it has, or even
    /// (servers' ids; legate opens none).
    fn idle(&self, id: u32) -> bool {
        id > self.last_opened || id.is_multiple_of(2)
    }

    fn on_frame(&mut self, head: Head, payload: &[u8]) -> Result<Option<Event<T>>, ConnError> {
        match head.kind {
            kind::HEADERS => self.on_headers(head, payload),
            kind::CONTINUATION => self.on_continuation(head, payload),
            kind::PRIORITY => self.on_priority(head, payload),
            kind::RST_STREAM => self.on_rst_stream(head, payload),
            kind::SETTINGS => self.on_settings(head, payload).map(|()| None),
            kind::PUSH_PROMISE => fail(Reason::PROTOCOL_ERROR, "PUSH_PROMISE from a client"),
            kind::PING => self.on_ping(head, payload).map(|()| None),
            kind::GOAWAY => {
                if head.stream != 0 {
                    return fail(Reason::PROTOCOL_ERROR, "GOAWAY on a stream");
                }
                if payload.len() < 8 {
                    return fail(Reason::FRAME_SIZE_ERROR, "GOAWAY shorter than 8 octets");
                }
                Ok(Some(Event::GoAway))
            }
            kind::WINDOW_UPDATE => self.on_window_update(head, payload),
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(None),
        }
    }

    fn on_data(&mut self, head: Head, payload: Bytes) -> Result<Option<Event<T>>, ConnError> {
        if head.stream == 0 {
            return fail(Reason::PROTOCOL_ERROR, "DATA on stream 0");
        }
        let len = payload.len();
        // The whole payload, padding included, counts (RFC 9113 §6.9.1).
        if len as i64 > self.recv_window {
            return fail(Reason::FLOW_CONTROL_ERROR, "DATA beyond the connection window");
        }
        self.recv_window -= len as i64;
        let Some(range) = frame::unpad(&head, &payload) else {
            return fail(Reason::PROTOCOL_ERROR, "DATA padding too long");
        };
        let Some(&key) = self.ids.get(&head.stream) else {
            if self.idle(head.stream) {
                return fail(Reason::PROTOCOL_ERROR, "DATA on an idle stream");
            }
            // A closed stream: its bytes are dropped, the window given back.
            // A stream above the GOAWAY's last one was never processed:
            // its frames are ignored (RFC 9113 §6.8).
            self.release_connection(len as u32);
            let ignored = self.recent_resets.contains(&head.stream)
                || self.goaway.is_some_and(|last| head.stream > last);
            if !ignored {
                self.reset_unknown(head.stream, Reason::STREAM_CLOSED);
            }
            return Ok(None);
        };
        let s = &mut self.streams[key];
        if s.remote_closed {
            return Ok(self.stream_error(key, Reason::STREAM_CLOSED, len as u32));
        }
        if len as i64 > s.recv_window {
            return Ok(self.stream_error(key, Reason::FLOW_CONTROL_ERROR, len as u32));
        }
        s.recv_window -= len as i64;
        let data = payload.slice(range);
        // Padding is nobody's to pass on: released at once.
        let padding = (len - data.len()) as u32;
        s.received += data.len() as u64;
        let end_stream = head.has(flag::END_STREAM);
        if let Some(cl) = s.content_length {
            if s.received > cl || (end_stream && s.received != cl) {
                return fail(
                    Reason::PROTOCOL_ERROR,
                    "request body length differs from content-length",
                );
            }
        }
        if end_stream {
            s.remote_closed = true;
        }
        s.held += data.len() as u64;
        if padding > 0 {
            self.give_back(key, padding);
        }
        if data.is_empty() && !end_stream {
            return Ok(None);
        }
        Ok(Some(Event::Data {
            key,
            data,
            end_stream,
        }))
    }

    fn on_headers(&mut self, head: Head, payload: &[u8]) -> Result<Option<Event<T>>, ConnError> {
        if head.stream == 0 {
            return fail(Reason::PROTOCOL_ERROR, "HEADERS on stream 0");
        }
        let Some(mut range) = frame::unpad(&head, payload) else {
            return fail(Reason::PROTOCOL_ERROR, "HEADERS padding too long");
        };
        let mut self_dependent = false;
        if head.has(flag::PRIORITY) {
            if range.len() < 5 {
                return fail(Reason::FRAME_SIZE_ERROR, "HEADERS priority fields truncated");
            }
            let dep = u32::from_be_bytes([
                payload[range.start],
                payload[range.start + 1],
                payload[range.start + 2],
                payload[range.start + 3],
            ]) & frame::MAX_WINDOW;
            self_dependent = dep == head.stream;
            range.start += 5;
        }
        let fragment = &payload[range];
        let end_stream = head.has(flag::END_STREAM);
        if !head.has(flag::END_HEADERS) {
            self.partial = Some(Partial {
                stream: head.stream,
                end_stream,
                block: fragment.to_vec(),
            });
            self.check_partial_size()?;
            // Checked once the block is whole (its fields must be decoded).
            if self_dependent {
                return fail(Reason::PROTOCOL_ERROR, "a stream depending on itself");
            }
            return Ok(None);
        }
        if self_dependent {
            // The block is decoded for HPACK's sake first.
            self.decode_discard(fragment)?;
            return fail(Reason::PROTOCOL_ERROR, "a stream depending on itself");
        }
        self.on_header_block(head.stream, end_stream, fragment)
    }

    fn on_continuation(&mut self, head: Head, payload: &[u8]) -> Result<Option<Event<T>>, ConnError> {
        let Some(p) = self.partial.as_mut() else {
            return fail(Reason::PROTOCOL_ERROR, "CONTINUATION without HEADERS");
        };
        p.block.extend_from_slice(payload);
        self.check_partial_size()?;
        if !head.has(flag::END_HEADERS) {
            return Ok(None);
        }
        let Some(p) = self.partial.take() else {
            return Ok(None);
        };
        self.on_header_block(p.stream, p.end_stream, &p.block)
    }

    /// A header block's compressed size is bounded too (a CONTINUATION
    /// flood would otherwise grow it without end): well above what a
    /// request within the limits can take.
    fn check_partial_size(&self) -> Result<(), ConnError> {
        let limit = (self.cfg.max_header_bytes * 2).max(64 * 1024);
        match &self.partial {
            Some(p) if p.block.len() > limit => fail(Reason::ENHANCE_YOUR_CALM, "header block too large"),
            _ => Ok(()),
        }
    }

    fn decode_discard(&mut self, block: &[u8]) -> Result<(), ConnError> {
        self.decoder.decode(block, |_| Ok(())).map_err(decode_error)
    }

    fn on_header_block(
        &mut self,
        id: u32,
        end_stream: bool,
        block: &[u8],
    ) -> Result<Option<Event<T>>, ConnError> {
        if let Some(&key) = self.ids.get(&id) {
            return self.on_trailers(key, end_stream, block);
        }
        if id.is_multiple_of(2) {
            return fail(Reason::PROTOCOL_ERROR, "a client stream with an even id");
        }
        if id <= self.last_opened {
            // A closed stream. Its block is decoded all the same (HPACK's
            // state depends on it). Trailers may still be on their way for
            // a stream legate reset or refused: those are dropped (RFC 9113
            // §5.1); anything else is a stream error.
            self.decode_discard(block)?;
            let ignored = self.recent_resets.contains(&id) || self.goaway.is_some_and(|last| id > last);
            if !ignored {
                self.reset_unknown(id, Reason::STREAM_CLOSED);
            }
            return Ok(None);
        }
        let mut builder = HeadBuilder::new(&self.cfg);
        self.decoder
            .decode(block, |f| builder.add(f))
            .map_err(decode_error)?;
        let head = builder.finish().map_err(decode_error)?;
        // Only now: a GOAWAY for a malformed request names the stream
        // before it as the last one legate acted on.
        self.last_opened = id;
        if self.goaway.is_some_and(|last| id > last) {
            // After GOAWAY: not processed (the client knows from its id).
            return Ok(None);
        }
        if self.streams.len() >= self.cfg.max_concurrent_streams as usize {
            self.reset_unknown(id, Reason::REFUSED_STREAM);
            return Ok(None);
        }
        if let Some(cl) = head.content_length {
            if end_stream && cl != 0 {
                return fail(
                    Reason::PROTOCOL_ERROR,
                    "request body length differs from content-length",
                );
            }
        }
        let key = self.streams.insert(Stream {
            id,
            send_window: self.peer_initial_window,
            recv_window: i64::from(self.cfg.initial_stream_window),
            recv_unreleased: 0,
            held: 0,
            remote_closed: end_stream,
            blocked: false,
            content_length: head.content_length,
            received: 0,
            user: T::default(),
        });
        self.ids.insert(id, key);
        Ok(Some(Event::Request {
            key,
            head,
            end_stream,
        }))
    }

    /// A second header block on an open stream: trailers.
    fn on_trailers(
        &mut self,
        key: usize,
        end_stream: bool,
        block: &[u8],
    ) -> Result<Option<Event<T>>, ConnError> {
        let mut trailers = HeaderMap::new();
        let mut bytes = 0;
        let (max_bytes, max_count) = (self.cfg.max_header_bytes, self.cfg.max_headers_count);
        // Decoded whatever comes next: HPACK's state depends on it.
        self.decoder
            .decode(block, |f| match f {
                Field::Pseudo(..) => Err(DecodeError::Malformed("pseudo-header field in trailers")),
                Field::Header(n, v) => {
                    if connection_specific(&n) {
                        return Err(DecodeError::Malformed("connection-specific field"));
                    }
                    bytes += n.as_str().len() + v.len();
                    if bytes <= max_bytes && trailers.len() < max_count {
                        // Past HeaderMap's own limit: dropped like the rest.
                        let _ = trailers.try_append(n, v);
                    }
                    Ok(())
                }
            })
            .map_err(decode_error)?;
        let s = &mut self.streams[key];
        if s.remote_closed {
            return Ok(self.stream_error(key, Reason::STREAM_CLOSED, 0));
        }
        if !end_stream {
            return fail(Reason::PROTOCOL_ERROR, "trailers without END_STREAM");
        }
        if s.content_length.is_some_and(|cl| cl != s.received) {
            return fail(
                Reason::PROTOCOL_ERROR,
                "request body length differs from content-length",
            );
        }
        s.remote_closed = true;
        Ok(Some(Event::Trailers { key, trailers }))
    }

    fn on_priority(&mut self, head: Head, payload: &[u8]) -> Result<Option<Event<T>>, ConnError> {
        if head.stream == 0 {
            return fail(Reason::PROTOCOL_ERROR, "PRIORITY on stream 0");
        }
        let error = if payload.len() != 5 {
            Reason::FRAME_SIZE_ERROR
        } else if u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & frame::MAX_WINDOW
            == head.stream
        {
            Reason::PROTOCOL_ERROR
        } else {
            // Priorities are advice legate does not follow (RFC 9113 §5.3).
            return Ok(None);
        };
        match self.ids.get(&head.stream) {
            Some(&key) => Ok(self.stream_error(key, error, 0)),
            None if self.idle(head.stream) => fail(error, "a bad PRIORITY frame on an idle stream"),
            None => {
                self.reset_unknown(head.stream, error);
                Ok(None)
            }
        }
    }

    fn on_rst_stream(&mut self, head: Head, payload: &[u8]) -> Result<Option<Event<T>>, ConnError> {
        if head.stream == 0 {
            return fail(Reason::PROTOCOL_ERROR, "RST_STREAM on stream 0");
        }
        let Ok(code) = <[u8; 4]>::try_from(payload) else {
            return fail(Reason::FRAME_SIZE_ERROR, "RST_STREAM of a length other than 4");
        };
        if self.idle(head.stream) {
            return fail(Reason::PROTOCOL_ERROR, "RST_STREAM on an idle stream");
        }
        let Some(&key) = self.ids.get(&head.stream) else {
            return Ok(None);
        };
        let user = self.remove(key);
        Ok(Some(Event::Reset {
            user,
            reason: Reason(u32::from_be_bytes(code)),
            by_peer: true,
        }))
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return fail(Reason::PROTOCOL_ERROR, "SETTINGS on a stream");
        }
        if head.has(flag::ACK) {
            if !payload.is_empty() {
                return fail(
                    Reason::FRAME_SIZE_ERROR,
                    "SETTINGS acknowledgement with a payload",
                );
            }
            return Ok(());
        }
        if !payload.len().is_multiple_of(6) {
            return fail(Reason::FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6");
        }
        for entry in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([entry[0], entry[1]]);
            let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
            match id {
                setting::ENABLE_PUSH if value > 1 => {
                    return fail(Reason::PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH other than 0 or 1")
                }
                setting::INITIAL_WINDOW_SIZE => {
                    if value > frame::MAX_WINDOW {
                        return fail(
                            Reason::FLOW_CONTROL_ERROR,
                            "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1",
                        );
                    }
                    self.set_peer_initial_window(i64::from(value))?;
                }
                setting::MAX_FRAME_SIZE => {
                    if !(frame::DEFAULT_MAX_FRAME_SIZE..=frame::MAX_MAX_FRAME_SIZE).contains(&value) {
                        return fail(Reason::PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range");
                    }
                    self.peer_max_frame = value as usize;
                }
                // HEADER_TABLE_SIZE: legate's encoder uses no table (it
                // said so in its first block). ENABLE_PUSH: legate never
                // pushes. MAX_CONCURRENT_STREAMS: legate opens none.
                // MAX_HEADER_LIST_SIZE: advice. Unknown ones are ignored.
                _ => {}
            }
        }
        frame::put_settings_ack(&mut self.out.tail);
        self.phase = Phase::Open;
        Ok(())
    }

    /// A new SETTINGS_INITIAL_WINDOW_SIZE changes every stream's send
    /// window by the difference (RFC 9113 §6.9.2).
    fn set_peer_initial_window(&mut self, value: i64) -> Result<(), ConnError> {
        let delta = value - self.peer_initial_window;
        self.peer_initial_window = value;
        for (key, s) in self.streams.iter_mut() {
            s.send_window += delta;
            if s.send_window > i64::from(frame::MAX_WINDOW) {
                return fail(Reason::FLOW_CONTROL_ERROR, "a stream window above 2^31-1");
            }
            if s.blocked && s.send_window > 0 {
                s.blocked = false;
                self.writable.push(key);
            }
        }
        Ok(())
    }

    fn on_ping(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return fail(Reason::PROTOCOL_ERROR, "PING on a stream");
        }
        let Ok(data) = <&[u8; 8]>::try_from(payload) else {
            return fail(Reason::FRAME_SIZE_ERROR, "PING of a length other than 8");
        };
        if !head.has(flag::ACK) {
            frame::put_ping_ack(&mut self.out.tail, data);
        } else if self.notice_sent && *data == SHUTDOWN_PING {
            self.notice_acked = true;
        }
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<Option<Event<T>>, ConnError> {
        let Ok(b) = <[u8; 4]>::try_from(payload) else {
            return fail(Reason::FRAME_SIZE_ERROR, "WINDOW_UPDATE of a length other than 4");
        };
        let increment = i64::from(u32::from_be_bytes(b) & frame::MAX_WINDOW);
        if head.stream == 0 {
            if increment == 0 {
                return fail(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection");
            }
            self.send_window += increment;
            if self.send_window > i64::from(frame::MAX_WINDOW) {
                return fail(Reason::FLOW_CONTROL_ERROR, "the connection window above 2^31-1");
            }
            if self.conn_blocked && self.send_window > 0 {
                self.conn_blocked = false;
                for (key, s) in self.streams.iter_mut() {
                    if s.blocked && s.send_window > 0 {
                        s.blocked = false;
                        self.writable.push(key);
                    }
                }
            }
            return Ok(None);
        }
        if self.idle(head.stream) {
            return fail(Reason::PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream");
        }
        let Some(&key) = self.ids.get(&head.stream) else {
            return Ok(None);
        };
        if increment == 0 {
            return Ok(self.stream_error(key, Reason::PROTOCOL_ERROR, 0));
        }
        let s = &mut self.streams[key];
        s.send_window += increment;
        if s.send_window > i64::from(frame::MAX_WINDOW) {
            return Ok(self.stream_error(key, Reason::FLOW_CONTROL_ERROR, 0));
        }
        // Listed even while the connection has no window: `send_data`
        // then blocks it on the connection, whose update lists it again.
        if s.blocked && s.send_window > 0 {
            s.blocked = false;
            self.writable.push(key);
        }
        Ok(None)
    }

    /// Resets a stream for breaking a rule of its own; `dropped`: bytes of
    /// the frame that broke it, given back to the connection's window.
    fn stream_error(&mut self, key: usize, reason: Reason, dropped: u32) -> Option<Event<T>> {
        let id = self.streams[key].id;
        self.reset_unknown(id, reason);
        self.release_connection(dropped);
        let user = self.remove(key);
        Some(Event::Reset {
            user,
            reason,
            by_peer: false,
        })
    }

    /// RST_STREAM for a stream that is not (or no longer) in the table.
    fn reset_unknown(&mut self, id: u32, reason: Reason) {
        frame::put_rst_stream(&mut self.out.tail, id, reason);
        self.recent_resets[self.recent_next] = id;
        self.recent_next = (self.recent_next + 1) % RECENT_RESETS;
    }

    fn remove(&mut self, key: usize) -> T {
        let s = self.streams.remove(key);
        self.ids.remove(&s.id);
        self.release_connection(u32::try_from(s.held).unwrap_or(u32::MAX));
        s.user
    }

    /// The driver passed on (or dropped) `n` bytes of a stream's body: the
    /// client may send as much again, announced in batches of half a window.
    pub fn release(&mut self, key: usize, n: u32) {
        if let Some(s) = self.streams.get_mut(key) {
            s.held = s.held.saturating_sub(u64::from(n));
        }
        self.give_back(key, n);
    }

    /// Window the client may use again: announced in batches of half a
    /// window.
    fn give_back(&mut self, key: usize, n: u32) {
        let half = self.cfg.initial_stream_window / 2;
        if let Some(s) = self.streams.get_mut(key) {
            s.recv_unreleased += n;
            if s.recv_unreleased >= half && !s.remote_closed {
                frame::put_window_update(&mut self.out.tail, s.id, s.recv_unreleased);
                s.recv_window += i64::from(s.recv_unreleased);
                s.recv_unreleased = 0;
            }
        }
        self.release_connection(n);
    }

    fn release_connection(&mut self, n: u32) {
        self.recv_unreleased = self.recv_unreleased.saturating_add(n);
        if self.recv_unreleased >= self.cfg.initial_connection_window / 2 {
            frame::put_window_update(&mut self.out.tail, 0, self.recv_unreleased);
            self.recv_window += i64::from(self.recv_unreleased);
            self.recv_unreleased = 0;
        }
    }

    /// Writes a header block (HEADERS, then CONTINUATION frames if the
    /// block is larger than the client's SETTINGS_MAX_FRAME_SIZE). `write`
    /// encodes the fields.
    pub fn send_headers(
        &mut self,
        key: usize,
        end_stream: bool,
        write: impl FnOnce(&mut hpack::Encoder, &mut Vec<u8>),
    ) {
        let Some(id) = self.stream_id(key) else {
            return;
        };
        let tail = &mut self.out.tail;
        let start = tail.len();
        tail.extend_from_slice(&[0; frame::HEADER_LEN]);
        self.encoder.start_block(tail);
        write(&mut self.encoder, tail);
        let end = if end_stream { flag::END_STREAM } else { 0 };
        let block_len = tail.len() - start - frame::HEADER_LEN;
        if block_len <= self.peer_max_frame {
            let mut head = Vec::with_capacity(frame::HEADER_LEN);
            frame::put_head(&mut head, block_len, kind::HEADERS, flag::END_HEADERS | end, id);
            tail[start..start + frame::HEADER_LEN].copy_from_slice(&head);
            return;
        }
        let block = tail.split_off(start + frame::HEADER_LEN);
        tail.truncate(start);
        let mut pieces = block.chunks(self.peer_max_frame).peekable();
        let mut first = true;
        while let Some(piece) = pieces.next() {
            let last = pieces.peek().is_none();
            let (k, mut flags) = if first {
                (kind::HEADERS, end)
            } else {
                (kind::CONTINUATION, 0)
            };
            if last {
                flags |= flag::END_HEADERS;
            }
            frame::put_head(tail, piece.len(), k, flags, id);
            tail.extend_from_slice(piece);
            first = false;
        }
    }

    /// Sends as much of `data` as the windows allow, in frames of at most
    /// the client's frame size; `end_stream` goes on the frame that ends
    /// it. True when all of it went (else the rest is left in `data`, and
    /// the stream is listed writable when window comes).
    pub fn send_data(&mut self, key: usize, data: &mut Bytes, end_stream: bool) -> bool {
        loop {
            let Some(s) = self.streams.get_mut(key) else {
                return true;
            };
            if data.is_empty() {
                if end_stream {
                    frame::put_head(&mut self.out.tail, 0, kind::DATA, flag::END_STREAM, s.id);
                }
                return true;
            }
            let room = s
                .send_window
                .min(self.send_window)
                .min(self.peer_max_frame as i64);
            if room <= 0 {
                s.blocked = true;
                if self.send_window <= 0 {
                    self.conn_blocked = true;
                }
                return false;
            }
            let n = (room as usize).min(data.len());
            let chunk = data.split_to(n);
            let flags = if data.is_empty() && end_stream {
                flag::END_STREAM
            } else {
                0
            };
            frame::put_head(&mut self.out.tail, n, kind::DATA, flags, s.id);
            s.send_window -= n as i64;
            self.send_window -= n as i64;
            self.out.push_bytes(chunk);
            if data.is_empty() {
                return true;
            }
        }
    }

    /// The response has been sent whole (END_STREAM): the stream ends. A
    /// request still arriving is cut short without error (RST_STREAM
    /// NO_ERROR, RFC 9113 §8.1): nothing needs it any more.
    pub fn finish(&mut self, key: usize) -> Option<T> {
        let s = self.streams.get(key)?;
        if !s.remote_closed {
            let id = s.id;
            self.reset_unknown(id, Reason::NO_ERROR);
        }
        Some(self.remove(key))
    }

    /// Ends a stream with RST_STREAM (the response failed midway).
    pub fn reset(&mut self, key: usize, reason: Reason) -> Option<T> {
        let id = self.streams.get(key)?.id;
        self.reset_unknown(id, reason);
        Some(self.remove(key))
    }

    /// Every stream's value (the connection is going away).
    pub fn drain_streams(&mut self) -> Vec<T> {
        self.ids.clear();
        self.streams.drain().map(|s| s.user).collect()
    }
}

fn decode_error(e: DecodeError) -> ConnError {
    match e {
        DecodeError::Compression(detail) => ConnError {
            reason: Reason::COMPRESSION_ERROR,
            detail,
        },
        DecodeError::Malformed(detail) => ConnError {
            reason: Reason::PROTOCOL_ERROR,
            detail,
        },
    }
}

/// Fields HTTP/2 forbids (RFC 9113 §8.2.2).
pub fn connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// Builds a request head from its decoded fields, checking what RFC 9113
/// §8.3 asks of requests.
struct HeadBuilder {
    method: Option<Bytes>,
    scheme: Option<Bytes>,
    authority: Option<Bytes>,
    path: Option<Bytes>,
    protocol: Option<Bytes>,
    headers: HeaderMap,
    regular: bool,
    host_set: bool,
    content_length: Option<u64>,
    /// Every field so far (pseudo-headers too), as Envoy's limits count.
    bytes: usize,
    fields: usize,
    max_bytes: usize,
    max_count: usize,
    /// Over a limit: later fields are decoded but not kept.
    over: bool,
    cookies: usize,
}

impl HeadBuilder {
    fn new(cfg: &Config) -> HeadBuilder {
        HeadBuilder {
            method: None,
            scheme: None,
            authority: None,
            path: None,
            protocol: None,
            headers: HeaderMap::with_capacity(16),
            regular: false,
            host_set: false,
            content_length: None,
            bytes: 0,
            fields: 0,
            max_bytes: cfg.max_header_bytes,
            max_count: cfg.max_headers_count,
            over: false,
            cookies: 0,
        }
    }

    fn add(&mut self, field: Field) -> Result<(), DecodeError> {
        match field {
            Field::Pseudo(p, value) => {
                if self.regular {
                    return Err(DecodeError::Malformed("pseudo-header field after a regular one"));
                }
                self.count(p.name().len() + value.len());
                let slot = match p {
                    Pseudo::Method => &mut self.method,
                    Pseudo::Scheme => &mut self.scheme,
                    Pseudo::Authority => &mut self.authority,
                    Pseudo::Path => &mut self.path,
                    Pseudo::Protocol => &mut self.protocol,
                    Pseudo::Status => return Err(DecodeError::Malformed(":status in a request")),
                };
                if slot.is_some() {
                    return Err(DecodeError::Malformed("repeated pseudo-header field"));
                }
                *slot = Some(value);
                Ok(())
            }
            Field::Header(name, value) => {
                if !self.regular {
                    self.regular = true;
                    self.set_host()?;
                }
                if connection_specific(&name) {
                    return Err(DecodeError::Malformed("connection-specific field"));
                }
                if name == header::TE && !value.as_bytes().eq_ignore_ascii_case(b"trailers") {
                    return Err(DecodeError::Malformed("te other than trailers"));
                }
                if name == header::CONTENT_LENGTH {
                    let n = super::h1_wire::parse_decimal(value.as_bytes())
                        .ok_or(DecodeError::Malformed("invalid content-length"))?;
                    if self.content_length.is_some_and(|c| c != n) {
                        return Err(DecodeError::Malformed("conflicting content-length values"));
                    }
                    self.content_length = Some(n);
                }
                // `:authority` is the request's host when both came.
                if name == header::HOST && self.host_set {
                    return Ok(());
                }
                if name == header::COOKIE {
                    self.cookies += 1;
                }
                self.count(name.as_str().len() + value.len());
                // Past a limit nothing more is kept (the request gets 431).
                if !self.over && self.headers.try_append(name, value).is_err() {
                    self.over = true;
                }
                Ok(())
            }
        }
    }

    /// Counts a field against the limits.
    fn count(&mut self, bytes: usize) {
        self.bytes += bytes;
        self.fields += 1;
        self.over |= self.bytes > self.max_bytes || self.fields > self.max_count;
    }

    fn set_host(&mut self) -> Result<(), DecodeError> {
        if let Some(a) = &self.authority {
            // Checked as an authority (host and port), as h2 and nghttp2 do.
            http::uri::Authority::from_maybe_shared(a.clone())
                .map_err(|_| DecodeError::Malformed("invalid :authority"))?;
            let v = HeaderValue::from_maybe_shared(a.clone())
                .map_err(|_| DecodeError::Malformed("invalid :authority"))?;
            if self.headers.try_insert(header::HOST, v).is_err() {
                self.over = true;
            }
            self.host_set = true;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<RequestHead, DecodeError> {
        if !self.regular {
            self.set_host()?;
        }
        let method = self.method.ok_or(DecodeError::Malformed("no :method"))?;
        let method = Method::from_bytes(&method).map_err(|_| DecodeError::Malformed("invalid :method"))?;
        if self.protocol.is_some() {
            // Extended CONNECT (RFC 8441) is not offered.
            return Err(DecodeError::Malformed(
                ":protocol without SETTINGS_ENABLE_CONNECT_PROTOCOL",
            ));
        }
        let uri = if method == Method::CONNECT {
            if self.scheme.is_some() || self.path.is_some() {
                return Err(DecodeError::Malformed("CONNECT with :scheme or :path"));
            }
            let authority = self
                .authority
                .ok_or(DecodeError::Malformed("CONNECT without :authority"))?;
            Uri::from_maybe_shared(authority).map_err(|_| DecodeError::Malformed("invalid :authority"))?
        } else {
            if self.scheme.as_ref().is_none_or(Bytes::is_empty) {
                return Err(DecodeError::Malformed("no :scheme"));
            }
            let path = self.path.ok_or(DecodeError::Malformed("no :path"))?;
            let asterisk = &path[..] == b"*";
            if !(path.starts_with(b"/") || (asterisk && method == Method::OPTIONS)) {
                return Err(DecodeError::Malformed("invalid :path"));
            }
            match Uri::from_maybe_shared(path) {
                Ok(uri) => uri,
                // A path too long for a URI in a request over the limits
                // is answered 431 like the rest of them.
                Err(_) if self.over => Uri::from_static("/"),
                Err(_) => return Err(DecodeError::Malformed("invalid :path")),
            }
        };
        if self.cookies > 1 {
            // Cookie crumbs are joined for HTTP/1.1 (RFC 9113 §8.2.3).
            let joined: Vec<u8> = self
                .headers
                .get_all(header::COOKIE)
                .iter()
                .map(HeaderValue::as_bytes)
                .collect::<Vec<_>>()
                .join(&b"; "[..]);
            let v = HeaderValue::from_bytes(&joined).map_err(|_| DecodeError::Malformed("invalid cookie"))?;
            self.headers.insert(header::COOKIE, v);
        }
        Ok(RequestHead {
            method,
            uri,
            headers: self.headers,
            content_length: self.content_length,
            too_large: self.over,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        Config {
            max_concurrent_streams: 2,
            initial_stream_window: 65_535,
            initial_connection_window: 65_535,
            max_header_bytes: 60 * 1024,
            max_headers_count: 100,
        }
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::put_head(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out
    }

    /// A literal field without indexing, new name (RFC 7541 §6.2.2).
    fn lit(name: &str, value: &str) -> Vec<u8> {
        let mut b = vec![0u8, name.len() as u8];
        b.extend_from_slice(name.as_bytes());
        b.push(value.len() as u8);
        b.extend_from_slice(value.as_bytes());
        b
    }

    /// `GET /` for `example.com` (static indexes: :method GET, :scheme
    /// http, :path /; :authority by name index).
    fn get_block() -> Vec<u8> {
        let mut b = vec![0x82, 0x86, 0x84, 0x01, 11];
        b.extend_from_slice(b"example.com");
        b
    }

    fn headers(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
        frame(kind::HEADERS, flags | flag::END_HEADERS, stream, block)
    }

    fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        frame::put_settings(&mut out, entries);
        out
    }

    fn window_update(stream: u32, inc: u32) -> Vec<u8> {
        frame(kind::WINDOW_UPDATE, 0, stream, &inc.to_be_bytes())
    }

    /// What the connection queued to send, as frames.
    fn sent(conn: &mut Conn<u32>) -> Vec<(Head, Vec<u8>)> {
        let mut bytes = Vec::new();
        for c in &conn.out.chunks {
            bytes.extend_from_slice(c);
        }
        bytes.extend_from_slice(&conn.out.tail[conn.out.tail_written..]);
        conn.out = Outbox::default();
        let mut frames = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let head = Head::parse(&bytes[at..]).unwrap();
            frames.push((head, bytes[at + 9..at + 9 + head.len].to_vec()));
            at += 9 + head.len;
        }
        frames
    }

    /// A connection past the preface and the client's SETTINGS, with
    /// what it sent so far discarded.
    fn open(cfg: Config) -> Conn<u32> {
        let mut conn = Conn::new(cfg);
        let mut buf = BytesMut::from(frame::PREFACE);
        buf.extend_from_slice(&settings(&[]));
        assert!(conn.read(&mut buf).unwrap().is_none());
        sent(&mut conn);
        conn
    }

    /// Feeds `bytes`, collecting events until more input is needed.
    fn feed(conn: &mut Conn<u32>, bytes: &[u8]) -> Result<Vec<Event<u32>>, ConnError> {
        let mut buf = BytesMut::from(bytes);
        let mut events = Vec::new();
        while let Some(e) = conn.read(&mut buf)? {
            events.push(e);
        }
        Ok(events)
    }

    fn request(events: &[Event<u32>]) -> (&RequestHead, bool) {
        match events {
            [Event::Request { head, end_stream, .. }] => (head, *end_stream),
            _ => panic!("one request expected, got {} events", events.len()),
        }
    }

    #[test]
    fn a_request_after_the_preface_and_settings() {
        let mut conn: Conn<u32> = Conn::new(Config {
            initial_stream_window: 1 << 20,
            initial_connection_window: 16 << 20,
            ..cfg()
        });
        let ours = sent(&mut conn);
        assert_eq!(ours[0].0.kind, kind::SETTINGS);
        assert_eq!(
            ours[0].1,
            [0, 3, 0, 0, 0, 2, 0, 4, 0, 0x10, 0, 0, 0, 6, 0, 0, 0xf0, 0],
            "max streams 2, initial window 1 MiB, max header list 60 KiB"
        );
        assert_eq!(ours[1].0.kind, kind::WINDOW_UPDATE);
        assert_eq!(ours[1].1, ((16u32 << 20) - 65_535).to_be_bytes());

        let mut input = frame::PREFACE.to_vec();
        input.extend(settings(&[(setting::INITIAL_WINDOW_SIZE, 1000)]));
        let mut block = get_block();
        block.extend(lit("user-agent", "t"));
        input.extend(headers(1, flag::END_STREAM, &block));
        let events = feed(&mut conn, &input).unwrap();
        let (head, end) = request(&events);
        assert!(end);
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri, "/");
        assert_eq!(head.headers["host"], "example.com");
        assert_eq!(head.headers["user-agent"], "t");
        let names: Vec<_> = head.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["host", "user-agent"], "host (from :authority) first");
        let acks = sent(&mut conn);
        assert_eq!(acks.len(), 1);
        assert_eq!((acks[0].0.kind, acks[0].0.flags), (kind::SETTINGS, flag::ACK));
    }

    /// Connection errors: each input ends the connection with GOAWAY and
    /// this reason.
    #[test]
    fn connection_errors() {
        let big_frame = {
            let mut f = frame(kind::DATA, 0, 1, &[]);
            f[..3].copy_from_slice(&[0, 0x40, 1]);
            f.extend(vec![0; 16_385]);
            f
        };
        let mut cases: Vec<(&str, Vec<u8>, Reason)> = vec![
            (
                "WINDOW_UPDATE on an even stream",
                [headers(3, flag::END_STREAM, &get_block()), window_update(2, 1)].concat(),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "DATA on an even stream",
                [
                    headers(3, flag::END_STREAM, &get_block()),
                    frame(kind::DATA, 0, 2, b"x"),
                ]
                .concat(),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "two empty DATA frames in a row",
                [
                    headers(1, 0, &get_block()),
                    frame(kind::DATA, 0, 1, b""),
                    frame(kind::DATA, 0, 1, b""),
                ]
                .concat(),
                Reason::ENHANCE_YOUR_CALM,
            ),
            (
                "two DATA frames of padding alone in a row",
                [
                    headers(1, 0, &get_block()),
                    frame(kind::DATA, flag::PADDED, 1, &[3, 0, 0, 0]),
                    frame(kind::DATA, flag::PADDED, 1, &[0]),
                ]
                .concat(),
                Reason::ENHANCE_YOUR_CALM,
            ),
            (
                "DATA on an idle stream",
                frame(kind::DATA, 0, 1, b"x"),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "DATA on stream 0",
                frame(kind::DATA, 0, 0, b"x"),
                Reason::PROTOCOL_ERROR,
            ),
            ("a frame over 16 KiB", big_frame, Reason::FRAME_SIZE_ERROR),
            (
                "HEADERS on stream 0",
                headers(0, 0, &get_block()),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "an even stream id",
                headers(2, 0, &get_block()),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "PUSH_PROMISE",
                frame(kind::PUSH_PROMISE, flag::END_HEADERS, 1, &[0, 0, 0, 2]),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "PING of 7 octets",
                frame(kind::PING, 0, 0, &[0; 7]),
                Reason::FRAME_SIZE_ERROR,
            ),
            (
                "PING on a stream",
                frame(kind::PING, 0, 1, &[0; 8]),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "SETTINGS of 5 octets",
                frame(kind::SETTINGS, 0, 0, &[0; 5]),
                Reason::FRAME_SIZE_ERROR,
            ),
            (
                "SETTINGS ACK with a payload",
                frame(kind::SETTINGS, flag::ACK, 0, &[0; 6]),
                Reason::FRAME_SIZE_ERROR,
            ),
            (
                "SETTINGS on a stream",
                frame(kind::SETTINGS, 0, 1, &[]),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "ENABLE_PUSH 2",
                settings(&[(setting::ENABLE_PUSH, 2)]),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "INITIAL_WINDOW_SIZE 2^31",
                settings(&[(setting::INITIAL_WINDOW_SIZE, 1 << 31)]),
                Reason::FLOW_CONTROL_ERROR,
            ),
            (
                "MAX_FRAME_SIZE 16383",
                settings(&[(setting::MAX_FRAME_SIZE, 16_383)]),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "MAX_FRAME_SIZE 2^24",
                settings(&[(setting::MAX_FRAME_SIZE, 1 << 24)]),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "WINDOW_UPDATE 0 on the connection",
                window_update(0, 0),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "the connection window past 2^31-1",
                window_update(0, frame::MAX_WINDOW),
                Reason::FLOW_CONTROL_ERROR,
            ),
            (
                "WINDOW_UPDATE of 3 octets",
                frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 1]),
                Reason::FRAME_SIZE_ERROR,
            ),
            (
                "WINDOW_UPDATE on an idle stream",
                window_update(7, 1),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "RST_STREAM on an idle stream",
                frame(kind::RST_STREAM, 0, 9, &[0, 0, 0, 8]),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "RST_STREAM on stream 0",
                frame(kind::RST_STREAM, 0, 0, &[0, 0, 0, 8]),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "CONTINUATION without HEADERS",
                frame(kind::CONTINUATION, flag::END_HEADERS, 1, &get_block()),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "GOAWAY on a stream",
                frame(kind::GOAWAY, 0, 1, &[0; 8]),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "PRIORITY on stream 0",
                frame(kind::PRIORITY, 0, 0, &[0; 5]),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "HEADERS padding too long",
                frame(kind::HEADERS, flag::END_HEADERS | flag::PADDED, 1, &[9, 0x82]),
                Reason::PROTOCOL_ERROR,
            ),
            (
                "a bad HPACK index",
                headers(1, 0, &[0xff, 0x00]),
                Reason::COMPRESSION_ERROR,
            ),
        ];
        // Header block rules: a HEADERS frame whose block is this.
        let malformed: Vec<(&str, Vec<u8>)> = vec![
            ("no :path", vec![0x82, 0x86]),
            ("no :scheme", vec![0x82, 0x84]),
            ("no :method", vec![0x86, 0x84]),
            ("a repeated :method", vec![0x82, 0x82, 0x86, 0x84]),
            (
                "a pseudo-header after a regular field",
                [vec![0x82, 0x86], lit("a", "b"), vec![0x84]].concat(),
            ),
            (":status in a request", [get_block(), vec![0x88]].concat()),
            (
                "an uppercase name",
                [get_block(), lit("User-Agent", "x")].concat(),
            ),
            ("connection", [get_block(), lit("connection", "close")].concat()),
            ("keep-alive", [get_block(), lit("keep-alive", "1")].concat()),
            (
                "transfer-encoding",
                [get_block(), lit("transfer-encoding", "chunked")].concat(),
            ),
            ("te: gzip", [get_block(), lit("te", "gzip")].concat()),
            ("a relative :path", [vec![0x82, 0x86], lit(":path", "x")].concat()),
            (
                "an :authority with a space",
                [vec![0x82, 0x86, 0x84], lit(":authority", "a b")].concat(),
            ),
            (":protocol", [get_block(), lit(":protocol", "websocket")].concat()),
            (
                "CONNECT with :path",
                [lit(":method", "CONNECT"), vec![0x84], lit(":authority", "a:1")].concat(),
            ),
            (
                "an invalid content-length",
                [get_block(), lit("content-length", "x")].concat(),
            ),
            (
                "content-length with END_STREAM",
                [get_block(), lit("content-length", "3")].concat(),
            ),
        ];
        for (what, block) in &malformed {
            cases.push((what, headers(1, flag::END_STREAM, block), Reason::PROTOCOL_ERROR));
        }
        // Stream rules that need a stream first.
        let open1 = headers(1, 0, &[get_block(), lit("content-length", "2")].concat());
        cases.push((
            "a header block interrupted",
            [
                frame(kind::HEADERS, 0, 1, &get_block()),
                frame(kind::PING, 0, 0, &[0; 8]),
            ]
            .concat(),
            Reason::PROTOCOL_ERROR,
        ));
        cases.push((
            "a body longer than its content-length",
            [open1.clone(), frame(kind::DATA, 0, 1, b"abc")].concat(),
            Reason::PROTOCOL_ERROR,
        ));
        cases.push((
            "a body shorter than its content-length",
            [open1.clone(), frame(kind::DATA, flag::END_STREAM, 1, b"a")].concat(),
            Reason::PROTOCOL_ERROR,
        ));
        cases.push((
            "trailers without END_STREAM",
            [headers(1, 0, &get_block()), headers(1, 0, &lit("a", "b"))].concat(),
            Reason::PROTOCOL_ERROR,
        ));
        cases.push((
            "trailers with a pseudo-header",
            [headers(1, 0, &get_block()), headers(1, flag::END_STREAM, &[0x84])].concat(),
            Reason::PROTOCOL_ERROR,
        ));
        for (what, input, reason) in cases {
            let mut conn = open(cfg());
            let got = feed(&mut conn, &input).map(|e| e.len());
            assert_eq!(got.map_err(|e| e.reason), Err(reason), "{what}");
            let frames = sent(&mut conn);
            let goaway = frames.last().unwrap_or_else(|| panic!("{what}: GOAWAY expected"));
            assert_eq!(goaway.0.kind, kind::GOAWAY, "{what}");
            assert_eq!(goaway.1[4..8], reason.0.to_be_bytes(), "{what}");
        }
    }

    #[test]
    fn the_preface_and_first_settings_are_required() {
        let mut conn: Conn<u32> = Conn::new(cfg());
        let err = feed(&mut conn, b"GET / HTTP/1.1\r\n").map(|_| ()).unwrap_err();
        assert_eq!(err.reason, Reason::PROTOCOL_ERROR);
        let mut conn: Conn<u32> = Conn::new(cfg());
        // A partial preface waits for more.
        assert!(feed(&mut conn, &frame::PREFACE[..10]).unwrap().is_empty());
        let mut conn: Conn<u32> = Conn::new(cfg());
        let input = [frame::PREFACE, &frame(kind::PING, 0, 0, &[0; 8])].concat();
        let err = feed(&mut conn, &input).map(|_| ()).unwrap_err();
        assert_eq!(err.detail, "the first frame is not SETTINGS");
    }

    /// Stream errors: RST_STREAM with this reason, the connection goes on.
    #[test]
    fn stream_errors() {
        let body_open = headers(1, 0, &get_block());
        let cases: Vec<(&str, Vec<u8>, u32, Reason)> = vec![
            (
                "DATA beyond the stream window",
                [
                    settings(&[]),
                    body_open.clone(),
                    // 65,535 bytes are allowed; four 16 KiB frames are 65,536.
                    frame(kind::DATA, 0, 1, &[0; 16_384]),
                    frame(kind::DATA, 0, 1, &[0; 16_384]),
                    frame(kind::DATA, 0, 1, &[0; 16_384]),
                    frame(kind::DATA, 0, 1, &[0; 16_384]),
                ]
                .concat(),
                1,
                Reason::FLOW_CONTROL_ERROR,
            ),
            (
                "WINDOW_UPDATE 0 on a stream",
                [body_open.clone(), window_update(1, 0)].concat(),
                1,
                Reason::PROTOCOL_ERROR,
            ),
            (
                "DATA after END_STREAM",
                [
                    headers(1, flag::END_STREAM, &get_block()),
                    frame(kind::DATA, 0, 1, b"x"),
                ]
                .concat(),
                1,
                Reason::STREAM_CLOSED,
            ),
            (
                "a third stream over the limit of two",
                [
                    body_open.clone(),
                    headers(3, 0, &get_block()),
                    headers(5, 0, &get_block()),
                ]
                .concat(),
                5,
                Reason::REFUSED_STREAM,
            ),
            (
                "a stream depending on itself (PRIORITY)",
                [body_open.clone(), frame(kind::PRIORITY, 0, 1, &[0, 0, 0, 1, 16])].concat(),
                1,
                Reason::PROTOCOL_ERROR,
            ),
            (
                "PRIORITY of 4 octets",
                [body_open.clone(), frame(kind::PRIORITY, 0, 1, &[0; 4])].concat(),
                1,
                Reason::FRAME_SIZE_ERROR,
            ),
        ];
        for (what, input, stream, reason) in cases {
            // A connection window that does not run out first.
            let mut conn = open(Config {
                initial_connection_window: 1 << 20,
                ..cfg()
            });
            feed(&mut conn, &input).unwrap_or_else(|e| panic!("{what}: {e:?}"));
            let rst: Vec<_> = sent(&mut conn)
                .into_iter()
                .filter(|(h, _)| h.kind == kind::RST_STREAM)
                .collect();
            assert_eq!(rst.len(), 1, "{what}");
            assert_eq!(
                (rst[0].0.stream, &rst[0].1[..]),
                (stream, &reason.0.to_be_bytes()[..]),
                "{what}"
            );
        }
    }

    #[test]
    fn a_refused_or_reset_stream_hands_its_value_back() {
        let mut conn = open(cfg());
        let events = feed(&mut conn, &headers(1, 0, &get_block())).unwrap();
        let Event::Request { key, .. } = events[0] else {
            panic!()
        };
        *conn.user_mut(key).unwrap() = 7;
        let events = feed(&mut conn, &frame(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8])).unwrap();
        match &events[..] {
            [Event::Reset {
                user: 7,
                reason,
                by_peer: true,
            }] => assert_eq!(*reason, Reason::CANCEL),
            _ => panic!("a reset with the stream's value"),
        }
        assert_eq!(conn.active(), 0);
        // Frames on the reset stream are ignored now.
        assert!(feed(&mut conn, &window_update(1, 5)).unwrap().is_empty());
    }

    #[test]
    fn headers_continue_and_fields_are_joined() {
        let mut conn = open(cfg());
        let block = [
            get_block(),
            lit("cookie", "a=1"),
            lit("host", "other"),
            lit("cookie", "b=2"),
        ]
        .concat();
        let (first, rest) = block.split_at(5);
        let input = [
            frame(kind::HEADERS, flag::END_STREAM, 1, first),
            frame(kind::CONTINUATION, 0, 1, &rest[..3]),
            frame(kind::CONTINUATION, flag::END_HEADERS, 1, &rest[3..]),
        ]
        .concat();
        let events = feed(&mut conn, &input).unwrap();
        let (head, _) = request(&events);
        assert_eq!(head.headers["cookie"], "a=1; b=2");
        assert_eq!(head.headers.get_all("host").iter().count(), 1);
        assert_eq!(head.headers["host"], "example.com", ":authority wins over host");
    }

    #[test]
    fn a_request_without_authority_keeps_its_host_field() {
        let mut conn = open(cfg());
        let block = [vec![0x82, 0x86, 0x84], lit("host", "h.example")].concat();
        let events = feed(&mut conn, &headers(1, flag::END_STREAM, &block)).unwrap();
        assert_eq!(request(&events).0.headers["host"], "h.example");
    }

    #[test]
    fn te_trailers_is_accepted_in_any_case() {
        for value in ["trailers", "Trailers", "TRAILERS"] {
            let mut conn = open(cfg());
            let block = [get_block(), lit("te", value)].concat();
            let events = feed(&mut conn, &headers(1, flag::END_STREAM, &block))
                .unwrap_or_else(|e| panic!("te: {value}: {}", e.detail));
            assert_eq!(request(&events).0.headers["te"], value);
        }
    }

    #[test]
    fn header_lists_over_the_limits_are_marked_too_large() {
        let limits = Config {
            max_header_bytes: 100,
            max_headers_count: 6,
            ..cfg()
        };
        let fields = |n: usize| -> Vec<u8> {
            let mut block = get_block();
            for i in 0..n {
                block.extend(lit(&format!("x-{i}"), "0123456789"));
            }
            block
        };
        // :method 10, :scheme 11, :path 6, :authority 21 bytes, host
        // (from :authority) 15: 63, and 13 a field. Fields are counted
        // with the pseudo-headers, as Envoy counts them.
        let cases = [
            (0, false, 1),
            (2, false, 3),
            // Six fields: seven with the pseudo-headers is over the count.
            (3, true, 3),
            (10, true, 3),
        ];
        for (n, too_large, kept) in cases {
            let mut conn = open(limits.clone());
            let events = feed(&mut conn, &headers(1, flag::END_STREAM, &fields(n))).unwrap();
            let head = request(&events).0;
            assert_eq!(
                (head.too_large, head.headers.len()),
                (too_large, kept),
                "{n} fields"
            );
        }
        let mut conn = open(Config {
            max_header_bytes: 60,
            ..cfg()
        });
        let long_path = [vec![0x82, 0x86], lit(":path", &format!("/{}", "p".repeat(60)))].concat();
        let events = feed(&mut conn, &headers(1, flag::END_STREAM, &long_path)).unwrap();
        assert!(request(&events).0.too_large, "a long :path counts");
    }

    /// RFC 9113 §5.1: after legate resets or refuses a stream, what the
    /// client had already sent on it is dropped, trailers included (whose
    /// block still goes through HPACK).
    #[test]
    fn frames_on_a_refused_stream_are_dropped() {
        let mut conn = open(Config {
            max_concurrent_streams: 1,
            initial_connection_window: 1 << 20,
            ..cfg()
        });
        let input = [
            headers(1, 0, &get_block()),
            // Refused (one stream at a time), and adds to HPACK's table.
            headers(
                3,
                0,
                &[vec![0x82, 0x86, 0x84], vec![0x41, 3], b"a.b".to_vec()].concat(),
            ),
            frame(kind::DATA, 0, 3, b"body"),
            headers(3, flag::END_STREAM, &lit("x-trailer", "1")),
        ]
        .concat();
        let events = feed(&mut conn, &input).unwrap();
        assert_eq!(events.len(), 1, "stream 1 only");
        let rst: Vec<_> = sent(&mut conn)
            .into_iter()
            .filter(|(h, _)| h.kind == kind::RST_STREAM)
            .collect();
        assert_eq!(
            rst.len(),
            1,
            "one RST_STREAM (REFUSED_STREAM), nothing for what followed"
        );
        // HPACK's state held: the next block indexes the refused one's entry.
        let Event::Request { key, .. } = events[0] else {
            panic!()
        };
        conn.finish(key);
        let events = feed(
            &mut conn,
            &headers(5, flag::END_STREAM, &[0x82, 0x86, 0x84, 0xbe]),
        )
        .unwrap();
        assert_eq!(request(&events).0.headers["host"], "a.b");
        // A stream closed both ways, not reset: HEADERS on it is a stream
        // error.
        let Event::Request { key, .. } = events[0] else {
            panic!()
        };
        conn.finish(key);
        sent(&mut conn);
        feed(&mut conn, &headers(5, flag::END_STREAM, &get_block())).unwrap();
        let rst = sent(&mut conn);
        assert_eq!(rst.len(), 1);
        assert_eq!(
            (rst[0].0.kind, rst[0].0.stream, &rst[0].1[..]),
            (kind::RST_STREAM, 5, &Reason::STREAM_CLOSED.0.to_be_bytes()[..])
        );
    }

    /// A stream blocked on its own window while the connection still had
    /// some, whose update comes while the connection has none, is listed
    /// writable once the connection's update comes.
    #[test]
    fn a_stream_blocked_on_both_windows_resumes() {
        let mut conn = open(Config {
            max_concurrent_streams: 10,
            ..cfg()
        });
        feed(&mut conn, &settings(&[(setting::INITIAL_WINDOW_SIZE, 20_000)])).unwrap();
        let mut keys = Vec::new();
        for id in [1, 3, 5, 7] {
            let events = feed(&mut conn, &headers(id, flag::END_STREAM, &get_block())).unwrap();
            let Event::Request { key, .. } = events[0] else {
                panic!()
            };
            keys.push(key);
        }
        // Stream 1 sends 20,000 of 30,000 and blocks on its own window.
        let mut rest = Bytes::from(vec![0u8; 30_000]);
        assert!(!conn.send_data(keys[0], &mut rest, true));
        // The others take the connection window (45,535) to 0.
        for (key, n) in [(keys[1], 20_000), (keys[2], 20_000), (keys[3], 5_535)] {
            assert!(conn.send_data(key, &mut Bytes::from(vec![0u8; n]), true));
        }
        let mut writable = Vec::new();
        feed(&mut conn, &window_update(1, 10_000)).unwrap();
        conn.take_writable(&mut writable);
        assert_eq!(writable, [keys[0]]);
        assert!(
            !conn.send_data(keys[0], &mut rest, true),
            "no connection window yet"
        );
        writable.clear();
        feed(&mut conn, &window_update(0, 10_000)).unwrap();
        conn.take_writable(&mut writable);
        assert_eq!(writable, [keys[0]]);
        assert!(conn.send_data(keys[0], &mut rest, true));
    }

    #[test]
    fn a_graceful_shutdown_notices_first_and_never_raises_the_last_id() {
        let mut conn = open(cfg());
        feed(&mut conn, &headers(1, flag::END_STREAM, &get_block())).unwrap();
        conn.start_shutdown();
        let frames = sent(&mut conn);
        assert_eq!(frames[0].0.kind, kind::GOAWAY);
        assert_eq!(
            frames[0].1[..8],
            [0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0],
            "notice: 2^31-1, NO_ERROR"
        );
        assert_eq!(frames[1].0.kind, kind::PING);
        assert!(conn.shutting_down() && !conn.goaway_sent());
        // A stream sent before the client saw the notice is still served.
        let events = feed(&mut conn, &headers(3, flag::END_STREAM, &get_block())).unwrap();
        assert_eq!(events.len(), 1);
        assert!(!conn.notice_acknowledged());
        feed(&mut conn, &frame(kind::PING, flag::ACK, 0, &frames[1].1)).unwrap();
        assert!(conn.notice_acknowledged());
        conn.go_away(Reason::NO_ERROR, "");
        let frames = sent(&mut conn);
        assert_eq!(frames[0].1[..8], [0, 0, 0, 3, 0, 0, 0, 0], "final: last stream 3");
        // Later streams are ignored; an error's GOAWAY does not raise the id.
        assert!(feed(&mut conn, &headers(5, flag::END_STREAM, &get_block()))
            .unwrap()
            .is_empty());
        let err = feed(&mut conn, &frame(kind::PING, 0, 0, &[0; 7]))
            .map(|_| ())
            .unwrap_err();
        assert_eq!(err.reason, Reason::FRAME_SIZE_ERROR);
        let frames = sent(&mut conn);
        assert_eq!(frames[0].1[..8], [0, 0, 0, 3, 0, 0, 0, 6]);
    }

    #[test]
    fn data_flows_within_windows_and_window_updates_follow_releases() {
        let mut conn = open(cfg());
        let events = feed(&mut conn, &headers(1, 0, &get_block())).unwrap();
        let Event::Request {
            key,
            end_stream: false,
            ..
        } = events[0]
        else {
            panic!()
        };
        let padded = frame(kind::DATA, flag::PADDED, 1, &[3, b'h', b'i', 0, 0, 0]);
        let events = feed(&mut conn, &padded).unwrap();
        match &events[..] {
            [Event::Data {
                data,
                end_stream: false,
                ..
            }] => assert_eq!(&data[..], b"hi"),
            _ => panic!("DATA expected"),
        }
        let big = frame(kind::DATA, 0, 1, &[7; 16_384]);
        feed(&mut conn, &[big.clone(), big].concat()).unwrap();
        assert!(sent(&mut conn).is_empty(), "nothing released yet");
        // Released past half the window (32,767): both windows reopen.
        conn.release(key, 2);
        conn.release(key, 32_768);
        let updates: Vec<_> = sent(&mut conn)
            .into_iter()
            .map(|(h, p)| (h.kind, h.stream, u32::from_be_bytes(p[..4].try_into().unwrap())))
            .collect();
        // The padding (4 bytes) was given back when it arrived.
        assert_eq!(
            updates,
            [(kind::WINDOW_UPDATE, 1, 32_774), (kind::WINDOW_UPDATE, 0, 32_774)]
        );
        // A stream that ends gives its unreleased bytes back to the connection.
        let rest = conn.finish(key);
        assert_eq!(rest, Some(0));
        let frames = sent(&mut conn);
        assert_eq!(
            (frames[0].0.kind, &frames[0].1[..]),
            (kind::RST_STREAM, &[0u8, 0, 0, 0][..])
        );
        assert_eq!(frames.len(), 1, "nothing was held any more");
    }

    #[test]
    fn data_is_sent_within_the_clients_windows_and_frame_size() {
        let mut conn = open(cfg());
        // The client allows 20,000 bytes per stream.
        feed(&mut conn, &settings(&[(setting::INITIAL_WINDOW_SIZE, 20_000)])).unwrap();
        let events = feed(&mut conn, &headers(1, flag::END_STREAM, &get_block())).unwrap();
        let Event::Request { key, .. } = events[0] else {
            panic!()
        };
        sent(&mut conn);
        conn.send_headers(key, false, |enc, out| enc.status(out, 200));
        let mut body = Bytes::from(vec![1u8; 30_000]);
        assert!(
            !conn.send_data(key, &mut body, true),
            "the stream window runs out"
        );
        assert_eq!(body.len(), 10_000);
        let frames = sent(&mut conn);
        let kinds: Vec<_> = frames.iter().map(|(h, _)| (h.kind, h.len, h.flags)).collect();
        assert_eq!(
            kinds,
            [
                (kind::HEADERS, 2, flag::END_HEADERS),
                (kind::DATA, 16_384, 0),
                (kind::DATA, 3_616, 0)
            ],
            "the first block starts with a table size update"
        );
        let mut writable = Vec::new();
        conn.take_writable(&mut writable);
        assert!(writable.is_empty());
        feed(&mut conn, &window_update(1, 50_000)).unwrap();
        conn.take_writable(&mut writable);
        assert_eq!(writable, [key]);
        // Now the connection window (65,535 - 20,000) is what limits.
        assert!(conn.send_data(key, &mut body, true));
        let frames = sent(&mut conn);
        assert_eq!(frames.len(), 1);
        assert_eq!((frames[0].0.len, frames[0].0.flags), (10_000, flag::END_STREAM));
        assert_eq!(conn.finish(key), Some(0));
        assert!(sent(&mut conn).is_empty(), "no reset: the request had ended");
    }

    #[test]
    fn a_large_header_block_is_sent_with_continuations() {
        let mut conn = open(cfg());
        let events = feed(&mut conn, &headers(1, flag::END_STREAM, &get_block())).unwrap();
        let Event::Request { key, .. } = events[0] else {
            panic!()
        };
        sent(&mut conn);
        let long = HeaderValue::from_str(&"v".repeat(20_000)).unwrap();
        conn.send_headers(key, true, |enc, out| {
            enc.status(out, 200);
            enc.field(out, &HeaderName::from_static("x-long"), &long);
        });
        let frames = sent(&mut conn);
        let kinds: Vec<_> = frames.iter().map(|(h, _)| (h.kind, h.flags)).collect();
        assert_eq!(
            kinds,
            [
                (kind::HEADERS, flag::END_STREAM),
                (kind::CONTINUATION, flag::END_HEADERS)
            ]
        );
        let block: Vec<u8> = frames.into_iter().flat_map(|(_, p)| p).collect();
        let mut d = hpack::Decoder::new(4096);
        let mut fields = Vec::new();
        d.decode(&block, |f| {
            fields.push(f);
            Ok(())
        })
        .unwrap();
        assert_eq!(fields[1], Field::Header(HeaderName::from_static("x-long"), long));
    }

    #[test]
    fn ping_is_answered_and_goaway_is_reported() {
        let mut conn = open(cfg());
        feed(&mut conn, &frame(kind::PING, 0, 0, b"12345678")).unwrap();
        let frames = sent(&mut conn);
        assert_eq!((frames[0].0.kind, frames[0].0.flags), (kind::PING, flag::ACK));
        assert_eq!(frames[0].1, b"12345678");
        // An acknowledgement is not answered; unknown frame types are ignored.
        feed(&mut conn, &frame(kind::PING, flag::ACK, 0, b"12345678")).unwrap();
        feed(&mut conn, &frame(0x42, 0, 0, b"?")).unwrap();
        assert!(sent(&mut conn).is_empty());
        let events = feed(&mut conn, &frame(kind::GOAWAY, 0, 0, &[0; 8])).unwrap();
        assert!(matches!(events[..], [Event::GoAway]));
    }

    #[test]
    fn after_goaway_new_streams_are_ignored() {
        let mut conn = open(cfg());
        feed(&mut conn, &headers(1, flag::END_STREAM, &get_block())).unwrap();
        conn.go_away(Reason::NO_ERROR, "");
        let frames = sent(&mut conn);
        assert_eq!(
            frames[0].1[..8],
            [0, 0, 0, 1, 0, 0, 0, 0],
            "last stream 1, NO_ERROR"
        );
        let events = feed(&mut conn, &headers(3, flag::END_STREAM, &get_block())).unwrap();
        assert!(events.is_empty());
        assert_eq!(conn.active(), 1);
        // The ignored stream's body is ignored too, not reset.
        let input = [headers(5, 0, &get_block()), frame(kind::DATA, 0, 5, b"abc")].concat();
        assert!(feed(&mut conn, &input).unwrap().is_empty());
        assert!(sent(&mut conn).iter().all(|(h, _)| h.kind != kind::RST_STREAM));
    }
}

/// Random input, as a fuzzer would send it: frames of every kind with
/// random flags, streams and payloads (some of them valid HPACK), and the
/// driver's calls in between. Nothing may panic, and the windows stay
/// within the protocol's bounds.
#[cfg(test)]
mod random_input {
    use super::*;

    /// A frame a client could send (valid most of the time) for a
    /// conversation whose next new stream is `*next`; sometimes mutated.
    fn random_frame(rng: &mut fastrand::Rng, next: &mut u32) -> Vec<u8> {
        let open = if *next > 1 {
            2 * rng.u32(0..*next / 2) + 1
        } else {
            1
        };
        let (kind, flags, stream, payload): (u8, u8, u32, Vec<u8>) = match rng.u8(0..10) {
            0..=2 => {
                let id = *next;
                *next += 2;
                let mut block = vec![0x82, 0x86, 0x84, 0x41, 1, b'a'];
                if rng.bool() {
                    block.extend([0x40, 1, b'x', 1, b'0' + rng.u8(0..10)]);
                }
                if rng.u8(0..4) == 0 {
                    block.extend([0x0f, 0x0d, 2, b'1', b'0']); // content-length: 10
                }
                let end = if rng.bool() { flag::END_STREAM } else { 0 };
                if rng.u8(0..4) == 0 {
                    // Split with a CONTINUATION.
                    let cut = rng.usize(0..=block.len());
                    let mut out = Vec::new();
                    frame::put_head(&mut out, cut, kind::HEADERS, end, id);
                    out.extend_from_slice(&block[..cut]);
                    frame::put_head(
                        &mut out,
                        block.len() - cut,
                        kind::CONTINUATION,
                        flag::END_HEADERS,
                        id,
                    );
                    out.extend_from_slice(&block[cut..]);
                    return out;
                }
                (kind::HEADERS, end | flag::END_HEADERS, id, block)
            }
            3 | 4 => {
                let len = if rng.u8(0..10) == 0 {
                    rng.usize(0..16_385)
                } else {
                    rng.usize(0..30)
                };
                let flags = if rng.u8(0..3) == 0 { flag::END_STREAM } else { 0 };
                (kind::DATA, flags, open, vec![b'd'; len])
            }
            5 => (
                kind::WINDOW_UPDATE,
                0,
                if rng.bool() { 0 } else { open },
                rng.u32(1..70_000).to_be_bytes().to_vec(),
            ),
            6 => (kind::RST_STREAM, 0, open, Reason::CANCEL.0.to_be_bytes().to_vec()),
            7 => {
                let mut p = Vec::new();
                let id = [
                    setting::INITIAL_WINDOW_SIZE,
                    setting::MAX_FRAME_SIZE,
                    setting::HEADER_TABLE_SIZE,
                ][rng.usize(0..3)];
                p.extend_from_slice(&id.to_be_bytes());
                p.extend_from_slice(&rng.u32(16_384..200_000).to_be_bytes());
                (kind::SETTINGS, 0, 0, p)
            }
            8 => (kind::PING, 0, 0, vec![7; 8]),
            _ => (kind::PRIORITY, 0, open + 2, vec![0, 0, 0, 0, 16]),
        };
        let mut out = Vec::new();
        frame::put_head(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(&payload);
        // Now and then, a mutation: any byte, a length, or a cut.
        match rng.u8(0..12) {
            0 => {
                let at = rng.usize(0..out.len());
                out[at] = rng.u8(..);
            }
            1 => out[2] = rng.u8(..),
            2 => out.truncate(rng.usize(0..=out.len())),
            _ => {}
        }
        out
    }

    #[test]
    fn random_frames_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x1e9a7e);
        for _ in 0..3_000 {
            let mut conn: Conn<u32> = Conn::new(Config {
                max_concurrent_streams: rng.u32(1..4),
                initial_stream_window: rng.u32(65_535..200_000),
                initial_connection_window: rng.u32(65_535..200_000),
                max_header_bytes: rng.usize(10..2000),
                max_headers_count: rng.usize(1..20),
            });
            let mut input = frame::PREFACE.to_vec();
            if rng.bool() {
                frame::put_settings(&mut input, &[]);
            }
            let mut next = 1;
            for _ in 0..rng.usize(1..40) {
                input.extend(random_frame(&mut rng, &mut next));
            }
            let mut buf = BytesMut::new();
            let mut keys = Vec::new();
            // Fed in random pieces, with the driver acting in between.
            let mut at = 0;
            while at < input.len() {
                let n = rng.usize(1..=input.len() - at);
                buf.extend_from_slice(&input[at..at + n]);
                at += n;
                loop {
                    match conn.read(&mut buf) {
                        Ok(Some(Event::Request { key, .. })) => keys.push(key),
                        Ok(Some(Event::Data { key, data, .. })) => conn.release(key, data.len() as u32),
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(_) => {
                            at = input.len();
                            break;
                        }
                    }
                }
                if let Some(&key) = keys.get(rng.usize(0..keys.len().max(1))) {
                    match rng.u8(0..4) {
                        0 => conn.send_headers(key, rng.bool(), |enc, out| enc.status(out, 200)),
                        1 => {
                            let mut data = Bytes::from(vec![0; rng.usize(0..40_000)]);
                            conn.send_data(key, &mut data, rng.bool());
                        }
                        2 => {
                            conn.finish(key);
                        }
                        _ => {
                            conn.reset(key, Reason::CANCEL);
                        }
                    }
                }
                let mut writable = Vec::new();
                conn.take_writable(&mut writable);
            }
            assert!(conn.send_window <= i64::from(frame::MAX_WINDOW));
            assert!(conn.recv_window >= 0);
            let out_len = conn.out.len();
            conn.out.advance(out_len);
            assert!(conn.out.is_empty());
        }
    }

    #[test]
    fn random_header_blocks_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x4ac);
        let mut decoder = hpack::Decoder::new(4096);
        for _ in 0..50_000 {
            let block: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
            if decoder.decode(&block, |_| Ok(())).is_err() {
                // A broken block ends a connection: a new decoder.
                decoder = hpack::Decoder::new(4096);
            }
        }
    }
}
