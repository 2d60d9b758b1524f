//! Downstream HTTP/2 connections (h2c, prior knowledge), served by the
//! connection's own task.
//!
//! `h2_conn` is the protocol; this is its driver. The task reads the
//! socket, feeds the bytes to the connection state, and runs each
//! request's proxy future itself: a stream is polled only when its own
//! waker fired (each stream has one, which queues the stream and wakes the
//! task), and every response frame ready in one pass goes out in one
//! vectored write.
//!
//! Why not hyper's server connection (which served HTTP/2 before): it runs
//! each stream as a task of its own and keeps the streams in the h2 crate's
//! store behind a mutex, so every frame crossed tasks and took locks.
//! Measured on the bench (`bench/instructions H2C=1`, `bench/run` h2c), see
//! the commit that brought this module and bench/README.md.
//!
//! Envoy's connection-level behaviour followed here: a drain, the
//! `max_requests_per_connection`-th request and `idle_timeout` (no stream
//! open for that long) start a graceful shutdown, a GOAWAY naming the
//! largest stream id and a PING, then the final GOAWAY once the PING is
//! answered or HCM `drain_timeout` (5 s) has passed, and the open streams
//! finish (bounded by `--drain-time-s`); a connection whose streams are
//! mostly reset before their responses, by the client or for its stream
//! errors, is cut off (Envoy's premature reset limit); a request body
//! flows as the upstream takes it, the client's window reopening as it
//! does (per stream: `initial_stream_window_size`).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http::header::{CONTENT_LENGTH, DATE, EXPECT, TE};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use hyper::body::{Body as _, Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::body::{BodyError, DownstreamBody, ResponseBody};
use super::h1_wire::poll_fill;
use super::h2_conn::{self, Conn, Event};
use super::h2_frame::Reason;
use super::hpack::Encoder;
use super::idle::IdleEntry;
use super::proxy::{self, ConnInfo};

/// Envoy's `initial_stream_window_size` and `initial_connection_window_size`
/// default to 256 MiB. legate's are smaller on purpose: the stream window
/// is what a client may send that the upstream has not taken yet, so it
/// bounds the memory of each upload (see README, "HTTP/2").
pub const DEFAULT_STREAM_WINDOW: u32 = 1024 * 1024;
pub const DEFAULT_CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Serves HTTP/2 on `io` until the client closes it, an error, or a drain.
/// `preread`: bytes already read from it (the preface, when the HTTP/1.1
/// codec sniffed it).
pub async fn serve(io: TcpStream, preread: Bytes, info: Arc<ConnInfo>, drain: watch::Receiver<bool>) {
    let mut d = Driver::new(io, preread, info, drain);
    let end = poll_fn(|cx| d.poll(cx)).await;
    // Streams still open are abandoned: their records log `DC`.
    drop(d.h2.drain_streams());
    if end == End::ClientGone {
        return;
    }
    // What is queued (a GOAWAY at least; a graceful close has written
    // everything else) goes out, for a bounded time.
    let _ = tokio::time::timeout(LINGER, poll_fn(|cx| d.flush(cx))).await;
    let _ = d.io.shutdown().await;
    super::h1_server::linger(&mut d.io).await;
}

/// How long the last frames may take to write when closing.
const LINGER: Duration = Duration::from_secs(1);

/// Passes of the connection's loop before it yields to the worker's other
/// tasks (it is woken again at once).
const PASSES_BEFORE_YIELD: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    /// The client closed or broke the connection.
    ClientGone,
    /// GOAWAY was sent and nothing is left to serve, or a protocol error.
    Closing,
}

/// The streams whose wakers fired, and the connection task's waker.
#[derive(Default)]
struct ReadyQueue {
    keys: Mutex<Vec<usize>>,
    task: AtomicWaker,
}

/// One stream's waker: queues its key (once until polled) and wakes the
/// connection task. Kept per slab key and reused by the streams that take
/// the key later (a late wake from an old stream only costs a poll).
struct StreamWake {
    key: usize,
    queued: AtomicBool,
    queue: Arc<ReadyQueue>,
}

impl Wake for StreamWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            self.queue
                .keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(self.key);
            self.queue.task.wake();
        }
    }
}

/// A request body on its way from the connection to the upstream.
#[derive(Default)]
struct Feed {
    queue: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    /// Nothing more comes (END_STREAM was received).
    end: bool,
    /// The stream was reset before the body's end.
    failed: Option<&'static str>,
    reader: Option<Waker>,
    /// Bytes the reader took that the connection has not yet given back
    /// to the client's window.
    consumed: usize,
    /// The stream's waker: the reader may be another task (hyper's HTTP/2
    /// upstream connection), which must tell the connection it read.
    conn: Option<Waker>,
    /// The reader is gone: what comes is dropped.
    abandoned: bool,
}

type SharedFeed = Arc<Mutex<Feed>>;

fn lock(feed: &SharedFeed) -> std::sync::MutexGuard<'_, Feed> {
    feed.lock().unwrap_or_else(|e| e.into_inner())
}

/// A downstream HTTP/2 request body.
pub struct RequestBody {
    feed: Option<SharedFeed>,
    ended: bool,
    exact: Option<u64>,
}

impl RequestBody {
    pub fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let Some(feed) = &self.feed else {
            self.ended = true;
            return Poll::Ready(None);
        };
        let mut f = lock(feed);
        if let Some(data) = f.queue.pop_front() {
            f.consumed += data.len();
            // A reader in another task (hyper's HTTP/2 upstream connection)
            // tells the connection, which gives the window back; the
            // stream's own future is settled after each poll anyway.
            if let Some(w) = &f.conn {
                if !w.will_wake(cx.waker()) {
                    w.wake_by_ref();
                }
            }
            if f.queue.is_empty() && f.end && f.trailers.is_none() {
                self.ended = true;
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(t) = f.trailers.take() {
            self.ended = true;
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        if let Some(why) = f.failed {
            self.ended = true;
            return Poll::Ready(Some(Err(why.into())));
        }
        if f.end {
            self.ended = true;
            return Poll::Ready(None);
        }
        if !f.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            f.reader = Some(cx.waker().clone());
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
        if let Some(feed) = &self.feed {
            let mut f = lock(feed);
            f.abandoned = true;
            if let Some(w) = &f.conn {
                w.wake_by_ref();
            }
        }
    }
}

type Handler = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

/// A stream's work, held in its slot of the connection state.
#[derive(Default)]
struct Work {
    state: State,
    feed: Option<SharedFeed>,
    head_request: bool,
    /// When the request arrived (to tell a premature reset).
    opened: Option<Instant>,
}

#[derive(Default)]
enum State {
    #[default]
    Idle,
    /// The proxy is working on the request.
    Handling(Handler),
    /// The response head is sent; its body goes out as the windows allow.
    /// `pending`: body bytes not sent yet; `end`: the body ends with them.
    Sending {
        body: ResponseBody,
        pending: Bytes,
        end: bool,
    },
}

impl Drop for Work {
    fn drop(&mut self) {
        if let Some(feed) = &self.feed {
            let mut f = lock(feed);
            if !f.end {
                f.failed = Some("the request stream was reset");
                if let Some(r) = f.reader.take() {
                    r.wake();
                }
            }
        }
    }
}

struct Driver {
    io: TcpStream,
    read: BytesMut,
    h2: Conn<Work>,
    info: Arc<ConnInfo>,
    queue: Arc<ReadyQueue>,
    wakers: Vec<Option<(Arc<StreamWake>, Waker)>>,
    /// Streams to poll in this pass.
    ready: Vec<usize>,
    /// Streams not polled (or not finished) because the outbox was full.
    deferred: Vec<usize>,
    drain: Pin<Box<dyn Future<Output = ()> + Send>>,
    drain_rx: watch::Receiver<bool>,
    drain_armed: bool,
    draining: bool,
    /// After the shutdown notice: the final GOAWAY is due by then
    /// (`drain_timeout`).
    notice_timer: Option<Pin<Box<Sleep>>>,
    /// Once shutting down, the streams open have until then
    /// (`--drain-time-s`).
    deadline: Option<Pin<Box<Sleep>>>,
    idle_after: Option<Duration>,
    idle_entry: IdleEntry,
    last_active: Instant,
    requests: u32,
    /// The clock read for the streams opened by one read of the socket.
    read_at: Option<Instant>,
    /// Streams ended, and of them those reset (by either side) early and
    /// before their response started.
    closed: u32,
    premature_resets: u32,
    peer_gone_away: bool,
    failed: bool,
}

/// Envoy's premature reset limit (runtime `overload.premature_reset_total_stream_count`,
/// 500) against the "rapid reset" attack (CVE-2023-44487): a connection
/// whose streams were reset prematurely half as many times as this, or,
/// once this many have ended, for half of those that ended, is closed.
const PREMATURE_RESET_TOTAL_STREAMS: u32 = 500;

/// A stream reset no later than this (in whole seconds, as Envoy compares
/// them: runtime `overload.premature_reset_min_stream_lifetime_seconds`)
/// and before its response started is premature. The reset may be the
/// client's or legate's (a stream error the client provoked).
const PREMATURE_RESET_MAX_LIFETIME_SECS: u64 = 1;

/// Envoy's `maybeDrainDueToPrematureResets` rule: `closed` streams ended on
/// the connection, `premature` of them reset prematurely.
fn too_many_premature_resets(closed: u32, premature: u32) -> bool {
    let (closed, premature) = (u64::from(closed), u64::from(premature));
    let total = u64::from(PREMATURE_RESET_TOTAL_STREAMS);
    premature * 2 >= if closed < total { total } else { closed }
}

impl Driver {
    fn new(io: TcpStream, preread: Bytes, info: Arc<ConnInfo>, drain: watch::Receiver<bool>) -> Driver {
        let hcm = &info.listener.hcm;
        let h2 = Conn::new(h2_conn::Config {
            max_concurrent_streams: hcm.h2_max_concurrent_streams,
            initial_stream_window: hcm.h2_initial_stream_window,
            initial_connection_window: hcm.h2_initial_connection_window,
            max_header_bytes: hcm.max_request_headers_kb as usize * 1024,
            max_headers_count: hcm.max_headers_count as usize,
        });
        let mut read = BytesMut::with_capacity(16 * 1024);
        read.extend_from_slice(&preread);
        Driver {
            io,
            read,
            h2,
            queue: Arc::new(ReadyQueue::default()),
            wakers: Vec::new(),
            ready: Vec::new(),
            deferred: Vec::new(),
            drain: Box::pin(super::h1_server::drained(drain.clone())),
            drain_rx: drain,
            drain_armed: false,
            draining: false,
            notice_timer: None,
            deadline: None,
            idle_after: hcm.idle_timeout,
            idle_entry: IdleEntry::default(),
            last_active: Instant::now(),
            requests: 0,
            read_at: None,
            closed: 0,
            premature_resets: 0,
            peer_gone_away: false,
            failed: false,
            info,
        }
    }

    fn buffer_limit(&self) -> usize {
        self.info.listener.buffer_limit
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        self.queue.task.register(cx.waker());
        for _ in 0..PASSES_BEFORE_YIELD {
            let mut again = false;
            // Input, unless the client is not reading what it asked for
            // (then its requests wait in the socket: TCP's backpressure).
            let read_skipped = self.failed || self.h2.out.len() >= self.buffer_limit();
            if !read_skipped {
                match poll_fill(&self.io, &mut self.read, cx) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(End::ClientGone),
                    Poll::Ready(Ok(_)) => again = true,
                    Poll::Pending => {}
                }
                self.read_frames();
            }
            self.poll_streams();
            // Before the flush: what it queues (a GOAWAY) goes in this pass.
            let done = self.poll_lifecycle(cx);
            match self.flush(cx) {
                Poll::Ready(Err(_)) => return Poll::Ready(End::ClientGone),
                Poll::Ready(Ok(())) => {
                    if !self.deferred.is_empty() {
                        self.ready.append(&mut self.deferred);
                        again = true;
                    }
                    // The socket was not read this pass: read it now that
                    // the backlog is gone (nothing else would wake us for it).
                    again |= read_skipped && !self.failed;
                }
                Poll::Pending => {}
            }
            if self.failed {
                return Poll::Ready(End::Closing);
            }
            match done {
                Some(Done::Now) => return Poll::Ready(End::Closing),
                Some(Done::Written) if self.h2.out.is_empty() => return Poll::Ready(End::Closing),
                _ => {}
            }
            again |= !self.ready.is_empty() || !self.queue_is_empty();
            if !again {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn queue_is_empty(&self) -> bool {
        self.queue
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    fn read_frames(&mut self) {
        self.read_at = None;
        loop {
            match self.h2.read(&mut self.read) {
                Ok(Some(event)) => {
                    self.on_event(event);
                    if self.failed {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(
                        "downstream HTTP/2 connection error: {} ({})",
                        e.reason.name(),
                        e.detail
                    );
                    self.info.listener.hcm.stats.downstream_cx_protocol_error.inc();
                    self.failed = true;
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, event: Event<Work>) {
        match event {
            Event::Request {
                key,
                head,
                end_stream,
            } => self.start(key, head, end_stream),
            Event::Data {
                key,
                data,
                end_stream,
            } => {
                let n = data.len();
                let taken = self
                    .h2
                    .user_mut(key)
                    .and_then(|w| w.feed.as_ref())
                    .is_some_and(|feed| {
                        let mut f = lock(feed);
                        f.end |= end_stream;
                        if f.abandoned {
                            return false;
                        }
                        if n > 0 {
                            f.queue.push_back(data);
                        }
                        if let Some(r) = f.reader.take() {
                            r.wake();
                        }
                        true
                    });
                if !taken && n > 0 {
                    self.h2.release(key, n as u32);
                }
            }
            Event::Trailers { key, trailers } => {
                if let Some(feed) = self.h2.user_mut(key).and_then(|w| w.feed.as_ref()) {
                    let mut f = lock(feed);
                    f.trailers = Some(trailers);
                    f.end = true;
                    if let Some(r) = f.reader.take() {
                        r.wake();
                    }
                }
            }
            Event::Reset {
                user,
                reason,
                by_peer,
            } => {
                tracing::debug!(
                    "downstream HTTP/2 stream reset ({}{})",
                    reason.name(),
                    if by_peer { ", by the client" } else { "" }
                );
                let unanswered = matches!(user.state, State::Idle | State::Handling(_));
                let early = user
                    .opened
                    .is_some_and(|t| t.elapsed().as_secs() <= PREMATURE_RESET_MAX_LIFETIME_SECS);
                drop(user);
                self.stream_ended();
                if unanswered && early {
                    self.premature_resets += 1;
                    self.check_premature_resets();
                }
            }
            Event::GoAway => self.peer_gone_away = true,
        }
    }

    fn check_premature_resets(&mut self) {
        if !self.failed && too_many_premature_resets(self.closed, self.premature_resets) {
            tracing::debug!(
                "downstream HTTP/2 connection closed: {} of its {} streams ended were reset before their responses",
                self.premature_resets,
                self.closed
            );
            let stats = &self.info.listener.hcm.stats;
            stats.downstream_rq_too_many_premature_resets.inc();
            self.h2.go_away(
                Reason::ENHANCE_YOUR_CALM,
                "too many streams reset before their responses",
            );
            self.failed = true;
        }
    }

    /// A stream's waker, made once per slab key.
    fn waker(&mut self, key: usize) -> Waker {
        if self.wakers.len() <= key {
            self.wakers.resize_with(key + 1, || None);
        }
        let (wake, waker) = self.wakers[key].get_or_insert_with(|| {
            let wake = Arc::new(StreamWake {
                key,
                queued: AtomicBool::new(false),
                queue: self.queue.clone(),
            });
            let waker = Waker::from(wake.clone());
            (wake, waker)
        });
        // Polled now: a wake from here on queues it again.
        wake.queued.store(false, Ordering::Release);
        waker.clone()
    }

    fn start(&mut self, key: usize, head: h2_conn::RequestHead, end_stream: bool) {
        self.requests += 1;
        let opened = *self.read_at.get_or_insert_with(Instant::now);
        let waker = self.waker(key);
        let feed = (!end_stream).then(|| {
            Arc::new(Mutex::new(Feed {
                conn: Some(waker),
                ..Feed::default()
            }))
        });
        let body = RequestBody {
            feed: feed.clone(),
            ended: end_stream,
            exact: if end_stream { Some(0) } else { head.content_length },
        };
        let head_request = head.method == Method::HEAD;
        let hcm = &self.info.listener.hcm;
        let (mut parts, ()) = Request::new(()).into_parts();
        parts.method = head.method;
        parts.uri = head.uri;
        parts.version = Version::HTTP_2;
        parts.headers = head.headers;
        let handler: Handler = if head.too_large {
            // Answered here, as the proxy would (`max_request_headers_kb`,
            // `max_headers_count`): its fields were not all kept.
            let response = proxy::reject(
                &self.info,
                Some(&parts),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "",
                None,
                "request_headers_too_large",
            );
            Box::pin(std::future::ready(Ok(response)))
        } else {
            if !end_stream
                && !hcm.proxy_100_continue
                && parts
                    .headers
                    .get(EXPECT)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
            {
                // Envoy answers `Expect: 100-continue` itself (the proxy
                // drops the field), and counts the 100 as a response.
                self.h2.send_headers(key, false, |enc, out| enc.status(out, 100));
                hcm.stats.downstream_rq_xx.record(100);
                hcm.stats.downstream_rq_completed.inc();
            }
            let request = Request::from_parts(parts, DownstreamBody::H2(body));
            let info = self.info.clone();
            // Built in its box: the proxy's future is kilobytes.
            Box::into_pin(super::boxed_in_place(|| proxy::handle(info, request)))
        };
        if let Some(w) = self.h2.user_mut(key) {
            *w = Work {
                state: State::Handling(handler),
                feed,
                head_request,
                opened: Some(opened),
            };
        }
        self.ready.push(key);
        if hcm
            .max_requests_per_connection
            .is_some_and(|max| self.requests >= max)
        {
            // The last request this connection may carry: the connection
            // drains, as Envoy's does (its stat is counted by the proxy).
            self.h2.start_shutdown();
        }
    }

    /// Polls every stream that was woken, or got window, or is new.
    fn poll_streams(&mut self) {
        {
            let mut keys = self.queue.keys.lock().unwrap_or_else(|e| e.into_inner());
            self.ready.append(&mut keys);
        }
        self.h2.take_writable(&mut self.ready);
        let mut i = 0;
        // `ready` may grow while polling (a stream ends and wakes another).
        while i < self.ready.len() {
            let key = self.ready[i];
            i += 1;
            let outbox_full = self.h2.out.len() >= self.buffer_limit();
            self.poll_stream(key, outbox_full);
        }
        self.ready.clear();
    }

    /// Moves a stream on, or with `outbox_full` only runs its timers (it
    /// is polled again once the outbox is written).
    fn poll_stream(&mut self, key: usize, outbox_full: bool) {
        if self.h2.user_mut(key).is_none() {
            return;
        }
        let waker = self.waker(key);
        let mut cx = Context::from_waker(&waker);
        let limit = self.buffer_limit();
        let driven = if outbox_full {
            stalled(&mut self.h2, key, &mut cx, Driven::Full)
        } else {
            drive(&mut self.h2, key, limit, &mut cx)
        };
        let ended = match driven {
            Driven::Open => {
                settle_feed(&mut self.h2, key);
                false
            }
            Driven::Full => {
                settle_feed(&mut self.h2, key);
                self.deferred.push(key);
                false
            }
            Driven::Finished => {
                drop(self.h2.finish(key));
                true
            }
            Driven::Failed(reason) => {
                drop(self.h2.reset(key, reason));
                true
            }
        };
        if ended {
            self.stream_ended();
        }
    }

    fn stream_ended(&mut self) {
        self.closed = self.closed.saturating_add(1);
        if self.h2.active() == 0 {
            self.last_active = Instant::now();
        }
    }

    /// Writes what is queued; Ready(Ok) once all of it is written.
    fn flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.h2.out.is_empty() {
            let written = {
                let mut slices = [io::IoSlice::new(&[]); 16];
                let n = self.h2.out.slices(&mut slices);
                match self.io.try_write_vectored(&slices[..n]) {
                    Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready!(self.io.poll_write_ready(cx))?;
                        continue;
                    }
                    Err(e) => return Poll::Ready(Err(e)),
                }
            };
            self.h2.out.advance(written);
        }
        Poll::Ready(Ok(()))
    }

    /// Drain, idle timeout and the two GOAWAYs: whether the connection is
    /// done (no stream left, or out of time).
    fn poll_lifecycle(&mut self, cx: &mut Context<'_>) -> Option<Done> {
        if !self.h2.shutting_down() && self.poll_draining(cx) {
            self.h2.start_shutdown();
        }
        let idle = self.h2.active() == 0;
        if idle && !self.h2.shutting_down() && !self.peer_gone_away {
            if let Some(after) = self.idle_after {
                let at = self.last_active + after;
                if at <= Instant::now() {
                    self.info.listener.hcm.stats.downstream_cx_idle_timeout.inc();
                    self.h2.start_shutdown();
                } else {
                    self.idle_entry.arm(at, cx.waker());
                }
            }
        } else {
            self.idle_entry.disarm();
        }
        if self.h2.shutting_down() && !self.h2.goaway_sent() {
            // The final GOAWAY once the client has seen the notice (its
            // PING answer), or after `drain_timeout`.
            let after = self.info.listener.hcm.drain_timeout;
            let timer = self
                .notice_timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
            if self.h2.notice_acknowledged() || timer.as_mut().poll(cx).is_ready() {
                self.h2.go_away(Reason::NO_ERROR, "");
            }
        }
        if self.h2.goaway_sent() || self.peer_gone_away {
            if idle {
                return Some(Done::Written);
            }
            let drain_time = self.info.drain_time;
            let d = self
                .deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(drain_time)));
            if d.as_mut().poll(cx).is_ready() {
                tracing::debug!("downstream HTTP/2 connection closed at the end of the drain time");
                return Some(Done::Now);
            }
        }
        None
    }

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
}

/// A connection's end, once it has come.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Done {
    /// Nothing is left to serve: close once what is queued is written.
    Written,
    /// Out of time: close now.
    Now,
}

/// What polling a stream's work came to.
enum Driven {
    Open,
    /// The outbox is full: to be polled again once it is written.
    Full,
    /// The response was sent whole.
    Finished,
    /// The response broke off: the stream is reset.
    Failed(Reason),
}

/// Moves a stream's work on as far as it can go now: its response body is
/// read while the outbox holds less than `limit`.
fn drive(h2: &mut Conn<Work>, key: usize, limit: usize, cx: &mut Context<'_>) -> Driven {
    loop {
        let queued = h2.out.len();
        let Some(work) = h2.user_mut(key) else {
            return Driven::Finished;
        };
        match &mut work.state {
            State::Idle => return Driven::Open,
            State::Handling(handler) => {
                let response = match handler.as_mut().poll(cx) {
                    Poll::Pending => return Driven::Open,
                    Poll::Ready(Ok(r)) => r,
                    Poll::Ready(Err(never)) => match never {},
                };
                let head_request = work.head_request;
                let (parts, body) = response.into_parts();
                let status = parts.status;
                let no_body = head_request || super::status_has_no_body(status) || body.is_end_stream();
                h2.send_headers(key, no_body, |enc, out| {
                    response_head(enc, out, status, &parts.headers, &body, head_request)
                });
                if no_body {
                    // A body not sent completes its record when dropped.
                    return Driven::Finished;
                }
                if let Some(w) = h2.user_mut(key) {
                    w.state = State::Sending {
                        body,
                        pending: Bytes::new(),
                        end: false,
                    };
                }
            }
            State::Sending { body, pending, end } => {
                if !pending.is_empty() {
                    let end = *end;
                    let mut data = std::mem::take(pending);
                    let sent = h2.send_data(key, &mut data, end);
                    if let Some(State::Sending { pending, .. }) = h2.user_mut(key).map(|w| &mut w.state) {
                        *pending = data;
                    }
                    if !sent {
                        // Waits for window (the stream is listed writable
                        // then).
                        return stalled(h2, key, cx, Driven::Open);
                    }
                    if end {
                        return Driven::Finished;
                    }
                    continue;
                }
                if queued >= limit {
                    return stalled(h2, key, cx, Driven::Full);
                }
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Pending => return Driven::Open,
                    Poll::Ready(None) => {
                        let mut nothing = Bytes::new();
                        h2.send_data(key, &mut nothing, true);
                        return Driven::Finished;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        tracing::debug!("response body failed: {e}");
                        return Driven::Failed(Reason::INTERNAL_ERROR);
                    }
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => {
                            *end = body.is_end_stream();
                            *pending = data;
                            // An empty last frame still carries END_STREAM.
                            if pending.is_empty() && *end {
                                let mut nothing = Bytes::new();
                                h2.send_data(key, &mut nothing, true);
                                return Driven::Finished;
                            }
                        }
                        Err(frame) => {
                            if let Ok(trailers) = frame.into_trailers() {
                                h2.send_headers(key, true, |enc, out| {
                                    for (name, value) in &trailers {
                                        if !h2_conn::connection_specific(name) && name != TE {
                                            enc.field(out, name, value);
                                        }
                                    }
                                });
                                return Driven::Finished;
                            }
                        }
                    },
                }
            }
        }
    }
}

/// A stream whose response waits for the client (for window, or for the
/// outbox to be written): only its timers run meanwhile, and `waiting` is
/// what it comes to unless one of them fired.
fn stalled(h2: &mut Conn<Work>, key: usize, cx: &mut Context<'_>, waiting: Driven) -> Driven {
    if let Some(State::Sending { body, .. }) = h2.user_mut(key).map(|w| &mut w.state) {
        if let Poll::Ready(e) = body.poll_timers(cx) {
            tracing::debug!("response body failed while the client took none of it: {e}");
            return Driven::Failed(Reason::INTERNAL_ERROR);
        }
    }
    waiting
}

/// Gives the client back the window of the body bytes the upstream took,
/// or of all of them once nobody reads the body any more.
fn settle_feed(h2: &mut Conn<Work>, key: usize) {
    let Some(feed) = h2.user_mut(key).and_then(|w| w.feed.as_ref()) else {
        return;
    };
    let released = {
        let mut f = lock(feed);
        let mut n = std::mem::take(&mut f.consumed);
        if f.abandoned {
            n += f.queue.drain(..).map(|b| b.len()).sum::<usize>();
        }
        n
    };
    if released > 0 {
        h2.release(key, u32::try_from(released).unwrap_or(u32::MAX));
    }
}

/// Encodes a response head: `:status`, the response's fields but those
/// HTTP/2 forbids, and `date` and `content-length` when missing (as the
/// HTTP/1.1 codec adds them).
fn response_head(
    enc: &mut Encoder,
    out: &mut Vec<u8>,
    status: StatusCode,
    headers: &HeaderMap,
    body: &ResponseBody,
    head_request: bool,
) {
    enc.status(out, status.as_u16());
    let mut has_date = false;
    let mut has_length = false;
    for (name, value) in headers {
        if h2_conn::connection_specific(name) || name == TE {
            continue;
        }
        if name == DATE {
            has_date = true;
        } else if name == CONTENT_LENGTH {
            has_length = true;
        }
        enc.field(out, name, value);
    }
    if !has_date {
        super::h1_server::with_http_date(|d| enc.field_bytes(out, &DATE, d, false));
    }
    if !has_length && !head_request && !super::status_has_no_body(status) {
        if let Some(n) = body.size_hint().exact() {
            enc.field_bytes(
                out,
                &CONTENT_LENGTH,
                super::h1_server::itoa(n, &mut [0u8; 20]),
                false,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn premature_resets_close_the_connection_as_envoy_decides() {
        // (streams ended, of them reset prematurely, closed?)
        let cases = [
            (0, 0, false),
            (249, 249, false),
            // Before 500 streams have ended: 250 premature resets suffice.
            (250, 250, true),
            (400, 250, true),
            (499, 249, false),
            // From 500 on: half of those ended.
            (500, 249, false),
            (500, 250, true),
            (1000, 499, false),
            (1000, 500, true),
            (u32::MAX, u32::MAX / 2 + 1, true),
        ];
        for (closed, premature, cut) in cases {
            assert_eq!(
                too_many_premature_resets(closed, premature),
                cut,
                "{premature} of {closed}"
            );
        }
    }
}
