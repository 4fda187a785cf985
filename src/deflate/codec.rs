//! Raw deflate of message payloads (RFC 7692 §7.2): compressed with a sync
//! flush and the trailing `00 00 ff ff` removed; inflated with those four
//! bytes put back, at most a limit of output, in bounded steps.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::{SMALL_WINDOW_BITS, SmallDeflater};

/// What a compressor holds, about: miniz_oxide's code buffer (64 KiB),
/// output buffer (83 KiB), dictionary (32 KiB), hash chains (2 × 64 KiB)
/// and Huffman tables.
pub const DEFLATER_BYTES: usize = 320 * 1024;
/// What an inflater holds, about: its 32 KiB window and Huffman tables.
pub const INFLATER_BYTES: usize = 44 * 1024;

/// The level: market data is small, repetitive JSON or MessagePack, where
/// the fastest level already takes most of the gain.
const LEVEL: u32 = 1;
/// What a sync flush ends with, removed from each message (§7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
/// The inflater's output grows by at most this much per step.
const STEP: usize = 16 * 1024;

/// A compressor of messages.
pub struct Deflater {
    c: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        Deflater {
            c: Compress::new(Compression::new(LEVEL), false),
        }
    }
}

impl Deflater {
    /// Appends `payload` compressed as the next message to `out`. With
    /// `context`, the window carries over from earlier messages; without,
    /// the message is compressed on its own.
    pub fn message(&mut self, payload: &[u8], out: &mut Vec<u8>, context: bool) {
        if !context {
            self.c.reset();
        }
        let start = out.len();
        let mut used = 0;
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(64 + (payload.len() - used) / 2);
            }
            let before = self.c.total_in();
            // A sync flush of bytes in memory: it cannot fail.
            let _ = self
                .c
                .compress_vec(&payload[used..], out, FlushCompress::Sync);
            used += (self.c.total_in() - before) as usize;
            if used == payload.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out[start..].ends_with(&TAIL) {
            out.truncate(out.len() - TAIL.len());
        }
    }
}

/// One thread's compressor for messages compressed on their own, and the
/// last message it compressed: the same bytes again for the same window
/// (the same frame for the next client of a sweep) reuse the result.
#[derive(Default)]
struct Alone {
    /// The small-window compressor and its window bits.
    small: Option<(u8, SmallDeflater)>,
    input: Vec<u8>,
    output: Vec<u8>,
}

thread_local! {
    static ALONE: RefCell<Alone> = RefCell::default();
}

/// Larger messages are not kept for reuse.
const KEEP_AT_MOST: usize = 256 * 1024;

/// Appends `payload` compressed on its own (no context) to `out`, with this
/// thread's compressor, so no connection holds one: the small compressor
/// ([`SmallDeflater`]), its matches within 2^`small_window` bytes, or
/// 2^[`SMALL_WINDOW_BITS`] when the client set no bound (any window up to
/// 32 KiB inflates it). A message alone is a few hundred bytes: the 32 KiB
/// window's compressor found 4–8% fewer bytes at ten times the CPU
/// (`cargo bench --bench deflate`, `no_context_32k` against `no_context`),
/// most of it in resetting its state for each message.
/// When the previous message compressed on this thread had the same bytes
/// and window, its compression is reused. Returns whether it was.
pub fn compress_alone(payload: &[u8], out: &mut Vec<u8>, small_window: Option<u8>) -> bool {
    let bits = small_window.unwrap_or(SMALL_WINDOW_BITS);
    ALONE.with_borrow_mut(|a| {
        let same_window = a.small.as_ref().is_some_and(|(b, _)| *b == bits);
        if !a.output.is_empty() && same_window && a.input == payload {
            out.extend_from_slice(&a.output);
            return true;
        }
        let start = out.len();
        if !same_window {
            a.small = Some((bits, SmallDeflater::new(bits)));
        }
        if let Some((_, small)) = a.small.as_mut() {
            small.message(payload, out, false);
        }
        a.input.clear();
        a.output.clear();
        if payload.len() <= KEEP_AT_MOST {
            a.input.extend_from_slice(payload);
            a.output.extend_from_slice(&out[start..]);
        } else {
            a.input = Vec::new();
            a.output = Vec::new();
        }
        false
    })
}

/// Why a compressed message is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the limit (nothing more was inflated).
    TooBig,
    /// It is not valid deflate data.
    Corrupt,
}

/// An inflater of a client's messages.
#[derive(Debug)]
pub struct Inflater {
    d: Option<Decompress>,
    /// The window carries over from message to message.
    context: bool,
}

impl Inflater {
    /// An inflater; with `context`, it keeps its window between messages,
    /// else it holds nothing between them.
    pub fn new(context: bool) -> Self {
        Inflater { d: None, context }
    }

    /// What it holds between messages, about.
    pub fn held_bytes(&self) -> usize {
        if self.d.is_some() { INFLATER_BYTES } else { 0 }
    }

    /// Inflates one message (its frames' payloads joined), at most `max`
    /// bytes of output: past that, [`InflateError::TooBig`] after at most
    /// one more step of output.
    pub fn message(&mut self, compressed: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
        let d = self.d.get_or_insert_with(|| Decompress::new(false));
        let result = inflate(d, compressed, max);
        if !self.context || !matches!(result, Ok((_, false))) {
            // On its own, at the stream's end, or failed: start afresh.
            if self.context {
                d.reset(false);
            } else {
                self.d = None;
            }
        }
        result.map(|(out, _)| out)
    }
}

/// Inflates `compressed` and the sync flush's tail; true if the deflate
/// stream ended (a final block).
fn inflate(
    d: &mut Decompress,
    compressed: &[u8],
    max: usize,
) -> Result<(Vec<u8>, bool), InflateError> {
    let mut out = Vec::new();
    for part in [compressed, &TAIL[..]] {
        let mut used = 0;
        loop {
            if out.len() == out.capacity() {
                let room = (max + 1).saturating_sub(out.len());
                if room == 0 {
                    return Err(InflateError::TooBig);
                }
                out.reserve_exact(room.min(STEP));
            }
            let (before_in, before_out) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(&part[used..], &mut out, FlushDecompress::Sync)
                .map_err(|_| InflateError::Corrupt)?;
            used += (d.total_in() - before_in) as usize;
            if out.len() > max {
                return Err(InflateError::TooBig);
            }
            if status == Status::StreamEnd {
                return Ok((out, true));
            }
            let room_left = out.len() < out.capacity();
            if used == part.len() && room_left {
                break;
            }
            if room_left && d.total_in() == before_in && d.total_out() == before_out {
                return Err(InflateError::Corrupt);
            }
        }
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_with_and_without_context() {
        let msgs: Vec<Vec<u8>> = (0..20)
            .map(|i| format!("{{\"type\":\"ticks\",\"seq\":{i},\"quotes\":[]}}").into_bytes())
            .chain([Vec::new(), vec![7u8; 100_000]])
            .collect();
        for context in [false, true] {
            let mut d = Deflater::default();
            let mut i = Inflater::new(context);
            let mut sizes = Vec::new();
            for m in &msgs {
                let mut out = Vec::new();
                d.message(m, &mut out, context);
                assert!(!out.ends_with(&TAIL));
                sizes.push(out.len());
                assert_eq!(&i.message(&out, 1 << 20).unwrap(), m);
            }
            assert_eq!(i.held_bytes() > 0, context);
            if context {
                assert!(sizes[5] < sizes[0], "the window carries over: {sizes:?}");
            }
        }
        for window in [None, Some(9), None] {
            let mut alone = Vec::new();
            assert!(!compress_alone(&msgs[3], &mut alone, window));
            let mut again = Vec::new();
            assert!(compress_alone(&msgs[3], &mut again, window));
            assert_eq!(alone, again);
            assert_eq!(Inflater::new(false).message(&again, 100).unwrap(), msgs[3]);
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit_and_garbage_is_refused() {
        let mut bomb = Vec::new();
        Deflater::default().message(&vec![b'a'; 50 << 20], &mut bomb, false);
        assert!(bomb.len() < 500_000, "{}", bomb.len());
        let mut i = Inflater::new(true);
        assert_eq!(i.message(&bomb, 64 * 1024), Err(InflateError::TooBig));
        // The window was reset: the next message inflates.
        let mut ok = Vec::new();
        Deflater::default().message(b"{\"op\":\"ping\"}", &mut ok, false);
        assert_eq!(i.message(&ok, 1024).unwrap(), b"{\"op\":\"ping\"}");
        assert_eq!(
            Inflater::new(false).message(&[0xff; 40], 1024),
            Err(InflateError::Corrupt)
        );
        for seed in 0..500u32 {
            let bytes: Vec<u8> = (0..64)
                .map(|k| (seed.wrapping_mul(2_654_435_761).rotate_left(k) & 0xff) as u8)
                .collect();
            let _ = Inflater::new(seed % 2 == 0).message(&bytes, 4096);
        }
    }
}
