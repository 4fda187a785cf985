//! The `deflate` target.

use rand::Rng;
use rand::rngs::SmallRng;
use tickrelay::deflate::{Deflater, Inflater, Mode, SmallDeflater, negotiate};
use tickrelay::transport::wsframe::{Incoming, Reader};

use super::sig;
use crate::engine::Target;

/// `deflate`: permessage-deflate as `/v1/ws` meets it. Inputs starting
/// with `H` are `Sec-WebSocket-Extensions` header lines (one per `\n`)
/// negotiated under each mode; others are client frames (RSV1 allowed)
/// read by the frame reader with an inflater, with and without context,
/// and the bytes inflated alone; the same bytes, cut in messages, go
/// through the small-window compressor and back.
///
/// Invariants: never a panic; `off` never agrees; an answer, offered back,
/// is agreed to as it is under `context` (under `small_context` for its
/// own answers); no message is longer than the limit, and a text message
/// is UTF-8; what the small-window compressor writes inflates to what it
/// was given, message after message.
pub struct DeflateTarget;

/// The limit of a message's size (`max_frame_bytes`) here.
const MAX: usize = 4096;

impl Target for DeflateTarget {
    fn name(&self) -> &'static str {
        "deflate"
    }

    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
        if rng.r#gen() {
            let params = [
                "server_no_context_takeover",
                "client_no_context_takeover",
                "server_max_window_bits=15",
                "server_max_window_bits=9",
                "server_max_window_bits",
                "client_max_window_bits",
                "client_max_window_bits=8",
                "client_max_window_bits=\"12\"",
                "client_max_window_bits=16",
                "x=\"a,b;c\"",
                "",
            ];
            let mut out = String::from("H");
            for _ in 0..rng.gen_range(1..4) {
                let mut offer = [
                    "permessage-deflate",
                    "x-webkit-deflate-frame",
                    "PERMESSAGE-DEFLATE",
                ][rng.gen_range(0..3)]
                .to_owned();
                for _ in 0..rng.gen_range(0..4) {
                    offer.push_str(["; ", ";", " ;"][rng.gen_range(0..3)]);
                    offer.push_str(params[rng.gen_range(0..params.len())]);
                }
                out.push_str(&offer);
                out.push_str([",", ", ", "\n"][rng.gen_range(0..3)]);
            }
            return out.into_bytes();
        }
        // Client frames: compressed messages, whole or fragmented, some
        // bombs, some bytes flipped.
        let mut out = Vec::new();
        let mut d = Deflater::default();
        for _ in 0..rng.gen_range(1..4) {
            let payload: Vec<u8> = match rng.gen_range(0..3) {
                0 => br#"{"op":"subscribe","symbols":["AAPL"]}"#.to_vec(),
                1 => vec![b' '; rng.gen_range(0..3 * MAX)],
                _ => (0..rng.gen_range(0..64)).map(|_| rng.r#gen()).collect(),
            };
            let mut body = Vec::new();
            d.message(&payload, &mut body, rng.r#gen());
            let split = rng.gen_range(0..=body.len());
            if rng.r#gen() {
                frame(&mut out, 0x41, &body);
            } else {
                frame(&mut out, 0x41, &body[..split]);
                frame(&mut out, 0x80, &body[split..]);
            }
        }
        for _ in 0..rng.gen_range(0..3) {
            if !out.is_empty() {
                let i = rng.gen_range(0..out.len());
                out[i] ^= 1 << rng.gen_range(0..8);
            }
        }
        out
    }

    fn run(&mut self, input: &[u8]) -> u64 {
        if let Some(header) = input.strip_prefix(b"H") {
            let text = String::from_utf8_lossy(header);
            let lines: Vec<&str> = text.split('\n').collect();
            assert_eq!(negotiate(Mode::Off, lines.iter().copied()), None);
            let mut s = vec![1];
            for mode in [Mode::NoContext, Mode::Context, Mode::SmallContext] {
                let agreed = negotiate(mode, lines.iter().copied());
                if let Some(a) = agreed {
                    let answer = a.response();
                    let again = match mode {
                        Mode::SmallContext => mode,
                        _ => Mode::Context,
                    };
                    let back = negotiate(again, [answer.as_str()]);
                    assert_eq!(back, Some(a), "{answer} offered back");
                }
                s.push(agreed.map_or(0, |a| 1 + u64::from(a.client_no_context)));
            }
            return sig(&s);
        }
        let mut s = vec![2];
        for context in [false, true] {
            let mut r = Reader::default();
            r.inflater = Some(Box::new(Inflater::new(context)));
            r.buf.extend_from_slice(input);
            for _ in 0..8 {
                match r.next(MAX) {
                    Ok(Some(Incoming::Text(t))) => {
                        assert!(t.len() <= MAX);
                        assert!(std::str::from_utf8(&t).is_ok());
                        s.push(10 + t.len().min(MAX) as u64 / 256);
                    }
                    Ok(Some(Incoming::Binary(b))) => {
                        assert!(b.len() <= MAX);
                        s.push(30);
                    }
                    Ok(Some(_)) => s.push(40),
                    Ok(None) => {
                        s.push(41);
                        break;
                    }
                    Err(e) => {
                        s.push(50 + super::fnv_str(&format!("{e:?}")) % 16);
                        break;
                    }
                }
            }
        }
        match Inflater::new(false).message(input, MAX) {
            Ok(out) => {
                assert!(out.len() <= MAX);
                s.push(60);
            }
            Err(e) => s.push(61 + u64::from(e == tickrelay::deflate::InflateError::TooBig)),
        }
        // The input's bytes as messages, cut where its bytes say.
        let bits = 8 + input.first().map_or(0, |b| b % 8);
        let mut small = SmallDeflater::new(bits);
        let mut back = Inflater::new(true);
        for message in input.split(|&b| b == b'}') {
            let mut out = Vec::new();
            small.message(message, &mut out, true);
            assert_eq!(back.message(&out, input.len()).as_deref(), Ok(message));
        }
        sig(&s)
    }
}

/// A masked client frame of the first byte `first` (FIN, RSV1, opcode).
fn frame(out: &mut Vec<u8>, first: u8, payload: &[u8]) {
    let mask = [0x12, 0x34, 0x56, 0x78];
    out.push(first);
    if payload.len() < 126 {
        out.push(0x80 | payload.len() as u8);
    } else if payload.len() <= 65_535 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}
