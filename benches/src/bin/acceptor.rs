//! `switchyard-acceptor`: a vendor endpoint for load tests that accepts every request: it reads the
//! whole body (so the sink pays for sending it) and answers 200 `{"status": 1}`, counting requests
//! and bytes. The strict vendor fakes of the end-to-end tests check wire formats and keep every
//! event in memory, which a benchmark at 100k+ events/s cannot afford; the wire formats are their
//! job, throughput is this one's.
//!
//! Usage: `switchyard-acceptor --listen 127.0.0.1:0 [--delay-ms N]` prints `listening on ADDR`,
//! serves until killed, and prints the totals on SIGTERM/SIGINT. `--delay-ms` makes a slow vendor:
//! every answer waits that long (the load test's lagging-sink case).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Parser)]
#[command(about = "An HTTP endpoint that accepts everything (vendor stand-in for load tests)")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Wait this long before answering each request (a slow but healthy vendor).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    bytes: AtomicU64,
}

async fn accept(
    request: Request<Incoming>,
    totals: Arc<Totals>,
    delay: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let size = match request.into_body().collect().await {
        Ok(body) => body.to_bytes().len() as u64,
        Err(_) => 0,
    };
    totals.requests.fetch_add(1, Ordering::Relaxed);
    totals.bytes.fetch_add(size, Ordering::Relaxed);
    let mut response = Response::new(Full::new(Bytes::from_static(
        b"{\"status\": 1, \"success\": true}",
    )));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let totals = Arc::new(Totals::default());
    let delay = Duration::from_millis(args.delay_ms);
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let totals = totals.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| accept(request, totals.clone(), delay));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    println!(
        "accepted {} requests, {} bytes",
        totals.requests.load(Ordering::Relaxed),
        totals.bytes.load(Ordering::Relaxed)
    );
    Ok(())
}
