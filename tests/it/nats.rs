//! The feed through NATS JetStream, end to end: `tickrelay bridge` joins the
//! multicast feed and publishes it into a stream; `tickrelay serve --nats`
//! reads the stream as its feed line.
//!
//! Real processes on loopback: a `nats-server -js` started per test on a
//! free port with its own store directory (killed on drop), the
//! `feed-simulator` binary, bridges and relays. Each run is bounded by the
//! simulator's `--duration`.

use crate::support;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `nats-server`: on PATH, or where Debian puts it.
fn nats_server_path() -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v nats-server"])
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("/usr/sbin/nats-server")
}

/// A JetStream-enabled `nats-server` on loopback, killed on drop.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
}

impl NatsServer {
    fn start(name: &str) -> NatsServer {
        let store = support::scratch(&format!("js-{name}"));
        let _ = std::fs::remove_dir_all(&store);
        std::fs::create_dir_all(&store).unwrap();
        let mut s = NatsServer {
            child: None,
            port: support::free_tcp_port(),
            store,
        };
        s.spawn();
        s
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(nats_server_path())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (install Debian's nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (SIGTERM, as an operator would) and starts it again
    /// on the same port and store after `down`.
    fn restart(&mut self, down: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The outage is the subject: the server stays down for `down`.
        std::thread::sleep(down);
        self.spawn();
    }

    /// The stream's stored message count, through the JetStream API.
    fn stream_messages(&self, stream: &str) -> u64 {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = async_nats::connect(self.url()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let mut s = js.get_stream(stream).await.unwrap();
            s.info().await.unwrap().state.messages
        })
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// `tickrelay COMMAND --http 127.0.0.1:0 ARGS`, never stale while a test
/// inspects the end of a run; waited for until it listens.
fn start(command: &str, args: &[&str]) -> support::Relay {
    let mut all: Vec<String> = vec!["--stale-after-ms".into(), "60000".into()];
    all.extend(args.iter().map(|s| s.to_string()));
    support::Relay::loopback(command, &all)
}

fn bridge(group: &str, retransmit: &str, nats: &NatsServer, stream: &str) -> support::Relay {
    start(
        "bridge",
        &[
            "--feed-a",
            group,
            "--retransmit",
            retransmit,
            "--nats",
            &nats.url(),
            "--stream",
            stream,
        ],
    )
}

/// A relay fed by the stream alone.
fn nats_relay(nats: &NatsServer, stream: &str) -> support::Relay {
    start(
        "serve",
        &["--feed-a", "off", "--nats", &nats.url(), "--stream", stream],
    )
}

fn simulator(group: &str, retransmit: &str, session: &str, secs: u32, final_path: &Path) -> Child {
    support::spawn_simulator(&[
        "--group",
        group,
        "--retransmit",
        retransmit,
        "--symbols",
        "300",
        "--rate",
        "2000",
        "--zipf",
        "1.1",
        "--duration",
        &secs.to_string(),
        "--session",
        session,
        "--final-state",
        final_path.to_str().unwrap(),
    ])
}

fn m(relay: &support::Relay, name: &str) -> f64 {
    relay.metrics().get(name)
}

const NATS_PACKETS: &str = "tickrelay_feed_packets_received_total{line=\"nats\"}";

#[test]
fn a_relay_fed_only_through_nats_ends_equal_to_the_feed() {
    let nats = NatsServer::start("only");
    let group = support::FeedAddr::unique().to_string();
    let server = format!("127.0.0.1:{}", support::free_udp_port());
    let final_path = support::scratch("only.json");
    let bridge = bridge(&group, &server, &nats, "ONLY");
    let relay = nats_relay(&nats, "ONLY");
    let sim = simulator(&group, &server, "NATSONLY", 5, &final_path);
    support::wait_sim(sim, Duration::from_secs(30));
    support::assert_equals_final_state(&relay, &final_path, false);
    assert!(m(&relay, NATS_PACKETS) > 0.0);
    assert_eq!(m(&relay, "tickrelay_feed_lost_messages_total"), 0.0);
    assert!(m(&bridge, "tickrelay_bridge_published_packets_total") > 0.0);
    assert_eq!(
        m(
            &bridge,
            "tickrelay_bridge_publish_errors_total{reason=\"queue_full\"}"
        ),
        0.0
    );
    assert!(m(&bridge, "tickrelay_bridge_publish_latency_seconds_count") > 0.0);
}

#[test]
fn a_relay_restarted_mid_run_catches_up_from_the_stream() {
    let nats = NatsServer::start("restart-relay");
    let group = support::FeedAddr::unique().to_string();
    let server = format!("127.0.0.1:{}", support::free_udp_port());
    let final_path = support::scratch("restart-relay.json");
    let bridge = bridge(&group, &server, &nats, "RELAYR");
    let mut first = nats_relay(&nats, "RELAYR");
    let sim = simulator(&group, &server, "RELAYRST", 8, &final_path);
    // The first relay reads the stream, then dies mid-run.
    first.wait_metric(NATS_PACKETS, |n| n > 0.0);
    first.kill();
    // The stream moves on while no relay reads it: the bridge publishes
    // after the kill.
    let published = "tickrelay_bridge_published_packets_total";
    let at_kill = m(&bridge, published);
    bridge.wait_metric(published, |n| n > at_kill);
    let second = nats_relay(&nats, "RELAYR");
    support::wait_sim(sim, Duration::from_secs(30));
    support::assert_equals_final_state(&second, &final_path, false);
    // It replayed the session from its start: nothing to recover.
    assert_eq!(m(&second, "tickrelay_feed_lost_messages_total"), 0.0);
    assert_eq!(m(&second, "tickrelay_feed_recoveries_total"), 0.0);
    assert!(m(&second, "tickrelay_nats_replays_total") >= 1.0);
}

#[test]
fn a_nats_server_restart_loses_nothing_the_stream_stored() {
    let mut nats = NatsServer::start("restart-server");
    let group = support::FeedAddr::unique().to_string();
    let server = format!("127.0.0.1:{}", support::free_udp_port());
    let final_path = support::scratch("restart-server.json");
    let bridge = bridge(&group, &server, &nats, "SRVR");
    // While the server is down the bridge's publishes fail and are sent
    // again once it is back, after later ones may have been stored: the
    // stream holds every packet, some out of feed order. A relay fed by
    // the stream alone must hold a gap longer than the outage to see the
    // late ones arrive (the default 100 ms is for a multicast line).
    let relay = start(
        "serve",
        &[
            "--feed-a",
            "off",
            "--nats",
            &nats.url(),
            "--stream",
            "SRVR",
            "--gap-hold-ms",
            "5000",
        ],
    );
    let sim = simulator(&group, &server, "SRVRST", 9, &final_path);
    // The relay reads the stream before the restart.
    relay.wait_metric(NATS_PACKETS, |n| n > 0.0);
    nats.restart(Duration::from_secs(1));
    support::wait_sim(sim, Duration::from_secs(30));
    support::assert_equals_final_state(&relay, &final_path, false);
    assert_eq!(m(&relay, "tickrelay_feed_lost_messages_total"), 0.0);
    assert!(
        m(&relay, "tickrelay_nats_connects_total") >= 2.0,
        "relay reconnected"
    );
    assert!(
        m(&bridge, "tickrelay_nats_connects_total") >= 2.0,
        "bridge reconnected"
    );
    assert_eq!(
        m(
            &bridge,
            "tickrelay_bridge_publish_errors_total{reason=\"queue_full\"}"
        ),
        0.0
    );
}

#[test]
fn two_bridges_on_one_feed_store_each_packet_once() {
    let nats = NatsServer::start("dedupe");
    let group = support::FeedAddr::unique().to_string();
    let server = format!("127.0.0.1:{}", support::free_udp_port());
    let final_path = support::scratch("dedupe.json");
    let one = bridge(&group, &server, &nats, "DEDUPE");
    let two = bridge(&group, &server, &nats, "DEDUPE");
    let sim = simulator(&group, &server, "DEDUPE", 4, &final_path);
    support::wait_sim(sim, Duration::from_secs(30));
    // A relay that reads the stored stream afterwards sees every data
    // message exactly once.
    let relay = nats_relay(&nats, "DEDUPE");
    support::assert_equals_final_state(&relay, &final_path, false);
    assert_eq!(
        m(&relay, "tickrelay_feed_duplicate_messages_total"),
        0.0,
        "no data message stored twice"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let (p1, p2, d) = loop {
        let p1 = m(&one, "tickrelay_bridge_published_packets_total");
        let p2 = m(&two, "tickrelay_bridge_published_packets_total");
        let d = m(&one, "tickrelay_bridge_duplicate_packets_total")
            + m(&two, "tickrelay_bridge_duplicate_packets_total");
        let stored = nats.stream_messages("DEDUPE") as f64;
        if p1 + p2 - d == stored {
            break (p1, p2, d);
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged {p1} + {p2} - {d} duplicates != {stored} stored"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let stored = nats.stream_messages("DEDUPE") as f64;
    eprintln!("bridges published {p1} and {p2}; {d} duplicates; {stored} stored");
    // Both bridges saw every packet; the stream kept one copy of each data
    // packet (heartbeats, not deduplicated, are few).
    assert!(d > 0.0);
    assert!(stored < 0.6 * (p1 + p2), "stored {stored} of {p1} + {p2}");
    assert_eq!(
        m(&relay, NATS_PACKETS),
        stored,
        "the relay read each stored packet"
    );
}
