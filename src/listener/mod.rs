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

mod connection;
mod deadline;
mod first_bytes;
mod quiet;
mod served;
mod stop;
mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::http::Body;
use crate::shutdown::stopped;
use connection::Connection;
use quiet::Quiet;
use stop::Stop;
pub use workers::Workers;

pub use crate::config::ConnectionLimits;

/// What the handler learns about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The request arrived over TLS.
    pub tls: bool,
}
/// Binds `addr` once per worker (`n`) with `SO_REUSEPORT`, so that each worker accepts its
/// own connections and the kernel spreads new connections over them: a new connection costs
/// no hand-off between threads. The first socket takes the port (the kernel picks one for
/// port 0) and the others join it. A port that another program holds is refused as it would
/// be without sharing, even if that program allows sharing it: a probe bound without
/// `SO_REUSEPORT` checks first, so that a second gateway started by mistake cannot quietly
/// take half the traffic.
pub fn bind_shared(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = |addr: SocketAddr, shared: bool| -> std::io::Result<Socket> {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        #[cfg(target_os = "linux")]
        s.set_reuse_port(shared)?;
        #[cfg(not(target_os = "linux"))]
        let _ = shared;
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        Ok(s)
    };
    if addr.port() != 0 {
        drop(socket(addr, false)?);
    }
    let first = socket(addr, true)?;
    first.listen(BACKLOG)?;
    let bound = first
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP socket"))?;
    let mut out = vec![std::net::TcpListener::from(first)];
    // Elsewhere SO_REUSEPORT does not spread connections: one socket, one accepting worker.
    let n = if cfg!(target_os = "linux") {
        n.max(1)
    } else {
        1
    };
    for _ in 1..n {
        let s = socket(bound, true)?;
        s.listen(BACKLOG)?;
        out.push(s.into());
    }
    Ok(out)
}

/// Connections waiting for `accept` per socket (the kernel caps it at `somaxconn`).
const BACKLOG: i32 = 1024;

/// The HTTP/1.1 and HTTP/2 settings every connection of a listener shares: one builder for
/// each protocol, as a connection's first bytes tell which it speaks (`first_bytes`).
pub(super) struct Builders {
    pub(super) http1: http1::Builder,
    pub(super) http2: http2::Builder<TokioExecutor>,
}

fn http_builders(limits: &ConnectionLimits) -> Arc<Builders> {
    let mut h1 = http1::Builder::new();
    h1
        // Each request head's deadline is the connection task's (`connection::Event::HeadDue`):
        // hyper's own boxes, registers and cancels a timer for every request.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192));
    // hyper allows defaults::MAX_HEADERS (its own default) unless told otherwise; telling it the same number
    // makes it fill a fresh header-index buffer for every request instead of using its inline
    // one, so only a different limit is passed on.
    if limits.max_headers as u64 != crate::config::defaults::MAX_HEADERS {
        h1.max_headers(limits.max_headers);
    }
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    Arc::new(Builders {
        http1: h1,
        http2: h2,
    })
}

/// Serves `listener` on the caller's runtime until `shutdown` turns true, then drains: open
/// connections finish their in-flight requests (bounded by `drain_grace`) and the function
/// returns. `make_handler` is called once per connection; the handler it returns serves that
/// connection's requests (and may keep per-connection state).
pub async fn serve<M, H, F>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    make_handler: M,
) where
    M: Fn(ConnInfo) -> H + Clone + Send + Sync + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builders = http_builders(&limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    accept(
        listener,
        Arc::clone(&builders),
        Arc::clone(&permits),
        tls,
        limits.clone(),
        shutdown.clone(),
        make_handler,
    )
    .await;
    stopped(&mut shutdown).await;
    drain(&permits, &limits).await;
}

/// Serves `listeners` ([`bind_shared`]), one per worker, each accepting on its worker's event
/// loop, where its connections then run: a connection never changes thread. The connection
/// cap is shared. Returns once `shutdown` turned true and the connections drained.
pub async fn serve_on_workers<M, H, F>(
    listeners: Vec<std::net::TcpListener>,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    workers: &Workers,
    make_handler: M,
) where
    M: Fn(ConnInfo) -> H + Clone + Send + Sync + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builders = http_builders(&limits);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    for (i, listener) in listeners.into_iter().enumerate() {
        let (builders, permits, tls, limits, shutdown, make_handler) = (
            Arc::clone(&builders),
            Arc::clone(&permits),
            tls.clone(),
            limits.clone(),
            shutdown.clone(),
            make_handler.clone(),
        );
        // Registered with the event loop of the worker it runs on.
        workers.run_on(i, async move {
            match TcpListener::from_std(listener) {
                Ok(listener) => {
                    accept(
                        listener,
                        builders,
                        permits,
                        tls,
                        limits,
                        shutdown,
                        make_handler,
                    )
                    .await
                }
                Err(e) => tracing::error!(error = %e, "a worker cannot listen"),
            }
        });
    }
    stopped(&mut shutdown).await;
    drain(&permits, &limits).await;
}

/// Accepts until `shutdown`, each connection a task of its own on the current runtime, holding
/// one of `permits` for its life.
async fn accept<M, H, F>(
    listener: TcpListener,
    builders: Arc<Builders>,
    permits: Arc<Semaphore>,
    tls: Option<TlsAcceptor>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
    make_handler: M,
) where
    M: Fn(ConnInfo) -> H + Clone + Send + Sync + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let inherits_nodelay = nodelay_inherited(&listener);
    // The process's stop notification, waited for once for the loop's life; behind `Quiet`,
    // polled only once it has woken the task (a wait begun afresh for each connection
    // registered and left the watch's waiter list, which every worker shares, each time).
    let mut process_stop = pin!(Quiet::new(stopped(&mut shutdown)));
    let stop = Arc::new(Stop::default());
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = process_stop.as_mut() => break,
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
        // The cap is shared by the workers' sockets, and the kernel decides which socket a
        // connection waits on: so each loop accepts first, then waits for a place. A loop
        // that waited for a place before accepting could hold the one free place while the
        // next connection waits in another worker's backlog. At most one accepted
        // connection per worker waits here, unserved, as it would in the backlog.
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => tokio::select! {
                biased;
                () = process_stop.as_mut() => break,
                permit = Arc::clone(&permits).acquire_owned() => permit.expect("semaphore never closed"),
            },
        };
        if !inherits_nodelay {
            let _ = stream.set_nodelay(true);
        }
        let task = Connection {
            builders: Arc::clone(&builders),
            tls: tls.clone(),
            limits: limits.clone(),
            stop: Arc::clone(&stop),
            peer,
        };
        let make_handler = make_handler.clone();
        // Boxed: the connection's future is about 2 KB, and spawning moves a future several
        // times before it first runs (about 5k instructions of copying per connection when
        // it was 3 KB).
        tokio::spawn(Box::pin(async move {
            task.run(stream, make_handler).await;
            drop(permit);
        }));
    }
    // Every connection this loop accepted starts to drain.
    stop.signal();
}

/// Sets `TCP_NODELAY` on `listener`, and says whether the sockets it accepts have it from
/// there: Linux copies it to them, which saves a system call per connection (elsewhere each
/// accepted socket is set on its own). Without it, a response written in two parts waits for
/// the client's delayed ACK.
fn nodelay_inherited(listener: &TcpListener) -> bool {
    cfg!(target_os = "linux")
        && socket2::SockRef::from(listener)
            .set_tcp_nodelay(true)
            .is_ok()
}

/// Waits until every connection is done (each holds a permit), bounded by the grace period.
async fn drain(permits: &Semaphore, limits: &ConnectionLimits) {
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_grace, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("drain grace period elapsed with connections still open");
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// One socket per worker on one port, and the kernel spreads connections over them; a
    /// port another socket holds is refused, shared or not.
    #[test]
    fn shared_listeners_split_connections_and_refuse_a_taken_port() {
        let listeners = bind_shared("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        assert_eq!(listeners[1].local_addr().unwrap(), addr);
        let mut clients = Vec::new();
        for _ in 0..32 {
            clients.push(std::net::TcpStream::connect(addr).unwrap());
        }
        let accepted: Vec<usize> = listeners
            .iter()
            .map(|l| std::iter::from_fn(|| l.accept().ok()).count())
            .collect();
        assert_eq!(accepted.iter().sum::<usize>(), 32, "{accepted:?}");
        assert!(
            accepted.iter().all(|n| *n > 0),
            "both sockets accept: {accepted:?}"
        );

        let err = bind_shared(addr, 2).expect_err("a port our own shared group holds");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let err = bind_shared(plain.local_addr().unwrap(), 2).expect_err("a port held plainly");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }

    /// The accept loop sets `TCP_NODELAY` once, on the listening socket: every socket it
    /// accepts must have it.
    #[tokio::test]
    async fn accepted_sockets_have_nodelay_from_the_listener() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert!(nodelay_inherited(&listener));
        let addr = listener.local_addr().unwrap();
        for _ in 0..3 {
            let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (accepted, _) = listener.accept().await.unwrap();
            assert!(accepted.nodelay().unwrap());
        }
    }
}
