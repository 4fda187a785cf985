//! Beyond one multicast domain: the feed carried through a NATS JetStream
//! stream (docs/SCALING.md, docs/ARCHITECTURE.md "NATS JetStream").
//!
//! Two halves, both tasks on the main runtime that talk to the ingest
//! thread through bounded channels, so the ingest path never waits on NATS:
//!
//! - the **publisher** (`tickrelay bridge`): the ingest's sequencer forwards
//!   every datagram that moved the feed on (the sequencer's
//!   `Sink::forward`, in `feed`); each is published unchanged
//!   to `STREAM.feed.SESSION`, a data packet with `Nats-Msg-Id` =
//!   `SESSION:SEQ` of its first message, so two bridges on one feed store it
//!   once. Heartbeats carry the session's horizon and go out without an id.
//! - the **line** (`tickrelay serve --nats`): an ordered consumer hands the
//!   stored packets to the ingest as one more feed line, arbitrated by
//!   sequence like line B. A late joiner replays the current session from its
//!   first stream sequence; a reconnect resumes after the last stream
//!   sequence seen; a retransmission request is answered from the stream by
//!   the feed → stream sequence map learned as packets arrive.
//!
//! Malformed payloads are not this module's business: the ingest counts and
//! drops them like a bad datagram.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::metrics::{NatsMetrics, ReasonLabel};
use crate::retransmit::Request;
use crate::wire::{Packet, PacketKind, Session};

/// Where the stream lives: a NATS server and a JetStream stream name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsTarget {
    /// Server URL, `nats://HOST:PORT` (or `HOST:PORT`).
    pub url: String,
    /// Stream name: letters, digits, `-` and `_`.
    pub stream: String,
}

/// Whether `name` may name a JetStream stream (and a subject token).
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The subject a session's packets are published on: `STREAM.feed.SESSION`,
/// the session with anything that is not a letter, digit, `-` or `_` as `_`.
pub fn subject(stream: &str, session: Session) -> String {
    let mut s = format!("{stream}.feed.");
    let id = session.as_str();
    if id.is_empty() {
        s.push('_');
    }
    s.extend(id.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c
        } else {
            '_'
        }
    }));
    s
}

/// The `Nats-Msg-Id` of a datagram: `SESSION:SEQ` for a data packet,
/// `SESSION:end` for the end of session, none for a heartbeat (they repeat
/// the same sequence while the feed is idle, and each one is news).
pub fn msg_id(packet: &Packet<'_>) -> Option<String> {
    match packet.kind {
        PacketKind::Data => Some(format!("{}:{}", packet.session, packet.seq)),
        PacketKind::EndOfSession => Some(format!("{}:end", packet.session)),
        PacketKind::Heartbeat => None,
    }
}

/// The stream both halves create when it is missing: file storage, every
/// session's subject, duplicates caught for two minutes.
pub fn stream_config(name: &str) -> stream::Config {
    stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{name}.feed.>")],
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

/// Connects, retrying forever in the background (the server may start
/// later or restart); logs connects and disconnects.
async fn connect(
    url: &str,
    name: &'static str,
    metrics: &NatsMetrics,
    reconnected: Option<Arc<Notify>>,
) -> Option<async_nats::Client> {
    let m = metrics.clone();
    let url_log = url.to_owned();
    let options = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(2))
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((50 * attempts as u64).min(1_000))
        })
        .event_callback(move |event| {
            let m = m.clone();
            let url = url_log.clone();
            let reconnected = reconnected.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        m.connected.set(1);
                        if m.connects.inc() > 0 {
                            if let Some(n) = reconnected {
                                n.notify_one();
                            }
                        }
                        tracing::info!(%url, "NATS connected");
                    }
                    async_nats::Event::Disconnected => {
                        m.connected.set(0);
                        tracing::warn!(%url, "NATS disconnected; reconnecting");
                    }
                    other => tracing::info!(%url, event = %other, "NATS event"),
                }
            }
        });
    match options.connect(url).await {
        Ok(c) => {
            // retry_on_initial_connect returns before the first connect.
            Some(c)
        }
        Err(e) => {
            tracing::error!(%url, error = %e, "cannot use the NATS URL (setting nats)");
            None
        }
    }
}

/// Gets the stream, creating it when missing; retries until cancelled.
async fn open_stream(
    js: &jetstream::Context,
    name: &str,
    cancel: &CancellationToken,
) -> Option<stream::Stream> {
    loop {
        match js.get_or_create_stream(stream_config(name)).await {
            Ok(s) => {
                tracing::info!(stream = name, "JetStream stream ready");
                return Some(s);
            }
            Err(e) => {
                tracing::warn!(stream = name, error = %e, "JetStream stream not ready; retrying")
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

// ---------------------------------------------------------------------------
// The publisher (bridge)

/// Most datagrams waiting to be published; past it they are counted and
/// dropped (a stream hole a consumer's gap logic then sees) rather than let
/// the ingest wait.
const PUBLISH_QUEUE: usize = 65_536;
/// Publishes awaiting their acknowledgement at once.
const PUBLISH_WINDOW: usize = 512;

struct Outgoing {
    raw: Bytes,
    since: Instant,
}

/// The ingest's handle on the publisher: hands it a datagram, never waits.
#[derive(Clone, Debug)]
pub struct Forward {
    tx: mpsc::Sender<Outgoing>,
    metrics: NatsMetrics,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Outgoing({} bytes)", self.raw.len())
    }
}

impl Forward {
    /// Queues one datagram for publishing (a copy); a full queue drops it,
    /// counted as `queue_full`.
    pub fn packet(&self, raw: &[u8]) {
        let out = Outgoing {
            raw: Bytes::copy_from_slice(raw),
            since: Instant::now(),
        };
        if self.tx.try_send(out).is_err() {
            self.metrics
                .publish_errors
                .get_or_create(&ReasonLabel {
                    reason: "queue_full",
                })
                .inc();
        }
    }
}

/// Starts the publisher on the current runtime. The task ends once every
/// [`Forward`] is dropped and what was queued is acknowledged, or soon
/// after `cancel`.
pub fn spawn_publisher(
    target: NatsTarget,
    metrics: NatsMetrics,
    cancel: CancellationToken,
) -> (Forward, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
    let forward = Forward {
        tx,
        metrics: metrics.clone(),
    };
    let task = tokio::spawn(publish_loop(target, rx, metrics, cancel));
    (forward, task)
}

type AckResult = Result<jetstream::publish::PublishAck, jetstream::context::PublishError>;

async fn publish_loop(
    target: NatsTarget,
    mut rx: mpsc::Receiver<Outgoing>,
    metrics: NatsMetrics,
    cancel: CancellationToken,
) {
    let Some(client) = connect(&target.url, "tickrelay-bridge", &metrics, None).await else {
        return;
    };
    let mut js = jetstream::new(client);
    // An acknowledgement lost with a connection is retried after this: the
    // shorter, the nearer the retried packet lands to its place in the stream.
    js.set_timeout(Duration::from_secs(1));
    if open_stream(&js, &target.stream, &cancel).await.is_none() {
        return;
    }
    let mut inflight = FuturesUnordered::new();
    let mut retry: VecDeque<Outgoing> = VecDeque::new();
    let mut open = true;
    // After cancellation, what is in flight gets a moment to be acknowledged.
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        if !open && inflight.is_empty() && retry.is_empty() {
            break;
        }
        // Retries first, in order, so the stream stays in feed order as far
        // as it can (a consumer's sequencer holds a rare reordering).
        while inflight.len() < PUBLISH_WINDOW {
            let Some(item) = retry.pop_front() else { break };
            match publish(&js, &target.stream, &item, &metrics).await {
                Some(ack) => inflight.push(ack_of(ack, item)),
                None => {
                    retry.push_front(item);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            }
        }
        let room = open && retry.is_empty() && inflight.len() < PUBLISH_WINDOW;
        let stop_at =
            deadline.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = cancel.cancelled(), if deadline.is_none() => {
                deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
            }
            _ = tokio::time::sleep_until(stop_at), if deadline.is_some() => {
                tracing::warn!(
                    unacknowledged = inflight.len() + retry.len(),
                    "bridge stopping with packets not yet acknowledged"
                );
                break;
            }
            item = rx.recv(), if room => match item {
                Some(item) => match publish(&js, &target.stream, &item, &metrics).await {
                    Some(ack) => inflight.push(ack_of(ack, item)),
                    None => retry.push_back(item),
                },
                None => open = false,
            },
            Some((result, item)) = inflight.next(), if !inflight.is_empty() => {
                settle(result, item, &metrics, &mut retry);
            }
            // Nothing in flight to wake the loop: try the retries again soon.
            _ = tokio::time::sleep(Duration::from_millis(50)), if !retry.is_empty() && inflight.is_empty() => {}
        }
        metrics.publish_queue.set((rx.len() + retry.len()) as i64);
    }
}

async fn ack_of(
    ack: jetstream::context::PublishAckFuture,
    item: Outgoing,
) -> (AckResult, Outgoing) {
    (ack.await, item)
}

fn settle(
    result: AckResult,
    item: Outgoing,
    metrics: &NatsMetrics,
    retry: &mut VecDeque<Outgoing>,
) {
    match result {
        Ok(ack) => {
            metrics.published_packets.inc();
            metrics.published_bytes.inc_by(item.raw.len() as u64);
            if ack.duplicate {
                metrics.publish_duplicates.inc();
            }
            metrics
                .publish_latency
                .observe(item.since.elapsed().as_secs_f64());
        }
        Err(e) => {
            metrics
                .publish_errors
                .get_or_create(&ReasonLabel { reason: "ack" })
                .inc();
            tracing::debug!(error = %e, "publish not acknowledged; publishing again");
            // The same Nats-Msg-Id: if the first copy was stored after all,
            // the stream drops this one.
            retry.push_back(item);
        }
    }
}

/// Sends one datagram; `None` when the client refused it (counted).
async fn publish(
    js: &jetstream::Context,
    stream: &str,
    item: &Outgoing,
    metrics: &NatsMetrics,
) -> Option<jetstream::context::PublishAckFuture> {
    let Ok(packet) = Packet::parse(&item.raw) else {
        // The sequencer forwards only datagrams it parsed.
        return None;
    };
    let mut headers = async_nats::HeaderMap::new();
    if let Some(id) = msg_id(&packet) {
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    }
    match js
        .publish_with_headers(subject(stream, packet.session), headers, item.raw.clone())
        .await
    {
        Ok(ack) => Some(ack),
        Err(e) => {
            metrics
                .publish_errors
                .get_or_create(&ReasonLabel { reason: "publish" })
                .inc();
            tracing::debug!(error = %e, "publish refused");
            None
        }
    }
}

// ---------------------------------------------------------------------------
// The line (serve --nats)

/// A datagram read from the stream.
#[derive(Debug)]
pub struct NatsPacket {
    /// The packet as the bridge published it.
    pub raw: Bytes,
    /// Sent to answer a retransmission request (history), not live.
    pub retransmit: bool,
}

/// The ingest's end of the line: packets in, retransmission requests out.
#[derive(Debug)]
pub struct Line {
    /// Packets from the stream, in stream order.
    pub packets: mpsc::Receiver<NatsPacket>,
    /// Requests for missing messages, answered from the stream.
    pub requests: mpsc::Sender<Request>,
}

/// Packets between the NATS task and the ingest: backpressure on the
/// consumer (flow-controlled by JetStream), never on the ingest.
const LINE_QUEUE: usize = 8_192;
/// Most feed → stream sequence pairs remembered (16 bytes each).
const MAX_MAP: usize = 1 << 20;
/// Most stream messages fetched to answer one request.
const MAX_FETCH: usize = 4_096;

/// Starts the line's task on the current runtime.
pub fn spawn_line(target: NatsTarget, metrics: NatsMetrics, cancel: CancellationToken) -> Line {
    let (tx, packets) = mpsc::channel(LINE_QUEUE);
    let (requests, req_rx) = mpsc::channel(256);
    tokio::spawn(line_loop(target, tx, req_rx, metrics, cancel));
    Line { packets, requests }
}

/// Which stream sequence holds which feed sequence, for the current session.
#[derive(Default)]
struct SeqMap {
    session: Option<Session>,
    /// (first feed sequence of a packet, its stream sequence), ascending.
    pairs: VecDeque<(u64, u64)>,
}

impl SeqMap {
    fn learn(&mut self, packet: &Packet<'_>, stream_seq: u64) {
        if packet.kind != PacketKind::Data {
            return;
        }
        if self.session != Some(packet.session) {
            self.session = Some(packet.session);
            self.pairs.clear();
        }
        if self.pairs.back().is_some_and(|&(f, _)| f >= packet.seq) {
            return;
        }
        if self.pairs.len() >= MAX_MAP {
            self.pairs.pop_front();
        }
        self.pairs.push_back((packet.seq, stream_seq));
    }

    /// The stream sequence of the packet holding `seq` (or the first after it).
    fn find(&self, session: Session, seq: u64) -> Option<u64> {
        if self.session != Some(session) || self.pairs.is_empty() {
            return None;
        }
        let i = self.pairs.partition_point(|&(f, _)| f <= seq);
        Some(self.pairs[i.saturating_sub(1)].1)
    }
}

async fn line_loop(
    target: NatsTarget,
    tx: mpsc::Sender<NatsPacket>,
    mut requests: mpsc::Receiver<Request>,
    metrics: NatsMetrics,
    cancel: CancellationToken,
) {
    // A server restart loses the ephemeral consumer; rather than wait for
    // missed heartbeats to say so, a reconnect starts a new one at once.
    let reconnected = Arc::new(Notify::new());
    let Some(client) = connect(
        &target.url,
        "tickrelay-relay",
        &metrics,
        Some(reconnected.clone()),
    )
    .await
    else {
        return;
    };
    let js = jetstream::new(client);
    let Some(stream) = open_stream(&js, &target.stream, &cancel).await else {
        return;
    };
    let filter = format!("{}.feed.>", target.stream);
    let mut map = SeqMap::default();
    // The next stream sequence to read; none until the first start.
    let mut resume: Option<u64> = None;
    loop {
        let policy = match resume {
            Some(s) => consumer::DeliverPolicy::ByStartSequence { start_sequence: s },
            None => session_start(&stream).await,
        };
        let from = match policy {
            consumer::DeliverPolicy::ByStartSequence { start_sequence } => start_sequence,
            _ => 1,
        };
        tracing::info!(
            stream = %target.stream,
            from_stream_seq = from,
            resumed = resume.is_some(),
            "NATS line: replaying the stream"
        );
        metrics.replays.inc();
        let messages = async {
            stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: filter.clone(),
                    deliver_policy: policy,
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?
                .messages()
                .await
                .map_err(|e| e.to_string())
        };
        let mut messages = tokio::select! {
            _ = cancel.cancelled() => return,
            m = messages => match m {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(error = %e, "NATS line: cannot start the consumer; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    }
                }
            },
        };
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = reconnected.notified() => {
                    tracing::info!(resume_stream_seq = ?resume, "NATS line: reconnected; resuming the stream");
                    break;
                }
                Some(req) = requests.recv() => {
                    answer(&stream, &map, req, &tx, &metrics).await;
                }
                next = messages.next() => match next {
                    Some(Ok(msg)) => {
                        let Ok(info) = msg.info() else { continue };
                        resume = Some(info.stream_sequence + 1);
                        if let Ok(p) = Packet::parse(&msg.payload) {
                            map.learn(&p, info.stream_sequence);
                        }
                        let packet = NatsPacket { raw: msg.payload.clone(), retransmit: false };
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            sent = tx.send(packet) => if sent.is_err() { return },
                        }
                    }
                    Some(Err(e)) => {
                        metrics.consumer_errors.inc();
                        tracing::warn!(error = %e, "NATS line: consumer error; resuming");
                        break;
                    }
                    None => break,
                },
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Where a late joiner starts: the first stream message of the newest
/// session (found by its subject), or the whole stream if that fails.
async fn session_start(stream: &stream::Stream) -> consumer::DeliverPolicy {
    let start = async {
        let info = stream.get_info().await.map_err(|e| e.to_string())?;
        if info.state.messages == 0 {
            return Ok::<_, String>(None);
        }
        let last = stream
            .get_raw_message(info.state.last_sequence)
            .await
            .map_err(|e| e.to_string())?;
        let first = stream
            .get_first_raw_message_by_subject(last.subject.as_str(), info.state.first_sequence)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            subject = %last.subject,
            first_stream_seq = first.sequence,
            last_stream_seq = info.state.last_sequence,
            "NATS line: the newest session starts here"
        );
        Ok(Some(first.sequence))
    };
    match start.await {
        Ok(Some(s)) => consumer::DeliverPolicy::ByStartSequence { start_sequence: s },
        Ok(None) => consumer::DeliverPolicy::All,
        Err(e) => {
            tracing::warn!(error = %e, "NATS line: newest session not found; replaying the whole stream");
            consumer::DeliverPolicy::All
        }
    }
}

/// Answers a retransmission request from the stream: every stored packet
/// of the session overlapping the range, from the one holding `req.seq` on
/// to the end of the stream (at most [`MAX_FETCH`] messages). Not only up to
/// the first packet past the range: a publish the bridge retried after a
/// lost acknowledgement is stored later than the packets after it.
async fn answer(
    stream: &stream::Stream,
    map: &SeqMap,
    req: Request,
    tx: &mpsc::Sender<NatsPacket>,
    metrics: &NatsMetrics,
) {
    let Some(mut at) = map.find(req.session, req.seq) else {
        return;
    };
    let end = req.seq + u64::from(req.count);
    for _ in 0..MAX_FETCH {
        let Ok(msg) = stream.get_raw_message(at).await else {
            return;
        };
        at += 1;
        let Ok(p) = Packet::parse(&msg.payload) else {
            continue;
        };
        if p.session != req.session
            || p.kind != PacketKind::Data
            || p.end_seq() <= req.seq
            || p.seq >= end
        {
            continue;
        }
        metrics.replayed_packets.inc();
        let packet = NatsPacket {
            raw: msg.payload,
            retransmit: true,
        };
        if tx.send(packet).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::header;

    #[test]
    fn subjects_and_ids() {
        assert_eq!(subject("FEED", Session::new("S1")), "FEED.feed.S1");
        assert_eq!(subject("FEED", Session::new("a.b*c>")), "FEED.feed.a_b_c_");
        assert_eq!(subject("FEED", Session::new("")), "FEED.feed._");
        let raw = header(Session::new("S1"), 42, 0);
        assert_eq!(msg_id(&Packet::parse(&raw).unwrap()), None);
        let raw = header(Session::new("S1"), 42, 0xFFFF);
        assert_eq!(
            msg_id(&Packet::parse(&raw).unwrap()).as_deref(),
            Some("S1:end")
        );
        let raw = &crate::wire::testing::trade_packets("S1", 3, 3)[0];
        assert_eq!(
            msg_id(&Packet::parse(raw).unwrap()).as_deref(),
            Some("S1:1")
        );
        assert!(valid_stream_name("FEED_1-x"));
        assert!(!valid_stream_name("a.b"));
        assert!(!valid_stream_name(""));
    }

    #[test]
    fn the_map_finds_the_packet_holding_a_sequence() {
        let mut m = SeqMap::default();
        let packets = crate::wire::testing::trade_packets("S", 9, 3); // 1, 4, 7
        for (i, raw) in packets.iter().enumerate() {
            m.learn(&Packet::parse(raw).unwrap(), 100 + i as u64);
        }
        let s = Session::new("S");
        assert_eq!(m.find(s, 1), Some(100));
        assert_eq!(m.find(s, 5), Some(101));
        assert_eq!(m.find(s, 9), Some(102));
        assert_eq!(m.find(Session::new("T"), 5), None);
    }
}
