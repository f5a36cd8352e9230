//! Backup and recovery: a `pg_dump` taken while deliveries are being retried and
//! batches wait, restored into a fresh PostgreSQL server, with Portico started on it
//! against an EMPTY JetStream (a new stream prefix). Everything committed before the
//! backup completes afterwards:
//! - deliveries in retry resume from PostgreSQL (`next_attempt_at`), each under the
//!   `webhook-id` it had: an attempt made after the backup is repeated with the same
//!   id, never sent under another;
//! - a batch whose job was still in the outbox is republished by the relay;
//! - a batch whose job was already in the old JetStream (gone) is put back by
//!   `portico-gateway requeue`, the restore runbook's step (docs/operations.md).
//!
//! What a PostgreSQL backup cannot hold: events accepted (202) but not yet recorded by
//! a dispatcher live only in JetStream; docs/operations.md says so.

#[path = "ops/mod.rs"]
mod ops;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use portico_e2e::servers::PrivatePostgres;
use portico_e2e::sink::{Reply, Sink};
use portico_e2e::{ServiceKind, TestApp, bin_dir, wait_for};
use tokio::process::Command;

const PATIENCE: Duration = Duration::from_secs(90);

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(&app.pool)
        .await
        .unwrap_or(-1)
}

async fn tool(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.stdout(Stdio::null()).output().await?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn a_restored_backup_with_an_empty_jetstream_completes_everything_committed()
-> anyhow::Result<()> {
    // --- before: deliveries failing and retrying, batches waiting ----------------
    // Failures never disable the endpoint here (they are the point of the test).
    let env = [("PORTICO_DISABLE_AFTER_FAILURES", "0")];
    let mut src = TestApp::spawn_with(
        &env,
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let sink = Sink::start().await?;
    sink.set_default(Reply::status(503));
    let user = "user-backup";
    let base = src.base_url();
    let hook = ops::create_webhook(&src, &base, user, sink.url("/hook"), 300).await?;
    const N: usize = 20;
    ops::publish(&src, &base, user, N, "backup").await?;
    // Every event recorded, every delivery attempted at least once, none finished.
    wait_for(PATIENCE, || async {
        count(
            &src,
            "SELECT count(*) FROM webhook_deliveries
              WHERE attempts >= 1 AND status IN ('pending', 'retrying', 'delivering')",
        )
        .await
            == N as i64
    })
    .await
    .context("deliveries failing and retrying before the backup")?;
    // A batch whose job went to JetStream (no batch-processor runs: it waits there).
    let in_stream = ops::submit_batch(&src, &base, user, 40, "stream").await?;
    wait_for(PATIENCE, || async {
        count(&src, "SELECT count(*) FROM outbox").await == 0
    })
    .await
    .context("the first batch's job published")?;
    // A batch whose job is still in the outbox: the gateway dies right after the
    // commit (the failpoint), before its relay publishes. Every service runs an outbox
    // relay, so the dispatcher's is stopped meanwhile, and the row is then held locked
    // (the relays claim with SKIP LOCKED) until the backup is taken: the backup holds a
    // job no relay had published yet, whatever the relays' timing.
    src.take(ServiceKind::WebhookDispatcher)
        .terminate(Duration::from_secs(20))
        .await?;
    src.take(ServiceKind::Gateway)
        .terminate(Duration::from_secs(20))
        .await?;
    src.start_with(
        ServiceKind::Gateway,
        &[("PORTICO_FAILPOINT", "after_outbox_commit")],
    )
    .await?;
    let base = src.base_url();
    assert!(
        ops::submit_batch(&src, &base, user, 60, "outbox")
            .await
            .is_err(),
        "the gateway dies before answering"
    );
    let _ = src
        .take(ServiceKind::Gateway)
        .wait_exit(Duration::from_secs(10))
        .await;
    let mut unpublished = src.pool.begin().await?;
    let held: Vec<i64> = sqlx::query_scalar("SELECT id FROM outbox FOR UPDATE")
        .fetch_all(&mut *unpublished)
        .await?;
    assert_eq!(held.len(), 1, "the batch's job waits in the outbox");
    src.start_with(ServiceKind::WebhookDispatcher, &env).await?;

    // --- the backup, while the dispatcher keeps retrying ---------------------------
    let dump = std::env::temp_dir().join(format!("portico-backup-{}.dump", src.id));
    tool(
        Command::new("pg_dump")
            .args(["--format=custom", "--file"])
            .arg(&dump)
            .arg(&src.database_url),
    )
    .await?;
    let in_flight_after_backup = sink.count();
    // The old installation is gone (its stream too) once the backup is taken; what
    // its dispatcher sent after the dump is not in the backup.
    src.take(ServiceKind::WebhookDispatcher).kill().await?;
    unpublished.rollback().await?;
    let sent_before = sink.count();
    assert!(sent_before >= in_flight_after_backup);

    // --- restore into a fresh PostgreSQL, empty JetStream ---------------------------
    let pg = PrivatePostgres::start().await?;
    let (_, nats) = portico_e2e::server_urls();
    let mut dst = TestApp::prepare_on(&pg.url(), &nats).await?;
    // The restore goes into an empty database, as the runbook says: `pg_restore --clean`
    // over a migrated schema fails on the partitioned history tables (PostgreSQL 15
    // cannot drop a partition's inherited primary key), and the migrate after it is
    // what brings the schema up to date.
    for reset in ["DROP SCHEMA public CASCADE", "CREATE SCHEMA public"] {
        sqlx::query(reset).execute(&dst.pool).await?;
    }
    tool(
        Command::new("pg_restore")
            .args([
                "--clean",
                "--if-exists",
                "--no-owner",
                "--exit-on-error",
                "-d",
            ])
            .arg(&dst.database_url)
            .arg(&dump),
    )
    .await?;
    let _ = std::fs::remove_file(&dump);
    assert_ne!(dst.stream_prefix, src.stream_prefix);
    assert_eq!(
        count(
            &dst,
            "SELECT count(*) FROM webhook_deliveries WHERE status NOT IN ('succeeded', 'failed')"
        )
        .await,
        N as i64,
        "the backup holds every delivery unfinished"
    );

    // The deliveries the backup holds (the batches add `order.created` events of
    // their own later; these are the ones that were being retried).
    let mut ids: Vec<String> = sqlx::query_scalar(
        "SELECT event_id::text FROM webhook_deliveries WHERE status NOT IN ('succeeded', 'failed')",
    )
    .fetch_all(&dst.pool)
    .await?;
    ids.sort();

    // The runbook: migrate (a no-op here), requeue what JetStream held, start.
    // Only the batch still in the outbox would be published without it.
    assert_eq!(count(&dst, "SELECT count(*) FROM outbox").await, 1);
    requeue(&dst, bin_dir().as_path()).await?;
    assert_eq!(
        count(&dst, "SELECT count(*) FROM outbox").await,
        3,
        "requeue adds a job for each of the two unfinished batches"
    );
    dst.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    sink.set_default(Reply::status(200));
    for kind in portico_e2e::ALL_SERVICES {
        dst.start(kind).await?;
    }
    let base = dst.base_url();

    // Every delivery committed before the backup succeeds, each event under one id.
    let pool = dst.pool.clone();
    wait_for(PATIENCE, || {
        let (pool, ids) = (pool.clone(), ids.clone());
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM webhook_deliveries
                  WHERE status = 'succeeded' AND event_id::text = ANY($1)",
            )
            .bind(&ids)
            .fetch_one(&pool)
            .await
            .unwrap_or(-1)
                == N as i64
        }
    })
    .await
    .context("every delivery of the backup succeeds after the restore")?;
    let seen = ops::received_by_id(&sink, "backup", &hook.secret)?;
    assert_eq!(ops::distinct_events(&seen)?, N);
    // The webhook-id is the event id the restored database holds: the ids sent
    // before and after the restore are exactly those, nothing under another id.
    let mut sent: Vec<String> = seen.keys().cloned().collect();
    sent.sort();
    assert_eq!(sent, ids);

    // Both batches complete, one result per order.
    for id in [&in_stream] {
        wait_for(PATIENCE, || ops::batch_completed(&dst, &base, user, id))
            .await
            .context("the batch whose job was in the lost stream completes")?;
    }
    wait_for(PATIENCE, || async {
        count(
            &dst,
            "SELECT count(*) FROM bulk_order_batches WHERE status = 'completed'",
        )
        .await
            == 2
    })
    .await
    .context("both batches complete")?;
    assert_eq!(
        count(&dst, "SELECT count(*) FROM bulk_order_results").await,
        100
    );
    assert_eq!(count(&dst, "SELECT count(*) FROM outbox").await, 0);

    src.cleanup().await;
    dst.cleanup().await;
    pg.remove().await;
    Ok(())
}

/// `portico-gateway requeue` on the restored database and the new stream prefix.
async fn requeue(app: &TestApp, bin: &Path) -> anyhow::Result<()> {
    tool(
        Command::new(bin.join("portico-gateway"))
            .env_clear()
            .env("DATABASE_URL", &app.database_url)
            .env("NATS_URL", &app.nats_url)
            .env("PORTICO_STREAM_PREFIX", &app.stream_prefix)
            .env("PORTICO_JWT_SECRET", portico_e2e::JWT_SECRET)
            .env("PORTICO_SERVICE_TOKEN", portico_e2e::SERVICE_TOKEN)
            .env("PORTICO_SECRETS_KEY", portico_e2e::SECRETS_KEY)
            .env("PORTICO_API_KEY_PEPPER", portico_e2e::API_KEY_PEPPER)
            .arg("requeue"),
    )
    .await
}
