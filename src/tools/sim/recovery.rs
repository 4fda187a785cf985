//! The recovery loop (docs/FEED.md, "Recovery"): on its own multicast group,
//! forever, for every listed symbol in ascending locate order its directory
//! entry `'D'`, its state `'S'` and, once it has a book, its book `'B'`.
//! The packets carry the incremental feed's session and the loop's own
//! sequence, from 1, never reset.
//!
//! The engine drives it from the same thread as the live feed and flushes
//! the live packet before each loop step, so a state never reflects a live
//! message that has not been sent.

use std::net::SocketAddr;

use super::{Book, Listing};
use crate::wire::{Levels, Locate, Message, PacketBuilder, Session};

/// Where the loop stands and what it has sent.
pub(crate) struct RecoveryLoop {
    builder: PacketBuilder,
    /// The loop's group.
    pub(crate) dest: SocketAddr,
    /// The next locate to consider.
    next: usize,
    /// What of `next - 1` is due before the next directory entry.
    due: Option<(usize, Due)>,
    /// Cycles whose every message has been sent.
    pub(crate) completed: u64,
    /// The last message sent ended a cycle (or none was sent yet).
    pub(crate) at_cycle_start: bool,
    /// Messages sent.
    pub(crate) sent: u64,
    /// Send nothing once this many cycles are complete (the run's end).
    pub(crate) last_cycle: Option<u64>,
}

impl RecoveryLoop {
    /// A loop for `session` to `dest`, its first message numbered 1.
    pub(crate) fn new(session: Session, dest: SocketAddr) -> Self {
        RecoveryLoop {
            builder: PacketBuilder::new(session, 1),
            dest,
            next: 0,
            due: None,
            completed: 0,
            at_cycle_start: true,
            sent: 0,
            last_cycle: None,
        }
    }

    /// The loop sequence the next message will get.
    pub(crate) fn next_seq(&self) -> u64 {
        self.builder.next_seq()
    }

    /// Adds the loop's next message to the packet being built (finished
    /// packets go to `emit`). False when no symbol is listed (nothing to
    /// loop) or the last cycle is sent.
    pub(crate) fn push_next(&mut self, book: &Book, emit: &mut impl FnMut(&[u8])) -> bool {
        if self.finished() {
            return false;
        }
        if let Some((locate, due)) = self.due.take()
            && let Some(l) = book.get(locate)
        {
            let msg = match due {
                Due::State => state(locate as Locate, l),
                Due::Book => book_state(locate as Locate, l),
            };
            self.builder.push(&msg, emit);
            self.sent += 1;
            if due == Due::State && l.depth.seq > 0 {
                self.due = Some((locate, Due::Book));
                return true;
            }
            self.at_cycle_start = book.next_listed(locate + 1).is_none();
            if self.at_cycle_start {
                self.completed += 1;
            }
            return true;
        }
        let locate = match book.next_listed(self.next) {
            Some(l) => l,
            // Past the last listed locate: the next cycle starts.
            None => match book.next_listed(0) {
                Some(l) => l,
                None => return false,
            },
        };
        let Some(l) = book.get(locate) else {
            return false;
        };
        let msg = Message::Directory {
            locate: locate as Locate,
            ts: l.listed_ts,
            symbol: &l.symbol,
            name: &l.name,
            prev_close: l.prev_close,
        };
        self.builder.push(&msg, emit);
        self.sent += 1;
        self.at_cycle_start = false;
        self.next = locate + 1;
        self.due = Some((locate, Due::State));
        true
    }

    /// The loop has sent its last cycle.
    pub(crate) fn finished(&self) -> bool {
        self.last_cycle.is_some_and(|n| self.completed >= n)
    }

    /// Sends what the packet being built holds.
    pub(crate) fn flush(&mut self, emit: &mut impl FnMut(&[u8])) {
        self.builder.flush(emit);
    }

    /// A heartbeat on the loop.
    pub(crate) fn heartbeat(&self) -> [u8; crate::wire::HEADER_LEN] {
        self.builder.heartbeat()
    }

    /// The loop's end of session: it is over (the producer is exiting).
    pub(crate) fn end_of_session(&self) -> [u8; crate::wire::HEADER_LEN] {
        self.builder.end_of_session()
    }
}

/// What the loop owes a symbol whose directory entry it just sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    State,
    Book,
}

/// The `'B'` message of a listing: its book with the sequence of the last
/// `'L'` it reflects.
pub(crate) fn book_state(locate: Locate, l: &Listing) -> Message<'_> {
    Message::Book {
        locate,
        ts: l.depth.ts,
        book_seq: l.depth.seq,
        bids: Levels::from_slice(&l.depth.bids),
        asks: Levels::from_slice(&l.depth.asks),
    }
}

/// The `'S'` message of a listing: its latest quote and trade with the feed
/// sequences they came from, stamped with the time of its newest change.
pub(crate) fn state(locate: Locate, l: &Listing) -> Message<'static> {
    Message::State {
        locate,
        ts: l.ts,
        quote: l.quote,
        trade: l.trade,
    }
}
