//! The integration tests: one test binary, a module per concern.
//!
//! One binary rather than one per file: each integration test binary links
//! the whole relay and its dependencies, and compiles its own copy of
//! `support`, so on two cores a binary per file cost minutes of build. The
//! tests keep their names under their module: `cargo test --release --test
//! it polling::` runs the long-poll tests, `cargo test --release --test it
//! streaming::ws::` the WebSocket ones.
//!
//! A new concern is a file here and one `mod` line below; its helpers come
//! from [`support`] (`use crate::support;`). `tests/architecture.rs` stays
//! a binary of its own: it reads the sources, and refuses a test file
//! outside this one (see its `integration_tests_are_one_binary`).

mod support;

mod book;
mod book_feed;
mod browser;
mod chart;
mod chart_delayed;
mod chartstream;
mod dashboards;
mod deflate;
mod delayed;
mod deltas;
mod deploy;
mod edge;
mod failover;
mod fuzz_smoke;
mod hostile;
mod js_client;
mod jwks_reload;
mod lab;
mod load;
mod nats;
mod paused_time;
mod polling;
mod prometheus;
mod recovery;
mod repair;
mod simulator;
mod slow_clients;
mod spine;
mod streaming;
mod usage;
mod users;
mod ws_close;
