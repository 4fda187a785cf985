//! What a client asks of a subscription, read and checked before it is
//! made: delivery options (`mode`, `max_hz`, `delta`), the `batch_ms`
//! window, resume points (`SESSION:SEQ`), the symbols of `?symbols=…`, and
//! the connection slot a stream takes.

use std::net::IpAddr;
use std::time::Duration;

use crate::admission::ConnGuard;
use crate::api::{ApiError, AppState, ErrorCode, entitled, parse_symbols};
use crate::auth::{Channel, Identity};
use crate::fanout::At;
use crate::transport::snapshot::{allowed_locates, resolve};
use crate::wire::{Locate, Session};

/// How a subscription delivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubOptions {
    /// `every` instead of `conflate`.
    pub every: bool,
    /// `max_hz`: least time between two updates of one symbol.
    pub min_interval: Option<Duration>,
    /// Quotes after the first as deltas to this client's last copy.
    pub delta: bool,
}

impl SubOptions {
    /// From the protocol's `mode` and `max_hz`.
    pub fn new(every: bool, max_hz: Option<f64>) -> Self {
        let min_interval = max_hz
            .filter(|hz| *hz > 0.0)
            .map(|hz| Duration::from_secs_f64(1.0 / hz.clamp(MIN_MAX_HZ, 1e6)));
        SubOptions {
            every,
            min_interval,
            delta: false,
        }
    }

    /// With `delta`: quotes after the first carry only what changed.
    pub fn with_delta(self, delta: bool) -> Self {
        SubOptions { delta, ..self }
    }
}

/// A resume point to honour: a delayed client's `since` beyond its view's
/// `seq` (a real-time client's position, say) is no resume point — it gets
/// the whole snapshot of its view, never a comparison with fresher data.
pub fn resumable(since: Option<u64>, seq: u64, at: At) -> Option<u64> {
    match at {
        At::Cutoff(_) => since.filter(|&s| s <= seq),
        At::Live => since,
    }
}

/// The smallest `max_hz` a client may ask for: one update an hour.
pub const MIN_MAX_HZ: f64 = 1.0 / 3600.0;

/// Delivery options from the protocol's `mode` and `max_hz`, checked.
pub fn sub_options(mode: Option<&str>, max_hz: Option<f64>) -> Result<SubOptions, ApiError> {
    let every = match mode {
        None | Some("conflate") => false,
        Some("every") => true,
        Some(other) => {
            return Err(ApiError::new(
                ErrorCode::BadRequest,
                format!("mode `{other}` is not `conflate` or `every`"),
            ));
        }
    };
    // At least one update an hour: below that, 1/max_hz seconds is no
    // useful throttle (and, far below, no Duration at all).
    if max_hz.is_some_and(|hz| !(hz.is_finite() && hz >= MIN_MAX_HZ)) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("max_hz must be a number of at least {MIN_MAX_HZ} (one update an hour)"),
        ));
    }
    Ok(SubOptions::new(every, max_hz))
}

/// How late a timer may fire: tokio's timers have millisecond resolution.
pub const TIMER_SLACK: Duration = Duration::from_millis(1);

/// Longest `batch_ms` a client may ask for (docs/PROTOCOL.md, "Delivery modes").
pub const MAX_BATCH_MS: u64 = 1000;

/// `batch_ms` from the protocol, checked: 0–1000 ms, 0 meaning immediate.
pub fn batch_window(batch_ms: Option<u64>) -> Result<Option<Duration>, ApiError> {
    match batch_ms {
        None | Some(0) => Ok(None),
        Some(ms) if ms <= MAX_BATCH_MS => Ok(Some(Duration::from_millis(ms))),
        Some(ms) => Err(ApiError::new(
            ErrorCode::BadBatchMs,
            format!("batch_ms {ms} is not between 0 and {MAX_BATCH_MS}"),
        )),
    }
}

/// The locates of `?symbols=…`, or `None` for every symbol when the
/// parameter is absent and `*` is allowed.
pub fn requested_locates(
    state: &AppState,
    identity: &Identity,
    symbols: Option<&str>,
) -> Result<Option<Vec<Locate>>, ApiError> {
    let policy = &state.config.policy;
    let rights = &identity.rights;
    entitled(identity, Channel::Quotes, [])?;
    match parse_symbols(symbols, rights.symbol_cap(policy.max_symbols))? {
        Some(names) if names.iter().any(|n| n == "*") && policy.allow_wildcard => {
            Ok(allowed_locates(&state.table, identity))
        }
        Some(names) => {
            entitled(identity, Channel::Quotes, names.iter().map(String::as_str))?;
            resolve(&state.table, &names).map(Some)
        }
        None if policy.allow_wildcard => Ok(allowed_locates(&state.table, identity)),
        None => Err(ApiError::new(
            ErrorCode::MissingSymbols,
            "`symbols` is required (setting allow_wildcard is off)",
        )),
    }
}

/// Takes a streaming connection slot for `peer`, or answers 429.
pub fn acquire(state: &AppState, peer: IpAddr) -> Result<ConnGuard, ApiError> {
    state.conns.acquire(peer).map_err(|e| {
        crate::api::refused(state, e.label());
        ApiError::new(ErrorCode::LimitExceeded, e.message())
    })
}

/// Parses a `SESSION:SEQ` resume token.
pub fn parse_resume(token: &str) -> Option<(String, u64)> {
    let (session, seq) = token.trim().rsplit_once(':')?;
    Some((session.to_owned(), seq.parse().ok()?))
}

/// `Some(seq)` to resume from when `token` names the current session,
/// `None` for a full snapshot.
pub fn resume_point(token: Option<&str>, session: Session) -> Option<u64> {
    let (s, seq) = parse_resume(token?)?;
    (s == session.as_str()).then_some(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_tokens() {
        assert_eq!(parse_resume("S1:42"), Some(("S1".into(), 42)));
        assert_eq!(parse_resume("nonsense"), None);
        assert_eq!(parse_resume("S1:x"), None);
        assert_eq!(resume_point(Some("S1:42"), Session::new("S1")), Some(42));
        assert_eq!(resume_point(Some("S0:42"), Session::new("S1")), None);
        assert_eq!(resume_point(None, Session::new("S1")), None);
    }
}
