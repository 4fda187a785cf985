//! A window-checking inflater for the strict client (`support::ws`) and
//! the small-window compressor's tests: what flate2 cannot check, that no
//! match reaches further back than the window the relay announced.

/// A strict inflater whose window is 2^bits (`server_max_window_bits`): a
/// distance past it, or before the stream, fails the test. It reads the
/// stored and fixed-Huffman blocks the relay writes under
/// `small_context`; a dynamic-Huffman block fails too.
pub(crate) struct Windowed {
    window: usize,
    /// The stream so far (at least its last `window` bytes).
    sent: Vec<u8>,
}

impl Windowed {
    pub(crate) fn new(bits: u32) -> Self {
        Windowed {
            window: 1 << bits,
            sent: Vec::new(),
        }
    }

    /// Forgets the stream (the compressor's context was not taken over).
    pub(crate) fn reset(&mut self) {
        self.sent.clear();
    }

    /// One message (its sync flush's `00 00 ff ff` left out), inflated.
    pub(crate) fn message(&mut self, compressed: &[u8]) -> Vec<u8> {
        if self.sent.len() > 4 * self.window {
            self.sent.drain(..self.sent.len() - self.window);
        }
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
                t => panic!("block type {t}: not what small_context writes"),
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
