//! The beat of idle streaming connections — WebSocket pings, SSE
//! keep-alives — kept for all of them by one task, so that a connection holds
//! no timer of its own while it only waits for its next ping.
//!
//! A ring of slots, one visited per step (an interval divided into
//! [`SLOTS`]): a connection is added to the slot just visited, so its first
//! beat comes at most one interval after it joined (at least one interval
//! less a step), the next ones one interval apart. A visit wakes each
//! connection of the slot ([`Beat::beat`]) and forgets the ones that have
//! ended. With no connection the task waits without a timer.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What a pacer beats.
pub trait Beat: Send + Sync {
    /// The interval has passed: wake up and ping (or keep alive).
    fn beat(&self);
}

/// Slots per interval: a connection's first beat comes within the last
/// sixteenth of its first interval.
pub const SLOTS: u32 = 16;

/// The beats of one kind of connection. See the module docs.
pub struct Pacer<T> {
    /// Time between two visits.
    step: Duration,
    ring: Mutex<Ring<T>>,
    /// The first connection came.
    joined: Notify,
}

struct Ring<T> {
    /// The slot visited next.
    next: usize,
    /// Connections in all slots (ended ones until their slot is visited).
    len: usize,
    slots: Vec<Vec<Weak<T>>>,
}

impl<T: Beat + 'static> Pacer<T> {
    /// A beat every `interval` (a millisecond at the least between visits).
    pub fn new(interval: Duration) -> Arc<Self> {
        let step = (interval / SLOTS).max(Duration::from_millis(1));
        let slots = (interval.as_nanos() / step.as_nanos()).clamp(1, u128::from(SLOTS)) as usize;
        Arc::new(Pacer {
            step,
            ring: Mutex::new(Ring {
                next: 0,
                len: 0,
                slots: (0..slots).map(|_| Vec::new()).collect(),
            }),
            joined: Notify::new(),
        })
    }

    /// Beats `conn` from now on, until it ends.
    pub fn add(&self, conn: &Arc<T>) {
        let mut ring = self.ring.lock();
        let n = ring.slots.len();
        let just_visited = (ring.next + n - 1) % n;
        ring.slots[just_visited].push(Arc::downgrade(conn));
        ring.len += 1;
        if ring.len == 1 {
            self.joined.notify_one();
        }
    }

    /// Beats the connections of the next slot; false once none is left in
    /// any slot.
    fn visit(&self) -> bool {
        let (at, mut slot) = {
            let mut ring = self.ring.lock();
            let at = ring.next;
            ring.next = (at + 1) % ring.slots.len();
            (at, std::mem::take(&mut ring.slots[at]))
        };
        // Outside the lock: connections join while a slot is woken.
        let before = slot.len();
        slot.retain(|w| match w.upgrade() {
            Some(conn) => {
                conn.beat();
                true
            }
            None => false,
        });
        if slot.capacity() > 64 && slot.capacity() > 4 * slot.len() {
            slot.shrink_to(2 * slot.len());
        }
        let mut ring = self.ring.lock();
        ring.len -= before - slot.len();
        // Connections added to this slot meanwhile stay (a slot is added to
        // only just after its visit, so it is still empty but for them).
        let added = std::mem::replace(&mut ring.slots[at], slot);
        ring.slots[at].extend(added);
        ring.len > 0
    }

    /// Visits a slot every step while there are connections, until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            // No connection, no timer: a paused clock must not run on for us.
            let joined = self.joined.notified();
            if self.ring.lock().len == 0 {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = joined => {}
                }
            }
            let mut steps =
                tokio::time::interval_at(tokio::time::Instant::now() + self.step, self.step);
            steps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = steps.tick() => {
                        if !self.visit() {
                            break;
                        }
                    }
                }
            }
        }
    }

    /// Connections beaten, ended ones until their slot's next visit.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.ring.lock().len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Counted(AtomicUsize);

    impl Beat for Counted {
        fn beat(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    impl Counted {
        fn beats(&self) -> usize {
            self.0.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn an_interval_is_split_into_steps_of_a_millisecond_at_least() {
        let slots = |p: &Pacer<Counted>| p.ring.lock().slots.len();
        let p = Pacer::<Counted>::new(Duration::from_secs(16));
        assert_eq!((p.step, slots(&p)), (Duration::from_secs(1), 16));
        let p = Pacer::<Counted>::new(Duration::from_millis(10));
        assert_eq!((p.step, slots(&p)), (Duration::from_millis(1), 10));
        let p = Pacer::<Counted>::new(Duration::from_micros(10));
        assert_eq!((p.step, slots(&p)), (Duration::from_millis(1), 1));
    }

    #[test]
    fn a_connection_beats_once_per_turn_of_the_ring_from_a_whole_turn_after_it_joined() {
        let p = Pacer::new(Duration::from_secs(16));
        p.visit();
        let c = Arc::new(Counted::default());
        p.add(&c);
        for _ in 0..15 {
            assert!(p.visit());
        }
        assert_eq!(c.beats(), 0);
        p.visit();
        assert_eq!(c.beats(), 1);
        for _ in 0..16 {
            p.visit();
        }
        assert_eq!(c.beats(), 2);
    }

    #[test]
    fn an_ended_connection_is_forgotten_at_its_slot_and_the_ring_empties() {
        let p = Pacer::new(Duration::from_secs(16));
        let (a, b) = (Arc::new(Counted::default()), Arc::new(Counted::default()));
        p.add(&a);
        p.visit();
        p.add(&b);
        drop(a);
        for _ in 0..14 {
            assert!(p.visit());
        }
        assert_eq!(p.len(), 2, "counted until its slot is visited");
        assert!(p.visit());
        assert_eq!(p.len(), 1);
        drop(b);
        assert!(!p.visit(), "b's slot comes next: the ring is empty");
        assert_eq!(p.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_beats_each_interval_and_parks_when_the_ring_is_empty() {
        let cancel = CancellationToken::new();
        let p = Pacer::new(Duration::from_millis(160));
        let task = tokio::spawn(p.clone().run(cancel.clone()));
        tokio::task::yield_now().await;
        let c = Arc::new(Counted::default());
        p.add(&c);
        tokio::time::sleep(Duration::from_millis(3 * 160 + 5)).await;
        assert_eq!(c.beats(), 3);
        drop(c);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(p.len(), 0);
        // Parked without a timer; a new connection starts the steps again.
        let c = Arc::new(Counted::default());
        p.add(&c);
        tokio::time::sleep(Duration::from_millis(155)).await;
        assert_eq!(c.beats(), 0);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(c.beats(), 1);
        cancel.cancel();
        task.await.unwrap();
    }
}
