//! Server-Sent Event streams and WebSockets served off hyper.
//!
//! An SSE response lives as long as the client, and hyper keeps its
//! per-connection read buffer (8 KiB at the least) for all of it. A
//! connection whose first request is `GET /v1/stream` or `GET /v1/ws` is
//! therefore answered here: the request head is read and parsed
//! ([`parse_head`], a pure function over the bytes read so far), handed
//! to the same router (so limits, auth, errors and metrics are the ones every
//! request gets), and the response is written straight to the socket — an
//! SSE body with chunked encoding; a WebSocket's 101, after which the socket
//! goes to the handler's [`Upgrade`]. The head's buffer is gone before the
//! first event. One request per connection: the stream ends the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, Version};
use bytes::{BufMut, BytesMut};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

/// The request line prefixes answered here.
const PREFIXES: [&[u8]; 2] = [b"GET /v1/stream", b"GET /v1/ws"];

/// Marks a request read here: a WebSocket handler answers it with an
/// [`Upgrade`] instead of through hyper.
#[derive(Clone, Copy, Debug)]
pub struct RawConn;

type UpgradeFn = Box<dyn FnOnce(TcpStream) + Send>;

/// What a response asks to run on the socket once its head is written: it
/// spawns the connection's own task (sized for the stream, not for the
/// head's reading), as it is rather than boxed.
#[derive(Clone)]
pub struct Upgrade(Arc<parking_lot::Mutex<Option<UpgradeFn>>>);

impl Upgrade {
    /// Runs `f` with the socket after the response head.
    pub fn new(f: impl FnOnce(TcpStream) + Send + 'static) -> Self {
        Upgrade(Arc::new(parking_lot::Mutex::new(Some(Box::new(f)))))
    }

    fn take(&self) -> Option<UpgradeFn> {
        self.0.lock().take()
    }
}
/// Largest request head accepted, its blank line included.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most headers parsed.
pub const MAX_HEADERS: usize = 48;

/// Whether the connection's first bytes are an SSE or WebSocket request.
/// Waits for the client to send enough to tell: a client may write its
/// request line in pieces (`GET `, then the target), and the first piece
/// alone decides nothing. A client that sends nothing, or stops before it
/// can be told, goes on to hyper after 10 s, whose header timeout ends it.
pub async fn wants(tcp: &TcpStream) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 16];
    // Backs off from 1 ms to 64 ms between looks: a client that sent a
    // short piece costs a few wake-ups, not a spin.
    let mut pause = Duration::from_millis(1);
    loop {
        let n = match tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return false,
        };
        if let Some(verdict) = first_bytes_want(&buf[..n]) {
            return verdict;
        }
        if tokio::time::Instant::now() + pause > deadline {
            return false;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(64));
    }
}

/// Whether a request starting with `first` is served here; `None` while
/// `first` is too short to tell.
fn first_bytes_want(first: &[u8]) -> Option<bool> {
    let mut undecided = false;
    for p in PREFIXES {
        if first.len() > p.len() {
            if first.starts_with(p) && matches!(first[p.len()], b'?' | b' ') {
                return Some(true);
            }
        } else if p.starts_with(first) {
            undecided = true;
        }
    }
    (!undecided).then_some(false)
}

/// Reads one request head, answers it through `app`, and streams the body;
/// or, for an [`Upgrade`], writes the head and hands it the socket.
pub async fn serve(mut tcp: TcpStream, remote: SocketAddr, app: axum::Router) {
    let request =
        match tokio::time::timeout(Duration::from_secs(30), read_head(&mut tcp, remote)).await {
            Ok(Ok(r)) => r,
            Ok(Err(reason)) => {
                let _ = tcp.write_all(bad_request(reason).as_bytes()).await;
                return;
            }
            Err(_) => return,
        };
    let Ok(response) = app.oneshot(request).await;
    let (mut parts, mut body) = response.into_parts();
    if let Some(upgrade) = parts.extensions.remove::<Upgrade>().and_then(|u| u.take()) {
        // A WebSocket's 101 as it is; a stream's head with a chunked body
        // that the upgrade writes.
        let switching = parts.status == axum::http::StatusCode::SWITCHING_PROTOCOLS;
        let head = response_head(&parts, !switching);
        if tcp.write_all(&head).await.is_ok() {
            drop((head, parts, body));
            upgrade(tcp);
        }
        return;
    }
    let head = response_head(&parts, true);
    if tcp.write_all(&head).await.is_err() {
        return;
    }
    drop(head);
    // One write per chunk: size line, data and CRLF together.
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let mut chunk = BytesMut::with_capacity(data.len() + 12);
        chunk.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        chunk.extend_from_slice(&data);
        chunk.extend_from_slice(b"\r\n");
        if tcp.write_all(&chunk).await.is_err() {
            return;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let _ = tcp.shutdown().await;
}

/// The response's status line and headers; `chunked`: the body follows in
/// chunks and ends the connection.
fn response_head(parts: &axum::http::response::Parts, chunked: bool) -> BytesMut {
    let mut head = BytesMut::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.put_u8(b' ');
    head.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == axum::http::header::CONTENT_LENGTH
            || name == axum::http::header::TRANSFER_ENCODING
        {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\nconnection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A request head parsed from the start of a connection's bytes.
#[derive(Debug)]
pub struct Head {
    /// Method, target, version and headers, with an empty body.
    pub request: Request<()>,
    /// Bytes the head took, its blank line included. What follows belongs to
    /// the body or to the next protocol (a WebSocket client's first frames).
    pub len: usize,
}

/// Why a request head was refused. Its text is the `message` of the 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// No complete head within [`MAX_HEAD`] bytes.
    TooLarge,
    /// More than [`MAX_HEADERS`] headers.
    TooManyHeaders,
    /// Not an HTTP/1.0 or HTTP/1.1 request head: a bad method token, request
    /// line, version, header name or line ending.
    Malformed,
    /// The request target is not a URI.
    BadTarget,
    /// A header value `http` refuses (a control byte).
    BadHeader,
}

impl HeadError {
    /// The reason, as the 400's `message` says it.
    pub fn reason(self) -> &'static str {
        match self {
            HeadError::TooLarge => "request head too large",
            HeadError::TooManyHeaders => "too many headers",
            HeadError::Malformed => "malformed request head",
            HeadError::BadTarget => "malformed request target",
            HeadError::BadHeader => "malformed header",
        }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for HeadError {}

/// Parses the request head at the start of `buf`: the bytes read from a
/// connection so far. No I/O, so it is unit-tested and fuzzed directly.
///
/// - `Ok(Some(head))`: a complete head of `head.len` bytes; bytes after it
///   are left alone.
/// - `Ok(None)`: a valid beginning; read more and call again with all of it.
/// - `Err(_)`: refuse the request. [`HeadError::TooLarge`] when no head ends
///   within [`MAX_HEAD`] bytes, whatever the bytes after that.
///
/// Header names come out lower-case (`http`'s `HeaderName`), so lookups do
/// not depend on the client's case. Bare `\n` line endings are taken, as
/// hyper takes them. How the bytes arrived in segments does not change the
/// answer: a complete head's every prefix is `Ok(None)`.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    // Nothing past the limit is read: the answer for a head that does not
    // end within it is TooLarge, whatever comes later.
    let len = match parsed.parse(&buf[..buf.len().min(MAX_HEAD)]) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(HeadError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(_) => return Err(HeadError::Malformed),
    };
    let (Some(method), Some(path), Some(version)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HeadError::Malformed);
    };
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| HeadError::Malformed)?;
    let version = match version {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .version(version)
        .body(())
        .map_err(|_| HeadError::BadTarget)?;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| HeadError::BadHeader)?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| HeadError::BadHeader)?;
        request.headers_mut().append(name, value);
    }
    Ok(Some(Head { request, len }))
}

/// Reads until [`parse_head`] has a complete head, and makes it the request
/// the router gets. Bytes after the head are dropped: a stream's client
/// sends none, and a WebSocket client waits for the 101 before it sends
/// frames (the handshake has it wait).
async fn read_head(tcp: &mut TcpStream, remote: SocketAddr) -> Result<Request<Body>, &'static str> {
    let mut buf = Vec::with_capacity(1024);
    let head = loop {
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await.map_err(|_| "read error")?;
        if n == 0 {
            return Err("connection closed in the request head");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = parse_head(&buf).map_err(HeadError::reason)? {
            break head;
        }
    };
    let mut request = head.request.map(|()| Body::empty());
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(remote));
    request.extensions_mut().insert(RawConn);
    Ok(request)
}

fn bad_request(reason: &str) -> String {
    let body = format!("{{\"error\":{{\"code\":\"bad_request\",\"message\":\"{reason}\"}}}}");
    format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(buf: &[u8]) -> Head {
        match parse_head(buf) {
            Ok(Some(head)) => head,
            other => panic!("not a complete head: {other:?}"),
        }
    }

    const STREAM: &[u8] =
        b"GET /v1/stream?symbols=AAPL,MSFT HTTP/1.1\r\nHost: relay\r\nLast-Event-ID: S1:42\r\n\r\n";

    #[test]
    fn a_complete_head_gives_method_target_version_headers_and_length() {
        let head = complete(STREAM);
        assert_eq!(head.len, STREAM.len());
        let r = &head.request;
        assert_eq!(r.method(), Method::GET);
        assert_eq!(r.uri().path(), "/v1/stream");
        assert_eq!(r.uri().query(), Some("symbols=AAPL,MSFT"));
        assert_eq!(r.version(), Version::HTTP_11);
        assert_eq!(r.headers()["host"], "relay");
        assert_eq!(r.headers()["last-event-id"], "S1:42");
    }

    #[test]
    fn the_first_bytes_decide_once_the_target_is_told() {
        for (first, want) in [
            (&b"GET /v1/stream?symbols=AAPL"[..], Some(true)),
            (b"GET /v1/stream HTTP/1.1", Some(true)),
            (b"GET /v1/ws HTTP/1.1", Some(true)),
            (b"GET /v1/ws?token=t", Some(true)),
            (b"GET /v1/wsx HTTP/1.1", Some(false)),
            (b"GET /v1/streams", Some(false)),
            (b"GET /v1/snapshot", Some(false)),
            (b"POST /v1/ws", Some(false)),
            (b"PRI * HTTP/2.0", Some(false)),
            // A request line written in pieces: too short to tell yet.
            (b"G", None),
            (b"GET ", None),
            (b"GET /v1/", None),
            (b"GET /v1/ws", None),
            (b"GET /v1/stream", None),
        ] {
            assert_eq!(
                first_bytes_want(first),
                want,
                "{}",
                String::from_utf8_lossy(first)
            );
        }
    }

    #[test]
    fn every_prefix_of_a_head_asks_for_more() {
        for cut in 0..STREAM.len() {
            assert!(
                matches!(parse_head(&STREAM[..cut]), Ok(None)),
                "prefix of {cut} bytes"
            );
        }
    }

    #[test]
    fn bytes_after_the_head_are_left_alone() {
        let mut buf = STREAM.to_vec();
        buf.extend_from_slice(b"\x81\x85GET / HTTP/1.1\r\n\r\n");
        let head = complete(&buf);
        assert_eq!(head.len, STREAM.len());
        assert_eq!(head.request.headers().len(), 2);
    }

    #[test]
    fn header_names_are_matched_whatever_their_case() {
        let head =
            complete(b"GET /v1/ws HTTP/1.1\r\nUPGRADE: websocket\r\nsec-WebSocket-KEY: k\r\n\r\n");
        let h = head.request.headers();
        assert_eq!(h[axum::http::header::UPGRADE], "websocket");
        assert_eq!(h["Sec-WebSocket-Key"], "k");
    }

    #[test]
    fn repeated_headers_are_all_kept_in_order() {
        let head = complete(b"GET /v1/stream HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\n\r\n");
        let values: Vec<_> = head.request.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn http_1_0_and_bare_line_feeds_are_taken() {
        let buf = b"GET /v1/stream HTTP/1.0\nHost: relay\n\n";
        let head = complete(buf);
        assert_eq!(head.request.version(), Version::HTTP_10);
        assert_eq!(head.len, buf.len());
    }

    #[test]
    fn the_method_is_the_one_sent() {
        // `wants` only sends GETs here; the parser itself does not decide.
        let head = complete(b"POST /v1/stream HTTP/1.1\r\n\r\n");
        assert_eq!(head.request.method(), Method::POST);
    }

    #[test]
    fn a_head_that_does_not_end_within_the_limit_is_too_large() {
        let mut buf = b"GET /v1/stream HTTP/1.1\r\nX-Long: ".to_vec();
        buf.resize(MAX_HEAD - 1, b'a');
        assert!(matches!(parse_head(&buf), Ok(None)));
        buf.push(b'a');
        assert_eq!(parse_head(&buf).unwrap_err(), HeadError::TooLarge);
        // Complete, but one byte over.
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_head(&buf).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn a_head_of_exactly_the_limit_is_taken() {
        let mut buf = b"GET /v1/stream HTTP/1.1\r\nX-Long: ".to_vec();
        buf.resize(MAX_HEAD - 4, b'a');
        buf.extend_from_slice(b"\r\n\r\n");
        assert_eq!(complete(&buf).len, MAX_HEAD);
    }

    #[test]
    fn too_many_headers_are_refused() {
        let mut buf = b"GET /v1/stream HTTP/1.1\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        let mut fits = buf.clone();
        fits.extend_from_slice(b"\r\n");
        assert_eq!(complete(&fits).request.headers().len(), MAX_HEADERS);
        buf.extend_from_slice(b"X-Last: v\r\n\r\n");
        assert_eq!(parse_head(&buf).unwrap_err(), HeadError::TooManyHeaders);
    }

    #[test]
    fn bad_bytes_are_refused_as_soon_as_they_arrive() {
        for (buf, want) in [
            (&b"G\x00T /v1/stream HTTP/1.1\r\n"[..], HeadError::Malformed),
            (b"GET /v1/stream HTTP/2.0\r\n\r\n", HeadError::Malformed),
            (b"GET /v1/stream HTTP/1.1 \r\n", HeadError::Malformed),
            (
                b"GET /v1/stream HTTP/1.1\r\nBad Header: x\r\n",
                HeadError::Malformed,
            ),
            (b"GET /v1/stream HTTP/1.1\r\n: x\r\n", HeadError::Malformed),
            (
                b"GET /v1/stream HTTP/1.1\r\nX: a\x01b\r\n",
                HeadError::Malformed,
            ),
        ] {
            assert_eq!(
                parse_head(buf).unwrap_err(),
                want,
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
    }

    #[test]
    fn a_target_that_is_not_a_uri_is_refused() {
        let err = parse_head(b"GET /v1/stream?a=\xff HTTP/1.1\r\n\r\n");
        assert!(
            matches!(err, Err(HeadError::BadTarget | HeadError::Malformed)),
            "{err:?}"
        );
    }

    #[test]
    fn each_refusal_has_the_reason_the_400_gives() {
        assert_eq!(HeadError::TooLarge.to_string(), "request head too large");
        assert_eq!(HeadError::Malformed.reason(), "malformed request head");
    }
}
