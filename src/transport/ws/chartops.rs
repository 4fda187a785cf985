//! The chart and the tape on an open WebSocket: `subscribe` and its first
//! frames for the `trades` and `bars` channels (`transport::chartstream`).

use super::*;
use crate::table::chart::Interval;
use crate::transport::chart::interval_of;
use crate::transport::chartstream::{Since, history_of, since_of};

/// What a `trades` or `bars` subscribe asks for, beside its symbols.
pub(super) struct ChartAsk<'a> {
    /// `bars` (true) or `trades`.
    pub(super) bars: bool,
    pub(super) interval: Option<&'a str>,
    pub(super) history: Option<u64>,
    pub(super) since: Option<&'a serde_json::Value>,
}

impl Conn {
    /// `{"op":"subscribe","channel":"trades"|"bars",…}`: for each symbol
    /// the user may see, its first frame (history and position), then what
    /// is newer as it comes; symbols outside the user's claims are named in
    /// `subscribed.denied` and get nothing.
    pub(super) fn subscribe_chart(&mut self, symbols: Vec<String>, ask: ChartAsk<'_>) -> Flow {
        let state = self.direct.state.clone();
        let identity = self.identity();
        let channel = if ask.bars {
            Channel::Bars
        } else {
            Channel::Trades
        };
        if let Err(e) = entitled(&identity, channel, []) {
            return self.error(e.code, &e.message);
        }
        let (interval, since) = match chart_params(&state, &ask) {
            Ok(p) => p,
            Err(e) => return self.error(e.code, &e.message),
        };
        let max_symbols = identity.rights.symbol_cap(state.config.policy.max_symbols);
        let names = match parse_symbol_list(&symbols, max_symbols) {
            Ok(n) => n,
            Err(e) => return self.error(e.code, &e.message),
        };
        if names.iter().any(|n| n == "*") {
            return self.error(
                ErrorCode::BadSymbol,
                "trades and bars are one symbol's: name them",
            );
        }
        if state.table.symbol_count() == 0 {
            let e = ApiError::not_ready();
            return self.error(e.code, &e.message);
        }
        let (mut known, mut unknown, mut denied) = (Vec::new(), Vec::new(), Vec::new());
        for n in names {
            if entitled(&identity, channel, [n.as_str()]).is_err() {
                denied.push(n);
                continue;
            }
            match state
                .table
                .locate(&n)
                .and_then(|l| Some((l, state.table.info(l)?)))
            {
                Some((l, info)) => known.push((info.symbol.clone(), l)),
                None => unknown.push(n),
            }
        }
        let mut w = self.direct.lock();
        if w.subs.chart_count() + known.len() > max_symbols {
            drop(w);
            crate::api::refused(&state, Limit::MaxSymbols);
            return self.error(
                ErrorCode::TooManySymbols,
                &format!(
                    "at most {max_symbols} trades and bars subscriptions per connection (setting or claim max_symbols)"
                ),
            );
        }
        let frames = match since {
            Some(since) => {
                let queue = state.config.policy.every_queue;
                w.subs.subscribe_trades(&known, since, queue)
            }
            None => {
                let history = ask.history.unwrap_or(0) as usize;
                w.subs.subscribe_bars(&known, interval, history)
            }
        };
        let names: Vec<Arc<str>> = known.into_iter().map(|(n, _)| n).collect();
        let mut out = Vec::new();
        self.control_into(
            &mut w,
            &mut out,
            &ServerFrame::Subscribed {
                channel: Some(channel.as_str()),
                symbols: &names,
                unknown: &unknown,
                denied: &denied,
            },
        );
        let before = out.len();
        for f in &frames {
            let at = out.len();
            f.ws_into(&mut out, self.format);
            self.direct.seal_message(&mut w, &mut out, at);
        }
        self.direct.count_charts(&frames, out.len() - before);
        self.direct.write(&mut w, &out);
        Flow::Continue
    }
}

/// The interval (bars) and the start (`Some` for trades) of `ask`, checked:
/// `history` at most what is kept, `since` a trade sequence.
fn chart_params(
    state: &AppState,
    ask: &ChartAsk<'_>,
) -> Result<(Interval, Option<Since>), ApiError> {
    let limits = state.table.chart().limits();
    if ask.bars {
        let interval = interval_of(ask.interval)?;
        history_of(ask.history, interval.kept(&limits), "bars")?;
        return Ok((interval, None));
    }
    let history = history_of(ask.history, limits.trades, "trades")?;
    let since = match ask.since {
        None | Some(serde_json::Value::Null) => Since::History(history),
        Some(serde_json::Value::String(s)) => since_of(s, state.table.session().as_str())?,
        Some(other) => match other.as_u64() {
            Some(seq) => Since::Seq(seq),
            None => since_of(&other.to_string(), "")?,
        },
    };
    Ok((Interval::M1, Some(since)))
}
