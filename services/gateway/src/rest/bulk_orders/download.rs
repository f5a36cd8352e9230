//! `GET /bulk-orders/{id}/results/download`: every result streamed as NDJSON or CSV
//! (spreadsheet formulas neutralised).

use super::*;

/// First characters that make a spreadsheet read a cell as a formula (OWASP CSV
/// injection: `=`, `+`, `-`, `@`, tab and carriage return).
const FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Writes one CSV field. Partner-supplied text that a spreadsheet would run as a
/// formula is neutralised the way OWASP recommends: a single quote goes in front and
/// the field is quoted, so `=HYPERLINK(...)` shows as the text `'=HYPERLINK(...)`.
/// Fields with separators, quotes or line breaks are quoted, quotes doubled.
pub(super) fn csv_field(out: &mut String, value: &str) {
    let formula = value.starts_with(FORMULA_TRIGGERS);
    if formula || value.contains([',', '"', '\n', '\r']) {
        out.push('"');
        if formula {
            out.push('\'');
        }
        out.push_str(&value.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(value);
    }
}

pub(super) fn encode_page(format: DownloadFormat, page: Vec<OrderResult>) -> Bytes {
    let mut out = String::with_capacity(page.len() * 96);
    for result in page {
        match format {
            DownloadFormat::Ndjson => {
                let body = ResultBody::from(result);
                if let Ok(line) = serde_json::to_string(&body) {
                    out.push_str(&line);
                    out.push('\n');
                }
            }
            DownloadFormat::Csv => {
                out.push_str(&result.index.to_string());
                out.push(',');
                csv_field(&mut out, result.client_order_ref.as_deref().unwrap_or(""));
                out.push(',');
                out.push_str(result.status.as_str());
                out.push(',');
                if let Some(id) = result.order_id {
                    out.push_str(&id.to_string());
                }
                out.push(',');
                let mut codes: Vec<&str> = result.errors.iter().map(|e| e.code.as_str()).collect();
                codes.dedup();
                csv_field(&mut out, &codes.join(";"));
                out.push(',');
                if !result.errors.is_empty() {
                    csv_field(
                        &mut out,
                        &serde_json::to_string(&result.errors).unwrap_or_default(),
                    );
                }
                out.push('\n');
            }
        }
    }
    Bytes::from(out)
}

/// Download every result of a batch, in input order, as NDJSON or CSV (streamed).
#[utoipa::path(get, path = "/bulk-orders/{id}/results/download", tag = "bulk-orders",
    params(("id" = Uuid, Path, description = "Batch id"), DownloadQuery),
    responses(
        (status = 200, description = "NDJSON: one result object per line. CSV: index,clientOrderRef,status,orderId,errorCodes,errors (errors as a JSON array)", content(
            ("application/x-ndjson"),
            ("text/csv"),
        )),
        (status = 404, description = "No such batch for this user", body = Problem, content_type = PROBLEM),
    ),
    security(("userJwt" = []), ("serviceToken" = []), ("partnerBasic" = [])))]
pub async fn download_results(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let format = match query.format.as_deref() {
        None | Some("") | Some("ndjson") => DownloadFormat::Ndjson,
        Some("csv") => DownloadFormat::Csv,
        Some(_) => {
            return Err(ApiError::field(
                "invalid_format",
                "/format",
                "format must be ndjson or csv",
            ));
        }
    };
    let status = query
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(app::parse_result_status)
        .transpose()?;
    let pages = app::stream_results(&state, &caller, id, status).await?;
    let header_line = match format {
        DownloadFormat::Csv => Some(Ok(Bytes::from_static(CSV_HEADER.as_bytes()))),
        DownloadFormat::Ndjson => None,
    };
    let body = futures::stream::iter(header_line).chain(pages.map(move |page| match page {
        Ok(page) => Ok(encode_page(format, page)),
        Err(err) => {
            tracing::warn!(%err, "results download interrupted");
            Err(std::io::Error::other("results download interrupted"))
        }
    }));
    let (content_type, extension) = match format {
        DownloadFormat::Ndjson => ("application/x-ndjson", "ndjson"),
        DownloadFormat::Csv => ("text/csv; charset=utf-8", "csv"),
    };
    let disposition = format!("attachment; filename=\"batch-{id}-results.{extension}\"");
    let mut response = Response::new(Body::from_stream(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
