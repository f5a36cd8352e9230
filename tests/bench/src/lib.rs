//! `portico-bench`: measures Portico against this machine's own limits, through
//! Portico's public APIs only, and prints every figure with the machine it ran on.
//!
//! ```text
//! cargo build --release --workspace
//! target/release/portico-bench --start webhooks --endpoints 1 --events 100000
//! target/release/portico-bench --gateway http://127.0.0.1:8080 --jwt-secret .. --service-token .. latency
//! # the same with 10 live-update WebSocket subscribers attached to the measured phase
//! target/release/portico-bench --start --subscribers 10 webhooks --endpoints 1 --mode single
//! ```
//!
//! `--subscribers N` (global, default 0): before the measured phase of `webhooks` and
//! `latency`, the bench opens N WebSocket connections to `GET /api/live` as the phase's
//! owner (the user whose webhooks receive the events), subscribes each to `deliveries`
//! and waits for every `subscribed` reply; after the phase it waits (at most 3 s without
//! a new message) until each has heard of every delivery or been told by a `lagged`
//! notice how many it missed, and reports per subscriber the delivery messages received
//! and missed, whether it was closed early, and the reading thread's CPU. More than 16
//! subscribers need the gateway's `PORTICO_LIVE_MAX_CONNECTIONS_PER_USER` raised (done
//! for a system the bench starts). Analytics rollups have no switch: they are always on.
//!
//! # Layout
//! - [`cli`]: the command line, and running a scenario from it.
//! - [`system`]: the system under test: a running gateway, or the three binaries
//!   started with a fresh database and stream prefix (`--start`).
//! - [`sink`]: the loopback HTTP receiver of deliveries (counts, deduplicates,
//!   measures latency; reports its own CPU).
//! - [`live`]: live-update WebSocket subscribers attached during a phase.
//! - [`client`]: the load client (raw hyper HTTP/1.1 keep-alive), closed and open loop.
//! - [`scenarios`]: `limits`, `webhooks`, `latency`, `bulk`, `credentials`, `gateway`,
//!   `rss`, and `smoke` (a seconds-long run of the first three, in the test suite).
//! - [`report`], [`machine`], [`cpu`], [`hist`]: figures, the machine, where the CPU
//!   went, and a log-linear latency histogram.
//!
//! Benchmarks are not tests: nothing here fails on a missed target; the smoke test
//! only checks that figures come out and every delivery arrives.

pub mod cli;
pub mod client;
pub mod cpu;
pub mod hist;
pub mod live;
pub mod machine;
pub mod report;
pub mod scenarios;
pub mod sink;
pub mod system;
