use super::*;

const S: u64 = SECOND;

fn chart(limits: HistoryLimits) -> Chart {
    Chart::new(limits, 4)
}

fn trade(c: &Chart, seq: u64, ts: u64, price: i64, size: u32) {
    c.trade(0, seq, ts, Price(price), size);
    c.advance(ts);
}

#[test]
fn a_bar_closes_when_feed_time_reaches_its_end_whoever_moves_it() {
    let c = chart(HistoryLimits::default());
    trade(&c, 1, 10 * S + 5, 100, 1);
    let open = c.bars(0, Interval::S1, u64::MAX, 10, LIVE).items;
    assert_eq!(open.len(), 1);
    assert!(!open[0].closed);
    // Another symbol's quote, a second later: feed time passes the end.
    c.advance(11 * S);
    let closed = c.bars(0, Interval::S1, u64::MAX, 10, LIVE).items;
    assert!(closed[0].closed);
    assert!(!c.bars(0, Interval::M1, u64::MAX, 10, LIVE).items[0].closed);
}

#[test]
fn paging_takes_the_newest_before_the_bound_oldest_first() {
    let c = chart(HistoryLimits::default());
    for i in 1..=10u64 {
        trade(&c, i * 2, i * S, i as i64, 1);
    }
    let starts = |before, limit| -> Vec<u64> {
        c.bars(0, Interval::S1, before, limit, LIVE)
            .items
            .iter()
            .map(|b| b.t / S)
            .collect()
    };
    assert_eq!(starts(u64::MAX, 3), [8, 9, 10]);
    assert_eq!(starts(8 * S, 3), [5, 6, 7]);
    assert_eq!(starts(2 * S, 3), [1]);
    let seqs = |before, limit| -> Vec<u64> {
        c.trades(0, before, limit, LIVE)
            .items
            .iter()
            .map(|t| t.seq)
            .collect()
    };
    assert_eq!(seqs(u64::MAX, 2), [18, 20]);
    assert_eq!(seqs(18, 2), [14, 16]);
    assert_eq!(seqs(3, 5), [2]);
}

#[test]
fn a_repeated_sequence_counts_once_and_the_version_moves_with_history() {
    let c = chart(HistoryLimits::default());
    trade(&c, 5, S, 100, 10);
    let v = c.trades(0, u64::MAX, 10, LIVE).version;
    trade(&c, 5, S, 100, 10);
    assert_eq!(c.trades(0, u64::MAX, 10, LIVE).version, v);
    let bar = c.bars(0, Interval::S1, u64::MAX, 1, LIVE).items[0];
    assert_eq!((bar.v, bar.n), (10, 1));
    // Replayed history older than the live trade: in its place, counted.
    trade(&c, 3, S, 90, 5);
    let bar = c.bars(0, Interval::S1, u64::MAX, 1, LIVE).items[0];
    assert_eq!((bar.o, bar.c, bar.v, bar.n), (Price(90), Price(100), 15, 2));
    assert_eq!(c.trades(0, u64::MAX, 10, LIVE).version, v + 1);
    let seqs: Vec<u64> = c
        .trades(0, u64::MAX, 10, LIVE)
        .items
        .iter()
        .map(|t| t.seq)
        .collect();
    assert_eq!(seqs, [3, 5]);
}

#[test]
fn coarse_bars_are_built_from_minutes() {
    let c = chart(HistoryLimits::default());
    // Minutes 0..12, one trade each, prices 1..=12.
    for m in 0..12u64 {
        trade(&c, m + 1, m * MINUTE + S, m as i64 + 1, 2);
    }
    let five = c.bars(0, Interval::M5, u64::MAX, 10, LIVE).items;
    let bar = |m: u64, o: i64, h: i64, c: i64, v: u64, n: u32, closed: bool| Bar {
        t: m * MINUTE,
        o: Price(o),
        h: Price(h),
        l: Price(o),
        c: Price(c),
        v,
        n,
        closed,
    };
    assert_eq!(
        five,
        [
            bar(0, 1, 5, 5, 10, 5, true),
            bar(5, 6, 10, 10, 10, 5, true),
            bar(10, 11, 12, 12, 4, 2, false),
        ]
    );
    let page = c.bars(0, Interval::M5, 10 * MINUTE, 1, LIVE).items;
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].t, 5 * MINUTE);
    assert_eq!(c.bars(0, Interval::H1, u64::MAX, 5, LIVE).items.len(), 1);
}

#[test]
fn reset_forgets_every_symbol_and_feed_time() {
    let c = chart(HistoryLimits::default());
    trade(&c, 1, S, 1, 1);
    assert!(c.heap_bytes() > 0);
    c.reset();
    assert_eq!(c.heap_bytes(), 0);
    assert_eq!(c.feed_time(), 0);
    assert!(c.trades(0, u64::MAX, 10, LIVE).items.is_empty());
}

#[test]
fn memory_grows_with_use_up_to_the_caps() {
    let limits = HistoryLimits::default();
    let c = chart(limits);
    trade(&c, 1, S, 1, 1);
    let one = c.heap_bytes();
    assert!(one < 2_000, "a symbol with one trade holds {one} bytes");
    for i in 2..=5_000u64 {
        trade(&c, i, i * MINUTE, 1, 1);
    }
    assert_eq!(c.heap_bytes(), limits.bytes_per_symbol());
    // The figure docs/ARCHITECTURE.md gives ("The chart and the tape").
    assert_eq!(limits.bytes_per_symbol(), 200_656);
    assert_eq!(c.trades(0, u64::MAX, 5_000, LIVE).items.len(), 1_000);
    assert_eq!(
        c.bars(0, Interval::M1, u64::MAX, 5_000, LIVE).items.len(),
        1_440
    );
}

#[test]
fn history_off_keeps_nothing() {
    let c = chart(HistoryLimits::OFF);
    trade(&c, 1, S, 1, 1);
    assert_eq!(c.heap_bytes(), 0);
    assert!(c.bars(0, Interval::S1, u64::MAX, 10, LIVE).items.is_empty());
}

#[test]
fn intervals_parse_and_know_their_kept_length() {
    let l = HistoryLimits::default();
    let kept: Vec<(&str, usize)> = Interval::ALL
        .iter()
        .map(|i| (i.as_str(), i.kept(&l)))
        .collect();
    assert_eq!(
        kept,
        [
            ("1s", 900),
            ("1m", 1440),
            ("5m", 288),
            ("15m", 96),
            ("1h", 24)
        ]
    );
    assert_eq!(Interval::parse("15m"), Some(Interval::M15));
    assert_eq!(Interval::parse("2m"), None);
}

#[test]
fn a_stream_reads_after_its_position_and_learns_of_a_gap() {
    let limits = HistoryLimits {
        trades: 3,
        ..HistoryLimits::default()
    };
    let c = chart(limits);
    assert_eq!(c.tape_tail(0, 2, LIVE), (Vec::new(), 0));
    for seq in [2, 4, 6] {
        trade(&c, seq, seq * S, seq as i64, 1);
    }
    let (tail, at) = c.tape_tail(0, 2, LIVE);
    assert_eq!(
        (tail.iter().map(|t| t.seq).collect::<Vec<_>>(), at),
        (vec![4, 6], 6)
    );
    let read = c.trades_after(0, 2, 10, LIVE);
    assert_eq!(read.trades.len(), 2);
    assert!(!read.more && !read.gap);
    assert!(c.trades_after(0, 2, 1, LIVE).more);
    trade(&c, 8, 8 * S, 8, 1);
    // 2 fell off the tape: a reader at 0 missed it, one at 2 did not.
    assert!(c.trades_after(0, 0, 10, LIVE).gap);
    assert!(!c.trades_after(0, 2, 10, LIVE).gap);
    let starts = |from, limit| -> Vec<(u64, bool)> {
        c.bars_from(0, Interval::S1, from, limit, LIVE)
            .iter()
            .map(|b| (b.t / S, b.closed))
            .collect()
    };
    assert_eq!(starts(6 * S, 10), [(6, true), (8, false)]);
    assert_eq!(starts(0, 1), [(8, false)]);
    assert_eq!(c.bars_from(0, Interval::M5, 0, 10, LIVE).len(), 1);
}

#[test]
fn as_of_a_time_the_tape_and_the_bars_hold_no_later_trade() {
    let c = chart(HistoryLimits::default());
    // Trades at 10.2 s, 10.7 s, 11.4 s, 70.5 s (seq 2, 4, 6, 8).
    for (seq, ts, price) in [
        (2, 10_200, 10),
        (4, 10_700, 14),
        (6, 11_400, 12),
        (8, 70_500, 9),
    ] {
        trade(&c, seq, ts * S / 1_000, price, 1);
    }
    let until = 10_500 * S / 1_000;
    let seqs = |t: Vec<Trade>| t.iter().map(|t| t.seq).collect::<Vec<_>>();
    assert_eq!(seqs(c.trades(0, u64::MAX, 10, until).items), [2]);
    assert_eq!(
        c.tape_tail(0, 5, until),
        (c.trades(0, u64::MAX, 1, until).items, 2)
    );
    let read = c.trades_after(0, 0, 10, until);
    assert_eq!((seqs(read.trades), read.more), (vec![2], false));
    // The 1 s bar holding the cutoff: only the trade before it, open.
    let b = c.bars(0, Interval::S1, u64::MAX, 10, until).items;
    assert_eq!(b.len(), 1);
    assert_eq!(
        (b[0].t, b[0].n, b[0].c, b[0].closed),
        (10 * S, 1, Price(10), false)
    );
    // At 11.5 s: the 10 s bar whole and closed, the 11 s bar so far.
    let until = 11_500 * S / 1_000;
    let b = c.bars_from(0, Interval::S1, 0, 10, until);
    let shape: Vec<_> = b.iter().map(|b| (b.t / S, b.n, b.closed)).collect();
    assert_eq!(shape, [(10, 2, true), (11, 1, false)]);
    // 5 m and 1 m as of 70.6 s: the first minute whole, the second so far.
    let until = 70_600 * S / 1_000;
    let m1 = c.bars(0, Interval::M1, u64::MAX, 10, until).items;
    let shape: Vec<_> = m1.iter().map(|b| (b.t / S, b.n, b.closed)).collect();
    assert_eq!(shape, [(0, 3, true), (60, 1, false)]);
    let m5 = c.bars(0, Interval::M5, u64::MAX, 10, until).items;
    assert_eq!(
        (m5.len(), m5[0].n, m5[0].o, m5[0].c),
        (1, 4, Price(10), Price(9))
    );
    let m5 = c.bars(0, Interval::M5, u64::MAX, 10, 70 * S).items;
    assert_eq!((m5[0].n, m5[0].c, m5[0].closed), (3, Price(12), false));
    assert!(
        c.bars(0, Interval::M5, u64::MAX, 10, 10 * S)
            .items
            .is_empty()
    );
}

#[test]
fn as_of_a_time_a_bar_whose_trades_left_the_tape_waits_until_it_ended() {
    let limits = HistoryLimits {
        trades: 2,
        ..HistoryLimits::default()
    };
    let c = chart(limits);
    for seq in 1..=4u64 {
        trade(&c, seq, 10 * S + seq * S / 10, seq as i64, 1);
    }
    // Trades 1 and 2 left the tape: the 10 s bar as of 10.25 s cannot be
    // built again, so it is not shown; as of 11 s it has ended, whole.
    assert!(
        c.bars(0, Interval::S1, u64::MAX, 10, 10 * S + 25 * S / 100)
            .items
            .is_empty()
    );
    let b = c.bars(0, Interval::S1, u64::MAX, 10, 11 * S).items;
    assert_eq!((b.len(), b[0].n), (1, 4));
    // The tape as of 10.25 s: its kept trades are all later.
    assert!(
        c.trades(0, u64::MAX, 10, 10 * S + 25 * S / 100)
            .items
            .is_empty()
    );
    assert!(c.trades_after(0, 0, 10, 10 * S + 25 * S / 100).gap);
}
