//! Feed time and pacing: the wall clock or a virtual one, and how many
//! messages a rate says are due by now.

use std::time::{Duration, Instant};

/// Feed time: the wall clock, or a virtual one that jumps instead of sleeping.
pub(super) enum Clock {
    Live { start: Instant, epoch_ns: u64 },
    Virtual { now: u64, epoch_ns: u64 },
}

impl Clock {
    /// Nanoseconds since the run started.
    pub(super) fn elapsed(&self) -> u64 {
        match self {
            Clock::Live { start, .. } => start.elapsed().as_nanos() as u64,
            Clock::Virtual { now, .. } => *now,
        }
    }

    /// The exchange timestamp of now: ns since the Unix epoch.
    pub(super) fn ts(&self) -> u64 {
        match self {
            Clock::Live { epoch_ns, .. } | Clock::Virtual { epoch_ns, .. } => {
                epoch_ns + self.elapsed()
            }
        }
    }

    /// Waits `ns` (a live clock at most 5 ms at a time, so a stop request
    /// is seen promptly).
    pub(super) fn wait(&mut self, ns: u64) {
        match self {
            Clock::Live { .. } => {
                std::thread::sleep(Duration::from_nanos(ns.clamp(1_000, 5_000_000)));
            }
            Clock::Virtual { now, .. } => *now += ns.max(1),
        }
    }

    pub(super) fn is_virtual(&self) -> bool {
        matches!(self, Clock::Virtual { .. })
    }
}

/// Pacing by count: `sent` messages since `base` at `rate` per second.
#[derive(Clone, Copy)]
pub(super) struct Pace {
    pub(super) base: u64,
    pub(super) sent: u64,
    pub(super) rate: u64,
}

impl Pace {
    /// Messages due by `now` and not yet sent.
    pub(super) fn due(&self, now: u64) -> u64 {
        let due = u128::from(now.saturating_sub(self.base)) * u128::from(self.rate) / 1_000_000_000;
        (due as u64).saturating_sub(self.sent)
    }

    /// When the next message is due (`u64::MAX`: never).
    pub(super) fn next_at(&self) -> u64 {
        if self.rate == 0 {
            return u64::MAX;
        }
        let n = u128::from(self.sent + 1) * 1_000_000_000;
        self.base + n.div_ceil(u128::from(self.rate)) as u64
    }

    pub(super) fn restart(&mut self, now: u64, rate: u64) {
        *self = Pace {
            base: now,
            sent: 0,
            rate,
        };
    }
}
