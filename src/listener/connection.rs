//! One client connection: the TLS handshake, hyper's HTTP/1.1 and HTTP/2 serving, and the
//! connection's deadlines (the first request head, each later HTTP/1.1 head, idleness counted
//! in open requests, the close after an idle shutdown), with graceful shutdown on the stop
//! notification.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::deadline::WriteDeadline;
use super::first_bytes::{FirstBytes, Replay};
use super::quiet::Quiet;
use super::served::Served;
use super::stop::Stop;
use super::{Builders, ConnInfo, ConnectionLimits};
use crate::http::Body;

/// A connection's task: what it needs from its listener.
pub(super) struct Connection {
    pub(super) builders: Arc<Builders>,
    pub(super) tls: Option<TlsAcceptor>,
    pub(super) limits: ConnectionLimits,
    /// Its accept loop's stop notification.
    pub(super) stop: Arc<Stop>,
    pub(super) peer: SocketAddr,
}

impl Connection {
    // Functions returning an `async move` block, not `async fn`s, which would keep each
    // argument twice in their futures (rust-lang/rust#62958): the connection's task holds
    // both, and the copies made as it is spawned are of its whole size.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold its arguments twice"
    )]
    pub(super) fn run<M, H, F>(self, stream: TcpStream, make_handler: M) -> impl Future<Output = ()>
    where
        M: Fn(ConnInfo) -> H,
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        async move {
            // The handshake and the first request head share one deadline from here.
            let first_request_by = Instant::now() + self.limits.header_read_timeout;
            let info = ConnInfo {
                peer: self.peer,
                tls: self.tls.is_some(),
            };
            // Under TLS, so that a write counts as waiting only while the socket is full.
            let stream = WriteDeadline::new(stream, self.limits.write_timeout);
            match &self.tls {
                None => {
                    self.serve_io(stream, info, first_request_by, make_handler)
                        .await
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout_at(first_request_by, acceptor.accept(stream));
                    // The stream is boxed as the handshake's result is taken apart, in a
                    // statement of its own: a result matched in the `await`'s own `match`
                    // stays in the future (1,240 bytes) while the connection is served, and
                    // every connection's future, TLS or not, was that much larger
                    // (`bash benches/future_sizes.sh src/listener/`).
                    let tls_stream = match handshake.await {
                        Ok(Ok(tls_stream)) => Box::new(tls_stream),
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %self.peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    self.serve_io(tls_stream, info, first_request_by, make_handler)
                        .await
                }
            }
        }
    }

    /// Serves `io` once its first bytes have come; the handler is made only then, so a
    /// connection that sends nothing in time never has one.
    #[expect(
        clippy::manual_async_fn,
        reason = "an async fn would hold its arguments twice"
    )]
    fn serve_io<I, M, H, F>(
        self,
        mut io: I,
        info: ConnInfo,
        first_request_by: Instant,
        make_handler: M,
    ) -> impl Future<Output = ()>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        M: Fn(ConnInfo) -> H,
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        async move {
            // The protocol, from the first bytes (HTTP/2's preface or not), within the deadline
            // for the first request head.
            let first = tokio::select! {
                biased;
                first = FirstBytes::read(&mut io) => first,
                () = tokio::time::sleep_until(first_request_by) => {
                    tracing::debug!(peer = %info.peer, "no request head in time; closing");
                    return;
                }
                () = self.stop.wait() => return,
            };
            let first = match first {
                Ok(first) => first,
                Err(e) => {
                    tracing::debug!(peer = %info.peer, error = %e, "reading the first bytes failed");
                    return;
                }
            };
            let handler = make_handler(info);
            let activity = Arc::new(Activity::new());
            let in_flight = Arc::clone(&activity);
            let service = service_fn(move |req| Counted {
                guard: Some(InFlight::enter(Arc::clone(&in_flight))),
                response: handler(req),
            });
            let http1 = !first.is_http2();
            let io = TokioIo::new(Replay::new(first, io, info.tls));
            let conn = if http1 {
                Served::Http1 {
                    conn: self.builders.http1.serve_connection(io, service),
                }
            } else {
                Served::Http2 {
                    conn: Box::pin(self.builders.http2.serve_connection(io, service)),
                }
            };
            let mut conn = pin!(conn);
            let mut draining = false;
            // Once the connection is asked to close for idleness, it gets this long to do so.
            let mut close_by: Option<Instant> = None;
            // With no request open, an HTTP/1.1 connection is waiting for the next head, due
            // within the header-read timeout: past it, the connection closes (hyper's own
            // deadline, a timer boxed, registered and cancelled for every request, is off). So
            // the connection watches one quiet spell, the shorter of that and the idle timeout:
            // one timer, sleeping once per spell, whatever the number of requests.
            let (quiet_for, quiet_event) =
                if http1 && self.limits.header_read_timeout <= self.limits.idle_timeout {
                    (self.limits.header_read_timeout, Event::HeadDue)
                } else {
                    (self.limits.idle_timeout, Event::Idle)
                };
            loop {
                // The rare events, behind `Quiet`: the task's many wake-ups for the connection
                // itself do not poll them. The first-request deadline is watched only until a
                // request has come: the connection is polled first, so a request sent with the
                // connection is already seen, and its timer is never made (one timer fewer to
                // put into tokio's wheel and take out again on most new connections).
                let event = Quiet::new(async {
                    tokio::select! {
                        _ = tokio::time::sleep_until(first_request_by), if !activity.any_request() => Event::FirstRequestDue,
                        _ = self.stop.wait(), if !draining => Event::Stop,
                        _ = activity.idle_for(quiet_for), if !draining => quiet_event,
                        _ = sleep_until_some(close_by) => Event::CloseDue,
                    }
                });
                let event = tokio::select! {
                    biased;
                    result = conn.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, peer = %info.peer, "connection ended with an error");
                        }
                        return;
                    }
                    event = event => event,
                };
                match event {
                    Event::FirstRequestDue => {
                        if !activity.any_request() {
                            // Nothing (or only a protocol preface, or a trickle) by the deadline.
                            tracing::debug!(peer = %info.peer, "no request head in time; closing");
                            return;
                        }
                    }
                    Event::HeadDue => {
                        // No request open, and no whole head since the last one's response.
                        tracing::debug!(peer = %info.peer, "no request head in time; closing");
                        return;
                    }
                    Event::Stop => {
                        draining = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Event::Idle => {
                        draining = true;
                        close_by = Some(Instant::now() + self.limits.header_read_timeout);
                        conn.as_mut().graceful_shutdown();
                    }
                    Event::CloseDue => {
                        tracing::debug!(peer = %info.peer, "idle connection did not close in time");
                        return;
                    }
                }
            }
        }
    }
}

/// What a connection's task waits for beside the connection itself.
#[derive(Clone, Copy)]
enum Event {
    /// The deadline for the first request head.
    FirstRequestDue,
    /// An HTTP/1.1 connection's next request head is overdue (no request open for the
    /// header-read timeout).
    HeadDue,
    /// The listener is draining.
    Stop,
    /// No request open for the idle timeout.
    Idle,
    /// The close after an idle shutdown is overdue.
    CloseDue,
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The requests of one connection: how many are open (from the head until the response body
/// is sent or dropped), whether there ever was one, and when the last one closed.
/// Bytes that move without a request (HTTP/2 PINGs, SETTINGS, a trickle) do not count.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    any: AtomicBool,
    /// Whether [`Activity::idle_for`] waits, with no timer, for the open requests to end
    /// (and `ended` holds its waker).
    watching: AtomicBool,
    ended: Mutex<Option<Waker>>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            any: AtomicBool::new(false),
            watching: AtomicBool::new(false),
            ended: Mutex::new(None),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn any_request(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// Resolves once no request has been open for `timeout`.
    ///
    /// While a request is open, idleness cannot begin, so no timer is armed: the last open
    /// request's end wakes this instead. A connection that serves one request and closes
    /// (as many legacy clients use them) then never puts a timer into tokio's wheel and
    /// takes it out again (the `timers` piece of a new connection per request, built without
    /// LTO, 1,701 → 1,195 instructions: `benches/load/callgrind.sh`). On a
    /// keep-alive connection the timer, once armed, sleeps from one quiet spell to the next
    /// whatever requests come and go.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            std::future::poll_fn(|cx| self.poll_no_request_open(cx)).await;
            let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + timeout;
            if Instant::now() >= deadline && self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Ready while no request is open; else pending until the last open one ends.
    fn poll_no_request_open(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            return Poll::Ready(());
        }
        lock(&self.ended).replace(cx.waker().clone());
        self.watching.store(true, Ordering::SeqCst);
        // The last request may have ended before `watching` was set, and then not woken
        // this: look again. (SeqCst on both sides: of this store and the look, and of the
        // request's end and its look at `watching`, one sees the other.)
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            self.watching.store(false, Ordering::SeqCst);
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// A request ends: the last open one wakes the idle watch if it waits for that.
    fn end_request(&self) {
        self.touch();
        // `watching` is read before it is swapped: a plain load on the usual request end,
        // with the watch's timer already armed.
        if self.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.watching.load(Ordering::SeqCst)
            && self.watching.swap(false, Ordering::SeqCst)
            && let Some(waker) = lock(&self.ended).take()
        {
            waker.wake();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pin_project_lite::pin_project! {
    /// A handler's response future that opens its request on the connection's [`Activity`];
    /// the request stays open in the response body until that is sent.
    /// (An `async` block around the handler's future would hold that future twice over.)
    struct Counted<F> {
        guard: Option<InFlight>,
        #[pin]
        response: F,
    }
}

impl<F: Future<Output = Response<Body>>> Future for Counted<F> {
    type Output = Result<Response<CountedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.response.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|inner| CountedBody { inner, guard })))
    }
}

/// A response body that keeps its request open until its last frame is taken (or it is
/// dropped, when the connection ends).
struct CountedBody {
    inner: Body,
    guard: Option<InFlight>,
}

impl hyper::body::Body for CountedBody {
    type Data = bytes::Bytes;
    type Error = <Body as hyper::body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if !matches!(frame, Some(Ok(_))) {
            self.guard.take();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Counts a request as open until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn enter(activity: Arc<Activity>) -> InFlight {
        // No clock read here: idleness is only judged with no request open, and the last
        // request's end (`drop`) is what it runs from.
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        activity.any.store(true, Ordering::Relaxed);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Idleness counts open requests, on tokio's clock: a request open longer than the idle
    /// timeout keeps the connection, and the timeout runs from the request's end.
    #[tokio::test(start_paused = true)]
    async fn idle_time_runs_from_the_last_request() {
        let activity = Arc::new(Activity::new());
        let timeout = Duration::from_secs(60);
        let start = Instant::now();
        let request = InFlight::enter(Arc::clone(&activity));
        tokio::time::advance(Duration::from_secs(300)).await;
        let idle = activity.idle_for(timeout);
        tokio::pin!(idle);
        assert!(
            futures_poll_once(idle.as_mut()).await.is_pending(),
            "a request is open"
        );
        drop(request);
        let ended = Instant::now();
        idle.await;
        assert!(
            Instant::now() >= ended + timeout,
            "idle from the request's end"
        );
        assert!(activity.any_request());
        assert!(Instant::now() - start >= Duration::from_secs(360));
    }

    /// While a request is open the idle watch arms no timer, however long the request takes;
    /// the request's end wakes it, and from then the timer runs.
    #[tokio::test(start_paused = true)]
    async fn an_open_request_arms_no_idle_timer_and_its_end_wakes_the_watch() {
        #[derive(Default)]
        struct Wakes(AtomicUsize);
        impl std::task::Wake for Wakes {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let activity = Arc::new(Activity::new());
        let timeout = Duration::from_secs(60);
        let request = InFlight::enter(Arc::clone(&activity));
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut idle = pin!(activity.idle_for(timeout));
        let poll = |idle: Pin<&mut _>| {
            std::future::Future::poll(idle, &mut Context::from_waker(&waker)).is_ready()
        };
        assert!(!poll(idle.as_mut()));
        // A timer would have fired (and woken the watch) by now.
        tokio::time::advance(timeout * 3).await;
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            0,
            "no timer while a request is open"
        );
        assert!(!poll(idle.as_mut()));
        drop(request);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the request's end wakes it"
        );
        assert!(!poll(idle.as_mut()), "idle only from the request's end");
        tokio::time::advance(timeout).await;
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2, "then the timer runs");
        assert!(poll(idle.as_mut()));
    }

    /// Polls a future once.
    async fn futures_poll_once<F: Future + Unpin>(mut f: F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut f).poll(cx))).await
    }
}
