//! One module per delivery paradigm, and what the streaming ones share.
//! Each paradigm turns the table (and, for the streaming ones, the fan-out
//! hub) into its protocol and nothing more.
//!
//! | module | owns |
//! |---|---|
//! | [`snapshot`] | `/v1/snapshot`, `/v1/symbols`: short polling, ETag / 304 |
//! | [`chart`] | `/v1/bars/{symbol}`, `/v1/trades/{symbol}`: the chart and the tape over REST |
//! | [`book`] | `/v1/book/{symbol}`: a symbol's depth of book over REST, ETag / 304 |
//! | [`bookstream`] | a client's book subscriptions: snapshot, then diffs to what it holds; the `book` frames' encodings |
//! | [`poll`] | `/v1/poll`: long polling |
//! | [`sse`] | `/v1/stream`: Server-Sent Events |
//! | [`ws`] | `/v1/ws`: WebSocket, its client operations and close codes |
//! | [`wsframe`] | RFC 6455 framing: the relay's own frame reader and writer |
//! | [`wsdeflate`] | permessage-deflate on a connection: its compressor and what it holds |
//! | [`wsmsg`] | the server's WebSocket messages (subscribed, status, errors) |
//! | [`subscriptions`] | a client's subscription table and its drain into frames |
//! | [`writer`] | the write side of a streaming connection: batching, writing, backpressure |
//! | [`task`] | the connection's task: socket readiness, wake-ups, timers |
//! | [`pacer`] | pings and keep-alives from one task per kind |
//! | [`slow`] | slow and silent clients: the signals and their close reasons |
//! | [`user`] | a connection's user: identity, its slot among the user's connections, the token's expiry |
//! | [`kind`] | which transport, why closed as slow (a leaf: metrics labels by it) |

pub mod book;
pub mod bookstream;
pub mod chart;
pub mod chartstream;
pub mod kind;
pub mod pacer;
pub mod poll;
pub mod slow;
pub mod snapshot;
pub mod sse;
pub mod subscriptions;
pub mod task;
pub mod user;
pub mod writer;
pub mod ws;
pub mod wsdeflate;
pub mod wsframe;
pub mod wsmsg;
