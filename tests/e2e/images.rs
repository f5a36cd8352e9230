//! The service images, run: deploy/images/build.sh builds them (deploy/local/test.sh
//! runs it and sets `PORTICO_TEST_IMAGES` to their tag, with podman's settings from
//! deploy/images/env.sh); this test starts the three containers with podman on the
//! host network against the host's PostgreSQL and NATS (its own database and stream
//! prefix), read-only, as the image's non-root user, with no capabilities, and passes
//! the README's smoke flow through them: a webhook is created, events are published
//! and arrive at a loopback sink where they verify, a batch completes. Then each
//! container is stopped with SIGTERM (`podman stop`) while work is in flight, must
//! exit 0 before podman's kill timeout, and its replacement finishes the work: nothing
//! is lost, no event arrives under two webhook-ids.
//!
//! Without `PORTICO_TEST_IMAGES` (no podman, images not built) the test says so and
//! passes: `cargo test` alone builds no images.

#[path = "ops/mod.rs"]
mod ops;

use std::time::Duration;

use portico_e2e::servers::free_port;
use portico_e2e::sink::{Reply, Sink};
use portico_e2e::{
    API_KEY_PEPPER, JWT_SECRET, OPERATOR_TOKEN, SECRETS_KEY, SERVICE_TOKEN, TestApp, wait_for,
};
use tokio::process::Command;

const PATIENCE: Duration = Duration::from_secs(90);

/// One running container; removed (`podman rm -f`) when dropped.
struct Container {
    name: String,
    /// `host:port` of its HTTP listener (REST or admin).
    http: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = std::process::Command::new("podman")
            .args(["rm", "-f", "-t", "0", &self.name])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

async fn podman(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("podman").args(args).output().await?;
    anyhow::ensure!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The environment the harness gives its processes, for a container.
fn env_args(app: &TestApp, service: &str, http: &str, extra: &[(&str, String)]) -> Vec<String> {
    let mut env: Vec<(&str, String)> = vec![
        ("DATABASE_URL", app.database_url.clone()),
        ("NATS_URL", app.nats_url.clone()),
        ("PORTICO_STREAM_PREFIX", app.stream_prefix.clone()),
        ("PORTICO_HTTP_ADDR", http.to_owned()),
        ("PORTICO_JWT_SECRET", JWT_SECRET.to_owned()),
        ("PORTICO_SERVICE_TOKEN", SERVICE_TOKEN.to_owned()),
        ("PORTICO_OPERATOR_TOKEN", OPERATOR_TOKEN.to_owned()),
        ("PORTICO_SECRETS_KEY", SECRETS_KEY.to_owned()),
        ("PORTICO_API_KEY_PEPPER", API_KEY_PEPPER.to_owned()),
        (
            "PORTICO_WEBHOOK_ALLOWLIST",
            "127.0.0.0/8,::1/128".to_owned(),
        ),
        ("PORTICO_REPLICA_ID", format!("{}-{service}", app.id)),
        ("PORTICO_DB_MAX_CONNECTIONS", "8".to_owned()),
    ];
    env.extend(extra.iter().cloned());
    env.into_iter()
        .flat_map(|(k, v)| ["-e".to_owned(), format!("{k}={v}")])
        .collect()
}

/// Starts `service` from image `localhost/<service>:<tag>` and waits for `/readyz`.
async fn run(
    app: &TestApp,
    tag: &str,
    service: &str,
    generation: u32,
    extra: &[(&str, String)],
) -> anyhow::Result<Container> {
    let http = format!("127.0.0.1:{}", free_port()?);
    let name = format!("portico-e2e-{}-{service}-{generation}", app.id);
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--stop-timeout",
        "30",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(env_args(app, service, &http, extra));
    args.push(format!("localhost/{service}:{tag}"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    podman(&args).await?;
    let container = Container { name, http };
    let url = format!("http://{}/readyz", container.http);
    let client = app.http.clone();
    let ready = wait_for(Duration::from_secs(30), || {
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
    .await;
    if ready.is_err() {
        let logs = podman(&["logs", &container.name]).await.unwrap_or_default();
        anyhow::bail!("{service} never became ready:\n{logs}");
    }
    Ok(container)
}

/// `podman stop` (SIGTERM, then SIGKILL after the stop timeout) and the exit code.
async fn stop(container: &Container) -> anyhow::Result<i64> {
    podman(&["stop", &container.name]).await?;
    let code = podman(&[
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &container.name,
    ])
    .await?;
    Ok(code.parse()?)
}

#[tokio::test]
async fn the_images_run_the_smoke_flow_and_stop_cleanly_on_sigterm() -> anyhow::Result<()> {
    let Ok(tag) = std::env::var("PORTICO_TEST_IMAGES") else {
        eprintln!(
            "PORTICO_TEST_IMAGES is not set: images not built, nothing to run (deploy/local/test.sh builds them)"
        );
        return Ok(());
    };
    let app = TestApp::prepare().await?;
    let sink = Sink::start().await?;

    // The image's own migrate command on the (already migrated) database: a no-op
    // that proves the entrypoint and the embedded migrations work read-only.
    let name = format!("portico-e2e-{}-migrate", app.id);
    let mut args = vec![
        "run".to_owned(),
        "--rm".to_owned(),
        "--name".to_owned(),
        name,
        "--network".to_owned(),
        "host".to_owned(),
        "--read-only".to_owned(),
        "--cap-drop".to_owned(),
        "ALL".to_owned(),
    ];
    args.extend(env_args(&app, "migrate", "127.0.0.1:0", &[]));
    args.push(format!("localhost/portico-gateway:{tag}"));
    args.push("migrate".to_owned());
    podman(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await
        .map_err(|e| {
            e.context("the image's migrate failed: are the images older than the binaries? (deploy/images/build.sh)")
        })?;

    // The user the image runs as, and no shell in it.
    let user = podman(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}",
        &format!("localhost/portico-gateway:{tag}"),
    ])
    .await?;
    assert_eq!(user, "10001:10001");
    // The OCI labels: version (the tag), the commit, the source.
    for service in [
        "portico-gateway",
        "portico-batch-processor",
        "portico-webhook-dispatcher",
    ] {
        let labels = podman(&[
            "image",
            "inspect",
            "--format",
            "{{json .Config.Labels}}",
            &format!("localhost/{service}:{tag}"),
        ])
        .await?;
        let labels: serde_json::Value = serde_json::from_str(&labels)?;
        assert_eq!(labels["org.opencontainers.image.version"], tag.as_str());
        let revision = labels["org.opencontainers.image.revision"]
            .as_str()
            .unwrap_or_default();
        assert!(revision.len() >= 40, "{service}: revision {revision:?}");
        assert!(
            labels["org.opencontainers.image.source"]
                .as_str()
                .is_some_and(|s| s.starts_with("https://")),
            "{service}: {labels}"
        );
    }
    let shell = podman(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        &format!("localhost/portico-gateway:{tag}"),
        "-c",
        "true",
    ])
    .await;
    assert!(shell.is_err(), "the image must have no shell");

    let grpc = ("PORTICO_GRPC_ADDR", format!("127.0.0.1:{}", free_port()?));
    let gateway = run(
        &app,
        &tag,
        "portico-gateway",
        0,
        std::slice::from_ref(&grpc),
    )
    .await?;
    let mut dispatcher = run(&app, &tag, "portico-webhook-dispatcher", 0, &[]).await?;
    let mut processor = run(&app, &tag, "portico-batch-processor", 0, &[]).await?;
    let base = format!("http://{}", gateway.http);

    // Smoke: webhook, events delivered and verified, a batch completed.
    let user = "user-images";
    let hook = ops::create_webhook(&app, &base, user, sink.url("/hook"), 200).await?;
    ops::publish(&app, &base, user, 10, "smoke").await?;
    let batch = ops::submit_batch(&app, &base, user, 50, "smoke").await?;
    let s = sink.clone();
    let secret = hook.secret.clone();
    wait_for(PATIENCE, move || {
        let (s, secret) = (s.clone(), secret.clone());
        async move {
            ops::received_by_id(&s, "smoke", &secret)
                .and_then(|seen| ops::distinct_events(&seen))
                .map(|n| n == 10)
                .unwrap_or(false)
        }
    })
    .await?;
    ops::distinct_events(&ops::received_by_id(&sink, "smoke", &hook.secret)?)?;
    wait_for(PATIENCE, || ops::batch_completed(&app, &base, user, &batch)).await?;

    // SIGTERM with work in flight: slow answers keep deliveries busy, a second batch
    // is mid-way; each worker must exit 0 (not killed at the stop timeout), and its
    // replacement finishes the work.
    sink.set_default(Reply::status(200).delayed(Duration::from_millis(300)));
    ops::publish(&app, &base, user, 40, "stop").await?;
    let batch2 = ops::submit_batch(&app, &base, user, 3_000, "stop").await?;
    assert_eq!(
        stop(&dispatcher).await?,
        0,
        "the dispatcher exits 0 on SIGTERM"
    );
    assert_eq!(
        stop(&processor).await?,
        0,
        "the batch-processor exits 0 on SIGTERM"
    );
    dispatcher = run(&app, &tag, "portico-webhook-dispatcher", 1, &[]).await?;
    processor = run(&app, &tag, "portico-batch-processor", 1, &[]).await?;
    let s = sink.clone();
    let secret = hook.secret.clone();
    wait_for(PATIENCE, move || {
        let (s, secret) = (s.clone(), secret.clone());
        async move {
            ops::received_by_id(&s, "stop", &secret)
                .and_then(|seen| ops::distinct_events(&seen))
                .map(|n| n == 40)
                .unwrap_or(false)
        }
    })
    .await?;
    ops::distinct_events(&ops::received_by_id(&sink, "stop", &hook.secret)?)?;
    wait_for(PATIENCE, || {
        ops::batch_completed(&app, &base, user, &batch2)
    })
    .await?;
    let b = ops::batch(&app, &base, user, &batch2).await?;
    assert_eq!(b["counts"]["succeeded"], 3_000, "{b}");
    let results: i64 = sqlx::query_scalar("SELECT count(*) FROM bulk_order_results")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(results, 3_050, "one result per order, none twice");

    for c in [&gateway, &dispatcher, &processor] {
        assert_eq!(stop(c).await?, 0, "{} exits 0 on SIGTERM", c.name);
    }
    drop((gateway, dispatcher, processor));
    app.cleanup().await;
    Ok(())
}
