//! The relay's WebSocket framing held to RFC 6455 by a strict client: every
//! close path ends the TCP connection at once (§7.1.1: after sending and
//! receiving a Close frame the server closes the connection), and a
//! catalogue of client frames that break the protocol, each closed with its
//! code (§5, §7.4).
//!
//! The client here is raw bytes over `std::net`: it never closes its side
//! first. After the closing handshake it only waits for the relay's FIN, so
//! a relay that lingered (waiting for the client to go) would show it.
//! "At once" is checked against a bound well below the relay's own
//! fallback waits (2 s for a client that never answers a Close, 5 s before
//! this was fixed), so a slow machine does not fail it.
//!
//! The relay runs in this process (`server::start`) on a real socket, fed
//! by hand-made packets over loopback multicast.

use crate::support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::ws::{AT_ONCE, CLOSE, PING, Strict, TEXT, close_payload, masked};
use support::{FeedAddr, FeedWriter};
use tickrelay::config::Settings;
use tickrelay::server;

/// The relay in this process, on its own runtime thread; stopped (its
/// shutdown run to the end) when dropped.
struct InProcess {
    addr: SocketAddr,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    feed: FeedWriter,
}

impl InProcess {
    /// A relay with `settings` (HTTP, feed and interface filled in) whose
    /// feed lists AAA and BBB.
    fn start(settings: Settings) -> InProcess {
        let group = FeedAddr::unique();
        let probe = match &settings.token {
            Some(t) => format!("/v1/snapshot?symbols=AAA&token={t}"),
            None => "/v1/snapshot?symbols=AAA".to_owned(),
        };
        let config = Settings {
            http: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            feed_a: Some(group.arg()),
            interface: Some(Ipv4Addr::LOCALHOST),
            fanout_shards: Some(1),
            ..settings
        }
        .validate()
        .expect("valid settings");
        let (addr_tx, addr_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = server::bind(&config).await.expect("bind");
                let running = server::start(listener, config).await.expect("start");
                addr_tx.send(running.local_addr()).unwrap();
                let stop = tokio::task::spawn_blocking(move || {
                    let _ = stop_rx.recv();
                });
                running
                    .wait(async move {
                        let _ = stop.await;
                    })
                    .await
                    .expect("clean shutdown");
            });
        });
        let addr = addr_rx.recv_timeout(support::DEADLINE).expect("listening");
        let mut feed = FeedWriter::new(group, "CLOSE");
        let seq = feed.list(&["AAA", "BBB"]);
        support::poll_until(support::DEADLINE, "the directory applied", || {
            let r = support::get(addr, &probe);
            (r.status == 200 && r.json::<serde_json::Value>()["seq"].as_u64() >= Some(seq))
                .then_some(())
        });
        InProcess {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
            feed,
        }
    }

    /// Starts the relay's shutdown (SIGTERM's path) without waiting for it.
    fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.begin_shutdown();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn a_client_initiated_close_is_answered_and_the_connection_closed_at_once() {
    let relay = InProcess::start(Settings::default());
    let mut ws = Strict::connect(relay.addr, "");
    ws.send(&masked(TEXT, br#"{"op":"subscribe","symbols":["AAA"]}"#));
    ws.text_with("subscribed");
    ws.send(&masked(CLOSE, &close_payload(3001, b"bye")));
    let (code, _) = ws.until_close();
    assert_eq!(code, 3001, "the client's code is echoed");
    ws.expect_fin_at_once("client close");
}

#[test]
fn every_server_close_path_ends_the_connection_once_the_client_answers() {
    // 4001: a token is configured and none is given.
    let relay = InProcess::start(Settings {
        token: Some("s3cret-token".into()),
        ..Default::default()
    });
    let mut ws = Strict::connect(relay.addr, "");
    assert_eq!(ws.until_close().0, 4001);
    ws.answer_close(4001, "4001 bad token");
    drop(relay);

    // 4009: one connection per address; the second is refused.
    let relay = InProcess::start(Settings {
        max_connections_per_ip: Some(1),
        ..Default::default()
    });
    let mut first = Strict::connect(relay.addr, "");
    first.send(&masked(TEXT, br#"{"op":"ping"}"#));
    first.text_with("pong");
    let mut second = Strict::connect(relay.addr, "");
    assert_eq!(second.until_close().0, 4009);
    second.answer_close(4009, "4009 limit");

    // 1002: an unmasked client frame.
    first.send(&[0x81, 0x02, b'h', b'i']);
    assert_eq!(first.until_close().0, 1002);
    first.answer_close(1002, "1002 protocol");
    drop(relay);

    // 4008: `every` mode with a queue of one; three changes in one packet.
    let mut relay = InProcess::start(Settings {
        every_queue: Some(1),
        ..Default::default()
    });
    let mut ws = Strict::connect(relay.addr, "");
    ws.send(&masked(
        TEXT,
        br#"{"op":"subscribe","symbols":["AAA"],"mode":"every"}"#,
    ));
    ws.text_with("subscribed");
    relay.feed.send(&[
        FeedWriter::quote_msg(0, 1_000_000),
        FeedWriter::quote_msg(0, 1_000_100),
        FeedWriter::quote_msg(0, 1_000_200),
    ]);
    assert_eq!(ws.until_close().0, 4008);
    ws.answer_close(4008, "4008 slow consumer");

    // 1001: the relay shuts down.
    let mut ws = Strict::connect(relay.addr, "");
    relay.begin_shutdown();
    assert_eq!(ws.until_close().0, 1001);
    ws.answer_close(1001, "1001 shutdown");
    drop(relay);

    // 4010: a client that answers no ping.
    let relay = InProcess::start(Settings {
        ping_interval_ms: Some(200),
        idle_timeout_ms: Some(600),
        ..Default::default()
    });
    let mut ws = Strict::connect(relay.addr, "");
    assert_eq!(ws.until_close().0, 4010);
    ws.answer_close(4010, "4010 no pong");
}

#[test]
fn a_client_still_uploading_an_oversized_frame_is_closed_when_it_answers() {
    let relay = InProcess::start(Settings {
        max_frame_bytes: Some(4096),
        ..Default::default()
    });
    let mut ws = Strict::connect(relay.addr, "");
    let big = masked(TEXT, &vec![b'x'; 1 << 20]);
    // The header and the first 64 KiB: the relay refuses from the header.
    ws.send(&big[..65_536]);
    assert_eq!(ws.until_close().0, 1009);
    // The rest of the MiB still goes through: the relay keeps reading (and
    // dropping) it, so this write does not block until the relay gives up.
    let start = Instant::now();
    ws.send(&big[65_536..]);
    assert!(
        start.elapsed() < AT_ONCE,
        "the upload blocked for {:?}",
        start.elapsed()
    );
    ws.answer_close(1009, "1009 after the upload");
}

#[test]
fn a_client_that_never_answers_a_close_is_let_go_after_a_bounded_wait() {
    let relay = InProcess::start(Settings {
        max_connections_per_ip: Some(1),
        ..Default::default()
    });
    let _first = Strict::connect(relay.addr, "");
    let mut second = Strict::connect(relay.addr, "");
    assert_eq!(second.until_close().0, 4009);
    let start = Instant::now();
    while second.fill() {}
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "held {:?}",
        start.elapsed()
    );
}

/// One conformance case: frames sent after connecting, and what the relay
/// must do.
struct Case {
    name: &'static str,
    frames: Vec<Vec<u8>>,
    want: Want,
}

enum Want {
    /// A close with this code, then the FIN once answered.
    Close(u16),
    /// These server frames (opcode, payload), in order.
    Frames(Vec<(u8, Vec<u8>)>),
}

fn catalogue() -> Vec<Case> {
    let ping_op = br#"{"op":"ping"}"#;
    let pong_op = (0x1, br#"pong"#.to_vec());
    let mut reason_bad = 1000u16.to_be_bytes().to_vec();
    reason_bad.extend([0xc3, 0x28]);
    vec![
        Case {
            name: "a message in three fragments, pings between them",
            frames: vec![
                masked(0x01, &ping_op[..4]),
                masked(PING, b"between"),
                masked(0x00, &ping_op[4..9]),
                masked(PING, b""),
                masked(0x80, &ping_op[9..]),
            ],
            want: Want::Frames(vec![
                (0xA, b"between".to_vec()),
                (0xA, Vec::new()),
                pong_op.clone(),
            ]),
        },
        Case {
            name: "a ping with a 125-byte payload",
            frames: vec![masked(PING, &[b'p'; 125])],
            want: Want::Frames(vec![(0xA, vec![b'p'; 125])]),
        },
        Case {
            name: "a ping over 125 bytes",
            frames: vec![masked(PING, &[b'p'; 126])],
            want: Want::Close(1002),
        },
        Case {
            name: "a fragmented ping",
            frames: vec![masked(0x09, b"pi"), masked(0x80, b"ng")],
            want: Want::Close(1002),
        },
        Case {
            name: "a reserved bit without an extension",
            frames: vec![masked(TEXT | 0x40, ping_op)],
            want: Want::Close(1002),
        },
        Case {
            name: "an unmasked frame",
            frames: vec![vec![0x81, 0x00]],
            want: Want::Close(1002),
        },
        Case {
            name: "a continuation with no message",
            frames: vec![masked(0x80, b"x")],
            want: Want::Close(1002),
        },
        Case {
            name: "a new message inside a fragmented one",
            frames: vec![masked(0x01, b"{"), masked(TEXT, ping_op)],
            want: Want::Close(1002),
        },
        Case {
            name: "an unknown opcode",
            frames: vec![masked(0x83, b"x")],
            want: Want::Close(1002),
        },
        Case {
            name: "invalid UTF-8 in a text message",
            frames: vec![masked(TEXT, &[b'"', 0xff, 0xfe, b'"'])],
            want: Want::Close(1007),
        },
        Case {
            name: "invalid UTF-8 split across fragments",
            frames: vec![masked(0x01, &[0xce]), masked(0x80, &[0x28])],
            want: Want::Close(1007),
        },
        Case {
            name: "invalid UTF-8 in a close reason",
            frames: vec![masked(CLOSE, &reason_bad)],
            want: Want::Close(1007),
        },
        Case {
            name: "a close frame with a one-byte payload",
            frames: vec![masked(CLOSE, &[0x03])],
            want: Want::Close(1002),
        },
        Case {
            name: "an invalid close code (1005)",
            frames: vec![masked(CLOSE, &1005u16.to_be_bytes())],
            want: Want::Close(1002),
        },
        Case {
            name: "an invalid close code (999)",
            frames: vec![masked(CLOSE, &999u16.to_be_bytes())],
            want: Want::Close(1002),
        },
        Case {
            name: "an unassigned close code (2000)",
            frames: vec![masked(CLOSE, &2000u16.to_be_bytes())],
            want: Want::Close(1002),
        },
        Case {
            name: "a close frame with no payload",
            frames: vec![masked(CLOSE, &[])],
            want: Want::Close(1000),
        },
    ]
}

#[test]
fn the_conformance_catalogue() {
    let relay = InProcess::start(Settings::default());
    for case in catalogue() {
        let mut ws = Strict::connect(relay.addr, "");
        for f in &case.frames {
            ws.send(f);
        }
        match case.want {
            Want::Close(code) => {
                let (got, reason) = ws.until_close();
                assert_eq!(got, code, "{}: {reason}", case.name);
                // A close the client started is already answered; one the
                // relay started waits for the client's Close.
                let client_closed = case.frames.last().is_some_and(|f| f[0] == CLOSE);
                if client_closed {
                    ws.expect_fin_at_once(case.name);
                } else {
                    ws.answer_close(code, case.name);
                }
            }
            Want::Frames(want) => {
                for (op, payload) in want {
                    // The relay's own pings and feed-status frames may come
                    // between at any time; they are not the answers looked for.
                    let f = loop {
                        let f = ws.frame().unwrap_or_else(|| panic!("{}: EOF", case.name));
                        let status = f.op == 0x1 && f.text().contains(r#""type":"feed""#);
                        if f.op != 0x9 && !status {
                            break f;
                        }
                    };
                    assert_eq!(f.op, op, "{}: {}", case.name, f.text());
                    if op == 0xA {
                        assert_eq!(
                            f.payload, payload,
                            "{}: the pong echoes the ping",
                            case.name
                        );
                    } else {
                        let text = String::from_utf8_lossy(&payload);
                        assert!(f.text().contains(&*text), "{}: {}", case.name, f.text());
                    }
                }
                ws.send(&masked(CLOSE, &1000u16.to_be_bytes()));
                assert_eq!(ws.until_close().0, 1000, "{}", case.name);
                ws.expect_fin_at_once(case.name);
            }
        }
    }
}

/// The inode of the relay's side of the connection from local port `peer`
/// to the relay's `port` (`/proc/net/tcp*`).
fn relay_side(port: u16, peer: u16) -> u64 {
    let (local, remote) = (format!(":{port:04X}"), format!(":{peer:04X}"));
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .find_map(|line| {
            // sl, local, remote, state, …, inode (the tenth).
            let f: Vec<&str> = line.split_whitespace().collect();
            (f.len() > 9 && f[1].ends_with(&local) && f[2].ends_with(&remote))
                .then(|| f[9].parse().ok())
                .flatten()
        })
        .expect("the relay's side of the connection is listed")
}

/// Which of the sockets `inodes` a file of this process (the relay runs
/// in it) still holds. A socket whose file is closed is gone from here,
/// whatever its TCP state.
fn still_open(inodes: &[u64]) -> Vec<u64> {
    let links: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    inodes
        .iter()
        .copied()
        .filter(|i| links.contains(&format!("socket:[{i}]")))
        .collect()
}

/// A streaming client's write side lives in its hub client, which the hub
/// holds until the connection unregisters it: a connection that ended and
/// forgot to would keep its socket (and memory) for the relay's life. Every
/// way a connection ends — the client's Close, a server close (a protocol
/// error, 1002, takes the same path as 4008/4009/4010), an SSE client going
/// away — after subscriptions of every channel, must close its socket.
#[test]
fn a_connection_that_ends_frees_its_socket() {
    let mut relay = InProcess::start(Settings::default());
    let port = relay.addr.port();
    let subscribe_all = |ws: &mut Strict| {
        for op in [
            r#"{"op":"subscribe","symbols":["AAA","BBB"]}"#,
            r#"{"op":"subscribe","channel":"book","symbols":["AAA"]}"#,
            r#"{"op":"subscribe","channel":"trades","symbols":["AAA"]}"#,
            r#"{"op":"subscribe","channel":"bars","interval":"1s","symbols":["BBB"]}"#,
        ] {
            ws.send(&masked(TEXT, op.as_bytes()));
            // Past the frames the earlier subscriptions sent meanwhile.
            loop {
                let f = ws.frame().expect("a frame before EOF");
                if f.op == 0x1 && f.text().contains(r#""type":"subscribed""#) {
                    break;
                }
            }
        }
        relay_side(port, ws.tcp.local_addr().unwrap().port())
    };
    let mut relay_sockets = Vec::new();
    for round in 0..3 {
        // The client closes.
        let mut ws = Strict::connect(relay.addr, "");
        relay_sockets.push(subscribe_all(&mut ws));
        ws.send(&masked(CLOSE, &close_payload(1000, b"")));
        ws.until_close();
        ws.expect_fin_at_once("client close");
        // The relay closes: a frame that breaks the protocol.
        let mut ws = Strict::connect(relay.addr, "");
        relay_sockets.push(subscribe_all(&mut ws));
        ws.send(&[0x81, 0x02, b'h', b'i']);
        assert_eq!(ws.until_close().0, 1002, "round {round}: an unmasked frame");
        ws.send(&masked(CLOSE, &close_payload(1002, b"")));
        ws.expect_fin_at_once("server close");
        // An SSE client of every channel goes away.
        let mut sse = std::net::TcpStream::connect(relay.addr).unwrap();
        let get = "GET /v1/stream?symbols=AAA&book=AAA&trades=AAA&bars=BBB&interval=1s \
                   HTTP/1.1\r\nHost: relay\r\n\r\n";
        std::io::Write::write_all(&mut sse, get.as_bytes()).unwrap();
        sse.set_read_timeout(Some(support::DEADLINE)).unwrap();
        let mut head = [0u8; 512];
        let n = std::io::Read::read(&mut sse, &mut head).unwrap();
        let head = String::from_utf8_lossy(&head[..n]);
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
        relay_sockets.push(relay_side(port, sse.local_addr().unwrap().port()));
    }
    // Quotes of the subscribed symbols make the relay write to (and so
    // notice) the SSE clients that left.
    let mut bid = 100_0000;
    support::poll_until(
        support::DEADLINE,
        "every ended connection's socket closed",
        || {
            bid += 100;
            relay.feed.quote(0, bid, bid + 100, (1, 2));
            still_open(&relay_sockets).is_empty().then_some(())
        },
    );
}
