//! A test certificate authority (rcgen), for TLS listeners, HTTPS upstreams and TLS to the
//! database.

use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::CertificateDer;

/// A test certificate authority that signs leaves for localhost and 127.0.0.1.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

impl Ca {
    pub fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Writes a fresh leaf certificate for localhost and 127.0.0.1 and its key to `cert` and
    /// `key`.
    pub fn leaf(&self, cert: &Path, key: &Path) {
        self.leaf_for(&["localhost", "127.0.0.1"], cert, key)
    }

    /// Writes a fresh leaf certificate for `names` and its key to `cert` and `key`.
    pub fn leaf_for(&self, names: &[&str], cert: &Path, key: &Path) {
        let leaf_key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let leaf = params.signed_by(&leaf_key, &self.issuer).unwrap();
        std::fs::write(cert, leaf.pem()).unwrap();
        std::fs::write(key, leaf_key.serialize_pem()).unwrap();
    }

    pub fn roots(&self) -> rustls::RootCertStore {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(self.pem.as_bytes()).unwrap())
            .unwrap();
        roots
    }

    pub fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> rustls::ClientConfig {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(self.roots())
        .with_no_client_auth()
    }
}
