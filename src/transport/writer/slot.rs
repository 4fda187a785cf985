//! Where a streaming connection's write side lives: in its hub client's
//! own allocation (`fanout::Client<Slot>`), and the connection task's
//! handle on both.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Instant;

use super::{Verdict, WriteSide};
use crate::admission::Live;
use crate::fanout::{Client, Scratch, Sweep};
use crate::transport::pacer::Beat;
use crate::transport::user::{ConnUser, Watched, watch_expiry};

/// Where a streaming client's write side lives: in the client's own
/// allocation (see [`Client`]), put there once when the fan-out starts
/// writing the connection. A stream served through hyper leaves it empty.
#[derive(Default)]
pub struct Slot(OnceLock<WriteSide>);

impl Slot {
    /// The write side, once installed.
    fn get(&self) -> Option<&WriteSide> {
        self.0.get()
    }
}

impl Sweep for Slot {
    fn sweep(&self, scratch: &mut Scratch, due: bool) -> Option<Instant> {
        self.get()?.sweep(scratch, due)
    }

    fn send_staged(&self, frame: &[u8]) {
        if let Some(w) = self.get() {
            w.send_staged(frame);
        }
    }

    fn poke(&self) {
        if let Some(w) = self.get() {
            w.poke();
        }
    }

    fn touch(&self) {
        if let Some(w) = self.get() {
            std::hint::black_box(w.writer.is_locked());
            std::hint::black_box(w.wake.given.load(Ordering::Relaxed));
        }
    }
}

/// A streaming client: the hub's side and the write side in one block.
pub type StreamClient = Client<Slot>;

/// A connection task's handle on its client, which holds the write side
/// (it derefs to it). The hub holds the client until [`Direct::unregister`],
/// which the task calls when the connection ends.
#[derive(Clone)]
pub struct Direct(Arc<StreamClient>);

impl Direct {
    /// Puts `side` in `client`'s slot and from now on lets the fan-out
    /// write the connection from its sweep (once: a fresh client's slot).
    pub fn install(client: Arc<StreamClient>, side: WriteSide) -> Self {
        if client.sink.0.set(side).is_err() {
            tracing::error!("a stream's write side was installed twice: the first stays");
        }
        client.set_direct();
        Direct(client)
    }

    /// The client (for the pacer and the users registry, which hold it
    /// weakly).
    pub fn client(&self) -> &Arc<StreamClient> {
        &self.0
    }

    /// Ends the client's subscriptions and takes it out of the hub: called
    /// once the connection is over, as the hub's hold would otherwise keep
    /// the client (and its socket) alive.
    pub fn unregister(&self) {
        self.lock().subs.unregister();
    }

    /// Lets the admin routes reach this connection, and watches its
    /// user's token (when it has one).
    pub fn watch_user(&self) {
        if let Some(user) = self.user() {
            let weak = Arc::downgrade(&self.0);
            user.slot().attach(weak.clone() as Weak<dyn Live>);
            watch_expiry(weak);
        }
    }
}

impl std::ops::Deref for Direct {
    type Target = WriteSide;

    /// A [`Direct`] exists only for a filled slot, and a filled
    /// `OnceLock` stays so.
    fn deref(&self) -> &WriteSide {
        (self.0.sink.get()).expect("a Direct's slot is filled by Direct::install")
    }
}

impl Beat for StreamClient {
    fn beat(&self) {
        if let Some(w) = self.sink.get() {
            w.beat();
        }
    }
}

impl Watched for StreamClient {
    fn user(&self) -> Option<&Arc<ConnUser>> {
        self.sink.get()?.user()
    }

    fn look(&self) {
        if let Some(w) = self.sink.get() {
            w.wake.notify_one();
        }
    }
}

impl Live for StreamClient {
    fn symbols(&self) -> Vec<Arc<str>> {
        self.sink
            .get()
            .map_or_else(Vec::new, |w| w.lock().subs.symbols())
    }

    fn end(&self, code: u16, reason: &str) {
        if let Some(w) = self.sink.get() {
            w.end(Verdict::Close(code, reason.to_owned()));
            w.wake.notify_one();
        }
    }
}
