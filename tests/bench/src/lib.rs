//! `portico-bench`: measures Portico against this machine's own limits, through
//! Portico's public APIs only, and prints every figure with the machine it ran on.
//!
//! ```text
//! cargo build --release --workspace
//! target/release/portico-bench --start webhooks --endpoints 1 --events 100000
//! target/release/portico-bench --gateway http://127.0.0.1:8080 --jwt-secret .. --service-token .. latency
//! ```
//!
//! # Layout
//! - [`cli`]: the command line, and running a scenario from it.
//! - [`system`]: the system under test: a running gateway, or the three binaries
//!   started with a fresh database and stream prefix (`--start`).
//! - [`sink`]: the loopback HTTP receiver of deliveries (counts, deduplicates,
//!   measures latency; reports its own CPU).
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
pub mod machine;
pub mod report;
pub mod scenarios;
pub mod sink;
pub mod system;
