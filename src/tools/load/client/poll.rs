//! The long-polling client: `/v1/poll`, each answer's cursor sent back as
//! `since`.

use std::fmt::Write as _;

use super::{Answer, ClientEnd, Setup};
use crate::tools::load::conn::{Conn, fetch, get, http_conn, short};
use crate::tools::load::stats::Shared;

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub(super) async fn client<S: Conn>(
    shared: &Shared,
    id: usize,
    stream: S,
    symbols: &[String],
    setup: &mut Setup<'_>,
) -> ClientEnd {
    let mut sender = http_conn(stream).await?;
    let list = symbols.join(",");
    let mut since: Option<String> = None;
    loop {
        let mut path = format!(
            "/v1/poll?symbols={list}&timeout_ms={}",
            shared.args.poll_timeout_ms
        );
        if let Some(s) = &since {
            let _ = write!(path, "&since={}", percent_encode(s));
        }
        if let Some(ms) = shared.args.batch_ms {
            let _ = write!(path, "&batch_ms={ms}");
        }
        shared.request(id);
        let (status, _, body) =
            fetch(&mut sender, get(&shared.target, &path, None), "poll").await?;
        if status != 200 {
            return Err(format!("poll: HTTP {status}"));
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| format!("poll: bad answer: {}", short(&e.to_string())))?;
        if let Some(tap) = &shared.tap {
            tap.quotes(id, answer.quotes.iter().map(|q| (q.symbol.as_str(), q.seq)));
        }
        let ts: Vec<u64> = answer.quotes.iter().map(|q| q.ts).collect();
        if since.is_none() {
            setup.ready();
            shared.answer(id, body.len(), &[], ts.len());
        } else {
            shared.answer(id, body.len(), &ts, 0);
        }
        since = Some(format!("{}:{}", answer.session, answer.seq));
    }
}
