pub mod config_load;
pub mod conformance;
pub mod support;
pub mod wire_compat;
