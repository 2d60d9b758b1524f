//! Body types: what the proxy sends downstream (an upstream body or a local
//! reply) and what it sends upstream (the downstream body, counted). Both
//! stream frame by frame; nothing is buffered whole.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::stream_info::StreamInfo;

/// A downstream request body on its way upstream; counts bytes for
/// `%BYTES_RECEIVED%`.
pub struct RequestBody {
    pub inner: Incoming,
    pub received: Arc<AtomicU64>,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll {
            if let Some(data) = frame.data_ref() {
                self.received.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
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

/// Called once when a response has been sent (or abandoned).
pub type OnComplete = Box<dyn FnOnce(StreamInfo) + Send>;

enum Inner {
    Upstream(Incoming),
    Full(Option<Bytes>),
}

/// A downstream response body. When it ends (or is dropped: client gone),
/// it completes the request's `StreamInfo` and hands it to `on_complete`
/// (access logs, stats).
pub struct ResponseBody {
    inner: Inner,
    info: Option<Box<StreamInfo>>,
    received: Option<Arc<AtomicU64>>,
    on_complete: Option<OnComplete>,
}

impl ResponseBody {
    pub fn full(bytes: Bytes) -> ResponseBody {
        ResponseBody {
            inner: Inner::Full((!bytes.is_empty()).then_some(bytes)),
            info: None,
            received: None,
            on_complete: None,
        }
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::full(Bytes::new())
    }

    pub fn upstream(body: Incoming) -> ResponseBody {
        ResponseBody {
            inner: Inner::Upstream(body),
            info: None,
            received: None,
            on_complete: None,
        }
    }

    /// Attaches the request's record; `on_complete` runs when the body ends.
    pub fn with_completion(
        mut self,
        info: StreamInfo,
        received: Option<Arc<AtomicU64>>,
        on_complete: OnComplete,
    ) -> Self {
        self.info = Some(Box::new(info));
        self.received = received;
        self.on_complete = Some(on_complete);
        self
    }

    fn complete(&mut self) {
        if let (Some(mut info), Some(done)) = (self.info.take(), self.on_complete.take()) {
            if let Some(r) = &self.received {
                info.bytes_received = r.load(Ordering::Relaxed);
            }
            info.end = Some(info.start.elapsed());
            done(*info);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let poll = match &mut this.inner {
            Inner::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
        };
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
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
                    info.response_flags
                        .insert(crate::stream_info::ResponseFlags::UPSTREAM_REMOTE_RESET);
                }
                this.complete();
            }
            Poll::Pending => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Full(b) => b.is_none(),
            Inner::Upstream(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Inner::Full(None) => SizeHint::with_exact(0),
            Inner::Upstream(body) => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // The client went away before the end: Envoy logs the request with DC.
        if self.info.is_some() && !self.is_end_stream() {
            if let Some(info) = self.info.as_mut() {
                info.response_flags
                    .insert(crate::stream_info::ResponseFlags::DOWNSTREAM_CONNECTION_TERMINATION);
            }
        }
        self.complete();
    }
}
