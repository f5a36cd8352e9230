//! `POST /bulk-orders`: the body as JSON (`{"orders": [...]}`, parsed with the orders
//! kept as raw JSON text) or streamed NDJSON, and the answers (202 with `Location`, an
//! idempotent replay, a validate-only report).

use super::*;

/// The body as it is parsed: orders stay raw JSON text, borrowed from the request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SubmitWire<'a> {
    #[serde(borrow)]
    pub(super) orders: Vec<&'a RawValue>,
    #[serde(default)]
    pub(super) validate_only: Option<bool>,
}

/// How the body is encoded.
pub(super) enum BodyFormat {
    Json,
    Ndjson,
}

pub(super) fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl"
        | "application/x-jsonlines" => Ok(BodyFormat::Ndjson),
        e if e.ends_with("+json") => Ok(BodyFormat::Json),
        _ => Err(ApiError::UnsupportedMediaType(
            "send orders as application/json ({\"orders\": [...]}) or application/x-ndjson (one order per line)"
                .into(),
        )),
    }
}

pub(super) fn map_bytes_rejection(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge(
            "the JSON body exceeds the size limit; send large batches as NDJSON".into(),
        )
    } else {
        ApiError::MalformedBody(rejection.body_text())
    }
}

pub(super) fn parse_wire(bytes: &[u8]) -> Result<SubmitWire<'_>, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::MalformedBody(format!("invalid JSON: {e}"))
            }
            Category::Data => ApiError::MalformedBody(e.to_string()),
        }
    })
}

pub(super) fn accepted(batch: BatchRow, replay: bool) -> Response {
    let location = format!("/api/bulk-orders/{}", batch.id);
    let status = if replay {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut response = (status, axum::Json(batch_body(batch))).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    if replay {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

pub(super) fn render_submitted(submitted: Submitted) -> Response {
    match submitted {
        Submitted::Accepted { batch, replay } => accepted(batch, replay),
        Submitted::Validated(report) => (
            StatusCode::OK,
            axum::Json(SubmitOkBody::Validation(report.into())),
        )
            .into_response(),
    }
}

/// Submit a batch of orders, as a JSON object or as NDJSON (one order per line,
/// streamed). The batch is committed and queued, then answered with 202; processing
/// happens in the batch-processor. An invalid order does not refuse the batch: it gets
/// a `failed` result. With validate-only, every order's validation result is returned
/// and nothing is stored.
#[utoipa::path(post, path = "/bulk-orders", tag = "bulk-orders",
    params(
        SubmitQuery,
        ("Idempotency-Key" = Option<String>, Header, description = "A retried submission with the same key and orders returns the same batch; different orders answer 409"),
    ),
    request_body(description = "A JSON batch or NDJSON (one order object per line)", content(
        (SubmitBatchBody = "application/json"),
        (String = "application/x-ndjson"),
    )),
    responses(
        (status = 202, description = "Committed and queued", body = BatchBody),
        (status = 200, description = "Idempotent replay (the earlier batch, with Idempotent-Replayed: true), or the validate-only report (`valid`, `results`)", body = SubmitOkBody),
        (status = 400, description = "Malformed body, empty batch, too many orders, an order that is not an object", body = Problem, content_type = PROBLEM),
        (status = 409, description = "Idempotency-Key reused with different orders", body = Problem, content_type = PROBLEM),
        (status = 413, description = "Body too large", body = Problem, content_type = PROBLEM),
        (status = 415, description = "Neither JSON nor NDJSON", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn submit_batch(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<SubmitQuery>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ApiError> {
    let format = body_format(&headers)?;
    let mut options = SubmitOptions {
        validate_only: query.validate_only.unwrap_or(false),
        idempotency_key: idempotency_key(&headers)?,
    };
    let submitted = match format {
        BodyFormat::Json => {
            let bytes = Bytes::from_request(request, &state)
                .await
                .map_err(map_bytes_rejection)?;
            let wire = parse_wire(&bytes)?;
            options.validate_only |= wire.validate_only.unwrap_or(false);
            let orders: Vec<&str> = wire.orders.iter().map(|r| r.get()).collect();
            app::submit(&state, &caller, &orders, options).await?
        }
        BodyFormat::Ndjson => {
            let body = request.into_body().into_data_stream();
            app::submit_ndjson(&state, &caller, body, options).await?
        }
    };
    Ok(render_submitted(submitted))
}
