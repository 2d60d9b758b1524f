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
