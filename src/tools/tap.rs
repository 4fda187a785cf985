//! What the lab (`tickrelay lab`) watches of each load
//! client beyond the load report: the bytes that cross its socket in both
//! directions, and every quote's `(symbol, seq)` as it arrives, so the lab
//! can tell how old each client's view of a symbol was at any moment.
//!
//! Below both: the load generator's clients feed it and the lab reads it,
//! and it names neither, so the three stay a chain (lab → load → tap) with
//! no cycle. `tickrelay load` runs without one, so its hot path pays
//! nothing for it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use parking_lot::Mutex;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::clock::now_ns;

/// One quote as a client saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When it arrived, ns since the Unix epoch (this host's clock).
    pub at_ns: u64,
    /// The symbol.
    pub symbol: String,
    /// The quote's `seq`: the feed sequence of the symbol's last change.
    pub seq: u64,
}

/// Bytes on one client's socket and the quotes it received.
#[derive(Default)]
pub struct ClientTap {
    /// Bytes read from the socket.
    pub rx: AtomicU64,
    /// Bytes written to the socket.
    pub tx: AtomicU64,
    /// Every quote received, in arrival order.
    pub seen: Mutex<Vec<Seen>>,
}

/// The taps of every client of one run, and the run's measured window.
pub struct Tap {
    clients: Box<[Arc<ClientTap>]>,
    window: Mutex<(u64, u64)>,
}

/// Bytes both ways over the measured window, summed over the clients.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bytes {
    /// Read by the clients.
    pub rx: u64,
    /// Written by the clients.
    pub tx: u64,
}

impl Tap {
    /// Taps for `clients` clients.
    pub fn new(clients: usize) -> Tap {
        Tap {
            clients: (0..clients).map(|_| Arc::default()).collect(),
            window: Mutex::new((0, 0)),
        }
    }

    /// The tap of client `id`.
    pub fn client(&self, id: usize) -> Arc<ClientTap> {
        self.clients[id % self.clients.len()].clone()
    }

    /// Every client's tap, by client id.
    pub fn clients(&self) -> &[Arc<ClientTap>] {
        &self.clients
    }

    /// The measured window starts now: byte counts restart from zero.
    pub fn start_window(&self) {
        for c in self.clients.iter() {
            c.rx.store(0, Ordering::Relaxed);
            c.tx.store(0, Ordering::Relaxed);
        }
        *self.window.lock() = (now_ns(), 0);
    }

    /// The measured window ends now; returns the bytes counted in it.
    pub fn end_window(&self) -> Bytes {
        self.window.lock().1 = now_ns();
        self.bytes()
    }

    /// Start and end of the measured window, ns since the Unix epoch.
    pub fn window(&self) -> (u64, u64) {
        *self.window.lock()
    }

    /// Sets the window by hand (tests of what is computed over it).
    #[cfg(test)]
    pub(crate) fn set_window(&self, start_ns: u64, end_ns: u64) {
        *self.window.lock() = (start_ns, end_ns);
    }

    fn bytes(&self) -> Bytes {
        self.clients.iter().fold(Bytes::default(), |b, c| Bytes {
            rx: b.rx + c.rx.load(Ordering::Relaxed),
            tx: b.tx + c.tx.load(Ordering::Relaxed),
        })
    }

    /// Notes the quotes of a JSON envelope (WebSocket frame, SSE data).
    pub fn json(&self, id: usize, body: &[u8]) {
        if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
            self.note(id, env.quotes);
        }
    }

    /// Notes the quotes of a MessagePack envelope.
    pub fn msgpack(&self, id: usize, body: &[u8]) {
        if let Ok(env) = rmp_serde::from_slice::<Envelope>(body) {
            self.note(id, env.quotes);
        }
    }

    /// Notes the quotes of one SSE event block (`event:`, `id:`, `data:` lines).
    pub fn sse(&self, id: usize, event: &[u8]) {
        let mut data = Vec::new();
        for line in event.split(|&b| b == b'\n') {
            if let Some(d) = line.strip_prefix(b"data:") {
                if !data.is_empty() {
                    data.push(b'\n');
                }
                data.extend_from_slice(d.strip_prefix(b" ").unwrap_or(d));
            }
        }
        if !data.is_empty() {
            self.json(id, &data);
        }
    }

    /// Notes quotes already decoded (poll and snapshot answers).
    pub fn quotes<'a>(&self, id: usize, quotes: impl Iterator<Item = (&'a str, u64)>) {
        let at_ns = now_ns();
        let mut seen = self.clients[id % self.clients.len()].seen.lock();
        seen.extend(quotes.map(|(symbol, seq)| Seen {
            at_ns,
            symbol: symbol.to_owned(),
            seq,
        }));
    }

    fn note(&self, id: usize, quotes: Vec<QuoteKey>) {
        self.quotes(id, quotes.iter().map(|q| (q.symbol.as_str(), q.seq)));
    }
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    quotes: Vec<QuoteKey>,
}

#[derive(Deserialize)]
struct QuoteKey {
    symbol: String,
    seq: u64,
}

/// A socket that counts the bytes it reads and writes into a [`ClientTap`]:
/// what crosses it is what the transport costs, headers and framing included.
pub struct Counted<S> {
    inner: S,
    tap: Arc<ClientTap>,
}

impl<S> Counted<S> {
    /// Wraps `inner`, counting into `tap`.
    pub fn new(inner: S, tap: Arc<ClientTap>) -> Self {
        Counted { inner, tap }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.tap.rx.fetch_add(n as u64, Ordering::Relaxed);
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.tap.tx.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.tap.tx.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counted_counts_both_directions() {
        let (a, mut b) = tokio::io::duplex(64);
        let tap = Arc::new(ClientTap::default());
        let mut a = Counted::new(a, tap.clone());
        a.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        b.read_exact(&mut buf).await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut got = [0u8; 3];
        a.read_exact(&mut got).await.unwrap();
        assert_eq!(tap.tx.load(Ordering::Relaxed), 5);
        assert_eq!(tap.rx.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn envelopes_of_every_encoding_are_noted() {
        let tap = Tap::new(1);
        tap.json(
            0,
            br#"{"type":"ticks","seq":9,"quotes":[{"symbol":"A","seq":7,"ts":1}]}"#,
        );
        tap.sse(
            0,
            b"event: tick\nid: S:9\ndata: {\"seq\":9,\"quotes\":[{\"symbol\":\"B\",\"seq\":8}]}\n\n",
        );
        #[derive(serde::Serialize)]
        struct Q {
            symbol: &'static str,
            seq: u64,
            bid: Option<i64>,
        }
        #[derive(serde::Serialize)]
        struct E {
            r#type: &'static str,
            quotes: Vec<Q>,
        }
        let mp = rmp_serde::to_vec_named(&E {
            r#type: "ticks",
            quotes: vec![Q {
                symbol: "C",
                seq: 9,
                bid: Some(-1),
            }],
        })
        .unwrap();
        tap.msgpack(0, &mp);
        tap.json(0, br#"{"type":"pong"}"#);
        let seen = tap.client(0).seen.lock().clone();
        let got: Vec<(String, u64)> = seen.into_iter().map(|s| (s.symbol, s.seq)).collect();
        assert_eq!(got, vec![("A".into(), 7), ("B".into(), 8), ("C".into(), 9)]);
    }
}
