//! The least a reverse proxy built on hyper 1 and tokio does: HTTP/1.1 only, one
//! single-threaded event loop, one upstream connection per client connection, no routing,
//! no authorization, no header rewriting, no limits, no timers, no metrics. The load harness
//! (`benches/load/run.sh`) measures it beside nginx and Portcullis, so that the part of a gap
//! that is the HTTP stack's and the part that is Portcullis' own work can be told apart.
//!
//! With `lean`, the upstream side is Portcullis' own HTTP/1.1 client (`portcullis::proxy::h1`)
//! instead of hyper's: hyper's server and that client with nothing between them, the most
//! Portcullis' structure can do on the machine, so what separates Portcullis from it is
//! Portcullis' own work alone.
//!
//!   cargo run --release --example hyper_floor -- LISTEN_ADDR UPSTREAM_ADDR [lean]

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use portcullis::proxy::h1::{self, Connection, Held, Home, Io, Outgoing, ResponseBody};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::time::{Duration, Instant};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: hyper_floor LISTEN_ADDR UPSTREAM_ADDR [lean]");
        std::process::exit(2);
    };
    let lean = match args.next().as_deref() {
        None => false,
        Some("lean") => true,
        Some(other) => {
            eprintln!("hyper_floor: unknown argument {other:?} (only \"lean\")");
            std::process::exit(2);
        }
    };
    let parse = |s: &str| {
        s.parse::<SocketAddr>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (listen, upstream) = (parse(&listen)?, parse(&upstream)?);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream, lean))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr, lean: bool) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (client, _) = listener.accept().await?;
        client.set_nodelay(true)?;
        tokio::spawn(async move {
            let served = if lean {
                lean_connection(client, upstream).await
            } else {
                proxy_connection(client, upstream).await
            };
            if let Err(e) = served {
                eprintln!("hyper_floor: {e}");
            }
        });
    }
}

async fn proxy_connection(client: TcpStream, upstream: SocketAddr) -> Result<(), hyper::Error> {
    let Ok(up) = TcpStream::connect(upstream).await else {
        return Ok(());
    };
    let _ = up.set_nodelay(true);
    let (sender, conn) = http1::handshake::<_, Incoming>(TokioIo::new(up)).await?;
    tokio::spawn(conn);
    let sender = Arc::new(Mutex::new(sender));
    let service = service_fn(move |mut req: Request<Incoming>| {
        let sender = Arc::clone(&sender);
        async move {
            let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
            *req.uri_mut() = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
            let mut sender = sender.lock().await;
            sender.ready().await?;
            sender.send_request(req).await
        }
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await
}

/// The same with Portcullis' upstream client: the connection is held by the client
/// connection between requests (and left to the worker's idle pool after), as in Portcullis.
/// The upstream request is encoded at the call, as Portcullis does: hyper reads once more
/// before it polls the future, and a request still holding slices of its read buffer then
/// makes it allocate a new one.
async fn lean_connection(client: TcpStream, upstream: SocketAddr) -> Result<(), hyper::Error> {
    let held = Arc::new(Held::default());
    let service = service_fn(move |req: Request<Incoming>| {
        let target = req.uri().path_and_query().cloned();
        let path = target.as_ref().map_or("/", |pq| pq.as_str());
        let out = Outgoing::new(req, path, &[], std::iter::empty());
        lean_send(out, Arc::clone(&held), upstream)
    });
    hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(client), service)
        .await
}

async fn lean_send(
    mut out: Outgoing<Incoming>,
    held: Arc<Held>,
    upstream: SocketAddr,
) -> Result<Response<ResponseBody>, std::io::Error> {
    let conn = match held.take(0) {
        Some(conn) => conn,
        None => {
            let up = TcpStream::connect(upstream).await?;
            up.set_nodelay(true)?;
            Connection::new(Io::Plain(up))
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    h1::send(conn, &mut out, Home::new(held, 0), deadline)
        .await
        .map_err(|failed| std::io::Error::other(failed.error))
}
