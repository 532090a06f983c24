//! Prometheus metrics for the daemons: a tower layer that counts and times
//! every gRPC call by method and status code, and a small HTTP server that
//! exposes a registry at `/metrics` in the text format.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    pub method: String,
}

/// Calls by method and status code, and their latency by method.
#[derive(Clone)]
pub struct RpcMetrics {
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
}

impl RpcMetrics {
    /// Registers `<prefix>_rpc_calls` and `<prefix>_rpc_seconds` in `registry`.
    pub fn register(registry: &mut Registry, prefix: &str) -> Self {
        let calls = Family::<CallLabels, Counter>::default();
        // 50 µs to ~13 s, doubling.
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                50e-6, 2.0, 19,
            ))
        });
        registry.register(
            format!("{prefix}_rpc_calls"),
            "gRPC calls answered, by method and status code (as the response headers show it)",
            calls.clone(),
        );
        registry.register(
            format!("{prefix}_rpc_seconds"),
            "Time to answer a gRPC call (to the response headers), by method",
            latency.clone(),
        );
        Self { calls, latency }
    }

    /// A tower layer recording into these metrics.
    pub fn layer(&self) -> RpcMetricsLayer {
        RpcMetricsLayer(self.clone())
    }
}

#[derive(Clone)]
pub struct RpcMetricsLayer(RpcMetrics);

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RpcMetricsService {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RpcMetricsService<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S, B, RB> tower::Service<http::Request<B>> for RpcMetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let started = Instant::now();
        let fut = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let res = fut.await;
            // Errors travel in the headers; a call that got as far as a body
            // reports OK here (its final status is in the trailers).
            let code = match &res {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from),
                Err(_) => tonic::Code::Internal,
            };
            metrics
                .calls
                .get_or_create(&CallLabels {
                    method: method.clone(),
                    code: crate::grpc::code_name(code).to_owned(),
                })
                .inc();
            metrics
                .latency
                .get_or_create(&MethodLabels { method })
                .observe(started.elapsed().as_secs_f64());
            res
        })
    }
}

/// For a daemon's `main`: binds the `--metrics` address, if one was given,
/// and prints `metrics on ADDR` on stdout (beside `listening on ADDR`).
pub async fn bind(addr: Option<std::net::SocketAddr>) -> std::io::Result<Option<TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot serve metrics on {addr}: {e}"))
    })?;
    println!("metrics on {}", listener.local_addr()?);
    Ok(Some(listener))
}

/// Serves `registry` at `/metrics` on `listener` until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    stop: CancellationToken,
) -> Result<(), std::io::Error> {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(respond(&req, &registry)) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, error = %e, "metrics connection ended");
            }
        });
    }
}

fn respond(req: &Request<hyper::body::Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |status: u16, ctype: &str, body: String| {
        Response::builder()
            .status(status)
            .header("content-type", ctype)
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default()
    };
    if req.uri().path() != "/metrics" {
        return reply(404, "text/plain", "try /metrics\n".into());
    }
    let mut out = String::new();
    if let Err(e) = encode(&mut out, registry) {
        warn!(error = %e, "cannot encode metrics");
        return reply(500, "text/plain", "cannot encode metrics\n".into());
    }
    reply(
        200,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        out,
    )
}
