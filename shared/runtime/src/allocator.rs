//! The memory allocator's one tuned setting. Every service allocates with mimalloc
//! (`#[global_allocator]` in each `main.rs`), whose version 3 keeps the pages a burst
//! freed for a second (`purge_delay`, 1,000 ms; ten times that for whole arenas) before
//! giving them back to the system. Under a backlog the dispatcher frees and reallocates
//! a chunk's worth of deliveries many times a second, so that second of kept pages was
//! 8 to 10 MiB of its peak RSS (docs/BENCHMARKS.md). 100 ms keeps the reuse of hot pages
//! (0 cost it CPU: a system call per freed page) and returns the rest soon.
//!
//! `MIMALLOC_PURGE_DELAY` in the environment still decides, when it is set.

use std::ffi::{c_int, c_long};

/// How long freed pages are kept before they are returned to the system.
pub const PURGE_DELAY_MS: c_long = 100;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, mimalloc 3.x as
/// vendored by libmimalloc-sys 0.1.49; `the_purge_delay_option_is_the_one_set` checks it).
const MI_OPTION_PURGE_DELAY: c_int = 15;

// The two functions of mimalloc's stable C API this needs; libmimalloc-sys declares
// them only behind a feature whose dependency is not vendored here.
unsafe extern "C" {
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// Sets the purge delay to [`PURGE_DELAY_MS`] unless the environment set one.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: plain setter of a global option, safe from any thread at any time; the
    // index is mimalloc's own enum value (checked by the test below).
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// The purge delay in force, for the start-up log.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: plain getter of a global option.
    unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    /// Links mimalloc into this test binary, as every service's global allocator does.
    use mimalloc as _;

    /// The option at this index is mimalloc's purge delay: it starts at its documented
    /// default of 1,000 ms (unless the environment set it), and `tune` sets it.
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(super::purge_delay_ms(), 1000);
            super::tune();
            assert_eq!(super::purge_delay_ms(), super::PURGE_DELAY_MS);
        }
    }
}
