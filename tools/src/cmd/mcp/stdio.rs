//! The server's stdin and stdout as the runtime's own readiness-driven streams.
//!
//! `tokio::io::stdin()` reads on a blocking thread and hands each read over, so every
//! request would cross two more threads before a tool saw it (and the answer two more on
//! the way out). MCP clients connect a server's stdio through pipes (Python's and Rust's
//! subprocess APIs) or a socketpair (Node's); both can be registered with epoll, and then
//! a request wakes the runtime thread that answers it. Anything else (a terminal, a file)
//! falls back to tokio's blocking stdio.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

/// A boxed byte stream, whichever kind the descriptor is.
pub(super) type Reader = Pin<Box<dyn AsyncRead + Send>>;
/// A boxed byte sink, whichever kind the descriptor is.
pub(super) type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// A copy of the process's stdin (0) or stdout (1), owned for the life of the server:
/// the original stays open and stays 0 or 1 whatever happens to the copy.
fn take(stdout: bool) -> io::Result<(OwnedFd, std::fs::FileType)> {
    let fd =
        if stdout { io::stdout().as_fd().try_clone_to_owned()? } else { io::stdin().as_fd().try_clone_to_owned()? };
    let file = std::fs::File::from(fd);
    let kind = file.metadata()?.file_type();
    Ok((OwnedFd::from(file), kind))
}

/// Stdin and stdout for the server, readiness-driven where they can be.
///
/// # Errors
/// When the runtime cannot register a pipe or socket (out of descriptors, say).
pub(super) fn streams() -> io::Result<(Reader, Writer)> {
    let (fd, kind) = take(false)?;
    let input: Reader = if kind.is_fifo() {
        Box::pin(tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?)
    } else if kind.is_socket() {
        Box::pin(socket(fd)?)
    } else {
        Box::pin(tokio::io::stdin())
    };
    let (fd, kind) = take(true)?;
    let output: Writer = if kind.is_fifo() {
        Box::pin(tokio::net::unix::pipe::Sender::from_owned_fd(fd)?)
    } else if kind.is_socket() {
        Box::pin(socket(fd)?)
    } else {
        Box::pin(tokio::io::stdout())
    };
    Ok((input, output))
}

/// A socket descriptor (one end of a socketpair) as a runtime stream.
fn socket(fd: OwnedFd) -> io::Result<tokio::net::UnixStream> {
    let s = std::os::unix::net::UnixStream::from(fd);
    s.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(s)
}
