//! WebSocket and SSE end to end: the real relay over loopback, fed by
//! packets this test writes (exact prices) or by the real feed-simulator.
//! The relay runs in this process ([`support::Relay::in_process`]); one
//! test spawns the binary, for what only a process has (its memory).
//! One test binary, a file per concern: ws.rs (WebSocket), sse.rs
//! (Server-Sent Events), guards.rs (what protects the relay from its
//! clients: memory, limits, auth, idle peers, shutdown); this file holds
//! the clients they share.

use crate::support;

mod guards;
mod sse;
mod ws;

use support::{FeedWriter, now_ns};

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tickrelay::price::Price;
use tickrelay::wire::Message;
use tokio_tungstenite::tungstenite::Message as WsMsg;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn price(n: i64) -> String {
    Price(n).to_string()
}

async fn connect(base: &str, protocol: Option<&str>) -> Ws {
    let url = format!("{}/v1/ws", base.replace("http://", "ws://"));
    let mut req = url.into_client_request().unwrap();
    if let Some(p) = protocol {
        req.headers_mut()
            .insert("sec-websocket-protocol", p.parse().unwrap());
    }
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket connect");
    ws
}

async fn send_json(ws: &mut Ws, v: Value) {
    ws.send(WsMsg::text(v.to_string())).await.unwrap();
}

/// Next data frame as JSON (MessagePack frames are decoded to the same value).
async fn next_frame(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.ok()??.ok()?;
        match msg {
            WsMsg::Text(t) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            WsMsg::Binary(b) => return Some(rmp_serde::from_slice(&b).unwrap()),
            WsMsg::Close(_) => return None,
            _ => continue,
        }
    }
}

/// Reads frames until one of `kind` arrives.
async fn frame_of(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let f = next_frame(ws, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("no `{kind}` frame"));
        if f["type"] == kind {
            return f;
        }
    }
}

/// The close frame's code, reading past anything else.
async fn close_code(ws: &mut Ws, within: Duration) -> Option<(u16, String)> {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(WsMsg::Close(Some(f))))) => {
                return Some((u16::from(f.code), f.reason.to_string()));
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

/// A relay on a fresh group with a directory of `symbols` applied.
async fn relay_with(symbols: &[&str], extra: &[&str]) -> (support::Relay, FeedWriter) {
    let group = support::FeedAddr::unique();
    let mut args = vec!["--feed-a".to_string(), group.to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let relay = support::Relay::in_process(&args);
    let mut producer = FeedWriter::new(group, "STREAMT");
    producer.list(symbols);
    relay.wait_ready();
    (relay, producer)
}

/// A relay with a 1 s write timeout whose feed has listed 50 symbols, for
/// the tests of a client that stops reading.
fn slow_reader_relay(session: &str) -> (support::Relay, support::FeedAddr) {
    let group = support::FeedAddr::unique();
    let relay = support::Relay::in_process(&[
        "--feed-a".to_string(),
        group.to_string(),
        "--write-timeout-ms".into(),
        "1000".into(),
    ]);
    support::run_simulator(&[
        "--group",
        &group.to_string(),
        "--symbols",
        "50",
        "--count",
        "10",
        "--session",
        session,
    ]);
    relay.wait_ready();
    (relay, group)
}

/// Up to 8 s of feed at 100,000 msg/s on `group`: enough to fill a socket
/// nobody reads. Stopped when dropped: a test is done with it once the
/// stalled client is dropped.
fn flood(group: support::FeedAddr, session: &str) -> support::KillOnDrop {
    support::KillOnDrop(support::spawn_simulator(&[
        "--group",
        &group.to_string(),
        "--symbols",
        "50",
        "--duration",
        "8",
        "--rate",
        "100000",
        "--session",
        session,
    ]))
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "tickrelay-test-{}-{}",
        std::process::id(),
        now_ns()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Reads SSE events from a raw HTTP/1.1 connection.
pub(crate) struct SseReader {
    reader: BufReader<TcpStream>,
}

#[derive(Debug, Default, Clone)]
pub(crate) struct SseEvent {
    pub(crate) id: Option<String>,
    pub(crate) event: String,
    pub(crate) data: String,
}

impl SseReader {
    pub(crate) fn open(base: &str, path: &str, last_event_id: Option<&str>) -> (u16, Self) {
        let addr = base.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut reader = BufReader::new(s);
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        let code: u16 = status.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut chunked = false;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line
                .to_ascii_lowercase()
                .starts_with("transfer-encoding: chunked")
            {
                chunked = true;
            }
            if line == "\r\n" {
                break;
            }
        }
        assert!(code != 200 || chunked, "SSE streams are chunked");
        (code, SseReader { reader })
    }

    /// The next line of the event stream, de-chunked.
    fn line(&mut self, buf: &mut Vec<u8>) -> Option<String> {
        loop {
            if let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                return Some(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
            }
            let mut size = String::new();
            if self.reader.read_line(&mut size).ok()? == 0 {
                return None;
            }
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                return None;
            }
            let mut chunk = vec![0; n + 2];
            self.reader.read_exact(&mut chunk).ok()?;
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub(crate) fn next_event(&mut self, buf: &mut Vec<u8>) -> Option<SseEvent> {
        let mut ev = SseEvent::default();
        loop {
            let line = self.line(buf)?;
            if line.is_empty() {
                if !ev.event.is_empty() || !ev.data.is_empty() {
                    return Some(ev);
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("id: ") {
                ev.id = Some(v.to_owned());
            } else if let Some(v) = line.strip_prefix("event: ") {
                ev.event = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                ev.data.push_str(v);
            }
        }
    }

    pub(crate) fn event_of(&mut self, buf: &mut Vec<u8>, kind: &str) -> SseEvent {
        loop {
            let ev = self
                .next_event(buf)
                .unwrap_or_else(|| panic!("stream ended before `{kind}`"));
            if ev.event == kind {
                return ev;
            }
        }
    }
}

/// What a `ticks` frame's promise demands: for each symbol, the newest change
/// sent at or below the envelope's `seq` has been delivered by then.
fn assert_promise_kept(sent: &[(u64, &str)], seen: &HashMap<String, u64>, promise: u64) {
    for (seq, sym) in sent.iter().rev().filter(|(s, _)| *s <= promise) {
        let have = seen.get(*sym).copied().unwrap_or(0);
        assert!(
            have >= *seq,
            "envelope seq {promise} promises {sym}@{seq}, delivered only up to {have}"
        );
    }
}
