//! Making messages: the market's next event or the recording's next row,
//! the directory, the opening auction, each message into the packet
//! builder and the book, and the run's summary.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::book::Listing;
use super::depth::Depth;
use super::market::Tick;
use super::record::RecordedEvent;
use super::recovery::RecoveryLoop;
use super::{SimSummary, Simulator, Source};
use crate::price::Price;
use crate::wire::{Locate, Message, PriceLevel, Side, StateQuote, StateTrade};

impl Simulator {
    /// One live message: the market's next event, or the recording's next row.
    /// False when the recording is over.
    pub(super) fn live_event(&mut self) -> bool {
        let ts = self.clock.ts();
        match &mut self.source {
            Source::Synthetic { market, .. } => {
                let (locate, tick) = market.next(ts, &self.book);
                self.publish_tick(usize::from(locate), ts, tick);
            }
            Source::Replay { rows, next } => {
                let Some(row) = rows.get(*next).cloned() else {
                    return false;
                };
                *next += 1;
                let locate = usize::from(row.locate);
                match row.event {
                    RecordedEvent::Directory {
                        symbol,
                        name,
                        prev_close,
                    } => {
                        self.publish_directory(locate, row.ts, symbol, name, prev_close);
                    }
                    RecordedEvent::Tick(tick) => self.publish_tick(locate, row.ts, tick),
                    RecordedEvent::Level { side, level } => {
                        self.publish_level(locate, row.ts, side, level)
                    }
                }
            }
        }
        true
    }

    /// The whole directory (synthetic market).
    pub(super) fn send_directory(&mut self) {
        let ts = self.clock.ts();
        let entries: Vec<(String, String, Price)> = match &self.source {
            Source::Synthetic { catalog, .. } => catalog
                .iter()
                .map(|l| (l.symbol.clone(), l.name.clone(), l.prev_close))
                .collect(),
            Source::Replay { .. } => return,
        };
        for (locate, (symbol, name, prev_close)) in entries.into_iter().enumerate() {
            self.publish_directory(locate, ts, symbol, name, prev_close);
        }
        self.flush();
    }

    /// The opening auction: every symbol's opening quote and print, at once.
    pub(super) fn opening_auction(&mut self, limit: u64) {
        let Source::Synthetic { market, .. } = &mut self.source else {
            return;
        };
        let n = market.len();
        for locate in 0..n {
            let ts = self.clock.ts();
            let Source::Synthetic { market, .. } = &mut self.source else {
                return;
            };
            let ticks = market.opening(locate, ts, &self.book);
            for tick in ticks {
                if self.sent >= limit {
                    self.flush();
                    return;
                }
                self.publish_tick(locate, ts, tick);
            }
        }
        self.flush();
    }

    /// Publishes a directory entry. A new symbol on a locate (or a first
    /// listing) starts a fresh listing; an unchanged repeat changes nothing.
    fn publish_directory(
        &mut self,
        locate: usize,
        ts: u64,
        symbol: String,
        name: String,
        prev_close: Price,
    ) {
        let msg = Message::Directory {
            locate: locate as Locate,
            ts,
            symbol: &symbol,
            name: &name,
            prev_close,
        };
        let out = &mut self.out;
        let seq = self.builder.push(&msg, &mut |p| out.emit(p));
        if let Some(r) = &mut self.recorder {
            r.row(seq, &symbol, &msg);
        }
        self.out.counters.messages.fetch_add(1, Ordering::Relaxed);
        if self.book.listings.len() <= locate {
            self.book.listings.resize(locate + 1, None);
        }
        match &mut self.book.listings[locate] {
            Some(l) if l.symbol == symbol => {
                l.name = name;
                l.prev_close = prev_close;
            }
            slot => {
                *slot = Some(Listing {
                    symbol,
                    name,
                    prev_close,
                    listed_seq: seq,
                    listed_ts: ts,
                    quote: None,
                    trade: None,
                    ts,
                    depth: Depth::default(),
                });
            }
        }
    }

    /// Publishes a quote or a trade of a listed locate; a synthetic quote
    /// brings its book's `'L'`s after it.
    fn publish_tick(&mut self, locate: usize, ts: u64, tick: Tick) {
        self.publish_tick_alone(locate, ts, tick);
        let depth = self.config.book_depth;
        let (
            Tick::Quote {
                bid,
                ask,
                bid_size,
                ask_size,
            },
            Source::Synthetic { market, .. },
            true,
        ) = (tick, &mut self.source, depth > 0)
        else {
            return;
        };
        let Some(l) = self.book.get(locate) else {
            return;
        };
        let levels = market.requote_book(&l.depth, [(bid, bid_size), (ask, ask_size)], depth);
        for (side, level) in levels {
            self.publish_level(locate, ts, side, level);
        }
    }

    /// Publishes one `'L'` of a listed locate.
    fn publish_level(&mut self, locate: usize, ts: u64, side: Side, level: PriceLevel) {
        let msg = Message::Level {
            locate: locate as Locate,
            ts,
            side,
            price: level.price,
            size: level.size,
            orders: level.orders,
        };
        let out = &mut self.out;
        let seq = self.builder.push(&msg, &mut |p| out.emit(p));
        self.out.counters.messages.fetch_add(1, Ordering::Relaxed);
        self.out
            .counters
            .book_messages
            .fetch_add(1, Ordering::Relaxed);
        self.live_sent_at = self.clock.elapsed();
        let Some(l) = self.book.get_mut(locate) else {
            return;
        };
        if let Some(r) = &mut self.recorder {
            r.row(seq, &l.symbol, &msg);
        }
        l.depth.apply(side, level);
        l.depth.seq = seq;
        l.depth.ts = ts;
    }

    /// Publishes a quote or a trade of a listed locate, and nothing else.
    fn publish_tick_alone(&mut self, locate: usize, ts: u64, tick: Tick) {
        let msg = match tick {
            Tick::Quote {
                bid,
                ask,
                bid_size,
                ask_size,
            } => Message::Quote {
                locate: locate as Locate,
                ts,
                bid,
                ask,
                bid_size,
                ask_size,
            },
            Tick::Trade {
                price,
                size,
                volume,
            } => Message::Trade {
                locate: locate as Locate,
                ts,
                price,
                size,
                volume,
            },
        };
        let out = &mut self.out;
        let seq = self.builder.push(&msg, &mut |p| out.emit(p));
        self.out.counters.messages.fetch_add(1, Ordering::Relaxed);
        self.live_sent_at = self.clock.elapsed();
        self.sent += 1;
        let Some(l) = self.book.get_mut(locate) else {
            return;
        };
        if let Some(r) = &mut self.recorder {
            r.row(seq, &l.symbol, &msg);
        }
        l.ts = ts;
        match tick {
            Tick::Quote {
                bid,
                ask,
                bid_size,
                ask_size,
            } => {
                l.quote = Some(StateQuote {
                    seq,
                    bid,
                    ask,
                    bid_size,
                    ask_size,
                });
            }
            Tick::Trade {
                price,
                size,
                volume,
            } => {
                l.trade = Some(StateTrade {
                    seq,
                    last: price,
                    last_size: size,
                    volume,
                });
            }
        }
    }

    pub(super) fn flush(&mut self) {
        let had = self.builder.pending() > 0;
        let out = &mut self.out;
        self.builder.flush(&mut |p| out.emit(p));
        if had {
            self.live_sent_at = self.clock.elapsed();
        }
    }

    pub(super) fn summary(&mut self, wall: Instant) -> SimSummary {
        let seconds = wall.elapsed().as_secs_f64();
        let messages = self.out.counters.messages.load(Ordering::Relaxed);
        SimSummary {
            session: self.builder.session().to_string(),
            messages,
            book_messages: self.out.counters.book_messages.load(Ordering::Relaxed),
            packets: self.out.counters.packets.load(Ordering::Relaxed)
                / self.out.lines.len() as u64,
            seconds,
            rate: if seconds > 0.0 {
                messages as f64 / seconds
            } else {
                0.0
            },
            next_seq: self.builder.next_seq(),
            quotes: self.book.listed().map(|(i, l)| l.final_quote(i)).collect(),
            recovery_next_seq: self.recovery.as_ref().map(RecoveryLoop::next_seq),
            record_error: self.recorder.as_mut().and_then(|r| r.finish().err()),
        }
    }
}
