//! The audit log (`/audit-log`, `/audit-log/verify`): the caller's user's records of
//! every change, and the recomputed hash chain. Users and internal services only; a
//! partner's credentials are refused (403).

use futures::Stream;
use portico_api::audit::{
    AuditLogListBody, AuditLogQuery, AuditRecordBody, AuditVerificationBody, AuditVerifyQuery,
};
use reqwest::Method;

use crate::pagination::{Paged, paginate};
use crate::{Body, Client, Error, query_of};

impl Paged for AuditLogListBody {
    type Item = AuditRecordBody;
    fn into_parts(self) -> (Vec<AuditRecordBody>, Option<String>) {
        (self.data, self.next_cursor)
    }
}

impl Client {
    /// `GET /audit-log`, one page (the query's `cursor` selects it).
    pub async fn list_audit_log_page(
        &self,
        query: &AuditLogQuery,
    ) -> Result<AuditLogListBody, Error> {
        self.call(Method::GET, "/audit-log", &query_of(query)?, Body::Empty)
            .await
    }

    /// Every audit record matching `filter` (its `cursor` is ignored), newest first.
    pub fn audit_log(
        &self,
        filter: AuditLogQuery,
    ) -> impl Stream<Item = Result<AuditRecordBody, Error>> + '_ {
        paginate(move |cursor| {
            let query = AuditLogQuery {
                cursor,
                ..filter.clone()
            };
            async move { self.list_audit_log_page(&query).await }
        })
    }

    /// `GET /audit-log/verify`: `valid`, or the first record edited or removed.
    pub async fn verify_audit_log(
        &self,
        query: &AuditVerifyQuery,
    ) -> Result<AuditVerificationBody, Error> {
        self.call(
            Method::GET,
            "/audit-log/verify",
            &query_of(query)?,
            Body::Empty,
        )
        .await
    }
}
