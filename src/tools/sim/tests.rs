use std::collections::BTreeMap;

use super::*;
use crate::price::Price;
use crate::wire::{
    Locate, Message, Packet, PacketKind, PriceLevel, StateQuote, StateTrade, decode_message,
};

#[test]
fn tickers_are_unique_and_real_looking() {
    let t = tickers(2000);
    let set: std::collections::HashSet<_> = t.iter().map(|(s, _)| s).collect();
    assert_eq!(set.len(), 2000);
    assert_eq!(t[0].0, "AAPL");
    assert!(
        t.iter()
            .all(|(s, _)| s.len() <= 5 && s.bytes().all(|b| b.is_ascii_uppercase()))
    );
}

fn quiet_config(symbols: usize, rate: u64) -> SimConfig {
    SimConfig {
        symbols,
        rate,
        session: "T".into(),
        seed: 11,
        ..SimConfig::default()
    }
}

/// Ten minutes of feed time, three markets of 200 symbols: every symbol
/// moves about as much as its volatility says, none runs away, and the
/// market as a whole does not drift.
#[test]
fn ten_simulated_minutes_move_by_the_volatility_without_drift() {
    let ten_min = 600.0;
    let mut z = Vec::new();
    for seed in 1..=3 {
        let mut config = quiet_config(200, 2_000);
        config.seed = seed;
        let (reference, _) = Market::new(config.symbols, config.zipf, config.seed);
        let summary = fast_forward(config, Duration::from_secs(600)).unwrap();
        for q in &summary.quotes {
            let i = usize::from(q.locate);
            let (bid, ask) = (q.bid.unwrap().raw(), q.ask.unwrap().raw());
            assert!(bid < ask && bid % 100 == 0 && ask % 100 == 0, "{q:?}");
            let mid = (bid + ask) as f64 / 2.0;
            let r = (mid / reference.fair(i)).ln();
            // The walk's spread over ten minutes, plus the quote's own offset
            // from the fair value (up to half the spread).
            let sd_walk = reference.volatility(i) * (ten_min * 1e9 / YEAR_NS_FOR_TESTS).sqrt();
            let sd_cut = (ask - bid) as f64 / 2.0 / mid;
            let zi = r / (sd_walk * sd_walk + sd_cut * sd_cut).sqrt();
            assert!(zi.abs() < 6.0, "{} ran away: {r:+.4} (z {zi:.1})", q.symbol);
            z.push(zi);
        }
    }
    z.sort_by(f64::total_cmp);
    let n = z.len() as f64;
    let median = z[z.len() / 2];
    let mean = z.iter().sum::<f64>() / n;
    let sd = (z.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
    eprintln!("z over {n} symbols: median {median:.3}, mean {mean:.3}, sd {sd:.3}");
    // 600 symbols: the median's own spread is about 0.05, the mean's 0.04.
    assert!(median.abs() < 0.2, "median z {median:.3}: drift");
    assert!(mean.abs() < 0.2, "mean z {mean:.3}: drift");
    // The moves have the intended size (the offset term makes it a bit less than 1).
    assert!((0.7..1.3).contains(&sd), "spread of z {sd:.3}");
}

const YEAR_NS_FOR_TESTS: f64 = 252.0 * 6.5 * 3600.0 * 1e9;

/// Every datagram a fast-forwarded run made, with its destination, in order.
fn capture(config: SimConfig, secs: u64) -> (SimSummary, Vec<(SocketAddr, Vec<u8>)>) {
    let mut config = config;
    config.duration = Some(Duration::from_secs(secs));
    let mut sim = Simulator::build(config, true).unwrap();
    sim.out.capture = Some(Vec::new());
    let summary = sim.run_inner(&AtomicBool::new(false));
    (summary, sim.out.capture.take().unwrap())
}

#[test]
fn quotes_stay_on_the_grid_and_trades_print_at_the_touch() {
    let mut config = quiet_config(50, 3_000);
    config.opening_auction = true;
    let (summary, packets) = capture(config, 20);
    let mut touch: BTreeMap<Locate, (Price, Price)> = BTreeMap::new();
    let mut sizes: BTreeMap<Locate, (u32, u32)> = BTreeMap::new();
    let mut books: BTreeMap<Locate, depth::Depth> = BTreeMap::new();
    let (mut quotes, mut trades) = (0, 0);
    for (_, p) in &packets {
        let p = Packet::parse(p).unwrap();
        for m in p.messages() {
            match decode_message(m).unwrap() {
                Message::Quote {
                    locate,
                    bid,
                    ask,
                    bid_size,
                    ask_size,
                    ..
                } => {
                    assert!(bid < ask, "{bid} !< {ask}");
                    assert!(bid.raw() > 0 && bid.raw() % 100 == 0 && ask.raw() % 100 == 0);
                    assert!(bid_size > 0 && bid_size % 100 == 0 && ask_size % 100 == 0);
                    touch.insert(locate, (bid, ask));
                    sizes.insert(locate, (bid_size, ask_size));
                    quotes += 1;
                }
                Message::Level {
                    locate,
                    side,
                    price,
                    size,
                    orders,
                    ..
                } => {
                    let level = PriceLevel {
                        price,
                        size,
                        orders,
                    };
                    books.entry(locate).or_default().apply(side, level);
                }
                Message::Trade { locate, price, .. } => {
                    let (bid, ask) = touch[&locate];
                    // By the next event, the book's top is the quote.
                    let b = &books[&locate];
                    assert_eq!((b.bids[0].price, b.asks[0].price), (bid, ask));
                    assert_eq!((b.bids[0].size, b.asks[0].size), sizes[&locate]);
                    assert_eq!((b.bids.len(), b.asks.len()), (10, 10));
                    assert!(
                        price == bid || price == ask,
                        "trade {price} off {bid}/{ask}"
                    );
                    trades += 1;
                }
                _ => {}
            }
        }
    }
    assert!(
        quotes > 40_000 && trades > 8_000,
        "{quotes} quotes, {trades} trades"
    );
    // The books as published are the final state's.
    for q in &summary.quotes {
        let b = &books[&q.locate];
        let row = |l: &PriceLevel| (l.price, l.size, l.orders);
        assert_eq!(q.bids, b.bids.iter().map(row).collect::<Vec<_>>());
        assert_eq!(q.asks, b.asks.iter().map(row).collect::<Vec<_>>());
        assert_eq!((q.bid, q.bid_size), (Some(b.bids[0].price), b.bids[0].size));
    }
    // The auction opened every symbol: all quoted and traded.
    assert!(
        summary
            .quotes
            .iter()
            .all(|q| q.bid.is_some() && q.last.is_some())
    );
}

/// One `'S'` as read off the loop: locate, quote half, trade half, ts.
type LoopState = (Locate, Option<StateQuote>, Option<StateTrade>, u64);

#[test]
fn recovery_states_never_run_ahead_of_the_feed_and_the_last_cycle_is_the_final_state() {
    let mut config = quiet_config(20, 2_000);
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 3), 31003);
    config.recovery = Some(group);
    // Faster than the feed: several loop messages per turn of the engine.
    config.recovery_rate = 7_000;
    let (summary, packets) = capture(config, 3);
    let mut live_seen = 0u64; // one past the newest live message sent so far
    let mut loop_next = 1u64;
    let mut cycles: Vec<Vec<LoopState>> = Vec::new();
    let mut last_d: Option<Locate> = None;
    let mut ended = false;
    type Rows = Vec<(Price, u32, u32)>;
    let mut books: BTreeMap<Locate, (u64, Rows, Rows)> = BTreeMap::new();
    for (dest, p) in &packets {
        let p = Packet::parse(p).unwrap();
        assert_eq!(p.session.as_str(), "T");
        if *dest != SocketAddr::V4(group) {
            if p.kind == PacketKind::Data {
                live_seen = live_seen.max(p.end_seq());
            }
            continue;
        }
        assert!(!ended, "nothing after the loop's end of session");
        match p.kind {
            PacketKind::EndOfSession => {
                ended = true;
                assert_eq!(p.seq, loop_next);
                continue;
            }
            PacketKind::Heartbeat => {
                assert_eq!(p.seq, loop_next);
                continue;
            }
            PacketKind::Data => {}
        }
        assert_eq!(p.seq, loop_next, "the loop's sequence has no gap");
        loop_next = p.end_seq();
        for m in p.messages() {
            match decode_message(m).unwrap() {
                Message::Directory { locate, .. } => {
                    if last_d.is_none_or(|l| locate <= l) {
                        cycles.push(Vec::new());
                    }
                    last_d = Some(locate);
                }
                Message::State {
                    locate,
                    ts,
                    quote,
                    trade,
                } => {
                    assert_eq!(Some(locate), last_d, "each S follows its D");
                    for seq in [quote.map(|q| q.seq), trade.map(|t| t.seq)]
                        .into_iter()
                        .flatten()
                    {
                        assert!(seq < live_seen, "state at {seq} before the feed sent it");
                    }
                    cycles.last_mut().unwrap().push((locate, quote, trade, ts));
                }
                Message::Book {
                    locate,
                    book_seq,
                    bids,
                    asks,
                    ..
                } => {
                    assert_eq!(Some(locate), last_d, "each B follows its D and S");
                    assert!(
                        book_seq < live_seen,
                        "book at {book_seq} before the feed sent it"
                    );
                    let row = |l: PriceLevel| (l.price, l.size, l.orders);
                    books.insert(
                        locate,
                        (
                            book_seq,
                            bids.iter().map(row).collect(),
                            asks.iter().map(row).collect(),
                        ),
                    );
                }
                other => panic!("{other:?} on the loop"),
            }
        }
    }
    assert!(ended, "the loop ends with an end of session");
    // The last 'B' of every symbol is its final book.
    assert_eq!(books.len(), 20);
    for q in &summary.quotes {
        let (book_seq, bids, asks) = &books[&q.locate];
        assert_eq!(
            (q.book_seq, &q.bids, &q.asks),
            (*book_seq, bids, asks),
            "{}",
            q.symbol
        );
        assert_eq!((q.bids.len(), q.asks.len()), (10, 10), "{}", q.symbol);
    }
    assert_eq!(summary.recovery_next_seq, Some(loop_next));
    assert!(cycles.len() > 50, "{} cycles", cycles.len());
    // Every cycle is whole: one state per symbol, in locate order.
    for c in &cycles {
        let locates: Vec<Locate> = c.iter().map(|s| s.0).collect();
        assert_eq!(locates, (0..20).collect::<Vec<Locate>>());
    }
    let last = cycles.last().unwrap();
    for (q, (locate, quote, trade, ts)) in summary.quotes.iter().zip(last) {
        assert_eq!(q.locate, *locate);
        assert_eq!(q.quote_seq, quote.map_or(0, |x| x.seq), "{}", q.symbol);
        assert_eq!(q.trade_seq, trade.map_or(0, |x| x.seq), "{}", q.symbol);
        assert_eq!(q.bid, quote.map(|x| x.bid));
        assert_eq!(q.ask_size, quote.map_or(0, |x| x.ask_size));
        assert_eq!(q.last, trade.map(|x| x.last));
        assert_eq!(q.volume, trade.map_or(0, |x| x.volume));
        assert_eq!(q.ts, *ts);
    }
}

#[test]
fn fast_forward_is_deterministic_and_paced_by_the_rate() {
    let a = fast_forward(quiet_config(30, 1_000), Duration::from_secs(2)).unwrap();
    let b = fast_forward(quiet_config(30, 1_000), Duration::from_secs(2)).unwrap();
    // The same seed makes the same market; only the clock's epoch differs.
    let strip = |s: &SimSummary| -> Vec<FinalQuote> {
        s.quotes
            .iter()
            .map(|q| FinalQuote { ts: 0, ..q.clone() })
            .collect()
    };
    assert_eq!(strip(&a), strip(&b), "fast-forward is deterministic");
    // 30 directory entries, then 1,000 a second for two seconds (the
    // books' levels on top).
    let ticks = a.next_seq - 1 - a.book_messages;
    assert!((2_025..=2_031).contains(&(ticks + 1)), "{ticks}");
    // A few levels a quote (four in five quotes and trades are quotes).
    let ticks = ticks - 30;
    let per_quote = a.book_messages as f64 / (0.8 * ticks as f64);
    assert!(
        (1.0..6.0).contains(&per_quote),
        "{per_quote:.2} levels a quote"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|c| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The recovery packet of docs/FEED.md's worked example, made by the real
/// loop; `cargo test --lib sim::tests::feed_doc -- --nocapture` prints it.
#[test]
fn feed_doc_recovery_example_is_what_the_loop_sends() {
    let mut book = Book::default();
    book.listings.resize(6, None);
    book.listings[5] = Some(Listing {
        symbol: "AAPL".into(),
        name: "Apple Inc.".into(),
        prev_close: Price(1_870_000),
        listed_seq: 6,
        listed_ts: 1_764_300_000_000_000_000,
        quote: Some(StateQuote {
            seq: 1_234_567,
            bid: Price(1_891_200),
            ask: Price(1_891_400),
            bid_size: 300,
            ask_size: 200,
        }),
        trade: Some(StateTrade {
            seq: 1_234_560,
            last: Price(1_891_300),
            last_size: 100,
            volume: 4_512_300,
        }),
        ts: 1_764_300_000_123_456_789,
        depth: Default::default(),
    });
    let dest = SocketAddr::V4(DEFAULT_RECOVERY);
    let mut lp = RecoveryLoop::new(Session::new("DEMO"), dest);
    let mut packets = Vec::new();
    assert!(lp.push_next(&book, &mut |p| packets.push(p.to_vec())));
    assert!(lp.push_next(&book, &mut |p| packets.push(p.to_vec())));
    lp.flush(&mut |p| packets.push(p.to_vec()));
    assert_eq!(packets.len(), 1);
    assert_eq!(lp.completed, 1, "one symbol: D and S are the whole cycle");
    let dump = hex(&packets[0]);
    println!("{} bytes:\n{dump}", packets[0].len());
    let doc = include_str!("../../../docs/FEED.md");
    assert!(
        doc.contains(&dump),
        "docs/FEED.md should show this recovery packet:\n{dump}"
    );
    // The empty-half form: a symbol listed but never traded.
    let mut state_only = Vec::new();
    Message::State {
        locate: 5,
        ts: 1_764_300_000_123_456_789,
        quote: book.get(5).unwrap().quote,
        trade: None,
    }
    .encode(&mut state_only);
    let dump = hex(&state_only);
    println!("no trade:\n{dump}");
    assert!(doc.contains(&dump), "docs/FEED.md should show:\n{dump}");
}

/// The book messages of docs/FEED.md's worked example ("Depth of book"),
/// made by the real encoder; `cargo test --lib sim::tests::feed_doc_book
/// -- --nocapture` prints them.
#[test]
fn feed_doc_book_example_is_what_the_encoder_writes() {
    use crate::wire::{Levels, Side};
    let ts = 1_764_300_000_123_456_789;
    let lv = |price: i64, size: u32, orders: u32| PriceLevel {
        price: Price(price),
        size,
        orders,
    };
    let level = Message::Level {
        locate: 5,
        ts,
        side: Side::Bid,
        price: Price(1_891_200),
        size: 300,
        orders: 3,
    };
    let bids = [lv(1_891_200, 300, 3), lv(1_891_100, 100, 1)];
    let asks = [lv(1_891_400, 200, 2), lv(1_891_500, 500, 4)];
    let book = Message::Book {
        locate: 5,
        ts,
        book_seq: 1_234_570,
        bids: Levels::from_slice(&bids),
        asks: Levels::from_slice(&asks),
    };
    let doc = include_str!("../../../docs/FEED.md");
    let dumps: Vec<(&str, String)> = [("level", level), ("book", book)]
        .into_iter()
        .map(|(what, msg)| {
            let mut bytes = Vec::new();
            msg.encode(&mut bytes);
            assert_eq!(decode_message(&bytes), Ok(msg));
            println!("{what}, {} bytes:\n{}", bytes.len(), hex(&bytes));
            (what, hex(&bytes))
        })
        .collect();
    for (what, dump) in dumps {
        assert!(
            doc.contains(&dump),
            "docs/FEED.md should show the {what}:\n{dump}"
        );
    }
}

#[test]
#[ignore = "prints the book rate at the defaults"]
fn book_rate_at_the_defaults() {
    let s = fast_forward(SimConfig::default(), Duration::from_secs(10)).unwrap();
    let ticks = s.next_seq - 1 - s.book_messages - 1000;
    eprintln!(
        "{} levels, {ticks} quotes and trades: {:.2} a quote",
        s.book_messages,
        s.book_messages as f64 / (0.8 * ticks as f64)
    );
}
