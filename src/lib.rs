//! tickrelay: a market-data relay. A UDP multicast feed comes in; sequenced,
//! decoded quotes go out to browsers and programs over WebSocket, Server-Sent
//! Events, long polling and short polling.
//!
//! # Layout
//!
//! Data flows one way: feed → table → clients. Clients never touch the
//! ingest path, and the ingest path never waits on a client. Imports flow
//! one way too: `tests/architecture.rs` fails on a module cycle.
//!
//! | module | owns |
//! |---|---|
//! | [`price`] | fixed-point prices (1/10,000), exact decimal text |
//! | [`wire`] | the feed packet and message codec; pure, shared with the simulator |
//! | [`retransmit`] | gap repair: the request, the packet history and its server |
//! | [`feed`] | sockets, batching receive, the [`feed::sequencer`], feed status |
//! | [`nats`] | the feed through NATS JetStream: the bridge's publisher, the stream line |
//! | [`kinds`] | the shared kinds: transport, slow reason, limit, feed status, drop reason (a leaf) |
//! | [`table`] | latest state per symbol, lock-free reads, the quote shape, the change listener |
//! | [`fanout`] | the hub: subscriptions, conflation, waking writers, shared encodings |
//! | [`transport`] | one module per delivery paradigm |
//! | [`api`] | what the transports share: state, errors and their codes, auth, content negotiation |
//! | [`http`] | the router and its layers, health, metrics endpoint, the page |
//! | [`metrics`] | every metric, named in one place |
//! | [`limits`] | connection caps and operation rates |
//! | [`config`] | settings from flags, environment and file, validated once |
//! | [`raw_stream`] | SSE responses written straight to the socket, off hyper's buffers |
//! | [`server`] | assembling and running the relay, graceful shutdown |
//! | [`sim`] | the market simulator engine behind `feed-simulator` and `demo` |
//! | [`zipf`] | the Zipf sampler the simulator and the load generator share |
//! | [`procfs`] | a process's CPU time, memory and file descriptors from `/proc` |
//! | [`load`] | the subscriber load generator behind `tickrelay load`: flags, clients, stats, report |
//! | [`tap`] | what the lab watches of a load client: socket bytes, quotes seen |
//! | [`lab`] | `tickrelay lab`: every transport measured on the same watchlists |
//!
//! See docs/ARCHITECTURE.md for the data flow in prose.

pub mod api;
pub mod config;
pub mod fanout;
pub mod feed;
pub mod http;
pub mod kinds;
pub mod lab;
pub mod limits;
pub mod load;
pub mod metrics;
pub mod nats;
pub mod price;
pub mod procfs;
pub mod raw_stream;
pub mod retransmit;
pub mod server;
pub mod sim;
pub mod table;
pub mod tap;
pub mod transport;
pub mod wire;
pub mod zipf;
