//! A connection's first bytes: read in one call, they tell HTTP/2 (its preface) from
//! HTTP/1.1, and are then handed to hyper as if still unread ([`Replay`], which also leaves a
//! plain socket's `shutdown` to its `close`).
//!
//! hyper-util's automatic server reads the first 24 bytes alone (the preface's length), so a
//! new connection cost two reads for the bytes of one request, and hyper's read buffer grew
//! (8 KiB copied) because its first read brought those 24 bytes only. Here one read asks for
//! up to [`FIRST_READ`] bytes, and hyper's first read gets them all.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The most read at once for a connection's first bytes: a request head of ordinary size.
const FIRST_READ: usize = 4096;

/// What an HTTP/2 client with prior knowledge sends first (RFC 9113 §3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The first bytes of a connection, and what they say of its protocol.
pub(super) struct FirstBytes {
    bytes: Vec<u8>,
    http2: bool,
}

impl FirstBytes {
    /// Reads until the bytes decide: HTTP/2 once they hold the whole preface, HTTP/1.1 as soon
    /// as they differ from it or the client ends the stream.
    pub(super) async fn read<I: AsyncRead + Unpin>(io: &mut I) -> io::Result<FirstBytes> {
        let mut bytes = Vec::with_capacity(FIRST_READ);
        loop {
            // Into the spare capacity: at most FIRST_READ bytes in all.
            let n = io.read_buf(&mut bytes).await?;
            if let Some(http2) = decided(&bytes, n == 0) {
                return Ok(FirstBytes { bytes, http2 });
            }
        }
    }

    pub(super) fn is_http2(&self) -> bool {
        self.http2
    }
}

/// Whether `bytes` say HTTP/2 (`Some(true)`), HTTP/1.1 (`Some(false)`), or not yet (`None`);
/// `ended`: the client sent nothing more.
fn decided(bytes: &[u8], ended: bool) -> Option<bool> {
    let n = bytes.len().min(PREFACE.len());
    if bytes[..n] != PREFACE[..n] || ended {
        Some(false)
    } else if n == PREFACE.len() {
        Some(true)
    } else {
        None
    }
}

/// A client socket as hyper's server sees it: its first bytes, already read, are read again
/// first; and on plain TCP its `shutdown` only flushes.
///
/// hyper shuts a connection's write side down before it ends it, and the socket is closed
/// right after: on plain TCP `close` sends the same FIN, so the `shutdown` would be a system
/// call for nothing. Under TLS the shutdown sends `close_notify`, and stays.
pub(super) struct Replay<T> {
    inner: T,
    /// The first bytes not yet handed out, and how many were.
    ahead: Option<(Vec<u8>, usize)>,
    /// Whether `shutdown` is passed on (under TLS) or only flushes (plain TCP).
    shutdown: bool,
}

impl<T> Replay<T> {
    /// `tls`: whether `inner` is a TLS stream (whose shutdown is passed on).
    pub(super) fn new(first: FirstBytes, inner: T, tls: bool) -> Self {
        let ahead = (!first.bytes.is_empty()).then_some((first.bytes, 0));
        Replay {
            inner,
            ahead,
            shutdown: tls,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Replay<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some((bytes, taken)) = &mut this.ahead else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        let n = buf.remaining().min(bytes.len() - *taken);
        buf.put_slice(&bytes[*taken..*taken + n]);
        *taken += n;
        if *taken == bytes.len() {
            this.ahead = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Replay<T> {
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

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.shutdown {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        } else {
            Pin::new(&mut self.inner).poll_flush(cx)
        }
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
    use tokio::io::AsyncWriteExt;

    /// The protocol from the bytes so far, as a table.
    #[test]
    fn the_preface_decides() {
        let cases: &[(&[u8], bool, Option<bool>)] = &[
            (b"GET / HTTP/1.1\r\n", false, Some(false)),
            (b"G", false, Some(false)),
            (b"P", false, None),
            (b"PRI * HTTP/2.0\r\n", false, None),
            (b"POST / HTTP/1.1\r\n", false, Some(false)),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false, Some(true)),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x12\x04",
                false,
                Some(true),
            ),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\r", false, Some(false)),
            (b"PRI * HTTP/2.0", true, Some(false)),
            (b"", true, Some(false)),
        ];
        for (bytes, ended, want) in cases {
            assert_eq!(
                decided(bytes, *ended),
                *want,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// The preface trickled a byte at a time is still HTTP/2; the bytes come out again in
    /// order, whatever the sizes of the reads that follow, then the rest of the stream.
    #[tokio::test]
    async fn first_bytes_are_read_again_in_order() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            for b in PREFACE {
                client.write_all(&[*b]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client.write_all(b"frames").await.unwrap();
            client
        });
        let first = FirstBytes::read(&mut server).await.unwrap();
        assert!(first.is_http2());
        let _client = writer.await.unwrap();
        let mut replay = Replay::new(first, server, false);
        let mut got = Vec::new();
        for size in [5usize, 1, 100, 100] {
            let mut buf = vec![0; size];
            let n = replay.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, [PREFACE, b"frames"].concat());
    }

    /// A request head that arrived whole is read in one call and handed out in one.
    #[tokio::test]
    async fn a_whole_request_head_is_one_read() {
        let head = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(head).await.unwrap();
        let first = FirstBytes::read(&mut server).await.unwrap();
        assert!(!first.is_http2());
        assert_eq!(first.bytes, head);
        let mut replay = Replay::new(first, server, false);
        let mut buf = vec![0; 8192];
        let n = replay.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], head);
    }

    /// On plain TCP `shutdown` leaves the stream open (the socket's `close` ends it) after
    /// flushing.
    #[tokio::test]
    async fn shutdown_only_flushes() {
        let (client, server) = tokio::io::duplex(1024);
        let first = FirstBytes {
            bytes: Vec::new(),
            http2: false,
        };
        let mut plain = Replay::new(first, server, false);
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

        // Under TLS the shutdown is passed on (it sends close_notify).
        let (mut client, server) = tokio::io::duplex(1024);
        let first = FirstBytes {
            bytes: Vec::new(),
            http2: false,
        };
        let mut tls = Replay::new(first, server, true);
        tls.shutdown().await.unwrap();
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "shut down");
        drop(tls);
    }
}
