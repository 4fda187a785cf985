use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use proptest::prelude::*;

use super::*;

/// One `'L'` of a test feed: side, price, size (0 deletes), orders.
type L = (Side, i64, u32, u32);

fn level(price: i64, size: u32, orders: u32) -> PriceLevel {
    PriceLevel {
        price: Price(price),
        size,
        orders,
    }
}

/// The book a plain map gives after `ls`, best first per side.
fn reference(ls: &[L]) -> [Vec<PriceLevel>; 2] {
    let mut sides: [BTreeMap<i64, (u32, u32)>; 2] = Default::default();
    for &(side, price, size, orders) in ls {
        let s = &mut sides[side.index()];
        if size == 0 {
            s.remove(&price);
        } else {
            s.insert(price, (size, orders));
        }
    }
    let row = |(&p, &(s, o)): (&i64, &(u32, u32))| level(p, s, o);
    [
        sides[0].iter().rev().map(row).collect(),
        sides[1].iter().map(row).collect(),
    ]
}

fn apply(books: &Books, seq: u64, l: L) -> bool {
    let (side, price, size, orders) = l;
    books.apply_level(seq, 1, seq, side, level(price, size, orders))
}

fn apply_b(books: &Books, book_seq: u64, book: &[Vec<PriceLevel>; 2]) -> bool {
    books.apply_book(
        1,
        book_seq,
        book_seq,
        Levels::from_slice(&book[0]),
        Levels::from_slice(&book[1]),
    )
}

fn sides(books: &Books) -> [Vec<PriceLevel>; 2] {
    let r = books.read(1, 1000);
    [r.bids, r.asks]
}

/// The feed sequence of the i-th `'L'` (1-based): other messages between.
fn seq_of(i: usize) -> u64 {
    3 * i as u64
}

#[test]
fn an_insert_at_the_top_a_delete_of_the_best_and_a_move() {
    let b = Books::new(50);
    assert!(apply(&b, 1, (Side::Bid, 100, 300, 3)));
    assert!(apply(&b, 2, (Side::Bid, 99, 200, 2)));
    assert!(apply(&b, 3, (Side::Bid, 101, 100, 1)));
    assert!(apply(&b, 4, (Side::Ask, 103, 100, 1)));
    assert!(apply(&b, 5, (Side::Ask, 102, 500, 5)));
    let r = b.read(1, 10);
    assert_eq!(
        r.bids,
        [level(101, 100, 1), level(100, 300, 3), level(99, 200, 2)]
    );
    assert_eq!(r.asks, [level(102, 500, 5), level(103, 100, 1)]);
    assert_eq!(r.seq, 5);
    // The best bid goes; an unknown level's delete changes nothing.
    assert!(apply(&b, 6, (Side::Bid, 101, 0, 0)));
    assert!(!apply(&b, 7, (Side::Bid, 50, 0, 0)));
    // Same size and orders again: no change.
    assert!(!apply(&b, 8, (Side::Ask, 102, 500, 5)));
    let r = b.read(1, 2);
    assert_eq!(r.bids, [level(100, 300, 3), level(99, 200, 2)]);
    assert_eq!(r.asks, [level(102, 500, 5), level(103, 100, 1)]);
    assert_eq!(r.seq, 8, "the book reflects the last 'L'");
    // An 'L' no newer than the book is already in it.
    assert!(!apply(&b, 8, (Side::Bid, 120, 100, 1)));
    assert!(!apply(&b, 3, (Side::Bid, 120, 100, 1)));
    assert_eq!(b.changes(), 6);
}

#[test]
fn levels_beyond_the_bound_are_counted_not_kept() {
    let b = Books::new(3);
    for (i, p) in [100, 99, 98].into_iter().enumerate() {
        apply(&b, i as u64 + 1, (Side::Bid, p, 100, 1));
    }
    assert_eq!(b.dropped(), 0);
    // Worse than the three kept: not kept.
    assert!(!apply(&b, 4, (Side::Bid, 97, 100, 1)));
    assert_eq!(b.dropped(), 1);
    // Better: kept, and the worst falls off.
    assert!(apply(&b, 5, (Side::Bid, 101, 100, 1)));
    assert_eq!(b.dropped(), 2);
    let prices: Vec<i64> = b.read(1, 10).bids.iter().map(|l| l.price.raw()).collect();
    assert_eq!(prices, [101, 100, 99]);
    // A 'B' of five levels a side keeps three.
    let five: Vec<PriceLevel> = (0..5).map(|i| level(200 + i, 1, 1)).collect();
    assert!(apply_b(&b, 10, &[vec![], five]));
    assert_eq!(b.dropped(), 4);
    assert_eq!(b.read(1, 10).asks.len(), 3);
}

#[test]
fn a_book_older_than_the_live_one_is_ignored_a_newer_one_replaces_it() {
    let b = Books::new(50);
    apply(&b, 10, (Side::Bid, 100, 100, 1));
    let older = [vec![level(90, 1, 1)], vec![]];
    assert!(!apply_b(&b, 9, &older));
    assert!(!apply_b(&b, 10, &older));
    assert_eq!(sides(&b)[0], [level(100, 100, 1)]);
    let newer = [vec![level(95, 5, 1)], vec![level(96, 6, 2)]];
    assert!(apply_b(&b, 12, &newer));
    assert_eq!(sides(&b), newer);
    assert_eq!(b.read(1, 1).seq, 12);
    // The 'L's it reflects are skipped.
    assert!(!apply(&b, 11, (Side::Bid, 100, 100, 1)));
    assert!(apply(&b, 13, (Side::Bid, 100, 100, 1)));
}

#[test]
fn while_recovering_a_b_overtaken_by_live_levels_still_fills_the_book() {
    // A late joiner: the book is empty, live 'L's arrive, then the loop's
    // 'B' as of an earlier 'L'.
    let b = Books::new(50);
    b.begin_recovery();
    assert!(apply(&b, 20, (Side::Bid, 100, 700, 7)));
    assert!(apply(&b, 21, (Side::Ask, 105, 100, 1)));
    let as_of_15 = [
        vec![level(100, 300, 3), level(99, 200, 2)],
        vec![level(104, 100, 1)],
    ];
    assert!(apply_b(&b, 15, &as_of_15));
    let want = [
        vec![level(100, 700, 7), level(99, 200, 2)],
        vec![level(104, 100, 1), level(105, 100, 1)],
    ];
    assert_eq!(sides(&b), want);
    assert_eq!(b.read(1, 1).seq, 21);
    // Retransmitted history out of order: rebuilt at the next settle.
    assert!(!apply(&b, 18, (Side::Ask, 104, 0, 0)));
    let mut told = Vec::new();
    b.settle(|l, s| told.push((l, s)));
    assert_eq!(told, [(1, 21)]);
    assert_eq!(sides(&b)[1], [level(105, 100, 1)]);
    b.end_recovery(|_, _| panic!("nothing left to settle"));
    // Whole again: an older 'B' is ignored.
    assert!(!apply_b(&b, 19, &as_of_15));
}

#[test]
fn clear_and_reset_empty_books() {
    let b = Books::new(50);
    apply(&b, 1, (Side::Bid, 100, 100, 1));
    b.clear(1);
    assert_eq!(
        b.read(1, 10),
        BookRead {
            stamp: b.read(1, 10).stamp,
            ..BookRead::default()
        }
    );
    apply(&b, 2, (Side::Bid, 100, 100, 1));
    b.begin_recovery();
    b.reset();
    assert!(b.read(1, 10).bids.is_empty());
    // After a reset a new session's 'L' 1 applies, and no recovery is on.
    assert!(apply(&b, 1, (Side::Ask, 100, 100, 1)));
    assert_eq!(b.read(7, 10), BookRead::default(), "never written");
}

/// Readers never see a torn book: the writer replaces the whole book with
/// levels all of one size, so a read mixing two writes would show two sizes.
#[test]
fn readers_never_see_a_torn_book() {
    let b = Arc::new(Books::new(50));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            let mut out = BookRead::default();
            while !stop.load(Ordering::Relaxed) {
                b.read_into(1, 50, &mut out);
                let sizes: Vec<u32> = out.bids.iter().chain(&out.asks).map(|l| l.size).collect();
                assert!(sizes.windows(2).all(|w| w[0] == w[1]), "torn: {sizes:?}");
                if let Some(&s) = sizes.first() {
                    assert_eq!(u64::from(s), out.seq, "levels and seq of one write");
                }
                reads += 1;
            }
            reads
        })
    };
    for g in 1..20_000u32 {
        let n = (g % 50) as i64;
        let side: Vec<PriceLevel> = (0..n).map(|i| level(1000 - i, g, 1)).collect();
        let asks: Vec<PriceLevel> = (0..n).map(|i| level(2000 + i, g, 1)).collect();
        assert!(apply_b(&b, u64::from(g), &[side, asks]) || n == 0);
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
}

fn arb_levels() -> impl Strategy<Value = Vec<L>> {
    proptest::collection::vec(
        (
            prop_oneof![Just(Side::Bid), Just(Side::Ask)],
            1i64..30,
            prop_oneof![Just(0u32), 1u32..5],
            1u32..4,
        )
            .prop_map(|(side, p, size, orders)| (side, p * 100, size * 100, orders)),
        1..60,
    )
}

proptest! {
    /// In order, with a `'B'` reflecting the first `k` of them delivered
    /// after any `j` (older or newer than the book then): the same book.
    #[test]
    fn a_b_anywhere_among_the_levels_gives_the_same_book(
        ls in arb_levels(),
        k in any::<prop::sample::Index>(),
        j in any::<prop::sample::Index>(),
    ) {
        let n = ls.len();
        let (k, j) = (k.index(n + 1), j.index(n + 1));
        let b = Books::new(50);
        let snap = reference(&ls[..k]);
        for (i, &l) in ls.iter().enumerate() {
            if i == j {
                apply_b(&b, if k == 0 { 0 } else { seq_of(k) }, &snap);
            }
            apply(&b, seq_of(i + 1), l);
        }
        if j == n {
            apply_b(&b, if k == 0 { 0 } else { seq_of(k) }, &snap);
        }
        prop_assert_eq!(sides(&b), reference(&ls));
        prop_assert_eq!(b.read(1, 1).seq, seq_of(n));
    }

    /// Recovering: the first `m` applied before recovery began, the rest in
    /// any order (some twice), a `'B'` of the first `k` anywhere among
    /// them: once settled, the same book, and still after recovery ends.
    #[test]
    fn recovering_any_order_of_levels_and_a_b_gives_the_same_book(
        ls in arb_levels(),
        m in any::<prop::sample::Index>(),
        k in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        order in any::<u64>(),
        twice in proptest::collection::vec(any::<prop::sample::Index>(), 0..5),
    ) {
        let n = ls.len();
        let (m, k) = (m.index(n + 1), k.index(n + 1));
        let b = Books::new(50);
        for (i, &l) in ls[..m].iter().enumerate() {
            apply(&b, seq_of(i + 1), l);
        }
        b.begin_recovery();
        let mut rest: Vec<usize> = (m..n).collect();
        rest.extend(twice.iter().filter(|_| n > m).map(|t| m + t.index(n - m)));
        // A shuffle from the drawn seed (Fisher–Yates on a simple LCG).
        let mut x = order | 1;
        for i in (1..rest.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            rest.swap(i, (x >> 33) as usize % (i + 1));
        }
        let at = at.index(rest.len() + 1);
        let snap = reference(&ls[..k]);
        for (p, &i) in rest.iter().enumerate() {
            if p == at {
                apply_b(&b, if k == 0 { 0 } else { seq_of(k) }, &snap);
            }
            apply(&b, seq_of(i + 1), ls[i]);
        }
        if at == rest.len() {
            apply_b(&b, if k == 0 { 0 } else { seq_of(k) }, &snap);
        }
        b.settle(|_, _| {});
        prop_assert_eq!(sides(&b), reference(&ls));
        b.end_recovery(|_, _| {});
        prop_assert_eq!(sides(&b), reference(&ls));
    }
}
