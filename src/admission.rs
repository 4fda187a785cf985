//! Admission: who gets in. Connection slots in total and per address
//! ([`ConnSlots`]), the per-connection operation rate ([`OpRate`]), and
//! which [`Limit`] refused something.
//!
//! "Limit" means one thing across the crate: a configured bound on clients,
//! named by its setting (`max_connections`, `ops_per_second`, ...); the
//! settings themselves are [`crate::config::ClientPolicy`], and refusals
//! are counted by [`Limit`]. This module imports nothing that imports it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

/// A limit that refuses requests or operations; its label in
/// `tickrelay_limit_refusals_total` is the setting's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `max_connections`.
    MaxConnections,
    /// `max_connections_per_ip`.
    MaxConnectionsPerIp,
    /// A user's `max_connections` claim, across transports.
    UserConnections,
    /// `max_symbols`.
    MaxSymbols,
    /// `max_frame_bytes`.
    MaxFrameBytes,
    /// `ops_per_second`.
    OpsPerSecond,
    /// `allow_wildcard`.
    AllowWildcard,
    /// `token`.
    Token,
    /// `allowed_origins`.
    AllowedOrigins,
}

impl Limit {
    /// Every limit, for pre-creating the series.
    pub const ALL: [Limit; 9] = [
        Limit::MaxConnections,
        Limit::MaxConnectionsPerIp,
        Limit::UserConnections,
        Limit::MaxSymbols,
        Limit::MaxFrameBytes,
        Limit::OpsPerSecond,
        Limit::AllowWildcard,
        Limit::Token,
        Limit::AllowedOrigins,
    ];

    /// The setting's name: the metric label and what refusals cite.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::MaxConnections => "max_connections",
            Limit::MaxConnectionsPerIp => "max_connections_per_ip",
            Limit::UserConnections => "user_max_connections",
            Limit::MaxSymbols => "max_symbols",
            Limit::MaxFrameBytes => "max_frame_bytes",
            Limit::OpsPerSecond => "ops_per_second",
            Limit::AllowWildcard => "allow_wildcard",
            Limit::Token => "token",
            Limit::AllowedOrigins => "allowed_origins",
        }
    }
}

/// Counts open streaming connections, in total and per peer address.
#[derive(Debug)]
pub struct ConnSlots {
    max_total: usize,
    max_per_ip: usize,
    state: Mutex<ConnCounts>,
}

#[derive(Debug, Default)]
struct ConnCounts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Which connection limit refused a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnRefused {
    /// `max_connections`.
    Total(usize),
    /// `max_connections_per_ip`.
    PerIp(usize),
    /// The user's `max_connections` claim.
    PerUser(usize),
}

impl ConnRefused {
    /// Which limit.
    pub fn label(self) -> Limit {
        match self {
            ConnRefused::Total(_) => Limit::MaxConnections,
            ConnRefused::PerIp(_) => Limit::MaxConnectionsPerIp,
            ConnRefused::PerUser(_) => Limit::UserConnections,
        }
    }

    /// A message a client can act on.
    pub fn message(self) -> String {
        match self {
            ConnRefused::Total(n) => {
                format!("server is at its connection limit ({n}, setting max_connections)")
            }
            ConnRefused::PerIp(n) => {
                format!(
                    "too many connections from this address ({n}, setting max_connections_per_ip)"
                )
            }
            ConnRefused::PerUser(n) => {
                format!("too many connections of this user ({n}, claim max_connections)")
            }
        }
    }
}

/// Holds one connection slot; dropping it frees the slot.
#[derive(Debug)]
pub struct ConnGuard {
    limiter: Arc<ConnSlots>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let mut s = self.limiter.state.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                s.per_ip.remove(&self.ip);
            }
        }
    }
}

impl ConnSlots {
    /// A limiter with these caps.
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnSlots {
            max_total,
            max_per_ip,
            state: Mutex::new(ConnCounts::default()),
        })
    }

    /// Takes a slot for `ip`, or says which limit is reached.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, ConnRefused> {
        let mut s = self.state.lock();
        if s.total >= self.max_total {
            return Err(ConnRefused::Total(self.max_total));
        }
        let n = s.per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(ConnRefused::PerIp(self.max_per_ip));
        }
        *n += 1;
        s.total += 1;
        Ok(ConnGuard {
            limiter: self.clone(),
            ip,
        })
    }

    /// Open connections.
    pub fn open(&self) -> usize {
        self.state.lock().total
    }
}

/// Milliseconds on the monotonic clock since this process first asked, in
/// 32 bits: a difference ([`u32::wrapping_sub`]) is right for spans under
/// 49 days. Four bytes where an `Instant` takes sixteen, for per-connection
/// stamps (an idle connection's size is the relay's memory).
pub fn millis() -> u32 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u32
}

/// A token bucket: `rate` operations per second, bursts up to `burst`, in
/// thousandths of a token. The rate and burst come with each call (they are
/// the policy's), so a connection holds eight bytes.
#[derive(Debug)]
pub struct OpRate {
    milli_tokens: u32,
    last: u32,
}

impl OpRate {
    /// A full bucket.
    pub fn new(burst: u32) -> Self {
        OpRate {
            milli_tokens: burst.max(1).saturating_mul(1000),
            last: millis(),
        }
    }

    /// Takes a token if one is there.
    pub fn allow(&mut self, rate: u32, burst: u32) -> bool {
        self.allow_at(millis(), rate, burst)
    }

    fn allow_at(&mut self, now: u32, rate: u32, burst: u32) -> bool {
        // A refill of `dt` ms at `rate` a second is `dt * rate` thousandths.
        let dt = u64::from(now.wrapping_sub(self.last));
        self.last = now;
        let full = u64::from(burst.max(1)) * 1000;
        let tokens = (u64::from(self.milli_tokens) + dt * u64::from(rate)).min(full);
        let allowed = tokens >= 1000;
        self.milli_tokens = (if allowed { tokens - 1000 } else { tokens }) as u32;
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_caps_and_release() {
        let l = ConnSlots::new(3, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let g1 = l.acquire(a).unwrap();
        let _g2 = l.acquire(a).unwrap();
        assert_eq!(l.acquire(a).unwrap_err(), ConnRefused::PerIp(2));
        let _g3 = l.acquire(b).unwrap();
        assert_eq!(l.acquire(b).unwrap_err(), ConnRefused::Total(3));
        drop(g1);
        assert!(l.acquire(a).is_ok());
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let mut r = OpRate::new(2);
        let t0 = r.last;
        assert!(r.allow_at(t0, 10, 2));
        assert!(r.allow_at(t0, 10, 2));
        assert!(!r.allow_at(t0, 10, 2));
        // 10 a second: one token back after 100 ms, not before.
        assert!(!r.allow_at(t0 + 99, 10, 2));
        assert!(r.allow_at(t0 + 100, 10, 2));
        assert!(!r.allow_at(t0 + 100, 10, 2));
        // A long quiet fills the bucket to its burst, no further.
        assert!(r.allow_at(t0 + 60_000, 10, 2));
        assert!(r.allow_at(t0 + 60_000, 10, 2));
        assert!(!r.allow_at(t0 + 60_000, 10, 2));
    }

    #[test]
    fn bucket_survives_the_clock_wrapping() {
        let mut r = OpRate::new(1);
        r.last = u32::MAX - 50;
        assert!(r.allow_at(u32::MAX - 50, 10, 1));
        assert!(!r.allow_at(u32::MAX, 10, 1));
        // 100 ms later across the wrap.
        assert!(r.allow_at(49, 10, 1));
    }
}

/// A live connection as the users registry sees it: what it is subscribed
/// to, and how an operator ends it.
pub trait Live: Send + Sync {
    /// Its symbols now (`*` for every symbol).
    fn symbols(&self) -> Vec<Arc<str>>;
    /// Ends it with `code` (WebSocket close code, or its SSE twin).
    fn end(&self, code: u16, reason: &str);
}

/// The connections of every user with a per-user token, by `sub`: the
/// `max_connections` claim across transports, and what the admin routes
/// list and disconnect. Users of no token are not here.
#[derive(Default)]
pub struct Users {
    map: Mutex<HashMap<Arc<str>, Vec<UserConn>>>,
    next: std::sync::atomic::AtomicU64,
}

struct UserConn {
    id: u64,
    transport: &'static str,
    live: Option<std::sync::Weak<dyn Live>>,
}

/// One user's connection, listed by [`Users::connections`].
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConnInfo {
    /// The user.
    pub sub: Arc<str>,
    /// `ws`, `sse` or `poll`.
    pub transport: &'static str,
    /// Its subscriptions (none for a long poll).
    pub symbols: Vec<Arc<str>>,
}

impl Users {
    /// Takes a connection for `sub`, or refuses past its `cap`.
    pub fn admit(
        self: &Arc<Self>,
        sub: &Arc<str>,
        cap: Option<usize>,
        transport: &'static str,
    ) -> Result<UserSlot, ConnRefused> {
        let mut map = self.map.lock();
        let conns = map.entry(sub.clone()).or_default();
        if let Some(cap) = cap
            && conns.len() >= cap
        {
            if conns.is_empty() {
                map.remove(sub);
            }
            return Err(ConnRefused::PerUser(cap));
        }
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        conns.push(UserConn {
            id,
            transport,
            live: None,
        });
        Ok(UserSlot {
            users: self.clone(),
            sub: sub.clone(),
            id,
        })
    }

    /// Every connection of every user now.
    pub fn connections(&self) -> Vec<ConnInfo> {
        let lives: Vec<Listed> = {
            let map = self.map.lock();
            map.iter()
                .flat_map(|(sub, conns)| {
                    conns.iter().map(move |c| {
                        (
                            sub.clone(),
                            c.transport,
                            c.live.as_ref().and_then(std::sync::Weak::upgrade),
                        )
                    })
                })
                .collect()
        };
        // Asked outside the registry's lock: a connection's own lock is taken.
        let mut out: Vec<ConnInfo> = lives
            .into_iter()
            .map(|(sub, transport, live)| ConnInfo {
                sub,
                transport,
                symbols: live.map(|l| l.symbols()).unwrap_or_default(),
            })
            .collect();
        out.sort_by(|a, b| (&a.sub, a.transport).cmp(&(&b.sub, b.transport)));
        out
    }

    /// Ends every connection of `sub` that can be ended (WebSocket, SSE);
    /// how many.
    pub fn disconnect(&self, sub: &str, code: u16, reason: &str) -> usize {
        let lives: Vec<Arc<dyn Live>> = {
            let map = self.map.lock();
            map.get(sub)
                .into_iter()
                .flatten()
                .filter_map(|c| c.live.as_ref().and_then(std::sync::Weak::upgrade))
                .collect()
        };
        for l in &lives {
            l.end(code, reason);
        }
        lives.len()
    }
}

/// A connection as listed: its user, transport and (if it still lives) itself.
type Listed = (Arc<str>, &'static str, Option<Arc<dyn Live>>);

/// A user's connection held; dropping it frees the slot.
pub struct UserSlot {
    users: Arc<Users>,
    sub: Arc<str>,
    id: u64,
}

impl UserSlot {
    /// The user.
    pub fn sub(&self) -> &Arc<str> {
        &self.sub
    }

    /// Lets the admin routes see and end this connection.
    pub fn attach(&self, live: std::sync::Weak<dyn Live>) {
        let mut map = self.users.map.lock();
        if let Some(c) = map
            .get_mut(&self.sub)
            .and_then(|v| v.iter_mut().find(|c| c.id == self.id))
        {
            c.live = Some(live);
        }
    }
}

impl std::fmt::Debug for UserSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSlot").field("sub", &self.sub).finish()
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut map = self.users.map.lock();
        if let Some(v) = map.get_mut(&self.sub) {
            v.retain(|c| c.id != self.id);
            if v.is_empty() {
                map.remove(&self.sub);
            }
        }
    }
}

#[cfg(test)]
mod user_tests {
    use super::*;

    struct Fake(Mutex<Option<u16>>);

    impl Live for Fake {
        fn symbols(&self) -> Vec<Arc<str>> {
            vec!["AAPL".into()]
        }
        fn end(&self, code: u16, _reason: &str) {
            *self.0.lock() = Some(code);
        }
    }

    #[test]
    fn a_user_is_capped_across_transports_listed_and_disconnected() {
        let users = Arc::new(Users::default());
        let alice: Arc<str> = "alice".into();
        let a = users.admit(&alice, Some(2), "ws").unwrap();
        let b = users.admit(&alice, Some(2), "sse").unwrap();
        assert_eq!(
            users.admit(&alice, Some(2), "poll").unwrap_err(),
            ConnRefused::PerUser(2)
        );
        let fake = Arc::new(Fake(Mutex::new(None)));
        let weak: std::sync::Weak<dyn Live> = Arc::downgrade(&(fake.clone() as Arc<dyn Live>));
        a.attach(weak);
        let listed = users.connections();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].symbols, vec![Arc::<str>::from("AAPL")]);
        assert_eq!(users.disconnect("alice", 4003, "bye"), 1);
        assert_eq!(*fake.0.lock(), Some(4003));
        assert_eq!(users.disconnect("bob", 4003, "bye"), 0);
        drop(b);
        let c = users.admit(&alice, Some(2), "poll").unwrap();
        drop((a, c));
        assert!(users.connections().is_empty());
        assert!(users.map.lock().is_empty(), "no entry is left behind");
    }
}
