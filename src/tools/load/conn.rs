//! Reaching the server: its address from `--url`, client sockets bound to
//! their source address, and the HTTP/1.1 client the SSE, polling and
//! directory requests share.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

/// The server's address, parsed from `--url`.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) authority: String,
    /// `Authorization: Bearer` sent with every request (`--token`).
    pub(crate) bearer: Option<String>,
}

pub(crate) fn target(url: &str) -> anyhow::Result<Target> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--url {url}: only http:// URLs are supported"))?;
    let authority = rest.split('/').next().unwrap_or(rest).to_owned();
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("--url {url}: cannot resolve {authority}"))?
        .find(|a| a.is_ipv4())
        .or_else(|| authority.to_socket_addrs().ok()?.next())
        .with_context(|| format!("--url {url}: no address"))?;
    Ok(Target {
        addr,
        authority,
        bearer: None,
    })
}

/// The source address of client `id` among `n`: 127.0.0.1, 127.0.0.2, …
fn source_addr(id: usize, n: u32) -> SocketAddr {
    let j = (id % n.max(1) as usize) as u32;
    let ip = Ipv4Addr::new(127, 0, (j / 254) as u8, (1 + j % 254) as u8);
    SocketAddr::new(IpAddr::V4(ip), 0)
}

fn io_kind(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connect: refused".into(),
        TimedOut => "connect: timeout".into(),
        AddrNotAvailable | AddrInUse => "connect: no local address or port".into(),
        ConnectionReset => "connect: reset".into(),
        _ if e.raw_os_error() == Some(24) => "connect: too many open files (ulimit -n)".into(),
        _ => format!("connect: {}", e.kind()),
    }
}

pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens a TCP connection from this client's source address.
pub(super) async fn connect(
    target: &Target,
    source_ips: u32,
    id: usize,
) -> Result<TcpStream, String> {
    let attempt = async {
        let socket = if target.addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if source_ips > 1 {
            socket.bind(source_addr(id, source_ips))?;
        }
        socket.set_nodelay(true)?;
        socket.connect(target.addr).await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(io_kind(&e)),
        Err(_) => Err("connect: timeout".into()),
    }
}

/// A client's connection: a plain socket, or one the lab counts bytes on.
pub(super) trait Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn for S {}

pub(super) fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// An HTTP/1.1 connection to the server, driven by its own task.
pub(super) async fn http_conn<S: Conn>(
    stream: S,
) -> Result<http1::SendRequest<Empty<Bytes>>, String> {
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http: {}", short(&e.to_string())))?;
    tokio::spawn(conn);
    Ok(sender)
}

pub(super) fn get(target: &Target, path: &str, etag: Option<&str>) -> Request<Empty<Bytes>> {
    let mut b = Request::get(path).header(hyper::header::HOST, &target.authority);
    if let Some(tag) = etag {
        b = b.header(hyper::header::IF_NONE_MATCH, tag);
    }
    if let Some(auth) = &target.bearer {
        b = b.header(hyper::header::AUTHORIZATION, auth);
    }
    b.body(Empty::new()).unwrap_or_default()
}

pub(super) async fn fetch(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    req: Request<Empty<Bytes>>,
    what: &str,
) -> Result<(u16, Option<String>, Bytes), String> {
    sender
        .ready()
        .await
        .map_err(|e| format!("{what}: {}", short(&e.to_string())))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("{what}: {}", short(&e.to_string())))?;
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get(hyper::header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{what}: {}", short(&e.to_string())))?
        .to_bytes();
    Ok((status, etag, body))
}

pub(super) fn target_of_url(url: &str) -> anyhow::Result<(Target, String)> {
    let t = target(url)?;
    let rest = url.trim_start_matches("http://");
    let path = rest.find('/').map_or("/", |i| &rest[i..]).to_owned();
    Ok((t, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_spread_over_loopback() {
        assert_eq!(source_addr(0, 4).to_string(), "127.0.0.1:0");
        assert_eq!(source_addr(5, 4).to_string(), "127.0.0.2:0");
        assert_eq!(source_addr(300, 1000).to_string(), "127.0.1.47:0");
    }
}
