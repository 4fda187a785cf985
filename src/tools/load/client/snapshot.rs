//! The short-polling client: `/v1/snapshot` every `--poll-interval-ms`
//! with `If-None-Match`; a quote counts as delivered when its `seq` moved.

use std::collections::HashMap;
use std::time::Duration;

use super::{Answer, ClientEnd, Setup};
use crate::tools::load::conn::{Conn, fetch, get, http_conn, short};
use crate::tools::load::stats::Shared;

pub(super) async fn client<S: Conn>(
    shared: &Shared,
    id: usize,
    stream: S,
    symbols: &[String],
    setup: &mut Setup<'_>,
) -> ClientEnd {
    let mut sender = http_conn(stream).await?;
    let path = format!("/v1/snapshot?symbols={}", symbols.join(","));
    let period = Duration::from_millis(shared.args.poll_interval_ms.max(1));
    // Spread the clients' polls over the period.
    let phase = period.mul_f64((id as f64 * 0.618_033_988_75) % 1.0);
    let mut next = tokio::time::Instant::now() + phase;
    let mut etag: Option<String> = None;
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut fresh = Vec::new();
    loop {
        shared.request(id);
        let (status, tag, body) = fetch(
            &mut sender,
            get(&shared.target, &path, etag.as_deref()),
            "snapshot",
        )
        .await?;
        match status {
            304 => shared.answer(id, body.len(), &[], 0),
            200 => {
                let answer: Answer = serde_json::from_slice(&body)
                    .map_err(|e| format!("snapshot: bad answer: {}", short(&e.to_string())))?;
                if let Some(tap) = &shared.tap {
                    tap.quotes(id, answer.quotes.iter().map(|q| (q.symbol.as_str(), q.seq)));
                }
                fresh.clear();
                let mut initial = 0;
                for q in &answer.quotes {
                    match seen.get_mut(&q.symbol) {
                        Some(last) if *last < q.seq => {
                            *last = q.seq;
                            fresh.push(q.ts);
                        }
                        Some(_) => {}
                        None => {
                            seen.insert(q.symbol.clone(), q.seq);
                            initial += 1;
                        }
                    }
                }
                shared.answer(id, body.len(), &fresh, initial);
                etag = tag;
                setup.ready();
            }
            other => return Err(format!("snapshot: HTTP {other}")),
        }
        next += period;
        let now = tokio::time::Instant::now();
        if next < now {
            // Late (the server or this process is saturated): skip, don't burst.
            next = now;
        }
        tokio::time::sleep_until(next).await;
    }
}
