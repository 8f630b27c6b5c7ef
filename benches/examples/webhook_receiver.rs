//! A lean webhook receiver for `benches/webhook_overhead.sh`: answers every
//! POST with `200` once it has read and parsed the body (every event is
//! checked to be well-formed JSON, without building a tree of it), counting
//! the events in it; `GET` answers that count. One runtime thread, so its CPU
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

/// A delivery's body as far as the receiver reads it: each event is parsed
/// and skipped, which checks its syntax without allocating for it.
#[derive(serde::Deserialize)]
struct Batch {
    events: Vec<serde::de::IgnoredAny>,
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
    match serde_json::from_slice::<Batch>(&body) {
        Ok(batch) => {
            count.fetch_add(batch.events.len() as u64, Ordering::Relaxed);
            status(StatusCode::OK, Bytes::new())
        }
        Err(_) => status(StatusCode::BAD_REQUEST, Bytes::new()),
    }
}
