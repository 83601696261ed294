//! TLS for the TCP listener: the certificate chain, key and optional
//! client CA read from their PEM files into a rustls server config.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{TlsConfig, file};

/// The rustls server settings: the certificate chain and key, and with a
/// CA file, required client certificates signed by it.
pub(super) fn server_config(tls: &TlsConfig) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = read_certs(&tls.cert_file, "service.tcp.tls.cert-file")?;
    let pem = read_pem(&tls.key_file, "service.tcp.tls.key-file")?;
    let key = PrivateKeyDer::from_pem_slice(&pem).with_context(|| {
        format!(
            "no private key in {} (service.tcp.tls.key-file)",
            tls.key_file.display()
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &tls.ca_file {
        Some(ca_file) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca_file, "service.tcp.tls.ca-file")? {
                roots.add(cert).with_context(|| {
                    format!(
                        "bad CA certificate in {} (service.tcp.tls.ca-file)",
                        ca_file.display()
                    )
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "the key in {} does not fit the certificate in {}",
            tls.key_file.display(),
            tls.cert_file.display()
        )
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A PEM file: regular, at most [`file::PEM_BYTES`]; wiped when dropped,
/// as a key file holds the private key.
fn read_pem(path: &Path, key: &str) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    file::read(path, file::PEM_BYTES)
        .map(zeroize::Zeroizing::new)
        .with_context(|| format!("cannot read {} ({key})", path.display()))
}

fn read_certs(path: &Path, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem(path, key)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot read certificates from {} ({key})", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {} ({key})", path.display());
    }
    Ok(certs)
}
