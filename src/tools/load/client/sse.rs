//! The Server-Sent Events client: `/v1/stream`, or nchan's EventSource.

use std::fmt::Write as _;

use bytes::BytesMut;
use http_body_util::BodyExt;

use super::{ClientEnd, Setup};
use crate::tools::load::args::LoadTransport;
use crate::tools::load::conn::{Conn, get, http_conn, short};
use crate::tools::load::scan::{Kind, json_field_u64};
use crate::tools::load::stats::Shared;

pub(super) async fn client<S: Conn>(
    shared: &Shared,
    id: usize,
    stream: S,
    symbols: &[String],
    setup: &mut Setup<'_>,
) -> ClientEnd {
    let args = &shared.args;
    let path = if args.transport == LoadTransport::NchanSse {
        format!("{}{}", args.nchan_path, symbols.join(","))
    } else {
        let mut p = String::from("/v1/stream");
        let mut sep = '?';
        if !symbols.is_empty() && symbols[0] != "*" {
            let _ = write!(p, "{sep}symbols={}", symbols.join(","));
            sep = '&';
        }
        if let Some(mode) = &args.mode {
            let _ = write!(p, "{sep}mode={mode}");
            sep = '&';
        }
        if let Some(hz) = args.max_hz {
            let _ = write!(p, "{sep}max_hz={hz}");
            sep = '&';
        }
        if let Some(ms) = args.batch_ms {
            let _ = write!(p, "{sep}batch_ms={ms}");
            sep = '&';
        }
        if args.delta {
            let _ = write!(p, "{sep}delta=1");
        }
        p
    };
    let mut sender = http_conn(stream).await?;
    let mut req = get(&shared.target, &path, None);
    req.headers_mut().insert(
        hyper::header::ACCEPT,
        hyper::header::HeaderValue::from_static("text/event-stream"),
    );
    shared.request(id);
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("sse: {}", short(&e.to_string())))?;
    if resp.status() != 200 {
        return Err(format!("sse: HTTP {}", resp.status().as_u16()));
    }
    if args.transport == LoadTransport::NchanSse {
        setup.ready();
    }
    let mut body = resp.into_body();
    let mut buf = BytesMut::new();
    let finder = memchr::memmem::Finder::new(b"\n\n");
    loop {
        let chunk = match body.frame().await {
            None => return Err("eof".into()),
            Some(Err(e)) => return Err(format!("error: {}", short(&e.to_string()))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
        };
        if shared.args.idle && setup.done {
            continue;
        }
        buf.extend_from_slice(&chunk);
        let mut ended = None;
        while let Some(end) = finder.find(&buf) {
            let event = buf.split_to(end + 2);
            if let Some(e) = sse_event(shared, id, &event, setup) {
                ended = Some(e);
            }
        }
        if let Some(e) = ended {
            return Err(e);
        }
    }
}

/// Handles one SSE event block; returns why the stream ends, if it does.
fn sse_event(shared: &Shared, id: usize, event: &[u8], setup: &mut Setup<'_>) -> Option<String> {
    let mut name: &[u8] = b"message";
    let mut has_data = false;
    for line in event.split(|&b| b == b'\n') {
        if let Some(n) = line.strip_prefix(b"event:") {
            name = n.trim_ascii();
        } else if line.starts_with(b"data:") {
            has_data = true;
        }
    }
    if !has_data {
        return None;
    }
    let kind = match name {
        b"tick" | b"message" => Kind::Ticks,
        b"snapshot" => {
            setup.ready();
            Kind::Snapshot
        }
        _ => Kind::Control,
    };
    if let Some(tap) = &shared.tap {
        tap.sse(id, event);
    }
    shared.json_frame(id, event.len(), event, kind);
    match name {
        b"error" => {
            let code = json_field_u64(event, b"\"close_code\":").unwrap_or(0);
            Some(format!("close {code}"))
        }
        b"shutdown" => Some("close shutdown".into()),
        _ => None,
    }
}
