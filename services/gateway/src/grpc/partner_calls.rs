//! Partner calls over gRPC: authenticated once and written to the usage log, exactly as
//! over REST (`rest::partner_calls`). Both doors call the same credential service, so
//! a partner's gRPC calls count against the same rate limit and daily quota and appear
//! in the same usage log (route: the gRPC method path; status: the HTTP status that
//! matches the gRPC code, so usage totals by status mean the same for both doors).
//!
//! For a call with `authorization: Basic ...` metadata, this layer authenticates the
//! partner before the handler runs, puts the [`Caller`] in the request's extensions
//! (the handler's [`super::caller`] reuses it) and answers the gRPC status itself when
//! authentication fails. Other calls pass through untouched.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use chrono::Utc;
use tower::{Layer, Service};

use crate::auth::Caller;
use crate::credentials::usage_log::UsageEntry;
use crate::state::AppState;

/// Authenticates and logs partner calls.
#[derive(Clone)]
pub struct PartnerCallsLayer {
    state: AppState,
}

impl PartnerCallsLayer {
    /// The layer for this gateway's state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

impl<S> Layer<S> for PartnerCallsLayer {
    type Service = PartnerCalls<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PartnerCalls {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`PartnerCallsLayer`] produces.
#[derive(Clone)]
pub struct PartnerCalls<S> {
    inner: S,
    state: AppState,
}

/// The HTTP status a gRPC code stands for in the usage log.
fn http_status(code: tonic::Code) -> u16 {
    use tonic::Code;
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    }
}

impl<S, RB> Service<http::Request<tonic::body::Body>> for PartnerCalls<S>
where
    S: Service<http::Request<tonic::body::Body>, Response = http::Response<RB>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        // The clone that was polled ready is the one that must be called.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(encoded) = crate::net::basic_credentials(request.headers()) else {
            return Box::pin(inner.call(request));
        };
        let state = self.state.clone();
        Box::pin(async move {
            let started = Instant::now();
            let occurred_at = Utc::now();
            let route = request.uri().path().to_owned();
            let client_ip = request
                .extensions()
                .get::<tonic::transport::server::TcpConnectInfo>()
                .and_then(|info| info.remote_addr())
                .map(|addr| addr.ip().to_string());
            let attempt = state
                .credentials()
                .authenticate(&encoded, client_ip.as_deref().unwrap_or("-"))
                .await;
            let (mut result, admitted) = match attempt.result {
                Ok(identity) => {
                    request.extensions_mut().insert(Caller::Partner(identity));
                    (inner.call(request).await, true)
                }
                Err(err) => (Ok(tonic::Status::from(err).into_http::<RB>()), false),
            };
            if let (Some(rate), Ok(response)) = (attempt.rate, result.as_mut()) {
                crate::credentials::limiter::rate_limit_headers(response.headers_mut(), rate);
            }
            if let Some(integration_id) = attempt.integration_id {
                let code = super::observe::status_code(&result);
                state.credentials().record_usage(UsageEntry {
                    integration_id,
                    method: "POST".to_owned(),
                    route,
                    status: http_status(code),
                    latency_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    client_ip,
                    occurred_at,
                    admitted,
                });
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The usage log's status classes mean the same for both doors.
    #[test]
    fn grpc_codes_map_to_http_statuses() {
        assert_eq!(http_status(tonic::Code::Ok), 200);
        assert_eq!(http_status(tonic::Code::PermissionDenied), 403);
        assert_eq!(http_status(tonic::Code::ResourceExhausted), 429);
        assert_eq!(http_status(tonic::Code::Internal), 500);
    }
}
