//! The usage database: SQLite in WAL mode, one row per (UTC day, `sub`,
//! class, delayed), written in one transaction of upserts per flush.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::usage::Error;
use crate::usage::day::{DAY_MS, day_of, day_text};
use crate::usage::recorder::{MAX_SYMBOLS_PER_DAY, Taken, Usage};

/// The schema version this build writes (`PRAGMA user_version`).
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// The one table. Times are Unix milliseconds; `symbol_list` is the day's
/// distinct tickers, sorted and space-separated, `symbols` their number.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage (
    day TEXT NOT NULL,
    sub TEXT NOT NULL,
    class TEXT NOT NULL,
    delayed INTEGER NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    max_connections INTEGER NOT NULL,
    symbols INTEGER NOT NULL,
    symbol_list TEXT NOT NULL,
    messages INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    PRIMARY KEY (day, sub, class, delayed)
) WITHOUT ROWID;
PRAGMA user_version = 1;
";

/// Counts add, the maximum takes the maximum, first seen the earliest, last
/// seen the latest; the ticker list, when given (`?13`), is already the
/// union with the row's.
const UPSERT: &str = "
INSERT INTO usage (day, sub, class, delayed, first_seen_ms, last_seen_ms,
    max_connections, symbols, symbol_list, messages, bytes, requests)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
ON CONFLICT (day, sub, class, delayed) DO UPDATE SET
    first_seen_ms = min(first_seen_ms, excluded.first_seen_ms),
    last_seen_ms = max(last_seen_ms, excluded.last_seen_ms),
    max_connections = max(max_connections, excluded.max_connections),
    symbols = CASE WHEN ?13 THEN excluded.symbols ELSE symbols END,
    symbol_list = CASE WHEN ?13 THEN excluded.symbol_list ELSE symbol_list END,
    messages = messages + excluded.messages,
    bytes = bytes + excluded.bytes,
    requests = requests + excluded.requests
";

const SELECT_SYMBOLS: &str =
    "SELECT symbol_list FROM usage WHERE day = ?1 AND sub = ?2 AND class = ?3 AND delayed = ?4";

/// The relay's usage database, open for writing. One per relay; one
/// flusher writes it.
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// What one flush wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushStats {
    /// The UTC day the rows were written under, `YYYY-MM-DD`.
    pub day: String,
    /// Rows inserted or updated.
    pub rows: usize,
}

fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |source| Error::Sql {
        path: path.to_owned(),
        source,
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens `path`, creating the database and its table if need be, in WAL
    /// mode with `synchronous=NORMAL` (a committed flush survives a kill of
    /// the relay; a power loss may lose the last ones).
    pub fn open(path: impl AsRef<Path>) -> Result<Store, Error> {
        let path = path.as_ref();
        let err = sql(path);
        let conn = Connection::open(path).map_err(&err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(&err)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(&err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::NotUsage {
                path: path.to_owned(),
                reason: format!("cannot use WAL mode (journal mode {mode})"),
            });
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(&err)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(&err)?;
        if version > SCHEMA_VERSION {
            return Err(Error::NotUsage {
                path: path.to_owned(),
                reason: format!(
                    "schema version {version} is newer than this build's {SCHEMA_VERSION}"
                ),
            });
        }
        conn.execute_batch(SCHEMA).map_err(&err)?;
        Ok(Store {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes what `usage` recorded since the last flush under today (UTC,
    /// on `usage`'s clock). Blocking: run it off the async threads.
    pub fn flush(&self, usage: &Usage) -> Result<FlushStats, Error> {
        self.flush_at(usage, usage.now_ms())
    }

    /// Writes what `usage` recorded since the last flush, as recorded at
    /// `at_ms` (Unix ms): under the UTC day of `at_ms`, in one transaction.
    /// On failure the counts go back into `usage` for the next flush.
    /// Blocking: run it off the async threads.
    pub fn flush_at(&self, usage: &Usage, at_ms: u64) -> Result<FlushStats, Error> {
        let day = day_text(day_of(at_ms));
        let taken = usage.take(at_ms);
        let rows = taken.len();
        if rows > 0 {
            let mut conn = self.conn.lock();
            if let Err(e) = write(&mut conn, &day, &taken) {
                drop(conn);
                usage.restore(taken);
                return Err(sql(&self.path)(e));
            }
        }
        usage.flushed(at_ms);
        Ok(FlushStats { day, rows })
    }
}

fn write(conn: &mut Connection, day: &str, taken: &[Taken]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut get = tx.prepare(SELECT_SYMBOLS)?;
        let mut put = tx.prepare(UPSERT)?;
        for Taken { user, delta: d } in taken {
            let key = params![day, user.sub(), user.class().as_str(), user.delayed()];
            let list = match &d.symbols {
                Some(names) => {
                    let old: Option<String> = get.query_row(key, |r| r.get(0)).optional()?;
                    Some(union(old.as_deref().unwrap_or(""), names))
                }
                None => None,
            };
            let (count, text) = list.unwrap_or((0, String::new()));
            put.execute(params![
                day,
                user.sub(),
                user.class().as_str(),
                user.delayed(),
                int(d.first_seen_ms),
                int(d.last_seen_ms),
                d.max_connections,
                int(count as u64),
                text,
                int(d.messages),
                int(d.bytes),
                int(d.requests),
                d.symbols.is_some(),
            ])?;
        }
    }
    tx.commit()
}

/// The stored list `old` with `names` added, at most
/// [`MAX_SYMBOLS_PER_DAY`]: (count, sorted space-separated text).
fn union(old: &str, names: &[Arc<str>]) -> (usize, String) {
    let mut set: BTreeSet<&str> = old.split(' ').filter(|s| !s.is_empty()).collect();
    for name in names {
        if set.len() >= MAX_SYMBOLS_PER_DAY {
            break;
        }
        set.insert(name);
    }
    let text = set.iter().copied().collect::<Vec<_>>().join(" ");
    (set.len(), text)
}

/// Flushes `usage` into `store` every `every` and at every UTC midnight,
/// each flush in [`tokio::task::spawn_blocking`]; on `cancel` (the relay's
/// shutdown, SIGTERM) flushes once more and ends. A failed flush is logged
/// and its counts go with the next one.
pub fn spawn_flusher(
    usage: Usage,
    store: Arc<Store>,
    every: Duration,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    let every = every.max(Duration::from_millis(1));
    let every_ms = every.as_millis().min(u128::from(u64::MAX)) as u64;
    tokio::spawn(async move {
        let mut next = Instant::now() + every;
        let mut last_midnight = 0;
        loop {
            let now = usage.now_ms();
            let mut midnight = (day_of(now) + 1) * DAY_MS;
            if midnight <= last_midnight {
                midnight += DAY_MS;
            }
            let to_midnight = Instant::now() + Duration::from_millis(midnight.saturating_sub(now));
            let at_midnight = to_midnight < next;
            tokio::select! {
                () = cancel.cancelled() => {
                    flush_blocking(&usage, &store, None).await;
                    return;
                }
                () = tokio::time::sleep_until(if at_midnight { to_midnight } else { next }) => {}
            }
            if at_midnight {
                // The day's last flush: what came until now belongs to the
                // day ending (unless the relay slept through it).
                last_midnight = midnight;
                let late = usage.now_ms().saturating_sub(midnight) >= every_ms;
                flush_blocking(&usage, &store, (!late).then_some(midnight - 1)).await;
            } else {
                flush_blocking(&usage, &store, None).await;
                next = Instant::now() + every;
            }
        }
    })
}

/// One flush on the blocking pool, at `at` or now; failures logged.
async fn flush_blocking(usage: &Usage, store: &Arc<Store>, at: Option<u64>) {
    let (u, s) = (usage.clone(), store.clone());
    let done = tokio::task::spawn_blocking(move || {
        let at = at.unwrap_or_else(|| u.now_ms());
        s.flush_at(&u, at)
    })
    .await;
    match done {
        Ok(Ok(stats)) => tracing::debug!(day = %stats.day, rows = stats.rows, "usage flushed"),
        Ok(Err(e)) => tracing::warn!(error = %e, "usage flush failed; its counts go with the next"),
        Err(e) => tracing::error!(error = %e, "usage flush panicked"),
    }
}
