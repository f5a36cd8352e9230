//! `portico bulk ...`: submit a file of orders and follow the batch to its end, list
//! and show batches, download results.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Subcommand, ValueEnum};
use futures::{StreamExt, TryStreamExt};
use portico_client::Client;
use portico_client::api::bulk_orders::BatchBody;
use portico_client::bulk_orders::{self as api, Orders, Submitted};
use portico_client::domain::bulk_orders::BatchStatus;
use portico_client::ids::BatchId;
use serde_json::Value;

use crate::exit::{self, Exit};
use crate::output::{self, Format, Out};
use crate::progress::Progress;

const BATCH_COLUMNS: &[&str] = &[
    "id",
    "status",
    "counts.total",
    "counts.succeeded",
    "counts.failed",
    "createdAt",
];

/// `portico bulk`.
#[derive(Debug, Subcommand)]
pub enum BulkCmd {
    /// Submit orders from a file (NDJSON: one order per line; or JSON `{"orders": [...]}`
    /// or a JSON array) and follow the batch until it is done.
    #[command(after_help = "Examples:
  portico bulk submit orders.ndjson
  portico bulk submit orders.json --idempotency-key import-2026-01-31
  portico bulk submit orders.ndjson --validate-only -o json

Exits 0 when every order succeeded, 7 when some failed (or the batch was cancelled or failed).")]
    Submit {
        /// The file (`-` for stdin, read as NDJSON).
        file: PathBuf,
        /// Check the orders without storing them.
        #[arg(long)]
        validate_only: bool,
        /// The same key returns the same batch instead of a second one.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Return once the batch is accepted instead of following it.
        #[arg(long)]
        no_wait: bool,
        /// Seconds between progress checks.
        #[arg(long, default_value_t = 0.5)]
        poll_interval: f64,
    },
    /// List batches, newest first.
    List {
        /// Only batches in this status.
        #[arg(long)]
        status: Option<String>,
        /// Most rows to show.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one batch with its counts and error summary.
    Get {
        /// Batch id.
        id: BatchId,
    },
    /// Download a batch's results, in input order.
    #[command(after_help = "Examples:
  portico bulk results <BATCH_ID> --status failed --format csv > failed.csv
  portico bulk results <BATCH_ID> --format ndjson | jq -c 'select(.errors != [])'")]
    Results {
        /// Batch id.
        id: BatchId,
        /// Only results in this status (succeeded, failed, duplicate, unprocessed).
        #[arg(long)]
        status: Option<String>,
        /// ndjson (one result per line) or csv.
        #[arg(long, value_enum, default_value_t = ResultsFormat::Ndjson)]
        format: ResultsFormat,
    },
    /// Cancel a pending or processing batch.
    Cancel {
        /// Batch id.
        id: BatchId,
    },
}

/// Download formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResultsFormat {
    /// One JSON object per line.
    Ndjson,
    /// A header row and one row per result.
    Csv,
}

/// How the file is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileFormat {
    Ndjson,
    Json,
}

/// Reads the orders file: `.ndjson`/`.jsonl` are NDJSON, `.json` is JSON; otherwise a
/// file that parses as one JSON document is JSON. A JSON array is wrapped as
/// `{"orders": [...]}`. Returns the body, its format and the number of orders.
fn read_orders(path: &Path) -> anyhow::Result<(Vec<u8>, FileFormat, usize)> {
    let bytes = if path.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        buf
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let as_json = match ext.as_deref() {
        Some("ndjson" | "jsonl") => None,
        _ if path.as_os_str() == "-" => None,
        Some("json") => Some(
            serde_json::from_slice::<Value>(&bytes)
                .with_context(|| format!("{} is not valid JSON", path.display()))?,
        ),
        _ => serde_json::from_slice::<Value>(&bytes).ok(),
    };
    match as_json {
        Some(Value::Array(orders)) => {
            let n = orders.len();
            let body = serde_json::to_vec(&serde_json::json!({ "orders": orders }))?;
            Ok((body, FileFormat::Json, n))
        }
        Some(doc @ Value::Object(_)) => {
            let n = doc
                .get("orders")
                .and_then(Value::as_array)
                .map(Vec::len)
                .context("a JSON file must be {\"orders\": [...]} or an array of orders")?;
            Ok((bytes, FileFormat::Json, n))
        }
        Some(_) => bail!("a JSON file must be {{\"orders\": [...]}} or an array of orders"),
        None => {
            let n = bytes
                .split(|b| *b == b'\n')
                .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
                .count();
            Ok((bytes, FileFormat::Ndjson, n))
        }
    }
}

fn is_final(status: BatchStatus) -> bool {
    matches!(
        status,
        BatchStatus::Completed
            | BatchStatus::CompletedWithErrors
            | BatchStatus::Failed
            | BatchStatus::Cancelled
    )
}

fn n(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

/// The table form of a finished batch: one line of counts, then error codes by count.
fn summary(batch: &BatchBody) -> String {
    let c = &batch.counts;
    let mut text = format!(
        "batch {} {}: {} orders, {} succeeded, {} failed, {} duplicate, {} unprocessed\n",
        batch.id,
        batch.status.as_str(),
        c.total,
        c.succeeded,
        c.failed,
        c.duplicate,
        c.unprocessed,
    );
    if !batch.error_summary.is_empty() {
        let mut rows: Vec<(&String, i64)> =
            batch.error_summary.iter().map(|(k, v)| (k, *v)).collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        text.push_str("errors:\n");
        for (code, n) in rows {
            text.push_str(&format!("  {n:>8}  {code}\n"));
        }
    }
    text
}

/// Runs `portico bulk ...`.
pub async fn run(cmd: BulkCmd, client: &Client, out: Out) -> anyhow::Result<()> {
    match cmd {
        BulkCmd::Submit {
            file,
            validate_only,
            idempotency_key,
            no_wait,
            poll_interval,
        } => {
            let (bytes, format, count) = read_orders(&file)?;
            let quiet = out.format == Format::Json;
            let orders = match format {
                FileFormat::Json => Orders::Json(bytes.into()),
                FileFormat::Ndjson => Orders::Ndjson(bytes.into()),
            };
            let mut upload = Progress::new("uploading", quiet);
            upload.update(0, count as u64, "");
            let submitted = client
                .submit_batch(orders, validate_only, idempotency_key.as_deref())
                .await?;
            upload.update(count as u64, count as u64, "");
            upload.finish();
            let mut batch = match submitted {
                Submitted::Validation(report) => {
                    out.one(&report)?;
                    return if report.valid {
                        Ok(())
                    } else {
                        Err(Exit::new(exit::ORDERS_FAILED, "some orders are invalid").into())
                    };
                }
                Submitted::Batch { batch, .. } => *batch,
            };
            let id = BatchId::from(batch.id);
            if no_wait {
                return out.one(&batch);
            }
            let interval = Duration::from_secs_f64(poll_interval.clamp(0.05, 60.0));
            let mut bar = Progress::new("processing", quiet);
            loop {
                let failed = batch.counts.failed;
                let note = if failed > 0 {
                    format!("{}, {failed} failed", batch.status.as_str())
                } else {
                    batch.status.as_str().to_owned()
                };
                bar.update(n(batch.counts.processed), n(batch.counts.total), &note);
                if is_final(batch.status) {
                    break;
                }
                tokio::time::sleep(interval).await;
                batch = client.get_batch(id).await?;
            }
            bar.finish();
            match out.format {
                Format::Json => out.one(&batch)?,
                Format::Table => output::write_stdout(&summary(&batch))?,
            }
            if batch.status == BatchStatus::Completed && batch.counts.failed == 0 {
                Ok(())
            } else {
                Err(Exit::new(
                    exit::ORDERS_FAILED,
                    format!(
                        "batch {id} ended {} with {} failed and {} unprocessed orders (portico bulk results {id} --status failed)",
                        batch.status.as_str(),
                        batch.counts.failed,
                        batch.counts.unprocessed
                    ),
                )
                .into())
            }
        }
        BulkCmd::List { status, limit } => {
            let page = u32::try_from(limit.clamp(1, 500)).unwrap_or(500);
            let items: Vec<_> = client
                .batches(status, Some(page))
                .take(limit)
                .try_collect()
                .await?;
            out.list(&items, BATCH_COLUMNS)
        }
        BulkCmd::Get { id } => {
            let batch = client.get_batch(id).await?;
            match out.format {
                Format::Json => out.one(&batch),
                Format::Table => output::write_stdout(&summary(&batch)),
            }
        }
        BulkCmd::Results { id, status, format } => {
            let format = match format {
                ResultsFormat::Ndjson => api::ResultsFormat::Ndjson,
                ResultsFormat::Csv => api::ResultsFormat::Csv,
            };
            let body = client.download_results(id, format, status).await?;
            output::write_stdout(&String::from_utf8_lossy(&body))
        }
        BulkCmd::Cancel { id } => out.one(&client.cancel_batch(id).await?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NDJSON and JSON files are told apart and counted; arrays are wrapped.
    #[test]
    fn reads_both_file_formats() {
        let dir = std::env::temp_dir();
        let id = uuid::Uuid::new_v4();
        let nd = dir.join(format!("{id}.ndjson"));
        std::fs::write(&nd, "{\"a\":1}\n\n{\"a\":2}\n").unwrap();
        let (_, f, n) = read_orders(&nd).unwrap();
        assert_eq!((f, n), (FileFormat::Ndjson, 2));
        let arr = dir.join(format!("{id}.json"));
        std::fs::write(&arr, "[{\"a\":1},{\"a\":2},{\"a\":3}]").unwrap();
        let (body, f, n) = read_orders(&arr).unwrap();
        assert_eq!((f, n), (FileFormat::Json, 3));
        assert!(body.starts_with(b"{\"orders\":"));
        let bad = dir.join(format!("{id}-bad.json"));
        std::fs::write(&bad, "{\"nope\": 1}").unwrap();
        assert!(read_orders(&bad).is_err());
        for p in [nd, arr, bad] {
            let _ = std::fs::remove_file(p);
        }
    }

    /// The summary lists error codes, most frequent first.
    #[test]
    fn summary_lists_error_codes() {
        let batch: BatchBody = serde_json::from_value(serde_json::json!({
            "id": "0192c6a0-0000-7000-8000-000000000001", "status": "completed_with_errors",
            "counts": {"total": 5, "processed": 5, "succeeded": 2, "failed": 3, "duplicate": 0, "unprocessed": 0},
            "errorSummary": {"invalid_quantity": 1, "unknown_currency": 2},
            "parentBatchId": null, "integrationId": null, "cancelRequested": false,
            "createdAt": "2026-01-31T00:00:00Z", "startedAt": null, "completedAt": null,
            "updatedAt": "2026-01-31T00:00:00Z", "expiresAt": "2026-02-28T00:00:00Z"
        }))
        .unwrap();
        assert_eq!(
            summary(&batch),
            "batch 0192c6a0-0000-7000-8000-000000000001 completed_with_errors: 5 orders, 2 succeeded, 3 failed, 0 duplicate, 0 unprocessed\n\
             errors:\n         2  unknown_currency\n         1  invalid_quantity\n"
        );
    }
}
