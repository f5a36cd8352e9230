//! Partner credentials (HTTP Basic `apiKey:apiSecret`).

use sqlx::PgPool;

use crate::auth::PartnerIdentity;
use crate::error::ApiError;

/// Verifies partner credentials.
#[derive(Clone)]
pub struct CredentialService {
    #[allow(dead_code)]
    pool: PgPool,
}

impl CredentialService {
    /// A verifier over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Authenticates the base64 `apiKey:apiSecret` of an HTTP Basic header.
    pub async fn authenticate_basic(&self, _encoded: &str) -> Result<PartnerIdentity, ApiError> {
        Err(ApiError::Unauthenticated(
            "partner credentials are not enabled yet".into(),
        ))
    }
}
