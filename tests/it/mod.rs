pub mod config_load;
pub mod conformance;
pub mod proxy;
pub mod support;
pub mod wire_compat;
