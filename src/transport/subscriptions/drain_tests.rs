use super::*;
use crate::fanout::HubListener;
use crate::metrics::Metrics;
use crate::price::Price;
use crate::table::ChangeListener;
use crate::table::Table;
use crate::transport::kind::Transport;
use crate::wire::Message;
use tokio_util::sync::CancellationToken;

/// A table, a hub with its fan-out running, and the ingest's listener.
struct Feed {
    table: Arc<Table>,
    hub: Arc<Hub>,
    listener: HubListener,
    cancel: CancellationToken,
    seq: u64,
}

impl Feed {
    fn new(symbols: &[&str]) -> Self {
        let table = crate::fanout::tests::table_with(symbols);
        let seq = symbols.len() as u64;
        let hub = Hub::new(table.clone(), Metrics::new().stream.clone());
        let listener = hub.listener();
        let cancel = CancellationToken::new();
        tokio::spawn(hub.clone().run(cancel.clone()));
        Feed {
            table,
            hub,
            listener,
            cancel,
            seq,
        }
    }

    fn client(&self, every_limit: usize) -> Subscriptions {
        let client = self.hub.register(Transport::Ws, every_limit);
        let subs = Subscriptions::new(self.hub.clone(), Arc::downgrade(&client));
        // The hub holds the client until the subscriptions unregister it.
        drop(client);
        subs
    }

    /// A quote for `locate` at the next sequence; returns the sequence.
    fn quote(&mut self, locate: Locate, bid: i64) -> u64 {
        self.seq += 1;
        self.table.apply(
            self.seq,
            &Message::Quote {
                locate,
                ts: self.seq,
                bid: Price(bid),
                ask: Price(bid + 1),
                bid_size: 1,
                ask_size: 1,
            },
        );
        self.table.set_last_seq(self.seq);
        self.listener.changed(locate, self.seq);
        self.seq
    }

    /// Ends the ingest batch and waits until the fan-out has marked it.
    /// The fan-out is the runtime's only other task: one yield runs it
    /// (the sequence alone cannot tell, as a reset does not raise it).
    async fn publish(&mut self) {
        self.listener.batch_done(self.seq);
        tokio::task::yield_now().await;
        while self.hub.fanned_seq() < self.seq {
            tokio::task::yield_now().await;
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

fn sym(s: &str) -> Arc<str> {
    Arc::from(s)
}

fn seqs(batch: &Batch) -> Vec<(String, u64)> {
    batch
        .quotes
        .iter()
        .map(|q| (q.quote.symbol.to_string(), q.quote.seq))
        .collect()
}

fn conflate() -> SubOptions {
    SubOptions::new(false, None)
}

/// Moves `symbol`'s last send back by `by`, as if that long had passed.
fn age(subs: &mut Subscriptions, symbol: &str, by: Duration) {
    let i = subs.subs.named(symbol).expect("subscribed");
    let t = subs.subs.subs[i].throttle.as_mut().expect("throttled");
    t.last_at = t.last_at.map(|at| at - by);
}

#[tokio::test]
async fn the_promise_is_the_fanned_sequence_and_covers_the_snapshot() {
    let mut feed = Feed::new(&["A", "B"]);
    let mut subs = feed.client(16);
    let (snap_seq, quotes) = subs.subscribe(&[sym("A")], conflate(), None);
    assert_eq!(snap_seq, 2, "the table's sequence at subscribe");
    assert_eq!(
        seqs(&Batch {
            quotes,
            ..Batch::default()
        }),
        [("A".into(), 1)]
    );
    let a = feed.quote(0, 100);
    feed.quote(1, 200); // B: not subscribed
    feed.publish().await;
    let batch = subs.drain();
    assert_eq!(seqs(&batch), [("A".into(), a)]);
    assert_eq!(batch.seq, feed.seq, "promises up to B's change too");
    assert_eq!(subs.promised, batch.seq);
}

#[tokio::test]
async fn conflation_sends_the_newest_change_once() {
    let mut feed = Feed::new(&["A"]);
    let mut subs = feed.client(16);
    subs.subscribe(&[sym("A")], conflate(), None);
    for bid in 0..5 {
        feed.quote(0, bid);
        feed.publish().await;
    }
    let batch = subs.drain();
    assert_eq!(seqs(&batch), [("A".into(), feed.seq)]);
    assert_eq!(batch.quotes[0].quote.bid, Some(Price(4)));
    assert_eq!(batch.seq, feed.seq);
    // Drained: nothing again, the promise held where it was.
    let again = subs.drain();
    assert!(again.quotes.is_empty());
    assert_eq!(again.seq, batch.seq);
}

#[tokio::test]
async fn every_mode_sends_each_change_in_order() {
    let mut feed = Feed::new(&["A", "B"]);
    let mut subs = feed.client(64);
    subs.subscribe(&[sym("A"), sym("B")], SubOptions::new(true, None), None);
    let mut want = Vec::new();
    for i in 0..6 {
        let l = (i % 2) as Locate;
        let seq = feed.quote(l, i);
        want.push((if l == 0 { "A" } else { "B" }.to_string(), seq));
        if i % 3 == 2 {
            feed.publish().await;
        }
    }
    feed.publish().await;
    let batch = subs.drain();
    assert_eq!(seqs(&batch), want);
    assert_eq!(batch.seq, feed.seq);
    assert!(!batch.overflow);
}

#[tokio::test]
async fn an_every_queue_that_overflows_asks_to_close() {
    let mut feed = Feed::new(&["A"]);
    let mut subs = feed.client(3);
    subs.subscribe(&[sym("A")], SubOptions::new(true, None), None);
    for i in 0..5 {
        feed.quote(0, i);
    }
    feed.publish().await;
    let batch = subs.drain();
    assert!(batch.overflow);
    assert!(
        batch.quotes.is_empty(),
        "nothing is sent to a client being closed"
    );
}

#[tokio::test]
async fn a_change_the_snapshot_already_carried_is_not_sent_again() {
    let mut feed = Feed::new(&["A"]);
    let mut subs = feed.client(16);
    feed.quote(0, 1);
    let (snap_seq, quotes) = subs.subscribe(&[sym("A")], conflate(), None);
    assert_eq!(quotes.len(), 1);
    // The fan-out marks the change after the snapshot read it.
    feed.publish().await;
    let batch = subs.drain();
    assert!(batch.quotes.is_empty(), "{:?}", seqs(&batch));
    assert!(batch.seq >= snap_seq);
}

#[tokio::test]
async fn the_promise_does_not_fall_below_a_snapshot_not_yet_fanned() {
    let mut feed = Feed::new(&["A"]);
    let mut subs = feed.client(16);
    // Applied to the table (the snapshot reads it), not yet fanned out.
    let a = feed.quote(0, 1);
    let (snap_seq, _) = subs.subscribe(&[sym("A")], conflate(), None);
    assert_eq!(snap_seq, a);
    assert!(feed.hub.fanned_seq() < a);
    let batch = subs.drain();
    assert_eq!(batch.seq, a, "the floor the snapshot set");
}

#[tokio::test]
async fn max_hz_holds_a_change_and_the_promise_until_it_is_due() {
    let mut feed = Feed::new(&["A", "B"]);
    let mut subs = feed.client(16);
    let hz = SubOptions::new(false, Some(1.0));
    subs.subscribe(&[sym("A")], hz, None);
    subs.subscribe(&[sym("B")], conflate(), None);
    let a1 = feed.quote(0, 1);
    feed.publish().await;
    let first = subs.drain();
    assert_eq!(seqs(&first), [("A".into(), a1)]);
    assert_eq!(subs.next_due, None);

    // Within a second of the last: A waits; B goes; the promise stops
    // short of A's held change.
    let a2 = feed.quote(0, 2);
    let b = feed.quote(1, 3);
    feed.publish().await;
    let held = subs.drain();
    assert_eq!(seqs(&held), [("B".into(), b)]);
    assert!(held.seq < a2, "promise {} covers held A@{a2}", held.seq);
    let due = subs.next_due.expect("A is due later");
    let sent_at = subs
        .subs
        .named("A")
        .and_then(|i| subs.subs.subs[i].throttle.as_ref()?.last_at)
        .unwrap();
    assert_eq!(due, sent_at + Duration::from_secs(1));

    // Still not due: still held, and drained again it stays pending.
    let still = subs.drain();
    assert!(still.quotes.is_empty());
    assert!(still.seq < a2);

    // A's window passed: the newest A goes, the promise catches up.
    age(&mut subs, "A", Duration::from_secs(1));
    let caught_up = subs.drain();
    assert_eq!(seqs(&caught_up), [("A".into(), a2)]);
    assert_eq!(caught_up.seq, feed.seq);
    assert_eq!(subs.next_due, None);
}

#[tokio::test]
async fn max_hz_sends_only_the_newest_of_the_changes_held() {
    let mut feed = Feed::new(&["A"]);
    let mut subs = feed.client(16);
    subs.subscribe(&[sym("A")], SubOptions::new(false, Some(1.0)), None);
    feed.quote(0, 0);
    feed.publish().await;
    assert_eq!(subs.drain().quotes.len(), 1);
    for bid in 1..=5 {
        feed.quote(0, bid);
        feed.publish().await;
        assert!(subs.drain().quotes.is_empty(), "held within the second");
    }
    age(&mut subs, "A", Duration::from_secs(1));
    let batch = subs.drain();
    assert_eq!(seqs(&batch), [("A".into(), feed.seq)]);
    assert_eq!(batch.quotes[0].quote.bid, Some(Price(5)));
}

/// The envelope `seq` a client sees on frames with quotes never goes
/// down within a session, throttled symbols and all: a held symbol caps
/// the promise at the higher of its own last sent sequence and the last
/// promise (this failed with `[3, 4, 3]` when it capped at the former).
#[tokio::test]
async fn the_promise_never_goes_backwards_across_frames() {
    let mut feed = Feed::new(&["A", "B"]);
    let mut subs = feed.client(16);
    subs.subscribe(&[sym("A")], SubOptions::new(false, Some(1.0)), None);
    subs.subscribe(&[sym("B")], conflate(), None);
    let mut sent = Vec::new();
    feed.quote(0, 1); // A, sent: its window starts
    feed.publish().await;
    sent.push(subs.drain().seq);
    feed.quote(1, 2); // B alone
    feed.publish().await;
    sent.push(subs.drain().seq);
    feed.quote(0, 3); // A again, within its window: held
    feed.quote(1, 4); // B, sent
    feed.publish().await;
    let batch = subs.drain();
    assert_eq!(batch.quotes.len(), 1);
    sent.push(batch.seq);
    assert!(
        sent.windows(2).all(|w| w[0] <= w[1]),
        "envelope seqs {sent:?}"
    );
}

#[tokio::test]
async fn batch_ms_holds_the_next_frame_until_the_window_ends() {
    let mut feed = Feed::new(&["A"]);
    let mut subs = feed.client(16);
    subs.subscribe(&[sym("A")], conflate(), None);
    // The longest window: a loaded machine does not outrun it mid-test.
    let window = Duration::from_millis(MAX_BATCH_MS);
    subs.set_batch(Some(window));
    assert_eq!(subs.batch(), Some(window));
    let before = Instant::now();
    assert_eq!(
        subs.hold_until(before),
        None,
        "the first frame goes at once"
    );
    // A drain with nothing in it does not start a window.
    assert!(subs.drain().quotes.is_empty());
    assert_eq!(subs.hold_until(Instant::now()), None);
    feed.quote(0, 1);
    feed.publish().await;
    assert_eq!(subs.drain().quotes.len(), 1);
    let after = Instant::now();
    let until = subs.hold_until(after).expect("held after a frame");
    assert!(until > after && until <= after + window);
    assert!(
        until >= before + window - TIMER_SLACK,
        "the window, less the timer's slack"
    );
    assert_eq!(subs.hold_until(until), None, "due at the window's end");
    subs.set_batch(Some(Duration::ZERO));
    assert_eq!(subs.batch(), None, "zero means immediate");
    assert_eq!(subs.hold_until(after), None);
}

#[tokio::test]
async fn a_new_session_resets_what_was_sent_and_the_promise() {
    let mut feed = Feed::new(&["A"]);
    let mut subs = feed.client(16);
    subs.subscribe(&[sym("A")], conflate(), None);
    feed.quote(0, 1);
    feed.publish().await;
    assert_eq!(subs.drain().seq, feed.seq);
    let session = Session::new("S2");
    feed.table.reset(session);
    feed.listener.session_reset(session);
    feed.publish().await;
    let batch = subs.drain();
    assert_eq!(batch.reset, Some(session));
    assert_eq!(subs.promised, batch.seq);
    assert!(
        subs.subs
            .subs
            .iter()
            .all(|s| s.last_seq == 0 && s.throttle.as_ref().is_none_or(|t| t.last_at.is_none())),
        "every symbol is sent afresh in the new session"
    );
}

/// A new session's directory may list a ticker under another locate: the
/// client's entry, filed by locate, follows its ticker there, and a ticker
/// it never subscribed to that now sits at its old locate is not sent.
#[tokio::test]
async fn a_ticker_listed_elsewhere_in_a_new_session_still_reaches_its_subscriber() {
    let mut feed = Feed::new(&["A", "B"]);
    let mut subs = feed.client(16);
    subs.subscribe(&[sym("A")], conflate(), None);
    let session = Session::new("S2");
    feed.table.reset(session);
    feed.listener.session_reset(session);
    // The new directory swaps them: B at 0 (where A was), A at 1.
    for (locate, name) in [(0, "B"), (1, "A")] {
        feed.seq += 1;
        feed.table.apply(
            feed.seq,
            &Message::Directory {
                locate,
                ts: 1,
                symbol: name,
                name,
                prev_close: Price(1),
            },
        );
    }
    feed.publish().await;
    assert_eq!(subs.drain().reset, Some(session));
    let b = feed.quote(0, 500);
    let a = feed.quote(1, 700);
    feed.publish().await;
    let batch = subs.drain();
    assert_eq!(
        seqs(&batch),
        vec![("A".to_string(), a)],
        "B ({b}) is not A's"
    );
    assert!(subs.contains("A") && !subs.contains("B"));
    // Filed under its new locate: found without the name from now on.
    let c = feed.quote(1, 701);
    feed.publish().await;
    assert_eq!(seqs(&subs.drain()), vec![("A".to_string(), c)]);
    subs.unsubscribe(&[sym("A")]);
    assert!(subs.is_empty());
}

/// Within one session a ticker may move to another locate: its subscriber
/// still gets its changes there.
#[tokio::test]
async fn a_ticker_moved_within_the_session_still_reaches_its_subscriber() {
    let mut feed = Feed::new(&["A", "B"]);
    let mut subs = feed.client(16);
    subs.subscribe(&[sym("A")], conflate(), None);
    feed.seq += 1;
    feed.table.apply(
        feed.seq,
        &Message::Directory {
            locate: 7,
            ts: 1,
            symbol: "A",
            name: "A",
            prev_close: Price(1),
        },
    );
    assert_eq!(feed.table.locate("A"), Some(7));
    let a = feed.quote(7, 900);
    feed.publish().await;
    assert_eq!(seqs(&subs.drain()), vec![("A".to_string(), a)]);
    assert!(subs.contains("A"));
}
