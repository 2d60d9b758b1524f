//! Envoy's local replies: the status, body text and response flag Envoy
//! uses when it answers a request itself.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::body::ResponseBody;

/// Body of a 503 when the upstream connection failed (Envoy's wording).
pub fn connect_failure_body(reason: &str, transport_reason: Option<&str>) -> String {
    match transport_reason {
        Some(t) => format!(
            "upstream connect error or disconnect/reset before headers. reset reason: {reason}, transport failure reason: {t}"
        ),
        None => format!("upstream connect error or disconnect/reset before headers. reset reason: {reason}"),
    }
}

pub const NO_HEALTHY_UPSTREAM: &str = "no healthy upstream";
pub const UPSTREAM_TIMEOUT: &str = "upstream request timeout";

/// A local reply: `text/plain` when there is a body, as Envoy.
pub fn reply(status: StatusCode, body: &str) -> Response<ResponseBody> {
    let mut r = Response::new(if body.is_empty() {
        ResponseBody::empty()
    } else {
        ResponseBody::full(Bytes::copy_from_slice(body.as_bytes()))
    });
    *r.status_mut() = status;
    if !body.is_empty() {
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    }
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_wording() {
        assert_eq!(
            connect_failure_body("connection failure", Some("delayed connect error: 111")),
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: delayed connect error: 111"
        );
        let r = reply(StatusCode::SERVICE_UNAVAILABLE, NO_HEALTHY_UPSTREAM);
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(r.headers()["content-length"], "19");
        assert_eq!(
            reply(StatusCode::NOT_FOUND, "").headers().get("content-type"),
            None
        );
    }
}
