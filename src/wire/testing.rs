//! Packets for unit tests elsewhere in the crate.

use super::*;
use crate::price::Price;

/// `n_msgs` trades of session `session` in packets of `per` messages,
/// sequences from 1.
pub(crate) fn trade_packets(session: &str, n_msgs: u64, per: u16) -> Vec<Vec<u8>> {
    let mut b = PacketBuilder::new(Session::new(session), 1).with_max_messages(per);
    let mut out = Vec::new();
    for i in 0..n_msgs {
        let m = Message::Trade {
            locate: 1,
            ts: i,
            price: Price(1),
            size: 1,
            volume: i,
        };
        b.push(&m, &mut |p| out.push(p.to_vec()));
    }
    b.flush(&mut |p| out.push(p.to_vec()));
    out
}
