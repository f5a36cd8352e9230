//! Listen endpoints (`POST /listen`): a temporary webhook whose deliveries reach the
//! caller's `portico listen` over the WebSocket `GET /listen/{id}` instead of an
//! address. The WebSocket's messages are [`portico_api::listen`]'s; the connection
//! itself is the caller's (the CLI opens it with the client's auth headers).

use portico_api::listen::CreateListenBody;
use portico_api::webhooks::CreatedWebhookBody;
use reqwest::Method;

use crate::{Body, Client, Error};

impl Client {
    /// `POST /listen`: the created listen endpoint with its signing secret. Owner
    /// credentials only (a user token, or the service token with a user id).
    pub async fn create_listen_endpoint(
        &self,
        body: &CreateListenBody,
    ) -> Result<CreatedWebhookBody, Error> {
        self.call(Method::POST, "/listen", &[], Body::json(body)?)
            .await
    }
}
