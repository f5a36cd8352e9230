//! The operators' dead-letter API (`/admin/dead-letters/**`, `Auth::Operator`): list,
//! inspect, replay and discard jobs the workers gave up on.

use futures::Stream;
use portico_api::admin::{
    DeadLetterBody, DeadLetterDetailBody, DeadLetterListBody, DeadLetterQuery,
    ResolveDeadLetterBody,
};
use reqwest::Method;

use crate::pagination::{Paged, paginate};
use crate::{Body, Client, Error, query_of};

impl Paged for DeadLetterListBody {
    type Item = DeadLetterBody;
    fn into_parts(self) -> (Vec<DeadLetterBody>, Option<String>) {
        (self.data, self.next_cursor)
    }
}

impl Client {
    /// `GET /admin/dead-letters`, one page (the query's `cursor` selects it).
    pub async fn list_dead_letters_page(
        &self,
        query: &DeadLetterQuery,
    ) -> Result<DeadLetterListBody, Error> {
        self.call(
            Method::GET,
            "/admin/dead-letters",
            &query_of(query)?,
            Body::Empty,
        )
        .await
    }

    /// Every dead letter matching `filter` (its `cursor` is ignored), newest first.
    pub fn dead_letters(
        &self,
        filter: DeadLetterQuery,
    ) -> impl Stream<Item = Result<DeadLetterBody, Error>> + '_ {
        paginate(move |cursor| {
            let query = DeadLetterQuery {
                cursor,
                ..filter.clone()
            };
            async move { self.list_dead_letters_page(&query).await }
        })
    }

    /// `GET /admin/dead-letters/{id}`: the job, its decode error and the audit trail.
    pub async fn get_dead_letter(&self, id: i64) -> Result<DeadLetterDetailBody, Error> {
        self.call(
            Method::GET,
            &format!("/admin/dead-letters/{id}"),
            &[],
            Body::Empty,
        )
        .await
    }

    /// `POST /admin/dead-letters/{id}/replay`: queues the job again, with the reason in
    /// the audit record.
    pub async fn replay_dead_letter(
        &self,
        id: i64,
        reason: impl Into<String>,
    ) -> Result<DeadLetterDetailBody, Error> {
        let body = ResolveDeadLetterBody {
            reason: reason.into(),
        };
        self.call(
            Method::POST,
            &format!("/admin/dead-letters/{id}/replay"),
            &[],
            Body::json(&body)?,
        )
        .await
    }

    /// `POST /admin/dead-letters/{id}/discard`: resolves it without replaying.
    pub async fn discard_dead_letter(
        &self,
        id: i64,
        reason: impl Into<String>,
    ) -> Result<DeadLetterDetailBody, Error> {
        let body = ResolveDeadLetterBody {
            reason: reason.into(),
        };
        self.call(
            Method::POST,
            &format!("/admin/dead-letters/{id}/discard"),
            &[],
            Body::json(&body)?,
        )
        .await
    }
}
