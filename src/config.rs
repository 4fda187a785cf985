//! Settings: one typed [`Config`], from flags, `TICKRELAY_*` environment
//! variables and a TOML file, validated once at start.
//!
//! Precedence: a flag wins over its environment variable, which wins over the
//! file, which wins over the default. Each setting is declared once below and
//! gets its flag, variable and file key from its name (`feed_a` →
//! `--feed-a`, `TICKRELAY_FEED_A`, `feed_a = "…"`).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::feed::FeedConfig;

/// A setting that failed validation, named so the user can find it.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting `{setting}` (--{flag}, TICKRELAY_{env}): {reason}")]
pub struct ConfigError {
    /// File key.
    pub setting: &'static str,
    /// Flag name without dashes.
    pub flag: String,
    /// Environment variable suffix.
    pub env: String,
    /// What is wrong.
    pub reason: String,
}

impl ConfigError {
    fn new(setting: &'static str, reason: impl Into<String>) -> Self {
        ConfigError {
            setting,
            flag: setting.replace('_', "-"),
            env: setting.to_ascii_uppercase(),
            reason: reason.into(),
        }
    }
}

macro_rules! settings {
    ($( $(#[doc = $doc:literal])+ $name:ident : $ty:ty = $env:literal; )*) => {
        /// Every relay setting, each optional so the layers can be merged.
        #[derive(clap::Args, Deserialize, Default, Debug, Clone)]
        #[serde(deny_unknown_fields, default)]
        pub struct Settings {
            $( $(#[doc = $doc])+ #[arg(long, env = $env)] pub $name: Option<$ty>, )*
        }

        impl Settings {
            /// `self` where set, else `lower`.
            pub fn over(self, lower: Settings) -> Settings {
                Settings { $( $name: self.$name.or(lower.$name), )* }
            }
        }
    };
}

settings! {
    /// HTTP listen address [default: 127.0.0.1:8080].
    http: SocketAddr = "TICKRELAY_HTTP";
    /// Feed line A, GROUP:PORT, or `off` [default: 239.255.0.1:31001].
    feed_a: String = "TICKRELAY_FEED_A";
    /// Feed line B, GROUP:PORT, or `off` [default: off].
    feed_b: String = "TICKRELAY_FEED_B";
    /// The producer's retransmission server, HOST:PORT, asked to fill gaps [default: none].
    retransmit: SocketAddrV4 = "TICKRELAY_RETRANSMIT";
    /// The producer's recovery line (snapshot loop), GROUP:PORT, or `off` [default: off].
    recovery: String = "TICKRELAY_RECOVERY";
    /// NATS server URL (`nats://HOST:PORT`): `serve` reads the stream as a feed line; `bridge` publishes to it [default: none].
    nats: String = "TICKRELAY_NATS";
    /// JetStream stream name for `nats` (created if missing; subjects `STREAM.feed.SESSION`) [default: none].
    stream: String = "TICKRELAY_STREAM";
    /// Interface address to join the feed groups on [default: 127.0.0.1].
    interface: Ipv4Addr = "TICKRELAY_INTERFACE";
    /// Receive buffer per feed socket, bytes [default: 8388608].
    rcvbuf: usize = "TICKRELAY_RCVBUF";
    /// How long packets are held behind a gap before it counts as lost, ms [default: 100].
    gap_hold_ms: u64 = "TICKRELAY_GAP_HOLD_MS";
    /// No packet for this long makes the feed stale, ms [default: 3000].
    stale_after_ms: u64 = "TICKRELAY_STALE_AFTER_MS";
    /// Most symbols in one snapshot, poll or subscription [default: 1024].
    max_symbols: usize = "TICKRELAY_MAX_SYMBOLS";
    /// Most price levels kept per side of a symbol's book; levels beyond are counted and not kept [default: 50].
    max_book_levels: usize = "TICKRELAY_MAX_BOOK_LEVELS";
    /// Grace period for open requests and streams at shutdown, ms [default: 5000].
    shutdown_grace_ms: u64 = "TICKRELAY_SHUTDOWN_GRACE_MS";
    /// On SIGTERM, answer `/readyz` 503 for this long before the shutdown notices, so a load balancer stops routing here first, ms [default: 0].
    drain_ms: u64 = "TICKRELAY_DRAIN_MS";
    /// Fan-out shards, each a thread with its share of the clients [default: number of cores].
    fanout_shards: usize = "TICKRELAY_FANOUT_SHARDS";
    /// Log format: `text` or `json` [default: text].
    log_format: String = "TICKRELAY_LOG_FORMAT";
    /// Most open streaming connections (WebSocket, SSE, long poll) [default: 100000].
    max_connections: usize = "TICKRELAY_MAX_CONNECTIONS";
    /// Most open streaming connections from one address [default: 10000].
    max_connections_per_ip: usize = "TICKRELAY_MAX_CONNECTIONS_PER_IP";
    /// Largest WebSocket frame a client may send, bytes [default: 65536].
    max_frame_bytes: usize = "TICKRELAY_MAX_FRAME_BYTES";
    /// Subscribe/unsubscribe operations per second per connection [default: 20].
    ops_per_second: u32 = "TICKRELAY_OPS_PER_SECOND";
    /// Queue length of `every` mode per client; overflow closes it (4008) [default: 4096].
    every_queue: usize = "TICKRELAY_EVERY_QUEUE";
    /// WebSocket permessage-deflate: `off`, `no_context` (each message compressed on its own), `context` (a 32 KiB-window compressor per connection) or `small_context` (context in a 2 KiB window, about 8 KiB per connection) [default: no_context].
    deflate: String = "TICKRELAY_DEFLATE";
    /// Allow `*` (every symbol) subscriptions [default: true].
    allow_wildcard: bool = "TICKRELAY_ALLOW_WILDCARD";
    /// WebSocket ping interval, ms [default: 15000].
    ping_interval_ms: u64 = "TICKRELAY_PING_INTERVAL_MS";
    /// Close a WebSocket peer silent for this long (4010), ms [default: 45000].
    idle_timeout_ms: u64 = "TICKRELAY_IDLE_TIMEOUT_MS";
    /// Close a client whose write does not finish in this time (4008), ms [default: 10000].
    write_timeout_ms: u64 = "TICKRELAY_WRITE_TIMEOUT_MS";
    /// SO_SNDBUF of client connections, bytes; 0 leaves the kernel's autotuning [default: 131072].
    send_buffer: usize = "TICKRELAY_SEND_BUFFER";
    /// SSE keep-alive comment interval, ms [default: 15000].
    keepalive_ms: u64 = "TICKRELAY_KEEPALIVE_MS";
    /// SSE `retry:` hint to clients, ms [default: 2000].
    sse_retry_ms: u64 = "TICKRELAY_SSE_RETRY_MS";
    /// Default long-poll timeout, ms [default: 25000].
    poll_timeout_ms: u64 = "TICKRELAY_POLL_TIMEOUT_MS";
    /// Longest long-poll timeout a client may ask for, ms [default: 120000].
    max_poll_timeout_ms: u64 = "TICKRELAY_MAX_POLL_TIMEOUT_MS";
    /// Reconnect delay hint sent in the shutdown notice, ms [default: 1000].
    reconnect_ms: u64 = "TICKRELAY_RECONNECT_MS";
    /// Bearer token required on client endpoints (header, or `token` query) [default: none].
    token: String = "TICKRELAY_TOKEN";
    /// Comma-separated Origins allowed on client routes (WebSocket, SSE, polls, snapshot) [default: any].
    allowed_origins: String = "TICKRELAY_ALLOWED_ORIGINS";
    /// File holding the HS256 secret that signs users' JSON Web Tokens (32 bytes or more) [default: none].
    jwt_secret_file: PathBuf = "TICKRELAY_JWT_SECRET_FILE";
    /// PEM file of the RS256 or ES256 public key that verifies users' tokens [default: none].
    jwt_public_key_file: PathBuf = "TICKRELAY_JWT_PUBLIC_KEY_FILE";
    /// JWK set file: tokens' keys by `kid`, reread on SIGHUP [default: none].
    jwks_file: PathBuf = "TICKRELAY_JWKS_FILE";
    /// Required `iss` of users' tokens [default: not checked].
    jwt_issuer: String = "TICKRELAY_JWT_ISSUER";
    /// Required `aud` of users' tokens [default: not checked].
    jwt_audience: String = "TICKRELAY_JWT_AUDIENCE";
    /// Bearer token of the admin routes (`/v1/admin/…`); they are off without it [default: none].
    admin_token: String = "TICKRELAY_ADMIN_TOKEN";
    /// SQLite file of usage per user and UTC day (WAL); no usage is kept without it [default: none].
    usage_db: PathBuf = "TICKRELAY_USAGE_DB";
    /// How often usage is written to `usage_db`, ms (a kill -9 loses at most this much) [default: 5000].
    usage_flush_ms: u64 = "TICKRELAY_USAGE_FLUSH_MS";
    /// Step of the delayed view: delayed users see the market in steps this long, ms [default: 1000].
    delay_resolution_ms: u64 = "TICKRELAY_DELAY_RESOLUTION_MS";
    /// Longest delay served (a token's `delay_ms`); 0 serves no delayed users, ms [default: 900000].
    max_delay_ms: u64 = "TICKRELAY_MAX_DELAY_MS";
    /// Trades kept per symbol for `/v1/trades` (the tape); 0 keeps none [default: 1000].
    trade_history: usize = "TICKRELAY_TRADE_HISTORY";
    /// 1-second bars kept per symbol; 0 keeps none [default: 900].
    bars_1s: usize = "TICKRELAY_BARS_1S";
    /// 1-minute bars kept per symbol (5 m, 15 m and 1 h are built from them); 0 keeps none [default: 1440].
    bars_1m: usize = "TICKRELAY_BARS_1M";
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// What clients are held to and served with: the limits (each a
/// [`crate::admission::Limit`] when it refuses) and the timers.
#[derive(Clone, Debug)]
pub struct ClientPolicy {
    /// Most symbols in one request or subscription.
    pub max_symbols: usize,
    /// Most streaming connections.
    pub max_connections: usize,
    /// Most streaming connections per address.
    pub max_connections_per_ip: usize,
    /// Largest client frame.
    pub max_frame_bytes: usize,
    /// Subscription operations per second per connection.
    pub ops_per_second: u32,
    /// `every` queue length.
    pub every_queue: usize,
    /// `*` allowed.
    pub allow_wildcard: bool,
    /// WebSocket permessage-deflate.
    pub deflate: crate::deflate::Mode,
    /// WebSocket ping interval.
    pub ping_interval: Duration,
    /// Silence after which a WebSocket peer is closed.
    pub idle_timeout: Duration,
    /// Write deadline.
    pub write_timeout: Duration,
    /// SO_SNDBUF of client connections (0: the kernel's autotuning).
    pub send_buffer: usize,
    /// SSE keep-alive interval.
    pub keepalive: Duration,
    /// SSE retry hint.
    pub sse_retry: Duration,
    /// Default long-poll timeout.
    pub poll_timeout: Duration,
    /// Cap on a requested long-poll timeout.
    pub max_poll_timeout: Duration,
    /// Reconnect hint at shutdown.
    pub reconnect: Duration,
}

/// Who may connect, and as whom.
#[derive(Clone, Debug, Default)]
pub struct Access {
    /// The shared bearer token (the simple mode: one audience, every right).
    pub token: Option<String>,
    /// Origins allowed on client routes; empty means any.
    pub allowed_origins: Vec<String>,
    /// Users' JSON Web Tokens: keys and required claims.
    pub jwt: crate::auth::JwtSettings,
    /// Bearer token of the admin routes.
    pub admin_token: Option<String>,
    /// A client with no token is let in (every right, no user) even where
    /// tokens are required. `tickrelay demo` alone sets it, beside its demo
    /// users; no setting does.
    pub anonymous: bool,
}

impl Access {
    /// Whether clients must present a token (shared or per user).
    pub fn required(&self) -> bool {
        self.token.is_some() || self.jwt.enabled()
    }
}

/// The validated configuration the relay runs with.
#[derive(Clone, Debug)]
pub struct Config {
    /// HTTP listen address.
    pub http: SocketAddr,
    /// Ingest.
    pub feed: FeedConfig,
    /// Client limits.
    pub policy: ClientPolicy,
    /// Authentication and origin checks.
    pub access: Access,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// `/readyz` answers 503 this long before the shutdown notices go out.
    pub drain: Duration,
    /// Fan-out shards (threads).
    pub fanout_shards: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// Usage per user and day: the database and how often it is written.
    pub usage: Option<(PathBuf, Duration)>,
    /// The delayed view's step and the longest delay it serves, ms (none
    /// when `max_delay_ms` is 0); kept only when users' tokens are verified.
    pub delayed: Option<DelayedSettings>,
    /// Trades and bars kept per symbol.
    pub history: crate::table::HistoryLimits,
    /// `tickrelay demo`'s users, served at `/v1/demo/users`; no setting sets it.
    pub demo_users: Option<DemoUsers>,
    /// Most price levels kept per side of a book.
    pub max_book_levels: usize,
}

/// The delayed view's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelayedSettings {
    /// Step, ms.
    pub resolution_ms: u64,
    /// Longest delay served, ms.
    pub max_delay_ms: u64,
}

/// The demo's users and their tokens, as `/v1/demo/users` answers (JSON).
/// Its `Debug` shows no token.
#[derive(Clone)]
pub struct DemoUsers(pub std::sync::Arc<str>);

impl std::fmt::Debug for DemoUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DemoUsers(…)")
    }
}

/// Default feed line A.
pub const DEFAULT_FEED_A: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 1), 31001);
/// Default feed line B (off unless asked for).
pub const DEFAULT_FEED_B: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 0, 2), 31002);
/// Most `max_book_levels` may be: a book's levels are copied whole on a
/// recovery, and a client asks for at most 50.
pub const MAX_BOOK_LEVELS: usize = 1000;
/// Default HTTP address.
pub const DEFAULT_HTTP: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));

impl Settings {
    /// Reads a TOML settings file.
    pub fn from_file(path: &PathBuf) -> anyhow::Result<Settings> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    /// Applies defaults and validates.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let feed_a = parse_line("feed_a", self.feed_a.as_deref(), Some(DEFAULT_FEED_A))?;
        let feed_b = parse_line("feed_b", self.feed_b.as_deref(), None)?;
        let nats = parse_nats(self.nats.as_deref(), self.stream.as_deref())?;
        if feed_a.is_none() && feed_b.is_none() && nats.is_none() {
            return Err(ConfigError::new(
                "feed_a",
                "both feed lines are off and `nats` is not set; at least one feed is needed",
            ));
        }
        if let (Some(a), Some(b)) = (feed_a, feed_b)
            && a == b
        {
            return Err(ConfigError::new(
                "feed_b",
                format!("{b} is the same address as feed_a"),
            ));
        }
        let recovery = parse_line("recovery", self.recovery.as_deref(), None)?;
        if let Some(r) = recovery
            && (Some(r) == feed_a || Some(r) == feed_b)
        {
            return Err(ConfigError::new(
                "recovery",
                format!("{r} is a feed line's address; the loop needs its own"),
            ));
        }
        let interface = self.interface.unwrap_or(Ipv4Addr::LOCALHOST);
        if interface.is_multicast() || interface.is_broadcast() {
            return Err(ConfigError::new(
                "interface",
                format!("{interface} is not an interface address"),
            ));
        }
        let gap_hold_ms = self.gap_hold_ms.unwrap_or(100);
        if !(1..=60_000).contains(&gap_hold_ms) {
            return Err(ConfigError::new(
                "gap_hold_ms",
                format!("{gap_hold_ms} is outside 1..=60000"),
            ));
        }
        let stale_after_ms = self.stale_after_ms.unwrap_or(3_000);
        if stale_after_ms < 100 {
            return Err(ConfigError::new(
                "stale_after_ms",
                format!("{stale_after_ms} is below 100"),
            ));
        }
        let rcvbuf = self.rcvbuf.unwrap_or(8 << 20);
        if rcvbuf < 4096 {
            return Err(ConfigError::new(
                "rcvbuf",
                format!("{rcvbuf} bytes is below 4096"),
            ));
        }
        let max_symbols = self.max_symbols.unwrap_or(1024);
        if max_symbols == 0 {
            return Err(ConfigError::new("max_symbols", "must be at least 1"));
        }
        let max_book_levels = self
            .max_book_levels
            .unwrap_or(crate::table::book::DEFAULT_MAX_LEVELS);
        if !(1..=MAX_BOOK_LEVELS).contains(&max_book_levels) {
            return Err(ConfigError::new(
                "max_book_levels",
                format!("{max_book_levels} is outside 1..={MAX_BOOK_LEVELS}"),
            ));
        }
        let ms = |setting: &'static str,
                  v: Option<u64>,
                  default: u64,
                  min: u64|
         -> Result<Duration, ConfigError> {
            let v = v.unwrap_or(default);
            if v < min {
                return Err(ConfigError::new(setting, format!("{v} ms is below {min}")));
            }
            Ok(Duration::from_millis(v))
        };
        let positive = |setting: &'static str,
                        v: Option<usize>,
                        default: usize|
         -> Result<usize, ConfigError> {
            match v.unwrap_or(default) {
                0 => Err(ConfigError::new(setting, "must be at least 1")),
                n => Ok(n),
            }
        };
        let policy = ClientPolicy {
            max_symbols,
            max_connections: positive("max_connections", self.max_connections, 100_000)?,
            max_connections_per_ip: positive(
                "max_connections_per_ip",
                self.max_connections_per_ip,
                10_000,
            )?,
            max_frame_bytes: positive("max_frame_bytes", self.max_frame_bytes, 64 * 1024)?,
            ops_per_second: match self.ops_per_second.unwrap_or(20) {
                0 => return Err(ConfigError::new("ops_per_second", "must be at least 1")),
                n => n,
            },
            every_queue: positive("every_queue", self.every_queue, 4096)?,
            allow_wildcard: self.allow_wildcard.unwrap_or(true),
            deflate: match self.deflate.as_deref().map(crate::deflate::Mode::parse) {
                None => crate::deflate::Mode::default(),
                Some(Some(m)) => m,
                Some(None) => {
                    return Err(ConfigError::new(
                        "deflate",
                        "must be `off`, `no_context`, `context` or `small_context`",
                    ));
                }
            },
            ping_interval: ms("ping_interval_ms", self.ping_interval_ms, 15_000, 10)?,
            idle_timeout: ms("idle_timeout_ms", self.idle_timeout_ms, 45_000, 10)?,
            write_timeout: ms("write_timeout_ms", self.write_timeout_ms, 10_000, 10)?,
            send_buffer: self.send_buffer.unwrap_or(128 * 1024),
            keepalive: ms("keepalive_ms", self.keepalive_ms, 15_000, 10)?,
            sse_retry: ms("sse_retry_ms", self.sse_retry_ms, 2_000, 0)?,
            poll_timeout: ms("poll_timeout_ms", self.poll_timeout_ms, 25_000, 0)?,
            max_poll_timeout: ms("max_poll_timeout_ms", self.max_poll_timeout_ms, 120_000, 0)?,
            reconnect: ms("reconnect_ms", self.reconnect_ms, 1_000, 0)?,
        };
        if policy.poll_timeout > policy.max_poll_timeout {
            return Err(ConfigError::new(
                "poll_timeout_ms",
                "is above max_poll_timeout_ms",
            ));
        }
        let access = Access {
            token: self.token.filter(|t| !t.is_empty()),
            allowed_origins: self
                .allowed_origins
                .map(|o| {
                    o.split(',')
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            jwt: crate::auth::JwtSettings {
                secret_file: self.jwt_secret_file,
                public_key_file: self.jwt_public_key_file,
                jwks_file: self.jwks_file,
                issuer: self.jwt_issuer.filter(|s| !s.is_empty()),
                audience: self.jwt_audience.filter(|s| !s.is_empty()),
            },
            admin_token: self.admin_token.filter(|t| !t.is_empty()),
            anonymous: false,
        };
        if access.token.is_some() && access.token == access.admin_token {
            return Err(ConfigError::new(
                "admin_token",
                "is the same as `token`: a user's token must not open the admin routes",
            ));
        }
        // The key file is read now, so a bad one stops the start with its name.
        crate::auth::Verifier::load(&access.jwt)
            .map_err(|e| ConfigError::new(e.setting, e.reason))?;
        let resolution_ms = self.delay_resolution_ms.unwrap_or(1_000);
        if !(1..=60_000).contains(&resolution_ms) {
            return Err(ConfigError::new(
                "delay_resolution_ms",
                "must be between 1 and 60000",
            ));
        }
        let max_delay_ms = self.max_delay_ms.unwrap_or(900_000);
        if max_delay_ms > 86_400_000 {
            return Err(ConfigError::new("max_delay_ms", "must be at most a day"));
        }
        // Only users' tokens carry a delay: the relay keeps no view without
        // them (`server::start_with` asks; the demo enables them later).
        let delayed = (max_delay_ms > 0).then_some(DelayedSettings {
            resolution_ms,
            max_delay_ms,
        });
        let log_format = match self.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::new(
                    "log_format",
                    format!("`{other}` is not `text` or `json`"),
                ));
            }
        };
        let history = history(self.trade_history, self.bars_1s, self.bars_1m)?;
        Ok(Config {
            history,
            http: self.http.unwrap_or(DEFAULT_HTTP),
            feed: FeedConfig {
                line_a: feed_a,
                line_b: feed_b,
                retransmit: self.retransmit,
                recovery,
                nats,
                interface,
                rcvbuf,
                gap_hold: Duration::from_millis(gap_hold_ms),
                stale_after: Duration::from_millis(stale_after_ms),
            },
            policy,
            access,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms.unwrap_or(5_000)),
            drain: Duration::from_millis(self.drain_ms.unwrap_or(0)),
            fanout_shards: match self.fanout_shards {
                Some(0) => return Err(ConfigError::new("fanout_shards", "must be at least 1")),
                Some(n) if n > 256 => {
                    return Err(ConfigError::new(
                        "fanout_shards",
                        format!("{n} is above 256"),
                    ));
                }
                Some(n) => n,
                None => std::thread::available_parallelism().map_or(1, |n| n.get()),
            },
            log_format,
            usage: match self.usage_db {
                Some(db) => Some((db, ms("usage_flush_ms", self.usage_flush_ms, 5_000, 100)?)),
                None => None,
            },
            delayed,
            demo_users: None,
            max_book_levels,
        })
    }
}

/// Trades and bars kept per symbol, each at most [`MAX_HISTORY`].
fn history(
    trades: Option<usize>,
    bars_1s: Option<usize>,
    bars_1m: Option<usize>,
) -> Result<crate::table::HistoryLimits, ConfigError> {
    use crate::table::chart::{DEFAULT_BARS_1M, DEFAULT_BARS_1S, DEFAULT_TRADE_HISTORY};
    let at_most = |setting: &'static str, v: Option<usize>, default: usize| {
        let v = v.unwrap_or(default);
        if v > MAX_HISTORY {
            return Err(ConfigError::new(
                setting,
                format!("{v} is above {MAX_HISTORY}"),
            ));
        }
        Ok(v)
    };
    Ok(crate::table::HistoryLimits {
        trades: at_most("trade_history", trades, DEFAULT_TRADE_HISTORY)?,
        bars_1s: at_most("bars_1s", bars_1s, DEFAULT_BARS_1S)?,
        bars_1m: at_most("bars_1m", bars_1m, DEFAULT_BARS_1M)?,
    })
}

/// Most trades or bars of one kind kept per symbol: a bound on what one
/// mistyped setting can cost in memory (docs/ARCHITECTURE.md, "The chart
/// and the tape").
pub const MAX_HISTORY: usize = 100_000;

/// The NATS line or bridge target: both `nats` and `stream`, or neither.
fn parse_nats(
    url: Option<&str>,
    stream: Option<&str>,
) -> Result<Option<crate::nats::NatsTarget>, ConfigError> {
    let url = url.map(str::trim).filter(|u| !u.is_empty() && *u != "off");
    let stream = stream.map(str::trim).filter(|s| !s.is_empty());
    match (url, stream) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(ConfigError::new(
            "nats",
            "`stream` is set but `nats` is not; give the NATS server URL",
        )),
        (Some(_), None) => Err(ConfigError::new(
            "stream",
            "`nats` is set but `stream` is not; give the JetStream stream name",
        )),
        (Some(url), Some(stream)) => {
            let hostport = url.strip_prefix("nats://").unwrap_or(url);
            let port_ok = hostport.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if url.contains(char::is_whitespace) || !port_ok {
                return Err(ConfigError::new(
                    "nats",
                    format!("`{url}` is not a NATS URL (nats://HOST:PORT)"),
                ));
            }
            if !crate::nats::valid_stream_name(stream) {
                return Err(ConfigError::new(
                    "stream",
                    format!(
                        "`{stream}` is not a stream name (letters, digits, `-`, `_`; at most 64)"
                    ),
                ));
            }
            Ok(Some(crate::nats::NatsTarget {
                url: url.to_owned(),
                stream: stream.to_owned(),
            }))
        }
    }
}

/// A feed line: `off`, a multicast `GROUP:PORT`, or a loopback unicast address.
fn parse_line(
    setting: &'static str,
    value: Option<&str>,
    default: Option<SocketAddrV4>,
) -> Result<Option<SocketAddrV4>, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    if matches!(value, "off" | "none" | "") {
        return Ok(None);
    }
    let addr: SocketAddrV4 = value
        .parse()
        .map_err(|_| ConfigError::new(setting, format!("`{value}` is not an IPv4 GROUP:PORT")))?;
    if addr.port() == 0 {
        return Err(ConfigError::new(setting, "port 0 is not a feed port"));
    }
    if !addr.ip().is_multicast() && !addr.ip().is_loopback() {
        return Err(ConfigError::new(
            setting,
            format!(
                "{} is not a multicast group (224.0.0.0/4) nor a loopback address",
                addr.ip()
            ),
        ));
    }
    Ok(Some(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_and_safe() {
        let c = Settings::default().validate().unwrap();
        assert_eq!(c.http, DEFAULT_HTTP);
        assert_eq!(c.feed.line_a, Some(DEFAULT_FEED_A));
        assert_eq!(c.feed.line_b, None);
        assert_eq!(c.feed.interface, Ipv4Addr::LOCALHOST);
    }

    #[test]
    fn history_has_the_documented_defaults_and_a_bound() {
        let c = Settings::default().validate().unwrap();
        assert_eq!(c.history, crate::table::HistoryLimits::default());
        let c = Settings {
            bars_1s: Some(0),
            trade_history: Some(50),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!((c.history.bars_1s, c.history.trades), (0, 50));
        let e = Settings {
            bars_1m: Some(MAX_HISTORY + 1),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.setting, "bars_1m");
        assert!(e.to_string().contains("--bars-1m"), "{e}");
    }

    #[test]
    fn upper_layer_wins() {
        let file = Settings {
            gap_hold_ms: Some(5),
            max_symbols: Some(7),
            ..Default::default()
        };
        let cli = Settings {
            gap_hold_ms: Some(9),
            ..Default::default()
        };
        let c = cli.over(file).validate().unwrap();
        assert_eq!(c.feed.gap_hold, Duration::from_millis(9));
        assert_eq!(c.policy.max_symbols, 7);
    }

    #[test]
    fn bad_settings_are_named() {
        let e = Settings {
            feed_a: Some("10.1.2.3:5000".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.setting, "feed_a");
        assert!(e.to_string().contains("--feed-a"), "{e}");
        assert!(e.to_string().contains("not a multicast group"), "{e}");
        let e = Settings {
            feed_a: Some("off".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("at least one"), "{e}");
        let e = Settings {
            log_format: Some("xml".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.setting, "log_format");
    }

    #[test]
    fn nats_settings() {
        let c = Settings {
            feed_a: Some("off".into()),
            nats: Some("nats://127.0.0.1:4222".into()),
            stream: Some("FEED".into()),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(c.feed.line_a, None);
        assert_eq!(c.feed.nats.as_ref().unwrap().stream, "FEED");
        let e = Settings {
            nats: Some("nats://127.0.0.1:4222".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.setting, "stream");
        assert!(e.to_string().contains("TICKRELAY_STREAM"), "{e}");
        let e = Settings {
            stream: Some("FEED".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.setting, "nats");
        let e = Settings {
            nats: Some("127.0.0.1".into()),
            stream: Some("FEED".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.setting, "nats");
        let e = Settings {
            nats: Some("127.0.0.1:4222".into()),
            stream: Some("a.b".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.setting, "stream");
        let s: Settings = toml::from_str("nats = \"127.0.0.1:4222\"\nstream = \"S\"\n").unwrap();
        assert!(s.validate().unwrap().feed.nats.is_some());
    }

    #[test]
    fn file_keys_are_the_setting_names() {
        let s: Settings =
            toml::from_str("http = \"127.0.0.1:9000\"\nfeed_b = \"239.255.0.2:31002\"\n").unwrap();
        let c = s.validate().unwrap();
        assert_eq!(c.http.port(), 9000);
        assert!(c.feed.line_b.is_some());
        assert!(toml::from_str::<Settings>("bogus = 1").is_err());
    }
}
