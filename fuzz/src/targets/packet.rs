//! The `packet` target.

use rand::rngs::SmallRng;
use rand::{Rng, RngCore};
use tickrelay::wire::{
    self, HEADER_LEN, Packet, PacketBuilder, PacketKind, Session, decode_message,
};

use super::{error_index, kind_code, random_message, round_trip, sig};
use crate::engine::Target;

fn random_session(rng: &mut SmallRng) -> Session {
    match rng.gen_range(0..4) {
        0 => Session::new("S1"),
        1 => Session::new("S2"),
        2 => {
            let n = rng.gen_range(1..=10);
            let id: String = (0..n).map(|_| rng.gen_range(b'!'..=b'~') as char).collect();
            Session::new(&id)
        }
        _ => {
            let mut raw = [b' '; 10];
            rng.fill_bytes(&mut raw);
            Session(raw)
        }
    }
}

/// `packet`: [`Packet::parse`] and [`decode_message`] on whole datagrams.
///
/// Invariants: a packet that parses has a valid session id; a heartbeat or
/// end of session is exactly the header; a data packet's framed messages
/// are exactly `count` and fill the datagram to the byte; every message
/// that decodes encodes back to the same message.
pub struct PacketTarget;

impl Target for PacketTarget {
    fn name(&self) -> &'static str {
        "packet"
    }

    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
        let session = random_session(rng);
        let seq = rng.gen_range(0..1_000_000);
        match rng.gen_range(0..6) {
            0 => wire::header(session, seq, 0).to_vec(),
            1 => wire::header(session, seq, 0xFFFF).to_vec(),
            2 => {
                // A header promising messages, then random bytes.
                let mut p = wire::header(session, seq, rng.r#gen()).to_vec();
                let n = rng.gen_range(0..200);
                p.extend((0..n).map(|_| rng.r#gen::<u8>()));
                p
            }
            _ => {
                let mut b = PacketBuilder::new(session, seq);
                let mut out = Vec::new();
                for _ in 0..rng.gen_range(1..8) {
                    let m = random_message(rng);
                    b.push(&m, &mut |p| out.push(p.to_vec()));
                }
                b.flush(&mut |p| out.push(p.to_vec()));
                out.swap_remove(0)
            }
        }
    }

    fn run(&mut self, input: &[u8]) -> u64 {
        let packet = match Packet::parse(input) {
            Ok(p) => p,
            Err(e) => return sig(&[0, error_index(e)]),
        };
        assert!(packet.session.is_valid(), "parsed a bad session id");
        let mut framed = HEADER_LEN;
        let mut kinds = 0u64;
        let mut n = 0u64;
        for raw in packet.messages() {
            framed += 2 + raw.len();
            n += 1;
            match decode_message(raw) {
                Ok(m) => {
                    kinds |= 1 << (u64::from(kind_code(&m)) & 31);
                    round_trip(&m);
                }
                Err(e) => kinds |= 1 << (32 + (error_index(e) & 31)),
            }
        }
        match packet.kind {
            PacketKind::Data => {
                assert_eq!(n, u64::from(packet.count), "message count");
                assert_eq!(framed, input.len(), "framing must fill the datagram");
            }
            PacketKind::Heartbeat | PacketKind::EndOfSession => {
                assert_eq!(input.len(), HEADER_LEN, "a header alone");
                assert_eq!(n, 0);
            }
        }
        sig(&[1, packet.kind as u64, n.min(8), kinds])
    }
}
