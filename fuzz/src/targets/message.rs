//! The `message` target.

use rand::Rng;
use rand::rngs::SmallRng;
use tickrelay::wire::decode_message;

use super::{error_index, kind_code, random_message, round_trip, sig};
use crate::engine::Target;

/// `message`: [`decode_message`] on single MessagePack payloads.
///
/// Invariant: no panic; a decoded message encodes back to the same message.
pub struct MessageTarget;

impl Target for MessageTarget {
    fn name(&self) -> &'static str {
        "message"
    }

    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
        let m = random_message(rng);
        let mut out = Vec::new();
        m.encode(&mut out);
        match rng.gen_range(0..4) {
            // Extra trailing fields (the array grows; the relay ignores them).
            0 => {
                if let Some(first) = out.first_mut()
                    && (0x90..0x9f).contains(first)
                {
                    *first += 1;
                    let _ = rmp::encode::write_uint(&mut out, rng.r#gen());
                }
            }
            // A field of the wrong type somewhere.
            1 => {
                let at = rng.gen_range(1..out.len().max(2)).min(out.len());
                out.insert(at, [0xc0, 0xc2, 0xca, 0xa1, 0xc4][rng.gen_range(0..5)]);
            }
            _ => {}
        }
        out
    }

    fn run(&mut self, input: &[u8]) -> u64 {
        match decode_message(input) {
            Ok(m) => {
                round_trip(&m);
                sig(&[1, u64::from(kind_code(&m)), input.len().min(64) as u64 / 8])
            }
            Err(e) => sig(&[0, error_index(e), u64::from(*input.first().unwrap_or(&0))]),
        }
    }
}
