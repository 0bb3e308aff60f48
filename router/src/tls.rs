//! Optional TLS termination (rustls) for deployments without a proxy in front.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use switchyard_config::TlsConfig;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// Builds the TLS acceptor from the PEM files; errors name the file and the problem.
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, String> {
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(&config.cert_path)
            .map_err(|e| format!("server.tls.cert_path = {}: {e}", config.cert_path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("server.tls.cert_path = {}: {e}", config.cert_path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "server.tls.cert_path = {}: no certificate found",
            config.cert_path.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&config.key_path)
        .map_err(|e| format!("server.tls.key_path = {}: {e}", config.key_path.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("server.tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|e| format!("server.tls: certificate and key do not fit together: {e}"))?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}
