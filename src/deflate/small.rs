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
        if self.history.capacity() < self.window {
            self.history.reserve_exact(self.window);
        }
        self.history.clear();
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

    /// A strict inflater of what the relay writes (fixed-Huffman and
    /// stored blocks) whose window is 2^bits: a distance past it, or past
    /// what was sent, fails the test.
    struct Strict {
        window: usize,
        sent: Vec<u8>,
    }

    impl Strict {
        fn message(&mut self, compressed: &[u8]) -> Vec<u8> {
            let mut input = compressed.to_vec();
            input.extend_from_slice(&[0, 0, 0xff, 0xff]);
            let mut r = Reader {
                input: &input,
                bit: 0,
            };
            let begin = self.sent.len();
            while r.bit < input.len() * 8 {
                assert_eq!(r.bits(1), 0, "no final block");
                match r.bits(2) {
                    0 => {
                        r.bit = r.bit.div_ceil(8) * 8;
                        let len = r.bits(16);
                        assert_eq!(r.bits(16), !len & 0xffff);
                        for _ in 0..len {
                            let b = r.bits(8) as u8;
                            self.sent.push(b);
                        }
                    }
                    1 => self.fixed(&mut r),
                    t => panic!("block type {t}"),
                }
            }
            self.sent[begin..].to_vec()
        }

        fn fixed(&mut self, r: &mut Reader) {
            const LEN: [(usize, u32); 29] = [
                (3, 0),
                (4, 0),
                (5, 0),
                (6, 0),
                (7, 0),
                (8, 0),
                (9, 0),
                (10, 0),
                (11, 1),
                (13, 1),
                (15, 1),
                (17, 1),
                (19, 2),
                (23, 2),
                (27, 2),
                (31, 2),
                (35, 3),
                (43, 3),
                (51, 3),
                (59, 3),
                (67, 4),
                (83, 4),
                (99, 4),
                (115, 4),
                (131, 5),
                (163, 5),
                (195, 5),
                (227, 5),
                (258, 0),
            ];
            loop {
                let mut code = r.huffman(7);
                let symbol = if code <= 0b0010111 {
                    256 + code
                } else {
                    code = code << 1 | r.bits(1);
                    match code {
                        0x30..=0xbf => code - 0x30,
                        0xc0..=0xc7 => 280 + code - 0xc0,
                        _ => 144 + (code << 1 | r.bits(1)) - 0x190,
                    }
                };
                match symbol {
                    0..=255 => self.sent.push(symbol as u8),
                    256 => return,
                    _ => {
                        let (base, extra) = LEN[symbol as usize - 257];
                        let len = base + r.bits(extra) as usize;
                        let d = r.huffman(5) as usize;
                        let extra = if d < 4 { 0 } else { d as u32 / 2 - 1 };
                        let base = if d < 4 {
                            d + 1
                        } else {
                            ((2 + d % 2) << extra) + 1
                        };
                        let dist = base + r.bits(extra) as usize;
                        assert!(dist <= self.window, "distance {dist} past the window");
                        assert!(dist <= self.sent.len(), "distance {dist} before the stream");
                        for _ in 0..len {
                            self.sent.push(self.sent[self.sent.len() - dist]);
                        }
                    }
                }
            }
        }
    }

    struct Reader<'a> {
        input: &'a [u8],
        bit: usize,
    }

    impl Reader<'_> {
        /// `n` bits, least significant first.
        fn bits(&mut self, n: u32) -> u32 {
            (0..n).fold(0, |v, k| {
                let b = self.input[self.bit / 8] >> (self.bit % 8) & 1;
                self.bit += 1;
                v | u32::from(b) << k
            })
        }

        /// `n` bits of a Huffman code, most significant first.
        fn huffman(&mut self, n: u32) -> u32 {
            (0..n).fold(0, |v, _| v << 1 | self.bits(1))
        }
    }

    /// Quote-like messages, then edge cases: empty, long runs, bytes that
    /// do not compress (stored), and a run longer than a match.
    fn messages() -> Vec<Vec<u8>> {
        let mut x = 1u64;
        let mut next = move || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (x >> 33) as u32
        };
        let symbols = ["AAPL", "MSFT", "NVDA", "V", "QUBT", "XGX"];
        let mut out: Vec<Vec<u8>> = (0..400)
            .map(|i| {
                let s = symbols[next() as usize % symbols.len()];
                let bid = 10_000 + next() % 500;
                format!(
                    r#"{{"type":"ticks","seq":{},"quotes":[{{"symbol":"{s}","seq":{},"bid":"{}.{:02}00","bid_size":{},"ts":{}}}]}}"#,
                    50_000 + i * 3,
                    49_990 + i * 3,
                    bid / 100,
                    bid % 100,
                    100 * (1 + next() % 20),
                    1_796_664_714_000_000_000u64 + u64::from(next()),
                )
                .into_bytes()
            })
            .collect();
        out.push(Vec::new());
        out.push(vec![b'a'; 100_000]);
        out.push((0..70_000).map(|_| next() as u8).collect());
        out.push(b"xyz".repeat(300));
        out.push(b"{}".to_vec());
        out
    }

    #[test]
    fn messages_round_trip_with_context_and_stay_in_the_window() {
        let msgs = messages();
        let raw: usize = msgs[..400].iter().map(Vec::len).sum();
        for bits in [8, 11, 15] {
            for context in [true, false] {
                let mut d = SmallDeflater::new(bits);
                let mut flate = Inflater::new(context);
                let mut strict = Strict {
                    window: 1 << bits,
                    sent: Vec::new(),
                };
                let mut compressed = 0;
                for (k, m) in msgs.iter().enumerate() {
                    let mut out = vec![0xAA; 3];
                    d.message(m, &mut out, context);
                    assert_eq!(&out[..3], [0xAA; 3]);
                    let out = &out[3..];
                    assert!(!out.ends_with(&[0, 0, 0xff, 0xff]));
                    assert!(out.len() <= fixed::stored_len(m.len()), "message {k}");
                    if k < 400 {
                        compressed += out.len();
                    }
                    assert_eq!(&flate.message(out, 1 << 20).unwrap(), m, "message {k}");
                    if !context {
                        strict.sent.clear();
                    }
                    assert_eq!(&strict.message(out), m, "message {k}, {bits} bits");
                }
                if context && bits == 11 {
                    assert!(compressed * 3 < raw, "{compressed} of {raw} bytes");
                }
                if !context {
                    assert!(
                        compressed * 2 > raw,
                        "each message alone: {compressed} of {raw}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_length_and_distance_is_coded_right() {
        let mut x = 7u32;
        let mut byte = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        };
        let mut data: Vec<u8> = (0..40_000).map(|_| byte()).collect();
        for (k, len) in (4..=258).enumerate() {
            let dist = [1, 2, 3, 4, 5, 7, 100, 1_000, 8_000, 24_577, 32_768][k % 11];
            let from = data.len() - dist;
            for i in 0..len {
                data.push(data[from + i]);
            }
            data.push(byte());
        }
        let mut d = SmallDeflater::new(15);
        let mut out = Vec::new();
        d.message(&data[..40_000], &mut out, true);
        let mut strict = Strict {
            window: 1 << 15,
            sent: Vec::new(),
        };
        let mut flate = Inflater::new(true);
        assert_eq!(strict.message(&out), &data[..40_000]);
        assert_eq!(flate.message(&out, 1 << 20).unwrap(), &data[..40_000]);
        out.clear();
        d.message(&data[40_000..], &mut out, true);
        assert!(out.len() < (data.len() - 40_000) / 2, "{}", out.len());
        assert_eq!(strict.message(&out), &data[40_000..]);
        assert_eq!(flate.message(&out, 1 << 20).unwrap(), &data[40_000..]);
    }

    #[test]
    fn the_held_bytes_are_the_window_twice_over_and_the_heads() {
        let mut d = SmallDeflater::new(SMALL_WINDOW_BITS);
        let before = d.held_bytes();
        let mut out = Vec::new();
        for m in messages() {
            d.message(&m, &mut out, true);
        }
        let size = std::mem::size_of::<SmallDeflater>();
        assert_eq!(before, size + 2048 * 2 + 1024 * 2);
        assert_eq!(d.held_bytes(), size + 2048 * 3 + 1024 * 2);
        assert!(d.held_bytes() <= 16 * 1024);
    }
}
