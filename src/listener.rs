//! Accept loops: one task per connection (the TLS handshake runs inside it), HTTP/1.1 and
//! HTTP/2 on the same port, a connection cap whose permit travels with the task, and graceful
//! drain on shutdown: signal every connection, then wait for the last one, bounded by a grace
//! period.
//!
//! Every connection has a deadline on every path: the TLS handshake and the first request
//! head must arrive within the header-read timeout (whatever protocol the client speaks, and
//! however slowly it trickles bytes); a connection with no request open (from its head until
//! its response body is sent) for the idle timeout is closed, whatever control frames (HTTP/2
//! PINGs) still move; a write the client does not read within the write timeout fails the
//! connection. Request bodies and response heads are bounded by the request timeout, above
//! this layer.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use crate::http::Body;

/// The request-header count hyper's HTTP/1 parser enforces by default.
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// Per-listener connection settings.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_connections: usize,
    /// Time allowed for the TLS handshake and the first request head together, and for each
    /// later request head; over HTTP/1.1 it also closes keep-alive connections that send
    /// nothing.
    pub header_read_timeout: Duration,
    /// A connection with no request open for this long is closed.
    pub idle_timeout: Duration,
    /// Time a write may wait for the client to read; longer fails the connection.
    pub write_timeout: Duration,
    /// Largest HTTP/1.1 request head.
    pub max_header_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
    /// How long in-flight requests may take to finish after shutdown is signalled.
    pub drain_grace: Duration,
}

impl ConnectionLimits {
    /// Settings for small internal listeners (the admin listener, the demo API).
    pub fn internal(max_connections: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            max_header_bytes: 32 * 1024,
            max_headers: HYPER_DEFAULT_MAX_HEADERS,
            drain_grace: Duration::from_secs(5),
        }
    }
}

/// What the handler learns about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The request arrived over TLS.
    pub tls: bool,
}

/// Resolves once shutdown has been signalled (or its sender is gone).
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Serves `listener` until `shutdown` turns true, then drains: open connections
/// finish their in-flight requests (bounded by `drain_grace`) and the function returns.
/// `make_handler` is called once per connection; the handler it returns serves that
/// connection's requests (and may keep per-connection state). Connections run on `workers`
/// when given, else on the caller's runtime.
pub async fn serve<M, H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    workers: Option<Arc<Workers>>,
    make_handler: M,
) where
    M: Fn(ConnInfo) -> H + Clone + Send + Sync + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    // hyper allows HYPER_DEFAULT_MAX_HEADERS unless told otherwise; telling it the same number
    // makes it fill a fresh header-index buffer for every request instead of using its inline
    // one, so only a different limit is passed on.
    if limits.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(limits.max_headers);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections));

    loop {
        let permit = tokio::select! {
            _ = stopped(&mut shutdown) => break,
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("semaphore never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Resource exhaustion (EMFILE and friends): back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let task = Connection {
            builder: Arc::clone(&builder),
            tls: tls.clone(),
            limits: limits.clone(),
            shutdown: shutdown.clone(),
            peer,
        };
        let make_handler = make_handler.clone();
        match &workers {
            None => {
                tokio::spawn(async move {
                    task.run(stream, make_handler).await;
                    drop(permit);
                });
            }
            Some(workers) => {
                // Moved to the worker's event loop: deregistered here, registered there.
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot hand a connection to a worker");
                        continue;
                    }
                };
                workers.spawn(async move {
                    match TcpStream::from_std(stream) {
                        Ok(stream) => task.run(stream, make_handler).await,
                        Err(e) => tracing::warn!(error = %e, "worker cannot take a connection"),
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    // Every connection task holds a permit: all are back when the last connection is done.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_grace, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("drain grace period elapsed with connections still open");
    }
}

/// Threads that serve connections, each running a single-threaded tokio runtime: an event
/// loop of its own, as nginx's workers have. A connection, its requests, its upstream
/// connections and their timers all stay on one thread, with no work stealing and no
/// cross-thread wake-ups on the request path. A new connection goes to the worker with the
/// fewest open connections.
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    handle: tokio::runtime::Handle,
    open: Arc<AtomicUsize>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    stopped: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Workers {
    /// Starts `n` (at least one) worker threads named `{name}-N`.
    pub fn start(n: usize, name: &str) -> io::Result<Workers> {
        let mut workers = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stop_rx) = oneshot::channel::<()>();
            let (stopped_tx, stopped) = oneshot::channel();
            let handle = runtime.handle().clone();
            std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || {
                    // Runs the worker's tasks until told to stop (or until `Workers` is
                    // dropped); dropping the runtime then ends whatever is left.
                    let _ = runtime.block_on(stop_rx);
                    drop(runtime);
                    let _ = stopped_tx.send(());
                })?;
            workers.push(Worker {
                handle,
                open: Arc::new(AtomicUsize::new(0)),
                stop: Mutex::new(Some(stop)),
                stopped: Mutex::new(Some(stopped)),
            });
        }
        Ok(Workers { workers })
    }

    /// Runs a connection's task on the least busy worker.
    fn spawn<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
        else {
            return;
        };
        let open = OpenConnection::enter(Arc::clone(&worker.open));
        worker.handle.spawn(async move {
            task.await;
            drop(open);
        });
    }

    /// Stops every worker (tasks still running there are dropped) and waits for the threads
    /// to end.
    pub async fn stop(&self) {
        for w in &self.workers {
            if let Some(stop) = w.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let _ = stop.send(());
            }
        }
        for w in &self.workers {
            let stopped = w.stopped.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(stopped) = stopped {
                let _ = stopped.await;
            }
        }
    }
}

/// Counts a connection against its worker until its task ends or is dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn enter(open: Arc<AtomicUsize>) -> OpenConnection {
        open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(open)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    shutdown: watch::Receiver<bool>,
    peer: SocketAddr,
}

impl Connection {
    async fn run<M, H, F>(self, stream: TcpStream, make_handler: M)
    where
        M: Fn(ConnInfo) -> H,
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        // The handshake and the first request head share one deadline from here.
        let first_request_by = Instant::now() + self.limits.header_read_timeout;
        let info = ConnInfo {
            peer: self.peer,
            tls: self.tls.is_some(),
        };
        let handler = make_handler(info);
        // Under TLS, so that a write counts as waiting only while the socket is full.
        let stream = WriteDeadline::new(stream, self.limits.write_timeout);
        match &self.tls {
            None => self.serve_io(stream, info, first_request_by, handler).await,
            Some(acceptor) => {
                let handshake = tokio::time::timeout_at(first_request_by, acceptor.accept(stream));
                match handshake.await {
                    Ok(Ok(tls_stream)) => {
                        self.serve_io(tls_stream, info, first_request_by, handler)
                            .await
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn serve_io<I, H, F>(
        mut self,
        io: I,
        info: ConnInfo,
        first_request_by: Instant,
        handler: H,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let activity = Arc::new(Activity::new());
        let in_flight = Arc::clone(&activity);
        let service = service_fn(move |req| Counted {
            guard: Some(InFlight::enter(Arc::clone(&in_flight))),
            response: handler(req),
        });
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        let mut conn = pin!(conn);
        let mut draining = false;
        let mut awaiting_first = true;
        // Once the connection is asked to close for idleness, it gets this long to do so.
        let mut close_by: Option<Instant> = None;
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, peer = %info.peer, "connection ended with an error");
                    }
                    return;
                }
                _ = tokio::time::sleep_until(first_request_by), if awaiting_first => {
                    awaiting_first = false;
                    if !activity.any_request() {
                        // Nothing (or only a protocol preface, or a trickle) by the deadline.
                        tracing::debug!(peer = %info.peer, "no request head in time; closing");
                        return;
                    }
                }
                _ = stopped(&mut self.shutdown), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = activity.idle_for(self.limits.idle_timeout), if !draining => {
                    draining = true;
                    close_by = Some(Instant::now() + self.limits.header_read_timeout);
                    conn.as_mut().graceful_shutdown();
                }
                _ = sleep_until_some(close_by) => {
                    tracing::debug!(peer = %info.peer, "idle connection did not close in time");
                    return;
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The requests of one connection: how many are open (from the head until the response body
/// is sent or dropped), whether there ever was one, and when the last one opened or closed.
/// Bytes that move without a request (HTTP/2 PINGs, SETTINGS, a trickle) do not count.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    any: std::sync::atomic::AtomicBool,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            any: std::sync::atomic::AtomicBool::new(false),
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
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.started + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + timeout;
            let now = Instant::now();
            if now >= deadline && self.in_flight.load(Ordering::Relaxed) == 0 {
                return;
            }
            tokio::time::sleep_until(if now >= deadline {
                now + timeout
            } else {
                deadline
            })
            .await;
        }
    }
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
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.any.store(true, Ordering::Relaxed);
        activity.touch();
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A socket whose writes fail once one has waited `timeout` for the client to read: a
/// client that asks for a large response and never reads cannot hold its connection.
struct WriteDeadline<T> {
    inner: T,
    timeout: Duration,
    /// Armed while a write waits; dropped as soon as one makes progress.
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            waiting: None,
        }
    }

    /// Passes a write's outcome on; a `Pending` one arms (or checks) the deadline.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if result.is_ready() {
            self.waiting = None;
            return result;
        }
        let timeout = self.timeout;
        let timer = self
            .waiting
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.waiting = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read the response in time",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, result)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections go to the worker with the fewest open ones, each worker is a thread of its
    /// own, and a connection that ends frees its place.
    #[tokio::test]
    async fn connections_go_to_the_least_busy_worker() {
        let workers = Workers::start(2, "test-worker").unwrap();
        let thread_of = |hold: oneshot::Receiver<()>| {
            let (tx, rx) = oneshot::channel();
            workers.spawn(async move {
                let _ = tx.send(std::thread::current().name().map(str::to_owned));
                let _ = hold.await;
            });
            rx
        };
        let (release_a, hold_a) = oneshot::channel();
        let (_release_b, hold_b) = oneshot::channel();
        let a = thread_of(hold_a).await.unwrap().unwrap();
        let b = thread_of(hold_b).await.unwrap().unwrap();
        assert!(a.starts_with("test-worker-") && b.starts_with("test-worker-"));
        assert_ne!(a, b, "the second connection goes to the idle worker");
        // End the first; the next connection takes its worker, the one now idle.
        release_a.send(()).unwrap();
        let open = || {
            workers
                .workers
                .iter()
                .map(|w| w.open.load(Ordering::Relaxed))
                .sum::<usize>()
        };
        tokio::time::timeout(Duration::from_secs(10), async {
            while open() > 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the ended connection is no longer counted");
        let (_release_c, hold_c) = oneshot::channel();
        assert_eq!(thread_of(hold_c).await.unwrap().unwrap(), a);
        workers.stop().await;
    }
}
