//! The feed simulator as a producer, through the real `feed-simulator`
//! binary: its market over ten simulated minutes, record and replay, refusal
//! of a bad recording, and the recovery loop read off a real multicast group
//! on 127.0.0.1 with the relay's own codec.

use crate::support;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use support::{
    FeedAddr, FinalState, Sim, feed_simulator_bin, hermetic, scratch_dir, unique_suffix,
};
use tickrelay::tools::sim::FinalQuote;
use tickrelay::wire::{
    Locate, Message, Packet, PacketKind, StateQuote, StateTrade, decode_message,
};

fn by_symbol(state: &FinalState) -> BTreeMap<&str, &FinalQuote> {
    state
        .quotes
        .iter()
        .map(|q| (q.symbol.as_str(), q))
        .collect()
}

fn mid(q: &FinalQuote) -> Option<f64> {
    Some((q.bid?.raw() + q.ask?.raw()) as f64 / 2.0)
}

/// Ten minutes of market: the state after 10 s and after 610 s of the same
/// seeded market (a fast-forward run is the prefix of a longer one). Every
/// symbol stays within a band its volatility allows, quotes stay on the cent
/// grid, and the market as a whole does not drift.
#[test]
fn ten_simulated_minutes_stay_in_a_plausible_band_without_drift() {
    let run = |secs: u32| {
        Sim::new(FeedAddr::unique())
            .flag("--symbols", 300)
            .flag("--rate", 3_000)
            .flag("--seed", 5)
            .flag("--session", "FF")
            .flag("--fast-forward", secs)
            .run()
    };
    let start = run(10);
    let end = run(610);
    let before = by_symbol(&start);
    // σ over ten minutes for the most volatile symbol (80 %/yr), with a
    // trading year of 252 × 6.5 h.
    let sd_max = 0.80 * (600.0f64 / (252.0 * 6.5 * 3600.0)).sqrt();
    let mut moves = Vec::new();
    for q in &end.quotes {
        let (bid, ask) = (q.bid.expect("quoted").raw(), q.ask.expect("quoted").raw());
        assert!(
            bid < ask && bid % 100 == 0 && ask % 100 == 0,
            "{}: {bid}/{ask} off the cent grid",
            q.symbol
        );
        let Some(open) = before.get(q.symbol.as_str()).and_then(|b| mid(b)) else {
            continue;
        };
        let m = mid(q).unwrap_or(open);
        let r = (m / open).ln();
        // Six σ of the walk, plus a spread either side (the quote's offset).
        let band = 6.0 * sd_max + 2.0 * (ask - bid) as f64 / m;
        assert!(
            r.abs() < band,
            "{} ran away: {:+.2} % in ten minutes",
            q.symbol,
            r * 100.0
        );
        moves.push(r);
    }
    assert!(moves.len() > 250, "{} symbols quoted by 10 s", moves.len());
    moves.sort_by(f64::total_cmp);
    let median = moves[moves.len() / 2];
    let mean_abs = moves.iter().map(|r| r.abs()).sum::<f64>() / moves.len() as f64;
    // The typical ten-minute move is about 0.4 %; the median of ~300 of
    // them is within ±0.05 % unless the walk drifts.
    assert!(
        median.abs() < 0.0015,
        "median move {:+.3} %: drift",
        median * 100.0
    );
    assert!(
        (0.0015..0.01).contains(&mean_abs),
        "mean |move| {:.3} %: not the intended volatility",
        mean_abs * 100.0
    );
}

/// A recorded run replayed (at 50× and then as fast as --rate allows)
/// publishes the same messages: the same final state, sequences included.
#[test]
fn record_then_replay_gives_the_same_final_state() {
    let file = scratch_dir().join(format!("session-{}.csv", unique_suffix()));
    let recorded = Sim::new(FeedAddr::unique())
        .flag("--symbols", 50)
        .flag("--count", 3_000)
        .flag("--rate", 20_000)
        .flag("--seed", 9)
        .flag("--session", "REC")
        .arg("--opening-auction")
        .flag("--record", file.display())
        .run();
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text.lines().count() as u64,
        1 + recorded.last_seq(),
        "a header and one row per message"
    );
    for speed in ["50", "0"] {
        let replayed = Sim::new(FeedAddr::unique())
            .flag("--replay", file.display())
            .flag("--speed", speed)
            .flag("--rate", 50_000)
            .flag("--session", "REP")
            .run();
        assert_eq!(replayed.next_seq, recorded.next_seq, "speed {speed}");
        assert_eq!(replayed.quotes, recorded.quotes, "speed {speed}");
    }
    let _ = std::fs::remove_file(&file);
}

/// The sample in the repository replays, and holds what docs/FEED.md says.
#[test]
fn the_sample_session_replays() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/sample-session.csv");
    let rows = std::fs::read_to_string(path).unwrap().lines().count() as u64 - 1;
    let replayed = Sim::new(FeedAddr::unique())
        .flag("--replay", path)
        .flag("--speed", 0)
        .flag("--rate", 100_000)
        .run();
    assert_eq!(replayed.last_seq(), rows);
    assert_eq!(replayed.quotes.len(), 50);
    assert!(
        replayed
            .quotes
            .iter()
            .all(|q| q.bid < q.ask && q.last.is_some())
    );
}

/// A malformed recording, or a missing one, is refused before anything is
/// sent, with an error naming the file and the line.
#[test]
fn a_bad_recording_is_refused_naming_the_line() {
    let file = scratch_dir().join(format!("bad-{}.csv", unique_suffix()));
    std::fs::write(
        &file,
        format!(
            "{}\n1,1,D,0,AAA,A Inc.,10.0000,,,,,,,,,\n2,2,Q,0,AAA,,,9.99,ten,100,100,,,,,\n",
            tickrelay::tools::sim::RECORD_HEADER
        ),
    )
    .unwrap();
    let missing = scratch_dir().join("no-such-session.csv");
    for (path, want) in [
        (&file, format!("{} line 3: ask \"ten\"", file.display())),
        (&missing, format!("cannot read {}", missing.display())),
    ] {
        let out = hermetic(&feed_simulator_bin())
            .args(["--no-progress", "--replay"])
            .arg(path)
            .stdin(Stdio::null())
            .output()
            .expect("run feed-simulator");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{path:?} accepted");
        assert!(stderr.contains(&want), "stderr {stderr:?} lacks {want:?}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let _ = std::fs::remove_file(&file);
}

/// Joins `group` on 127.0.0.1 and collects datagrams on a thread until the
/// loop's end of session (or `stop`).
fn listen(group: SocketAddrV4, stop: Arc<AtomicBool>) -> mpsc::Receiver<Vec<Vec<u8>>> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
    socket.set_reuse_address(true).unwrap();
    let _ = socket.set_recv_buffer_size(8 << 20);
    socket.bind(&SocketAddr::V4(group).into()).unwrap();
    socket
        .join_multicast_v4(group.ip(), &Ipv4Addr::LOCALHOST)
        .unwrap();
    let socket: UdpSocket = socket.into();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let Ok(n) = socket.recv(&mut buf) else {
                continue;
            };
            let end = Packet::parse(&buf[..n]).is_ok_and(|p| p.kind == PacketKind::EndOfSession);
            got.push(buf[..n].to_vec());
            if end {
                break;
            }
        }
        let _ = tx.send(got);
    });
    rx
}

type StateMsg = (Locate, u64, Option<StateQuote>, Option<StateTrade>);

/// The loop read off its group: sequence contiguous from 1, the feed's
/// session, one D and one S per symbol per cycle, and the last cycle equal
/// to the simulator's final state, half sequences included.
#[test]
fn the_recovery_loop_cycles_every_symbol_and_ends_with_the_final_state() {
    let recovery = FeedAddr::unique();
    let stop = Arc::new(AtomicBool::new(false));
    let rx = listen(recovery.0, stop.clone());
    let sent = Sim::new(FeedAddr::unique())
        .flag("--symbols", 50)
        .flag("--count", 5_000)
        .flag("--rate", 20_000)
        .flag("--session", "RECOV1")
        .flag("--recovery", recovery)
        .flag("--recovery-rate", 20_000)
        .run();
    let deadline = Instant::now() + Duration::from_secs(10);
    let packets = loop {
        if let Ok(p) = rx.recv_timeout(Duration::from_millis(100)) {
            break p;
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            break rx.recv().unwrap();
        }
    };
    let mut next = 1u64;
    let mut cycles: Vec<Vec<StateMsg>> = Vec::new();
    let mut last_d: Option<Locate> = None;
    let mut ended = false;
    for raw in &packets {
        let p = Packet::parse(raw).expect("a valid packet");
        assert_eq!(p.session.as_str(), "RECOV1", "the feed's session");
        match p.kind {
            PacketKind::EndOfSession => {
                assert_eq!(p.seq, next);
                ended = true;
                continue;
            }
            PacketKind::Heartbeat => {
                assert_eq!(p.seq, next);
                continue;
            }
            PacketKind::Data => {}
        }
        assert!(raw.len() <= tickrelay::wire::MAX_PACKET);
        assert_eq!(
            p.seq, next,
            "the loop's sequence runs on from 1 without a gap"
        );
        next = p.end_seq();
        for m in p.messages() {
            match decode_message(m).expect("a valid message") {
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
                    cycles.last_mut().unwrap().push((locate, ts, quote, trade));
                }
                // The symbol's book, after its state.
                Message::Book { locate, .. } => {
                    assert_eq!(Some(locate), last_d, "each B follows its D");
                }
                other => panic!("{other:?} on the recovery loop"),
            }
        }
    }
    assert!(ended, "the loop ends with an end of session");
    assert!(cycles.len() >= 3, "{} cycles", cycles.len());
    for (i, c) in cycles.iter().enumerate() {
        let locates: Vec<Locate> = c.iter().map(|s| s.0).collect();
        assert_eq!(
            locates,
            (0..50).collect::<Vec<Locate>>(),
            "cycle {i}: one D and one S per symbol, in locate order"
        );
    }
    let last = cycles.last().unwrap();
    for (q, &(locate, ts, quote, trade)) in sent.quotes.iter().zip(last) {
        let sym = &q.symbol;
        assert_eq!(q.locate, locate, "{sym}");
        assert_eq!(q.ts, ts, "{sym}: ts");
        assert_eq!(q.quote_seq, quote.map_or(0, |x| x.seq), "{sym}: quote_seq");
        assert_eq!(q.trade_seq, trade.map_or(0, |x| x.seq), "{sym}: trade_seq");
        assert_eq!(
            (q.bid, q.ask, q.bid_size, q.ask_size),
            quote.map_or((None, None, 0, 0), |x| (
                Some(x.bid),
                Some(x.ask),
                x.bid_size,
                x.ask_size
            )),
            "{sym}: quote"
        );
        assert_eq!(
            (q.last, q.last_size, q.volume),
            trade.map_or((None, 0, 0), |x| (Some(x.last), x.last_size, x.volume)),
            "{sym}: trade"
        );
        if q.quote_seq.max(q.trade_seq) > 0 {
            assert_eq!(q.seq, q.quote_seq.max(q.trade_seq), "{sym}: seq");
        }
    }
}
