//! Users and entitlements against the real relay: every door (snapshot,
//! symbols, long poll, SSE, WebSocket) asks the same entitlement, every bad
//! token is refused with its code on every transport, a user's connections
//! are capped across transports, a refreshed token narrows what a
//! WebSocket gets, an expired token ends the stream, an operator can
//! disconnect a user, and no token ever reaches the relay's log.
//!
//! Tokens are minted by the real `tickrelay token` command (and, for the
//! kinds it refuses to make, signed here with the same library).

use crate::support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::ws::{CLOSE, Strict, TEXT, masked};
use support::{FeedAddr, FeedWriter, Relay, get_with, scratch, tickrelay_bin};
use tickrelay::auth::{Claims, Rights, mint_hs256};

const SECRET: &str = "a-test-secret-of-more-than-32-bytes!!";

/// The relay with per-user tokens, its feed listing AAPL, AMZN, MSFT and
/// IBM with one quote each.
struct World {
    relay: Relay,
    feed: FeedWriter,
    secret: PathBuf,
}

impl World {
    fn start(extra: &[&str]) -> World {
        let dir = scratch(&format!("users-{}", support::unique_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let group = FeedAddr::unique();
        let s = secret.to_str().unwrap().to_owned();
        let a = group.arg();
        let mut args = vec![
            "serve",
            "--http",
            "127.0.0.1:0",
            "--interface",
            "127.0.0.1",
            "--feed-a",
            &a,
            "--jwt-secret-file",
            &s,
            "--admin-token",
            "the-operators-admin-token",
        ];
        args.extend_from_slice(extra);
        // The debug log: the test that no token reaches it reads it all.
        let relay = Relay::start(&args, &[("RUST_LOG", "debug")]).unwrap_or_else(|e| panic!("{e}"));
        let mut feed = FeedWriter::new(group, "USERS");
        feed.list(&["AAPL", "AMZN", "MSFT", "IBM"]);
        let seq = feed.send(&[
            FeedWriter::quote_msg(0, 1_000_000),
            FeedWriter::quote_msg(1, 2_000_000),
            FeedWriter::quote_msg(2, 3_000_000),
            FeedWriter::quote_msg(3, 4_000_000),
        ]);
        let w = World {
            relay,
            feed,
            secret,
        };
        let admin = w.token("probe", &["*"], &[]);
        support::poll_until(support::DEADLINE, "the quotes applied", || {
            let r = w.get("/v1/snapshot", &admin);
            (r.status == 200 && r.json::<Value>()["seq"].as_u64() >= Some(seq)).then_some(())
        });
        w
    }

    /// `tickrelay token --secret-file … --sub SUB --symbols … EXTRA`.
    fn token(&self, sub: &str, symbols: &[&str], extra: &[&str]) -> String {
        let out = Command::new(tickrelay_bin())
            .args(["token", "--secret-file"])
            .arg(&self.secret)
            .args(["--sub", sub, "--symbols", &symbols.join(",")])
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tickrelay token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn get(&self, path: &str, token: &str) -> support::Response {
        let auth = format!("Bearer {token}");
        get_with(self.relay.addr, path, &[("Authorization", &auth)])
    }

    fn addr(&self) -> SocketAddr {
        self.relay.addr
    }
}

fn now_s() -> u64 {
    tickrelay::clock::now_ms() / 1000
}

fn claims(sub: &str, exp: u64) -> Claims {
    Claims {
        sub: sub.into(),
        exp,
        nbf: None,
        iat: None,
        iss: None,
        aud: None,
        tickrelay: Rights::default(),
    }
}

fn error_code(r: &support::Response) -> String {
    r.json::<Value>()["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The first `n` SSE events of `path` (name, data), or the HTTP error.
fn sse(addr: SocketAddr, path: &str, n: usize) -> Result<Vec<(String, Value)>, (u16, String)> {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(support::DEADLINE)).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    sse_events(BufReader::new(tcp), n)
}

/// The SSE response read from `r`: its events (up to `n`), or its status
/// and body when it is refused.
fn sse_events(
    mut r: BufReader<TcpStream>,
    n: usize,
) -> Result<Vec<(String, Value)>, (u16, String)> {
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code: u16 = status.split(' ').nth(1).unwrap().parse().unwrap();
    if code != 200 {
        let mut rest = String::new();
        let _ = r.read_to_string(&mut rest);
        let body = rest.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        return Err((code, body));
    }
    let mut events = Vec::new();
    let (mut name, mut data) = (String::new(), String::new());
    let mut line = String::new();
    while events.len() < n {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let l = line.trim_end();
        if let Some(v) = l.strip_prefix("event: ") {
            name = v.to_owned();
        } else if let Some(v) = l.strip_prefix("data: ") {
            data = v.to_owned();
        } else if l.is_empty() && !name.is_empty() {
            events.push((
                std::mem::take(&mut name),
                serde_json::from_str(&data).unwrap_or(Value::Null),
            ));
        }
    }
    Ok(events)
}

/// The symbols of a snapshot or tick body's quotes.
fn symbols_of(v: &Value) -> Vec<String> {
    let mut s: Vec<String> = v["quotes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| q["symbol"].as_str().unwrap().to_owned())
        .collect();
    s.sort();
    s
}

/// A WebSocket's text frames as JSON, past pings, until `pred` holds.
fn ws_until(ws: &mut Strict, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let f = ws
            .frame()
            .unwrap_or_else(|| panic!("EOF waiting for {what}"));
        if f.op == 0x1 {
            let v: Value = serde_json::from_slice(&f.payload).unwrap();
            if pred(&v) {
                return v;
            }
        }
        assert_ne!(f.op, 0x8, "closed waiting for {what}: {:?}", f.close_code());
    }
}

fn ws_send(ws: &mut Strict, v: Value) {
    ws.send(&masked(TEXT, v.to_string().as_bytes()));
}

#[test]
fn every_bad_token_is_refused_with_its_code_on_every_transport() {
    let w = World::start(&["--jwt-issuer", "broker", "--jwt-audience", "relay"]);
    let good = Claims {
        iss: Some("broker".into()),
        aud: Some("relay".into()),
        ..claims("alice", now_s() + 600)
    };
    let sign = |c: &Claims| mint_hs256(SECRET.as_bytes(), c).unwrap();
    let b64 = |s: &str| {
        use std::fmt::Write as _;
        // Base64url without padding.
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in s.as_bytes().chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, x)| acc | (u32::from(*x) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                let _ = write!(out, "{}", A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    };
    let payload = serde_json::to_string(&good).unwrap();
    let kinds: Vec<(&str, Option<String>, &str)> = vec![
        ("no token", None, "unauthorized"),
        (
            "bad signature",
            Some(mint_hs256(b"another-secret-of-more-than-32-bytes", &good).unwrap()),
            "bad_token",
        ),
        (
            "alg none",
            Some(format!(
                "{}.{}.",
                b64(r#"{"alg":"none","typ":"JWT"}"#),
                b64(&payload)
            )),
            "bad_token",
        ),
        (
            "wrong iss",
            Some(sign(&Claims {
                iss: Some("someone".into()),
                ..good.clone()
            })),
            "bad_token",
        ),
        (
            "wrong aud",
            Some(sign(&Claims {
                aud: Some("other".into()),
                ..good.clone()
            })),
            "bad_token",
        ),
        (
            "expired",
            Some(sign(&Claims {
                exp: now_s() - 5,
                ..good.clone()
            })),
            "token_expired",
        ),
        (
            "not yet valid",
            Some(sign(&Claims {
                nbf: Some(now_s() + 600),
                ..good.clone()
            })),
            "bad_token",
        ),
        (
            "no exp",
            Some(format!(
                "{}.{}.{}",
                b64(r#"{"alg":"HS256","typ":"JWT"}"#),
                b64(r#"{"sub":"alice"}"#),
                b64("x")
            )),
            "bad_token",
        ),
    ];
    for (kind, token, code) in &kinds {
        let q = token
            .as_deref()
            .map(|t| format!("token={t}"))
            .unwrap_or_default();
        for path in [
            format!("/v1/snapshot?{q}"),
            format!("/v1/symbols?{q}"),
            format!("/v1/poll?symbols=AAPL&{q}"),
        ] {
            let r = support::get(w.addr(), &path);
            assert_eq!(r.status, 401, "{kind}: {path}");
            assert_eq!(error_code(&r), *code, "{kind}: {path}");
        }
        match sse(w.addr(), &format!("/v1/stream?symbols=AAPL&{q}"), 1) {
            Err((status, body)) => {
                assert_eq!(status, 401, "{kind}: sse");
                assert!(body.contains(code), "{kind}: sse: {body}");
            }
            Ok(e) => panic!("{kind}: the stream opened: {e:?}"),
        }
        let mut ws = Strict::connect(w.addr(), &format!("?{q}"));
        let (close, reason) = ws.until_close();
        assert_eq!(close, 4001, "{kind}: ws");
        assert!(reason.starts_with(code), "{kind}: ws reason {reason}");
        ws.send(&masked(CLOSE, &4001u16.to_be_bytes()));
        ws.expect_fin_at_once(kind);
    }
    // The good token opens every door.
    let t = sign(&good);
    assert_eq!(w.get("/v1/snapshot?symbols=AAPL", &t).status, 200);
    // A user's token is not the admin token.
    let r = w.get("/v1/admin/connections", &t);
    assert_eq!((r.status, error_code(&r).as_str()), (401, "unauthorized"));
}

#[test]
fn a_user_of_a_star_cannot_get_msft_through_any_door() {
    let w = World::start(&[]);
    let t = w.token("alice", &["A*"], &[]);
    // Snapshot: by name, one symbol, and all of them.
    let r = w.get("/v1/snapshot?symbols=AAPL,MSFT", &t);
    assert_eq!((r.status, error_code(&r).as_str()), (403, "not_entitled"));
    assert!(
        r.text().contains("MSFT") && !r.text().contains("AAPL,"),
        "{}",
        r.text()
    );
    let r = w.get("/v1/snapshot/MSFT", &t);
    assert_eq!((r.status, error_code(&r).as_str()), (403, "not_entitled"));
    for path in ["/v1/snapshot", "/v1/snapshot?symbols=*"] {
        let r = w.get(path, &t);
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(symbols_of(&r.json()), ["AAPL", "AMZN"], "{path}");
    }
    let dir: Value = w.get("/v1/symbols", &t).json();
    let listed: Vec<&str> = dir["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["symbol"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["AAPL", "AMZN"]);
    // Long poll.
    let r = w.get("/v1/poll?symbols=MSFT", &t);
    assert_eq!((r.status, error_code(&r).as_str()), (403, "not_entitled"));
    let r = w.get("/v1/poll", &t);
    assert_eq!(symbols_of(&r.json()), ["AAPL", "AMZN"]);
    // SSE, by name and by `*` (and with no symbols).
    let err = sse(w.addr(), &format!("/v1/stream?symbols=MSFT&token={t}"), 1).unwrap_err();
    assert_eq!(err.0, 403);
    assert!(err.1.contains("not_entitled"), "{}", err.1);
    for q in ["symbols=*&", ""] {
        let events = sse(w.addr(), &format!("/v1/stream?{q}token={t}"), 1).unwrap();
        assert_eq!(events[0].0, "snapshot");
        assert_eq!(symbols_of(&events[0].1), ["AAPL", "AMZN"], "{q}");
    }
    // WebSocket: MSFT is denied by name; `*` is what alice may see; then
    // a change of every symbol reaches her only for A*.
    let mut ws = Strict::connect(w.addr(), &format!("?token={t}"));
    ws_send(
        &mut ws,
        serde_json::json!({"op":"subscribe","symbols":["MSFT","AAPL"]}),
    );
    let sub = ws_until(&mut ws, "subscribed", |v| v["type"] == "subscribed");
    assert_eq!(sub["symbols"], serde_json::json!(["AAPL"]));
    assert_eq!(sub["denied"], serde_json::json!(["MSFT"]));
    ws_send(
        &mut ws,
        serde_json::json!({"op":"subscribe","symbols":["*"]}),
    );
    let sub = ws_until(&mut ws, "subscribed *", |v| v["type"] == "subscribed");
    assert_eq!(sub["symbols"], serde_json::json!(["AAPL", "AMZN"]));
    let mut feed = w.feed;
    let last = feed.send(&[
        FeedWriter::quote_msg(2, 3_000_100),
        FeedWriter::quote_msg(3, 4_000_100),
        FeedWriter::quote_msg(0, 1_000_100),
    ]);
    // The AAPL change comes last in the feed: when it is here, anything
    // MSFT or IBM would have been too.
    let mut seen = Vec::new();
    loop {
        let v = ws_until(&mut ws, "ticks", |v| {
            v["type"] == "ticks" || v["type"] == "snapshot"
        });
        seen.extend(symbols_of(&v));
        if v["seq"].as_u64() >= Some(last) {
            break;
        }
    }
    assert!(seen.iter().all(|s| s.starts_with('A')), "{seen:?}");
    assert!(seen.contains(&"AAPL".to_owned()));
}

#[test]
fn a_users_connections_are_capped_across_transports_and_an_operator_can_end_them() {
    let w = World::start(&[]);
    let t = w.token("carol", &["*"], &["--max-connections", "2"]);
    let mut ws = Strict::connect(w.addr(), &format!("?token={t}"));
    ws_send(
        &mut ws,
        serde_json::json!({"op":"subscribe","symbols":["IBM"]}),
    );
    ws_until(&mut ws, "subscribed", |v| v["type"] == "subscribed");
    // The second connection: an SSE stream, held open on its own thread.
    let addr = w.addr();
    let sse_path = format!("/v1/stream?symbols=AAPL&token={t}");
    // Read until the stream ends (the operator's disconnect): a `feed` event
    // on a busy machine must not end it early.
    let held = std::thread::spawn(move || sse(addr, &sse_path, usize::MAX));
    let admin = [("Authorization", "Bearer the-operators-admin-token")];
    // Both listed with their symbols: both reachable by the operator.
    support::poll_until(support::DEADLINE, "two connections listed", || {
        let r = get_with(w.addr(), "/v1/admin/connections", &admin);
        let list = r.json::<Value>()["connections"].as_array().cloned()?;
        (list.len() == 2
            && list
                .iter()
                .all(|c| c["symbols"].as_array().is_some_and(|s| !s.is_empty())))
        .then_some(())
    });
    // A third, on any transport, is refused.
    let mut third = Strict::connect(w.addr(), &format!("?token={t}"));
    assert_eq!(third.until_close().0, 4009);
    let r = w.get("/v1/poll?symbols=AAPL&since=USERS:1000000", &t);
    assert_eq!((r.status, error_code(&r).as_str()), (429, "limit_exceeded"));
    let list = get_with(w.addr(), "/v1/admin/connections", &admin).json::<Value>();
    let ws_row = list["connections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["transport"] == "ws")
        .cloned()
        .unwrap();
    assert_eq!(ws_row["sub"], "carol");
    assert_eq!(ws_row["symbols"], serde_json::json!(["IBM"]));
    // The operator ends carol's connections: 4003 on both.
    let r = post(w.addr(), "/v1/admin/disconnect?sub=carol", &admin);
    assert!(r.contains("\"disconnected\":2"), "{r}\n{list}");
    let (code, reason) = ws.until_close();
    assert_eq!(code, 4003, "{reason}");
    assert!(reason.starts_with("disconnected"), "{reason}");
    let events = held.join().unwrap().unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.0, "error");
    assert_eq!(last.1["code"], "disconnected");
    assert_eq!(last.1["close_code"], 4003);
    // And a slot is free again.
    support::poll_until(support::DEADLINE, "the slots freed", || {
        let r = get_with(w.addr(), "/v1/admin/connections", &admin);
        r.json::<Value>()["connections"]
            .as_array()
            .is_some_and(|l| l.is_empty())
            .then_some(())
    });
}

#[test]
fn a_stream_asked_for_on_a_kept_alive_connection_is_listed_and_can_be_ended() {
    let w = World::start(&[]);
    let t = w.token("frank", &["*"], &[]);
    let mut tcp = TcpStream::connect(w.addr()).unwrap();
    tcp.set_read_timeout(Some(support::DEADLINE)).unwrap();
    let mut r = BufReader::new(tcp.try_clone().unwrap());
    // A snapshot first, read to its end: the connection stays open, and
    // the stream asked for next on it is served through hyper.
    let auth = format!("Authorization: Bearer {t}\r\n");
    tcp.write_all(
        format!("GET /v1/snapshot?symbols=AAPL HTTP/1.1\r\nHost: x\r\n{auth}\r\n").as_bytes(),
    )
    .unwrap();
    let mut len = None;
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.trim_end().is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = Some(v.trim().parse::<usize>().unwrap());
        }
    }
    let mut body = vec![0; len.expect("a snapshot of known length")];
    r.read_exact(&mut body).unwrap();
    assert!(String::from_utf8_lossy(&body).contains("AAPL"));
    tcp.write_all(
        format!("GET /v1/stream?symbols=AAPL HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{auth}\r\n")
            .as_bytes(),
    )
    .unwrap();
    let held = std::thread::spawn(move || sse_events(r, usize::MAX));
    let admin = [("Authorization", "Bearer the-operators-admin-token")];
    support::poll_until(support::DEADLINE, "the stream listed with AAPL", || {
        let r = get_with(w.addr(), "/v1/admin/connections", &admin);
        let list = r.json::<Value>()["connections"].as_array().cloned()?;
        (list.len() == 1
            && list[0]["sub"] == "frank"
            && list[0]["transport"] == "sse"
            && list[0]["symbols"] == serde_json::json!(["AAPL"]))
        .then_some(())
    });
    let r = post(w.addr(), "/v1/admin/disconnect?sub=frank", &admin);
    assert!(r.contains("\"disconnected\":1"), "{r}");
    let events = held.join().unwrap().unwrap();
    assert_eq!(events.first().unwrap().0, "snapshot");
    let last = events.last().unwrap();
    assert_eq!(last.0, "error");
    assert_eq!(last.1["code"], "disconnected");
    assert_eq!(last.1["close_code"], 4003);
}

fn post(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(support::DEADLINE)).unwrap();
    let mut req =
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = tcp.read_to_string(&mut out);
    out
}

#[test]
fn a_refreshed_token_narrows_the_subscription_and_an_expired_one_ends_it() {
    let w = World::start(&[]);
    let wide = w.token("dave", &["A*", "MSFT"], &[]);
    let mut ws = Strict::connect(w.addr(), &format!("?token={wide}"));
    ws_send(
        &mut ws,
        serde_json::json!({"op":"subscribe","symbols":["AAPL","MSFT"]}),
    );
    let sub = ws_until(&mut ws, "subscribed", |v| v["type"] == "subscribed");
    assert_eq!(sub["symbols"], serde_json::json!(["AAPL", "MSFT"]));
    // A token of another user is refused, and changes nothing.
    let other = w.token("eve", &["*"], &[]);
    ws_send(&mut ws, serde_json::json!({"op":"auth","token": other}));
    let e = ws_until(&mut ws, "error", |v| v["type"] == "error");
    assert_eq!(e["code"], "bad_token");
    // dave's narrower token: MSFT is dropped, and said so.
    let narrow = w.token("dave", &["A*"], &["--ttl", "3s"]);
    ws_send(&mut ws, serde_json::json!({"op":"auth","token": narrow}));
    let u = ws_until(&mut ws, "unsubscribed", |v| v["type"] == "unsubscribed");
    assert_eq!(u["symbols"], serde_json::json!(["MSFT"]));
    assert_eq!(u["reason"], "not_entitled");
    ws_until(&mut ws, "authorized", |v| v["type"] == "authorized");
    // It expires within 30 s: the warning comes, then the close at `exp`.
    let warned = ws_until(&mut ws, "auth_expiring", |v| v["type"] == "auth_expiring");
    assert!(warned["in_ms"].as_u64().unwrap() <= 3_000);
    let mut w = w;
    let last = w.feed.send(&[
        FeedWriter::quote_msg(2, 3_000_200),
        FeedWriter::quote_msg(0, 1_000_200),
    ]);
    let mut seen = Vec::new();
    loop {
        let v = ws_until(&mut ws, "ticks", |v| v["type"] == "ticks");
        seen.extend(symbols_of(&v));
        if v["seq"].as_u64() >= Some(last) {
            break;
        }
    }
    assert_eq!(seen, ["AAPL"], "MSFT is no longer sent");
    let started = Instant::now();
    let (code, reason) = ws.until_close();
    assert_eq!(code, 4001);
    assert!(reason.starts_with("token_expired"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(10));
    ws.send(&masked(CLOSE, &4001u16.to_be_bytes()));
    ws.expect_fin_at_once("expiry");

    // SSE: the stream ends with `event: error`, `token_expired`.
    let short = w.token("dave", &["A*"], &["--ttl", "2s"]);
    let events = sse(
        w.addr(),
        &format!("/v1/stream?symbols=AAPL&token={short}"),
        50,
    )
    .unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.0, "error", "{events:?}");
    assert_eq!(last.1["code"], "token_expired");
    assert_eq!(last.1["close_code"], 4001);
}

#[test]
fn a_delayed_user_gets_no_real_time_data_through_any_door() {
    // Fifteen minutes delayed, on a feed that began seconds ago: every door
    // answers from the delayed view, which holds nothing yet — the symbols,
    // with no prices and `seq` 0.
    let w = World::start(&[]);
    let t = w.token("frank", &["*"], &["--delay", "15m", "--class", "nonpro"]);
    let empty = |what: &str, body: &Value| {
        assert_eq!(body["seq"], 0, "{what}: {body}");
        let quotes = body["quotes"].as_array().unwrap();
        assert!(!quotes.is_empty(), "{what}: {body}");
        for q in quotes {
            assert_eq!(
                (&q["seq"], &q["bid"], &q["last"]),
                (&0.into(), &Value::Null, &Value::Null),
                "{what}: {q}"
            );
        }
    };
    for path in ["/v1/snapshot", "/v1/snapshot/AAPL", "/v1/poll?symbols=AAPL"] {
        let r = w.get(path, &t);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        empty(path, &r.json());
    }
    let events = sse(w.addr(), &format!("/v1/stream?symbols=AAPL&token={t}"), 1).unwrap();
    assert_eq!(events[0].0, "snapshot");
    empty("sse", &events[0].1);
    let mut ws = Strict::connect(w.addr(), &format!("?token={t}"));
    ws_send(
        &mut ws,
        serde_json::json!({"op":"subscribe","symbols":["AAPL"]}),
    );
    let snap = ws_until(&mut ws, "the snapshot", |v| v["type"] == "snapshot");
    empty("websocket", &snap);
    // The same symbols real time: the quotes the feed sent.
    let live = w.token("grace", &["*"], &[]);
    let r = w.get("/v1/snapshot/AAPL", &live);
    assert!(r.json::<Value>()["quotes"][0]["bid"].is_string());
}

#[test]
fn no_token_reaches_the_relays_log() {
    let w = World::start(&[]);
    let t = w.token("grace", &["A*"], &[]);
    let bad = format!("{t}x");
    // Through every door, in the header and in the query, good and bad.
    let _ = w.get("/v1/snapshot?symbols=AAPL", &t);
    let _ = w.get("/v1/snapshot?symbols=MSFT", &t);
    let _ = support::get(w.addr(), &format!("/v1/snapshot?token={bad}"));
    let _ = sse(w.addr(), &format!("/v1/stream?symbols=AAPL&token={t}"), 1);
    let _ = sse(w.addr(), &format!("/v1/stream?symbols=AAPL&token={bad}"), 1);
    let mut ws = Strict::connect(w.addr(), &format!("?token={bad}"));
    ws.until_close();
    let _ = get_with(
        w.addr(),
        "/v1/admin/connections",
        &[("Authorization", &format!("Bearer {t}"))],
    );
    let log = w.relay.stderr.text();
    // The debug log did record these requests.
    assert!(log.contains("refused"), "the log is empty: {log}");
    let signature = t.rsplit('.').next().unwrap();
    for secret in [
        t.as_str(),
        bad.as_str(),
        signature,
        SECRET,
        "the-operators-admin-token",
    ] {
        assert!(!log.contains(secret), "a secret in the log:\n{log}");
    }
}

/// `tickrelay usage --db DB --month M --json`, the row of `sub`.
fn usage_row(db: &std::path::Path, sub: &str) -> Option<Value> {
    let month = &tickrelay::usage::day_text(tickrelay::clock::now_ms() / 86_400_000)[..7];
    let out = Command::new(tickrelay_bin())
        .args(["usage", "--db"])
        .arg(db)
        .args(["--month", month, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["users"]
        .as_array()?
        .iter()
        .find(|u| u["sub"] == sub)
        .cloned()
}

#[test]
fn usage_is_recorded_per_user_and_survives_kill_9_up_to_one_flush() {
    let db = scratch(&format!("usage-{}.db", support::unique_suffix()));
    let db_arg = db.to_str().unwrap().to_owned();
    let mut w = World::start(&["--usage-db", &db_arg, "--usage-flush-ms", "200"]);
    let t = w.token("heidi", &["A*"], &["--class", "nonpro"]);
    for _ in 0..3 {
        assert_eq!(w.get("/v1/snapshot?symbols=AAPL", &t).status, 200);
    }
    let mut ws = Strict::connect(w.addr(), &format!("?token={t}"));
    ws_send(
        &mut ws,
        serde_json::json!({"op":"subscribe","symbols":["AAPL","AMZN"]}),
    );
    ws_until(&mut ws, "subscribed", |v| v["type"] == "subscribed");
    let last = w.feed.send(&[FeedWriter::quote_msg(0, 1_000_300)]);
    ws_until(&mut ws, "the tick", |v| {
        v["type"] == "ticks" && v["seq"].as_u64() >= Some(last)
    });
    // The admin route reads what was flushed; wait until it holds it all.
    let admin = [("Authorization", "Bearer the-operators-admin-token")];
    let flushed = support::poll_until(support::DEADLINE, "the activity flushed", || {
        let r = get_with(w.addr(), "/v1/admin/usage", &admin);
        let v: Value = r.json();
        let row = v["users"]
            .as_array()?
            .iter()
            .find(|u| u["sub"] == "heidi")?
            .clone();
        (row["requests"].as_u64() >= Some(4) && row["messages"].as_u64() >= Some(5)).then_some(row)
    });
    assert_eq!(flushed["class"], "nonpro");
    assert_eq!(flushed["delayed"], false);
    assert_eq!(flushed["max_connections"], 1);
    assert_eq!(flushed["symbols"], 2, "AAPL and AMZN: {flushed}");
    assert_eq!(
        v_num(&flushed, "requests"),
        4,
        "three snapshots and the WebSocket"
    );
    // kill -9: what was flushed is all there.
    w.relay.kill();
    let row = usage_row(&db, "heidi").expect("heidi's row survives kill -9");
    for k in [
        "requests",
        "messages",
        "bytes",
        "max_connections",
        "symbols",
    ] {
        assert_eq!(row[k], flushed[k], "{k}");
    }

    // SIGTERM flushes before exit: activity right before it is kept too.
    let mut w = World::start(&["--usage-db", &db_arg, "--usage-flush-ms", "60000"]);
    let t = w.token("heidi", &["A*"], &["--class", "nonpro"]);
    for _ in 0..5 {
        assert_eq!(w.get("/v1/snapshot?symbols=AAPL", &t).status, 200);
    }
    w.relay.sigterm();
    assert!(
        w.relay.wait_exit(support::DEADLINE).is_some(),
        "the relay exits"
    );
    let row = usage_row(&db, "heidi").unwrap();
    assert_eq!(v_num(&row, "requests"), 4 + 5, "{row}");
}

fn v_num(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"))
}

/// `tickrelay_user_*{class="…",delayed="…"}`: a series of the metrics by
/// class and delay.
fn by_class(name: &str, class: &str, delayed: bool) -> String {
    format!("tickrelay_user_{name}{{class=\"{class}\",delayed=\"{delayed}\"}}")
}

#[test]
fn metrics_count_connections_and_deliveries_by_class_and_delay_never_by_user() {
    // The shared token beside per-user tokens: its holder is class `none`.
    let mut w = World::start(&["--token", "the-shared-token"]);
    let pro = w.token("alice-the-pro", &["*"], &[]);
    let nonpro = w.token("bob-the-nonpro", &["*"], &["--class", "nonpro"]);
    let delayed = w.token(
        "carol-the-delayed",
        &["*"],
        &["--class", "nonpro", "--delay", "15m"],
    );
    let before = w.relay.metrics();
    let mut clients: Vec<Strict> = [pro.as_str(), nonpro.as_str(), "the-shared-token"]
        .iter()
        .map(|t| {
            let mut ws = Strict::connect(w.addr(), &format!("?token={t}"));
            ws_send(
                &mut ws,
                serde_json::json!({"op":"subscribe","symbols":["AAPL"]}),
            );
            ws_until(&mut ws, "subscribed", |v| v["type"] == "subscribed");
            ws
        })
        .collect();
    // A delayed user's connection is counted as one, whatever it may see.
    let _delayed_ws = Strict::connect(w.addr(), &format!("?token={delayed}"));
    let last = w.feed.send(&[FeedWriter::quote_msg(0, 1_000_500)]);
    for ws in &mut clients {
        ws_until(ws, "the tick", |v| {
            v["type"] == "ticks" && v["seq"].as_u64() >= Some(last)
        });
    }
    assert_eq!(w.get("/v1/snapshot?symbols=AAPL", &nonpro).status, 200);
    let m = support::poll_until(support::DEADLINE, "every connection counted", || {
        let m = w.relay.metrics();
        (m.get(&by_class("connections", "nonpro", true)) == 1.0).then_some(m)
    });
    for (class, delayed, n) in [
        ("pro", false, 1.0),
        ("nonpro", false, 1.0),
        ("nonpro", true, 1.0),
        ("none", false, 1.0),
        ("pro", true, 0.0),
    ] {
        assert_eq!(
            m.get(&by_class("connections", class, delayed)),
            n,
            "{class} delayed={delayed}"
        );
    }
    for (class, least) in [("pro", 1.0), ("nonpro", 2.0), ("none", 1.0)] {
        let grew =
            |name| m.get(&by_class(name, class, false)) - before.get(&by_class(name, class, false));
        // The tick at least (and for nonpro, the snapshot answer too).
        assert!(grew("deliveries_total") >= least, "{class} deliveries");
        assert!(grew("delivered_bytes_total") > 0.0, "{class} bytes");
    }
    // Never a user: no label carries a `sub`.
    let text = w.relay.get("/metrics").text();
    for sub in [
        "alice-the-pro",
        "bob-the-nonpro",
        "carol-the-delayed",
        "probe",
    ] {
        assert!(!text.contains(sub), "{sub} in /metrics");
    }
    assert!(!text.contains("sub=\""), "a sub label in /metrics");
    // A connection that ends is no longer counted.
    clients[0].send(&masked(CLOSE, &1000u16.to_be_bytes()));
    support::poll_until(support::DEADLINE, "the pro connection uncounted", || {
        let m = w.relay.metrics();
        (m.get(&by_class("connections", "pro", false)) == 0.0).then_some(())
    });
}
