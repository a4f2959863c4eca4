//! The least a reverse proxy built on hyper 1 and tokio does: HTTP/1.1 only, one
//! single-threaded event loop, one upstream connection per client connection, no routing,
//! no authorization, no header rewriting, no limits, no timers, no metrics. The load harness
//! (`benches/load/run.sh`) measures it beside nginx and Portcullis, so that the part of a gap
//! that is the HTTP stack's and the part that is Portcullis' own work can be told apart.
//!
//!   cargo run --release --example hyper_floor -- LISTEN_ADDR UPSTREAM_ADDR

use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: hyper_floor LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let parse = |s: &str| {
        s.parse::<SocketAddr>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (listen, upstream) = (parse(&listen)?, parse(&upstream)?);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(listen, upstream))
}

async fn serve(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (client, _) = listener.accept().await?;
        client.set_nodelay(true)?;
        tokio::spawn(async move {
            if let Err(e) = proxy_connection(client, upstream).await {
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
