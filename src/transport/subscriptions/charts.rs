//! A client's trades and bars subscriptions on its `Subscriptions`: what
//! they ask of the chart (`transport::chartstream`), as of where the client
//! reads (live, or a delayed user's cutoff), and when the hub wakes it.

use std::sync::Arc;

use super::Subscriptions;
use crate::table::Table;
use crate::table::chart::{Interval, LIVE};
use crate::transport::chartstream::{ChartFrame, ChartSubs, Since};
use crate::wire::Locate;

impl Subscriptions {
    /// Subscribes to the trades of listed `symbols` from `since` (history
    /// or a resume point), `queue` the most a client may fall behind;
    /// returns their first frames. Registered with the hub first, read
    /// second: a trade after the read is marked and follows.
    pub fn subscribe_trades(
        &mut self,
        symbols: &[(Arc<str>, Locate)],
        since: Since,
        queue: usize,
    ) -> Vec<ChartFrame> {
        self.subscribe_charts(symbols, |charts, s, l, table, (until, _)| {
            charts.subscribe_trades(s, (l, since), queue, table, until)
        })
    }

    /// Subscribes to the `interval` bars of listed `symbols` with `history`
    /// bars in their first frames (returned), which hold the position too.
    pub fn subscribe_bars(
        &mut self,
        symbols: &[(Arc<str>, Locate)],
        interval: Interval,
        history: usize,
    ) -> Vec<ChartFrame> {
        self.subscribe_charts(symbols, |charts, s, l, table, at| {
            charts.subscribe_bars(s, (l, interval, history), table, at)
        })
    }

    /// Holds each of `symbols` and subscribes it with `one`, given where
    /// this client reads the chart ([`Subscriptions::chart_at`]); then
    /// sets its clock. Returns the first frames.
    fn subscribe_charts(
        &mut self,
        symbols: &[(Arc<str>, Locate)],
        mut one: impl FnMut(&mut ChartSubs, &Arc<str>, Locate, &Table, (u64, u64)) -> ChartFrame,
    ) -> Vec<ChartFrame> {
        let table = self.hub.table().clone();
        let at = self.chart_at();
        let mut frames = Vec::with_capacity(symbols.len());
        for (s, l) in symbols {
            self.hold(s);
            frames.push(one(self.charts_mut(), s, *l, &table, at));
        }
        self.clock();
        frames
    }

    /// Where this client reads the chart: the exchange time it sees trades
    /// and bars before (`LIVE`, or its delayed cutoff's), and the feed
    /// position it may be told of there.
    fn chart_at(&self) -> (u64, u64) {
        let (seq, at) = self.snapshot_position();
        (self.hub.until_at(at), seq)
    }

    /// Asks the hub to wake this client on its clock: the feed's second
    /// for bars (a bar closes without a trade); a delayed client's cutoff
    /// for any chart subscription (trades become visible with time).
    fn clock(&self) {
        let delayed = self.hub.until_at(self.position().1) != LIVE;
        let charts = self.charts();
        let on = charts.has_bars() || (delayed && !charts.is_empty());
        if let Some(client) = self.client() {
            client.set_clocked(on);
        }
    }

    /// Ends the trades (`bars: false`) or bars (of `interval`, or every
    /// interval) subscriptions of `symbols`.
    pub fn unsubscribe_charts(
        &mut self,
        symbols: &[Arc<str>],
        bars: bool,
        interval: Option<Interval>,
    ) {
        for s in symbols {
            match bars {
                true => self.charts_mut().unsubscribe_bars(s, interval),
                false => self.charts_mut().unsubscribe_trades(s),
            };
        }
        self.clock();
        self.release(symbols);
    }

    /// Number of trades and bars subscriptions.
    pub fn chart_count(&self) -> usize {
        self.charts().len()
    }
}
