//! The `http_head` target.

use std::collections::HashMap;
use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

use tickrelay::accept::MAX_HEAD;

use super::sig;
use crate::engine::{Target, fnv};

/// `http_head`: the request head parser of `GET /v1/stream` and `/v1/ws`
/// connections (`accept::parse_head`), called directly on the bytes.
/// One complete head in [`ROUTE_EVERY`] is then answered by a router with
/// the relay's JSON error layer, in process; one input in [`TCP_EVERY`] goes
/// the whole way through `accept::serve` over a loopback connection, for
/// its read loop and its own 400s. Which inputs take those paths depends
/// only on the input, so a replay takes the same path.
///
/// Invariants: never a panic. A complete head is at most `MAX_HEAD` bytes
/// and `MAX_HEADERS` headers, and parses the same from its own bytes. The
/// answer does not depend on how the bytes arrived: cut anywhere before the
/// head's end, the bytes so far ask for more; cut after it, the head is the
/// same. A refusal is final: more bytes do not turn it into a head. An
/// incomplete head is shorter than `MAX_HEAD`. Every error answer (routed or
/// over TCP) is the JSON error shape, under an HTTP/1.1 status line.
pub struct HttpHeadTarget {
    rt: tokio::runtime::Runtime,
    listener: Option<tokio::net::TcpListener>,
    app: axum::Router,
}

/// One complete head in this many is answered through the router.
pub const ROUTE_EVERY: u64 = 8;
/// One input in this many also goes through `accept::serve` over TCP.
pub const TCP_EVERY: u64 = 4096;

impl HttpHeadTarget {
    /// A runtime and the router heads are answered by. The loopback listener
    /// is bound on the first input that needs it.
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let app = axum::Router::new()
            .route(
                "/v1/stream",
                axum::routing::get(
                    |axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| async move {
                        format!("data: {}\n\n", q.len())
                    },
                ),
            )
            .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "nothing here") })
            .layer(axum::middleware::from_fn(tickrelay::http::json_errors));
        HttpHeadTarget {
            rt,
            listener: None,
            app,
        }
    }

    /// The router's answer to a parsed head: its status, after checking an
    /// error's body is the JSON error shape.
    fn route(&self, request: axum::http::Request<()>) -> u16 {
        use tower::ServiceExt;
        let app = self.app.clone();
        let (status, body) = self.rt.block_on(async move {
            let request = request.map(|()| axum::body::Body::empty());
            let Ok(response) = app.oneshot(request).await;
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("a body under 1 MiB");
            (status, body)
        });
        if status >= 400 {
            check_error_body(&body);
        }
        status
    }

    /// `accept::serve`'s answer to `input` sent over loopback TCP, after
    /// checking its shape; 0 when it closed without one.
    fn over_tcp(&mut self, input: &[u8]) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = self.listener.get_or_insert_with(|| {
            self.rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .expect("a loopback port")
        });
        let addr = listener.local_addr().expect("bound");
        let app = self.app.clone();
        let answer = self.rt.block_on(async {
            let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let (server, remote) = listener.accept().await.expect("accept");
            let serving = tokio::spawn(tickrelay::accept::serve(server, remote, app));
            let _ = client.write_all(input).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer));
            assert!(read.await.is_ok(), "no answer within 5 s");
            serving.await.expect("serve panicked");
            answer
        });
        if answer.is_empty() {
            return 0;
        }
        assert!(
            answer.starts_with(b"HTTP/1.1 "),
            "not a status line: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(40)])
        );
        let status: u16 = std::str::from_utf8(&answer[9..12.min(answer.len())])
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("a numeric status");
        if status >= 400 {
            check_error_body(&http_body(&answer).expect("a readable body"));
        }
        status
    }
}

impl Default for HttpHeadTarget {
    fn default() -> Self {
        Self::new()
    }
}

/// `{"error":{"code":…,"message":…}}`, both strings.
fn check_error_body(body: &[u8]) {
    let v: serde_json::Value = serde_json::from_slice(body).expect("an error body is JSON");
    assert!(v["error"]["code"].is_string(), "error shape: {v}");
    assert!(v["error"]["message"].is_string(), "error shape: {v}");
}

/// What `parse_head` said, reduced to what the invariants compare.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    More,
    Refused(tickrelay::accept::HeadError),
    Head {
        len: usize,
        method: String,
        uri: String,
        version: axum::http::Version,
        headers: Vec<(String, Vec<u8>)>,
    },
}

fn parsed(buf: &[u8]) -> Parsed {
    use tickrelay::accept::parse_head;
    match parse_head(buf) {
        Ok(None) => Parsed::More,
        Err(e) => Parsed::Refused(e),
        Ok(Some(h)) => Parsed::Head {
            len: h.len,
            method: h.request.method().to_string(),
            uri: h.request.uri().to_string(),
            version: h.request.version(),
            headers: h
                .request
                .headers()
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        },
    }
}

impl Target for HttpHeadTarget {
    fn name(&self) -> &'static str {
        "http_head"
    }

    fn generate(&mut self, rng: &mut SmallRng) -> Vec<u8> {
        let methods = ["GET", "GET", "GET", "POST", "G\u{7f}T", "get"];
        let targets = [
            "/v1/stream",
            "/v1/stream?symbols=AAPL,MSFT",
            "/v1/stream?symbols=%FF%FE&x",
            "/v1/stream?symbols=a&symbols=b",
            "/v1/stream?%",
            "/v1/ws?format=msgpack",
            "/elsewhere",
            "*",
            "http://host/v1/stream",
            "/v1/stream?a=\u{e9}",
        ];
        let versions = ["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTTP/1.1 "];
        let eol = if rng.gen_ratio(1, 8) { "\n" } else { "\r\n" };
        let mut head = format!(
            "{} {} {}{eol}",
            methods[rng.gen_range(0..methods.len())],
            targets[rng.gen_range(0..targets.len())],
            versions[rng.gen_range(0..versions.len())],
        );
        let headers = [
            "Host: localhost",
            "Accept: text/event-stream",
            "Last-Event-ID: S1:42",
            "LAST-EVENT-ID: S1:43",
            "Authorization: Bearer x",
            "Upgrade: websocket",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "X-Obs: caf\u{e9}",
            "X-Folded: a\r\n b",
            "Bad Header: x",
            "Content-Length: 5",
            ":",
        ];
        // Now and then more headers than the parser takes.
        let n = if rng.gen_ratio(1, 16) {
            rng.gen_range(40..60)
        } else {
            rng.gen_range(0..6)
        };
        for _ in 0..n {
            head.push_str(headers[rng.gen_range(0..headers.len())]);
            head.push_str(eol);
        }
        if rng.gen_ratio(7, 8) {
            head.push_str(eol);
        }
        // Now and then a head about the size limit.
        if rng.gen_ratio(1, 32) {
            let n = MAX_HEAD - head.len() + rng.gen_range(0..16) - 8;
            head.push_str("X-Big: ");
            head.extend(std::iter::repeat_n('b', n));
            head.push_str("\r\n\r\n");
        }
        let mut bytes = head.into_bytes();
        // Bytes after the head: a body, a WebSocket frame, a second request.
        if rng.gen_ratio(1, 4) {
            let after: [&[u8]; 3] = [
                b"hello",
                b"\x81\x85\x00\x00\x00\x00hello",
                b"GET / HTTP/1.1\r\n\r\n",
            ];
            bytes.extend_from_slice(after[rng.gen_range(0..after.len())]);
        }
        bytes
    }

    fn run(&mut self, input: &[u8]) -> u64 {
        use tickrelay::accept::{MAX_HEADERS, parse_head};
        let whole = parsed(input);
        // Cut points that depend only on the input.
        let h = fnv(input);
        let cuts = [h as usize, (h >> 21) as usize, (h >> 42) as usize];
        let s = match &whole {
            Parsed::Head {
                len,
                method,
                version,
                headers,
                ..
            } => {
                let len = *len;
                assert!(
                    len > 0 && len <= input.len() && len <= MAX_HEAD,
                    "head length {len}"
                );
                assert!(headers.len() <= MAX_HEADERS, "{} headers", headers.len());
                assert_eq!(
                    parsed(&input[..len]),
                    whole,
                    "the head alone parses differently"
                );
                for c in cuts {
                    let cut = c % len;
                    assert_eq!(parsed(&input[..cut]), Parsed::More, "cut at {cut} of {len}");
                }
                let after = input.len() - len;
                let mut extended = input.to_vec();
                extended.extend_from_slice(b"\r\n\r\n");
                assert_eq!(parsed(&extended), whole, "bytes after the head changed it");
                let routed = if h.is_multiple_of(ROUTE_EVERY) {
                    let Ok(Some(head)) = parse_head(input) else {
                        unreachable!("parsed above")
                    };
                    self.route(head.request)
                } else {
                    0
                };
                vec![
                    1,
                    u64::from(method == "GET"),
                    u64::from(*version == axum::http::Version::HTTP_11),
                    (headers.len() as u64).min(4),
                    u64::from(after > 0),
                    u64::from(routed),
                ]
            }
            Parsed::More => {
                assert!(
                    input.len() < MAX_HEAD,
                    "{} bytes and still asking",
                    input.len()
                );
                if !input.is_empty() {
                    let cut = cuts[0] % input.len();
                    assert_eq!(parsed(&input[..cut]), Parsed::More, "cut at {cut}");
                }
                vec![2]
            }
            Parsed::Refused(e) => {
                let mut extended = input.to_vec();
                extended.extend_from_slice(b"\r\n\r\n");
                assert!(
                    matches!(parsed(&extended), Parsed::Refused(_)),
                    "a refused head ({e}) was taken with more bytes"
                );
                // The refusal is the one a reader that stops at the first
                // answer gives, whatever the segments.
                let first = cuts
                    .iter()
                    .map(|c| c % (input.len() + 1))
                    .filter_map(|cut| match parsed(&input[..cut]) {
                        Parsed::More => None,
                        other => Some(other),
                    })
                    .next();
                if let Some(other) = first {
                    assert_eq!(other, whole, "a prefix was refused differently");
                }
                vec![3, fnv(e.reason().as_bytes()) & 0xff]
            }
        };
        let mut s = s;
        if h.is_multiple_of(TCP_EVERY) {
            s.push(u64::from(self.over_tcp(input)) << 16);
        }
        sig(&s)
    }
}

/// The body of an HTTP/1.1 answer, chunked or with a length.
fn http_body(answer: &[u8]) -> Option<Vec<u8>> {
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let mut rest = &answer[split..];
    if !head.contains("transfer-encoding: chunked") {
        return Some(rest.to_vec());
    }
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).ok()?, 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size + 2..)?;
    }
}
