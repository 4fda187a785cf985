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
    pub const ALL: [Limit; 8] = [
        Limit::MaxConnections,
        Limit::MaxConnectionsPerIp,
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
}

impl ConnRefused {
    /// Which limit.
    pub fn label(self) -> Limit {
        match self {
            ConnRefused::Total(_) => Limit::MaxConnections,
            ConnRefused::PerIp(_) => Limit::MaxConnectionsPerIp,
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

/// A token bucket: `rate` operations per second, bursts up to `burst`.
#[derive(Debug)]
pub struct OpRate {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl OpRate {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> Self {
        OpRate {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
        }
    }

    /// Takes a token if one is there.
    pub fn allow(&mut self) -> bool {
        self.allow_at(Instant::now())
    }

    fn allow_at(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        let mut r = OpRate::new(10, 2);
        let t0 = r.last;
        assert!(r.allow_at(t0));
        assert!(r.allow_at(t0));
        assert!(!r.allow_at(t0));
        assert!(r.allow_at(t0 + Duration::from_millis(100)));
        assert!(!r.allow_at(t0 + Duration::from_millis(100)));
    }
}
