//! Opening a connection for the lean HTTP/1.1 client: the upstream's addresses tried in
//! turn within the connect timeout, `TCP_NODELAY`, and for `https://` a rustls handshake with
//! ALPN `http/1.1` and the upstream's host name.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::h1::{Connection, Io};

/// How to reach one upstream.
#[derive(Clone)]
pub struct Dialer {
    host: Arc<str>,
    port: u16,
    timeout: Duration,
    /// For `https://` upstreams.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Dialer {
    /// `host` as in the URL (an IPv6 address in brackets), and a client config for HTTPS.
    pub fn new(
        host: &str,
        port: u16,
        timeout: Duration,
        tls: Option<rustls::ClientConfig>,
    ) -> Result<Dialer, rustls::pki_types::InvalidDnsNameError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let tls = match tls {
            Some(mut config) => {
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = match host.parse::<IpAddr>() {
                    Ok(ip) => ServerName::IpAddress(ip.into()),
                    Err(_) => ServerName::try_from(host.to_owned())?,
                };
                Some((TlsConnector::from(Arc::new(config)), name))
            }
            None => None,
        };
        Ok(Dialer {
            host: host.into(),
            port,
            timeout,
            tls,
        })
    }

    /// A new connection. Not reaching the upstream within the connect timeout is an
    /// `io::ErrorKind::TimedOut` error (504 to the client); anything else another (502).
    pub async fn connect(&self) -> io::Result<Connection> {
        let tcp = tokio::time::timeout(self.timeout, self.tcp())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        tcp.set_nodelay(true)?;
        let io = match &self.tls {
            None => Io::Plain(tcp),
            Some((connector, name)) => {
                Io::Tls(Box::new(connector.connect(name.clone(), tcp).await?))
            }
        };
        Ok(Connection::new(io))
    }

    /// The first address that accepts, in the resolver's order.
    async fn tcp(&self) -> io::Result<TcpStream> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return TcpStream::connect(SocketAddr::new(ip, self.port)).await;
        }
        let mut last = None;
        for addr in tokio::net::lookup_host((&*self.host, self.port)).await? {
            match TcpStream::connect(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the host name has no address")
        }))
    }
}
