//! The publisher (`tickrelay bridge`): every datagram that moved the feed
//! on, published unchanged to the stream with `Nats-Msg-Id` = `SESSION:SEQ`,
//! through a bounded queue and a window of unacknowledged publishes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::metrics::{NatsMetrics, ReasonLabel};
use crate::wire::Packet;

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
