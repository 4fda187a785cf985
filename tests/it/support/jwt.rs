//! Users for tests that ask the door: a relay verifying HS256 tokens with a
//! secret of its own, and tokens minted for it with the claims a test
//! names (the same minting `tickrelay token` does).

use tickrelay::auth::{Claims, Rights, mint_hs256};

use super::{FeedAddr, Relay, scratch, unique_suffix};

const SECRET: &[u8] = b"a-test-secret-of-more-than-32-bytes!!";

/// What a user may see: symbol patterns, channels, delay.
#[derive(Clone, Copy, Debug)]
pub(crate) struct User<'a> {
    pub sub: &'a str,
    /// `None`: every symbol.
    pub symbols: Option<&'a [&'a str]>,
    /// `None`: every channel.
    pub channels: Option<&'a [&'a str]>,
    pub delay_ms: u64,
}

impl<'a> User<'a> {
    /// A real-time user of every symbol and channel.
    pub(crate) fn named(sub: &'a str) -> Self {
        User {
            sub,
            symbols: None,
            channels: None,
            delay_ms: 0,
        }
    }

    pub(crate) fn symbols(self, symbols: &'a [&'a str]) -> Self {
        User {
            symbols: Some(symbols),
            ..self
        }
    }

    pub(crate) fn channels(self, channels: &'a [&'a str]) -> Self {
        User {
            channels: Some(channels),
            ..self
        }
    }

    pub(crate) fn delayed(self, delay_ms: u64) -> Self {
        User { delay_ms, ..self }
    }

    /// A token for this user, valid for an hour.
    pub(crate) fn token(&self) -> String {
        let list = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| s.to_string()).collect());
        let claims = Claims {
            sub: self.sub.into(),
            exp: tickrelay::clock::now_ms() / 1000 + 3_600,
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
            tickrelay: Rights {
                symbols: list(self.symbols),
                channels: list(self.channels),
                delay_ms: self.delay_ms,
                ..Rights::default()
            },
        };
        mint_hs256(SECRET, &claims).unwrap()
    }

    /// `Bearer <token>`, for an `Authorization` header.
    pub(crate) fn bearer(&self) -> String {
        format!("Bearer {}", self.token())
    }
}

/// A relay in this process on `group` that verifies tokens signed with the
/// tests' secret, with `extra` flags.
pub(crate) fn relay(group: FeedAddr, extra: &[&str]) -> Relay {
    let file = scratch(&format!("jwt-secret-{}", unique_suffix()));
    std::fs::write(&file, SECRET).unwrap();
    let mut args = vec![
        "--feed-a".to_string(),
        group.arg(),
        "--jwt-secret-file".into(),
        file.to_str().unwrap().into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    Relay::in_process(&args)
}
