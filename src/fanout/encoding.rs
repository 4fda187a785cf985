//! The encoding cache: each quote encoded once per change (JSON at once,
//! MessagePack on first use) into shared `Bytes`, and the hub's per-symbol
//! cache of the newest encoding, keyed by the table epoch and the slot's
//! change stamp. Every client that sends a quote shares these bytes.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::Hub;
use crate::table::Quote;
use crate::wire::Locate;

/// One quote, encoded once and shared by every client that sends it.
#[derive(Debug)]
pub struct Encoded {
    /// Where the table keeps it (in the quote's session).
    pub locate: Locate,
    /// The quote itself.
    pub quote: Quote,
    /// Table epoch (session) it belongs to.
    pub epoch: u64,
    /// The table's change stamp of the symbol when it was read (0 if unknown).
    pub stamp: u64,
    /// JSON object bytes.
    pub json: Bytes,
    msgpack: OnceLock<Bytes>,
}

impl Encoded {
    /// Encodes `quote` (kept at `locate`) as JSON now; MessagePack on first use.
    pub fn new(locate: Locate, quote: Quote, epoch: u64) -> Self {
        let json = Bytes::from(serde_json::to_vec(&quote).unwrap_or_default());
        Encoded {
            locate,
            quote,
            epoch,
            stamp: 0,
            json,
            msgpack: OnceLock::new(),
        }
    }

    /// MessagePack map bytes (same fields; prices as integers).
    pub fn msgpack(&self) -> &Bytes {
        self.msgpack
            .get_or_init(|| Bytes::from(rmp_serde::to_vec_named(&self.quote).unwrap_or_default()))
    }

    /// The bytes in `format`.
    pub fn bytes(&self, format: Format) -> &Bytes {
        match format {
            Format::Json => &self.json,
            Format::Msgpack => self.msgpack(),
        }
    }
}

/// Wire format of a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// JSON text.
    Json,
    /// MessagePack binary.
    Msgpack,
}

impl Hub {
    /// The newest quote of `locate`, encoded once and shared. `None` if the
    /// locate is not listed.
    pub fn current(&self, locate: Locate) -> Option<Arc<Encoded>> {
        let epoch = self.table.epoch();
        let stamp = self.table.stamp(locate);
        let slot = &self.cache[usize::from(locate)];
        if let Some(e) = slot.load_full()
            && e.stamp == stamp
            && e.epoch == epoch
        {
            return Some(e);
        }
        // Read after the stamp: the cached quote is never older than its stamp.
        let quote = self.table.quote(locate)?;
        let mut enc = Encoded::new(locate, quote, epoch);
        enc.stamp = stamp;
        let enc = Arc::new(enc);
        slot.store(Some(enc.clone()));
        Some(enc)
    }
}
