//! Usage per user and UTC day, for the exchanges' monthly reports: how many
//! users of each class could see real-time or delayed data.
//!
//! Three parts:
//!
//! - [`Usage`], the in-memory recorder. A connection asks it once for its
//!   user's counters ([`Usage::user`], a lock and a map lookup at connect
//!   or request time), holds the `Arc<UserUsage>` and bumps relaxed
//!   atomics on the hot path ([`UserUsage::delivered`]): no lock, no hash
//!   lookup per delivered message.
//! - [`Store`], the embedded SQLite database (`usage_db`): one row per
//!   (UTC day, `sub`, class, real time or delayed), written by one task
//!   ([`spawn_flusher`]) every `usage_flush_ms` and once more on shutdown,
//!   each flush one transaction of upserts of what changed since the last.
//! - [`report`], which reads one or more databases (a fleet of relays) for
//!   a month: users by class × real time/delayed, and one row per user;
//!   `tickrelay usage` prints it as a table, JSON or CSV ([`UsageArgs`]).
//!
//! # Decisions
//!
//! - **Day boundary.** A row's day is the UTC day of the flush that wrote
//!   its counts ([`Store::flush_at`]). The flusher flushes at every UTC
//!   midnight besides its interval, recording that flush as the last
//!   millisecond of the day ending, so a day's row holds what happened in
//!   that day, give or take the few milliseconds the flush takes to run. A
//!   flush that runs later than that (by a whole flush interval: a stalled
//!   or suspended host; or [`Store::flush`] called directly) records what
//!   it holds under its own day. A row's first and last seen always lie within its day: a
//!   user connected over midnight is first seen at 00:00:00 on the new day
//!   and last seen at 23:59:59.999 on the old one, and their open
//!   connections count toward the new day's maximum.
//! - **Class or delay changing within a day** (a refreshed token with other
//!   entitlements): both are recorded. Counters are kept per (`sub`, class,
//!   delayed), so the user has a row per combination they were seen with;
//!   nothing is moved from one to the other.
//! - **Mixed within a month**, in the report: a user seen as both `pro`
//!   and `nonpro` counts once, as `pro`; both real time and delayed, once,
//!   as real time: exchanges charge for the higher entitlement. The
//!   per-user row says what else they were seen as (`seen_as`).
//! - **Symbols seen.** The tickers a user subscribed to (as subscribed:
//!   upper case, `*` for all), kept per user-day in a set touched only at
//!   subscribe time ([`UserUsage::saw_symbols`]), at most
//!   [`MAX_SYMBOLS_PER_DAY`] a day. The store keeps the day's set itself
//!   (`symbol_list`, sorted, space-separated; `symbols` is its size), and
//!   each flush unions into it, so a month's count in the report is the
//!   exact number of distinct tickers over its days and relays. A user
//!   still connected at a day boundary carries the day's set into the next
//!   day (the relay does not know which of them they have since dropped);
//!   one not connected starts the day empty. A `*` subscriber shows as
//!   `all` in the report.
//! - **Across relays**, the report merges by `sub`: a user seen on two
//!   relays counts once; their messages, bytes and requests add up, their
//!   most concurrent connections is the highest any one relay saw (the
//!   relays' peaks need not have been at the same time), first seen is the
//!   earliest, last seen the latest, days active the distinct days.
//! - **What a kill can lose**: at most the last flush interval
//!   (docs/RELIABILITY.md, "Usage records"). A flush that fails (disk full)
//!   puts its counts back to be written by the next one.

mod day;
mod recorder;
mod report;
mod store;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

pub use day::{Month, day_text, time_text};
pub use recorder::{ConnGuard, MAX_SYMBOLS_PER_DAY, Usage, UserUsage};
pub use report::{ByClass, Counts, Report, UsageArgs, UserRow, report, run};
pub use store::{FlushStats, Store, spawn_flusher};

/// The class of a user's license: exchanges price professional users'
/// real-time data higher than non-professionals'.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// A professional user.
    Pro,
    /// A non-professional user.
    Nonpro,
}

impl Class {
    /// `pro` or `nonpro`, as stored and reported.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Pro => "pro",
            Class::Nonpro => "nonpro",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Class {
    type Err = Error;

    fn from_str(s: &str) -> Result<Class, Error> {
        match s {
            "pro" => Ok(Class::Pro),
            "nonpro" => Ok(Class::Nonpro),
            other => Err(Error::Class(other.to_owned())),
        }
    }
}

/// What went wrong opening, writing or reading usage.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `--month` (or `?month=`) is not `YYYY-MM`.
    #[error("invalid month `{0}`: expected YYYY-MM, e.g. 2026-12")]
    Month(String),
    /// A class other than `pro` or `nonpro`.
    #[error("invalid class `{0}`: expected pro or nonpro")]
    Class(String),
    /// A database given to the report does not exist.
    #[error("usage database {}: no such file", .0.display())]
    Missing(PathBuf),
    /// A database that is not a tickrelay usage database, or of a newer
    /// schema than this build knows.
    #[error("usage database {}: {reason}", path.display())]
    NotUsage {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// SQLite failed on this file.
    #[error("usage database {}: {source}", path.display())]
    Sql {
        /// The file.
        path: PathBuf,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
}
