//! REST routes of this capability.

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// The routes, with their OpenAPI descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}
