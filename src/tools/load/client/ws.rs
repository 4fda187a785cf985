//! The WebSocket client: `/v1/ws` with JSON or MessagePack frames, or
//! nchan's multiplexed subscriber.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use super::{ClientEnd, Setup};
use crate::tools::load::args::LoadTransport;
use crate::tools::load::conn::{Conn, short};
use crate::tools::load::scan::{Kind, json_kind, msgpack_is_snapshot};
use crate::tools::load::stats::Shared;

pub(super) async fn client<S: Conn>(
    shared: &Shared,
    id: usize,
    stream: S,
    symbols: &[String],
    setup: &mut Setup<'_>,
) -> ClientEnd {
    let args = &shared.args;
    if args.deflate {
        return super::wsdeflate::client(shared, id, stream, symbols, setup).await;
    }
    let path = match args.transport {
        LoadTransport::NchanWs => format!("{}{}", args.nchan_path, symbols.join(",")),
        _ => "/v1/ws".to_owned(),
    };
    let url = format!("ws://{}{}", shared.target.authority, path);
    let mut req = url
        .into_client_request()
        .map_err(|e| format!("ws: bad request: {e}"))?;
    if let Some(auth) = shared.target.bearer.as_deref()
        && let Ok(v) = hyper::header::HeaderValue::from_str(auth)
    {
        req.headers_mut().insert(hyper::header::AUTHORIZATION, v);
    }
    if args.transport == LoadTransport::WsMsgpack {
        req.headers_mut().insert(
            "sec-websocket-protocol",
            hyper::header::HeaderValue::from_static("tickrelay.msgpack"),
        );
    }
    // Small buffers: 100,000 of these must fit beside the server, and
    // tungstenite zero-fills the free part of its read buffer before every
    // read, so a big one costs a big memset per read.
    let read_buffer = if args.idle { 4 * 1024 } else { 8 * 1024 };
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(req, stream, Some(config))
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => {
                format!("ws handshake: HTTP {}", r.status().as_u16())
            }
            other => format!("ws handshake: {}", short(&other.to_string())),
        })?;
    let books = &symbols[..args.books.min(symbols.len())];
    if args.transport == LoadTransport::NchanWs || symbols.is_empty() {
        setup.ready();
    } else if args.chart {
        let one = &symbols[..1];
        let bars = serde_json::json!({"op": "subscribe", "channel": "bars", "interval": "1s", "symbols": one});
        let trades = serde_json::json!({"op": "subscribe", "channel": "trades", "symbols": one});
        for op in [bars, trades] {
            ws.send(Message::text(op.to_string()))
                .await
                .map_err(|e| format!("ws subscribe: {}", short(&e.to_string())))?;
        }
        shared.request(id);
    } else if args.books_only && !books.is_empty() {
        // Books alone: ready at their snapshots.
    } else {
        ws.send(Message::text(subscribe_op(shared, symbols)))
            .await
            .map_err(|e| format!("ws subscribe: {}", short(&e.to_string())))?;
        shared.request(id);
    }
    if args.transport != LoadTransport::NchanWs && !books.is_empty() {
        let op = serde_json::json!({"op": "subscribe", "channel": "book", "symbols": books, "depth": args.depth});
        ws.send(Message::text(op.to_string()))
            .await
            .map_err(|e| format!("ws subscribe books: {}", short(&e.to_string())))?;
        shared.request(id);
    }
    let mut scratch = Vec::new();
    loop {
        let msg = match ws.next().await {
            None => return Err("eof".into()),
            Some(Err(e)) => return Err(format!("error: {}", short(&e.to_string()))),
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Text(t) => on_text(shared, id, setup, t.as_bytes()),
            Message::Binary(b) => on_binary(shared, id, setup, &b, &mut scratch),
            Message::Close(frame) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                return Err(format!("close {code}"));
            }
            _ => {}
        }
    }
}

/// The subscribe op of the load's options.
pub(super) fn subscribe_op(shared: &Shared, symbols: &[String]) -> String {
    let args = &shared.args;
    let mut op = serde_json::json!({"op": "subscribe", "symbols": symbols});
    if let Some(mode) = &args.mode {
        op["mode"] = mode.clone().into();
    }
    if let Some(hz) = args.max_hz {
        op["max_hz"] = hz.into();
    }
    if let Some(ms) = args.batch_ms {
        op["batch_ms"] = ms.into();
    }
    if args.delta {
        op["delta"] = true.into();
    }
    op.to_string()
}

/// One JSON message from the relay: counted, and a snapshot makes the
/// client ready.
pub(super) fn on_text(shared: &Shared, id: usize, setup: &mut Setup<'_>, body: &[u8]) {
    if let Some(tap) = &shared.tap {
        tap.json(id, body);
    }
    let kind = json_kind(body);
    // A chart subscription's first frame is not a quote snapshot.
    if kind == Kind::Snapshot
        || kind == Kind::Book
        || (shared.args.chart && body.starts_with(b"{\"type\":\"subscribed\""))
    {
        setup.ready();
    } else if kind == Kind::Control {
        control_json(shared, body);
    }
    shared.json_frame(id, body.len(), body, kind);
}

/// One MessagePack message from the relay.
pub(super) fn on_binary(
    shared: &Shared,
    id: usize,
    setup: &mut Setup<'_>,
    body: &[u8],
    scratch: &mut Vec<u64>,
) {
    if let Some(tap) = &shared.tap {
        tap.msgpack(id, body);
    }
    if !setup.done && msgpack_is_snapshot(body) {
        setup.ready();
    }
    match shared.msgpack_frame(id, body, scratch).as_deref() {
        Some("book") => setup.ready(),
        Some(kind @ ("error" | "shutdown")) => shared.closed(format!("frame: {kind}")),
        _ => {}
    }
}

/// Notes error and shutdown frames: rare, so decoded in full.
fn control_json(shared: &Shared, body: &[u8]) {
    if body.starts_with(b"{\"type\":\"error\"") {
        let code = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        shared.closed(format!("frame: error {code}"));
    } else if body.starts_with(b"{\"type\":\"shutdown\"") {
        shared.closed("frame: shutdown");
    }
}
