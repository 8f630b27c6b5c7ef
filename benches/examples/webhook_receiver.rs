//! A lean webhook receiver for `benches/webhook_overhead.sh`: answers every
//! POST with `200` once it has read and parsed the body, counting the
//! events in it; `GET` answers that count. One runtime thread, so its CPU
//! use on the shared cores stays small and measurable (the script reports
//! it).
//!
//! `cargo run --release -p redeem-benches --example webhook_receiver -- 127.0.0.1:18700`

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18700".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let count = Arc::new(AtomicU64::new(0));
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("webhook_receiver listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let count = count.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let count = count.clone();
                        async move { Ok::<_, Infallible>(answer(req, &count).await) }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(req: Request<hyper::body::Incoming>, count: &AtomicU64) -> Response<Full<Bytes>> {
    let status = |s: StatusCode, body: Bytes| {
        let mut r = Response::new(Full::new(body));
        *r.status_mut() = s;
        r
    };
    if req.method() == Method::GET {
        let n = count.load(Ordering::Relaxed).to_string();
        return status(StatusCode::OK, Bytes::from(n));
    }
    let Ok(body) = req.into_body().collect().await else {
        return status(StatusCode::BAD_REQUEST, Bytes::new());
    };
    let body = body.to_bytes();
    let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&body);
    match parsed
        .ok()
        .and_then(|v| v["events"].as_array().map(Vec::len))
    {
        Some(n) => {
            count.fetch_add(n as u64, Ordering::Relaxed);
            status(StatusCode::OK, Bytes::new())
        }
        None => status(StatusCode::BAD_REQUEST, Bytes::new()),
    }
}
