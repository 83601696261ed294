//! The benchmark's ceiling: the least an actix-web server can do to answer
//! a secret read, returning fixed bytes from memory with the agent's
//! headers, on the same runtime set-up as the agent. Run by
//! `integration/bench.sh`:
//!
//!     ceiling <body-file> <content-type> [<cert-file> <key-file>]
//!
//! prints its address on stdout, then serves until killed. With a
//! certificate and key (PEM) it serves HTTPS as the agent's TLS listener
//! does (src/listen): rustls on aws-lc-rs with the safe default protocol
//! versions and ALPN `http/1.1`, the handshake on the worker, then
//! actix-http's HTTP/1 dispatcher.

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;

use actix_http::HttpService;
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::AppConfig;
use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{App, HttpResponse, HttpServer, web};
use bytes::Bytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (file, content_type, tls) = match args.as_slice() {
        [_, file, content_type] => (file, content_type, None),
        [_, file, content_type, cert, key] => (file, content_type, Some((cert, key))),
        _ => {
            eprintln!("usage: ceiling <body-file> <content-type> [<cert-file> <key-file>]");
            std::process::exit(2);
        }
    };
    let body = Bytes::from(std::fs::read(file)?);
    let content_type = content_type.clone();
    let tls = tls.map(|(cert, key)| tls_config(cert, key)).transpose()?;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    // As the agent's default `service.workers`: half the cores, at least
    // one; CEILING_WORKERS sets another number (as BENCH_WORKERS the agent's).
    let workers = std::env::var("CEILING_WORKERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
        });
    let app = move || {
        let (body, content_type) = (body.clone(), content_type.clone());
        App::new().default_service(web::to(move || {
            let (body, content_type) = (body.clone(), content_type.clone());
            async move {
                HttpResponse::Ok()
                    .content_type(content_type)
                    .insert_header(CacheControl(vec![CacheDirective::NoStore]))
                    .insert_header(("Secret-Agent-Cache", "hit"))
                    .body(body)
            }
        }))
    };
    tokio::runtime::Runtime::new()?.block_on(async move {
        let Some(tls) = tls else {
            return HttpServer::new(app)
                .workers(workers)
                .listen(listener)?
                .run()
                .await;
        };
        let acceptor = TlsAcceptor::from(Arc::new(tls));
        actix_server::Server::build()
            .workers(workers)
            .listen("tls", listener, move || {
                let acceptor = acceptor.clone();
                let open = fn_service(move |io: TcpStream| {
                    let acceptor = acceptor.clone();
                    async move {
                        io.set_nodelay(true)?;
                        let peer = io.peer_addr().ok();
                        let tls = acceptor.accept(io).await?;
                        Ok::<_, std::io::Error>((tls, peer))
                    }
                });
                let h1 = HttpService::build().h1(map_config(
                    app()
                        .into_factory()
                        .map_err(|err: actix_web::Error| err.error_response()),
                    |_| AppConfig::default(),
                ));
                open.map_err(|_| ()).and_then(h1.map_err(|_| ()))
            })?
            .run()
            .await
    })
}

/// The agent's server config (src/listen/tls.rs), without client
/// certificates.
fn tls_config(cert: &str, key: &str) -> std::io::Result<rustls::ServerConfig> {
    let invalid = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| invalid(&e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid(&e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid(&e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}
