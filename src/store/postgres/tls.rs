//! How a connection to the database is made: the URL, and TLS with libpq's `sslmode` meanings,
//! so that a URL means the same to Portcullis as to `psql`:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | not checked; with `ca_file`, its chain is |
//! | `require` | always | as `prefer` |
//! | `verify-ca` | always | its chain, against `ca_file` or the system roots |
//! | `verify-full` | always | its chain and that it names the URL's host |
//!
//! (libpq checks the chain under `prefer`/`require` when a root file exists; `ca_file` is that
//! file.) Whatever the mode, the handshake's signature is checked with the certificate's key.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PostgresConfig, Sslmode, split_sslmode};

/// What the URL's `sslmode` asks of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// The connection settings of `options` and the TLS connector its `sslmode` calls for.
/// Errors name no part of the URL but the offending `sslmode`.
pub fn connection(
    options: &PostgresConfig,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), String> {
    let (url, mode) = split_sslmode(&options.url)?;
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| format!("the PostgreSQL URL is not valid: {e}"))?;
    let root_file = options.ca_file.is_some();
    let (ssl_mode, check) = match mode {
        Sslmode::Disable => (SslMode::Disable, Check::Nothing),
        Sslmode::Prefer if root_file => (SslMode::Prefer, Check::Chain),
        Sslmode::Prefer => (SslMode::Prefer, Check::Nothing),
        Sslmode::Require if root_file => (SslMode::Require, Check::Chain),
        Sslmode::Require => (SslMode::Require, Check::Nothing),
        Sslmode::VerifyCa => (SslMode::Require, Check::Chain),
        Sslmode::VerifyFull => (SslMode::Require, Check::ChainAndName),
    };
    config.ssl_mode(ssl_mode);
    config.connect_timeout(options.connect_timeout);
    Ok((config, connector(options, check)?))
}

fn connector(options: &PostgresConfig, check: Check) -> Result<MakeRustlsConnect, String> {
    let provider = crate::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS to PostgreSQL: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Nothing => Arc::new(Lenient {
            provider,
            chain: None,
        }),
        Check::Chain | Check::ChainAndName => {
            let roots = crate::tls::roots(options.ca_file.as_deref())
                .map_err(|e| format!("TLS to PostgreSQL: {e}"))?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| format!("TLS to PostgreSQL: {e}"))?;
            match check {
                Check::ChainAndName => webpki,
                _ => Arc::new(Lenient {
                    provider,
                    chain: Some(webpki),
                }),
            }
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// The certificate check short of `verify-full`: none (`prefer` and `require` without a
/// root file, as libpq does: encrypted against a passive listener, not an active one), or the
/// chain only (`verify-ca`; webpki checks the chain before the name, so a name error means
/// the chain was good). The handshake's signature is checked either way.
#[derive(Debug)]
struct Lenient {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_words_are_libpqs() {
        let options = |url: &str, ca: bool| PostgresConfig {
            url: url.into(),
            pool_size: 1,
            connect_timeout: std::time::Duration::from_secs(1),
            statement_timeout: std::time::Duration::from_secs(1),
            ca_file: ca.then(|| "/nonexistent/ca.pem".into()),
        };
        for (mode, want) in [
            ("", Some(SslMode::Prefer)),
            ("?sslmode=disable", Some(SslMode::Disable)),
            ("?sslmode=prefer", Some(SslMode::Prefer)),
            ("?sslmode=require", Some(SslMode::Require)),
            ("?sslmode=verify-ca", Some(SslMode::Require)),
            ("?sslmode=verify-full", Some(SslMode::Require)),
            ("?sslmode=allow", None),
            ("?sslmode=bogus", None),
        ] {
            let got = connection(&options(&format!("postgres://u@h/db{mode}"), false));
            assert_eq!(
                got.as_ref().ok().map(|(c, _)| c.get_ssl_mode()),
                want,
                "{mode}"
            );
        }
        // A root file is read whenever a chain is checked: with one, `require` checks it.
        let err = connection(&options("postgres://u@h/db?sslmode=require", true))
            .err()
            .expect("the CA file is read");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        assert!(connection(&options("postgres://u@h/db?sslmode=disable", true)).is_ok());
    }
}
