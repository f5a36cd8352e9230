//! Delivery rollups (`delivery_rollups`) against the real PostgreSQL: a known workload
//! written chunk by chunk, read back over ranges that cut days and hours, compared with
//! the same figures computed from the raw contributions.
//!
//! Server: `PORTICO_TEST_DATABASE_URL` (any database on it; default
//! `postgres://postgres@127.0.0.1:5432/postgres`).

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use portico_domain::ids::{DeliveryId, EventId, WebhookId};
use portico_domain::webhooks::DeliveryStatus;
use portico_storage::analytics::{
    self, BucketWidth, Figures, Outcome, RollupEvent, RollupQuery, RollupRetention, RollupRows,
};
use portico_storage::deliveries::{
    self, AttemptRows, IdArray, NewAttempt, NewDelivery, NewDeliveryRows,
};
use sqlx::PgPool;

mod common;
use common::with_database;

const ALICE: &str = "alice";
const BOB: &str = "bob";

/// One raw contribution of the workload, owned.
#[derive(Debug, Clone)]
struct Contribution {
    user: &'static str,
    webhook: WebhookId,
    event_type: &'static str,
    at: DateTime<Utc>,
    latency: Option<i64>,
    outcome: Outcome,
}

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("valid time")
        .with_timezone(&Utc)
}

/// A deterministic workload over three days: every 7 minutes and 13 seconds an attempt
/// per (owner, webhook, type), with latencies from 1 ms to a few seconds and every
/// outcome, some failures without an attempt.
fn workload(webhooks: &[(&'static str, WebhookId)]) -> Vec<Contribution> {
    let start = t("2026-03-01T21:17:00Z");
    let mut out = Vec::new();
    let mut n: i64 = 0;
    let mut at = start;
    while at < start + Duration::days(3) {
        for (user, webhook) in webhooks {
            for event_type in ["order.created", "order.shipped"] {
                n += 1;
                let outcome = match n % 10 {
                    0..=5 => Outcome::Succeeded,
                    6 | 7 => Outcome::Retrying,
                    8 => Outcome::Failed { exhausted: true },
                    _ => Outcome::Failed { exhausted: false },
                };
                let latency = (n % 23 != 0).then_some((n * 37) % 4_000 + (n % 3));
                out.push(Contribution {
                    user,
                    webhook: *webhook,
                    event_type,
                    at,
                    latency,
                    outcome,
                });
            }
        }
        at += Duration::seconds(433);
    }
    out
}

fn events(c: &[Contribution]) -> impl Iterator<Item = RollupEvent<'_>> {
    c.iter().map(|c| RollupEvent {
        user_id: c.user,
        webhook_id: c.webhook,
        event_type: c.event_type,
        at: c.at,
        attempt_latency_ms: c.latency,
        outcome: c.outcome,
    })
}

/// The figures computed from the raw contributions: what the rollups must equal.
fn expected(
    c: &[Contribution],
    user: &str,
    webhook: Option<WebhookId>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Figures {
    let mut f = Figures::default();
    for c in c.iter().filter(|c| {
        c.user == user && webhook.is_none_or(|w| w == c.webhook) && c.at >= from && c.at < to
    }) {
        f.record(c.latency, c.outcome);
    }
    f
}

fn sum(rows: &[analytics::RollupRow]) -> Figures {
    let mut f = Figures::default();
    for r in rows {
        f.merge(&r.figures);
    }
    f
}

async fn write_in_chunks(pool: &PgPool, c: &[Contribution]) {
    for chunk in c.chunks(97) {
        analytics::upsert(pool, &RollupRows::from_events(events(chunk)))
            .await
            .expect("upsert");
    }
}

/// The rollups of a known workload, written in chunks that add to the same rows, match
/// the workload exactly over ranges that cut days, hours and minutes, at every bucket
/// width; percentiles fall in the bucket that holds the exact value.
#[tokio::test]
async fn rollups_match_a_known_workload_exactly() {
    with_database(|pool| async move {
        let (w1, w2, w3) = (
            WebhookId::generate(),
            WebhookId::generate(),
            WebhookId::generate(),
        );
        let c = workload(&[(ALICE, w1), (ALICE, w2), (BOB, w3)]);
        write_in_chunks(&pool, &c).await;

        let ranges = [
            (t("2026-03-01T00:00:00Z"), t("2026-03-05T00:00:00Z")),
            (t("2026-03-01T21:17:00Z"), t("2026-03-04T03:05:00Z")),
            (t("2026-03-02T00:59:00Z"), t("2026-03-02T01:01:00Z")),
            (t("2026-03-02T13:00:00Z"), t("2026-03-03T13:00:00Z")),
        ];
        for (from, to) in ranges {
            for widest in BucketWidth::ALL {
                for webhook in [None, Some(w1)] {
                    let q = RollupQuery {
                        user_id: ALICE,
                        webhook_id: webhook,
                        event_type: None,
                        from,
                        to,
                        widest,
                        split_webhook: false,
                        split_event_type: false,
                    };
                    let rows = analytics::read(&pool, &q).await.expect("read");
                    let got = sum(&rows);
                    let want = expected(&c, ALICE, webhook, from, to);
                    assert_eq!(
                        got, want,
                        "{from}..{to} widest {widest:?} webhook {webhook:?}"
                    );
                    assert!(rows.iter().all(|r| r.webhook_id != w3), "bob's rows leaked");
                    // Split per webhook, each webhook's rows add up to its own figures.
                    let split = analytics::read(
                        &pool,
                        &RollupQuery {
                            split_webhook: true,
                            ..q.clone()
                        },
                    )
                    .await
                    .expect("read split");
                    for w in [w1, w2] {
                        let mine: Vec<_> = split
                            .iter()
                            .filter(|r| r.webhook_id == w)
                            .cloned()
                            .collect();
                        let want = expected(&c, ALICE, Some(w), from, to);
                        if webhook.is_none_or(|only| only == w) {
                            assert_eq!(sum(&mine), want, "split {w}");
                        }
                    }
                }
            }
        }

        // Percentiles: the exact value lies in the bucket the histogram names, and the
        // estimate inside that bucket.
        let (from, to) = ranges[0];
        let got = sum(&analytics::read(
            &pool,
            &RollupQuery {
                user_id: ALICE,
                webhook_id: None,
                event_type: None,
                from,
                to,
                widest: BucketWidth::Day,
                split_webhook: false,
                split_event_type: false,
            },
        )
        .await
        .expect("read"));
        let mut latencies: Vec<i64> = c
            .iter()
            .filter(|c| c.user == ALICE)
            .filter_map(|c| c.latency)
            .collect();
        latencies.sort_unstable();
        for p in [0.5, 0.95, 0.99] {
            let rank = ((p * latencies.len() as f64).ceil() as usize).max(1);
            let exact = latencies[rank - 1];
            let (lo, hi) = got.percentile_bucket(p).expect("attempts");
            let hi = hi.expect("bounded");
            assert!(
                lo <= exact && exact < hi,
                "p{p}: {exact} not in [{lo}, {hi})"
            );
            let estimate = got.percentile_ms(p).expect("attempts");
            assert!(estimate >= lo as f64 && estimate <= hi as f64);
        }

        // Owner isolation: bob sees his own rows only, alice's webhook gives him nothing.
        let bob = analytics::read(
            &pool,
            &RollupQuery {
                user_id: BOB,
                webhook_id: Some(w1),
                event_type: None,
                from,
                to,
                widest: BucketWidth::Day,
                split_webhook: false,
                split_event_type: false,
            },
        )
        .await
        .expect("read");
        assert!(bob.is_empty());
        let bob = analytics::read(
            &pool,
            &RollupQuery {
                user_id: BOB,
                webhook_id: None,
                event_type: Some("order.created"),
                from,
                to,
                widest: BucketWidth::Hour,
                split_webhook: false,
                split_event_type: false,
            },
        )
        .await
        .expect("read");
        let mut want = Figures::default();
        for c in c
            .iter()
            .filter(|c| c.user == BOB && c.event_type == "order.created")
        {
            want.record(c.latency, c.outcome);
        }
        assert_eq!(sum(&bob), want);
    })
    .await;
}

async fn webhook(pool: &PgPool, user: &str) -> WebhookId {
    let id = WebhookId::generate();
    sqlx::query(
        "INSERT INTO webhooks (id, user_id, url, events, max_retries, base_delay_ms, max_delay_ms)
         VALUES ($1, $2, 'https://h.example/', ARRAY['*'], 5, 1000, 300000)",
    )
    .bind(id.as_uuid())
    .bind(user)
    .execute(pool)
    .await
    .expect("insert webhook");
    id
}

fn one_delivery(
    id: DeliveryId,
    webhook: WebhookId,
    event: EventId,
    at: DateTime<Utc>,
) -> (NewDeliveryRows, AttemptRows) {
    let mut rows = NewDeliveryRows::default();
    rows.push(NewDelivery {
        id,
        webhook_id: webhook,
        event_id: event,
        user_id: ALICE.into(),
        event_type: "order.created".into(),
        ordering_key: None,
        ordering_seq: None,
        status: DeliveryStatus::Succeeded,
        attempts: 1,
        max_retries: 5,
        next_attempt_at: None,
        last_status_code: Some(200),
        last_error: None,
    });
    let mut attempts = AttemptRows::default();
    attempts.push(NewAttempt {
        delivery_id: id,
        number: 1,
        headers: "{}".into(),
        status: Some(200),
        body: None,
        latency_ms: 12,
        error_kind: None,
        error_message: None,
        started_at: at,
    });
    (rows, attempts)
}

/// The dispatcher's one-statement path adds the rollups with the deliveries; when a
/// pair was already recorded (a redelivered job another replica got first) it writes
/// no rollups and says so, so the caller counts only the rows it wrote.
#[tokio::test]
async fn one_statement_path_counts_only_inserted_rows() {
    with_database(|pool| async move {
        let w = webhook(&pool, ALICE).await;
        let at = t("2026-03-02T10:00:05Z");
        let event = EventId::generate();
        let id = DeliveryId::generate();
        let (rows, attempts) = one_delivery(id, w, event, at);
        let contribution = [RollupEvent {
            user_id: ALICE,
            webhook_id: w,
            event_type: "order.created",
            at,
            attempt_latency_ms: Some(12),
            outcome: Outcome::Succeeded,
        }];
        let rollups = RollupRows::from_events(contribution);
        let (written, rolled_up) = deliveries::insert_deliveries_with_rollups(
            &pool,
            &rows,
            &attempts,
            &IdArray::default(),
            &rollups,
        )
        .await
        .expect("insert");
        assert_eq!(written, HashSet::from([id]));
        assert!(rolled_up);

        // The same pair again (a redelivered job derives the same id,
        // `ids::delivery_id`): nothing inserted, no rollup added.
        let (rows, attempts) = one_delivery(id, w, event, at);
        let (written, rolled_up) = deliveries::insert_deliveries_with_rollups(
            &pool,
            &rows,
            &attempts,
            &IdArray::default(),
            &rollups,
        )
        .await
        .expect("insert again");
        assert!(written.is_empty());
        assert!(!rolled_up);

        let q = RollupQuery {
            user_id: ALICE,
            webhook_id: Some(w),
            event_type: None,
            from: t("2026-03-02T00:00:00Z"),
            to: t("2026-03-03T00:00:00Z"),
            widest: BucketWidth::Day,
            split_webhook: false,
            split_event_type: false,
        };
        let got = sum(&analytics::read(&pool, &q).await.expect("read"));
        assert_eq!(
            (got.attempts, got.succeeded, got.latency_sum_ms),
            (1, 1, 12)
        );
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM delivery_rollups")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(
            stored, 12,
            "one minute, one hour and one day row, at four levels"
        );
    })
    .await;
}

/// Retention deletes minute rows and hour/day rows by their own ages.
#[tokio::test]
async fn retention_purges_each_width_by_its_own_age() {
    with_database(|pool| async move {
        let w = WebhookId::generate();
        let now = Utc::now();
        let c: Vec<Contribution> = [now - Duration::days(20), now - Duration::days(3)]
            .into_iter()
            .map(|at| Contribution {
                user: ALICE,
                webhook: w,
                event_type: "a",
                at,
                latency: Some(5),
                outcome: Outcome::Succeeded,
            })
            .collect();
        write_in_chunks(&pool, &c).await;
        let purged = analytics::purge(
            &pool,
            &RollupRetention {
                days: 10,
                minute_days: 2,
            },
        )
        .await
        .expect("purge");
        // 20 days old: minute, hour, day rows; 3 days old: its minute row; four levels.
        assert_eq!(purged, 16);
        let left: Vec<i32> =
            sqlx::query_scalar("SELECT bucket_secs FROM delivery_rollups ORDER BY bucket_secs")
                .fetch_all(&pool)
                .await
                .expect("left");
        assert_eq!(
            left,
            vec![3_600, 3_600, 3_600, 3_600, 86_400, 86_400, 86_400, 86_400]
        );
    })
    .await;
}
