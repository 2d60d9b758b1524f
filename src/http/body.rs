//! Body types: what the proxy sends downstream (an upstream body or a local
//! reply) and what it sends upstream (the downstream body, counted). Both
//! stream frame by frame; nothing is buffered whole.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::h1_wire::RawRequest;
use crate::model::cluster::{Cluster, Host};
use crate::stream_info::{ResponseFlags, StreamInfo};

/// A downstream request body as a codec reads it: our HTTP/2 or HTTP/1.1
/// codec's.
pub enum DownstreamBody {
    H2(super::h2_server::RequestBody),
    H1(super::h1_server::RequestBody),
}

impl DownstreamBody {
    /// Whether the request's map may hold hop-by-hop fields. HTTP/2 never
    /// does: the h2 codec refuses a request with a connection-level field,
    /// or a `te` other than `trailers` (which stays, RFC 9113 §8.2.2).
    pub fn has_hop_by_hop_fields(&self) -> bool {
        match self {
            DownstreamBody::H2(_) => false,
            DownstreamBody::H1(b) => b.has_hop_by_hop_fields(),
        }
    }

    /// The request's head as the client sent it, while the request has no
    /// map of it (HTTP/1.1 only: `h1_wire::RawRequest`).
    pub fn raw_head(&self) -> Option<&RawRequest> {
        match self {
            DownstreamBody::H2(_) => None,
            DownstreamBody::H1(b) => b.raw_head(),
        }
    }

    pub fn raw_head_mut(&mut self) -> Option<&mut RawRequest> {
        match self {
            DownstreamBody::H2(_) => None,
            DownstreamBody::H1(b) => b.raw_head_mut(),
        }
    }
}

/// Gives `req` its header map if its head was kept raw: the request's
/// fields, then the proxy's additions (`RawRequest::added`), then anything
/// its (until then empty) map holds. Called where something reads or edits
/// the request's fields.
pub fn materialize(req: &mut http::Request<DownstreamBody>) -> Result<(), &'static str> {
    let DownstreamBody::H1(body) = req.body() else {
        return Ok(());
    };
    if body.raw_head().is_none() {
        return Ok(());
    }
    let mut headers = std::mem::take(req.headers_mut());
    let made = match req.body_mut() {
        DownstreamBody::H1(b) => b.materialize(&mut headers),
        DownstreamBody::H2(_) => Ok(()),
    };
    *req.headers_mut() = headers;
    made
}

impl Body for DownstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            DownstreamBody::H2(b) => b.poll_frame(cx),
            DownstreamBody::H1(b) => b.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            DownstreamBody::H2(b) => b.is_end_stream(),
            DownstreamBody::H1(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            DownstreamBody::H2(b) => b.size_hint(),
            DownstreamBody::H1(b) => b.size_hint(),
        }
    }
}

/// A downstream request body on its way upstream; counts bytes for
/// `%BYTES_RECEIVED%`.
pub struct RequestBody {
    pub inner: DownstreamBody,
    pub received: Arc<RequestProgress>,
}

/// How much of a downstream request body has been passed upstream, and
/// whether all of it has (`request_timeout` is disarmed then, and the
/// route timeout starts).
#[derive(Debug, Default)]
pub struct RequestProgress {
    bytes: AtomicU64,
    done: std::sync::atomic::AtomicBool,
    /// The task waiting for the request to complete (to start the route
    /// timeout): the body may be read by another task (hyper's HTTP/2
    /// upstream connection).
    done_waker: futures_util::task::AtomicWaker,
}

impl RequestProgress {
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    pub fn mark_done(&self) {
        self.done.store(true, Ordering::Release);
        self.done_waker.wake();
    }

    /// Whether the whole request has been received; if not, `cx` is woken
    /// when it has.
    pub fn poll_done(&self, cx: &mut Context<'_>) -> bool {
        if self.is_done() {
            return true;
        }
        self.done_waker.register(cx.waker());
        self.done.load(Ordering::Acquire)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received
                        .bytes
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if self.inner.is_end_stream() {
                    self.received.mark_done();
                }
            }
            Poll::Ready(None) => self.received.mark_done(),
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error a response body ends with when it stops early.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Stream idle timeout of a response body: it resets whenever a frame
/// arrives; the timer is only armed when the upstream makes us wait.
struct Idle {
    after: std::time::Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

#[derive(Debug)]
struct IdleTimeout;

impl std::fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stream idle timeout")
    }
}

impl std::error::Error for IdleTimeout {}

/// The route `timeout` once the response has started: Envoy's spans until
/// the response is complete, so a response still streaming when it passes
/// is reset (`UT`). The timer is only armed when the upstream makes us
/// wait; the cluster and host count it as `upstream_rq_timeout` and
/// `rq_timeout`.
pub struct RouteDeadline {
    at: tokio::time::Instant,
    cluster: Arc<Cluster>,
    host: Arc<Host>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl RouteDeadline {
    pub fn new(at: tokio::time::Instant, cluster: Arc<Cluster>, host: Arc<Host>) -> RouteDeadline {
        RouteDeadline {
            at,
            cluster,
            host,
            sleep: None,
        }
    }
}

/// Whether the timer in `slot` has passed. It is made (and registered with
/// tokio) only the first time the body makes the client wait, so a
/// response that arrives whole never arms one.
fn poll_timer(
    slot: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    make: impl FnOnce() -> tokio::time::Sleep,
    cx: &mut Context<'_>,
) -> bool {
    slot.get_or_insert_with(|| Box::pin(make()))
        .as_mut()
        .poll(cx)
        .is_ready()
}

#[derive(Debug)]
struct RouteTimeout;

impl std::fmt::Display for RouteTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream request timeout")
    }
}

impl std::error::Error for RouteTimeout {}

/// Called once when a response has been sent (or abandoned).
/// The record stays boxed from the request's start to its log line: it is
/// several hundred bytes, and each move would copy it.
pub type OnComplete = Box<dyn FnOnce(Box<StreamInfo>) + Send>;

enum Inner {
    Upstream(Incoming),
    H1(Box<super::h1_client::Body>),
    Full(Option<Bytes>),
}

/// A downstream response body. When it ends (or is dropped: client gone),
/// it completes the request's `StreamInfo` and hands it to `on_complete`
/// (access logs, stats).
pub struct ResponseBody {
    inner: Inner,
    info: Option<Box<StreamInfo>>,
    received: Option<Arc<RequestProgress>>,
    on_complete: Option<OnComplete>,
    idle: Option<Idle>,
    deadline: Option<RouteDeadline>,
    /// The upstream HTTP/2 stream this body is read from, held until the
    /// body is dropped.
    _lease: Option<super::upstream::Lease>,
}

impl ResponseBody {
    pub fn full(bytes: Bytes) -> ResponseBody {
        ResponseBody {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
            info: None,
            received: None,
            on_complete: None,
            idle: None,
            deadline: None,
            _lease: None,
        }
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::full(Bytes::new())
    }

    /// The body of an upstream response. `idle`: the body ends with a reset
    /// (SI) when the upstream sends nothing for that long
    /// (`stream_idle_timeout`, or the route's `idle_timeout`); `deadline`:
    /// the route timeout, which the whole response must beat. `lease`: the
    /// upstream HTTP/2 stream it is read from. Built in one step (and
    /// completed in place, `complete_with`): each move copies the body.
    pub fn upstream(
        body: super::upstream::Upstream,
        idle: Option<std::time::Duration>,
        deadline: Option<RouteDeadline>,
        lease: Option<super::upstream::Lease>,
    ) -> ResponseBody {
        ResponseBody {
            inner: match body {
                super::upstream::Upstream::Hyper(b) => Inner::Upstream(b),
                super::upstream::Upstream::H1(b) => Inner::H1(b),
            },
            info: None,
            received: None,
            on_complete: None,
            idle: idle.map(|after| Idle { after, sleep: None }),
            deadline,
            _lease: lease,
        }
    }

    /// Attaches the request's record; `on_complete` runs when the body ends.
    pub fn complete_with(
        &mut self,
        info: Box<StreamInfo>,
        received: Option<Arc<RequestProgress>>,
        on_complete: OnComplete,
    ) {
        self.info = Some(info);
        self.received = received;
        self.on_complete = Some(on_complete);
    }

    /// Ends the response early on one of its timers, as Envoy does when a
    /// timeout passes mid-stream: a reset after it started, the record
    /// keeping the status sent and getting `flag` and the timeout's
    /// `%RESPONSE_CODE_DETAILS%`; neither timer runs any more.
    fn cut_off(&mut self, flag: ResponseFlags, details: &'static str, error: BodyError) -> Poll<BodyError> {
        if let Some(info) = self.info.as_mut() {
            info.response_flags.insert(flag);
            info.response_code_details = Some(details.into());
            info.reset_after_response_started = true;
        }
        self.idle = None;
        self.deadline = None;
        self.complete();
        Poll::Ready(error)
    }

    /// The origin's response fields when they were kept as they came: the
    /// response's map then holds only what the proxy added.
    pub fn raw_head(&self) -> Option<&super::h1_wire::RawHead> {
        match &self.inner {
            Inner::H1(body) => body.raw_head(),
            _ => None,
        }
    }

    /// The response's timers: the stream idle timeout and the route
    /// timeout. `poll_frame` runs them while the upstream sends nothing;
    /// a codec runs them itself while the client takes nothing (its window
    /// or socket is full, so the body is not read), as Envoy's timers run
    /// on then too: a client that stops reading cannot hold the stream and
    /// its upstream connection forever. Ready with the error the body ends
    /// with (its record complete, as when `poll_frame` returns the error).
    pub fn poll_timers(&mut self, cx: &mut Context<'_>) -> Poll<BodyError> {
        if let Some(idle) = self.idle.as_mut() {
            let after = idle.after;
            if poll_timer(&mut idle.sleep, || tokio::time::sleep(after), cx) {
                return self.cut_off(
                    ResponseFlags::STREAM_IDLE_TIMEOUT,
                    "stream_idle_timeout",
                    Box::new(IdleTimeout),
                );
            }
        }
        if let Some(deadline) = self.deadline.as_mut() {
            let at = deadline.at;
            if poll_timer(&mut deadline.sleep, || tokio::time::sleep_until(at), cx) {
                deadline.cluster.stats.upstream_rq_timeout.inc();
                deadline.host.stats.rq_timeout.inc();
                return self.cut_off(
                    ResponseFlags::UPSTREAM_REQUEST_TIMEOUT,
                    "upstream_response_timeout",
                    Box::new(RouteTimeout),
                );
            }
        }
        Poll::Pending
    }

    fn complete(&mut self) {
        if let (Some(mut info), Some(done)) = (self.info.take(), self.on_complete.take()) {
            if let Some(r) = &self.received {
                info.bytes_received = r.bytes();
            }
            info.end = Some(info.start.elapsed());
            done(info);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let poll = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::from),
            Inner::H1(body) => Pin::new(&mut **body).poll_frame(cx).map_err(BodyError::from),
        };
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(idle) = this.idle.as_mut() {
                    idle.sleep = None;
                }
                if let Some(info) = this.info.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        info.bytes_sent += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref() {
                        info.response_trailers = Some(trailers.clone());
                    }
                }
            }
            Poll::Ready(None) => this.complete(),
            Poll::Ready(Some(Err(_))) => {
                if let Some(info) = this.info.as_mut() {
                    info.response_flags.insert(ResponseFlags::UPSTREAM_REMOTE_RESET);
                    info.reset_after_response_started = true;
                }
                this.complete();
            }
            Poll::Pending => {
                if let Poll::Ready(e) = this.poll_timers(cx) {
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::H1(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream(body) => body.size_hint(),
            Inner::H1(body) => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // The client went away before the end: Envoy logs the request with DC.
        if self.info.is_some() && !self.is_end_stream() {
            if let Some(info) = self.info.as_mut() {
                info.response_flags
                    .insert(ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
            }
        }
        self.complete();
    }
}
