//! A connection's user: who it is (replaced by a WebSocket `auth`), its
//! slot among the user's connections (the `max_connections` claim, the
//! admin routes), and the watch on its token's expiry — a warning 30 s
//! before `exp` (WebSocket `auth_expiring`) and the end at `exp` (close
//! 4001 `token_expired`, SSE `event: error`).
//!
//! Users of no per-user token have none of this: their connections carry
//! no `ConnUser` and no watch. Either way a stream's deliveries are counted
//! by the user's class and delay ([`Deliveries`]; `none` without a user).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::admission::{Live, UserSlot};
use crate::api::{ApiError, AppState, ErrorCode, class_labels, refused, usage_of};
use crate::auth::Identity;
use crate::clock::now_ms;
use crate::metrics::{CountedConn, UserMetrics};

/// The reason an open stream ends with at its token's `exp`.
pub const TOKEN_EXPIRED: &str = "token_expired: the token has expired";

/// How long before `exp` a WebSocket client is told its token is expiring.
pub const WARN_BEFORE_MS: u64 = 30_000;

/// The user behind one connection.
pub struct ConnUser {
    identity: ArcSwap<Identity>,
    /// `auth_expiring` was sent for the current token.
    warned: AtomicBool,
    /// A refreshed token, or the connection gone: the expiry watch looks
    /// again (and ends with the connection, not at the old `exp`).
    refreshed: Arc<tokio::sync::Notify>,
    slot: UserSlot,
    /// The user's usage counters, with this connection counted open.
    usage: Option<crate::usage::ConnGuard>,
    /// This connection in the metrics by class and delay (moved by a
    /// refreshed token of another class or delay).
    counted: ArcSwap<CountedConn>,
    metrics: UserMetrics,
}

/// Where a token stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// No warning due yet.
    Valid,
    /// Warn now: it expires in this many ms (once per token).
    Warn(u64),
    /// `exp` has passed.
    Expired,
}

impl ConnUser {
    /// Takes a connection for `identity`'s user; `None` for a client of no
    /// per-user token. Refuses past the user's `max_connections`.
    pub fn admit(
        state: &AppState,
        identity: Arc<Identity>,
        transport: &'static str,
    ) -> Result<Option<Arc<ConnUser>>, ApiError> {
        let Some(sub) = identity.sub.clone() else {
            return Ok(None);
        };
        let slot = state
            .users
            .admit(&sub, identity.rights.max_connections, transport)
            .map_err(|e| {
                refused(state, e.label());
                ApiError::new(ErrorCode::LimitExceeded, e.message())
            })?;
        let usage = usage_of(state, &identity).map(|u| u.connect());
        let metrics = state.metrics.users.clone();
        let counted = CountedConn::open(metrics.counters(class_labels(&identity)));
        Ok(Some(Arc::new(ConnUser {
            identity: ArcSwap::new(identity),
            warned: AtomicBool::new(false),
            refreshed: Arc::default(),
            usage,
            slot,
            counted: ArcSwap::from_pointee(counted),
            metrics,
        })))
    }

    /// Who it is now.
    pub fn identity(&self) -> Arc<Identity> {
        self.identity.load_full()
    }

    /// A refreshed token of the same user.
    pub fn replace(&self, identity: Arc<Identity>) {
        let labels = class_labels(&identity);
        if !self.counted.load().counters().is(&labels) {
            let moved = CountedConn::open(self.metrics.counters(labels));
            self.counted.store(Arc::new(moved));
        }
        self.identity.store(identity);
        self.warned.store(false, Ordering::Relaxed);
        self.refreshed.notify_one();
    }

    /// Counts what was delivered to this connection in the metrics by
    /// class and in the user's usage.
    #[inline]
    pub fn delivered(&self, messages: u64, bytes: u64) {
        self.counted.load().counters().delivered(messages, bytes);
        if let Some(u) = &self.usage {
            u.user().delivered(messages, bytes);
        }
    }

    /// Notes the symbols subscribed in the user's usage.
    pub fn saw_symbols(&self, symbols: &[Arc<str>]) {
        if let Some(u) = &self.usage {
            u.user().saw_symbols(symbols);
        }
    }

    /// The registry slot (to let the admin routes reach the connection).
    pub fn slot(&self) -> &UserSlot {
        &self.slot
    }

    /// Where the token stands now; a `Warn` is given once per token.
    pub fn expiry(&self) -> Expiry {
        let Some(exp) = self.identity.load().expires_ms else {
            return Expiry::Valid;
        };
        let now = now_ms();
        if now >= exp {
            Expiry::Expired
        } else if now + WARN_BEFORE_MS >= exp && !self.warned.swap(true, Ordering::Relaxed) {
            Expiry::Warn(exp - now)
        } else {
            Expiry::Valid
        }
    }
}

impl Drop for ConnUser {
    fn drop(&mut self) {
        // The watch, if asleep, ends now rather than at the token's `exp`.
        self.refreshed.notify_one();
    }
}

/// Where a stream's deliveries are counted by class and delay: its user
/// (whose refreshed token may move it to another class), or, without a
/// per-user token, the class `none`, the connection counted there while it
/// lives.
pub enum Deliveries {
    /// A per-user token's connection.
    User(Arc<ConnUser>),
    /// A connection of no per-user token (boxed: the enum stays two words).
    Unclassed(Box<CountedConn>),
}

impl Deliveries {
    /// For a connection of `user` (none: no per-user token).
    pub fn of(state: &AppState, user: Option<Arc<ConnUser>>) -> Self {
        match user {
            Some(u) => Deliveries::User(u),
            None => Deliveries::Unclassed(Box::new(CountedConn::open(
                state.metrics.users.of(crate::metrics::NO_CLASS, false),
            ))),
        }
    }

    /// The connection's user, when it came with a per-user token.
    pub fn user(&self) -> Option<&Arc<ConnUser>> {
        match self {
            Deliveries::User(u) => Some(u),
            Deliveries::Unclassed(_) => None,
        }
    }

    /// Counts `quotes` delivered in `bytes`.
    #[inline]
    pub fn count(&self, quotes: usize, bytes: usize) {
        match self {
            Deliveries::User(u) => u.delivered(quotes as u64, bytes as u64),
            Deliveries::Unclassed(c) => c.counters().delivered(quotes as u64, bytes as u64),
        }
    }
}

/// A connection the expiry watch can reach.
pub trait Watched: Send + Sync + 'static {
    /// Its user, if it has one.
    fn user(&self) -> Option<&Arc<ConnUser>>;
    /// Wakes its task to look at [`ConnUser::expiry`] (warn, or end).
    fn look(&self);
}

/// Watches the token of `conn`'s user: wakes the connection's task when
/// the warning is due and when the token expires, for as long as the
/// connection lives (a refreshed token moves the times). One timer task
/// per connection with a per-user token, holding only a weak reference.
pub fn watch_expiry<C: Watched>(conn: Weak<C>) {
    tokio::spawn(async move {
        loop {
            let (exp, user) = {
                let Some(c) = conn.upgrade() else { return };
                let Some(user) = c.user() else { return };
                let Some(exp) = user.identity.load().expires_ms else {
                    return;
                };
                (exp, user.refreshed.clone())
            };
            let now = now_ms();
            let warn_at = exp.saturating_sub(WARN_BEFORE_MS);
            if now >= warn_at {
                // The task warns (once per token) or, past `exp`, ends it.
                let Some(c) = conn.upgrade() else { return };
                c.look();
                if now >= exp {
                    return;
                }
            }
            let at = if now < warn_at { warn_at } else { exp };
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(at - now)) => {}
                // A new token (start again from its `exp`), or the
                // connection gone (the next turn ends).
                _ = user.notified() => {}
            }
        }
    });
}

/// What the users registry holds of a stream with no [`WriteSide`]: an SSE
/// stream served through hyper (a `GET /v1/stream` sent on a kept-alive
/// connection after another request). Its symbols are fixed when it opens;
/// an operator's end is kept here until the stream's task takes it.
///
/// [`WriteSide`]: crate::transport::writer::WriteSide
pub struct Ending {
    symbols: Vec<Arc<str>>,
    end: parking_lot::Mutex<Option<(u16, String)>>,
    told: tokio::sync::Notify,
}

impl Ending {
    /// Lists the stream under `user`'s connections, with `symbols`.
    pub fn attach(user: &ConnUser, symbols: Vec<Arc<str>>) -> Arc<Ending> {
        let ending = Arc::new(Ending {
            symbols,
            end: parking_lot::Mutex::new(None),
            told: tokio::sync::Notify::new(),
        });
        let weak: Weak<dyn Live> = Arc::downgrade(&(ending.clone() as Arc<dyn Live>));
        user.slot().attach(weak);
        ending
    }

    /// Resolves with the operator's close code and reason.
    pub async fn ended(&self) -> (u16, String) {
        loop {
            if let Some(end) = self.end.lock().take() {
                return end;
            }
            self.told.notified().await;
        }
    }
}

impl Live for Ending {
    fn symbols(&self) -> Vec<Arc<str>> {
        self.symbols.clone()
    }

    fn end(&self, code: u16, reason: &str) {
        *self.end.lock() = Some((code, reason.to_owned()));
        // A permit is kept when the task is not waiting yet.
        self.told.notify_one();
    }
}
