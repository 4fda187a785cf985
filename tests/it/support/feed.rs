//! The feed side of the tests: multicast addresses, a hand-written feed
//! ([`FeedWriter`]) and the `feed-simulator` binary ([`Sim`],
//! [`spawn_simulator`]).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tickrelay::price::Price;
use tickrelay::table::Quote;
use tickrelay::tools::sim::FinalQuote;
use tickrelay::transport::snapshot::SnapshotBody;
use tickrelay::wire::{Locate, Message, PacketBuilder, Session, header};

use super::{Captured, FeedAddr, feed_simulator_bin, hermetic, scratch_dir, unique_suffix};

// ---------------------------------------------------------------- raw feed

/// Sends raw datagrams to a multicast group from 127.0.0.1 with TTL 0.
pub(crate) struct FeedSender {
    socket: UdpSocket,
}

impl FeedSender {
    /// A sender on the loopback interface.
    pub(crate) fn new() -> FeedSender {
        // The simulator's own sender: multicast interface 127.0.0.1, TTL 0,
        // loop on, bound to 127.0.0.1.
        let socket = tickrelay::tools::sim::sender(Ipv4Addr::LOCALHOST, 0).expect("open sender");
        FeedSender { socket }
    }

    /// Sends one datagram to `to`.
    pub(crate) fn send(&self, to: FeedAddr, datagram: &[u8]) {
        assert!(to.0.ip().is_multicast() || to.0.ip().is_loopback());
        let n = self.socket.send_to(datagram, to.0).expect("send datagram");
        assert_eq!(n, datagram.len());
    }
}

/// Writes the feed by hand: a [`PacketBuilder`] for one session whose every
/// message goes out at once in its own packet, plus raw datagrams.
pub(crate) struct FeedWriter {
    /// Where packets go.
    pub(crate) to: FeedAddr,
    /// The session's builder; its `next_seq` is the next message's sequence.
    pub(crate) builder: PacketBuilder,
    sender: FeedSender,
}

impl FeedWriter {
    /// A writer for `session`, its first message numbered 1.
    pub(crate) fn new(to: FeedAddr, session: &str) -> FeedWriter {
        FeedWriter {
            to,
            builder: PacketBuilder::new(Session::new(session), 1),
            sender: FeedSender::new(),
        }
    }

    /// Lists `symbols` at locates 0, 1, … (name = symbol, previous close
    /// 100); returns the last one's sequence.
    pub(crate) fn list(&mut self, symbols: &[&str]) -> u64 {
        let msgs: Vec<Message<'_>> = symbols
            .iter()
            .enumerate()
            .map(|(i, s)| Message::Directory {
                locate: i as u16,
                ts: 1,
                symbol: s,
                name: s,
                prev_close: Price(100_0000),
            })
            .collect();
        self.send(&msgs)
    }

    /// A quote message with bid `n` and ask `n + 100` (sizes 1 and 2),
    /// stamped now.
    pub(crate) fn quote_msg(locate: Locate, n: i64) -> Message<'static> {
        Message::Quote {
            locate,
            ts: now_ns(),
            bid: Price(n),
            ask: Price(n + 100),
            bid_size: 1,
            ask_size: 2,
        }
    }

    /// A heartbeat carrying the next sequence.
    pub(crate) fn heartbeat(&self) {
        self.raw(&self.builder.heartbeat());
    }

    /// Sends `msgs` in as few packets as fit; returns the last one's sequence.
    pub(crate) fn send(&mut self, msgs: &[Message<'_>]) -> u64 {
        let (sender, to) = (&self.sender, self.to);
        let mut last = 0;
        for m in msgs {
            last = self.builder.push(m, &mut |p| sender.send(to, p));
        }
        self.builder.flush(&mut |p| sender.send(to, p));
        last
    }

    /// Sends directory entries `(locate, symbol, prev_close)`; returns the
    /// last one's sequence.
    pub(crate) fn directory(&mut self, entries: &[(Locate, &str, i64)]) -> u64 {
        let names: Vec<String> = entries
            .iter()
            .map(|(_, s, _)| format!("{s} Inc."))
            .collect();
        let msgs: Vec<Message<'_>> = entries
            .iter()
            .zip(&names)
            .map(|(&(locate, symbol, prev_close), name)| Message::Directory {
                locate,
                ts: now_ns(),
                symbol,
                name,
                prev_close: Price(prev_close),
            })
            .collect();
        self.send(&msgs)
    }

    /// Sends one quote (prices raw, in 1/10,000); returns its sequence.
    pub(crate) fn quote(&mut self, locate: Locate, bid: i64, ask: i64, sizes: (u32, u32)) -> u64 {
        self.send(&[Message::Quote {
            locate,
            ts: now_ns(),
            bid: Price(bid),
            ask: Price(ask),
            bid_size: sizes.0,
            ask_size: sizes.1,
        }])
    }

    /// Sends one trade; returns its sequence.
    pub(crate) fn trade(&mut self, locate: Locate, price: i64, size: u32, volume: u64) -> u64 {
        self.send(&[Message::Trade {
            locate,
            ts: now_ns(),
            price: Price(price),
            size,
            volume,
        }])
    }

    /// Sends a datagram as it is, whatever it holds.
    pub(crate) fn raw(&self, datagram: &[u8]) {
        self.sender.send(self.to, datagram);
    }

    /// A packet of this session with sequence `seq` holding the given raw
    /// message payloads, framed correctly. It does not move `next_seq`.
    pub(crate) fn framed(&self, seq: u64, payloads: &[&[u8]]) -> Vec<u8> {
        let mut p = header(self.builder.session(), seq, payloads.len() as u16).to_vec();
        for m in payloads {
            p.extend_from_slice(&(m.len() as u16).to_be_bytes());
            p.extend_from_slice(m);
        }
        p
    }

    /// Sends raw message payloads (well-formed or not) as the next messages
    /// in sequence, framed correctly; returns the first one's sequence.
    pub(crate) fn send_payloads(&mut self, payloads: &[&[u8]]) -> u64 {
        let first = self.builder.next_seq();
        self.raw(&self.framed(first, payloads));
        self.builder = PacketBuilder::new(self.builder.session(), first + payloads.len() as u64);
        first
    }
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------- simulator

/// The `--final-state` file of a simulator run.
#[derive(Debug, Deserialize)]
pub(crate) struct FinalState {
    /// Session id.
    pub(crate) session: String,
    /// Messages sent, directory included.
    pub(crate) messages: u64,
    /// One past the last sequence.
    pub(crate) next_seq: u64,
    /// Achieved rate.
    pub(crate) rate: f64,
    /// Every symbol's last published state.
    pub(crate) quotes: Vec<FinalQuote>,
}

impl FinalState {
    /// Sequence of the last message sent.
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
}

/// A `feed-simulator` invocation.
pub(crate) struct Sim {
    args: Vec<String>,
}

impl Sim {
    /// Publishes to `group` on 127.0.0.1, TTL 0, without progress output.
    pub(crate) fn new(group: FeedAddr) -> Sim {
        Sim {
            args: [
                "--group",
                &group.arg(),
                "--interface",
                "127.0.0.1",
                "--ttl",
                "0",
                "--no-progress",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        }
    }

    /// Adds `--flag value`.
    pub(crate) fn flag(mut self, flag: &str, value: impl ToString) -> Sim {
        self.args.push(flag.to_string());
        self.args.push(value.to_string());
        self
    }

    /// Adds a bare argument.
    pub(crate) fn arg(mut self, arg: &str) -> Sim {
        self.args.push(arg.to_string());
        self
    }

    /// Runs to completion (it must be bounded by `--count` or `--duration`)
    /// and returns its final state.
    pub(crate) fn run(self) -> FinalState {
        let dir = scratch_dir();
        let path = dir.join(format!("final-{}.json", unique_suffix()));
        let mut child = hermetic(&feed_simulator_bin())
            .args(&self.args)
            .arg("--final-state")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start feed-simulator");
        let out = Captured::drain(child.stdout.take().expect("piped"), None);
        let err = Captured::drain(child.stderr.take().expect("piped"), None);
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait") {
                break s;
            }
            if start.elapsed() > Duration::from_secs(120) {
                let _ = child.kill();
                let _ = child.wait();
                panic!("feed-simulator {:?} did not finish", self.args);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "feed-simulator {:?} failed ({status}):\n{}{}",
            self.args,
            out.text(),
            err.text()
        );
        let text = std::fs::read(&path).expect("read the final state");
        let _ = std::fs::remove_file(&path);
        serde_json::from_slice(&text).expect("parse the final state")
    }
}

/// Starts the simulator in the background (loopback, TTL 0, no progress).
pub(crate) fn spawn_simulator(args: &[&str]) -> Child {
    hermetic(&feed_simulator_bin())
        .args(["--interface", "127.0.0.1", "--ttl", "0", "--no-progress"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start feed-simulator")
}

/// Runs the simulator to completion (it must be bounded by `--count` or
/// `--duration`), asserting success.
pub(crate) fn run_simulator(args: &[&str]) {
    let out = spawn_simulator(args).wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "feed-simulator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for a simulator bounded by `--duration` or `--count` to exit
/// successfully.
pub(crate) fn wait_sim(mut sim: Child, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = sim.try_wait().unwrap() {
            assert!(status.success(), "feed-simulator failed: {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = sim.kill();
            panic!("feed-simulator did not finish in {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Asserts that a snapshot is exactly what the simulator sent last: its
/// session and last sequence, and every simulated symbol with the last
/// sequence, prices, sizes, volume and previous close it sent, field by
/// field (the first ten differences named).
pub(crate) fn assert_snapshot_matches(snapshot: &SnapshotBody, want: &FinalState) {
    use std::collections::BTreeMap;
    assert_eq!(snapshot.session, want.session);
    assert_eq!(snapshot.seq, want.last_seq());
    let got: BTreeMap<&str, &Quote> = snapshot.quotes.iter().map(|q| (&*q.symbol, q)).collect();
    assert_eq!(
        got.len(),
        want.quotes.len(),
        "the snapshot should hold every simulated symbol"
    );
    let mut wrong = Vec::new();
    for w in &want.quotes {
        let Some(q) = got.get(w.symbol.as_str()) else {
            wrong.push(format!("{} missing", w.symbol));
            continue;
        };
        let have = (
            q.seq,
            q.bid,
            q.ask,
            q.bid_size,
            q.ask_size,
            q.last,
            q.last_size,
            q.volume,
            q.prev_close,
        );
        let sent = (
            w.seq,
            w.bid,
            w.ask,
            w.bid_size,
            w.ask_size,
            w.last,
            w.last_size,
            w.volume,
            w.prev_close,
        );
        if have != sent {
            wrong.push(format!("{}: relay {have:?}, sent {sent:?}", w.symbol));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} symbols differ from what was sent, e.g.:\n{}",
        wrong.len(),
        want.quotes.len(),
        wrong[..wrong.len().min(10)].join("\n")
    );
}

/// Asserts that a quote the relay sent equals the simulator's final state
/// for `symbol` (its `--final-state` entry), field by field.
pub(crate) fn assert_final_quote(got: &serde_json::Value, want: &serde_json::Value, symbol: &str) {
    for field in [
        "seq",
        "bid",
        "ask",
        "bid_size",
        "ask_size",
        "last",
        "volume",
        "prev_close",
    ] {
        assert_eq!(got[field], want[field], "{symbol}.{field}");
    }
}

/// Waits until the relay says ready and its snapshot reaches the last
/// sequence of the simulator's `--final-state` file, then checks every
/// symbol against it, field by field. With `loop_listed`, a symbol that
/// never ticked is not held to its `seq`: that is only a directory entry's
/// sequence, which a recovery loop does not date.
pub(crate) fn assert_equals_final_state(
    relay: &super::Relay,
    final_path: &std::path::Path,
    loop_listed: bool,
) {
    use serde_json::Value;
    let summary: Value = serde_json::from_slice(&std::fs::read(final_path).unwrap()).unwrap();
    let last = summary["next_seq"].as_u64().unwrap() - 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    let snap = loop {
        let (status, v) = super::get_json(&relay.base, "/v1/snapshot");
        let (ready, _) = super::get_json(&relay.base, "/readyz");
        if status == 200 && ready == 200 && v["seq"].as_u64() >= Some(last) {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "relay never whole at {last}: /readyz {ready}, snapshot seq {}",
            v["seq"]
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let got = super::by_symbol(&snap);
    let want = summary["quotes"].as_array().unwrap();
    assert_eq!(got.len(), want.len(), "every symbol listed");
    for w in want {
        let sym = w["symbol"].as_str().unwrap();
        let g = got
            .get(sym)
            .unwrap_or_else(|| panic!("{sym} missing from the relay"));
        if loop_listed && w["bid"].is_null() && w["last"].is_null() {
            assert_eq!(g["bid"], Value::Null, "{sym}.bid");
            assert_eq!(g["last"], Value::Null, "{sym}.last");
            assert_eq!(g["prev_close"], w["prev_close"], "{sym}.prev_close");
            continue;
        }
        assert_final_quote(g, w, sym);
    }
}
