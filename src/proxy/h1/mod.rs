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

pub mod codec;
mod pool;

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::client::TlsStream;

use self::codec::{ChunkedDecoder, Decoded, Framing, FramingError};
pub use self::pool::{Held, Home};

/// Boxed error of request bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes read from an upstream at a time, at least.
const READ_CHUNK: usize = 16 * 1024;
/// Most buffers handed to one `writev`.
const MAX_IOVECS: usize = 16;

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
    /// under the wheel's lock (about 1,000 instructions a request, benches/load/callgrind.sh).
    /// Left armed between exchanges, it may wake a task once, late and harmlessly.
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
    /// `path` is the origin-form target; `more` are fields written after `req`'s own; framing
    /// headers in `req` are replaced by the body's.
    pub fn new<'a>(
        req: Request<B>,
        path: &str,
        more: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
    ) -> Outgoing<B> {
        let (parts, body) = req.into_parts();
        let length = if body.is_end_stream() {
            Some(0)
        } else {
            body.size_hint().exact()
        };
        let mut head = BytesMut::new();
        codec::encode_head(&mut head, &parts.method, path, &parts.headers, more, length);
        Outgoing {
            method: parts.method,
            head: head.freeze(),
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
pub async fn send<B>(
    mut conn: Connection,
    req: &mut Outgoing<B>,
    home: Home,
    deadline: Instant,
) -> Result<Response<ResponseBody>, Failed>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut writer = Writer {
        queue: VecDeque::from([req.head.clone()]),
        chunked: req.length.is_none(),
        remaining: req.length.unwrap_or(0),
        done: req.body.is_none(),
    };
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
            if !writer.queue.is_empty() || !writer.done {
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
    let request_sent = writer.done && writer.queue.is_empty();
    let decoder = match head.framing {
        Framing::Empty => Decoder::Length(0),
        Framing::Length(n) => Decoder::Length(n),
        Framing::Chunked => Decoder::Chunked(ChunkedDecoder::default()),
        Framing::UntilClose => Decoder::UntilClose,
    };
    let mut body = ResponseBody {
        conn: Some(conn),
        decoder,
        reusable: head.reusable && request_sent,
        home: Some(home),
    };
    if body.is_end_stream() {
        body.finish();
    }
    let mut resp = Response::new(body);
    *resp.status_mut() = head.status;
    *resp.version_mut() = head.version;
    *resp.headers_mut() = head.headers;
    Ok(resp)
}

/// The request's bytes on their way out.
struct Writer {
    /// Encoded bytes not yet written.
    queue: VecDeque<Bytes>,
    chunked: bool,
    /// Bytes still owed under `Content-Length`.
    remaining: u64,
    /// The body's end has been queued.
    done: bool,
}

impl Writer {
    /// Writes what is queued, then queues the body's next frame, until either waits.
    /// `Ready(Ok(true))`: something was written.
    fn poll<B>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut Io,
        body: &mut Option<B>,
    ) -> Poll<Result<bool, Error>>
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<BoxError>,
    {
        let mut progressed = false;
        loop {
            // The next body frame first, so that the head and the first bytes of a body at
            // hand leave in one write.
            if !self.done && self.queue.len() < MAX_IOVECS - 2 {
                let Some(b) = body.as_mut() else {
                    self.done = true;
                    continue;
                };
                match Pin::new(b).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data()
                            && !data.is_empty()
                        {
                            self.queue_data(data)?;
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(Err(Error::RequestBody(e.into())));
                    }
                    Poll::Ready(None) => {
                        if self.chunked {
                            self.queue.push_back(Bytes::from_static(b"0\r\n\r\n"));
                        } else if self.remaining != 0 {
                            return Poll::Ready(Err(Error::RequestBodyLength));
                        }
                        *body = None;
                        self.done = true;
                        continue;
                    }
                    Poll::Pending if self.queue.is_empty() => {
                        return if progressed {
                            Poll::Ready(Ok(true))
                        } else {
                            Poll::Pending
                        };
                    }
                    Poll::Pending => {}
                }
            }
            if self.queue.is_empty() {
                return Poll::Ready(Ok(progressed));
            }
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let count = self.queue.len().min(MAX_IOVECS);
            for (slice, bytes) in slices.iter_mut().zip(&self.queue) {
                *slice = IoSlice::new(bytes);
            }
            let written = match Pin::new(&mut *io).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
                }
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
                Poll::Pending if progressed => return Poll::Ready(Ok(true)),
                Poll::Pending => return Poll::Pending,
            };
            progressed = true;
            self.advance(written);
        }
    }

    fn queue_data(&mut self, data: Bytes) -> Result<(), Error> {
        if self.chunked {
            let mut size = BytesMut::with_capacity(18);
            use std::fmt::Write as _;
            let _ = write!(size, "{:x}\r\n", data.len());
            self.queue.push_back(size.freeze());
            self.queue.push_back(data);
            self.queue.push_back(Bytes::from_static(b"\r\n"));
        } else {
            let len = data.len() as u64;
            if len > self.remaining {
                return Err(Error::RequestBodyLength);
            }
            self.remaining -= len;
            self.queue.push_back(data);
        }
        Ok(())
    }

    fn advance(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if written >= front.len() {
                written -= front.len();
                self.queue.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
}

enum Decoder {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// A response body read from its upstream connection as the client connection asks for it.
/// Dropped before its end, it closes the connection: a connection is never reused in an
/// unknown state.
pub struct ResponseBody {
    /// `None` once the body has ended.
    conn: Option<Connection>,
    decoder: Decoder,
    reusable: bool,
    home: Option<Home>,
}

impl ResponseBody {
    /// The body has ended: the connection goes home if nothing casts doubt on it (a response
    /// that allowed reuse, the whole request sent, no byte read beyond this response).
    fn finish(&mut self) {
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take())
            && self.reusable
            && conn.read.is_empty()
        {
            home.put(conn);
        }
    }

    fn fail(&mut self, e: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut this.decoder {
                Decoder::Length(0) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Decoder::Length(remaining) if !conn.read.is_empty() => {
                    let take = usize::try_from(*remaining)
                        .map_or(conn.read.len(), |r| r.min(conn.read.len()));
                    let data = conn.read.split_to(take).freeze();
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        // Now, not at the next poll: the server side may not ask again once
                        // the size hint says the body is complete.
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoder::Chunked(decoder) => match decoder.decode(&mut conn.read) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(t)) => {
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return this.fail(Error::Framing(e)),
                },
                Decoder::UntilClose if !conn.read.is_empty() => {
                    let data = conn.read.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Decoder::Length(_) | Decoder::UntilClose => {}
            }
            match ready!(conn.poll_read_more(cx)) {
                Ok(0) if matches!(this.decoder, Decoder::UntilClose) => {
                    this.conn = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::IncompleteBody),
                Ok(_) => {}
                Err(e) => return this.fail(Error::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none() || matches!(self.decoder, Decoder::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.conn, &self.decoder) {
            (None, _) => SizeHint::with_exact(0),
            (_, Decoder::Length(n)) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}
