pub mod admin;
pub mod config_load;
pub mod conformance;
pub mod proxy;
pub mod streaming;
pub mod support;
pub mod timeouts;
pub mod wire_compat;
