//! The wall clock, read in one place: nanoseconds since the Unix epoch.
//!
//! Feed timestamps are nanoseconds since the epoch (docs/FEED.md), so the
//! relay's lag and age figures, the simulator's stamps and the load
//! generator's latencies all compare against this one reading. A leaf, std
//! only. The sequencer and the paced parts take time as an argument
//! instead, so they are tested without it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch, now (0 if the clock is before it).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Milliseconds since the Unix epoch, now (0 if the clock is before it).
pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_and_nanoseconds_agree() {
        let ns = now_ns();
        let ms = now_ms();
        // Both after 2020 and the second read not before the first.
        assert!(ns > 1_577_836_800_000_000_000);
        assert!(ms >= ns / 1_000_000 && ms - ns / 1_000_000 < 1_000);
    }
}
