//! What the agent's connections to AWS negotiate: the SDK's client, with
//! rustls on aws-lc-rs, offers the hybrid post-quantum key exchange
//! X25519MLKEM768 first and takes it wherever the server offers it, as the
//! AWS agent does. A local TLS server with the test CA (trusted through
//! `SSL_CERT_FILE`, as a user's private CA would be) stands in for AWS and
//! records what each handshake chose.

use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::{self, kx_group};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::support::*;

const SECRET: &str = "arn:aws:secretsmanager:us-west-1:123456789012:secret:pq-AbCdEf";

/// What one handshake chose: the key exchange group and the TLS version.
#[derive(Debug, PartialEq)]
struct Negotiated {
    group: String,
    version: String,
}

/// A TLS server on 127.0.0.1 with `pki`'s server certificate, offering
/// `groups` only; it reports each handshake and answers every request with
/// a 500 (the agent's answer to its client does not matter here).
async fn recording_server(
    pki: &Pki,
    groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
) -> (u16, mpsc::UnboundedReceiver<Negotiated>) {
    let dir = pki.dir.path();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = CryptoProvider {
        kx_groups: groups,
        ..aws_lc_rs::default_provider()
    };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Bounded: the SDK retries a 500 a few times, each on a connection.
        for _ in 0..16 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let negotiated = Negotiated {
                    group: format!("{:?}", conn.negotiated_key_exchange_group().unwrap().name()),
                    version: format!("{:?}", conn.protocol_version().unwrap()),
                };
                let _ = tx.send(negotiated);
                let mut buf = vec![0; 64 * 1024];
                let _ = tls.read(&mut buf).await;
                let body = r#"{"__type":"InternalServiceError","message":"test server"}"#;
                let answer = format!(
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/x-amz-json-1.1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, rx)
}

/// The first handshake of an agent whose Secrets Manager endpoint is the
/// recording server, trusting the test CA as a private CA would be trusted.
async fn first_handshake(groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>) -> Negotiated {
    let pki = pki();
    let (port, mut handshakes) = recording_server(&pki, groups).await;
    let ca = pki.dir.path().join("ca.pem");
    let config = AgentConfig::new()
        .endpoint(&format!("https://127.0.0.1:{port}"))
        .test_keys()
        .resource("x", SECRET);
    let agent = Agent::start(&config, &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let r = get(&agent.url("/secrets/x")).await;
    assert_ne!(r.status, 200, "{}", r.text());
    tokio::time::timeout(Duration::from_secs(30), handshakes.recv())
        .await
        .expect("the agent connected to the TLS server")
        .expect("a handshake was recorded")
}

#[tokio::test]
async fn connections_to_aws_take_the_post_quantum_hybrid_where_it_is_offered() {
    // The server offers the hybrid after the classical groups, as a server
    // that does not prefer it may: the client's choice decides.
    let negotiated = first_handshake(vec![
        kx_group::X25519,
        kx_group::SECP256R1,
        kx_group::X25519MLKEM768,
    ])
    .await;
    assert_eq!(
        negotiated,
        Negotiated {
            group: "X25519MLKEM768".into(),
            version: "TLSv1_3".into(),
        }
    );
}

#[tokio::test]
async fn without_the_hybrid_on_offer_a_classical_group_is_negotiated() {
    // The control: the same client against a server without ML-KEM falls
    // back (after a HelloRetryRequest) to a classical group.
    let negotiated = first_handshake(vec![kx_group::SECP256R1]).await;
    assert_eq!(negotiated.group, "secp256r1");
}
