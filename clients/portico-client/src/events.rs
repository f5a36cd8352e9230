//! Publishing events (`/events`, `/events/batch`): internal services, with the service
//! token acting for the user whose webhooks receive them.

use portico_api::events::{
    PublishEventBody, PublishEventsBody, PublishedEventBody, PublishedEventsBody,
};
use reqwest::Method;

use crate::{Body, Client, Error};

impl Client {
    /// `POST /events`: one event; `duplicate` is true when its idempotency key was
    /// used before (nothing new is delivered).
    pub async fn publish_event(
        &self,
        event: &PublishEventBody,
    ) -> Result<PublishedEventBody, Error> {
        self.call(Method::POST, "/events", &[], Body::json(event)?)
            .await
    }

    /// `POST /events/batch`: up to 1,000 events; the answers are in request order.
    pub async fn publish_events(
        &self,
        events: &PublishEventsBody,
    ) -> Result<PublishedEventsBody, Error> {
        self.call(Method::POST, "/events/batch", &[], Body::json(events)?)
            .await
    }
}
