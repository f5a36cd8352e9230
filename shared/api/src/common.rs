//! Shapes every resource shares: the problem document of an error answer and the
//! page parameters of a list.

use portico_domain::FieldError;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The media type of every error answer (RFC 9457), for the responses, the OpenAPI
/// document and clients that tell an error body from a result.
pub const PROBLEM_JSON: &str = "application/problem+json";

// Every error answer carries it, so clients can switch on `code` and show `detail`
// and the field `errors`. (The doc comment is the schema's description.)
/// The RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// Explanation of this occurrence.
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    /// Field-level errors for validation failures.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<FieldError>,
}

/// Page parameters of a plain list (webhooks): how many and from where.
#[derive(Debug, Default, Clone, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1..=500, default 50 (0 = the default).
    #[param(maximum = 500)]
    pub limit: Option<u32>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}
