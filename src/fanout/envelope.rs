//! Envelopes built from pre-encoded quotes: `ticks`, `snapshot` and SSE
//! data in JSON and MessagePack, by concatenating the shared bytes of the
//! encoding cache. No quote is serialized here.

use std::sync::Arc;

use bytes::{BufMut, Bytes};

use super::{Encoded, Format};

fn json_quotes(out: &mut Vec<u8>, quotes: &[Arc<Encoded>]) {
    out.put_u8(b'[');
    for (i, q) in quotes.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.extend_from_slice(&q.json);
    }
    out.put_u8(b']');
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Session ids and codes are plain ASCII; serde_json escapes anyway.
    out.extend_from_slice(&serde_json::to_vec(s).unwrap_or_default());
}

fn capacity(quotes: &[Arc<Encoded>]) -> usize {
    96 + quotes.iter().map(|q| q.json.len() + 1).sum::<usize>()
}

/// `{<type>"seq":N,<"session":"…",>"quotes":[…]}`: every JSON envelope.
fn json(kind: Option<&str>, seq: u64, session: Option<&str>, quotes: &[Arc<Encoded>]) -> Bytes {
    let mut out = Vec::with_capacity(capacity(quotes));
    json_into(&mut out, kind, seq, session, quotes);
    Bytes::from(out)
}

fn json_into(
    out: &mut Vec<u8>,
    kind: Option<&str>,
    seq: u64,
    session: Option<&str>,
    quotes: &[Arc<Encoded>],
) {
    out.put_u8(b'{');
    if let Some(kind) = kind {
        out.extend_from_slice(b"\"type\":");
        json_str(out, kind);
        out.put_u8(b',');
    }
    out.extend_from_slice(b"\"seq\":");
    out.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
    if let Some(session) = session {
        out.extend_from_slice(b",\"session\":");
        json_str(out, session);
    }
    out.extend_from_slice(b",\"quotes\":");
    json_quotes(out, quotes);
    out.put_u8(b'}');
}

/// A WebSocket `ticks` payload in `format`, appended to `out`: the
/// sweep's path, which builds every frame in one reused buffer.
pub fn ws_ticks_into(out: &mut Vec<u8>, format: Format, seq: u64, quotes: &[Arc<Encoded>]) {
    match format {
        Format::Json => json_into(out, Some("ticks"), seq, None, quotes),
        Format::Msgpack => msgpack_into(
            out,
            &[
                ("type", MsgpackValue::Str("ticks")),
                ("seq", MsgpackValue::Uint(seq)),
            ],
            quotes,
        ),
    }
}

/// `{"type":"ticks","seq":N,"quotes":[…]}` (WebSocket, JSON).
pub fn ws_ticks_json(seq: u64, quotes: &[Arc<Encoded>]) -> Bytes {
    json(Some("ticks"), seq, None, quotes)
}

/// `{"type":"snapshot","seq":N,"session":"…","quotes":[…]}` (WebSocket, JSON).
pub fn ws_snapshot_json(seq: u64, session: &str, quotes: &[Arc<Encoded>]) -> Bytes {
    json(Some("snapshot"), seq, Some(session), quotes)
}

/// `{"seq":N,"quotes":[…]}` (SSE `tick` data), appended to `out`.
pub fn tick_json_into(out: &mut Vec<u8>, seq: u64, quotes: &[Arc<Encoded>]) {
    json_into(out, None, seq, None, quotes)
}

/// `{"seq":N,"quotes":[…]}` (SSE `tick` data).
pub fn tick_json(seq: u64, quotes: &[Arc<Encoded>]) -> Bytes {
    json(None, seq, None, quotes)
}

/// `{"seq":N,"session":"…","quotes":[…]}` (snapshot, poll answer, SSE `snapshot`).
pub fn snapshot_json(seq: u64, session: &str, quotes: &[Arc<Encoded>]) -> Bytes {
    json(None, seq, Some(session), quotes)
}

/// A MessagePack map with `fields` scalar entries, then `"quotes": [...]`.
fn msgpack(fields: &[(&str, MsgpackValue<'_>)], quotes: &[Arc<Encoded>]) -> Bytes {
    let mut out = Vec::with_capacity(64 + quotes.len() * 128);
    msgpack_into(&mut out, fields, quotes);
    Bytes::from(out)
}

fn msgpack_into(out: &mut Vec<u8>, fields: &[(&str, MsgpackValue<'_>)], quotes: &[Arc<Encoded>]) {
    let _ = rmp::encode::write_map_len(out, fields.len() as u32 + 1);
    for (k, v) in fields {
        let _ = rmp::encode::write_str(out, k);
        match v {
            MsgpackValue::Str(s) => {
                let _ = rmp::encode::write_str(out, s);
            }
            MsgpackValue::Uint(n) => {
                let _ = rmp::encode::write_uint(out, *n);
            }
        }
    }
    let _ = rmp::encode::write_str(out, "quotes");
    let _ = rmp::encode::write_array_len(out, quotes.len() as u32);
    for q in quotes {
        out.extend_from_slice(q.msgpack());
    }
}

enum MsgpackValue<'a> {
    Str(&'a str),
    Uint(u64),
}

/// WebSocket `ticks`, MessagePack.
pub fn ws_ticks_msgpack(seq: u64, quotes: &[Arc<Encoded>]) -> Bytes {
    msgpack(
        &[
            ("type", MsgpackValue::Str("ticks")),
            ("seq", MsgpackValue::Uint(seq)),
        ],
        quotes,
    )
}

/// WebSocket `snapshot`, MessagePack.
pub fn ws_snapshot_msgpack(seq: u64, session: &str, quotes: &[Arc<Encoded>]) -> Bytes {
    msgpack(
        &[
            ("type", MsgpackValue::Str("snapshot")),
            ("seq", MsgpackValue::Uint(seq)),
            ("session", MsgpackValue::Str(session)),
        ],
        quotes,
    )
}

/// `{"seq","session","quotes"}` as MessagePack.
pub fn snapshot_msgpack(seq: u64, session: &str, quotes: &[Arc<Encoded>]) -> Bytes {
    msgpack(
        &[
            ("seq", MsgpackValue::Uint(seq)),
            ("session", MsgpackValue::Str(session)),
        ],
        quotes,
    )
}
