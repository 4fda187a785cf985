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
    /// Which fields the bytes carry besides `symbol` and `seq` (a delta,
    /// [`Encoded::delta`]); [`ALL`] for a whole quote.
    pub fields: u16,
}

/// Every field: a whole quote.
pub(crate) const ALL: u16 = u16::MAX;

const BID: u16 = 1;
const ASK: u16 = 1 << 1;
const BID_SIZE: u16 = 1 << 2;
const ASK_SIZE: u16 = 1 << 3;
const LAST: u16 = 1 << 4;
const LAST_SIZE: u16 = 1 << 5;
const VOLUME: u16 = 1 << 6;
const PREV_CLOSE: u16 = 1 << 7;
const TS: u16 = 1 << 8;

/// A quote's `symbol`, `seq` and the fields named by a mask: what a delta
/// carries (docs/PROTOCOL.md, "Deltas"). Prices as the quote writes them.
#[derive(serde::Serialize)]
struct Delta<'a> {
    symbol: &'a str,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    bid: Option<Option<crate::price::Price>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ask: Option<Option<crate::price::Price>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bid_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ask_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last: Option<Option<crate::price::Price>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_close: Option<crate::price::Price>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<u64>,
}

impl<'a> Delta<'a> {
    fn of(q: &'a Quote, fields: u16) -> Self {
        let has = |f: u16| fields & f != 0;
        Delta {
            symbol: &q.symbol,
            seq: q.seq,
            bid: has(BID).then_some(q.bid),
            ask: has(ASK).then_some(q.ask),
            bid_size: has(BID_SIZE).then_some(q.bid_size),
            ask_size: has(ASK_SIZE).then_some(q.ask_size),
            last: has(LAST).then_some(q.last),
            last_size: has(LAST_SIZE).then_some(q.last_size),
            volume: has(VOLUME).then_some(q.volume),
            prev_close: has(PREV_CLOSE).then_some(q.prev_close),
            ts: has(TS).then_some(q.ts),
        }
    }
}

/// The fields of `new` that differ from `old`.
fn changed(old: &Quote, new: &Quote) -> u16 {
    let mut f = 0;
    let mut set = |bit: u16, differs: bool| {
        if differs {
            f |= bit;
        }
    };
    set(BID, old.bid != new.bid);
    set(ASK, old.ask != new.ask);
    set(BID_SIZE, old.bid_size != new.bid_size);
    set(ASK_SIZE, old.ask_size != new.ask_size);
    set(LAST, old.last != new.last);
    set(LAST_SIZE, old.last_size != new.last_size);
    set(VOLUME, old.volume != new.volume);
    set(PREV_CLOSE, old.prev_close != new.prev_close);
    set(TS, old.ts != new.ts);
    f
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
            fields: ALL,
        }
    }

    /// `new` as a delta to `old` (the same symbol's quote this client last
    /// got): `symbol`, `seq` and the fields that changed. Applying it to
    /// `old` gives `new`.
    pub fn delta(old: &Encoded, new: &Encoded) -> Self {
        let fields = changed(&old.quote, &new.quote);
        let json = serde_json::to_vec(&Delta::of(&new.quote, fields)).unwrap_or_default();
        Encoded {
            locate: new.locate,
            quote: new.quote.clone(),
            epoch: new.epoch,
            stamp: new.stamp,
            json: Bytes::from(json),
            msgpack: OnceLock::new(),
            fields,
        }
    }

    /// MessagePack map bytes (same fields; prices as integers).
    pub fn msgpack(&self) -> &Bytes {
        self.msgpack.get_or_init(|| {
            let bytes = if self.fields == ALL {
                rmp_serde::to_vec_named(&self.quote)
            } else {
                rmp_serde::to_vec_named(&Delta::of(&self.quote, self.fields))
            };
            Bytes::from(bytes.unwrap_or_default())
        })
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

/// The last delta built for a symbol: from which encoding to which.
pub(super) struct DeltaEntry {
    old: Arc<Encoded>,
    new: Arc<Encoded>,
    delta: Arc<Encoded>,
}

impl Hub {
    /// `new` as a delta to `old`, built once per pair and shared: every
    /// client that got `old` and is due `new` (all that keep up) sends the
    /// same bytes.
    pub fn delta(&self, old: &Arc<Encoded>, new: &Arc<Encoded>) -> Arc<Encoded> {
        let slot = &self.delta_cache[usize::from(new.locate)];
        if let Some(e) = slot.load().as_ref()
            && Arc::ptr_eq(&e.old, old)
            && Arc::ptr_eq(&e.new, new)
        {
            return e.delta.clone();
        }
        let delta = Arc::new(Encoded::delta(old, new));
        slot.store(Some(Arc::new(DeltaEntry {
            old: old.clone(),
            new: new.clone(),
            delta: delta.clone(),
        })));
        delta
    }

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
