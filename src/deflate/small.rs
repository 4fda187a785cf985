//! The small-window compressor of the `small_context` setting: context
//! takeover (RFC 7692 §7.1.1) in a few KiB a connection.
//!
//! A connection keeps only what the client's inflater keeps too: the last
//! 2^bits bytes it was sent (`server_max_window_bits`, announced), a hash
//! table of their 4-byte strings and a short chain of earlier places per
//! string. A message is matched greedily against that history and itself
//! (at most [`CHAIN`] places tried per string) and written as one
//! fixed-Huffman block ([`super::fixed`]), or stored when that would be
//! longer, then sync-flushed: the client inflates it as the continuation of
//! one stream. Every allocation is counted by [`SmallDeflater::held_bytes`].

use std::cell::RefCell;

use super::fixed::{self, Bits};

/// The window when the client asks for none smaller: 2 KiB. Quotes repeat
/// field names and the recent prices of the same few symbols, so most of
/// what a larger window would find is in the last few messages (measured
/// in docs/BENCHMARKS.md).
pub const SMALL_WINDOW_BITS: u8 = 11;
/// Bits of the hash of a 4-byte string: 1,024 heads.
const HASH_BITS: u32 = 10;
/// Places tried per string, newest first.
const CHAIN: usize = 4;
/// Shorter matches cost about what their literals do.
const MIN_MATCH: usize = 4;
const MAX_MATCH: usize = 258;

/// A compressor with context takeover and a window of 2^bits bytes.
#[derive(Debug)]
pub struct SmallDeflater {
    /// The window's size, a power of two (at most 32 KiB).
    window: usize,
    /// The last `window` bytes of the stream, oldest first.
    history: Vec<u8>,
    /// The newest place (stream position mod 2^16) of each hash.
    head: Box<[u16]>,
    /// For each place in the window (by position mod `window`), the place
    /// before it of the same hash.
    prev: Box<[u16]>,
    /// The stream's length mod 2^16: the place of the next byte.
    pos: u16,
}

thread_local! {
    /// The history and the message, side by side while it is compressed.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl SmallDeflater {
    /// A compressor whose matches reach at most 2^`bits` bytes back
    /// (`bits` taken into 8..=15).
    pub fn new(bits: u8) -> Self {
        let window = 1 << bits.clamp(8, 15);
        SmallDeflater {
            window,
            history: Vec::new(),
            head: vec![0; 1 << HASH_BITS].into_boxed_slice(),
            prev: vec![0; window].into_boxed_slice(),
            pos: 0,
        }
    }

    /// The bytes it holds: itself and its allocations, exactly.
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.history.capacity()
            + std::mem::size_of_val(&*self.head)
            + std::mem::size_of_val(&*self.prev)
    }

    /// Appends `payload` compressed as the next message to `out` (ending
    /// without the sync flush's `00 00 ff ff`). With `context`, matches
    /// reach into earlier messages; without, the message stands alone.
    pub fn message(&mut self, payload: &[u8], out: &mut Vec<u8>, context: bool) {
        SCRATCH.with_borrow_mut(|data| {
            self.start(data, payload, context);
            self.finish(data, out);
        });
    }

    /// [`SmallDeflater::message`] of the payload `buf[at..]`, put in its
    /// place.
    pub fn message_in_place(&mut self, buf: &mut Vec<u8>, at: usize, context: bool) {
        SCRATCH.with_borrow_mut(|data| {
            self.start(data, &buf[at..], context);
            buf.truncate(at);
            self.finish(data, buf);
        });
    }

    /// The history (none without `context`) and the payload into `data`.
    fn start(&mut self, data: &mut Vec<u8>, payload: &[u8], context: bool) {
        if !context {
            self.history.clear();
        }
        data.clear();
        data.extend_from_slice(&self.history);
        data.extend_from_slice(payload);
    }

    /// Compresses the payload in `data` after the history into `out`, and
    /// keeps the new history.
    fn finish(&mut self, data: &mut Vec<u8>, out: &mut Vec<u8>) {
        let start = self.history.len();
        let at = out.len();
        self.encode(data, start, out);
        if out.len() - at > fixed::stored_len(data.len() - start) {
            out.truncate(at);
            fixed::stored(&data[start..], out);
        }
        self.history.clear();
        if self.history.capacity() < self.window {
            self.history.reserve_exact(self.window);
        }
        let keep = data.len().min(self.window);
        self.history.extend_from_slice(&data[data.len() - keep..]);
        if data.capacity() > 1 << 20 {
            *data = Vec::new();
        }
    }

    /// Writes `data[start..]` as a fixed-Huffman block and a sync flush;
    /// `data[..start]` is the history. Places are hashed as they pass.
    fn encode(&mut self, data: &[u8], start: usize, out: &mut Vec<u8>) {
        // The place of data[0]: positions are kept mod 2^16.
        let base = self.pos.wrapping_sub(start as u16);
        let place = |i: usize| base.wrapping_add(i as u16);
        let mut bits = Bits::new(out);
        bits.fixed_block(false);
        let end = data.len();
        let mut i = start;
        while i < end {
            if i + MIN_MATCH <= end {
                let candidate = self.insert(data, i, place(i));
                let (len, dist) = self.longest(data, i, place(i), candidate);
                if len >= MIN_MATCH {
                    bits.copy(len, dist);
                    for k in i + 1..(i + len).min(end + 1 - MIN_MATCH) {
                        self.insert(data, k, place(k));
                    }
                    i += len;
                    continue;
                }
            }
            bits.literal(data[i]);
            i += 1;
        }
        bits.end_with_sync_flush();
        self.pos = place(end);
    }

    /// Enters the string at `data[i..]` (place `here`) in the table;
    /// returns the newest earlier place of its hash.
    fn insert(&mut self, data: &[u8], i: usize, here: u16) -> u16 {
        let v = u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
        let h = (v.wrapping_mul(2_654_435_761) >> (32 - HASH_BITS)) as usize;
        let before = std::mem::replace(&mut self.head[h], here);
        self.prev[usize::from(here) & (self.window - 1)] = before;
        before
    }

    /// The longest match for `data[i..]` among the places the chain offers
    /// from `candidate` on, within the window and the bytes at hand:
    /// `(length, distance)`, length 0 if none. Places are only hints (a
    /// hash collides, a slot is reused): every match is checked byte by
    /// byte.
    fn longest(&self, data: &[u8], i: usize, here: u16, mut candidate: u16) -> (usize, usize) {
        let reach = i.min(self.window);
        let limit = (data.len() - i).min(MAX_MATCH);
        let (mut best, mut best_dist) = (0, 0);
        for _ in 0..CHAIN {
            let dist = usize::from(here.wrapping_sub(candidate));
            if dist == 0 || dist > reach {
                break;
            }
            let j = i - dist;
            // The byte that would make it longer than the best so far.
            let probe = best.min(limit - 1);
            if data[j + probe] == data[i + probe] {
                let len = common(&data[j..], &data[i..], limit);
                if len > best {
                    (best, best_dist) = (len, dist);
                    if len == limit {
                        break;
                    }
                }
            }
            let next = self.prev[usize::from(candidate) & (self.window - 1)];
            if usize::from(here.wrapping_sub(next)) <= dist {
                break;
            }
            candidate = next;
        }
        (best, best_dist)
    }
}

/// How many leading bytes `a` and `b` share, at most `limit` (both at
/// least that long).
fn common(a: &[u8], b: &[u8], limit: usize) -> usize {
    let mut n = 0;
    while n + 8 <= limit {
        let x = u64::from_le_bytes(a[n..n + 8].try_into().unwrap_or_default());
        let y = u64::from_le_bytes(b[n..n + 8].try_into().unwrap_or_default());
        if x != y {
            return n + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    while n < limit && a[n] == b[n] {
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deflate::Inflater;

    #[test]
    fn quotes_round_trip_and_the_window_carries_over() {
        let msgs: Vec<Vec<u8>> = (0..200)
            .map(|i| {
                format!(
                    r#"{{"type":"ticks","seq":{},"quotes":[{{"symbol":"AAPL","bid":"{}.{:02}00"}}]}}"#,
                    1000 + i,
                    100 + i % 7,
                    i % 100
                )
                .into_bytes()
            })
            .chain([Vec::new(), vec![7u8; 100_000]])
            .collect();
        let mut d = SmallDeflater::new(SMALL_WINDOW_BITS);
        let mut i = Inflater::new(true);
        let mut sizes = Vec::new();
        for m in &msgs {
            let mut out = vec![0xAA];
            d.message(m, &mut out, true);
            sizes.push(out.len() - 1);
            assert_eq!(&i.message(&out[1..], 1 << 20).unwrap(), m);
        }
        assert!(sizes[100] * 3 < msgs[100].len(), "{sizes:?}");
        let size = std::mem::size_of::<SmallDeflater>();
        assert_eq!(d.held_bytes(), size + 2048 * 3 + 1024 * 2);
        assert!(d.held_bytes() <= 16 * 1024);
    }
}
