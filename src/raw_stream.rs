//! Server-Sent Event streams and WebSockets served off hyper.
//!
//! An SSE response lives as long as the client, and hyper keeps its
//! per-connection read buffer (8 KiB at the least) for all of it. A
//! connection whose first request is `GET /v1/stream` or `GET /v1/ws` is
//! therefore answered here: the request head is read and parsed once, handed
//! to the same router (so limits, auth, errors and metrics are the ones every
//! request gets), and the response is written straight to the socket — an
//! SSE body with chunked encoding; a WebSocket's 101, after which the socket
//! goes to the handler's [`Upgrade`]. The head's buffer is gone before the
//! first event. One request per connection: the stream ends the connection.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
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

type UpgradeFn = Box<dyn FnOnce(TcpStream) -> Served + Send>;

/// What a 101 response asks to run on the socket once the head is written.
#[derive(Clone)]
pub struct Upgrade(Arc<parking_lot::Mutex<Option<UpgradeFn>>>);

impl Upgrade {
    /// Runs `f` with the socket after the 101.
    pub fn new(f: impl FnOnce(TcpStream) -> Served + Send + 'static) -> Self {
        Upgrade(Arc::new(parking_lot::Mutex::new(Some(Box::new(f)))))
    }

    fn take(&self) -> Option<UpgradeFn> {
        self.0.lock().take()
    }
}
/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// Most headers parsed.
const MAX_HEADERS: usize = 48;

/// Whether the connection's first bytes are an SSE or WebSocket request.
/// Waits for the client to send something; a short first segment goes to
/// hyper.
pub async fn wants(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; 16];
    // A client that sends nothing goes on to hyper, whose header timeout ends it.
    match tokio::time::timeout(Duration::from_secs(10), tcp.peek(&mut buf)).await {
        Ok(Ok(n)) => PREFIXES
            .iter()
            .any(|p| n > p.len() && buf.starts_with(p) && matches!(buf[p.len()], b'?' | b' ')),
        _ => false,
    }
}

/// The future that serves an upgraded connection, to be spawned as a task of
/// its own: the task that read the head (sized for hyper) is gone by then.
pub type Served = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Reads one request head, answers it through `app`, and streams the body;
/// or, for an [`Upgrade`], writes the head and returns what serves the rest.
pub async fn serve(mut tcp: TcpStream, remote: SocketAddr, app: axum::Router) -> Option<Served> {
    let request =
        match tokio::time::timeout(Duration::from_secs(30), read_head(&mut tcp, remote)).await {
            Ok(Ok(r)) => r,
            Ok(Err(reason)) => {
                let _ = tcp.write_all(bad_request(reason).as_bytes()).await;
                return None;
            }
            Err(_) => return None,
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
            return Some(upgrade(tcp));
        }
        return None;
    }
    let head = response_head(&parts, true);
    if tcp.write_all(&head).await.is_err() {
        return None;
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
            return None;
        }
    }
    let _ = tcp.write_all(b"0\r\n\r\n").await;
    let _ = tcp.shutdown().await;
    None
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

async fn read_head(tcp: &mut TcpStream, remote: SocketAddr) -> Result<Request<Body>, &'static str> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        let mut chunk = [0u8; 1024];
        let n = tcp.read(&mut chunk).await.map_err(|_| "read error")?;
        if n == 0 {
            return Err("connection closed in the request head");
        }
        buf.extend_from_slice(&chunk[..n]);
        if memchr::memmem::find(&buf, b"\r\n\r\n").is_some() {
            break;
        }
        if buf.len() > MAX_HEAD {
            return Err("request head too large");
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err("malformed request head"),
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(parsed.path.ok_or("no path")?)
        .version(Version::HTTP_11)
        .body(Body::empty())
        .map_err(|_| "malformed request target")?;
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| "malformed header")?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| "malformed header")?;
        request.headers_mut().append(name, value);
    }
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
