//! What the fan-out leaves for a client's writer: conflation marks (each
//! symbol once, deduplicated by a scan while few), the `every` queue, and
//! the sweep's reusable buffers.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Encoded, LocateSet};
use crate::wire::{Locate, Session};

/// What the fan-out left for a client's writer.
#[derive(Default, Debug)]
pub struct Pending {
    /// Conflated symbols, in order of their first change since the last drain.
    pub marks: Vec<Locate>,
    /// Built only for many marks (see `insert_mark`).
    pub(super) marked: Option<Box<LocateSet>>,
    /// `every` mode changes, in feed order.
    pub every: VecDeque<Arc<Encoded>>,
    /// The `every` queue overflowed: the client must be closed (4008).
    pub overflow: bool,
    /// The feed started a new session: sequence numbers restart.
    pub reset: Option<Session>,
    /// Feed time passed a second: a bar may have closed without a trade.
    pub clock: bool,
}

impl Pending {
    pub(super) fn is_empty(&self) -> bool {
        self.marks.is_empty()
            && self.every.is_empty()
            && !self.overflow
            && self.reset.is_none()
            && !self.clock
    }

    /// Marks `locate` unless it already is; false if it was.
    pub(super) fn insert_mark(&mut self, locate: Locate) -> bool {
        // A few marks (a client drained every sweep) are checked in place,
        // in the one cache line they share; a set is built only for many
        // (a blocked or `*` client).
        let fresh = if self.marks.len() < SCAN_MARKS {
            !self.marks.contains(&locate)
        } else {
            let marks = &self.marks;
            let marked = self.marked.get_or_insert_with(Default::default);
            if marked.is_empty() {
                marked.extend(marks.iter().copied());
            }
            marked.insert(locate)
        };
        if fresh {
            self.marks.push(locate);
        }
        fresh
    }
}

/// Up to this many marks, a client's marks are deduplicated by a scan.
pub(super) const SCAN_MARKS: usize = 32;

/// The sweep's buffers, shared by every client a shard writes and kept for
/// their capacity: building a frame allocates nothing in steady state.
#[derive(Default)]
pub struct Scratch {
    /// The frame (or frames) being built.
    pub frame: Vec<u8>,
    /// The quotes drained for it.
    pub quotes: Vec<Arc<Encoded>>,
    /// A shard's sweep stages each client's frame here instead of writing
    /// it at once, and writes a run's frames back to back (see
    /// `shard::send_staged`); a task's own flush writes at once.
    pub staging: bool,
    /// The staged frames of the run, one after another.
    pub burst: Vec<u8>,
    /// Whose frame is where in `burst`.
    pub(super) staged: Vec<(Arc<super::Client>, std::ops::Range<usize>)>,
}

impl Scratch {
    /// The shard's: frames are staged.
    pub(super) fn staging() -> Self {
        Scratch {
            staging: true,
            ..Scratch::default()
        }
    }
}

impl Pending {
    /// Clears the conflation set after a drain so marks can be taken again.
    pub fn into_parts(self) -> (Vec<Locate>, VecDeque<Arc<Encoded>>, bool, Option<Session>) {
        (self.marks, self.every, self.overflow, self.reset)
    }
}
