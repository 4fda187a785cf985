//! `tickrelay token`: mints a user's JSON Web Token (HS256) for tests,
//! demos and a broker's own scripts, with the relay's claims
//! (docs/PROTOCOL.md, "Users and entitlements").

use std::path::PathBuf;

use anyhow::Context;

use crate::auth::{Claims, Entitlement, Rights, mint_hs256};

/// `tickrelay token` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct TokenArgs {
    /// The HS256 secret's file (the relay's `jwt_secret_file`).
    #[arg(long)]
    pub secret_file: PathBuf,
    /// The user.
    #[arg(long)]
    pub sub: String,
    /// Symbol patterns, comma-separated: `*`, `AAPL`, `A*`.
    #[arg(long, default_value = "*")]
    pub symbols: String,
    /// Channels, comma-separated (`quotes,book,trades,bars`) [default: all].
    #[arg(long)]
    pub channels: Option<String>,
    /// Delay of the data: `0`, `15m`, `30s`, `1500ms`.
    #[arg(long, default_value = "0")]
    pub delay: String,
    /// `pro` or `nonpro`.
    #[arg(long, default_value = "pro")]
    pub class: String,
    /// Lifetime: `1h`, `10m`, `30s`.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Most symbols per request or subscription.
    #[arg(long)]
    pub max_symbols: Option<usize>,
    /// Most connections at once, across transports.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// A cap on every subscription's updates per second per symbol.
    #[arg(long)]
    pub max_hz: Option<f64>,
    /// `iss` claim.
    #[arg(long)]
    pub issuer: Option<String>,
    /// `aud` claim.
    #[arg(long)]
    pub audience: Option<String>,
}

/// `15m`, `30s`, `1500ms`, `2h`, or plain milliseconds.
pub fn parse_duration_ms(text: &str) -> anyhow::Result<u64> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "ms"),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("`{text}` is not a duration like 15m, 30s or 1500ms"))?;
    let per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => anyhow::bail!("`{text}`: the unit is ms, s, m, h or d"),
    };
    Ok(n.saturating_mul(per))
}

/// The signed token.
pub fn mint(args: &TokenArgs) -> anyhow::Result<String> {
    let mut secret = std::fs::read(&args.secret_file)
        .with_context(|| format!("cannot read {}", args.secret_file.display()))?;
    while secret.last().is_some_and(|b| b.is_ascii_whitespace()) {
        secret.pop();
    }
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let rights = Rights {
        symbols: Some(list(&args.symbols)),
        channels: args.channels.as_deref().map(list),
        delay_ms: parse_duration_ms(&args.delay)?,
        max_symbols: args.max_symbols,
        max_connections: args.max_connections,
        max_hz: args.max_hz,
        class: Some(args.class.clone()),
    };
    // The claims the relay would refuse are refused here first.
    Entitlement::compile(&rights).map_err(|e| anyhow::anyhow!("claim {e}"))?;
    let now = crate::clock::now_ms() / 1000;
    let claims = Claims {
        sub: args.sub.clone(),
        exp: now + parse_duration_ms(&args.ttl)?.div_ceil(1000),
        nbf: None,
        iat: Some(now),
        iss: args.issuer.clone(),
        aud: args.audience.clone(),
        tickrelay: rights,
    };
    mint_hs256(&secret, &claims).map_err(|e| anyhow::anyhow!("cannot sign: {e}"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration_ms;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration_ms("15m").unwrap(), 900_000);
        assert_eq!(parse_duration_ms("30s").unwrap(), 30_000);
        assert_eq!(parse_duration_ms("1500ms").unwrap(), 1_500);
        assert_eq!(parse_duration_ms("0").unwrap(), 0);
        assert_eq!(parse_duration_ms("2h").unwrap(), 7_200_000);
        assert!(parse_duration_ms("soon").is_err());
        assert!(parse_duration_ms("5w").is_err());
    }
}
