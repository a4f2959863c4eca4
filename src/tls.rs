//! TLS for listeners and upstreams, with rustls and the ring provider.
//!
//! A listener's certificate and key are PEM files; [`ReloadingCert`] serves them to every
//! handshake and swaps in new ones when the files change (checked on SIGHUP and periodically),
//! without a restart and without a lock on the handshake path.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// The process-wide crypto provider: ring, chosen explicitly.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a certificate chain and its private key, and checks that they belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, e))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no certificate found"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let signing_key = provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| file_error(key, e))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified
        .keys_match()
        .map_err(|e| file_error(key, format!("the key does not match the certificate: {e}")))?;
    Ok(certified)
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A listener's certificate, reloadable at run time.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: ArcSwap<CertifiedKey>,
    seen: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl ReloadingCert {
    pub fn load(cert: &Path, key: &Path) -> Result<ReloadingCert, TlsError> {
        let loaded = load_certified_key(cert, key)?;
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: ArcSwap::from_pointee(loaded),
            seen: Mutex::new((modified(cert), modified(key))),
        })
    }

    /// Reloads when either file changed since the last load (or always, with `force`).
    /// A bad new pair keeps the old one in service and is reported.
    pub fn reload(&self, force: bool) -> Result<bool, TlsError> {
        let now_seen = (modified(&self.cert), modified(&self.key));
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if !force && *seen == now_seen {
            return Ok(false);
        }
        let loaded = load_certified_key(&self.cert, &self.key)?;
        self.current.store(Arc::new(loaded));
        *seen = now_seen;
        Ok(true)
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Server settings: TLS 1.3 and 1.2, ALPN `h2` then `http/1.1`.
pub fn server_config(cert: Arc<ReloadingCert>) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The roots of `ca_file` when given, else the system's.
pub fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| file_error(path, e))? {
                roots
                    .add(cert.map_err(|e| file_error(path, e))?)
                    .map_err(|e| file_error(path, e))?;
            }
            if roots.is_empty() {
                return Err(file_error(path, "no CA certificate found"));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // Unparsable system certificates are skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
    }
    Ok(roots)
}

/// Client settings for HTTPS upstreams: the roots of `ca_file` when given, else the system's.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots(ca_file)?)
        .with_no_client_auth())
}
