//! permessage-deflate on a WebSocket connection (docs/PROTOCOL.md,
//! "Compression"): the outgoing side's compressor and what each connection
//! holds for it, counted in `tickrelay_ws_deflate_bytes`.
//!
//! A message compressed on its own (`server_no_context_takeover`, always
//! so in the `no_context` mode) uses its thread's compressor
//! (`deflate::compress_alone`): the connection holds none, and the next
//! client of a sweep sent the same bytes gets the same compression without
//! compressing again. With context takeover the connection keeps its own
//! compressor from its first compressed message on: the 32 KiB window's
//! (`context`, counted as `deflate::DEFLATER_BYTES`) or the small window's
//! (`small_context`, its bytes counted exactly). Messages are compressed
//! under the writer's lock, in the order they are written.

use std::cell::RefCell;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::deflate::{self, Agreement, DEFLATER_BYTES, Deflater, SmallDeflater};
use crate::metrics::StreamMetrics;

/// Bytes a connection holds for permessage-deflate, in the gauge while it
/// does.
pub struct Held {
    gauge: Gauge,
    bytes: i64,
}

impl Held {
    /// Nothing held yet; `metrics` counts the connection.
    pub fn new(metrics: &StreamMetrics) -> Self {
        Held {
            gauge: metrics.ws_deflate_bytes.clone(),
            bytes: 0,
        }
    }

    /// Now `bytes` are held.
    pub fn set(&mut self, bytes: usize) {
        let bytes = bytes as i64;
        if bytes != self.bytes {
            self.gauge.inc_by(bytes - self.bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// The outgoing side of a connection that negotiated permessage-deflate.
pub struct Outgoing {
    agreement: Agreement,
    /// With context takeover in a 32 KiB window, from the first message on.
    deflater: Option<Deflater>,
    /// With context takeover in a small window, from the first message on.
    small: Option<SmallDeflater>,
    held: Held,
    shared: Counter,
    connections: Gauge,
}

thread_local! {
    /// A payload's copy while it is compressed back into its buffer.
    static PAYLOAD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Outgoing {
    /// The outgoing side under `agreement`.
    pub fn new(agreement: Agreement, metrics: &StreamMetrics) -> Self {
        metrics.ws_deflate_connections.inc();
        Outgoing {
            agreement,
            deflater: None,
            small: None,
            held: Held::new(metrics),
            shared: metrics.ws_deflate_shared.clone(),
            connections: metrics.ws_deflate_connections.clone(),
        }
    }

    /// Compresses the payload `buf[at..]` in place: the message's frame
    /// then has RSV1 set.
    pub fn compress_tail(&mut self, buf: &mut Vec<u8>, at: usize) {
        let a = self.agreement;
        if let (Some(bits), false) = (a.small_window, a.server_no_context) {
            let small = self.small.get_or_insert_with(|| SmallDeflater::new(bits));
            small.message_in_place(buf, at, true);
            self.held.set(small.held_bytes());
            return;
        }
        PAYLOAD.with_borrow_mut(|payload| {
            payload.clear();
            payload.extend_from_slice(&buf[at..]);
            buf.truncate(at);
            if self.agreement.server_no_context {
                if deflate::compress_alone(payload, buf, a.small_window) {
                    self.shared.inc();
                }
            } else {
                self.deflater
                    .get_or_insert_with(Deflater::default)
                    .message(payload, buf, true);
                self.held.set(DEFLATER_BYTES);
            }
            if payload.capacity() > 1 << 20 {
                *payload = Vec::new();
            }
        });
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.connections.dec();
    }
}
