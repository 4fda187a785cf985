//! The `tickrelay load` flags: which client, how many, which symbols, what
//! to ask of the server.

/// Which kind of client to open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LoadTransport {
    /// WebSocket `/v1/ws`, JSON text frames.
    Ws,
    /// WebSocket `/v1/ws`, subprotocol `tickrelay.msgpack`.
    WsMsgpack,
    /// Server-Sent Events `/v1/stream`.
    Sse,
    /// Long polling `/v1/poll`.
    Poll,
    /// Short polling `/v1/snapshot` with `If-None-Match`.
    Snapshot,
    /// WebSocket at `--nchan-path` + `A,B,…` (nchan's multiplexed subscriber,
    /// or the Node baseline): one message per quote.
    NchanWs,
    /// EventSource at `--nchan-path` + `A,B,…` (nchan): one event per quote.
    NchanSse,
}

impl LoadTransport {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            LoadTransport::Ws => "ws",
            LoadTransport::WsMsgpack => "ws-msgpack",
            LoadTransport::Sse => "sse",
            LoadTransport::Poll => "poll",
            LoadTransport::Snapshot => "snapshot",
            LoadTransport::NchanWs => "nchan-ws",
            LoadTransport::NchanSse => "nchan-sse",
        }
    }

    pub(super) fn is_nchan(self) -> bool {
        matches!(self, LoadTransport::NchanWs | LoadTransport::NchanSse)
    }
}

/// How each client picks its symbols.
#[derive(Clone, Debug, PartialEq)]
pub enum SymbolChoice {
    /// K distinct symbols drawn with Zipf weights over the directory order,
    /// which is the simulator's activity order: busy symbols are popular.
    Zipf,
    /// K distinct symbols drawn uniformly.
    Random,
    /// Every client takes this list.
    Fixed(Vec<String>),
    /// The `*` subscription (every symbol; WebSocket and SSE only).
    All,
}

pub(super) fn parse_choice(s: &str) -> Result<SymbolChoice, String> {
    match s.trim() {
        "zipf" => Ok(SymbolChoice::Zipf),
        "random" => Ok(SymbolChoice::Random),
        "*" | "all" => Ok(SymbolChoice::All),
        "" => Err("empty symbol list".into()),
        list => Ok(SymbolChoice::Fixed(
            list.split(',')
                .map(|s| s.trim().to_ascii_uppercase())
                .filter(|s| !s.is_empty())
                .collect(),
        )),
    }
}

/// `tickrelay load` flags.
#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Base URL of the server under load.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Client kind.
    #[arg(long, value_enum, default_value_t = LoadTransport::Ws)]
    pub transport: LoadTransport,
    /// Number of clients.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// Symbols per client (0 with ws: connect only, subscribe to nothing).
    #[arg(long, default_value_t = 10)]
    pub symbols_per_client: usize,
    /// Which symbols: `zipf` (weighted like the feed's activity), `random`
    /// (uniform), `*` (every symbol), or a comma-separated list every client takes.
    #[arg(long, default_value = "zipf", value_parser = parse_choice)]
    pub symbols: SymbolChoice,
    /// Zipf exponent of `--symbols zipf`.
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Symbol directory: the server's `/v1/symbols` (default), or `sim:N` for
    /// the simulator's first N tickers (servers without a directory, like nchan).
    #[arg(long)]
    pub directory: Option<String>,
    /// New connections per second during the ramp (0: all at once).
    #[arg(long, default_value_t = 5_000.0)]
    pub ramp: f64,
    /// Seconds to measure, after the ramp and the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds between the end of the ramp and the start of measurement.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Spread client sockets over this many source addresses 127.0.0.1,
    /// 127.0.0.2, … (each has its own ephemeral ports and per-address limit).
    #[arg(long, default_value_t = 1)]
    pub source_ips: u32,
    /// Connect and subscribe, then only drain the sockets: no decoding, no
    /// latency. For memory tests.
    #[arg(long)]
    pub idle: bool,
    /// Delivery mode asked of the relay: `conflate` or `every`.
    #[arg(long)]
    pub mode: Option<String>,
    /// Most updates per second per symbol asked of the relay.
    #[arg(long)]
    pub max_hz: Option<f64>,
    /// `batch_ms` asked of the relay (ws, sse, poll): changes gathered for
    /// up to this long into one frame.
    #[arg(long)]
    pub batch_ms: Option<u64>,
    /// Ask for deltas (ws, ws-msgpack, sse): after the snapshot, each quote
    /// carries only the fields that changed (docs/PROTOCOL.md, "Deltas").
    #[arg(long)]
    pub delta: bool,
    /// Offer permessage-deflate (ws, ws-msgpack) and inflate what the relay
    /// compresses: the bytes counted are those on the wire.
    #[arg(long)]
    pub deflate: bool,
    /// Subscribe each client to one chart instead of quotes (ws): the 1 s
    /// bars and the trades of its first symbol. Each trade and each bar
    /// sent counts as a delivery (a trade's latency from its exchange
    /// timestamp; bars have none).
    #[arg(long)]
    pub chart: bool,
    /// Depth of book (ws, ws-msgpack): each client also subscribes to the
    /// books of the first N of its symbols (`channel: "book"`).
    #[arg(long, default_value_t = 0)]
    pub books: usize,
    /// Levels a side of those books (1–50).
    #[arg(long, default_value_t = 10)]
    pub depth: usize,
    /// With `--books`: subscribe to the books only, not the quotes.
    #[arg(long)]
    pub books_only: bool,
    /// Short-polling interval per client (`snapshot`), ms.
    #[arg(long, default_value_t = 1_000)]
    pub poll_interval_ms: u64,
    /// Long-poll hold time asked of the server (`poll`), ms.
    #[arg(long, default_value_t = 10_000)]
    pub poll_timeout_ms: u64,
    /// Worker threads (default: one per core this process may run on).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Server process ids (comma-separated) whose CPU time and RSS to report.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Path prefix of nchan's subscriber location.
    #[arg(long, default_value = "/sub/")]
    pub nchan_path: String,
    /// Bearer token sent with every request and WebSocket handshake (the
    /// relay's shared `token`, or a user's JSON Web Token).
    #[arg(long, env = "TICKRELAY_LOAD_TOKEN")]
    pub token: Option<String>,
    /// Seed of the symbol choice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress output on stderr.
    #[arg(long)]
    pub no_progress: bool,
}
