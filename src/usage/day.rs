//! UTC days and months from Unix milliseconds, std only: the day a usage
//! row belongs to (`YYYY-MM-DD`), the month a report covers (`YYYY-MM`),
//! and timestamps shown as `YYYY-MM-DDTHH:MM:SSZ`.

use std::fmt;

use crate::usage::Error;

/// Milliseconds in a UTC day (no leap seconds in Unix time).
pub(crate) const DAY_MS: u64 = 86_400_000;

/// The UTC day (days since 1970-01-01) that `ms` falls in.
pub(crate) fn day_of(ms: u64) -> u64 {
    ms / DAY_MS
}

/// The first millisecond of UTC day `day`.
pub(crate) fn day_start_ms(day: u64) -> u64 {
    day * DAY_MS
}

/// UTC day `day` as `YYYY-MM-DD`, the `day` column of the store.
pub fn day_text(day: u64) -> String {
    let (y, m, d) = civil_from_days(day as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// `ms` as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds).
pub fn time_text(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A calendar month, as `tickrelay usage --month` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Month {
    year: u32,
    month: u32,
}

impl Month {
    /// Parses `YYYY-MM` (a four-digit year from 1970, a month 01–12).
    pub fn parse(text: &str) -> Result<Month, Error> {
        let bad = || Error::Month(text.to_owned());
        let b = text.as_bytes();
        if b.len() != 7
            || b[4] != b'-'
            || !b
                .iter()
                .enumerate()
                .all(|(i, c)| i == 4 || c.is_ascii_digit())
        {
            return Err(bad());
        }
        let year: u32 = text[..4].parse().map_err(|_| bad())?;
        let month: u32 = text[5..].parse().map_err(|_| bad())?;
        if year < 1970 || !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Month { year, month })
    }

    /// The month's first day, `YYYY-MM-01`: rows with `day >=` this.
    pub fn first_day(self) -> String {
        format!("{:04}-{:02}-01", self.year, self.month)
    }

    /// The next month's first day: rows with `day <` this.
    pub fn end_day(self) -> String {
        let (y, m) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        format!("{y:04}-{m:02}-01")
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_times_are_utc_calendar_text() {
        assert_eq!(day_text(0), "1970-01-01");
        // 2026-12-31T23:59:59.999Z and the millisecond after it.
        let last = 1_798_761_599_999;
        assert_eq!(day_text(day_of(last)), "2026-12-31");
        assert_eq!(day_text(day_of(last + 1)), "2027-01-01");
        assert_eq!(day_start_ms(day_of(last + 1)), last + 1);
        assert_eq!(time_text(last), "2026-12-31T23:59:59Z");
        assert_eq!(day_text(day_of(1_709_164_800_000)), "2024-02-29");
    }

    #[test]
    fn months_parse_strictly() {
        let m = Month::parse("2026-12").unwrap();
        assert_eq!(m.to_string(), "2026-12");
        assert_eq!(
            (m.first_day(), m.end_day()),
            ("2026-12-01".into(), "2027-01-01".into())
        );
        let m = Month::parse("2026-02").unwrap();
        assert_eq!(
            (m.first_day(), m.end_day()),
            ("2026-02-01".into(), "2026-03-01".into())
        );
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-12",
            "2026/12",
            "2026-12-01",
            "",
            "1969-12",
            "２０２６-12",
            "+026-12",
        ] {
            assert!(matches!(Month::parse(bad), Err(Error::Month(_))), "{bad}");
        }
    }
}
