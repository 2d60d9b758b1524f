//! HTTP: the connection manager, the router and upstream pools.

pub mod body;
pub mod h1_client;
pub mod h1_server;
pub mod h1_wire;
pub mod h2_conn;
pub mod h2_frame;
pub mod h2_server;
pub mod headers;
pub mod hpack;
mod hpack_huffman;
pub mod idle;
pub mod local_reply;
pub mod proxy;
pub mod server;
pub mod upstream;

/// `make()`'s value in a heap allocation made before `make` runs, so the
/// optimiser can build the value in place. `Box::new(make())` builds it on
/// the stack and then copies every byte of it into the box: for a request's
/// proxy future (kilobytes, most of them not yet used) that copy was the
/// largest single memcpy of an h2c request.
#[inline(always)]
pub(crate) fn boxed_in_place<T>(make: impl FnOnce() -> T) -> Box<T> {
    Box::write(Box::new_uninit(), make())
}

/// A response with this status has no body, whatever its fields say: 1xx,
/// 204 and 304 (RFC 9110 §15.2, §15.3.5, §15.4.5; RFC 9112 §6.3). Each
/// codec frames (or does not frame) a response by it.
pub(crate) fn status_has_no_body(status: http::StatusCode) -> bool {
    status.is_informational()
        || status == http::StatusCode::NO_CONTENT
        || status == http::StatusCode::NOT_MODIFIED
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    #[test]
    fn statuses_without_a_body() {
        for (status, none) in [
            (100, true),
            (101, true),
            (103, true),
            (200, false),
            (204, true),
            (205, false),
            (304, true),
            (404, false),
        ] {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(super::status_has_no_body(status), none, "{status}");
        }
    }
}
