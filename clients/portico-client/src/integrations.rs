//! Partner integrations (`/integrations/**`): created and managed by their owner
//! (user JWT or service token); `me` and `me/usage` answer the partner itself
//! (Basic credentials).

use futures::Stream;
use portico_api::integrations::{
    CreateIntegrationBody, CurrentIntegrationBody, IntegrationBody, IntegrationListBody,
    IntegrationWithCredentialsBody, ListParams, RegenerateBody, UpdateIntegrationBody,
    UsagePageBody, UsageParams, VerifyBody, VerifyResultBody,
};
use portico_domain::ids::IntegrationId;
use reqwest::Method;

use crate::pagination::{Paged, paginate};
use crate::{Body, Client, Error, query_of};

impl Paged for IntegrationListBody {
    type Item = IntegrationBody;
    fn into_parts(self) -> (Vec<IntegrationBody>, Option<String>) {
        (self.data, self.next_cursor)
    }
}

impl Client {
    /// `POST /integrations`: the integration and its first credentials (the secret is
    /// shown only in this answer).
    pub async fn create_integration(
        &self,
        body: &CreateIntegrationBody,
    ) -> Result<IntegrationWithCredentialsBody, Error> {
        self.call(Method::POST, "/integrations", &[], Body::json(body)?)
            .await
    }

    /// `GET /integrations`, one page.
    pub async fn list_integrations_page(
        &self,
        params: &ListParams,
    ) -> Result<IntegrationListBody, Error> {
        self.call(
            Method::GET,
            "/integrations",
            &query_of(params)?,
            Body::Empty,
        )
        .await
    }

    /// Every integration of the caller (optionally of one type), newest first.
    pub fn integrations(
        &self,
        integration_type: Option<String>,
        page_size: Option<u32>,
    ) -> impl Stream<Item = Result<IntegrationBody, Error>> + '_ {
        paginate(move |cursor| {
            let params = ListParams {
                integration_type: integration_type.clone(),
                limit: page_size,
                cursor,
            };
            async move { self.list_integrations_page(&params).await }
        })
    }

    /// `GET /integrations/{id}`.
    pub async fn get_integration(&self, id: IntegrationId) -> Result<IntegrationBody, Error> {
        self.call(
            Method::GET,
            &format!("/integrations/{id}"),
            &[],
            Body::Empty,
        )
        .await
    }

    /// `PATCH /integrations/{id}`: fields left `None` keep their value.
    pub async fn update_integration(
        &self,
        id: IntegrationId,
        patch: &UpdateIntegrationBody,
    ) -> Result<IntegrationBody, Error> {
        self.call(
            Method::PATCH,
            &format!("/integrations/{id}"),
            &[],
            Body::json(patch)?,
        )
        .await
    }

    /// `DELETE /integrations/{id}`.
    pub async fn delete_integration(&self, id: IntegrationId) -> Result<(), Error> {
        self.call_empty(
            Method::DELETE,
            &format!("/integrations/{id}"),
            &[],
            Body::Empty,
        )
        .await
        .map(drop)
    }

    /// `POST /integrations/{id}/regenerate-credentials`: new credentials; the previous
    /// secret keeps working for the grace period (server default when `None`).
    pub async fn regenerate_credentials(
        &self,
        id: IntegrationId,
        grace_period_seconds: Option<u32>,
    ) -> Result<IntegrationWithCredentialsBody, Error> {
        self.call(
            Method::POST,
            &format!("/integrations/{id}/regenerate-credentials"),
            &[],
            Body::json(&RegenerateBody {
                grace_period_seconds,
            })?,
        )
        .await
    }

    /// `POST /integrations/verify`: whether a key and secret are valid (and whose).
    pub async fn verify_credentials(&self, body: &VerifyBody) -> Result<VerifyResultBody, Error> {
        self.call(Method::POST, "/integrations/verify", &[], Body::json(body)?)
            .await
    }

    /// `GET /integrations/{id}/usage`: the usage log page with totals.
    pub async fn integration_usage(
        &self,
        id: IntegrationId,
        params: &UsageParams,
    ) -> Result<UsagePageBody, Error> {
        self.call(
            Method::GET,
            &format!("/integrations/{id}/usage"),
            &query_of(params)?,
            Body::Empty,
        )
        .await
    }

    /// `GET /integrations/me` (partner credentials): the partner's own integration.
    pub async fn current_integration(&self) -> Result<CurrentIntegrationBody, Error> {
        self.call(Method::GET, "/integrations/me", &[], Body::Empty)
            .await
    }

    /// `GET /integrations/me/usage` (partner credentials): the partner's own usage.
    pub async fn current_usage(&self, params: &UsageParams) -> Result<UsagePageBody, Error> {
        self.call(
            Method::GET,
            "/integrations/me/usage",
            &query_of(params)?,
            Body::Empty,
        )
        .await
    }
}
