//! The TLS acceptor of `tls:` listeners: rustls with the `ring` provider,
//! certificate chain and key from PEM files, optionally requiring client
//! certificates signed by `client_ca`; and the connector of `tls` pools.
//! Both are built from the files at start and again at each reload (a
//! renewed certificate in place is picked up): new handshakes use the new
//! ones, established connections keep their session.
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

use crate::config::{BackendTlsConfig, TlsConfig};

/// rustls deprecates `ring`'s provider for lacking post-quantum key
/// exchange; the alternative, aws-lc-rs, needs cmake and clang to build.
#[allow(deprecated)]
pub fn server_config(c: &TlsConfig) -> Result<Arc<ServerConfig>> {
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
            let roots = roots(ca, "[tls] client_ca")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .with_context(|| format!("[tls] cert {} and key {} do not go together", c.cert.display(), c.key.display()))?;
    Ok(Arc::new(config))
}

/// The CA certificates of a PEM file (`what`: the setting, for errors).
fn roots(path: &std::path::Path, what: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let context = || format!("{what} {}", path.display());
    for cert in CertificateDer::pem_file_iter(path).with_context(context)? {
        roots.add(cert.with_context(context)?).with_context(context)?;
    }
    if roots.is_empty() {
        bail!("{}: no certificate in the file", context());
    }
    Ok(roots)
}

/// The listeners' server config, replaced by a reload.
pub struct Acceptor(ArcSwap<ServerConfig>);

impl Acceptor {
    pub fn new(c: &TlsConfig) -> Result<Acceptor> {
        Ok(Acceptor(ArcSwap::new(server_config(c)?)))
    }

    /// For one new connection.
    pub fn current(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.0.load_full())
    }

    pub fn replace(&self, config: Arc<ServerConfig>) {
        self.0.store(config);
    }
}

/// The TLS connector for `tls` pools: the backend's certificate must chain
/// to `[backend_tls] ca` and name the backend's IP address; the client
/// certificate, if configured, is presented to backends that ask.
#[allow(deprecated)]
pub fn connector(c: &BackendTlsConfig) -> Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let roots = roots(&c.ca, "[backend_tls] ca")?;
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
