//! A plain-TCP client socket as hyper's server sees it, with two system calls per connection
//! taken out: the split first read and the `shutdown` before `close`.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most read at once for a connection's first bytes: a request head of ordinary size.
const FIRST_READ: usize = 4096;

/// A client socket that reads its first bytes in one call and closes without `shutdown`.
///
/// hyper-util's server reads a connection's first 24 bytes on their own (the length of the
/// HTTP/2 preface, to tell the protocols apart) and hyper then reads the rest of the request:
/// two `recvfrom` for bytes that arrived together. Here the first read asks for up to
/// [`FIRST_READ`] bytes and hands what the caller has no room for to its next reads.
///
/// hyper shuts a connection's write side down before it ends it, and the socket is closed
/// right after: `close` sends the same FIN, so the `shutdown` is a system call for nothing.
/// (Under TLS the shutdown sends `close_notify` and stays: this wraps plain TCP only.)
pub(super) struct Plain<T> {
    inner: T,
    /// Bytes of the first read not yet handed out, and how many were.
    ahead: Option<(Box<[u8]>, usize)>,
    first: bool,
}

impl<T> Plain<T> {
    pub(super) fn new(inner: T) -> Self {
        Plain {
            inner,
            ahead: None,
            first: true,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Plain<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some((bytes, taken)) = &mut this.ahead {
            let n = buf.remaining().min(bytes.len() - *taken);
            buf.put_slice(&bytes[*taken..*taken + n]);
            *taken += n;
            if *taken == bytes.len() {
                this.ahead = None;
            }
            return Poll::Ready(Ok(()));
        }
        if !this.first || buf.remaining() >= FIRST_READ {
            this.first = false;
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let mut chunk = [MaybeUninit::<u8>::uninit(); FIRST_READ];
        let mut read = ReadBuf::uninit(&mut chunk);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
        this.first = false;
        let got = read.filled();
        let n = buf.remaining().min(got.len());
        buf.put_slice(&got[..n]);
        if n < got.len() {
            this.ahead = Some((got[n..].into(), 0));
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Plain<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Flushes only: the caller drops the socket next, and `close` ends the stream.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Reads of every size get the bytes in order, whatever the first read's size; the first
    /// read takes everything that arrived, in one call.
    #[tokio::test]
    async fn bytes_come_out_in_order_whatever_the_read_sizes() {
        let message: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for sizes in [
            &[24usize, 8192][..],
            &[1, 1, 3, 5000, 8192],
            &[24, 24, 24, 24, 8192],
            &[4096, 8192],
            &[10_000],
        ] {
            let (client, server) = tokio::io::duplex(64 * 1024);
            let mut client = client;
            client.write_all(&message).await.unwrap();
            client.shutdown().await.unwrap();
            let mut plain = Plain::new(server);
            let mut got = Vec::new();
            let mut i = 0;
            loop {
                let size = sizes[i.min(sizes.len() - 1)];
                i += 1;
                let mut buf = vec![0; size];
                let n = plain.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
                if i == 1 && size < FIRST_READ {
                    assert!(plain.ahead.is_some(), "{sizes:?}: the first read took more");
                }
            }
            assert_eq!(got, message, "{sizes:?}");
        }
    }

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
