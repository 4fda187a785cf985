//! The recorder, the store and the report together, on real SQLite files in
//! a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use rusqlite::Connection;

use crate::usage::day::DAY_MS;
use crate::usage::{Class, Error, MAX_SYMBOLS_PER_DAY, Store, Usage, report, spawn_flusher};

/// 2026-12-01T00:00:00Z.
const DEC1: u64 = 1_796_083_200_000;
const HOUR: u64 = 3_600_000;

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tickrelay-usage-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A recorder on a clock the test sets.
fn recorder(start: u64) -> (Usage, Arc<AtomicU64>) {
    let now = Arc::new(AtomicU64::new(start));
    let clock = now.clone();
    (Usage::with_clock(move || clock.load(Relaxed)), now)
}

fn names(list: &[&str]) -> Vec<Arc<str>> {
    list.iter().map(|s| Arc::from(*s)).collect()
}

/// A stored row, as read back with a plain connection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    day: String,
    sub: String,
    class: String,
    delayed: bool,
    first: u64,
    last: u64,
    max_connections: u64,
    symbols: u64,
    symbol_list: String,
    messages: u64,
    bytes: u64,
    requests: u64,
}

fn rows(path: &Path) -> Vec<Row> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT day, sub, class, delayed, first_seen_ms, last_seen_ms, max_connections,
                    symbols, symbol_list, messages, bytes, requests
             FROM usage ORDER BY day, sub, class, delayed",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(Row {
            day: r.get(0)?,
            sub: r.get(1)?,
            class: r.get(2)?,
            delayed: r.get(3)?,
            first: r.get::<_, i64>(4)? as u64,
            last: r.get::<_, i64>(5)? as u64,
            max_connections: r.get::<_, i64>(6)? as u64,
            symbols: r.get::<_, i64>(7)? as u64,
            symbol_list: r.get(8)?,
            messages: r.get::<_, i64>(9)? as u64,
            bytes: r.get::<_, i64>(10)? as u64,
            requests: r.get::<_, i64>(11)? as u64,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn a_flush_is_read_back_by_the_report() {
    let dir = TempDir::new("flush");
    let db = dir.file("relay.db");
    let store = Store::open(&db).unwrap();
    let (usage, now) = recorder(DEC1 + 10 * HOUR);

    let alice = usage.user("alice", Class::Pro, false);
    let conn = alice.connect();
    alice.saw_symbols(&names(&["AAPL", "MSFT", "AAPL"]));
    alice.delivered(10, 1_000);
    alice.delivered(5, 500);
    let bob = usage.user("bob", Class::Nonpro, true);
    now.store(DEC1 + 11 * HOUR, Relaxed);
    bob.request();
    now.store(DEC1 + 12 * HOUR, Relaxed);
    bob.request();
    bob.delivered(2, 100);

    let stats = store.flush_at(&usage, DEC1 + 13 * HOUR).unwrap();
    assert_eq!((stats.day.as_str(), stats.rows), ("2026-12-01", 2));
    let r = rows(&db);
    assert_eq!(r.len(), 2);
    assert_eq!(
        r[0],
        Row {
            day: "2026-12-01".into(),
            sub: "alice".into(),
            class: "pro".into(),
            delayed: false,
            first: DEC1 + 10 * HOUR,
            // Still connected: last seen at the flush.
            last: DEC1 + 13 * HOUR,
            max_connections: 1,
            symbols: 2,
            symbol_list: "AAPL MSFT".into(),
            messages: 15,
            bytes: 1_500,
            requests: 0,
        }
    );
    assert_eq!(
        (r[1].first, r[1].last),
        (DEC1 + 11 * HOUR, DEC1 + 12 * HOUR)
    );
    assert_eq!(
        (r[1].requests, r[1].messages, r[1].max_connections),
        (2, 2, 0)
    );

    let rep = report(std::slice::from_ref(&db), "2026-12").unwrap();
    assert_eq!(rep.users_total, 2);
    assert_eq!(
        (rep.by_class.pro.real_time, rep.by_class.pro.delayed),
        (1, 0)
    );
    assert_eq!(
        (rep.by_class.nonpro.real_time, rep.by_class.nonpro.delayed),
        (0, 1)
    );
    let a = &rep.users[0];
    assert_eq!(
        (a.sub.as_str(), a.class, a.delayed, a.days),
        ("alice", Class::Pro, false, 1)
    );
    assert_eq!(
        (a.messages, a.bytes, a.symbols, a.all_symbols),
        (15, 1_500, 2, false)
    );
    assert_eq!(a.first_seen, "2026-12-01T10:00:00Z");
    assert_eq!(a.seen_as, ["pro/real_time"]);
    // Other months hold nothing.
    assert_eq!(report(&[db], "2026-11").unwrap().users_total, 0);
    drop(conn);
}

#[test]
fn two_flushes_add_their_deltas_not_their_totals() {
    let dir = TempDir::new("deltas");
    let db = dir.file("relay.db");
    let store = Store::open(&db).unwrap();
    let (usage, _) = recorder(DEC1 + HOUR);
    let u = usage.user("alice", Class::Nonpro, false);
    u.delivered(10, 100);
    u.request();
    store.flush_at(&usage, DEC1 + HOUR + 5_000).unwrap();
    u.delivered(5, 50);
    store.flush_at(&usage, DEC1 + HOUR + 10_000).unwrap();
    // Nothing new: nothing written, nothing doubled.
    let stats = store.flush_at(&usage, DEC1 + HOUR + 15_000).unwrap();
    assert_eq!(stats.rows, 0);
    let r = rows(&db);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].messages, r[0].bytes, r[0].requests), (15, 150, 1));
    // A store opened again on the same file adds to it.
    drop(store);
    let store = Store::open(&db).unwrap();
    u.delivered(1, 1);
    store.flush_at(&usage, DEC1 + HOUR + 20_000).unwrap();
    assert_eq!(rows(&db)[0].messages, 16);
}

#[test]
fn a_day_boundary_splits_the_rows() {
    let dir = TempDir::new("day");
    let db = dir.file("relay.db");
    let store = Store::open(&db).unwrap();
    let dec2 = DEC1 + DAY_MS;
    let (usage, now) = recorder(DEC1 + 23 * HOUR);
    // Alice stays connected over midnight; Bob subscribed on the 1st and left.
    let alice = usage.user("alice", Class::Pro, false);
    let conn = alice.connect();
    alice.saw_symbols(&names(&["AAPL", "MSFT"]));
    alice.delivered(7, 70);
    let bob = usage.user("bob", Class::Pro, true);
    bob.request();
    bob.saw_symbols(&names(&["IBM"]));
    // The flusher's midnight flush: the last millisecond of the 1st.
    store.flush_at(&usage, dec2 - 1).unwrap();
    now.store(dec2 + 1_000, Relaxed);
    alice.delivered(3, 30);
    alice.saw_symbols(&names(&["TSLA"]));
    store.flush_at(&usage, dec2 + 5_000).unwrap();

    let r = rows(&db);
    let day = |d: &str, s: &str| r.iter().find(|x| x.day == d && x.sub == s).cloned();
    let a1 = day("2026-12-01", "alice").unwrap();
    let a2 = day("2026-12-02", "alice").unwrap();
    assert_eq!(
        (a1.messages, a1.first, a1.last),
        (7, DEC1 + 23 * HOUR, dec2 - 1)
    );
    assert_eq!(a1.symbol_list, "AAPL MSFT");
    // Connected since before midnight: first seen at 00:00, its connection
    // counted, and its tickers carried over.
    assert_eq!((a2.messages, a2.first, a2.last), (3, dec2, dec2 + 5_000));
    assert_eq!(a2.max_connections, 1);
    assert_eq!(a2.symbol_list, "AAPL MSFT TSLA");
    assert!(day("2026-12-01", "bob").is_some());
    assert!(
        day("2026-12-02", "bob").is_none(),
        "bob did nothing on the 2nd"
    );

    let rep = report(std::slice::from_ref(&db), "2026-12").unwrap();
    let a = &rep.users[0];
    assert_eq!((a.days, a.messages, a.symbols), (2, 10, 3));
    assert_eq!(
        (a.first_seen_ms, a.last_seen_ms),
        (DEC1 + 23 * HOUR, dec2 + 5_000)
    );

    drop(conn);
    store.flush_at(&usage, dec2 + 6_000).unwrap();
    // A flush late past midnight records what it holds under its own day.
    now.store(dec2 + DAY_MS + HOUR, Relaxed);
    bob.request();
    store.flush_at(&usage, dec2 + DAY_MS + HOUR).unwrap();
    let b3 = rows(&db)
        .into_iter()
        .find(|x| x.day == "2026-12-03")
        .unwrap();
    assert_eq!((b3.sub.as_str(), b3.requests, b3.symbols), ("bob", 1, 0));
}

#[test]
fn a_month_boundary_is_a_day_boundary() {
    let dir = TempDir::new("month");
    let db = dir.file("relay.db");
    let store = Store::open(&db).unwrap();
    let jan1 = 1_798_761_600_000;
    let (usage, now) = recorder(jan1 - HOUR);
    let u = usage.user("alice", Class::Pro, false);
    u.request();
    store.flush_at(&usage, jan1 - 1).unwrap();
    now.store(jan1 + HOUR, Relaxed);
    u.request();
    u.request();
    store.flush_at(&usage, jan1 + HOUR).unwrap();
    assert_eq!(
        report(std::slice::from_ref(&db), "2026-12").unwrap().users[0].requests,
        1
    );
    assert_eq!(report(&[db], "2027-01").unwrap().users[0].requests, 2);
}

#[test]
fn the_most_concurrent_connections_are_kept_per_day() {
    let dir = TempDir::new("max");
    let db = dir.file("relay.db");
    let store = Store::open(&db).unwrap();
    let (usage, _) = recorder(DEC1 + HOUR);
    let u = usage.user("alice", Class::Pro, false);
    let c1 = u.connect();
    let c2 = u.connect();
    let c3 = u.connect();
    assert_eq!(u.open_connections(), 3);
    drop(c3);
    store.flush_at(&usage, DEC1 + 2 * HOUR).unwrap();
    drop(c2);
    store.flush_at(&usage, DEC1 + 3 * HOUR).unwrap();
    // A peak between flushes is not missed.
    let c4 = u.connect();
    let c5 = u.connect();
    drop((c4, c5));
    store.flush_at(&usage, DEC1 + 4 * HOUR).unwrap();
    assert_eq!(rows(&db)[0].max_connections, 3);
    // The next day starts from what is open then.
    store.flush_at(&usage, DEC1 + DAY_MS + HOUR).unwrap();
    let r = rows(&db);
    assert_eq!((r[1].day.as_str(), r[1].max_connections), ("2026-12-02", 1));
    drop(c1);
    assert_eq!(u.open_connections(), 0);
    assert_eq!(
        report(&[db], "2026-12").unwrap().users[0].max_connections,
        3
    );
}

#[test]
fn a_user_on_two_relays_counts_once_and_their_traffic_adds_up() {
    let dir = TempDir::new("merge");
    let (a, b) = (dir.file("a.db"), dir.file("b.db"));
    let at = DEC1 + 5 * DAY_MS;
    for (db, msgs, conns, syms) in [
        (&a, 10, 2, &["AAPL", "MSFT"][..]),
        (&b, 32, 1, &["MSFT", "IBM", "*"][..]),
    ] {
        let store = Store::open(db).unwrap();
        let (usage, _) = recorder(at - HOUR);
        let u = usage.user("alice", Class::Pro, false);
        let guards: Vec<_> = (0..conns).map(|_| u.connect()).collect();
        u.saw_symbols(&names(syms));
        u.delivered(msgs, msgs * 100);
        store.flush_at(&usage, at).unwrap();
        drop(guards);
        store.flush_at(&usage, at + 1).unwrap();
    }
    // Dave: nonpro delayed on relay a, pro real time on relay b.
    let (usage, _) = recorder(at);
    usage.user("dave", Class::Nonpro, true).request();
    Store::open(&a).unwrap().flush_at(&usage, at).unwrap();
    usage.user("dave", Class::Pro, false).request();
    Store::open(&b)
        .unwrap()
        .flush_at(&usage, at + DAY_MS)
        .unwrap();
    // Erin: delayed on both.
    let (usage, _) = recorder(at);
    usage.user("erin", Class::Nonpro, true).request();
    Store::open(&a).unwrap().flush_at(&usage, at).unwrap();
    usage.user("erin", Class::Nonpro, true).request();
    Store::open(&b).unwrap().flush_at(&usage, at).unwrap();

    let rep = report(&[a.clone(), b.clone()], "2026-12").unwrap();
    assert_eq!(rep.users_total, 3);
    assert_eq!(
        (rep.by_class.pro.real_time, rep.by_class.pro.delayed),
        (2, 0)
    );
    assert_eq!(
        (rep.by_class.nonpro.real_time, rep.by_class.nonpro.delayed),
        (0, 1)
    );
    let alice = &rep.users[0];
    assert_eq!(alice.sub, "alice");
    assert_eq!((alice.messages, alice.bytes), (42, 4_200));
    assert_eq!((alice.max_connections, alice.days), (2, 1));
    assert_eq!((alice.symbols, alice.all_symbols), (3, true));
    let dave = &rep.users[1];
    assert_eq!(
        (dave.class, dave.delayed, dave.days, dave.requests),
        (Class::Pro, false, 2, 2)
    );
    assert_eq!(dave.seen_as, ["nonpro/delayed", "pro/real_time"]);
    let erin = &rep.users[2];
    assert_eq!(
        (erin.class, erin.delayed, erin.requests),
        (Class::Nonpro, true, 2)
    );

    // One database alone: what the admin route reads.
    let one = report(&[a], "2026-12").unwrap();
    assert_eq!(one.users[0].messages, 10);
    assert_eq!(one.by_class.nonpro.delayed, 2);
}

#[test]
fn a_sub_whose_class_changes_within_a_day_gets_a_row_for_each() {
    let dir = TempDir::new("mixed");
    let db = dir.file("relay.db");
    let store = Store::open(&db).unwrap();
    let (usage, _) = recorder(DEC1 + HOUR);
    let before = usage.user("alice", Class::Nonpro, true);
    before.delivered(1, 10);
    // A refreshed token: now pro, real time.
    let after = usage.user("alice", Class::Pro, false);
    assert!(!Arc::ptr_eq(&before, &after));
    assert!(Arc::ptr_eq(&after, &usage.user("alice", Class::Pro, false)));
    after.delivered(2, 20);
    store.flush_at(&usage, DEC1 + 2 * HOUR).unwrap();
    let r = rows(&db);
    assert_eq!(r.len(), 2);
    assert_eq!(
        (r[0].class.as_str(), r[0].delayed, r[0].messages),
        ("nonpro", true, 1)
    );
    assert_eq!(
        (r[1].class.as_str(), r[1].delayed, r[1].messages),
        ("pro", false, 2)
    );
    let rep = report(&[db], "2026-12").unwrap();
    assert_eq!(rep.users_total, 1);
    assert_eq!(
        (
            rep.users[0].class,
            rep.users[0].delayed,
            rep.users[0].messages
        ),
        (Class::Pro, false, 3)
    );
}

#[test]
fn what_was_flushed_is_readable_while_the_writer_is_open() {
    let dir = TempDir::new("wal");
    let db = dir.file("relay.db");
    let store = Store::open(&db).unwrap();
    let (usage, _) = recorder(DEC1 + HOUR);
    let u = usage.user("alice", Class::Pro, false);
    u.delivered(10, 100);
    store.flush_at(&usage, DEC1 + HOUR).unwrap();
    // Counted after the last flush: what a kill -9 now would lose.
    u.delivered(99, 990);
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    assert!(wal.exists(), "WAL mode");
    let mode: String = Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let rep = report(std::slice::from_ref(&db), "2026-12").unwrap();
    assert_eq!(rep.users[0].messages, 10);
    // The writer never closes (as if killed): the file still reads.
    std::mem::forget(store);
    assert_eq!(report(&[db], "2026-12").unwrap().users[0].messages, 10);
}

#[test]
fn a_failed_flush_keeps_its_counts_for_the_next() {
    let dir = TempDir::new("fail");
    let db = dir.file("relay.db");
    let store = Store::open(&db).unwrap();
    let (usage, _) = recorder(DEC1 + HOUR);
    let u = usage.user("alice", Class::Pro, false);
    let conn = u.connect();
    u.saw_symbols(&names(&["AAPL"]));
    u.delivered(10, 100);
    // Another process breaks the database under the writer.
    Connection::open(&db)
        .unwrap()
        .execute_batch("DROP TABLE usage")
        .unwrap();
    assert!(matches!(
        store.flush_at(&usage, DEC1 + 2 * HOUR),
        Err(Error::Sql { .. })
    ));
    u.delivered(1, 1);
    drop(conn);
    drop(u);
    drop(store);
    let store = Store::open(&db).unwrap();
    store.flush_at(&usage, DEC1 + 3 * HOUR).unwrap();
    let r = rows(&db);
    assert_eq!(r.len(), 1);
    assert_eq!(
        (r[0].messages, r[0].bytes, r[0].max_connections),
        (11, 101, 1)
    );
    assert_eq!(
        (r[0].first, r[0].symbol_list.as_str()),
        (DEC1 + HOUR, "AAPL")
    );
    assert!(
        usage.is_empty(),
        "no one holds alice: retired after the flush"
    );
}

#[test]
fn counters_nobody_holds_are_dropped_after_their_flush() {
    let dir = TempDir::new("retire");
    let db = dir.file("relay.db");
    let store = Store::open(&db).unwrap();
    let (usage, _) = recorder(DEC1 + HOUR);
    let held = usage.user("alice", Class::Pro, false);
    let gone = usage.user("bob", Class::Pro, false);
    gone.delivered(4, 40);
    drop(gone);
    assert_eq!(usage.len(), 2);
    store.flush_at(&usage, DEC1 + 2 * HOUR).unwrap();
    assert_eq!(usage.len(), 1);
    // Bob comes back the same day: his counts add to his row.
    usage.user("bob", Class::Pro, false).delivered(1, 10);
    store.flush_at(&usage, DEC1 + 3 * HOUR).unwrap();
    let r = rows(&db);
    assert_eq!((r.len(), r[0].sub.as_str(), r[0].messages), (1, "bob", 5));
    drop(held);
}

#[test]
fn deliveries_from_many_threads_add_up_exactly_across_flushes() {
    let dir = TempDir::new("threads");
    let db = dir.file("relay.db");
    let store = Store::open(&db).unwrap();
    let (usage, _) = recorder(DEC1 + HOUR);
    let u = usage.user("alice", Class::Pro, false);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let u = u.clone();
            std::thread::spawn(move || {
                for _ in 0..200_000 {
                    u.delivered(1, 3);
                }
            })
        })
        .collect();
    let mut flushes = 0;
    while !threads.iter().all(|t| t.is_finished()) {
        store.flush_at(&usage, DEC1 + HOUR).unwrap();
        flushes += 1;
    }
    threads.into_iter().for_each(|t| t.join().unwrap());
    store.flush_at(&usage, DEC1 + HOUR).unwrap();
    assert!(flushes > 0);
    let r = rows(&db);
    assert_eq!((r[0].messages, r[0].bytes), (800_000, 2_400_000));
}

#[test]
fn symbols_seen_are_bounded_per_day() {
    let dir = TempDir::new("cap");
    let db = dir.file("relay.db");
    let store = Store::open(&db).unwrap();
    let (usage, _) = recorder(DEC1 + HOUR);
    let u = usage.user("alice", Class::Pro, false);
    let many: Vec<Arc<str>> = (0..MAX_SYMBOLS_PER_DAY + 10)
        .map(|i| Arc::from(format!("S{i}")))
        .collect();
    u.saw_symbols(&many);
    u.saw_symbols(&names(&["", "A B"]));
    store.flush_at(&usage, DEC1 + 2 * HOUR).unwrap();
    assert_eq!(rows(&db)[0].symbols, MAX_SYMBOLS_PER_DAY as u64);
}

#[test]
fn the_report_names_what_it_cannot_read() {
    let dir = TempDir::new("errors");
    let missing = dir.file("missing.db");
    let e = report(std::slice::from_ref(&missing), "2026-12").unwrap_err();
    assert!(matches!(&e, Error::Missing(p) if *p == missing));
    assert!(e.to_string().contains("missing.db"), "{e}");

    let db = dir.file("relay.db");
    Store::open(&db).unwrap();
    let e = report(std::slice::from_ref(&db), "2026-13").unwrap_err();
    assert!(matches!(e, Error::Month(_)));
    assert!(e.to_string().contains("2026-13"), "{e}");

    let text = dir.file("notes.txt");
    std::fs::write(
        &text,
        "not a database, just some text that is long enough ".repeat(20),
    )
    .unwrap();
    let e = report(&[db.clone(), text], "2026-12").unwrap_err();
    assert!(e.to_string().contains("notes.txt"), "{e}");

    let other = dir.file("other.db");
    Connection::open(&other)
        .unwrap()
        .execute_batch("CREATE TABLE t (x)")
        .unwrap();
    let e = report(&[other], "2026-12").unwrap_err();
    assert!(matches!(e, Error::NotUsage { .. }), "{e}");
    assert!(e.to_string().contains("other.db"), "{e}");
}

#[test]
fn the_text_and_csv_forms_show_the_rows() {
    let dir = TempDir::new("forms");
    let db = dir.file("relay.db");
    let store = Store::open(&db).unwrap();
    let (usage, _) = recorder(DEC1 + HOUR);
    usage.user("a,\"b\"", Class::Nonpro, true).delivered(3, 30);
    let u = usage.user("alice", Class::Pro, false);
    u.saw_symbols(&names(&["*"]));
    u.delivered(7, 70);
    store.flush_at(&usage, DEC1 + 2 * HOUR).unwrap();
    let rep = report(&[db], "2026-12").unwrap();

    let csv = rep.to_csv();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0].starts_with("sub,class,data,"));
    assert!(
        lines[1].starts_with("\"a,\"\"b\"\"\",nonpro,delayed,nonpro/delayed,1,"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("alice,pro,real_time,pro/real_time,1,"),
        "{}",
        lines[2]
    );
    assert!(lines[2].ends_with(",0,true,7,70,0"), "{}", lines[2]);

    let text = rep.to_text();
    assert!(
        text.starts_with("usage 2026-12 from 1 database: "),
        "{text}"
    );
    let pro = text.lines().find(|l| l.starts_with("pro ")).unwrap();
    assert_eq!(
        pro.split_whitespace().collect::<Vec<_>>(),
        ["pro", "1", "0", "1"]
    );
    let alice = text.lines().find(|l| l.starts_with("alice")).unwrap();
    let cells: Vec<&str> = alice.split_whitespace().collect();
    assert_eq!(&cells[..4], ["alice", "pro", "real", "time"]);
    assert!(cells.contains(&"all"), "{alice}");
}

#[tokio::test]
async fn the_flusher_writes_every_interval_and_once_more_on_cancel() {
    let dir = TempDir::new("flusher");
    let db = dir.file("relay.db");
    let store = Arc::new(Store::open(&db).unwrap());
    let usage = Usage::new();
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = spawn_flusher(
        usage.clone(),
        store,
        Duration::from_millis(20),
        cancel.clone(),
    );
    let u = usage.user("alice", Class::Pro, false);
    u.delivered(1, 10);
    let month = crate::usage::day_text(crate::usage::day::day_of(usage.now_ms()))[..7].to_owned();
    let mut seen = 0;
    for _ in 0..500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let db = db.clone();
        let m = month.clone();
        let rep = tokio::task::spawn_blocking(move || report(&[db], &m))
            .await
            .unwrap()
            .unwrap();
        seen = rep.users.first().map_or(0, |r| r.messages);
        if seen == 1 {
            break;
        }
    }
    assert_eq!(seen, 1, "flushed within the interval");
    // Counted after the last flush: written by the one on cancel.
    u.delivered(41, 410);
    cancel.cancel();
    task.await.unwrap();
    let rep = report(&[db], &month).unwrap();
    assert_eq!((rep.users[0].messages, rep.users[0].bytes), (42, 420));
}
