//! Submissions whose orders are in memory (the JSON body of REST, the orders of
//! gRPC): the structural checks, validate-only reports and the submission itself.

use super::*;

pub(super) fn check_order_structure(raw: &str, path: impl Fn() -> String) -> Result<(), ApiError> {
    if !raw.starts_with('{') {
        return Err(ApiError::field(
            "invalid_order",
            &path(),
            "each order must be a JSON object",
        ));
    }
    if contains_nul_escape(raw) {
        return Err(ApiError::field(
            "invalid_order",
            &path(),
            "orders must not contain the NUL character (\\u0000)",
        ));
    }
    Ok(())
}

pub(super) fn empty_batch(path: &str) -> ApiError {
    ApiError::field("empty_batch", path, "a batch needs at least one order")
}

pub(super) fn too_many_orders(path: &str, max: usize) -> ApiError {
    ApiError::field(
        "too_many_orders",
        path,
        format!("a batch has at most {max} orders in this format"),
    )
}

/// Validates every order of a validate-only submission.
pub(super) fn validation_report<'a>(orders: impl Iterator<Item = &'a str>) -> ValidationReport {
    let mut valid = true;
    let results = orders
        .enumerate()
        .map(|(index, raw)| {
            let parsed = parse_order(raw);
            let client_order_ref = parsed.client_order_ref.map(|r| r.into_owned());
            match parsed.outcome {
                Ok(_) => OrderResult {
                    index: index as i64,
                    client_order_ref,
                    status: ResultStatus::Succeeded,
                    order_id: None,
                    errors: Vec::new(),
                },
                Err(errors) => {
                    valid = false;
                    OrderResult {
                        index: index as i64,
                        client_order_ref,
                        status: ResultStatus::Failed,
                        order_id: None,
                        errors,
                    }
                }
            }
        })
        .collect();
    ValidationReport { valid, results }
}

/// Submits a batch whose orders are already in memory as raw JSON texts (the JSON
/// array of REST, the converted orders of gRPC). Error paths name the list `/orders`.
pub async fn submit(
    state: &AppState,
    caller: &Caller,
    orders: &[&str],
    options: SubmitOptions,
) -> Result<Submitted, ApiError> {
    caller.require(Scope::BulkOrdersWrite)?;
    let max = state.config().max_batch_orders;
    if orders.is_empty() {
        return Err(empty_batch("/orders"));
    }
    if orders.len() > max {
        return Err(too_many_orders("/orders", max));
    }
    for (i, raw) in orders.iter().enumerate() {
        check_order_structure(raw, || format!("/orders/{i}"))?;
    }
    if options.validate_only {
        return Ok(Submitted::Validated(validation_report(
            orders.iter().copied(),
        )));
    }
    let key = options.idempotency_key.as_deref();
    check_idempotency_key(key)?;
    match begin_batch(state, caller, key, None).await? {
        Begun::Existing(existing) => {
            let mut writer = ChunkWriter::new(false);
            orders.iter().for_each(|raw| writer.push(raw));
            replay(state, existing, &writer.finish_hash()).await
        }
        Begun::Fresh { tx, batch_id } => {
            let inserter = ChunkInserter::start(tx, batch_id);
            let mut writer = ChunkWriter::new(true);
            for raw in orders {
                writer.push(raw);
                if writer.ready_orders.len() >= CHUNKS_PER_INSERT
                    && let Some(chunks) = writer.take_ready()
                    && !inserter.send(chunks).await
                {
                    break;
                }
            }
            writer.close_chunk();
            if let Some(chunks) = writer.take_ready() {
                inserter.send(chunks).await;
            }
            let mut tx = inserter.finish().await?;
            let total = writer.total;
            crate::app::audit::record(
                &mut tx,
                caller,
                crate::app::audit::AuditEntry::new("bulk_batch.submitted", "bulk_batch", batch_id)
                    .detail("orders", total),
            )
            .await?;
            let batch = commit_batch(state, tx, batch_id, total, &writer.finish_hash()).await?;
            Ok(Submitted::Accepted {
                batch,
                replay: false,
            })
        }
    }
}
