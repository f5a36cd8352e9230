//! gRPC `LiveService.Subscribe`: the server-streaming twin of the live WebSocket, over
//! the same hub ([`crate::live`]), authentication and filters.

use std::pin::Pin;

use futures::Stream;
use portico_proto::v1::live_service_server::{LiveService, LiveServiceServer};
use portico_proto::v1::{LiveMessage, SubscribeRequest};
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::grpc::{caller, parse_id};
use crate::live::hub::{Filter, JoinError, Membership};
use crate::live::{CloseCode, Hub};
use crate::live_session::{self as session, ClientOp, Subscribe};
use crate::state::AppState;

/// The stream of one subscription.
type LiveStream = Pin<Box<dyn Stream<Item = Result<LiveMessage, Status>> + Send>>;

/// The gRPC service.
pub struct GrpcLiveService {
    state: AppState,
}

/// Builds the tonic server for live updates.
pub fn server(state: AppState) -> LiveServiceServer<GrpcLiveService> {
    LiveServiceServer::new(GrpcLiveService { state })
}

/// What the stream keeps between messages.
struct Pump {
    membership: Membership,
    hub: Hub,
    expiry: tokio::time::Instant,
    seq: u64,
    lagged: Option<u64>,
    done: bool,
}

impl Pump {
    /// The next message, or the status that ends the stream, or `None` at the end.
    async fn next(&mut self) -> Option<Result<LiveMessage, Status>> {
        if self.done {
            return None;
        }
        if let Some(missed) = self.lagged.take() {
            self.seq += 1;
            let seq = self.seq;
            return Some(Ok(LiveMessage {
                seq,
                r#type: "lagged".into(),
                json: format!(r#"{{"seq":{seq},"type":"lagged","missed":{missed}}}"#),
            }));
        }
        let ended = tokio::select! {
            biased;
            _ = self.hub.shutdown().cancelled() => CloseCode::GoingAway,
            _ = self.membership.listener.closed() => {
                self.membership.listener.close_code().unwrap_or(CloseCode::Unavailable)
            }
            _ = tokio::time::sleep_until(self.expiry) => CloseCode::CredentialExpired,
            frame = self.membership.frames.recv() => match frame {
                None => CloseCode::Unavailable,
                Some(frame) => {
                    self.seq += 1;
                    if self.membership.frames.is_empty() {
                        let missed = self.membership.listener.take_missed();
                        self.lagged = (missed > 0).then_some(missed);
                    }
                    return Some(Ok(LiveMessage {
                        seq: self.seq,
                        r#type: frame.route.kind.as_str().into(),
                        json: frame.render(self.seq),
                    }));
                }
            },
        };
        self.done = true;
        Some(Err(status_for(ended)))
    }
}

/// The status a stream ends with, for the WebSocket close code of the same cause.
fn status_for(code: CloseCode) -> Status {
    match code {
        CloseCode::CredentialExpired => Status::unauthenticated("credential expired"),
        CloseCode::CredentialRevoked => Status::unauthenticated("credential revoked"),
        CloseCode::TooSlow => Status::resource_exhausted("client too slow"),
        CloseCode::GoingAway => Status::unavailable("gateway shutting down"),
        other => Status::unavailable(other.reason()),
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

#[tonic::async_trait]
impl LiveService for GrpcLiveService {
    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<LiveStream>, Status> {
        let state = &self.state;
        let authenticated = caller(state, &request).await?;
        let headers = request.metadata().clone().into_headers();
        let identity = session::authenticate(state, &headers, Some(authenticated), None).await?;
        let req = request.into_inner();
        let op = ClientOp::Subscribe(Subscribe {
            topics: req.topics,
            webhook_id: non_empty(req.webhook_id)
                .map(|t| parse_id(&t, "webhook_id"))
                .transpose()?,
            batch_id: non_empty(req.batch_id)
                .map(|t| parse_id(&t, "batch_id"))
                .transpose()?,
            event_type: non_empty(req.event_type),
        });
        let filter = session::apply(&op, &Filter::default(), &identity.caller)
            .map_err(|e| Status::from(ApiError::field(e.code, "/topics", e.message)))?;
        let hub = state.live().clone();
        let membership = hub
            .join(identity.caller.user_id(), identity.caller.integration_id())
            .map_err(|e| match e {
                JoinError::TooMany(_) => Status::resource_exhausted(e.to_string()),
            })?;
        membership.listener.set_filter(filter);
        if !membership.ready().await {
            return Err(Status::unavailable("live updates are unavailable; retry"));
        }
        let pump = Pump {
            membership,
            hub,
            expiry: session::expiry_instant(identity.expires_at),
            seq: 0,
            lagged: None,
            done: false,
        };
        let stream = futures::stream::unfold(pump, |mut pump| async move {
            pump.next().await.map(|item| (item, pump))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
