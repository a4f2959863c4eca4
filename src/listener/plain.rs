//! A plain-TCP client socket as hyper's server sees it: closed without `shutdown`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A client socket whose `shutdown` only flushes.
///
/// hyper shuts a connection's write side down before it ends it, and the socket is closed
/// right after: `close` sends the same FIN, so the `shutdown` is a system call for nothing.
/// (Under TLS the shutdown sends `close_notify` and stays: this wraps plain TCP only.)
pub(super) struct Plain<T>(T);

impl<T> Plain<T> {
    pub(super) fn new(inner: T) -> Self {
        Plain(inner)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Plain<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Plain<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    /// Flushes only: the caller drops the socket next, and `close` ends the stream.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// `shutdown` leaves the stream open (the socket's `close` ends it) after flushing.
    #[tokio::test]
    async fn shutdown_only_flushes() {
        let (client, server) = tokio::io::duplex(1024);
        let mut plain = Plain::new(server);
        plain.write_all(b"answer").await.unwrap();
        plain.shutdown().await.unwrap();
        let mut client = client;
        let mut buf = [0; 6];
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"answer");
        client.write_all(b"more").await.unwrap();
        let mut more = [0; 4];
        plain.read_exact(&mut more).await.unwrap();
        assert_eq!(&more, b"more");
        drop(plain);
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "dropped: closed");
    }
}
