//! A lean HTTP/1.1 client for the upstream side of HTTP/1.1 client connections, over
//! `httparse` as Cloudflare's pingora does: one exchange is one future on the client
//! connection's own task — no connection task of its own, no channel, no dispatch — and the
//! response body reads straight from the upstream socket.
//!
//! - An exchange starts after the other ready tasks of its worker (it yields once), so that
//!   the upstream requests of one batch of client reads go out together.
//! - The request head is written whole (with the first body bytes when they are there, one
//!   `writev`); the body streams after it, by `Content-Length` when its length is known,
//!   chunked otherwise. While it streams, the response is read too: an upstream that answers
//!   before taking the whole body is answered, and the connection closed after.
//! - The response head is parsed and framed by [`codec`]; its body is a [`ResponseBody`] that
//!   hands the connection back ([`Home`]) once read whole, if nothing casts doubt on where the
//!   next response would start: any framing doubt closes it.
//! - A connection reused from idle that the upstream turns out to have closed (no byte of a
//!   response) is retried on a new one by the caller, for idempotent methods whose body was not
//!   touched.
//!
//! hyper's server stays on the client side, where hostile input arrives; HTTP/2 client
//! connections use the pooled hyper client. `tests/upstream_client.rs` feeds the same upstream
//! responses to this client and to hyper's and requires the same outcome.

mod body;
pub mod codec;
mod pool;
mod write;

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::client::TlsStream;

pub use self::body::ResponseBody;
use self::codec::FramingError;
pub use self::pool::{Held, Home};
use self::write::Writer;

/// Boxed error of request bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes read from an upstream at a time, at least.
const READ_CHUNK: usize = 16 * 1024;

/// The transport of an upstream connection.
pub enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// One upstream connection between exchanges: its transport and whatever it has read ahead
/// (empty whenever it is reusable).
pub struct Connection {
    io: Io,
    read: BytesMut,
    /// The deadline of the current exchange's response head; made at the first exchange and
    /// moved on by each one after. tokio moves a registered timer later with one atomic
    /// operation, where a timer per exchange is put into its timer wheel and taken out again
    /// under the wheel's lock (benches/load/callgrind.sh: 42,091 -> 40,312 instructions per
    /// token request with this). Left armed between exchanges, it may wake a task once, late
    /// and harmlessly.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    pub fn new(io: Io) -> Connection {
        Connection {
            io,
            read: BytesMut::new(),
            timer: None,
        }
    }

    fn arm_timer(&mut self, deadline: Instant) {
        match &mut self.timer {
            Some(timer) if timer.deadline() != deadline => timer.as_mut().reset(deadline),
            Some(_) => {}
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.timer {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    /// Whether an idle connection can still carry a request: the upstream has neither closed
    /// it nor sent anything unasked. Costs no system call unless the socket became readable
    /// since it was last drained (tokio keeps its readiness).
    pub fn is_usable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        // Ready means closed, an error, or bytes nobody asked for.
        Pin::new(&mut self.io)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    /// The connection, if it [`is_usable`](Connection::is_usable).
    pub fn usable(mut self) -> Option<Connection> {
        self.is_usable().then_some(self)
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
            self.read.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }
}

/// Why an exchange failed. The connection is closed in every case.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream connection: {0}")]
    Io(#[source] io::Error),
    #[error("upstream response: {0}")]
    Framing(#[source] FramingError),
    #[error("the upstream closed the connection before a complete response head")]
    ClosedBeforeHead,
    #[error("the upstream closed the connection before the end of the response body")]
    IncompleteBody,
    #[error("request body: {0}")]
    RequestBody(#[source] BoxError),
    #[error("the request body did not match its declared length")]
    RequestBodyLength,
    #[error("no response head before the deadline")]
    TimedOut,
}

/// A request ready to send: its head encoded once (a retry sends the same bytes) and its
/// body, taken only when the head has gone out.
pub struct Outgoing<B> {
    method: Method,
    head: Bytes,
    body: Option<B>,
    /// `Some(n)`: `Content-Length: n` was written; `None`: chunked.
    length: Option<u64>,
}

impl<B: Body<Data = Bytes>> Outgoing<B> {
    /// `path` is the origin-form target; `req`'s fields named in `left_out` are not sent;
    /// `more` are fields written after `req`'s own; framing headers in `req` are replaced by
    /// the body's.
    pub fn new<'a>(
        req: Request<B>,
        path: &str,
        left_out: &[HeaderName],
        more: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    ) -> Outgoing<B> {
        let (parts, body) = req.into_parts();
        let length = if body.is_end_stream() {
            Some(0)
        } else {
            body.size_hint().exact()
        };
        // In the thread's shared buffer: a head of its own would be an allocation for its
        // bytes and another as it is frozen into `Bytes` (a vector with room to spare is
        // given a shared header then).
        let head = crate::thread_bytes::write(codec::HEAD_ROOM + path.len(), |head| {
            codec::encode_head(
                head,
                &parts.method,
                path,
                &parts.headers,
                left_out,
                more,
                length,
            )
        });
        Outgoing {
            method: parts.method,
            head,
            body: (length != Some(0)).then_some(body),
            length,
        }
    }

    /// Whether the request may go out again on another connection after this one failed
    /// without a byte of response: an idempotent method (RFC 9110 §9.2.2) and no body (a
    /// body is streamed once; `send` takes it).
    pub fn may_retry(&self) -> bool {
        self.length == Some(0) && self.method.is_idempotent()
    }
}

/// The outcome of a failed exchange: the error, and whether the upstream sent no byte of a
/// response.
pub struct Failed {
    pub error: Error,
    pub nothing_received: bool,
}

impl Failed {
    /// Whether the upstream closed the connection (or failed it) without a byte of response:
    /// on a connection reused from idle, the sign that the upstream had closed it meanwhile.
    /// A timeout is not: the deadline is spent, whatever was received.
    pub fn closed_unanswered(&self) -> bool {
        self.nothing_received && !matches!(self.error, Error::TimedOut)
    }
}

/// Sends `req` on `conn` and reads the response head, which must arrive by `deadline`
/// ([`Error::TimedOut`]). The body streams from `conn`; a reusable connection goes to
/// `home` once the body has been read whole.
// A function returning an `async move` block, not an `async fn`, which would keep each
// argument twice in its future (rust-lang/rust#62958).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would hold its arguments twice"
)]
pub fn send<B>(
    mut conn: Connection,
    req: &mut Outgoing<B>,
    home: Home,
    deadline: Instant,
) -> impl Future<Output = Result<Response<ResponseBody>, Failed>>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    async move {
        let mut writer = Writer::new(req.head.clone(), req.length, req.body.is_some());
        // Start after the other tasks that are ready: tokio runs a yielded task again only once
        // it has polled its I/O driver, so the upstream requests of everything that arrived
        // together go out together. An upstream on the same CPU then wakes once per batch instead
        // of preempting the worker at every request (benches/load/run.sh, the upstream on the
        // worker's CPU: 0.83 context switches per request without this, 0.455 with it, the hyper
        // floor's figure; with a token 0.76x nginx without, 0.80x with).
        tokio::task::yield_now().await;
        conn.arm_timer(deadline);
        let mut body_slot = req.body.take();
        // Any byte from the upstream, interim responses included.
        let mut received = false;
        let head = poll_fn(|cx| {
            loop {
                // Write side: the queue out, then the next body frame into it.
                let mut wrote = false;
                if !writer.finished() {
                    match writer.poll(cx, &mut conn.io, &mut body_slot) {
                        Poll::Ready(Ok(progressed)) => wrote = progressed,
                        Poll::Ready(Err(error)) => {
                            return Poll::Ready(Err(Failed {
                                nothing_received: !received,
                                error,
                            }));
                        }
                        Poll::Pending => {}
                    }
                }
                // Read side: a head may come at any time, even before the body has gone.
                match conn.poll_read_more(cx) {
                    Poll::Ready(Ok(0)) => {
                        // A head already complete was parsed when it arrived.
                        return Poll::Ready(Err(Failed {
                            nothing_received: !received,
                            error: Error::ClosedBeforeHead,
                        }));
                    }
                    Poll::Ready(Ok(_)) => {
                        received = true;
                        match codec::parse_head(&mut conn.read, &req.method) {
                            Ok(Some(head)) => return Poll::Ready(Ok(head)),
                            Ok(None) => continue,
                            Err(e) => {
                                return Poll::Ready(Err(Failed {
                                    nothing_received: false,
                                    error: Error::Framing(e),
                                }));
                            }
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(Failed {
                            nothing_received: !received,
                            error: Error::Io(e),
                        }));
                    }
                    Poll::Pending if wrote => continue,
                    Poll::Pending => {}
                }
                return match conn.poll_timer(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(Failed {
                        nothing_received: !received,
                        error: Error::TimedOut,
                    })),
                    Poll::Pending => Poll::Pending,
                };
            }
        })
        .await?;
        // A response before the whole request went out: the rest is not sent, so the upstream
        // may still be waiting for it: the connection cannot be reused.
        let reusable = head.reusable && writer.finished();
        let body = ResponseBody::new(conn, head.framing, reusable, home);
        let mut resp = Response::new(body);
        *resp.status_mut() = head.status;
        *resp.version_mut() = head.version;
        *resp.headers_mut() = head.headers;
        Ok(resp)
    }
}
