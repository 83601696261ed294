//! The benchmark's ceiling: the least an actix-web server can do to answer
//! a secret read, returning fixed bytes from memory with the agent's
//! headers, on the same runtime set-up as the agent. Run by
//! `integration/bench.sh`:
//!
//!     ceiling <body-file> <content-type>
//!
//! prints its address on stdout, then serves until killed.

use std::io::Write;
use std::net::TcpListener;

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::{App, HttpResponse, HttpServer, web};
use bytes::Bytes;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, file, content_type] = args.as_slice() else {
        eprintln!("usage: ceiling <body-file> <content-type>");
        std::process::exit(2);
    };
    let body = Bytes::from(std::fs::read(file)?);
    let content_type = content_type.clone();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Runtime::new()?.block_on(async move {
        HttpServer::new(move || {
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
        })
        .workers(workers)
        .listen(listener)?
        .run()
        .await
    })
}
