//! The TLS acceptor of `tls:` listeners: rustls with the `ring` provider,
//! certificate chain and key from PEM files, optionally requiring client
//! certificates signed by `client_ca`.
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{BackendTlsConfig, TlsConfig};

/// rustls deprecates `ring`'s provider for lacking post-quantum key
/// exchange; the alternative, aws-lc-rs, needs cmake and clang to build.
#[allow(deprecated)]
pub fn acceptor(c: &TlsConfig) -> Result<TlsAcceptor> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_file_iter(&c.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("[tls] cert {}", c.cert.display()))?;
    if certs.is_empty() {
        bail!("[tls] cert {}: no certificate in the file", c.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&c.key).with_context(|| format!("[tls] key {}", c.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let builder = match &c.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(ca).with_context(|| format!("[tls] client_ca {}", ca.display()))?
            {
                roots.add(cert?)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).context("[tls] cert and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The TLS connector for `tls` pools: the backend's certificate must chain
/// to `[backend_tls] ca` and name the backend's IP address; the client
/// certificate, if configured, is presented to backends that ask.
#[allow(deprecated)]
pub fn connector(c: &BackendTlsConfig) -> Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&c.ca).with_context(|| format!("[backend_tls] ca {}", c.ca.display()))? {
        roots.add(cert?)?;
    }
    let builder = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let config = match (&c.cert, &c.key) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("[backend_tls] cert {}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).with_context(|| format!("[backend_tls] key {}", key.display()))?;
            builder.with_client_auth_cert(certs, key).context("[backend_tls] cert and key do not match")?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
