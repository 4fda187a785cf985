//! The `Sec-WebSocket-Extensions` negotiation of permessage-deflate
//! (RFC 7692 §5, §7.1): the client's offers, in its order of preference,
//! comma-separated (over one header line or several), each
//! `permessage-deflate` with `;`-separated parameters. The first offer the
//! relay can honour is accepted; one that is malformed or asks for what the
//! relay cannot do is declined (RFC 7692 §5: the server declines, it does
//! not fail the handshake), and with no offer accepted the connection goes
//! on without the extension.
//!
//! What the relay honours: `server_no_context_takeover` and
//! `client_no_context_takeover` (no value); `client_max_window_bits` bare
//! or 8..=15 (the inflater's window is always 32 KiB, enough for any); and
//! `server_max_window_bits` 8..=15. Under `no_context` and `context` the
//! compressor's window is 15 bits: an offer with 8..=14 is declined. Under
//! `small_context` the answer always names the small compressor's window,
//! the offered one if smaller (§7.1.2.1 lets a server name it unasked),
//! and always `client_no_context_takeover` (§7.1.1.2 lets a server add it).
//! A parameter given twice, with a value where none belongs (or none where
//! one does), out of range, or unknown declines the offer.

use super::{Mode, SMALL_WINDOW_BITS};

/// The extension as accepted for one connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Agreement {
    /// The relay compresses each message on its own.
    pub server_no_context: bool,
    /// The client compresses each message on its own: the relay holds no
    /// inflater between messages.
    pub client_no_context: bool,
    /// Under `small_context`: the window bits of the relay's small-window
    /// compressor (`SmallDeflater`), named in the answer.
    pub small_window: Option<u8>,
    /// The offer limited the relay's 32 KiB window (to 15 bits): echoed.
    server_max_window_bits: bool,
}

impl Agreement {
    /// The `Sec-WebSocket-Extensions` answer (RFC 7692 §7.1).
    pub fn response(&self) -> String {
        let mut out = String::from("permessage-deflate");
        if self.server_no_context {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.small_window {
            out.push_str(&format!("; server_max_window_bits={bits}"));
        } else if self.server_max_window_bits {
            out.push_str("; server_max_window_bits=15");
        }
        out
    }
}

/// The parameters of one well-formed offer.
#[derive(Default)]
struct Offer {
    server_no_context: bool,
    client_no_context: bool,
    server_max_window_bits: Option<u8>,
}

/// The agreement for the client's `Sec-WebSocket-Extensions` header values
/// under `mode`: the first offer of permessage-deflate the relay can
/// honour, or `None` (no extension).
pub fn negotiate<'a>(mode: Mode, values: impl IntoIterator<Item = &'a str>) -> Option<Agreement> {
    if mode == Mode::Off {
        return None;
    }
    values
        .into_iter()
        .flat_map(|v| split_outside_quotes(v, b','))
        .find_map(|element| agree(mode, parse_offer(element.trim())?))
}

/// What `mode` answers to a well-formed `offer`, if it can honour it.
fn agree(mode: Mode, offer: Offer) -> Option<Agreement> {
    let window = offer.server_max_window_bits;
    match mode {
        Mode::Off => None,
        // The 32 KiB compressor keeps to no smaller window.
        Mode::NoContext | Mode::Context if window.is_some_and(|b| b < 15) => None,
        // Both sides reset per message, whatever the client offered
        // (RFC 7692 §7.1.1: a server may add either parameter).
        Mode::NoContext => Some(Agreement {
            server_no_context: true,
            client_no_context: true,
            small_window: None,
            server_max_window_bits: window.is_some(),
        }),
        Mode::Context => Some(Agreement {
            server_no_context: offer.server_no_context,
            client_no_context: offer.client_no_context,
            small_window: None,
            server_max_window_bits: window.is_some(),
        }),
        Mode::SmallContext => Some(Agreement {
            server_no_context: offer.server_no_context,
            client_no_context: true,
            small_window: Some(window.map_or(SMALL_WINDOW_BITS, |b| b.min(SMALL_WINDOW_BITS))),
            server_max_window_bits: false,
        }),
    }
}

/// One offer, if it is permessage-deflate and well formed.
fn parse_offer(element: &str) -> Option<Offer> {
    let mut parts = split_outside_quotes(element, b';');
    let name = parts.next()?.trim();
    if !name.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut offer = Offer::default();
    let mut seen = [false; 4];
    for part in parts {
        let (key, value) = match part.split_once('=') {
            Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
            None => (part.trim(), None),
        };
        let index = match key {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
        match (index, value) {
            (0, None) => offer.server_no_context = true,
            (1, None) => offer.client_no_context = true,
            (2, Some(v)) if window_bits(&v).is_some() => {
                offer.server_max_window_bits = window_bits(&v);
            }
            (3, None) => {}
            (3, Some(v)) if window_bits(&v).is_some() => {}
            _ => return None,
        }
    }
    Some(offer)
}

/// 8..=15 written as RFC 7692 §7.1.2 asks: digits, no leading zero.
fn window_bits(v: &str) -> Option<u8> {
    if v.is_empty() || v.starts_with('0') || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// A token, or a quoted string unescaped (RFC 7230 §3.2.6); `None` if
/// neither.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        let token = !v.is_empty() && v.bytes().all(is_tchar);
        return token.then(|| v.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `s` split at `sep` where it is not inside a quoted string.
fn split_outside_quotes(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, b) in s.bytes().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                _ if b == sep && !quoted => {
                    rest = Some(&s[i + 1..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(mode: Mode, header: &str) -> Option<String> {
        negotiate(mode, [header]).map(|a| a.response())
    }

    #[test]
    fn the_first_acceptable_offer_is_answered() {
        let ctx = Mode::Context;
        assert_eq!(
            answer(ctx, "permessage-deflate").as_deref(),
            Some("permessage-deflate")
        );
        assert_eq!(
            answer(ctx, "permessage-deflate; client_max_window_bits").as_deref(),
            Some("permessage-deflate")
        );
        assert_eq!(
            answer(
                ctx,
                "permessage-deflate;server_no_context_takeover; client_no_context_takeover"
            )
            .as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        assert_eq!(
            answer(ctx, "permessage-deflate; server_max_window_bits=\"15\"").as_deref(),
            Some("permessage-deflate; server_max_window_bits=15")
        );
        // Declined offers, then one the relay can honour.
        assert_eq!(
            answer(
                ctx,
                "x-webkit-deflate-frame, permessage-deflate; server_max_window_bits=10, \
                 permessage-deflate; client_max_window_bits=9; server_no_context_takeover"
            )
            .as_deref(),
            Some("permessage-deflate; server_no_context_takeover")
        );
        // Over several header lines.
        assert_eq!(
            negotiate(
                ctx,
                ["foo", "permessage-deflate; client_no_context_takeover"]
            ),
            Some(Agreement {
                client_no_context: true,
                ..Agreement::default()
            })
        );
        // no_context answers both resets whatever was offered.
        assert_eq!(
            answer(
                Mode::NoContext,
                "permessage-deflate; client_max_window_bits"
            )
            .as_deref(),
            Some("permessage-deflate; server_no_context_takeover; client_no_context_takeover")
        );
        assert_eq!(answer(Mode::Off, "permessage-deflate"), None);
    }

    #[test]
    fn small_context_names_its_window_and_asks_no_client_context() {
        let small = Mode::SmallContext;
        let fresh = "permessage-deflate; client_no_context_takeover; server_max_window_bits=11";
        for offer in [
            "permessage-deflate",
            // What Chromium offers.
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=15",
            "permessage-deflate; server_max_window_bits=12; client_no_context_takeover",
        ] {
            assert_eq!(answer(small, offer).as_deref(), Some(fresh), "{offer}");
        }
        assert_eq!(
            answer(small, "permessage-deflate; server_max_window_bits=9").as_deref(),
            Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=9")
        );
        let alone = negotiate(small, ["permessage-deflate; server_no_context_takeover"]);
        assert_eq!(
            alone,
            Some(Agreement {
                server_no_context: true,
                client_no_context: true,
                small_window: Some(11),
                server_max_window_bits: false,
            })
        );
        // An answer offered back is agreed to as it is.
        let answer_back = alone.unwrap().response();
        assert_eq!(negotiate(small, [answer_back.as_str()]), alone);
        // Context and no_context decline the smaller window and take the
        // next offer.
        let offers = "permessage-deflate; server_max_window_bits=10, permessage-deflate";
        assert_eq!(
            answer(Mode::Context, offers).as_deref(),
            Some("permessage-deflate")
        );
        assert_eq!(
            answer(small, offers).as_deref(),
            Some("permessage-deflate; client_no_context_takeover; server_max_window_bits=10")
        );
    }

    #[test]
    fn bad_or_unsupported_offers_are_declined() {
        for bad in [
            "",
            "deflate-frame",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=14",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=015",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits=\"1 5\"",
            "permessage-deflate; client_max_window_bits=\"15",
            "permessage-deflate; client_max_window_bits=",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; x_unknown",
            "permessage-deflate; ;",
        ] {
            assert_eq!(answer(Mode::Context, bad), None, "{bad:?}");
            assert_eq!(answer(Mode::NoContext, bad), None, "{bad:?}");
            let smaller = bad.ends_with("server_max_window_bits=8")
                || bad.ends_with("server_max_window_bits=14");
            assert_eq!(
                answer(Mode::SmallContext, bad).is_some(),
                smaller,
                "{bad:?}"
            );
        }
        // A comma inside a quoted value does not start an offer.
        assert_eq!(
            answer(
                Mode::Context,
                "permessage-deflate; client_max_window_bits=\"9, permessage-deflate\""
            ),
            None
        );
        assert_eq!(
            answer(
                Mode::Context,
                "PerMessage-Deflate; client_max_window_bits=\"12\""
            )
            .as_deref(),
            Some("permessage-deflate")
        );
    }
}
