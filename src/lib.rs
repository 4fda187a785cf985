//! tickrelay: a market-data relay. A UDP multicast feed comes in; sequenced,
//! decoded quotes go out to browsers and programs over WebSocket, Server-Sent
//! Events, long polling and short polling.
//!
//! # Layout
//!
//! Data flows one way: feed → table → fan-out → clients. Clients never touch
//! the ingest path, and the ingest path never waits on a client. Imports
//! flow one way too: `tests/architecture.rs` holds the table of allowed edges
//! between the groups below and fails on a module cycle.
//!
//! | group | module | owns |
//! |---|---|---|
//! | base | [`clock`] | the wall clock, read in one place (a leaf) |
//! | base | [`price`] | fixed-point prices (1/10,000), exact decimal text (a leaf) |
//! | base | [`procfs`] | a process's CPU time, memory and file descriptors from `/proc` (a leaf) |
//! | base | [`admission`] | who gets in: connection slots, operation rates, the [`admission::Limit`] that refused (a leaf) |
//! | base | [`auth`] | who a client is: JSON Web Tokens verified, their claims compiled into an [`auth::Entitlement`] (a leaf) |
//! | base | [`wire`] | the feed packet and message codec; pure, shared with the simulator |
//! | base | [`deflate`] | permessage-deflate (RFC 7692): the offers answered, the message codec; pure |
//! | metrics | [`metrics`] | every metric, named in one place, one file per domain |
//! | ingest | [`retransmit`] | gap repair: the request, the packet history and its server |
//! | ingest | [`nats`] | the feed through NATS JetStream: the bridge's publisher, the stream line |
//! | ingest | [`feed`] | sockets, batching receive, the [`feed::sequencer`], feed status ([`feed::status`], a leaf) |
//! | ingest | [`table`] | latest state per symbol, lock-free reads, the quote shape, the change listener; each symbol's trades and bars ([`table::chart`]) |
//! | config | [`config`] | settings from flags, environment and file, validated once |
//! | serve | [`fanout`] | the hub: subscriptions, conflation, waking writers, shared encodings |
//! | serve | [`transport`] | one module per delivery paradigm, the subscription table, the writer ([`transport::kind`], a leaf) |
//! | serve | [`api`] | what the transports share: state, errors and their codes, the door ([`api::Door`]: Origin, token, encoding) |
//! | serve | [`accept`] | the accept path for long-lived streams: SSE and WebSocket answered off hyper |
//! | serve | [`http`] | the router and its layers, health, metrics endpoint, the page |
//! | serve | [`usage`] | usage per user and UTC day: the recorder, its SQLite store, the monthly report |
//! | server | [`server`] | assembling and running the relay, graceful shutdown |
//! | tools | [`tools`] | simulator, load generator, lab, demo: they use the relay, never the reverse |
//!
//! A group imports only itself and the groups above it, and nothing imports
//! `tools`; a leaf imports nothing of the crate (tests/architecture.rs holds
//! the table and fails CI otherwise).
//!
//! See docs/ARCHITECTURE.md for the data flow in prose.

pub mod accept;
pub mod admission;
pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod deflate;
pub mod fanout;
pub mod feed;
pub mod http;
pub mod metrics;
pub mod nats;
pub mod price;
pub mod procfs;
pub mod retransmit;
pub mod server;
pub mod table;
pub mod tools;
pub mod transport;
pub mod usage;
pub mod wire;
