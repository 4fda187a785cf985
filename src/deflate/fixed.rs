//! Deflate's fixed-Huffman block (RFC 1951 §3.2.6) written bit by bit:
//! literals, lengths and distances with the codes every inflater knows, so
//! a block needs no code table of its own (a dynamic table costs more than
//! it saves on messages of a few hundred bytes).

/// Bits for deflate's output, least significant first (RFC 1951 §3.1.1).
pub(super) struct Bits<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    n: u32,
}

/// Each symbol of the literal/length alphabet: its fixed code, bits
/// reversed (Huffman codes go out most significant bit first), and length.
const FIXED: [(u16, u8); 288] = fixed_codes();

const fn fixed_codes() -> [(u16, u8); 288] {
    let mut t = [(0u16, 0u8); 288];
    let mut s = 0;
    while s < 288 {
        let (code, len) = match s {
            0..=143 => (0x30 + s, 8),
            144..=255 => (0x190 + s - 144, 9),
            256..=279 => (s - 256, 7),
            _ => (0xC0 + s - 280, 8),
        };
        t[s as usize] = (reverse(code, len), len as u8);
        s += 1;
    }
    t
}

/// `code`'s low `len` bits in the opposite order.
const fn reverse(code: u32, len: u32) -> u16 {
    (code.reverse_bits() >> (32 - len)) as u16
}

/// The end-of-block symbol.
const END_OF_BLOCK: usize = 256;

impl<'a> Bits<'a> {
    /// Bits appended to `out`, which must end on a byte boundary.
    pub(super) fn new(out: &'a mut Vec<u8>) -> Self {
        Bits { out, acc: 0, n: 0 }
    }

    /// The low `len` bits of `v` (at most 32 in the accumulator at once).
    fn put(&mut self, v: u32, len: u32) {
        self.acc |= u64::from(v) << self.n;
        self.n += len;
        if self.n >= 32 {
            self.out.extend_from_slice(&(self.acc as u32).to_le_bytes());
            self.acc >>= 32;
            self.n -= 32;
        }
    }

    /// A fixed-Huffman block's header; `last` sets BFINAL.
    pub(super) fn fixed_block(&mut self, last: bool) {
        self.put(u32::from(last) | 0b01 << 1, 3);
    }

    /// One byte as a literal.
    pub(super) fn literal(&mut self, b: u8) {
        self.symbol(usize::from(b));
    }

    fn symbol(&mut self, s: usize) {
        let (code, len) = FIXED[s];
        self.put(u32::from(code), u32::from(len));
    }

    /// A copy of `len` (3..=258) bytes from `dist` (1..=32768) back.
    pub(super) fn copy(&mut self, len: usize, dist: usize) {
        debug_assert!((3..=258).contains(&len) && (1..=32_768).contains(&dist));
        // Lengths 3..=10 have a code each; then four codes per power of
        // two, with extra bits; 258 its own (RFC 1951 §3.2.5).
        let x = (len - 3) as u32;
        if len == 258 {
            self.symbol(285);
        } else if x < 8 {
            self.symbol(257 + x as usize);
        } else {
            let n = 31 - x.leading_zeros();
            let extra = n - 2;
            let step = (x >> extra) & 3;
            self.symbol(257 + (4 * (n - 1) + step) as usize);
            self.put(x - ((4 + step) << extra), extra);
        }
        // Distances 1..=4 have a code each; then two codes per power of two.
        let x = (dist - 1) as u32;
        if x < 4 {
            self.put(u32::from(reverse(x, 5)), 5);
        } else {
            let n = 31 - x.leading_zeros();
            let extra = n - 1;
            let half = (x >> extra) & 1;
            self.put(u32::from(reverse(2 * n + half, 5)), 5);
            self.put(x - ((2 + half) << extra), extra);
        }
    }

    /// Ends the block, then flushes as `Z_SYNC_FLUSH` does: an empty stored
    /// block, whose `00 00 ff ff` is left out (RFC 7692 §7.2.1), so the
    /// output ends on a byte boundary with only its 3 header bits.
    pub(super) fn end_with_sync_flush(mut self) {
        self.symbol(END_OF_BLOCK);
        self.put(0, 3);
        let bytes = self.n.div_ceil(8) as usize;
        self.out.extend_from_slice(&self.acc.to_le_bytes()[..bytes]);
    }
}

/// `payload` as stored blocks followed by the sync flush's empty block
/// (less its `00 00 ff ff`): what a message costs uncompressed. Starts on a
/// byte boundary.
pub(super) fn stored(payload: &[u8], out: &mut Vec<u8>) {
    for chunk in payload.chunks(usize::from(u16::MAX)) {
        let n = chunk.len() as u16;
        out.push(0);
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(!n).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.push(0);
}

/// The bytes [`stored`] writes for `len` bytes of payload.
pub(super) fn stored_len(len: usize) -> usize {
    len + 5 * len.div_ceil(usize::from(u16::MAX)) + 1
}
