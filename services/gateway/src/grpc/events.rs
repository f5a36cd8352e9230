//! gRPC `EventService`, over the same [`crate::app::events`] as `POST /api/events`.

use portico_proto::v1::event_service_server::{EventService, EventServiceServer};
use portico_proto::v1::{
    PublishEventRequest, PublishEventResponse, PublishEventsRequest, PublishEventsResponse,
};
use serde_json::value::RawValue;
use tonic::{Request, Response, Status};

use crate::app::events::{self, AcceptedEvent, NewEvent};
use crate::error::ApiError;
use crate::grpc::caller;
use crate::state::AppState;

/// The gRPC service.
pub struct GrpcEventService {
    state: AppState,
}

/// Builds the tonic server for events.
pub fn server(state: AppState) -> EventServiceServer<GrpcEventService> {
    EventServiceServer::new(GrpcEventService { state })
}

fn parse(req: PublishEventRequest, prefix: &str) -> Result<NewEvent, ApiError> {
    let data = RawValue::from_string(req.data_json).map_err(|e| {
        ApiError::field(
            "invalid_json",
            &format!("{prefix}/data_json"),
            format!("data_json is not JSON: {e}"),
        )
    })?;
    let non_empty = |s: String| (!s.is_empty()).then_some(s);
    Ok(NewEvent {
        event_type: req.r#type,
        data,
        idempotency_key: non_empty(req.idempotency_key),
        ordering_key: non_empty(req.ordering_key),
    })
}

fn render(a: AcceptedEvent) -> PublishEventResponse {
    PublishEventResponse {
        event_id: a.id.to_string(),
        duplicate: a.duplicate,
    }
}

#[tonic::async_trait]
impl EventService for GrpcEventService {
    async fn publish_event(
        &self,
        request: Request<PublishEventRequest>,
    ) -> Result<Response<PublishEventResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let event = parse(request.into_inner(), "")?;
        let accepted = events::publish(&self.state, &caller, event).await?;
        Ok(Response::new(render(accepted)))
    }

    async fn publish_events(
        &self,
        request: Request<PublishEventsRequest>,
    ) -> Result<Response<PublishEventsResponse>, Status> {
        let caller = caller(&self.state, &request).await?;
        let requests = request.into_inner().events;
        let parsed = requests
            .into_iter()
            .enumerate()
            .map(|(i, r)| parse(r, &format!("/events/{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let accepted = events::publish_many(&self.state, &caller, parsed).await?;
        Ok(Response::new(PublishEventsResponse {
            results: accepted.into_iter().map(render).collect(),
        }))
    }
}
