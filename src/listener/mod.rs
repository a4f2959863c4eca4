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
mod workers;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::http::Body;
use crate::shutdown::stopped;
use connection::Connection;
pub use workers::Workers;

pub use crate::config::ConnectionLimits;

/// What the handler learns about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The request arrived over TLS.
    pub tls: bool,
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
    // hyper allows defaults::MAX_HEADERS (its own default) unless told otherwise; telling it the same number
    // makes it fill a fresh header-index buffer for every request instead of using its inline
    // one, so only a different limit is passed on.
    if limits.max_headers as u64 != crate::config::defaults::MAX_HEADERS {
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
