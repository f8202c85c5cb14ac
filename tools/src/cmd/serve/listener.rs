//! The TCP listener, bounded: at most `--max-connections` connections are served at
//! once. One more is accepted only to be answered `503` with the JSON error body
//! (`busy`) and closed, so a client learns why instead of hanging in the backlog.
//! A slot is held until its connection closes; hyper's header read timeout
//! ([`super::HEADER_READ_TIMEOUT`]) closes a silent or idle one.

use super::error::{busy, error_body};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A listener that holds a permit per open connection.
pub struct Bounded {
    inner: TcpListener,
    slots: Arc<Semaphore>,
}

impl Bounded {
    /// Serves `inner`, at most `max` connections at once.
    pub fn new(inner: TcpListener, max: usize) -> Bounded {
        Bounded { inner, slots: Arc::new(Semaphore::new(max)) }
    }
}

/// A connection and its slot, given back when the connection closes.
pub struct Conn {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl axum::serve::Listener for Bounded {
    type Io = Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Conn, std::net::SocketAddr) {
        loop {
            let (stream, addr) = match self.inner.accept().await {
                Ok(c) => c,
                // Out of descriptors and the like: wait a moment rather than spin.
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            match Arc::clone(&self.slots).try_acquire_owned() {
                Ok(slot) => return (Conn { stream, _slot: slot }, addr),
                Err(_) => {
                    tokio::spawn(refuse(stream));
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }
}

/// How much of a refused client's request is read (bytes) before the 503 is written.
const REFUSED_READ_MAX: usize = 16 * 1024;

/// How long a refused client is given to send its request, and to read the answer.
const REFUSED_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// Answers a connection over the bound with 503 and closes it. What the client sent is
/// read first (bounded in bytes and time) and what follows drained after the write
/// side is shut down: closing a socket with unread input makes the kernel send a reset,
/// which can destroy the 503 before the client reads it.
async fn refuse(mut stream: TcpStream) {
    let body = error_body(&busy("connections")).to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n",
        body.len()
    );
    let mut seen = [0u8; REFUSED_READ_MAX];
    let mut n = 0;
    let _ = tokio::time::timeout(REFUSED_PATIENCE, async {
        while n < seen.len() && !seen[..n].windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut seen[n..]).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(REFUSED_PATIENCE, async {
        let _ = stream.write_all(head.as_bytes()).await;
        let _ = stream.write_all(body.as_bytes()).await;
        let _ = stream.shutdown().await;
        // Drain until the client closes (it has the whole answer) or the patience ends.
        while let Ok(k) = stream.read(&mut seen).await {
            if k == 0 {
                break;
            }
        }
    })
    .await;
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
