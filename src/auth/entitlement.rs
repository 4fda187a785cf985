//! A token's rights, compiled once: sorted exact names and prefixes of the
//! symbols it may see, its channels, its delay and its caps.

use serde::{Deserialize, Serialize};

/// A kind of data a client subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    /// Top-of-book quotes (the watchlist).
    Quotes,
    /// Depth of book.
    Book,
    /// Trades (the tape).
    Trades,
    /// OHLCV bars (the chart).
    Bars,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 4] = [
        Channel::Quotes,
        Channel::Book,
        Channel::Trades,
        Channel::Bars,
    ];

    /// Its name in claims and requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Quotes => "quotes",
            Channel::Book => "book",
            Channel::Trades => "trades",
            Channel::Bars => "bars",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A user's class, for usage reporting to exchanges.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A professional user (the default: a user is professional until
    /// the broker says otherwise, as exchanges classify).
    Pro,
    /// A non-professional user.
    Nonpro,
}

impl Class {
    /// `pro` or `nonpro`.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Pro => "pro",
            Class::Nonpro => "nonpro",
        }
    }
}

/// The `tickrelay` object of a token's claims, as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rights {
    /// Symbol patterns: `*`, an exact ticker, or a prefix `A*`. Absent: `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols: Option<Vec<String>>,
    /// Channels (`quotes`, `book`, `trades`, `bars`). Absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// 0 for real time; otherwise the delay of the data, ms.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: u64,
    /// Most symbols in one request or subscription (below the relay's own cap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_symbols: Option<usize>,
    /// Most connections of this user at once, across transports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// A cap on every subscription's updates per second per symbol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hz: Option<f64>,
    /// `pro` (default) or `nonpro`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// What one token allows, compiled once and asked by every door.
#[derive(Clone, Debug, PartialEq)]
pub struct Entitlement {
    /// `*`: every symbol.
    all: bool,
    /// Exact tickers, sorted.
    exact: Vec<Box<str>>,
    /// Prefixes (`A*` → `A`), sorted.
    prefixes: Vec<Box<str>>,
    /// Allowed channels, one bit each.
    channels: u8,
    /// 0 for real time; otherwise the delay, ms.
    pub delay_ms: u64,
    /// Cap on symbols per request or subscription.
    pub max_symbols: Option<usize>,
    /// Cap on this user's connections across transports.
    pub max_connections: Option<usize>,
    /// Cap on every subscription's `max_hz`.
    pub max_hz: Option<f64>,
    /// For usage reporting.
    pub class: Class,
}

impl Entitlement {
    /// Every symbol and channel, real time, no caps.
    pub fn everything() -> Entitlement {
        Entitlement {
            all: true,
            exact: Vec::new(),
            prefixes: Vec::new(),
            channels: u8::MAX,
            delay_ms: 0,
            max_symbols: None,
            max_connections: None,
            max_hz: None,
            class: Class::Pro,
        }
    }

    /// Compiles the claims; an error names the claim that is wrong.
    pub fn compile(rights: &Rights) -> Result<Entitlement, String> {
        let mut e = Entitlement {
            all: false,
            ..Entitlement::everything()
        };
        let patterns = rights.symbols.clone().unwrap_or_else(|| vec!["*".into()]);
        for p in patterns {
            let p = p.trim().to_ascii_uppercase();
            let valid = |s: &str| {
                s.len() <= 16
                    && s.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'/' | b'_' | b'^')
                    })
            };
            if p == "*" {
                e.all = true;
            } else if let Some(prefix) = p.strip_suffix('*') {
                if prefix.is_empty() || !valid(prefix) {
                    return Err(format!("symbols: `{p}` is not a pattern"));
                }
                e.prefixes.push(prefix.into());
            } else if valid(&p) && !p.is_empty() {
                e.exact.push(p.into());
            } else {
                return Err(format!("symbols: `{p}` is not a pattern"));
            }
        }
        e.exact.sort_unstable();
        e.exact.dedup();
        e.prefixes.sort_unstable();
        e.prefixes.dedup();
        if let Some(channels) = &rights.channels {
            e.channels = 0;
            for c in channels {
                let Some(ch) = Channel::ALL.iter().find(|ch| ch.as_str() == c) else {
                    return Err(format!("channels: `{c}` is not a channel"));
                };
                e.channels |= ch.bit();
            }
        }
        e.delay_ms = rights.delay_ms;
        e.max_symbols = rights.max_symbols;
        e.max_connections = rights.max_connections;
        if let Some(hz) = rights.max_hz {
            if !(hz.is_finite() && hz > 0.0) {
                return Err(format!("max_hz: {hz} is not a positive rate"));
            }
            e.max_hz = Some(hz);
        }
        e.class = match rights.class.as_deref() {
            None | Some("pro") => Class::Pro,
            Some("nonpro") => Class::Nonpro,
            Some(other) => return Err(format!("class: `{other}` is not `pro` or `nonpro`")),
        };
        Ok(e)
    }

    /// Whether the user may see `symbol` (upper case) on `channel`.
    pub fn allows(&self, channel: Channel, symbol: &str) -> bool {
        self.channel(channel) && self.symbol(symbol)
    }

    /// Whether the user may use `channel` at all.
    pub fn channel(&self, channel: Channel) -> bool {
        self.channels & channel.bit() != 0
    }

    /// Whether the user may see `symbol` (upper case) on some channel.
    pub fn symbol(&self, symbol: &str) -> bool {
        if self.all {
            return true;
        }
        if self
            .exact
            .binary_search_by(|e| e.as_ref().cmp(symbol))
            .is_ok()
        {
            return true;
        }
        // The greatest prefix not above `symbol` is the only candidate
        // among prefixes that do not contain one another; check the few
        // before it too, since `A` and `AB` may both be listed.
        let at = self.prefixes.partition_point(|p| p.as_ref() <= symbol);
        self.prefixes[..at]
            .iter()
            .rev()
            .take_while(|p| symbol.as_bytes()[0] == p.as_bytes()[0])
            .any(|p| symbol.starts_with(p.as_ref()))
    }

    /// Whether every symbol is allowed (a `*` subscription needs no filter).
    pub fn all_symbols(&self) -> bool {
        self.all
    }

    /// The cap on symbols per request: the relay's, or the user's if lower.
    pub fn symbol_cap(&self, relay_max: usize) -> usize {
        self.max_symbols.map_or(relay_max, |m| m.min(relay_max))
    }

    /// A subscription's `max_hz` under the user's cap.
    pub fn cap_hz(&self, asked: Option<f64>) -> Option<f64> {
        match (asked, self.max_hz) {
            (Some(a), Some(m)) => Some(a.min(m)),
            (a, m) => a.or(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rights(symbols: &[&str]) -> Rights {
        Rights {
            symbols: Some(symbols.iter().map(|s| s.to_string()).collect()),
            ..Rights::default()
        }
    }

    #[test]
    fn patterns_match_exact_names_and_prefixes_only() {
        let e = Entitlement::compile(&rights(&["a*", "MSFT", "BRK.B", "AB*"])).unwrap();
        for yes in ["A", "AAPL", "ABC", "MSFT", "BRK.B", "AZ"] {
            assert!(e.allows(Channel::Quotes, yes), "{yes}");
        }
        for no in ["MSFTX", "MSF", "B", "BRK", "ZA", "", "*"] {
            assert!(!e.symbol(no), "{no}");
        }
        assert!(!e.all_symbols());
        let all = Entitlement::compile(&rights(&["*"])).unwrap();
        assert!(all.all_symbols() && all.symbol("ANY"));
        // No `symbols` claim: every symbol.
        assert!(
            Entitlement::compile(&Rights::default())
                .unwrap()
                .symbol("X")
        );
        let none = Entitlement::compile(&rights(&[])).unwrap();
        assert!(!none.symbol("AAPL"));
    }

    #[test]
    fn channels_caps_and_class_compile_or_name_the_bad_claim() {
        let e = Entitlement::compile(&Rights {
            channels: Some(vec!["quotes".into(), "bars".into()]),
            max_symbols: Some(5),
            max_hz: Some(2.0),
            class: Some("nonpro".into()),
            ..rights(&["*"])
        })
        .unwrap();
        assert!(e.allows(Channel::Quotes, "A") && e.allows(Channel::Bars, "A"));
        assert!(!e.allows(Channel::Book, "A") && !e.channel(Channel::Trades));
        assert_eq!(e.symbol_cap(1024), 5);
        assert_eq!(e.symbol_cap(3), 3);
        assert_eq!(e.cap_hz(Some(10.0)), Some(2.0));
        assert_eq!(e.cap_hz(Some(1.0)), Some(1.0));
        assert_eq!(e.cap_hz(None), Some(2.0));
        assert_eq!(e.class, Class::Nonpro);
        for (bad, claim) in [
            (rights(&["<x>"]), "symbols"),
            (rights(&["*A"]), "symbols"),
            (
                Rights {
                    channels: Some(vec!["news".into()]),
                    ..Rights::default()
                },
                "channels",
            ),
            (
                Rights {
                    max_hz: Some(-1.0),
                    ..Rights::default()
                },
                "max_hz",
            ),
            (
                Rights {
                    class: Some("vip".into()),
                    ..Rights::default()
                },
                "class",
            ),
        ] {
            let err = Entitlement::compile(&bad).unwrap_err();
            assert!(err.starts_with(claim), "{err}");
        }
    }
}
