//! The client's operations on an open WebSocket: subscribe (with the
//! user's entitlements: denied symbols named, `*` as every symbol the user
//! may see, caps), unsubscribe, ping, and `auth` (a fresh token of the same
//! user, dropping what it no longer allows).

use super::chartops::ChartAsk;
use super::*;
use crate::transport::bookstream::{self, depth_of};
use crate::transport::chart::interval_of;

impl Conn {
    pub(super) fn op(&mut self, op: ClientOp) -> Flow {
        match op {
            ClientOp::Ping => self.send(&ServerFrame::Pong),
            ClientOp::Auth { token } => self.auth(&token),
            ClientOp::Subscribe {
                symbols,
                mode,
                max_hz,
                since,
                batch_ms,
                delta,
                channel,
                depth,
                interval,
                history,
            } => {
                if !self.allow_op() {
                    crate::api::refused(self.state(), Limit::OpsPerSecond);
                    let ops = self.state().config.policy.ops_per_second;
                    return self.error(
                        ErrorCode::RateLimited,
                        &format!("more than {ops} operations per second (setting ops_per_second)"),
                    );
                }
                match channel.as_deref() {
                    None | Some("quotes") => {}
                    Some("book") => return self.subscribe_book(symbols, depth.as_ref()),
                    Some(c @ ("trades" | "bars")) => {
                        let ask = ChartAsk {
                            bars: c == "bars",
                            interval: interval.as_deref(),
                            history,
                            since: since.as_ref(),
                        };
                        return self.subscribe_chart(symbols, ask);
                    }
                    Some(other) => return self.bad_channel(other),
                }
                let max_hz = self.identity().rights.cap_hz(max_hz);
                let opts = match sub_options(mode.as_deref(), max_hz) {
                    Ok(o) => o.with_delta(delta),
                    Err(e) => return self.error(e.code, &e.message),
                };
                let batch = match batch_window(batch_ms) {
                    Ok(b) => b,
                    Err(e) => return self.error(e.code, &e.message),
                };
                if batch_ms.is_some() {
                    self.direct.lock().subs.set_batch(batch);
                }
                // A quote resume point is `SESSION:SEQ`.
                let since = since.as_ref().and_then(|v| v.as_str()).map(str::to_owned);
                self.subscribe(symbols, opts, since)
            }
            ClientOp::Unsubscribe {
                symbols,
                channel,
                interval,
            } => {
                if !self.allow_op() {
                    crate::api::refused(self.state(), Limit::OpsPerSecond);
                    return self.error(
                        ErrorCode::RateLimited,
                        "too many operations per second (setting ops_per_second)",
                    );
                }
                let list: Vec<Arc<str>> = symbols
                    .iter()
                    .map(|s| Arc::from(s.to_ascii_uppercase().as_str()))
                    .collect();
                match channel.as_deref() {
                    None | Some("quotes") => self.direct.lock().subs.unsubscribe(&list),
                    Some("book") => self.direct.lock().subs.unsubscribe_books(&list),
                    Some("trades") => self
                        .direct
                        .lock()
                        .subs
                        .unsubscribe_charts(&list, false, None),
                    Some("bars") => {
                        let interval = match interval.as_deref().map(|i| interval_of(Some(i))) {
                            Some(Err(e)) => return self.error(e.code, &e.message),
                            Some(Ok(i)) => Some(i),
                            None => None,
                        };
                        self.direct
                            .lock()
                            .subs
                            .unsubscribe_charts(&list, true, interval)
                    }
                    Some(other) => return self.bad_channel(other),
                }
                Flow::Continue
            }
        }
    }

    /// Who the client is now.
    pub(super) fn identity(&self) -> Arc<Identity> {
        match self.direct.user() {
            Some(u) => u.identity(),
            None => self.state().anonymous.clone(),
        }
    }

    /// `{"op":"auth"}`: a fresh token of the same user. Its rights replace
    /// the old ones; symbols no longer allowed are dropped and named.
    fn auth(&mut self, token: &str) -> Flow {
        let state = self.direct.state.clone();
        let Some(user) = self.direct.user().cloned() else {
            return self.error(
                ErrorCode::BadToken,
                "this connection has no per-user token to replace",
            );
        };
        let fresh = match identify(&state, Some(token)) {
            Ok(id) => id,
            Err(e) => return self.error(e.code, &e.message),
        };
        if fresh.sub.as_deref() != Some(user.slot().sub().as_ref()) {
            return self.error(ErrorCode::BadToken, "a token of another user");
        }
        if fresh.rights.delay_ms != user.identity().rights.delay_ms {
            // The connection reads one view of the market for its life.
            return self.error(
                ErrorCode::NotEntitled,
                "a token with another delay: open a new connection with it",
            );
        }
        let expires_ms = fresh.expires_ms;
        user.replace(fresh.clone());
        let dropped: Vec<Arc<str>> = {
            let mut w = self.direct.lock();
            let gone: Vec<Arc<str>> = w
                .subs
                .symbols()
                .into_iter()
                .filter(|s| entitled(&fresh, Channel::Quotes, [s.as_ref()]).is_err())
                .collect();
            w.subs.unsubscribe(&gone);
            let books: Vec<Arc<str>> = w
                .subs
                .book_names()
                .into_iter()
                .filter(|s| entitled(&fresh, Channel::Book, [s.as_ref()]).is_err())
                .collect();
            w.subs.unsubscribe_books(&books);
            gone.into_iter().chain(books).collect()
        };
        if !dropped.is_empty() {
            self.send(&ServerFrame::Unsubscribed {
                symbols: &dropped,
                reason: ErrorCode::NotEntitled.as_str(),
            });
        }
        self.send(&ServerFrame::Authorized { expires_ms })
    }

    fn subscribe(&mut self, symbols: Vec<String>, opts: SubOptions, since: Option<String>) -> Flow {
        let state = self.direct.state.clone();
        let policy = &state.config.policy;
        let identity = self.identity();
        let rights = &identity.rights;
        if let Err(e) = entitled(&identity, Channel::Quotes, []) {
            return self.error(e.code, &e.message);
        }
        let max_symbols = rights.symbol_cap(policy.max_symbols);
        let since = resume_point(since.as_deref(), state.table.session());
        let wildcard = symbols.iter().any(|s| s == "*");
        if wildcard && !rights.all_symbols() {
            // `*` for a user of some symbols: those listed now.
            if !policy.allow_wildcard {
                crate::api::refused(&state, Limit::AllowWildcard);
                return self.error(
                    ErrorCode::WildcardNotAllowed,
                    "`*` subscriptions are off (setting allow_wildcard)",
                );
            }
            let allowed: Vec<Arc<str>> = allowed_locates(&state.table, &identity)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|l| state.table.info(l).map(|i| i.symbol.clone()))
                .collect();
            let mut w = self.direct.lock();
            let (seq, quotes) = w.subs.subscribe(&allowed, opts, since);
            self.subscribed(&mut w, &allowed, &[], &[], seq, &quotes);
            if let Some(u) = self.direct.user() {
                u.saw_symbols(&allowed);
            }
            return Flow::Continue;
        }
        if wildcard {
            if !policy.allow_wildcard {
                crate::api::refused(&state, Limit::AllowWildcard);
                return self.error(
                    ErrorCode::WildcardNotAllowed,
                    "`*` subscriptions are off (setting allow_wildcard)",
                );
            }
            // Held across subscribe and snapshot: no tick overtakes the snapshot.
            let mut w = self.direct.lock();
            let (seq, quotes) = w.subs.subscribe_all(opts, since);
            let all: [Arc<str>; 1] = [Arc::from("*")];
            self.subscribed(&mut w, &all, &[], &[], seq, &quotes);
            if let Some(u) = self.direct.user() {
                u.saw_symbols(&all);
            }
            return Flow::Continue;
        }
        if state.table.symbol_count() == 0 {
            let e = ApiError::not_ready();
            return self.error(e.code, &e.message);
        }
        let names = match parse_symbol_list(&symbols, max_symbols) {
            Ok(n) => n,
            Err(e) => return self.error(e.code, &e.message),
        };
        let mut known: Vec<Arc<str>> = Vec::new();
        let mut unknown = Vec::new();
        let mut denied = Vec::new();
        for n in names {
            if !rights.symbol(&n) {
                denied.push(n);
                continue;
            }
            match state.table.locate(&n).and_then(|l| state.table.info(l)) {
                Some(info) => known.push(info.symbol.clone()),
                None => unknown.push(n),
            }
        }
        let mut w = self.direct.lock();
        let new = known.iter().filter(|s| !w.subs.contains(s)).count();
        if w.subs.len() + new > max_symbols {
            drop(w);
            crate::api::refused(&state, Limit::MaxSymbols);
            return self.error(
                ErrorCode::TooManySymbols,
                &format!(
                    "at most {max_symbols} symbols per connection (setting or claim max_symbols)"
                ),
            );
        }
        let (seq, quotes) = w.subs.subscribe(&known, opts, since);
        self.subscribed(&mut w, &known, &unknown, &denied, seq, &quotes);
        if let Some(u) = self.direct.user() {
            u.saw_symbols(&known);
        }
        Flow::Continue
    }

    /// Writes `subscribed` and the snapshot.
    fn subscribed(
        &self,
        w: &mut WriteState,
        symbols: &[Arc<str>],
        unknown: &[String],
        denied: &[String],
        seq: u64,
        quotes: &[Arc<Encoded>],
    ) {
        let d = &self.direct;
        let mut out = Vec::new();
        self.control_into(
            w,
            &mut out,
            &ServerFrame::Subscribed {
                channel: None,
                symbols,
                unknown,
                denied,
            },
        );
        let session = d.state.table.session();
        let at = out.len();
        out.extend_from_slice(&match self.format {
            Format::Json => envelope::ws_snapshot_json(seq, session.as_str(), quotes),
            Format::Msgpack => envelope::ws_snapshot_msgpack(seq, session.as_str(), quotes),
        });
        let len = out.len() - at;
        d.seal_message(w, &mut out, at);
        let batch = Batch {
            seq,
            quotes: quotes.to_vec(),
            ..Default::default()
        };
        d.count(&batch, len);
        d.write(w, &out);
    }

    pub(super) fn bad_channel(&mut self, channel: &str) -> Flow {
        let shown: String = channel.chars().take(20).collect();
        self.error(
            ErrorCode::BadRequest,
            &format!("channel `{shown}` is not `quotes`, `book`, `trades` or `bars`"),
        )
    }

    /// `{"op":"subscribe","channel":"book",…}`: the books of `symbols` to
    /// `depth`, each a snapshot now and diffs from then on
    /// (`transport::bookstream`).
    fn subscribe_book(&mut self, symbols: Vec<String>, depth: Option<&serde_json::Value>) -> Flow {
        let state = self.direct.state.clone();
        let identity = self.identity();
        let depth = match depth_of(depth) {
            Ok(d) => d,
            Err(e) => return self.error(e.code, &e.message),
        };
        let max_symbols = identity.rights.symbol_cap(state.config.policy.max_symbols);
        let names = match parse_symbol_list(&symbols, max_symbols) {
            Ok(n) => n,
            Err(e) => return self.error(e.code, &e.message),
        };
        if names.iter().any(|n| n == "*") {
            return self.error(ErrorCode::BadSymbol, "a book is one symbol's: name them");
        }
        if let Err(e) = entitled(&identity, Channel::Book, names.iter().map(String::as_str)) {
            return self.error(e.code, &e.message);
        }
        if state.table.symbol_count() == 0 {
            let e = ApiError::not_ready();
            return self.error(e.code, &e.message);
        }
        let (known, unknown): (Vec<String>, Vec<String>) = names
            .into_iter()
            .partition(|n| state.table.locate(n).is_some());
        let known: Vec<Arc<str>> = known.iter().map(|n| Arc::from(n.as_str())).collect();
        let mut w = self.direct.lock();
        let new = known.iter().filter(|s| !w.subs.books_contain(s)).count();
        if w.subs.book_count() + new > max_symbols {
            drop(w);
            crate::api::refused(&state, Limit::MaxSymbols);
            return self.error(
                ErrorCode::TooManySymbols,
                &format!(
                    "at most {max_symbols} books per connection (setting or claim max_symbols)"
                ),
            );
        }
        let frames = w.subs.subscribe_books(&known, depth);
        let mut out = Vec::new();
        self.control_into(
            &mut w,
            &mut out,
            &ServerFrame::Subscribed {
                channel: Some("book"),
                symbols: &known,
                unknown: &unknown,
                denied: &[],
            },
        );
        let start = out.len();
        for f in &frames {
            let at = out.len();
            bookstream::ws_into(&mut out, self.format, f);
            self.direct.seal_message(&mut w, &mut out, at);
        }
        self.direct.count_books(frames.len(), out.len() - start);
        self.direct.write(&mut w, &out);
        Flow::Continue
    }
}
