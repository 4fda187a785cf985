//! The monthly report: one or more usage databases (a fleet of relays)
//! merged per `sub`; users by class × real time/delayed and one row per
//! user, as a table, JSON or CSV. `tickrelay usage` prints it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::usage::day::{Month, time_text};
use crate::usage::store::SCHEMA_VERSION;
use crate::usage::{Class, Error};

/// The wildcard subscription, shown as `all` symbols.
const ALL: &str = "*";

/// One month of usage across the databases read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The month, `YYYY-MM`.
    pub month: String,
    /// The databases read, as given.
    pub databases: Vec<PathBuf>,
    /// Distinct users (`sub`s) seen in the month.
    pub users_total: u64,
    /// Users by class × real time/delayed, each counted once (a user seen
    /// as more than one counts as the highest: `pro` over `nonpro`, real
    /// time over delayed).
    pub by_class: ByClass,
    /// One row per user, sorted by `sub`.
    pub users: Vec<UserRow>,
}

/// Users of each class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ByClass {
    /// Professional users.
    pub pro: Counts,
    /// Non-professional users.
    pub nonpro: Counts,
}

/// Users of one class by real time or delayed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Users who could see real-time data.
    pub real_time: u64,
    /// Users who saw only delayed data.
    pub delayed: u64,
}

/// One user's month, merged across days and databases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRow {
    /// The user (the token's `sub`).
    pub sub: String,
    /// The class counted: `pro` if ever seen as `pro`.
    pub class: Class,
    /// Counted as delayed: only if never seen with real-time data.
    pub delayed: bool,
    /// Every class/data the user was seen as (`pro/real_time`,
    /// `nonpro/delayed`, …), sorted.
    pub seen_as: Vec<String>,
    /// Distinct UTC days active.
    pub days: u64,
    /// First seen in the month, Unix ms.
    pub first_seen_ms: u64,
    /// Last seen in the month, Unix ms.
    pub last_seen_ms: u64,
    /// First seen, `YYYY-MM-DDTHH:MM:SSZ`.
    pub first_seen: String,
    /// Last seen, `YYYY-MM-DDTHH:MM:SSZ`.
    pub last_seen: String,
    /// Most concurrent connections on any one relay and day.
    pub max_connections: u64,
    /// Distinct tickers subscribed to in the month (`*` not counted).
    pub symbols: u64,
    /// Whether the user subscribed to all symbols (`*`).
    pub all_symbols: bool,
    /// Messages delivered.
    pub messages: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Requests answered.
    pub requests: u64,
}

/// A user's rows as they are merged.
#[derive(Default)]
struct Acc {
    profiles: BTreeSet<(Class, bool)>,
    days: BTreeSet<String>,
    first: Option<u64>,
    last: u64,
    max_connections: u64,
    symbols: BTreeSet<String>,
    messages: u64,
    bytes: u64,
    requests: u64,
}

fn uint(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Reads `month` (`YYYY-MM`) from each database in `dbs` (read-only; the
/// relay may be writing them: a report sees what was flushed) and merges
/// them per `sub`: a user seen on two relays counts once. One database is
/// what the relay's admin route reads. Blocking.
pub fn report(dbs: &[PathBuf], month: &str) -> Result<Report, Error> {
    let m = Month::parse(month)?;
    let mut users: BTreeMap<String, Acc> = BTreeMap::new();
    for db in dbs {
        read(db, m, &mut users)?;
    }
    let mut by_class = ByClass::default();
    let rows: Vec<UserRow> = users
        .into_iter()
        .map(|(sub, a)| {
            let class = if a.profiles.iter().any(|(c, _)| *c == Class::Pro) {
                Class::Pro
            } else {
                Class::Nonpro
            };
            let delayed = a.profiles.iter().all(|(_, d)| *d);
            let counts = match class {
                Class::Pro => &mut by_class.pro,
                Class::Nonpro => &mut by_class.nonpro,
            };
            if delayed {
                counts.delayed += 1;
            } else {
                counts.real_time += 1;
            }
            let mut seen_as: Vec<String> = a
                .profiles
                .iter()
                .map(|(c, d)| format!("{c}/{}", data(*d)))
                .collect();
            seen_as.sort();
            let first = a.first.unwrap_or(0);
            UserRow {
                sub,
                class,
                delayed,
                seen_as,
                days: a.days.len() as u64,
                first_seen_ms: first,
                last_seen_ms: a.last,
                first_seen: time_text(first),
                last_seen: time_text(a.last),
                max_connections: a.max_connections,
                symbols: a.symbols.iter().filter(|s| *s != ALL).count() as u64,
                all_symbols: a.symbols.contains(ALL),
                messages: a.messages,
                bytes: a.bytes,
                requests: a.requests,
            }
        })
        .collect();
    Ok(Report {
        month: m.to_string(),
        databases: dbs.to_vec(),
        users_total: rows.len() as u64,
        by_class,
        users: rows,
    })
}

fn data(delayed: bool) -> &'static str {
    if delayed { "delayed" } else { "real_time" }
}

/// Adds one database's rows of month `m` into `users`.
fn read(path: &Path, m: Month, users: &mut BTreeMap<String, Acc>) -> Result<(), Error> {
    if !path.is_file() {
        return Err(Error::Missing(path.to_owned()));
    }
    let err = |source| Error::Sql {
        path: path.to_owned(),
        source,
    };
    let not_usage = |reason: String| Error::NotUsage {
        path: path.to_owned(),
        reason,
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
                not_usage("not an SQLite database".into())
            }
            e => err(e),
        })?;
    let has_table: bool = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'usage'",
            [],
            |r| r.get::<_, i64>(0).map(|n| n > 0),
        )
        .map_err(err)?;
    if !has_table {
        return Err(not_usage(
            "not a tickrelay usage database (no usage table)".into(),
        ));
    }
    if version > SCHEMA_VERSION {
        return Err(not_usage(format!(
            "schema version {version} is newer than this build's {SCHEMA_VERSION}"
        )));
    }
    let mut stmt = conn
        .prepare(
            "SELECT day, sub, class, delayed, first_seen_ms, last_seen_ms, max_connections,
                    symbol_list, messages, bytes, requests
             FROM usage WHERE day >= ?1 AND day < ?2",
        )
        .map_err(err)?;
    let mut rows = stmt.query([m.first_day(), m.end_day()]).map_err(err)?;
    while let Some(r) = rows.next().map_err(err)? {
        let class: String = r.get(2).map_err(err)?;
        let class: Class = class.parse().map_err(|e: Error| not_usage(e.to_string()))?;
        let sub: String = r.get(1).map_err(err)?;
        let a = users.entry(sub).or_default();
        a.days.insert(r.get(0).map_err(err)?);
        a.profiles
            .insert((class, r.get::<_, i64>(3).map_err(err)? != 0));
        let first = uint(r.get(4).map_err(err)?);
        a.first = Some(a.first.map_or(first, |f| f.min(first)));
        a.last = a.last.max(uint(r.get(5).map_err(err)?));
        a.max_connections = a.max_connections.max(uint(r.get(6).map_err(err)?));
        let list: String = r.get(7).map_err(err)?;
        a.symbols
            .extend(list.split(' ').filter(|s| !s.is_empty()).map(str::to_owned));
        a.messages = a.messages.saturating_add(uint(r.get(8).map_err(err)?));
        a.bytes = a.bytes.saturating_add(uint(r.get(9).map_err(err)?));
        a.requests = a.requests.saturating_add(uint(r.get(10).map_err(err)?));
    }
    Ok(())
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The per-user rows as CSV (RFC 4180, a header line first); the counts
    /// by class are these rows grouped by `class` and `data`.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "sub,class,data,seen_as,days,first_seen,last_seen,max_connections,symbols,all_symbols,messages,bytes,requests\n",
        );
        for u in &self.users {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{},{},{}",
                csv_field(&u.sub),
                u.class,
                data(u.delayed),
                csv_field(&u.seen_as.join(";")),
                u.days,
                u.first_seen,
                u.last_seen,
                u.max_connections,
                u.symbols,
                u.all_symbols,
                u.messages,
                u.bytes,
                u.requests
            );
        }
        out
    }

    /// The report as text: users by class × real time/delayed, then one
    /// line per user.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let dbs: Vec<String> = self
            .databases
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let _ = writeln!(
            out,
            "usage {} from {} database{}: {}\n",
            self.month,
            dbs.len(),
            if dbs.len() == 1 { "" } else { "s" },
            dbs.join(", ")
        );
        let c = &self.by_class;
        let line = |name: &str, n: Counts| {
            vec![
                name.to_owned(),
                n.real_time.to_string(),
                n.delayed.to_string(),
                (n.real_time + n.delayed).to_string(),
            ]
        };
        let total = Counts {
            real_time: c.pro.real_time + c.nonpro.real_time,
            delayed: c.pro.delayed + c.nonpro.delayed,
        };
        out.push_str(&table(
            &["users", "real time", "delayed", "total"],
            &[
                line("pro", c.pro),
                line("nonpro", c.nonpro),
                line("total", total),
            ],
        ));
        out.push('\n');
        if self.users.is_empty() {
            out.push_str("no users seen\n");
            return out;
        }
        let rows: Vec<Vec<String>> = self
            .users
            .iter()
            .map(|u| {
                let others: Vec<&str> = u
                    .seen_as
                    .iter()
                    .map(String::as_str)
                    .filter(|s| *s != format!("{}/{}", u.class, data(u.delayed)))
                    .collect();
                vec![
                    shown(&u.sub),
                    u.class.to_string(),
                    if u.delayed { "delayed" } else { "real time" }.to_owned(),
                    u.days.to_string(),
                    u.first_seen.clone(),
                    u.last_seen.clone(),
                    u.max_connections.to_string(),
                    if u.all_symbols {
                        "all".to_owned()
                    } else {
                        u.symbols.to_string()
                    },
                    u.messages.to_string(),
                    u.bytes.to_string(),
                    u.requests.to_string(),
                    others.join(" "),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "sub",
                "class",
                "data",
                "days",
                "first seen",
                "last seen",
                "max conns",
                "symbols",
                "messages",
                "bytes",
                "requests",
                "also seen as",
            ],
            &rows,
        ));
        out
    }
}

/// A CSV field, quoted when it must be.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// A `sub` for a terminal: control characters escaped.
fn shown(s: &str) -> String {
    if s.chars().any(char::is_control) {
        s.escape_debug().to_string()
    } else {
        s.to_owned()
    }
}

/// Columns padded to their widest cell; numbers (and `all` symbols)
/// right-aligned.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let numeric: Vec<bool> = (0..head.len())
        .map(|i| {
            !rows.is_empty()
                && rows.iter().all(|r| {
                    r[i] == "all" || !r[i].is_empty() && r[i].bytes().all(|b| b.is_ascii_digit())
                })
        })
        .collect();
    let mut out = String::new();
    let cells = head.iter().map(|h| (*h).to_owned());
    for line in std::iter::once(cells.collect::<Vec<_>>()).chain(rows.iter().cloned()) {
        let mut text = String::new();
        for (i, cell) in line.iter().enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let pad = width[i] - cell.chars().count();
            if numeric[i] {
                text.push_str(&" ".repeat(pad));
                text.push_str(cell);
            } else {
                text.push_str(cell);
                text.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// `tickrelay usage`: the month's report from one or more databases.
#[derive(Debug, Clone, clap::Args)]
pub struct UsageArgs {
    /// A usage database (`usage_db` of a relay); repeat for a fleet: a user
    /// seen on several relays counts once.
    #[arg(long = "db", value_name = "FILE", required = true)]
    pub db: Vec<PathBuf>,
    /// The month, YYYY-MM (UTC days).
    #[arg(long, value_name = "YYYY-MM")]
    pub month: String,
    /// Print JSON.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print the per-user rows as CSV.
    #[arg(long)]
    pub csv: bool,
}

/// Runs `tickrelay usage`: prints the report on stdout.
pub fn run(args: &UsageArgs) -> anyhow::Result<()> {
    let r = report(&args.db, &args.month)?;
    let text = if args.json {
        r.to_json() + "\n"
    } else if args.csv {
        r.to_csv()
    } else {
        r.to_text()
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}
