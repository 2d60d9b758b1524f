//! Real clients over loopback sockets against an in-process mock: one test
//! binary, one link step.

mod it;
