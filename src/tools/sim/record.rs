//! Recorded sessions: every market message the simulator publishes, one CSV
//! row each (`--record`), and the reader that turns such a file back into
//! messages to publish (`--replay`). The columns are documented for other
//! tools in docs/FEED.md ("Recorded sessions").
//!
//! The reader checks the whole file before anything is sent, and a bad line
//! is an error naming the file and the line, never a panic.

use std::fmt::Write as _;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::market::Tick;
use crate::price::Price;
use crate::wire::{Locate, Message, PriceLevel, Side};

/// The header line of a recorded session.
pub const HEADER: &str = "ts,seq,type,locate,symbol,name,prev_close,bid,ask,bid_size,ask_size,price,size,volume,side,orders";
/// The header of recordings made before books: no `side` and `orders`
/// columns, and so no `L` rows. Still read.
const HEADER_NO_BOOK: &str =
    "ts,seq,type,locate,symbol,name,prev_close,bid,ask,bid_size,ask_size,price,size,volume";
const COLUMNS: usize = 16;
const COLUMNS_NO_BOOK: usize = 14;

/// Writes published messages as CSV rows.
pub(crate) struct Recorder {
    out: BufWriter<std::fs::File>,
    path: PathBuf,
    line: String,
    error: Option<io::Error>,
}

impl Recorder {
    /// Creates (or truncates) `path` and writes the header.
    pub(crate) fn create(path: &Path) -> io::Result<Recorder> {
        let file = std::fs::File::create(path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut out = BufWriter::new(file);
        writeln!(out, "{HEADER}")?;
        Ok(Recorder {
            out,
            path: path.to_path_buf(),
            line: String::with_capacity(128),
            error: None,
        })
    }

    /// Appends one published message with its sequence; `symbol` names its
    /// locate (for quotes and trades, whose messages carry only the locate).
    pub(crate) fn row(&mut self, seq: u64, symbol: &str, msg: &Message<'_>) {
        if self.error.is_some() {
            return;
        }
        let l = &mut self.line;
        l.clear();
        // Writing into a String cannot fail.
        let _ = match *msg {
            Message::Directory {
                locate,
                ts,
                symbol,
                name,
                prev_close,
            } => write!(
                l,
                "{ts},{seq},D,{locate},{symbol},{},{prev_close},,,,,,,,,",
                quoted(name)
            ),
            Message::Quote {
                locate,
                ts,
                bid,
                ask,
                bid_size,
                ask_size,
            } => write!(
                l,
                "{ts},{seq},Q,{locate},{symbol},,,{bid},{ask},{bid_size},{ask_size},,,,,"
            ),
            Message::Trade {
                locate,
                ts,
                price,
                size,
                volume,
            } => write!(
                l,
                "{ts},{seq},T,{locate},{symbol},,,,,,,{price},{size},{volume},,"
            ),
            Message::Level {
                locate,
                ts,
                side,
                price,
                size,
                orders,
            } => write!(
                l,
                "{ts},{seq},L,{locate},{symbol},,,,,,,{price},{size},,{},{orders}",
                side_name(side)
            ),
            // The recovery loop is derived from the feed; it is not recorded.
            Message::State { .. } | Message::Book { .. } => return,
        };
        l.push('\n');
        if let Err(e) = self.out.write_all(l.as_bytes()) {
            self.error = Some(e);
        }
    }

    /// Flushes the file; the first write error of the run, if any, naming the file.
    pub(crate) fn finish(&mut self) -> Result<(), String> {
        let flushed = self.out.flush();
        match self.error.take().map_or(flushed, Err) {
            Ok(()) => Ok(()),
            Err(e) => Err(format!("cannot record to {}: {e}", self.path.display())),
        }
    }
}

/// A name as a CSV cell: quoted (quotes doubled) only when it must be.
fn quoted(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", name.replace('"', "\"\"")).into()
    } else {
        name.into()
    }
}

/// One message read back from a recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// Exchange timestamp, ns since the Unix epoch.
    pub(crate) ts: u64,
    /// Locate code.
    pub(crate) locate: Locate,
    /// What it says.
    pub(crate) event: RecordedEvent,
}

/// The message of a [`Recorded`] row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RecordedEvent {
    /// A directory entry.
    Directory {
        /// Ticker.
        symbol: String,
        /// Company name.
        name: String,
        /// Previous close.
        prev_close: Price,
    },
    /// A quote or a trade.
    Tick(Tick),
    /// A book level.
    Level {
        /// Bid or ask.
        side: Side,
        /// Price, size (0 deletes) and orders.
        level: PriceLevel,
    },
}

/// A side as a recording writes it.
fn side_name(side: Side) -> &'static str {
    match side {
        Side::Bid => "bid",
        Side::Ask => "ask",
    }
}

/// Reads and checks a whole recording. Errors name the file and the line.
pub(crate) fn read(path: &Path) -> io::Result<Vec<Recorded>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
    parse(&text).map_err(|(line, why)| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} line {line}: {why}", path.display()),
        )
    })
}

/// Parses a recording's text; an error is the 1-based line and what is wrong.
pub(crate) fn parse(text: &str) -> Result<Vec<Recorded>, (usize, String)> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let columns = match lines.next() {
        Some((_, h)) if h.trim_end() == HEADER => COLUMNS,
        Some((_, h)) if h.trim_end() == HEADER_NO_BOOK => COLUMNS_NO_BOOK,
        Some((n, h)) => {
            return Err((n, format!("expected the header {HEADER:?}, found {h:?}")));
        }
        None => return Err((1, "empty file: no header".into())),
    };
    // The symbol each locate stands for, as the file's directory rows say.
    let mut listed: Vec<Option<String>> = Vec::new();
    let mut out = Vec::new();
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        out.push(parse_row(line, columns, &mut listed).map_err(|why| (n, why))?);
    }
    Ok(out)
}

fn parse_row(
    line: &str,
    columns: usize,
    listed: &mut Vec<Option<String>>,
) -> Result<Recorded, String> {
    let cells = split_cells(line)?;
    if cells.len() != columns {
        return Err(format!("{} columns, expected {columns}", cells.len()));
    }
    let cell = |i: usize| cells[i].as_str();
    let ts: u64 = number(cell(0), "ts")?;
    let locate: Locate = number(cell(3), "locate")?;
    let symbol = cell(4);
    let kind = cell(2);
    let known = listed.get(usize::from(locate)).cloned().flatten();
    let event = match kind {
        "D" => {
            if symbol.is_empty() || symbol.len() > 16 {
                return Err(format!("symbol {symbol:?} must be 1 to 16 bytes"));
            }
            let i = usize::from(locate);
            if listed.len() <= i {
                listed.resize(i + 1, None);
            }
            listed[i] = Some(symbol.to_string());
            RecordedEvent::Directory {
                symbol: symbol.to_string(),
                name: cell(5).to_string(),
                prev_close: price(cell(6), "prev_close")?,
            }
        }
        "L" if columns != COLUMNS => {
            return Err("an L row needs the header with the side and orders columns".into());
        }
        "Q" | "T" | "L" => {
            match known {
                None => {
                    return Err(format!(
                        "{kind} row for locate {locate} before any directory (D) row for it"
                    ));
                }
                Some(s) if s != symbol => {
                    return Err(format!(
                        "locate {locate} is {s} in the directory, not {symbol:?}"
                    ));
                }
                Some(_) => {}
            }
            if kind == "L" {
                let side = match cell(14) {
                    "bid" => Side::Bid,
                    "ask" => Side::Ask,
                    other => return Err(format!("side {other:?} is not bid or ask")),
                };
                let level = PriceLevel {
                    price: price(cell(11), "price")?,
                    size: number(cell(12), "size")?,
                    orders: number(cell(15), "orders")?,
                };
                return Ok(Recorded {
                    ts,
                    locate,
                    event: RecordedEvent::Level { side, level },
                });
            }
            RecordedEvent::Tick(if kind == "Q" {
                Tick::Quote {
                    bid: price(cell(7), "bid")?,
                    ask: price(cell(8), "ask")?,
                    bid_size: number(cell(9), "bid_size")?,
                    ask_size: number(cell(10), "ask_size")?,
                }
            } else {
                Tick::Trade {
                    price: price(cell(11), "price")?,
                    size: number(cell(12), "size")?,
                    volume: number(cell(13), "volume")?,
                }
            })
        }
        other => return Err(format!("type {other:?} is not D, Q, T or L")),
    };
    Ok(Recorded { ts, locate, event })
}

fn number<T: std::str::FromStr>(s: &str, column: &str) -> Result<T, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{column} {s:?} is not a number in range"))
}

fn price(s: &str, column: &str) -> Result<Price, String> {
    s.trim()
        .parse()
        .map_err(|e| format!("{column} {s:?} is not a price: {e}"))
}

/// Splits one CSV line into cells; a cell may be quoted (`""` is a quote).
fn split_cells(line: &str) -> Result<Vec<String>, String> {
    let mut cells = Vec::with_capacity(COLUMNS);
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    loop {
        let mut cell = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        cell.push('"');
                    }
                    Some('"') => break,
                    Some(c) => cell.push(c),
                    None => return Err("a quoted cell is not closed".into()),
                }
            }
            match chars.next() {
                None => {
                    cells.push(cell);
                    return Ok(cells);
                }
                Some(',') => {}
                Some(c) => return Err(format!("{c:?} after a closing quote")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        cells.push(cell);
                        return Ok(cells);
                    }
                    Some(',') => break,
                    Some(c) => cell.push(c),
                }
            }
        }
        cells.push(cell);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_through_the_reader() {
        let dir = std::env::temp_dir().join(format!("tickrelay-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rt.csv");
        let mut r = Recorder::create(&path).unwrap();
        let d = Message::Directory {
            locate: 3,
            ts: 10,
            symbol: "ABC",
            name: "A \"quoted\", Inc.",
            prev_close: Price(123_400),
        };
        let q = Message::Quote {
            locate: 3,
            ts: 11,
            bid: Price(123_300),
            ask: Price(123_500),
            bid_size: 300,
            ask_size: 100,
        };
        let t = Message::Trade {
            locate: 3,
            ts: 12,
            price: Price(123_500),
            size: 100,
            volume: 100,
        };
        let l = Message::Level {
            locate: 3,
            ts: 13,
            side: Side::Ask,
            price: Price(123_600),
            size: 400,
            orders: 3,
        };
        r.row(1, "ABC", &d);
        r.row(2, "ABC", &q);
        r.row(3, "ABC", &t);
        r.row(4, "ABC", &l);
        r.finish().unwrap();
        let got = read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            got,
            vec![
                Recorded {
                    ts: 10,
                    locate: 3,
                    event: RecordedEvent::Directory {
                        symbol: "ABC".into(),
                        name: "A \"quoted\", Inc.".into(),
                        prev_close: Price(123_400),
                    },
                },
                Recorded {
                    ts: 11,
                    locate: 3,
                    event: RecordedEvent::Tick(Tick::Quote {
                        bid: Price(123_300),
                        ask: Price(123_500),
                        bid_size: 300,
                        ask_size: 100,
                    }),
                },
                Recorded {
                    ts: 12,
                    locate: 3,
                    event: RecordedEvent::Tick(Tick::Trade {
                        price: Price(123_500),
                        size: 100,
                        volume: 100,
                    }),
                },
                Recorded {
                    ts: 13,
                    locate: 3,
                    event: RecordedEvent::Level {
                        side: Side::Ask,
                        level: PriceLevel {
                            price: Price(123_600),
                            size: 400,
                            orders: 3,
                        },
                    },
                },
            ]
        );
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        let d = "1,1,D,0,AAA,A Inc.,10.0000,,,,,,,";
        let cases = [
            ("", 1, "no header"),
            ("ts,seq\n", 1, "expected the header"),
            (
                &format!("{HEADER_NO_BOOK}\n{d}\n2,2,Q,0,AAA,,,9.99,10.01,100\n") as &str,
                3,
                "10 columns",
            ),
            (
                &format!("{HEADER_NO_BOOK}\n2,2,Q,0,AAA,,,9.99,10.01,100,100,,,\n"),
                2,
                "before any directory",
            ),
            (
                &format!("{HEADER_NO_BOOK}\n{d}\n2,2,Q,0,BBB,,,9.99,10.01,100,100,,,\n"),
                3,
                "not \"BBB\"",
            ),
            (
                &format!("{HEADER_NO_BOOK}\n{d}\n2,2,Q,0,AAA,,,9.9x,10.01,100,100,,,\n"),
                3,
                "bid \"9.9x\"",
            ),
            (
                &format!("{HEADER_NO_BOOK}\n{d}\n2,2,T,0,AAA,,,,,,,10.01,-5,7\n"),
                3,
                "size \"-5\"",
            ),
            (
                &format!("{HEADER_NO_BOOK}\n{d}\n2,2,X,0,AAA,,,,,,,,,\n"),
                3,
                "not D, Q, T or L",
            ),
            (
                &format!("{HEADER_NO_BOOK}\nx,1,D,0,AAA,A,1,,,,,,,\n"),
                2,
                "ts \"x\"",
            ),
            (
                &format!("{HEADER_NO_BOOK}\n1,1,D,70000,AAA,A,1,,,,,,,\n"),
                2,
                "locate \"70000\"",
            ),
            (
                &format!("{HEADER_NO_BOOK}\n1,1,D,0,AAA,\"A,1,,,,,,,\n"),
                2,
                "not closed",
            ),
        ];
        for (text, line, want) in cases {
            let (n, why) = parse(text).expect_err(text);
            assert_eq!(n, line, "{text:?}: {why}");
            assert!(why.contains(want), "{text:?}: {why:?} lacks {want:?}");
        }
        // Book rows need the header with `side` and `orders`.
        let l = "2,2,L,0,AAA,,,,,,,10.0100,100,,ask,1";
        let d16 = "1,1,D,0,AAA,A Inc.,10.0000,,,,,,,,,";
        assert!(parse(&format!("{HEADER}\n{d16}\n{l}\n")).is_ok());
        let (n, why) =
            parse(&format!("{HEADER}\n{d16}\n{}\n", l.replace("ask", "up"))).unwrap_err();
        assert_eq!((n, why.contains("side \"up\"")), (3, true), "{why}");
        let (n, why) = parse(&format!(
            "{HEADER_NO_BOOK}\n{d}\n2,2,L,0,AAA,,,,,,,10.0100,100,\n"
        ))
        .unwrap_err();
        assert_eq!((n, why.contains("side and orders")), (3, true), "{why}");
        let err = read(Path::new("/nonexistent/session.csv")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/session.csv"));
    }
}
