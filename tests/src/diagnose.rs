//! What the system knows about events a fault test expected at its endpoint but never
//! saw, so a failure says where each one stopped instead of only how many are missing:
//! its row in `events`, its deliveries and their attempts, a dead letter, whether its
//! job is still in the JetStream stream, the outbox, and the events consumer's state.

use std::collections::HashMap;
use std::fmt::Write as _;

use sqlx::Row;

use crate::TestApp;

/// Most stream messages scanned for the missing events' jobs (a backlog larger than
/// this is reported by its counts alone).
const SCAN_LIMIT: u64 = 20_000;

/// A report on each of `missing` (event id -> where the test published it, e.g. the
/// round and the fault under way), and on the queue as a whole. Never fails: what
/// cannot be read is reported as such.
pub async fn missing_events(app: &TestApp, missing: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut ids: Vec<(&String, &String)> = missing.iter().collect();
    ids.sort_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)));
    let in_stream = scan_stream(app, missing).await;
    let _ = writeln!(out, "--- {} missing events ---", ids.len());
    for (id, published) in ids {
        let _ = writeln!(out, "event {id} (published {published}):");
        let _ = writeln!(
            out,
            "  jetstream: {}",
            match &in_stream {
                Ok(found) => match found.get(id.as_str()) {
                    Some(seq) => format!("still in the stream at sequence {seq}"),
                    None => "not in the stream".to_owned(),
                },
                Err(e) => format!("stream not scanned: {e}"),
            }
        );
        let _ = write!(out, "{}", event_in_database(app, id).await);
    }
    let _ = write!(out, "{}", queue_state(app).await);
    for service in app.services.values() {
        let _ = writeln!(
            out,
            "log of {}: {}",
            service.kind.binary(),
            service.log_path.display()
        );
        let _ = write!(out, "{}", problems_in_log(&service.log_path, 20));
    }
    out
}

/// How many warnings and errors a service's log (JSON lines) holds across all its runs
/// (a restarted service appends to the same file), and the last `keep` of them.
pub fn problems_in_log(path: &std::path::Path, keep: usize) -> String {
    problems_matching(path, "", keep)
}

/// Like [`problems_in_log`], only the warnings and errors whose line holds `needle`.
pub fn problems_matching(path: &std::path::Path, needle: &str, keep: usize) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return "  (log unreadable)\n".to_owned();
    };
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"level\":\"WARN\"") || l.contains("\"level\":\"ERROR\""))
        .filter(|l| l.contains(needle))
        .collect();
    let mut out = format!("  {} warnings and errors; the last ones:\n", problems.len());
    for line in problems.iter().skip(problems.len().saturating_sub(keep)) {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// The event's row, its deliveries (with their attempts) and any dead letter: where a
/// missing or slow event spent its time.
pub async fn event_in_database(app: &TestApp, id: &str) -> String {
    let mut out = String::new();
    let Ok(uuid) = uuid::Uuid::parse_str(id) else {
        return "  not a UUID\n".to_owned();
    };
    let row = sqlx::query(
        "SELECT accepted_at::text AS accepted_at, created_at::text AS created_at
         FROM events WHERE id = $1",
    )
    .bind(uuid)
    .fetch_optional(&app.pool)
    .await;
    let _ = match row {
        Ok(Some(r)) => writeln!(
            out,
            "  events row: accepted {} recorded {}",
            r.get::<String, _>("accepted_at"),
            r.get::<String, _>("created_at")
        ),
        Ok(None) => writeln!(out, "  events row: none"),
        Err(e) => writeln!(out, "  events row: unreadable: {e}"),
    };
    let deliveries = sqlx::query(
        "SELECT d.id::text AS id, d.status, d.attempts, d.max_retries,
                d.next_attempt_at::text AS next_attempt_at, d.lease_until::text AS lease_until,
                d.lease_owner, d.last_status_code, d.last_error, d.created_at::text AS created_at,
                (SELECT string_agg(a.attempt_number || ':' || coalesce(a.response_status::text, '-')
                                   || ':' || coalesce(a.error_kind, '') || '@' || a.started_at::text,
                                   ', ' ORDER BY a.attempt_number)
                 FROM webhook_delivery_attempts a WHERE a.delivery_id = d.id) AS attempt_log
         FROM webhook_deliveries d WHERE d.event_id = $1",
    )
    .bind(uuid)
    .fetch_all(&app.pool)
    .await;
    match deliveries {
        Ok(rows) if rows.is_empty() => {
            let _ = writeln!(out, "  deliveries: none");
        }
        Ok(rows) => {
            for r in rows {
                let _ = writeln!(
                    out,
                    "  delivery {}: status {} attempts {}/{} next {:?} lease {:?} by {:?} \
                     last {:?} {:?} created {} attempts [{}]",
                    r.get::<String, _>("id"),
                    r.get::<String, _>("status"),
                    r.get::<i32, _>("attempts"),
                    r.get::<i32, _>("max_retries"),
                    r.get::<Option<String>, _>("next_attempt_at"),
                    r.get::<Option<String>, _>("lease_until"),
                    r.get::<Option<String>, _>("lease_owner"),
                    r.get::<Option<i32>, _>("last_status_code"),
                    r.get::<Option<String>, _>("last_error"),
                    r.get::<String, _>("created_at"),
                    r.get::<Option<String>, _>("attempt_log")
                        .unwrap_or_default(),
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  deliveries: unreadable: {e}");
        }
    }
    let dead = sqlx::query(
        "SELECT consumer, reason, created_at::text AS created_at
         FROM job_dead_letters WHERE message_id = $1",
    )
    .bind(format!("evt:{id}"))
    .fetch_all(&app.pool)
    .await;
    match dead {
        Ok(rows) if rows.is_empty() => {
            let _ = writeln!(out, "  dead letters: none");
        }
        Ok(rows) => {
            for r in rows {
                let _ = writeln!(
                    out,
                    "  dead letter ({}) at {}: {}",
                    r.get::<String, _>("consumer"),
                    r.get::<String, _>("created_at"),
                    r.get::<String, _>("reason")
                );
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  dead letters: unreadable: {e}");
        }
    }
    out
}

/// The stream sequence of every job still in the jobs stream whose payload names one
/// of `missing`.
async fn scan_stream(
    app: &TestApp,
    missing: &HashMap<String, String>,
) -> anyhow::Result<HashMap<String, u64>> {
    let client = async_nats::connect(&app.nats_url).await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(format!("{}_JOBS", app.stream_prefix)).await?;
    let state = stream.info().await?.state.clone();
    let mut found = HashMap::new();
    if state.messages == 0 {
        return Ok(found);
    }
    let last = state
        .last_sequence
        .min(state.first_sequence.saturating_add(SCAN_LIMIT));
    for seq in state.first_sequence..=last {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue; // deleted (acknowledged) in a work-queue stream
        };
        let text = String::from_utf8_lossy(&message.payload);
        for id in missing.keys() {
            if text.contains(id.as_str()) {
                found.insert(id.clone(), seq);
            }
        }
    }
    Ok(found)
}

/// The outbox, the jobs stream and the events consumer.
async fn queue_state(app: &TestApp) -> String {
    let mut out = String::new();
    let outbox = sqlx::query(
        "SELECT count(*) AS n, min(created_at)::text AS oldest,
                count(*) FILTER (WHERE subject LIKE '%.jobs.events') AS events
         FROM outbox",
    )
    .fetch_one(&app.pool)
    .await;
    let _ = match outbox {
        Ok(r) => writeln!(
            out,
            "outbox: {} rows ({} event jobs), oldest {:?}",
            r.get::<i64, _>("n"),
            r.get::<i64, _>("events"),
            r.get::<Option<String>, _>("oldest")
        ),
        Err(e) => writeln!(out, "outbox: unreadable: {e}"),
    };
    let totals = sqlx::query(
        "SELECT (SELECT count(*) FROM events) AS events,
                (SELECT count(*) FROM webhook_deliveries) AS deliveries,
                (SELECT string_agg(status || '=' || n, ' ' ORDER BY status)
                 FROM (SELECT status, count(*) AS n FROM webhook_deliveries GROUP BY status) s)
                  AS by_status,
                (SELECT count(*) FROM job_dead_letters) AS dead_letters",
    )
    .fetch_one(&app.pool)
    .await;
    let _ = match totals {
        Ok(r) => writeln!(
            out,
            "database: {} events, {} deliveries ({}), {} dead letters",
            r.get::<i64, _>("events"),
            r.get::<i64, _>("deliveries"),
            r.get::<Option<String>, _>("by_status").unwrap_or_default(),
            r.get::<i64, _>("dead_letters")
        ),
        Err(e) => writeln!(out, "database: unreadable: {e}"),
    };
    let _ = write!(
        out,
        "{}",
        jetstream_state(app)
            .await
            .unwrap_or_else(|e| format!("jetstream: unreadable: {e}\n"))
    );
    out
}

async fn jetstream_state(app: &TestApp) -> anyhow::Result<String> {
    let mut out = String::new();
    let client = async_nats::connect(&app.nats_url).await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(format!("{}_JOBS", app.stream_prefix)).await?;
    let s = stream.info().await?.state.clone();
    let _ = writeln!(
        out,
        "stream: {} messages, sequences {}..={}, {} deleted",
        s.messages,
        s.first_sequence,
        s.last_sequence,
        s.deleted_count.unwrap_or_default()
    );
    for kind in ["events", "bulk_orders", "webhook_maintenance"] {
        let name = format!("{}_{kind}", app.stream_prefix);
        let consumer: Result<async_nats::jetstream::consumer::PullConsumer, _> =
            stream.get_consumer(&name).await;
        let _ = match consumer {
            Ok(c) => match c.get_info().await {
                Ok(i) => writeln!(
                    out,
                    "consumer {name}: delivered stream seq {} (consumer seq {}), ack floor \
                     stream seq {}, num_pending {}, num_ack_pending {}, num_redelivered {}, \
                     num_waiting {}",
                    i.delivered.stream_sequence,
                    i.delivered.consumer_sequence,
                    i.ack_floor.stream_sequence,
                    i.num_pending,
                    i.num_ack_pending,
                    i.num_redelivered,
                    i.num_waiting
                ),
                Err(e) => writeln!(out, "consumer {name}: unreadable: {e}"),
            },
            Err(e) => writeln!(out, "consumer {name}: unreadable: {e}"),
        };
    }
    Ok(out)
}
