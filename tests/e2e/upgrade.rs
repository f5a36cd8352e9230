//! A rolling upgrade: the previous release's binaries (built from its commit by
//! deploy/images/build-release.sh into a cache outside the clone; deploy/local/test.sh
//! sets `PORTICO_UPGRADE_FROM_BIN` to their directory) and this build's, side by side
//! on one database (migrated by this release first, as the runbook does) and one
//! stream, while events keep coming:
//! - the new gateway's jobs are handled by the old workers alone (an event and a batch);
//! - old and new workers then run together, the old ones stop on SIGTERM;
//! - the old gateway's jobs are handled by the new workers alone;
//! - every publish is accepted (202), every event is delivered under one webhook-id,
//!   both batches complete, and nothing is dead-lettered (a job one version could not
//!   decode would be).
//!
//! Without `PORTICO_UPGRADE_FROM_BIN` the test says so and passes.

#[path = "ops/mod.rs"]
mod ops;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portico_e2e::servers::free_port;
use portico_e2e::sink::Sink;
use portico_e2e::{
    API_KEY_PEPPER, JWT_SECRET, OPERATOR_TOKEN, SECRETS_KEY, SERVICE_TOKEN, ServiceKind, TestApp,
    wait_for,
};
use tokio::process::{Child, Command};

const PATIENCE: Duration = Duration::from_secs(90);

/// A process of the previous release; killed if still running when dropped.
struct Old {
    child: Child,
    base: String,
}

impl Old {
    async fn start(
        app: &TestApp,
        bin: &Path,
        kind: ServiceKind,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let http = format!("127.0.0.1:{}", free_port()?);
        let grpc = format!("127.0.0.1:{}", free_port()?);
        let log = std::fs::File::create(log.join(format!("old-{}.log", kind.binary())))?;
        let child = Command::new(bin.join(kind.binary()))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &app.database_url)
            .env("NATS_URL", &app.nats_url)
            .env("PORTICO_STREAM_PREFIX", &app.stream_prefix)
            .env("PORTICO_HTTP_ADDR", &http)
            .env("PORTICO_GRPC_ADDR", &grpc)
            .env("PORTICO_JWT_SECRET", JWT_SECRET)
            .env("PORTICO_SERVICE_TOKEN", SERVICE_TOKEN)
            .env("PORTICO_OPERATOR_TOKEN", OPERATOR_TOKEN)
            .env("PORTICO_SECRETS_KEY", SECRETS_KEY)
            .env("PORTICO_API_KEY_PEPPER", API_KEY_PEPPER)
            .env("PORTICO_WEBHOOK_ALLOWLIST", "127.0.0.0/8,::1/128")
            .env("PORTICO_LOG_FORMAT", "json")
            .env("PORTICO_DB_MAX_CONNECTIONS", "8")
            .env(
                "PORTICO_REPLICA_ID",
                format!("{}-old-{}", app.id, kind.binary()),
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let old = Self {
            child,
            base: format!("http://{http}"),
        };
        let url = format!("{}/readyz", old.base);
        let client = app.http.clone();
        wait_for(Duration::from_secs(30), || {
            let (client, url) = (client.clone(), url.clone());
            async move {
                client
                    .get(url)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
            }
        })
        .await
        .map_err(|e| anyhow::anyhow!("old {} never became ready: {e}", kind.binary()))?;
        Ok(old)
    }

    /// SIGTERM, and a clean exit within `deadline`.
    async fn terminate(mut self) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("not running"))?;
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await?;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        anyhow::ensure!(status.success(), "exited with {status}");
        Ok(())
    }
}

/// Publishes a few events every 50 ms to the gateways in `targets` in turn, until
/// told to stop; counts what was accepted and keeps every refusal.
struct Publisher {
    targets: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
    refused: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn start(app: &TestApp, user: &str, targets: Vec<String>) -> Self {
        let targets = Arc::new(Mutex::new(targets));
        let accepted = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, a, r, s) = (
            targets.clone(),
            accepted.clone(),
            refused.clone(),
            stop.clone(),
        );
        let http = app.http.clone();
        let user = user.to_owned();
        let task = tokio::spawn(async move {
            let mut round = 0usize;
            while !s.load(Ordering::SeqCst) {
                let target = {
                    let t = t.lock().unwrap_or_else(|e| e.into_inner());
                    if t.is_empty() {
                        None
                    } else {
                        Some(t[round % t.len()].clone())
                    }
                };
                if let Some(base) = target {
                    let first = a.load(Ordering::SeqCst);
                    let events: Vec<_> = (first..first + 5)
                        .map(|i| serde_json::json!({"type": "order.created", "data": {"tag": "roll", "i": i}}))
                        .collect();
                    let res = http
                        .post(format!("{base}/api/events/batch"))
                        .bearer_auth(SERVICE_TOKEN)
                        .header("x-portico-user-id", &user)
                        .json(&serde_json::json!({ "events": events }))
                        .send()
                        .await;
                    match res {
                        Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => {
                            a.fetch_add(5, Ordering::SeqCst);
                        }
                        Ok(resp) => r_push(&r, format!("{base}: {}", resp.status())),
                        Err(e) => r_push(&r, format!("{base}: {e}")),
                    }
                }
                round += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        fn r_push(refused: &Arc<Mutex<Vec<String>>>, what: String) {
            refused.lock().unwrap_or_else(|e| e.into_inner()).push(what);
        }
        Self {
            targets,
            accepted,
            refused,
            stop,
            task,
        }
    }

    fn set_targets(&self, targets: Vec<String>) {
        *self.targets.lock().unwrap_or_else(|e| e.into_inner()) = targets;
    }

    async fn finish(self) -> anyhow::Result<usize> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await?;
        let refused = self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        anyhow::ensure!(refused.is_empty(), "publishes refused: {refused:?}");
        Ok(self.accepted.load(Ordering::SeqCst))
    }
}

async fn delivered(sink: &Sink, tag: &str, secret: &str, n: usize) -> anyhow::Result<()> {
    let (s, secret_owned, tag_owned) = (sink.clone(), secret.to_owned(), tag.to_owned());
    wait_for(PATIENCE, move || {
        let (s, secret, tag) = (s.clone(), secret_owned.clone(), tag_owned.clone());
        async move {
            ops::received_by_id(&s, &tag, &secret)
                .and_then(|seen| ops::distinct_events(&seen))
                .map(|got| got == n)
                .unwrap_or(false)
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{n} events tagged {tag}: {e}"))?;
    ops::distinct_events(&ops::received_by_id(sink, tag, secret)?)?;
    Ok(())
}

#[tokio::test]
async fn old_and_new_releases_run_side_by_side_and_understand_each_others_jobs()
-> anyhow::Result<()> {
    let Some(old_bin) = std::env::var_os("PORTICO_UPGRADE_FROM_BIN").map(PathBuf::from) else {
        eprintln!(
            "PORTICO_UPGRADE_FROM_BIN is not set: no previous release built, nothing to run (deploy/local/test.sh builds it)"
        );
        return Ok(());
    };
    let mut app = TestApp::prepare().await?;
    let logs = std::env::temp_dir().join(format!("portico-upgrade-{}", app.id));
    std::fs::create_dir_all(&logs)?;
    let sink = Sink::start().await?;
    let user = "user-upgrade";

    // The previous release, alone.
    let old_gateway = Old::start(&app, &old_bin, ServiceKind::Gateway, &logs).await?;
    let old_dispatcher = Old::start(&app, &old_bin, ServiceKind::WebhookDispatcher, &logs).await?;
    let old_processor = Old::start(&app, &old_bin, ServiceKind::BatchProcessor, &logs).await?;
    let old = old_gateway.base.clone();
    let hook = ops::create_webhook(&app, &old, user, sink.url("/hook"), 200).await?;
    ops::publish(&app, &old, user, 10, "old-alone").await?;
    delivered(&sink, "old-alone", &hook.secret, 10).await?;
    let publisher = Publisher::start(&app, user, vec![old.clone()]);

    // The new gateway joins; only old workers run: they handle its jobs.
    app.start(ServiceKind::Gateway).await?;
    let new = app.base_url();
    publisher.set_targets(vec![old.clone(), new.clone()]);
    ops::publish(&app, &new, user, 10, "new-to-old").await?;
    let batch_new = ops::submit_batch(&app, &new, user, 1_200, "new-to-old").await?;
    delivered(&sink, "new-to-old", &hook.secret, 10).await?;
    wait_for(PATIENCE, || {
        ops::batch_completed(&app, &new, user, &batch_new)
    })
    .await?;

    // New workers join, old workers leave (SIGTERM) while events keep coming.
    app.start(ServiceKind::WebhookDispatcher).await?;
    app.start(ServiceKind::BatchProcessor).await?;
    old_dispatcher.terminate().await?;
    old_processor.terminate().await?;

    // Only new workers: they handle the old gateway's jobs.
    ops::publish(&app, &old, user, 10, "old-to-new").await?;
    let batch_old = ops::submit_batch(&app, &old, user, 1_200, "old-to-new").await?;
    delivered(&sink, "old-to-new", &hook.secret, 10).await?;
    wait_for(PATIENCE, || {
        ops::batch_completed(&app, &old, user, &batch_old)
    })
    .await?;

    // The old gateway leaves last.
    publisher.set_targets(vec![new.clone()]);
    old_gateway.terminate().await?;
    let accepted = publisher.finish().await?;
    assert!(accepted > 0);
    delivered(&sink, "roll", &hook.secret, accepted).await?;

    for (id, gateway) in [(&batch_new, &new), (&batch_old, &new)] {
        let b = ops::batch(&app, gateway, user, id).await?;
        assert_eq!(b["counts"]["succeeded"], 1_200, "{b}");
    }
    let results: i64 = sqlx::query_scalar("SELECT count(*) FROM bulk_order_results")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(results, 2_400, "one result per order");
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM job_dead_letters")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(dead, 0, "no job was dead-lettered by either version");
    println!("rolling upgrade: {accepted} events published across the roll, all delivered");
    let _ = std::fs::remove_dir_all(&logs);
    app.cleanup().await;
    Ok(())
}
