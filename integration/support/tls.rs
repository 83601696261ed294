//! Certificates for the TLS tests, made by rcgen.

use super::Tls;

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM.
pub(crate) struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
    pub client_pem: String,
    pub rogue_client_pem: String,
}

pub(crate) fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let leaf = |names: &[&str], issuer: &CertifiedIssuer<'_, KeyPair>| {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let ca_a = ca("secret-agent test CA");
    let ca_b = ca("rogue CA");
    let (server_cert, server_key) = leaf(&["127.0.0.1", "localhost"], &ca_a);
    let (client_cert, client_key) = leaf(&["app.local"], &ca_a);
    let (rogue_cert, rogue_key) = leaf(&["rogue.local"], &ca_b);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("server.pem"), &server_cert).unwrap();
    std::fs::write(dir.path().join("server.key"), &server_key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_a.pem()).unwrap();
    Pki {
        dir,
        ca_pem: ca_a.pem(),
        client_pem: format!("{client_cert}{client_key}"),
        rogue_client_pem: format!("{rogue_cert}{rogue_key}"),
    }
}

/// The agent's TLS settings; `with_ca` asks clients for a certificate.
pub(crate) fn tls(pki: &Pki, with_ca: bool) -> Tls {
    let d = pki.dir.path();
    Tls {
        cert_file: d.join("server.pem"),
        key_file: d.join("server.key"),
        ca_file: with_ca.then(|| d.join("ca.pem")),
    }
}

/// A rustls client that trusts `pki`'s CA and sends no certificate, for
/// tests that speak TLS to the agent by hand.
pub(crate) fn tls_client_config(pki: &Pki) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(client)
}
