//! The in-memory recorder: counters per (`sub`, class, delayed), bumped by
//! connections, taken as deltas by the store's flush.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

use crate::usage::Class;
use crate::usage::day::{day_of, day_start_ms};

/// At most this many distinct tickers are kept per user and day; more are
/// not counted. Above any watchlist or exchange listing, it bounds what a
/// client subscribing to made-up tickers can cost (about 1 MiB).
pub const MAX_SYMBOLS_PER_DAY: usize = 16_384;

/// The wall clock the recorder stamps first and last seen with, in Unix
/// milliseconds.
type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Usage per user since the last flush: cheap to clone (an `Arc` inside),
/// one per relay, shared by every connection and the flusher.
#[derive(Clone)]
pub struct Usage {
    inner: Arc<Inner>,
}

/// A `sub`'s counters, one slot per (class, delayed): see [`slot`].
type Slots = [Option<Arc<UserUsage>>; 4];

struct Inner {
    users: Mutex<HashMap<Box<str>, Slots>>,
    /// When the last successful flush was recorded (Unix ms, 0 = none).
    last_flush_ms: AtomicU64,
    clock: Clock,
}

fn slot(class: Class, delayed: bool) -> usize {
    (class as usize) * 2 + usize::from(delayed)
}

impl Default for Usage {
    fn default() -> Self {
        Usage::new()
    }
}

impl fmt::Debug for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Usage")
            .field("users", &self.inner.users.lock().len())
            .finish()
    }
}

impl Usage {
    /// An empty recorder on the wall clock.
    pub fn new() -> Usage {
        Usage::with_clock(crate::clock::now_ms)
    }

    /// An empty recorder stamping times with `clock` (Unix ms): tests.
    pub fn with_clock(clock: impl Fn() -> u64 + Send + Sync + 'static) -> Usage {
        Usage {
            inner: Arc::new(Inner {
                users: Mutex::new(HashMap::new()),
                last_flush_ms: AtomicU64::new(0),
                clock: Arc::new(clock),
            }),
        }
    }

    /// Now on this recorder's clock, Unix ms.
    pub fn now_ms(&self) -> u64 {
        (self.inner.clock)()
    }

    /// The counters of `sub` as `class`, real time or `delayed`: the same
    /// `Arc` for as long as anyone holds it. Call it when a connection opens
    /// or a request comes, not per message: it takes a lock and looks the
    /// user up. Asking records nothing; [`UserUsage::connect`] and
    /// [`UserUsage::request`] do. A `sub` seen with another class or delay
    /// gets counters of its own (and a row of its own per day).
    pub fn user(&self, sub: &str, class: Class, delayed: bool) -> Arc<UserUsage> {
        let mut users = self.inner.users.lock();
        let slots = match users.get_mut(sub) {
            Some(s) => s,
            None => users.entry(sub.into()).or_default(),
        };
        slots[slot(class, delayed)]
            .get_or_insert_with(|| {
                Arc::new(UserUsage::new(
                    sub,
                    class,
                    delayed,
                    self.inner.clock.clone(),
                ))
            })
            .clone()
    }

    /// How many (`sub`, class, delayed) counters are held in memory.
    pub fn len(&self) -> usize {
        let users = self.inner.users.lock();
        users.values().map(|s| s.iter().flatten().count()).sum()
    }

    /// Whether no counters are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes what every user did since the last flush, as recorded at `at`
    /// (Unix ms), for day `day_of(at)`. Counters nobody else holds are
    /// dropped from memory once taken (they can take no more counts). A
    /// failed write gives the deltas back with [`Usage::restore`].
    pub(crate) fn take(&self, at: u64) -> Vec<Taken> {
        let day = day_of(at);
        let day_start = day_start_ms(day);
        let since = self.inner.last_flush_ms.load(Relaxed).max(day_start);
        let mut out = Vec::new();
        let mut users = self.inner.users.lock();
        users.retain(|_, slots| {
            for s in slots.iter_mut() {
                let Some(user) = s else { continue };
                // Under the map's lock, no one can get a new reference: if
                // the map holds the only one, nothing bumps it any more.
                let retired = Arc::strong_count(user) == 1;
                if let Some(delta) = user.take(at, day, day_start, since) {
                    out.push(Taken {
                        user: user.clone(),
                        delta,
                    });
                }
                if retired {
                    *s = None;
                }
            }
            slots.iter().any(Option::is_some)
        });
        out
    }

    /// Records that the deltas up to `at` are written.
    pub(crate) fn flushed(&self, at: u64) {
        self.inner.last_flush_ms.fetch_max(at, Relaxed);
    }

    /// Gives back deltas whose write failed, to go with the next flush.
    pub(crate) fn restore(&self, taken: Vec<Taken>) {
        let mut users = self.inner.users.lock();
        for Taken { user, delta } in taken {
            user.restore(delta);
            // A retired user goes back in its slot, or into whoever took
            // the slot since (then it is dropped here).
            let slots = match users.get_mut(&*user.sub) {
                Some(s) => s,
                None => users.entry(user.sub.clone()).or_default(),
            };
            let slot = &mut slots[slot(user.class, user.delayed)];
            match slot {
                Some(present) if !Arc::ptr_eq(present, &user) => {
                    present.merge_from(&user);
                }
                Some(_) => {}
                None => *slot = Some(user),
            }
        }
    }
}

/// One user's counters taken by a flush.
pub(crate) struct Taken {
    pub(crate) user: Arc<UserUsage>,
    pub(crate) delta: Delta,
}

/// What one user did since the last flush, for one day's row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Delta {
    pub(crate) first_seen_ms: u64,
    pub(crate) last_seen_ms: u64,
    pub(crate) max_connections: u32,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) requests: u64,
    /// The day's whole set of tickers, when it changed.
    pub(crate) symbols: Option<Vec<Arc<str>>>,
}

/// One user's usage as one class, real time or delayed. Held by its
/// connections as an `Arc` from [`Usage::user`].
pub struct UserUsage {
    sub: Box<str>,
    class: Class,
    delayed: bool,
    clock: Clock,
    /// Connections open now.
    open: AtomicU32,
    /// Most connections open at once since the last flush.
    peak: AtomicU32,
    messages: AtomicU64,
    bytes: AtomicU64,
    requests: AtomicU64,
    /// First and last seen since the last flush, Unix ms (0 = not seen).
    first_seen: AtomicU64,
    last_seen: AtomicU64,
    symbols: Mutex<Symbols>,
}

/// The tickers of the user's current day.
struct Symbols {
    /// The day `set` belongs to (days since the epoch; `u64::MAX` none yet).
    day: u64,
    set: HashSet<Arc<str>>,
    /// Added to `set` since the last flush.
    fresh: Vec<Arc<str>>,
}

impl fmt::Debug for UserUsage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserUsage")
            .field("sub", &self.sub)
            .field("class", &self.class)
            .field("delayed", &self.delayed)
            .field("open", &self.open.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl UserUsage {
    fn new(sub: &str, class: Class, delayed: bool, clock: Clock) -> UserUsage {
        UserUsage {
            sub: sub.into(),
            class,
            delayed,
            clock,
            open: AtomicU32::new(0),
            peak: AtomicU32::new(0),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            first_seen: AtomicU64::new(0),
            last_seen: AtomicU64::new(0),
            symbols: Mutex::new(Symbols {
                day: u64::MAX,
                set: HashSet::new(),
                fresh: Vec::new(),
            }),
        }
    }

    /// The user's `sub`.
    pub fn sub(&self) -> &str {
        &self.sub
    }

    /// The class these counters are for.
    pub fn class(&self) -> Class {
        self.class
    }

    /// Whether these counters are for delayed data.
    pub fn delayed(&self) -> bool {
        self.delayed
    }

    /// Connections of this user open now.
    pub fn open_connections(&self) -> u32 {
        self.open.load(Relaxed)
    }

    fn seen(&self) {
        let now = (self.clock)();
        let _ = self.first_seen.compare_exchange(0, now, Relaxed, Relaxed);
        self.last_seen.fetch_max(now, Relaxed);
    }

    /// A connection opened (a WebSocket, an SSE stream, a parked long
    /// poll): counted open until the guard drops, and toward the day's most
    /// concurrent connections.
    pub fn connect(self: &Arc<Self>) -> ConnGuard {
        let now_open = self.open.fetch_add(1, Relaxed) + 1;
        self.peak.fetch_max(now_open, Relaxed);
        self.seen();
        ConnGuard { user: self.clone() }
    }

    /// A request was answered (a poll, a snapshot, a subscribe).
    pub fn request(&self) {
        self.requests.fetch_add(1, Relaxed);
        self.seen();
    }

    /// `messages` messages of `bytes` bytes were delivered: two relaxed
    /// atomic adds, for the hot path.
    #[inline]
    pub fn delivered(&self, messages: u64, bytes: u64) {
        self.messages.fetch_add(messages, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    /// The user subscribed to `symbols` (tickers as subscribed, `*` for
    /// all): counted once each per day, at most [`MAX_SYMBOLS_PER_DAY`].
    /// Takes a lock: call it at subscribe time, not per message. An empty
    /// name or one with whitespace is not a ticker and is skipped.
    pub fn saw_symbols(&self, symbols: &[Arc<str>]) {
        let mut s = self.symbols.lock();
        let Symbols { set, fresh, .. } = &mut *s;
        for name in symbols {
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                continue;
            }
            if set.len() >= MAX_SYMBOLS_PER_DAY && !set.contains(name) {
                continue;
            }
            if set.insert(name.clone()) {
                fresh.push(name.clone());
            }
        }
    }

    /// The delta since the last flush for day `day` (which starts at
    /// `day_start`; the last flush was at `since`), or `None` when there is
    /// nothing to write.
    fn take(&self, at: u64, day: u64, day_start: u64, since: u64) -> Option<Delta> {
        let open = self.open.load(Relaxed);
        let peak = self.peak.swap(open, Relaxed).max(open);
        let messages = self.messages.swap(0, Relaxed);
        let bytes = self.bytes.swap(0, Relaxed);
        let requests = self.requests.swap(0, Relaxed);
        let first = self.first_seen.swap(0, Relaxed);
        let last = self.last_seen.swap(0, Relaxed);
        let symbols = {
            let mut s = self.symbols.lock();
            let mut changed = !s.fresh.is_empty();
            if s.day != day {
                // A new day: an open connection carries the day's tickers
                // over; otherwise the day has only what came since the flush.
                if open == 0 {
                    let fresh: HashSet<Arc<str>> = s.fresh.iter().cloned().collect();
                    s.set = fresh;
                } else {
                    changed |= !s.set.is_empty();
                }
                s.day = day;
            }
            s.fresh.clear();
            changed.then(|| {
                let mut v: Vec<Arc<str>> = s.set.iter().cloned().collect();
                v.sort_unstable();
                v
            })
        };
        let active = open > 0 || peak > 0 || first != 0 || last != 0;
        if !active && messages == 0 && bytes == 0 && requests == 0 && symbols.is_none() {
            return None;
        }
        // Seen since the last flush, or throughout it while connected; the
        // row's times lie within its day and not after the flush.
        let first = if first == 0 { since } else { first }.clamp(day_start, at);
        let last = if open > 0 { at } else { last }.clamp(first, at);
        Some(Delta {
            first_seen_ms: first,
            last_seen_ms: last,
            max_connections: peak,
            messages,
            bytes,
            requests,
            symbols,
        })
    }

    /// Puts back a delta whose write failed.
    fn restore(&self, d: Delta) {
        self.peak.fetch_max(d.max_connections, Relaxed);
        self.messages.fetch_add(d.messages, Relaxed);
        self.bytes.fetch_add(d.bytes, Relaxed);
        self.requests.fetch_add(d.requests, Relaxed);
        self.restore_seen(d.first_seen_ms, d.last_seen_ms);
        if let Some(names) = d.symbols {
            let mut s = self.symbols.lock();
            let Symbols { set, fresh, .. } = &mut *s;
            for name in names {
                set.insert(name.clone());
                fresh.push(name);
            }
        }
    }

    fn restore_seen(&self, first: u64, last: u64) {
        if first != 0 {
            let mut cur = self.first_seen.load(Relaxed);
            while cur == 0 || first < cur {
                match self
                    .first_seen
                    .compare_exchange_weak(cur, first, Relaxed, Relaxed)
                {
                    Ok(_) => break,
                    Err(c) => cur = c,
                }
            }
        }
        self.last_seen.fetch_max(last, Relaxed);
    }

    /// Moves the counts of `other` (the same user, retired) into `self`.
    fn merge_from(&self, other: &UserUsage) {
        self.peak.fetch_max(other.peak.swap(0, Relaxed), Relaxed);
        self.messages
            .fetch_add(other.messages.swap(0, Relaxed), Relaxed);
        self.bytes.fetch_add(other.bytes.swap(0, Relaxed), Relaxed);
        self.requests
            .fetch_add(other.requests.swap(0, Relaxed), Relaxed);
        self.restore_seen(
            other.first_seen.swap(0, Relaxed),
            other.last_seen.swap(0, Relaxed),
        );
        let names: Vec<Arc<str>> = other.symbols.lock().fresh.drain(..).collect();
        self.saw_symbols(&names);
    }
}

/// An open connection of a user: counted until dropped. Holds the user's
/// counters, so a connection may keep only its guard.
#[derive(Debug)]
pub struct ConnGuard {
    user: Arc<UserUsage>,
}

impl ConnGuard {
    /// The user's counters, to bump deliveries and requests on.
    pub fn user(&self) -> &Arc<UserUsage> {
        &self.user
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.user.open.fetch_sub(1, Relaxed);
        self.user.seen();
    }
}
