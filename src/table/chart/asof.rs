//! The chart as of a time, for a delayed user (docs/PROTOCOL.md, "Delayed
//! data"): only trades with an exchange timestamp before `until`, and no
//! bar holding a later one.
//!
//! Trades: the tape's longest prefix (by feed sequence) of trades before
//! `until`, so a delayed stream walks the tape in order and the prefix only
//! grows as `until` moves on. Bars: every bar that ended by `until` as kept,
//! and the bar holding `until` built again from what ended by then — the
//! 1-minute bars of a coarser bucket, then the tape's trades before `until`
//! — when the relay still holds all of them (the tape keeps
//! `trade_history` trades: a busy symbol with a long delay shows that bar
//! only once it has ended).

use std::collections::VecDeque;

use super::bars::Kept;
use super::tape::Trade;
use super::{Interval, Symbol};

/// No bound: the live chart.
pub const LIVE: u64 = u64::MAX;

/// How many of `tape`'s trades, from its oldest on, were made before
/// `until`: all of them when live.
pub(super) fn visible(tape: &VecDeque<Trade>, until: u64) -> usize {
    if until == LIVE {
        return tape.len();
    }
    tape.iter()
        .position(|t| t.ts >= until)
        .unwrap_or(tape.len())
}

/// How many of `tape`'s trades from index `from` on were made before
/// `until`, up to the first that was not.
pub(super) fn visible_after(tape: &VecDeque<Trade>, from: usize, until: u64) -> usize {
    let rest = tape.len().saturating_sub(from);
    if until == LIVE {
        return rest;
    }
    let later = tape
        .range(from.min(tape.len())..)
        .position(|t| t.ts >= until);
    later.unwrap_or(rest)
}

/// Bars of `interval` starting before this end by `until`.
pub(super) fn ended_before(until: u64, interval: Interval) -> u64 {
    if until == LIVE {
        return LIVE;
    }
    until - until % interval.nanos()
}

/// The bar of `interval` holding `until` as it was then: the trades of its
/// bucket before `until`. `None` when live, when `until` starts a bucket,
/// when no trade of the bucket came before it, or when the relay no longer
/// holds every one of them.
pub(super) fn partial(sym: &Symbol, interval: Interval, until: u64) -> Option<Kept> {
    if until == LIVE || until.is_multiple_of(interval.nanos()) {
        return None;
    }
    let start = ended_before(until, interval);
    let mut bar: Option<Kept> = None;
    let mut fold = |k: Kept| match bar.as_mut() {
        Some(b) => b.merge(&k),
        None => bar = Some(k.at(start)),
    };
    // Coarser than a minute: the bucket's minutes that ended by `until`.
    let tape_from = match interval {
        Interval::S1 | Interval::M1 => start,
        _ => {
            let floor = sym.m1.floor();
            if floor > 0 && floor >= start {
                return None;
            }
            let minutes = ended_before(until, Interval::M1);
            let ring = sym.m1.bars();
            let from = ring.partition_point(|k| k.t < start);
            ring.range(from..)
                .take_while(|k| k.t < minutes)
                .for_each(|k| fold(*k));
            minutes
        }
    };
    if tape_from < until {
        if !sym.tape.holds_from(tape_from) {
            return None;
        }
        let tape = sym.tape.trades();
        for t in tape.iter().filter(|t| t.ts >= tape_from && t.ts < until) {
            fold(Kept::new(start, t.seq, t.price, t.size));
        }
    }
    bar
}
