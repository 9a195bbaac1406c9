//! TLS to the database (`sslmode=require` in the URL): rustls with ring,
//! the server's certificate checked against the system's trust store
//! (`/etc/ssl/certs`, or the file named by `SSL_CERT_FILE`: where an
//! operator puts a private CA), or Mozilla's roots where the system has
//! none. The certificate must name the host of the URL.

use std::sync::{Arc, OnceLock};

use tokio_postgres_rustls::MakeRustlsConnect;

/// The connector, built once (reading the trust store is not free).
pub(crate) fn connector() -> Result<MakeRustlsConnect, String> {
    static CONNECTOR: OnceLock<Result<MakeRustlsConnect, String>> = OnceLock::new();
    CONNECTOR.get_or_init(build).clone()
}

fn build() -> Result<MakeRustlsConnect, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
