//! HTTP: the connection manager, the router and upstream pools.

pub mod body;
pub mod h1_client;
pub mod h1_server;
pub mod h1_wire;
pub mod headers;
pub mod idle;
pub mod local_reply;
pub mod proxy;
pub mod server;
pub mod upstream;
