//! Socket helpers of the connections' tasks: a whole write, the lingering
//! read before a close, and the read that only drops what the peer sent.

use std::io::ErrorKind;
use std::time::Duration;

use tokio::net::TcpStream;

/// Writes all of `bytes`, waiting for the socket as needed.
pub async fn write_all(tcp: &TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    // Once straight to the socket, past tokio's readiness: a send buffer
    // just grown (`slow::make_room`) takes the bytes though no wake-up says so.
    if !bytes.is_empty()
        && let Ok(n) = socket2::SockRef::from(tcp).send(bytes)
    {
        bytes = &bytes[n..];
    }
    while !bytes.is_empty() {
        tcp.writable().await?;
        match tcp.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads (and drops) until the peer closes or `within` passes, so a last
/// frame is not lost to a reset on unread data.
pub async fn linger(tcp: &TcpStream, within: Duration) {
    let _ = tokio::time::timeout(within, async {
        while tcp.readable().await.is_ok() && !read_gone(tcp) {}
    })
    .await;
}

/// Reads and drops what the peer sent; true once it has closed (or failed).
/// Not async: its buffer is on the stack only while it runs, never in a
/// connection's future.
pub fn read_gone(tcp: &TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match tcp.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => return e.kind() != ErrorKind::WouldBlock,
        }
    }
}
