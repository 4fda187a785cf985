//! The line (`tickrelay serve --nats`): an ordered consumer hands the
//! stored packets to the ingest as one more feed line; retransmission
//! requests are answered from the stream.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::metrics::NatsMetrics;
use crate::retransmit::Request;
use crate::wire::{Packet, PacketKind, Session};

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
