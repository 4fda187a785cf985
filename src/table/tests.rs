//! Tests of the symbol table: seqlock reads, halves merged newest-wins,
//! sessions and the directory.

use super::*;

fn dir(locate: Locate, symbol: &str) -> Message<'_> {
    Message::Directory {
        locate,
        ts: 1,
        symbol,
        name: "Name",
        prev_close: Price(100_0000),
    }
}

#[test]
fn quote_and_trade_build_the_state() {
    let t = Table::new();
    assert_eq!(t.apply(1, &dir(5, "AAPL")), Applied::Changed(5));
    assert_eq!(t.locate("AAPL"), Some(5));
    let q = t.quote(5).unwrap();
    assert_eq!((q.bid, q.last, q.seq), (None, None, 1));
    t.apply(
        2,
        &Message::Quote {
            locate: 5,
            ts: 9,
            bid: Price(1),
            ask: Price(2),
            bid_size: 3,
            ask_size: 4,
        },
    );
    t.apply(
        3,
        &Message::Trade {
            locate: 5,
            ts: 10,
            price: Price(2),
            size: 7,
            volume: 70,
        },
    );
    let q = t.quote(5).unwrap();
    assert_eq!(q.bid, Some(Price(1)));
    assert_eq!(q.ask, Some(Price(2)));
    assert_eq!((q.bid_size, q.ask_size), (3, 4));
    assert_eq!((q.last, q.last_size, q.volume), (Some(Price(2)), 7, 70));
    assert_eq!((q.seq, q.ts), (3, 10));
    assert_eq!(q.prev_close, Price(100_0000));
}

#[test]
fn unknown_locate_is_dropped() {
    let t = Table::new();
    let q = Message::Quote {
        locate: 9,
        ts: 1,
        bid: Price(1),
        ask: Price(2),
        bid_size: 1,
        ask_size: 1,
    };
    assert_eq!(t.apply(1, &q), Applied::UnknownLocate);
    assert!(t.quote(9).is_none());
}

#[test]
fn repeated_directory_is_no_change() {
    let t = Table::new();
    t.apply(1, &dir(1, "MSFT"));
    assert_eq!(t.apply(50, &dir(1, "MSFT")), Applied::Unchanged);
    assert_eq!(t.quote(1).unwrap().seq, 1);
    assert_eq!(t.symbol_count(), 1);
}

#[test]
fn relisting_a_locate_moves_the_name() {
    let t = Table::new();
    t.apply(1, &dir(1, "OLD"));
    t.apply(2, &dir(1, "NEW"));
    assert_eq!(t.locate("OLD"), None);
    assert_eq!(t.locate("NEW"), Some(1));
    t.apply(3, &dir(2, "NEW"));
    assert!(t.info(1).is_none());
    let q = Message::Quote {
        locate: 1,
        ts: 1,
        bid: Price(1),
        ask: Price(2),
        bid_size: 1,
        ask_size: 1,
    };
    assert_eq!(
        t.apply(4, &q),
        Applied::UnknownLocate,
        "the old locate is unlisted"
    );
    assert_eq!(t.locate("NEW"), Some(2));
    assert_eq!(t.symbol_count(), 1);
}

#[test]
fn reset_forgets_everything() {
    let t = Table::new();
    t.apply(1, &dir(1, "A"));
    t.set_last_seq(1);
    t.reset(Session::new("NEXT"));
    assert_eq!(t.symbol_count(), 0);
    assert!(t.locates().is_empty());
    assert_eq!(t.last_seq(), 0);
    assert_eq!(t.session().as_str(), "NEXT");
}

#[test]
fn readers_never_see_a_torn_quote() {
    let t = Arc::new(Table::new());
    t.apply(1, &dir(1, "A"));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (t, stop, reads) = (t.clone(), stop.clone(), reads.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let q = t.quote(1).unwrap();
                if let (Some(b), Some(a)) = (q.bid, q.ask) {
                    // The writer always writes ask = bid + 1 and sizes = bid.
                    assert_eq!(a.raw(), b.raw() + 1);
                    assert_eq!(u64::from(q.bid_size), b.raw() as u64 % 1000);
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Write until the reader has overlapped many writes (it may start
    // late), within a bound.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut i = 0i64;
    while (i < 200_000 || reads.load(Ordering::Relaxed) < 10_000)
        && std::time::Instant::now() < deadline
    {
        t.apply(
            i as u64 + 2,
            &Message::Quote {
                locate: 1,
                ts: i as u64,
                bid: Price(i),
                ask: Price(i + 1),
                bid_size: (i % 1000) as u32,
                ask_size: 0,
            },
        );
        i += 1;
    }
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();
    assert!(
        reads.load(Ordering::Relaxed) >= 10_000,
        "the reader overlapped the writer"
    );
}

fn quote_msg(locate: Locate, ts: u64, bid: i64) -> Message<'static> {
    Message::Quote {
        locate,
        ts,
        bid: Price(bid),
        ask: Price(bid + 1),
        bid_size: 1,
        ask_size: 2,
    }
}

#[test]
fn an_older_half_never_replaces_a_newer_one() {
    let t = Table::new();
    t.apply(1, &dir(3, "IBM"));
    t.apply(10, &quote_msg(3, 100, 50));
    // Retransmitted history arrives late: older than what is held.
    assert_eq!(t.apply(7, &quote_msg(3, 70, 40)), Applied::Unchanged);
    assert_eq!(t.quote(3).unwrap().bid, Some(Price(50)));
    // A state whose quote half is older but whose trade half is new.
    let before = t.stamp(3);
    let state = Message::State {
        locate: 3,
        ts: 90,
        quote: Some(StateQuote {
            seq: 9,
            bid: Price(45),
            ask: Price(46),
            bid_size: 1,
            ask_size: 1,
        }),
        trade: Some(StateTrade {
            seq: 8,
            last: Price(44),
            last_size: 5,
            volume: 500,
        }),
    };
    assert_eq!(t.apply(0, &state), Applied::Changed(3));
    let q = t.quote(3).unwrap();
    assert_eq!(
        (q.bid, q.last, q.volume),
        (Some(Price(50)), Some(Price(44)), 500)
    );
    assert_eq!(
        (q.seq, q.ts),
        (10, 100),
        "seq and ts follow the newest half"
    );
    assert_ne!(t.stamp(3), before, "the stamp moves with every change");
    assert_eq!(
        t.apply(0, &state),
        Applied::Unchanged,
        "a repeated state is no change"
    );
    assert_eq!(t.halves(3), (true, true));
}

#[test]
fn a_state_for_an_unlisted_locate_is_dropped() {
    let t = Table::new();
    let state = Message::State {
        locate: 8,
        ts: 1,
        quote: None,
        trade: None,
    };
    assert_eq!(t.apply(0, &state), Applied::UnknownLocate);
}

mod merge {
    use super::*;
    use proptest::prelude::*;

    /// A live event: (locate, is_trade, price).
    type Live = (u16, bool, i64);

    fn live_message(seq: u64, (locate, trade, px): Live) -> Message<'static> {
        if trade {
            Message::Trade {
                locate,
                ts: seq * 10,
                price: Price(px),
                size: (px % 7) as u32 + 1,
                volume: seq * 100,
            }
        } else {
            Message::Quote {
                locate,
                ts: seq * 10,
                bid: Price(px),
                ask: Price(px + 3),
                bid_size: (px % 5) as u32,
                ask_size: (px % 11) as u32,
            }
        }
    }

    const SYMBOLS: [&str; 4] = ["A", "B", "C", "D"];

    fn listed() -> Table {
        listed_at(1)
    }

    /// Lists the symbols at sequences `first..`: a relay that joined late
    /// sees a later repeat of the directory than one that was there.
    fn listed_at(first: u64) -> Table {
        let t = Table::new();
        for (i, s) in SYMBOLS.iter().enumerate() {
            t.apply(i as u64 + first, &dir(i as Locate, s));
        }
        t
    }

    /// The state a producer's recovery loop would send for `locate`
    /// after the first `k` live events.
    fn state_after(live: &[Live], k: usize, locate: u16) -> Message<'static> {
        let t = listed();
        for (i, ev) in live[..k].iter().enumerate() {
            t.apply(i as u64 + 5, &live_message(i as u64 + 5, *ev));
        }
        let f = t.slots[usize::from(locate)].read();
        let (has_q, has_t) = t.halves(locate);
        Message::State {
            locate,
            ts: f[F_TS],
            quote: has_q.then(|| StateQuote {
                seq: f[F_QUOTE_SEQ],
                bid: Price(f[F_BID] as i64),
                ask: Price(f[F_ASK] as i64),
                bid_size: f[F_BID_SIZE] as u32,
                ask_size: f[F_ASK_SIZE] as u32,
            }),
            trade: has_t.then(|| StateTrade {
                seq: f[F_TRADE_SEQ],
                last: Price(f[F_LAST] as i64),
                last_size: f[F_LAST_SIZE] as u32,
                volume: f[F_VOLUME],
            }),
        }
    }

    fn case() -> impl Strategy<Value = (Vec<Live>, Vec<(usize, u16)>, Vec<usize>)> {
        (
            proptest::collection::vec((0u16..4, any::<bool>(), 1i64..1_000_000), 1..40),
            proptest::collection::vec((any::<usize>(), 0u16..4), 0..12),
        )
            .prop_flat_map(|(live, states)| {
                let n = live.len() + states.len();
                let order: Vec<usize> = (0..n).collect();
                (Just(live), Just(states), Just(order).prop_shuffle())
            })
    }

    proptest! {
        /// Any interleaving of live messages (in any order, as
        /// retransmitted history arrives) and loop states taken at any
        /// point gives the table that in-order application gives.
        #[test]
        fn any_interleaving_gives_the_same_table((live, states, order) in case(), late in any::<bool>()) {
            let expected = listed();
            for (i, ev) in live.iter().enumerate() {
                expected.apply(i as u64 + 5, &live_message(i as u64 + 5, *ev));
            }
            let states: Vec<Message<'static>> = states
                .iter()
                .map(|&(k, locate)| state_after(&live, k % (live.len() + 1), locate))
                .collect();
            let got = if late { listed_at(1_000) } else { listed() };
            for &i in &order {
                if i < live.len() {
                    got.apply(i as u64 + 5, &live_message(i as u64 + 5, live[i]));
                } else {
                    got.apply(0, &states[i - live.len()]);
                }
            }
            for l in 0..4u16 {
                let (mut g, mut e) = (got.quote(l).unwrap(), expected.quote(l).unwrap());
                if got.halves(l) == (false, false) {
                    // Never ticked: only the listing dates it.
                    g.seq = 0;
                    g.ts = 0;
                    e.seq = 0;
                    e.ts = 0;
                }
                prop_assert_eq!(g, e);
            }
        }
    }
}

/// The chart takes trade messages only: a recovery state's last trade is
/// no trade of its own, and makes no bar. Replayed history older than the
/// trade half still reaches the tape; the loop's messages move no feed time.
#[test]
fn the_chart_takes_trades_and_not_recovered_state() {
    use chart::Interval;
    let t = Table::new();
    t.apply(1, &dir(5, "AAPL"));
    let state = Message::State {
        locate: 5,
        ts: 50,
        quote: None,
        trade: Some(StateTrade {
            seq: 9,
            last: Price(3),
            last_size: 1,
            volume: 1,
        }),
    };
    assert_eq!(t.apply(0, &state), Applied::Changed(5));
    assert_eq!(t.quote(5).unwrap().last, Some(Price(3)));
    assert!(
        t.chart()
            .trades(5, u64::MAX, 10, crate::table::chart::LIVE)
            .items
            .is_empty()
    );
    assert!(
        t.chart()
            .bars(5, Interval::S1, u64::MAX, 10, crate::table::chart::LIVE)
            .items
            .is_empty()
    );
    assert_eq!(
        t.chart().feed_time(),
        1,
        "the loop's state is not feed time"
    );
    let trade = |ts| Message::Trade {
        locate: 5,
        ts,
        price: Price(2),
        size: 7,
        volume: 70,
    };
    // History from before the recovered trade: the table keeps its newer
    // half, the tape takes the trade in its place.
    assert_eq!(t.apply(4, &trade(40)), Applied::Unchanged);
    assert_eq!(t.quote(5).unwrap().last, Some(Price(3)));
    let taped: Vec<u64> = t
        .chart()
        .trades(5, u64::MAX, 10, crate::table::chart::LIVE)
        .items
        .iter()
        .map(|x| x.seq)
        .collect();
    assert_eq!(taped, [4]);
    assert_eq!(t.chart().feed_time(), 40);
    t.reset(Session::new("NEXT"));
    assert!(
        t.chart()
            .trades(5, u64::MAX, 10, crate::table::chart::LIVE)
            .items
            .is_empty()
    );
}
