//! The subscriber load generator behind `tickrelay load`: N real clients of
//! one transport, each subscribed to K symbols, measuring what reaches them.
//!
//! A run has three phases: the ramp (clients connect at `--ramp` per second
//! and subscribe), a warm-up, and the measured window of `--duration`
//! seconds. Over the window it counts quotes delivered (quote objects in
//! tick frames; quotes in snapshots are counted apart, they are not news),
//! frames, bytes, connection errors and closes by code, and records the
//! tick-to-client latency — now minus the quote's exchange timestamp, both on
//! this host's clock — in an HDR histogram.
//!
//! Its own cost must stay small next to the server's, so quotes are never
//! fully decoded on the streaming transports: a JSON frame is scanned for
//! `"ts":` keys (one per quote; the key cannot occur unescaped inside a JSON
//! string) and a MessagePack frame is walked without building values.
//! Counters and histograms live in shards, so a frame costs one uncontended
//! lock. The report states the generator's own CPU time per million quotes
//! beside the server's (`--server-pid`).
//!
//! WebSocket clients use tokio-tungstenite; SSE, long polling and short
//! polling use hyper's HTTP/1.1 client, one keep-alive connection each.
//! `--source-ips N` binds client sockets to 127.0.0.1 … 127.0.0.N, so one
//! machine can open 100,000 connections (each source address has its own
//! ephemeral ports and its own per-address limit on the server).
//!
//! # Layout
//!
//! | module | owns |
//! |---|---|
//! | `args` | the `tickrelay load` flags |
//! | `symbols` | the symbol directory, each client's watchlist, the offered load |
//! | `conn` | the server's address, client sockets and source addresses, the HTTP/1.1 client |
//! | `client` | one client's life; one module per kind: `ws`, `sse`, `poll`, `snapshot` |
//! | `scan` | reading frames without decoding them: JSON `"ts":` keys, MessagePack envelopes |
//! | `stats` | the sharded counters and latency histograms, the state the clients share |
//! | `report` | what a run measured and cost, the text report |
//! | `run` | the run loop: ramp, warm-up, measured window |
//!
//! Symbols are drawn with [`crate::tools::zipf`], the simulator's own sampler; CPU
//! time and memory come from [`crate::procfs`]. With a [`crate::tools::tap::Tap`]
//! (the lab), each client's socket bytes and quotes are noted too.

mod args;
mod client;
mod conn;
mod report;
mod run;
mod scan;
mod stats;
mod symbols;

pub use args::{LoadArgs, LoadTransport, SymbolChoice};
pub use report::{Cost, Latency, Report, text_report};
pub use run::run;

pub(crate) use conn::target;
pub(crate) use run::drive_tapped;
pub(crate) use symbols::{directory, pick};
