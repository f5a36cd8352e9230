//! Per-call plumbing for gRPC, the twin of `rest::middleware`: a span whose parent is
//! the caller's `traceparent` metadata, and rate/errors/duration metrics per method.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};
use tracing::Instrument;

/// Wraps every gRPC call in a span and records its metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ObserveLayer;

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe { inner }
    }
}

/// The service [`ObserveLayer`] produces.
#[derive(Debug, Clone)]
pub struct Observe<S> {
    inner: S,
}

impl<S, B, RB> Service<http::Request<B>> for Observe<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.uri().path().to_owned();
        let span = tracing::info_span!(
            "grpc_request",
            otel.name = %method,
            rpc.system = "grpc",
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        portico_telemetry::propagation::set_parent_from_http(&span, request.headers());
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let started = Instant::now();
        Box::pin(async move {
            let result = inner.call(request).instrument(span.clone()).await;
            let code = status_code(&result);
            span.record("rpc.grpc.status_code", code as i32);
            let code_name = format!("{code:?}");
            metrics::counter!(portico_telemetry::metrics::GRPC_REQUESTS,
                "method" => method.clone(), "code" => code_name)
            .increment(1);
            metrics::histogram!(portico_telemetry::metrics::GRPC_DURATION, "method" => method)
                .record(started.elapsed().as_secs_f64());
            result
        })
    }
}

/// The gRPC status of a call as its response head shows it. Unary errors are
/// trailers-only responses: `grpc-status` sits in the headers. A success carries it in
/// the trailers, so its absence here means OK; a transport error is UNAVAILABLE.
pub fn status_code<RB, E>(result: &Result<http::Response<RB>, E>) -> tonic::Code {
    match result {
        Ok(response) => response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .map(tonic::Code::from_i32)
            .unwrap_or(tonic::Code::Ok),
        Err(_) => tonic::Code::Unavailable,
    }
}

/// Makes each call's origin (`x-request-id` metadata, the peer address or the trusted
/// first `X-Forwarded-For` hop) visible to the audit log while the method runs, like
/// `rest::middleware::audit_origin`.
#[derive(Debug, Clone, Default)]
pub struct OriginLayer {
    /// Whether a trusted proxy sets `X-Forwarded-For`.
    pub trust_forwarded_for: bool,
    /// Links the audit records a call wrote when it is done.
    pub linker: crate::app::audit::AuditLinker,
}

impl<S> Layer<S> for OriginLayer {
    type Service = Origin<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Origin {
            inner,
            trust_forwarded_for: self.trust_forwarded_for,
            linker: self.linker.clone(),
        }
    }
}

/// The service [`OriginLayer`] produces.
#[derive(Debug, Clone)]
pub struct Origin<S> {
    inner: S,
    trust_forwarded_for: bool,
    linker: crate::app::audit::AuditLinker,
}

impl<S, B> Service<http::Request<B>> for Origin<S>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let origin = crate::app::audit::RequestOrigin::from_head(
            request.headers(),
            request.extensions(),
            self.trust_forwarded_for,
        );
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(crate::app::audit::with_origin(
            origin,
            self.linker.clone(),
            inner.call(request),
        ))
    }
}
