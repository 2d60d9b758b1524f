//! Integration tests: one binary, one module per area under tests/it/.

mod it;
