//! The WebSocket client with permessage-deflate (`--deflate`). tungstenite
//! refuses a frame with RSV1 set, so this client speaks the little of
//! RFC 6455 a subscriber needs: the handshake offering the extension,
//! masked text frames out, the relay's frames in (fragments joined, a
//! compressed message inflated with the relay's own inflater), a pong for
//! each ping. What it reads is then counted as the tungstenite client's is.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ws::{on_binary, on_text, subscribe_op};
use super::{ClientEnd, Setup};
use crate::deflate::Inflater;
use crate::tools::load::args::LoadTransport;
use crate::tools::load::conn::{Conn, short};
use crate::tools::load::stats::Shared;

/// Largest message accepted, inflated or not.
const MAX_MESSAGE: usize = 16 << 20;
/// Largest response head accepted.
const MAX_HEAD: usize = 16 << 10;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

pub(super) async fn client<S: Conn>(
    shared: &Shared,
    id: usize,
    mut stream: S,
    symbols: &[String],
    setup: &mut Setup<'_>,
) -> ClientEnd {
    let args = &shared.args;
    let io = |what: &str, e: std::io::Error| format!("ws {what}: {}", short(&e.to_string()));
    let mut head = format!(
        "GET /v1/ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n",
        shared.target.authority
    );
    if let Some(auth) = shared.target.bearer.as_deref() {
        head.push_str(&format!("Authorization: {auth}\r\n"));
    }
    if args.transport == LoadTransport::WsMsgpack {
        head.push_str("Sec-WebSocket-Protocol: tickrelay.msgpack\r\n");
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| io("handshake", e))?;

    let mut buf = Vec::with_capacity(8 * 1024);
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_HEAD || read_more(&mut stream, &mut buf).await? == 0 {
            return Err("ws handshake: no response head".into());
        }
    };
    let response = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = response.split(' ').nth(1).unwrap_or("");
    if status != "101" {
        return Err(format!("ws handshake: HTTP {status}"));
    }
    let Some(extension) = response
        .lines()
        .find_map(|l| l.strip_prefix("sec-websocket-extensions:"))
        .filter(|v| v.contains("permessage-deflate"))
    else {
        return Err("ws handshake: permessage-deflate declined".into());
    };
    let mut inflater = Inflater::new(!extension.contains("server_no_context_takeover"));
    buf.drain(..end);

    if symbols.is_empty() {
        setup.ready();
    } else {
        let op = subscribe_op(shared, symbols);
        stream
            .write_all(&masked(TEXT, op.as_bytes(), id))
            .await
            .map_err(|e| io("subscribe", e))?;
        shared.request(id);
    }

    let mut scratch = Vec::new();
    // A message in fragments: its opcode, whether compressed, its payload.
    let mut message: Option<(u8, bool, Vec<u8>)> = None;
    loop {
        let Some(frame) = parse(&buf)? else {
            if read_more(&mut stream, &mut buf).await? == 0 {
                return Err("eof".into());
            }
            continue;
        };
        let payload = &buf[frame.payload.clone()];
        match frame.opcode {
            PING => {
                let pong = masked(PONG, payload, id);
                stream.write_all(&pong).await.map_err(|e| io("pong", e))?;
            }
            CLOSE => {
                let code = payload
                    .get(..2)
                    .map_or(1005, |c| u16::from_be_bytes([c[0], c[1]]));
                return Err(format!("close {code}"));
            }
            PONG => {}
            opcode => {
                let (kind, compressed, mut body) = match (opcode, message.take()) {
                    (0, Some(started)) => started,
                    (TEXT | BINARY, None) => (opcode, frame.rsv1, Vec::new()),
                    _ => return Err("ws: frame out of order".into()),
                };
                body.extend_from_slice(payload);
                if body.len() > MAX_MESSAGE {
                    return Err("ws: message too large".into());
                }
                if !frame.fin {
                    message = Some((kind, compressed, body));
                } else {
                    if compressed {
                        body = inflater
                            .message(&body, MAX_MESSAGE)
                            .map_err(|e| format!("ws: inflate: {e:?}"))?;
                    }
                    match kind {
                        TEXT => on_text(shared, id, setup, &body),
                        _ => on_binary(shared, id, setup, &body, &mut scratch),
                    }
                }
            }
        }
        buf.drain(..frame.len);
    }
}

async fn read_more<S: Conn>(stream: &mut S, buf: &mut Vec<u8>) -> Result<usize, String> {
    let mut chunk = [0u8; 8 * 1024];
    let n = stream
        .read(&mut chunk)
        .await
        .map_err(|e| format!("error: {}", short(&e.to_string())))?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// One frame from the relay at the start of `buf`.
#[derive(Debug, PartialEq, Eq)]
struct Frame {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    payload: std::ops::Range<usize>,
    /// Bytes the whole frame takes.
    len: usize,
}

/// The frame at the start of `buf`; `None` until it is all there. A
/// masked frame (a server never masks) or an oversized one is an error.
fn parse(buf: &[u8]) -> Result<Option<Frame>, String> {
    let [b0, b1, ..] = *buf else { return Ok(None) };
    if b1 & 0x80 != 0 {
        return Err("ws: a masked frame from the server".into());
    }
    let (len, at) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => {
            let n = u64::from_be_bytes(buf[2..10].try_into().unwrap());
            (usize::try_from(n).unwrap_or(usize::MAX), 10)
        }
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    if len > MAX_MESSAGE {
        return Err("ws: frame too large".into());
    }
    if buf.len() < at + len {
        return Ok(None);
    }
    Ok(Some(Frame {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode: b0 & 0x0f,
        payload: at..at + len,
        len: at + len,
    }))
}

/// A client's frame: final, masked (the key from the client's id).
fn masked(opcode: u8, payload: &[u8], id: usize) -> Vec<u8> {
    let key = (id as u32).wrapping_mul(0x9E37_79B9).to_be_bytes();
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_read_once_whole_and_masked_ones_refused() {
        let frame = [0xC1, 3, b'a', b'b', b'c', 0x81];
        for cut in 0..5 {
            assert_eq!(parse(&frame[..cut]), Ok(None), "{cut} bytes");
        }
        assert_eq!(
            parse(&frame),
            Ok(Some(Frame {
                fin: true,
                rsv1: true,
                opcode: TEXT,
                payload: 2..5,
                len: 5,
            }))
        );
        let mut long = vec![0x02, 126, 0x01, 0x00];
        long.extend(std::iter::repeat_n(7, 256));
        assert_eq!(parse(&long).unwrap().unwrap().payload, 4..260);
        assert!(parse(&[0x81, 0x81, 0, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn a_masked_frame_unmasks_to_its_payload() {
        let out = masked(TEXT, b"hello", 7);
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x80 | 5);
        let key = &out[2..6];
        let plain: Vec<u8> = out[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[i % 4])
            .collect();
        assert_eq!(plain, b"hello");
    }
}
