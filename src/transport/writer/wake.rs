//! A connection task's wake-up (part of the write side).

use std::sync::atomic::{AtomicU8, Ordering};

use futures_util::task::AtomicWaker;

/// A connection task's wake-up. Like `Notify::notify_one` with one waiter
/// (a wake-up given while the task is busy is kept for its next look), but
/// the task keeps no future for it: it registers its waker each time it
/// polls ([`super::WriteSide::poll_event`]).
#[derive(Default)]
pub struct Wake {
    pub(super) waker: AtomicWaker,
    /// Wake-ups not yet taken: [`GIVEN`], [`BEAT`].
    pub(super) given: AtomicU8,
}

/// The sweep asked the task to look at the writer.
pub(super) const GIVEN: u8 = 1;
/// The pacer says a ping (keep-alive) is due.
pub(super) const BEAT: u8 = 2;

impl Wake {
    /// Wakes the task to look at the writer (flush, blocked, verdict, timer).
    pub fn notify_one(&self) {
        self.given.fetch_or(GIVEN, Ordering::Release);
        self.waker.wake();
    }

    /// Wakes the task to look at what every connection shares: the feed
    /// status and the shutdown token (`Hub::poke_all`).
    pub fn poke(&self) {
        self.waker.wake();
    }

    /// Takes the wake-up `what`, if it was given.
    pub(super) fn take(&self, what: u8) -> bool {
        self.given.load(Ordering::Acquire) & what != 0
            && self.given.fetch_and(!what, Ordering::AcqRel) & what != 0
    }
}
