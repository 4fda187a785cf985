//! Who a client is and what it may see: JSON Web Tokens verified against
//! the configured keys ([`Verifier`]), and their `tickrelay` claims compiled
//! once per token into an [`Entitlement`] that every door asks the same
//! question: [`Entitlement::allows`] a channel and a symbol.
//!
//! A leaf: it imports nothing of the crate, so `config` names its settings
//! and `api`'s door uses it without a cycle. No token, secret or key ever
//! reaches a log line from here: errors name what failed, never the input.

mod entitlement;
mod jwt;

pub use entitlement::{Channel, Class, Entitlement, Rights};
pub use jwt::{Claims, JwtSettings, KeyError, Verifier, VerifyError, mint_hs256};

use std::sync::Arc;

/// A client let in: its user (none for the anonymous or shared-token
/// modes), what it may see, and when its token expires.
#[derive(Debug)]
pub struct Identity {
    /// The token's `sub`; `None` when no per-user token is in use.
    pub sub: Option<Arc<str>>,
    /// What the user may see.
    pub rights: Entitlement,
    /// The token's `exp`, milliseconds since the Unix epoch.
    pub expires_ms: Option<u64>,
}

impl Identity {
    /// Everything, for ever: no per-user token configured (or the shared
    /// `token`, which names no user).
    pub fn anonymous() -> Identity {
        Identity {
            sub: None,
            rights: Entitlement::everything(),
            expires_ms: None,
        }
    }
}
