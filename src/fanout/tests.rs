use std::collections::HashSet;

use super::*;
use crate::metrics::Metrics;
use crate::price::Price;
use crate::table::Quote;
use crate::wire::{Locate, Message, Session};

/// A table listing `symbols` (locates 0, 1, …; their directory entries at
/// sequences 1..=n), for the fan-out's and the transports' unit tests.
pub(crate) fn table_with(symbols: &[&str]) -> Arc<Table> {
    let table = Arc::new(Table::new());
    for (i, s) in symbols.iter().enumerate() {
        table.apply(
            i as u64 + 1,
            &Message::Directory {
                locate: i as Locate,
                ts: 1,
                symbol: s,
                name: s,
                prev_close: Price(1),
            },
        );
    }
    table.set_last_seq(symbols.len() as u64);
    table
}

fn setup(symbols: &[&str]) -> (Arc<Table>, Arc<Hub>, HubListener) {
    let table = table_with(symbols);
    let metrics = Metrics::new();
    let hub = Hub::new(table.clone(), metrics.stream.clone());
    let listener = hub.listener();
    (table, hub, listener)
}

fn quote(table: &Table, l: &mut HubListener, seq: u64, locate: Locate, bid: i64) {
    table.apply(
        seq,
        &Message::Quote {
            locate,
            ts: seq,
            bid: Price(bid),
            ask: Price(bid + 1),
            bid_size: 1,
            ask_size: 1,
        },
    );
    table.set_last_seq(seq);
    l.changed(locate, seq);
}

#[test]
fn conflate_keeps_one_mark_per_symbol_and_reads_the_newest() {
    let (table, hub, mut l) = setup(&["A", "B"]);
    let c = hub.register(Transport::Ws, 16);
    hub.subscribe(&c, &Arc::from("A"), false);
    for i in 0..100 {
        quote(&table, &mut l, 10 + i, 0, 100 + i as i64);
        l.batch_done(10 + i);
        hub.fan_out_all();
    }
    quote(&table, &mut l, 200, 1, 5);
    l.batch_done(200);
    hub.fan_out_all();
    assert_eq!(hub.fanned_seq(), 200);
    let (marks, every, overflow, reset) = c.take().into_parts();
    assert_eq!(marks, vec![0], "one mark for A, none for unsubscribed B");
    assert!(every.is_empty() && !overflow && reset.is_none());
    let q = hub.current(0).unwrap();
    assert_eq!(q.quote.bid, Some(Price(199)));
    assert!(
        Arc::ptr_eq(&q, &hub.current(0).unwrap()),
        "encoded once, shared"
    );
}

#[test]
fn every_mode_queues_each_change_and_overflows() {
    let (table, hub, mut l) = setup(&["A"]);
    let c = hub.register(Transport::Ws, 5);
    hub.subscribe(&c, &Arc::from("A"), true);
    for i in 0..3 {
        quote(&table, &mut l, 10 + i, 0, i as i64);
    }
    l.batch_done(12);
    hub.fan_out_all();
    let (marks, every, overflow, _) = c.take().into_parts();
    assert!(marks.is_empty());
    assert_eq!(
        every.iter().map(|e| e.quote.seq).collect::<Vec<_>>(),
        vec![10, 11, 12]
    );
    assert!(!overflow);
    for i in 0..10 {
        quote(&table, &mut l, 20 + i, 0, i as i64);
    }
    l.batch_done(29);
    hub.fan_out_all();
    assert!(c.take().overflow);
}

#[test]
fn unsubscribe_and_unregister_stop_delivery() {
    let (table, hub, mut l) = setup(&["A"]);
    let c = hub.register(Transport::Sse, 16);
    let a: Arc<str> = Arc::from("A");
    hub.subscribe(&c, &a, false);
    hub.unsubscribe(&c, std::slice::from_ref(&a));
    quote(&table, &mut l, 10, 0, 1);
    l.batch_done(10);
    hub.fan_out_all();
    assert!(c.take().marks.is_empty());
    hub.subscribe(&c, &a, false);
    hub.unregister(&c, std::slice::from_ref(&a));
    assert!(hub.shards[0].subs.read().is_empty());
    assert!(hub.shards[0].clients.lock().is_empty());
}

#[test]
fn shards_each_serve_their_clients_every_change() {
    let table = Arc::new(Table::new());
    table.apply(
        1,
        &Message::Directory {
            locate: 0,
            ts: 1,
            symbol: "A",
            name: "A",
            prev_close: Price(1),
        },
    );
    let hub = Hub::with_shards(table.clone(), Metrics::new().stream.clone(), 3);
    let mut l = hub.listener();
    let clients: Vec<_> = (0..6).map(|_| hub.register(Transport::Ws, 16)).collect();
    let shards: HashSet<u32> = clients.iter().map(|c| c.shard).collect();
    assert_eq!(shards.len(), 3, "clients spread over every shard");
    for c in &clients {
        hub.subscribe(c, &Arc::from("A"), false);
    }
    quote(&table, &mut l, 10, 0, 5);
    l.batch_done(10);
    // One shard fanned out: its clients are promised seq 10, the others not yet.
    hub.fan_out(&hub.shards[clients[0].shard as usize]);
    assert_eq!(hub.fanned_seq_for(&clients[0]), 10);
    assert_eq!(hub.fanned_seq(), 0, "the slowest shard bounds the hub's");
    hub.fan_out_all();
    assert_eq!(hub.fanned_seq(), 10);
    for c in &clients {
        assert_eq!(c.take().marks, vec![0]);
    }
}

#[test]
fn wildcard_gets_everything_and_reset_reaches_everyone() {
    let (table, hub, mut l) = setup(&["A", "B"]);
    let c = hub.register(Transport::Ws, 16);
    hub.subscribe_all(&c);
    quote(&table, &mut l, 10, 0, 1);
    quote(&table, &mut l, 11, 1, 1);
    l.batch_done(11);
    hub.fan_out_all();
    assert_eq!(c.take().marks, vec![0, 1]);
    table.reset(Session::new("NEW"));
    l.session_reset(Session::new("NEW"));
    l.batch_done(0);
    hub.fan_out_all();
    assert_eq!(c.take().reset, Some(Session::new("NEW")));
}

#[test]
fn envelopes_are_valid_json_and_msgpack() {
    let (table, hub, mut l) = setup(&["A", "B"]);
    quote(&table, &mut l, 10, 0, 12_345);
    let qs = vec![hub.current(0).unwrap(), hub.current(1).unwrap()];
    let v: serde_json::Value = serde_json::from_slice(&envelope::ws_ticks_json(10, &qs)).unwrap();
    assert_eq!(v["type"], "ticks");
    assert_eq!(v["quotes"][0]["bid"], "1.2345");
    let v: serde_json::Value =
        serde_json::from_slice(&envelope::ws_snapshot_json(10, "S\"1", &qs)).unwrap();
    assert_eq!(v["session"], "S\"1");
    #[derive(serde::Deserialize)]
    struct Ticks {
        r#type: String,
        seq: u64,
        quotes: Vec<Quote>,
    }
    let t: Ticks = rmp_serde::from_slice(&envelope::ws_ticks_msgpack(10, &qs)).unwrap();
    assert_eq!((t.r#type.as_str(), t.seq), ("ticks", 10));
    assert_eq!(t.quotes[0], qs[0].quote);
}

/// Marks are deduplicated by a scan while few and by a set once many; the
/// drain gets each locate once, in order of its first mark, either way.
#[test]
fn marks_are_unique_below_and_above_the_scan_limit() {
    for n in [
        3,
        super::pending::SCAN_MARKS - 1,
        super::pending::SCAN_MARKS,
        5 * super::pending::SCAN_MARKS,
    ] {
        let mut p = Pending::default();
        for round in 0..3 {
            for l in 0..n as Locate {
                assert_eq!(p.insert_mark(l), round == 0, "{n} marks, locate {l}");
            }
        }
        assert_eq!(p.marks, (0..n as Locate).collect::<Vec<_>>(), "{n} marks");
    }
}
