//! Who hears about table changes: the ingest calls its listener after it
//! applies messages, so the fan-out learns what changed without the feed
//! knowing the fan-out exists.

use crate::wire::{Locate, Session};

/// Who hears about table changes: the fan-out hub, or nothing.
pub trait ChangeListener: Send + 'static {
    /// `locate` changed at feed sequence `seq`. Called per applied message.
    fn changed(&mut self, locate: Locate, seq: u64);
    /// A batch of datagrams is done; `last_seq` is applied.
    fn batch_done(&mut self, last_seq: u64);
    /// The table was reset for a new session.
    fn session_reset(&mut self, session: Session);
}

impl ChangeListener for () {
    fn changed(&mut self, _: Locate, _: u64) {}
    fn batch_done(&mut self, _: u64) {}
    fn session_reset(&mut self, _: Session) {}
}
