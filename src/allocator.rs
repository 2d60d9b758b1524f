//! Giving freed memory back after a large config change.
//!
//! Decoding and compiling a large xDS update (10,000 clusters) frees tens of
//! megabytes of transient objects. The allocator the binary installs
//! (mimalloc) keeps freed pages resident until that thread allocates again
//! after its purge delay; the xDS thread then sits idle and RSS stays high
//! (measured: ~1–2 KiB per cluster of the xDS scale benchmark). The library
//! cannot name the allocator (and forbids `unsafe`), so the binary registers
//! a hook here and the xDS manager calls [`release_soon`] after an update of
//! at least [`LARGE_UPDATE_BYTES`].

use std::sync::OnceLock;

/// Updates whose resources add up to this many bytes are worth a collection
/// afterwards (a few milliseconds at 10,000 clusters); smaller ones are not.
pub const LARGE_UPDATE_BYTES: usize = 256 * 1024;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Registers what returns freed memory to the OS (once per process; later
/// calls are ignored).
pub fn set_release(f: fn()) {
    let _ = RELEASE.set(f);
}

/// Runs the hook, if any, as a task of the current runtime, so that it runs
/// after the caller's work (an update's publish and ACK), not inside it.
pub fn release_soon() {
    let Some(f) = RELEASE.get().copied() else {
        return;
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn(async move { f() });
        }
        Err(_) => f(),
    }
}
