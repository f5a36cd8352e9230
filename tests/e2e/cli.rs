//! The `portico` binary against the real system: webhooks created, listed and read,
//! an event published and its signed delivery verified offline (and a tampered body
//! refused), a bulk NDJSON file followed to its summary (exit code 7 when an order
//! fails), the audit log listed with its filters and verified (exit code 8 once a
//! record is edited), and problem+json errors printed as one line with their exit codes.
//!
//! Run `cargo build --workspace --bins` first: the tests run `target/debug/portico`.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use portico_e2e::sink::{Reply, Sink};
use portico_e2e::{SERVICE_TOKEN, ServiceKind, TestApp, bin_dir, wait_for};
use serde_json::{Value, json};

/// Runs `portico` with the gateway's URL and the service token for `user`, an empty
/// config file location and nothing else from the environment.
async fn portico(app: &TestApp, user: &str, args: &[&str]) -> anyhow::Result<Output> {
    portico_env(app, &[("PORTICO_USER_ID", user)], args).await
}

async fn portico_env(app: &TestApp, env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<Output> {
    let config = std::env::temp_dir().join(format!("portico-cli-e2e-{}.json", app.id));
    let mut cmd = tokio::process::Command::new(bin_dir().join("portico"));
    cmd.env_clear()
        .env("PORTICO_CONFIG", &config)
        .env("PORTICO_URL", app.base_url())
        .env("PORTICO_SERVICE_TOKEN", SERVICE_TOKEN)
        .args(args)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(120), cmd.output()).await??;
    Ok(output)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_out(o: &Output) -> Value {
    assert!(o.status.success(), "exit {:?}: {}", o.status, stderr(o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(o)))
}

fn scratch(app: &TestApp, name: &str, contents: &[u8]) -> anyhow::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!("portico-cli-e2e-{}-{name}", app.id));
    std::fs::write(&path, contents)?;
    Ok(path)
}

fn order(reference: &str, quantity: i64) -> Value {
    json!({
        "clientOrderRef": reference,
        "currency": "EUR",
        "customer": {"email": "ada@example.com", "name": "Ada Lovelace"},
        "shippingAddress": {"line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
        "lineItems": [{"sku": "SKU-1", "quantity": quantity, "unitPrice": "12.50"}]
    })
}

/// Create, list and get a webhook; publish an event; the delivery that reaches the
/// sink verifies with `portico verify` and the same delivery with one byte changed
/// does not (exit 6).
#[tokio::test]
async fn webhooks_publish_and_verify_a_real_delivery() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let sink = Sink::start().await?;
    let hook_url = sink.url("/hooks");

    let created = json_out(
        &portico(
            &app,
            "cli-user",
            &[
                "-o",
                "json",
                "webhooks",
                "create",
                "--url",
                &hook_url,
                "--event",
                "order.*",
                "--description",
                "from the CLI",
            ],
        )
        .await?,
    );
    let id = created["id"].as_str().expect("id").to_owned();
    let secret = created["secret"].as_str().expect("secret").to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    assert_eq!(created["events"], json!(["order.*"]));

    let listed = json_out(&portico(&app, "cli-user", &["-o", "json", "webhooks", "list"]).await?);
    let ids: Vec<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|w| w["id"].as_str())
        .collect();
    assert_eq!(ids, vec![id.as_str()]);
    // Another user sees none of them.
    let other =
        json_out(&portico(&app, "someone-else", &["-o", "json", "webhooks", "list"]).await?);
    assert_eq!(other, json!([]));

    let table = portico(&app, "cli-user", &["webhooks", "get", &id]).await?;
    assert!(table.status.success(), "{}", stderr(&table));
    assert!(stdout(&table).contains(&hook_url), "{}", stdout(&table));
    assert!(
        stdout(&table).contains("from the CLI"),
        "{}",
        stdout(&table)
    );

    let published = json_out(
        &portico(
            &app,
            "cli-user",
            &[
                "-o",
                "json",
                "events",
                "publish",
                "--type",
                "order.created",
                "--data",
                r#"{"orderId":"o-1","total":"25.00"}"#,
            ],
        )
        .await?,
    );
    let event_id = published["id"].as_str().expect("event id").to_owned();

    wait_for(Duration::from_secs(30), || async { sink.count() >= 1 }).await?;
    let delivery = sink.received().remove(0);
    assert_eq!(delivery.header("webhook-id"), event_id);
    let headers = [
        format!("webhook-id: {}", delivery.header("webhook-id")),
        format!(
            "webhook-timestamp: {}",
            delivery.header("webhook-timestamp")
        ),
        format!(
            "webhook-signature: {}",
            delivery.header("webhook-signature")
        ),
    ];
    let body = scratch(&app, "body.json", &delivery.body)?;
    let body_path = body.to_string_lossy().into_owned();
    let mut args = vec!["verify", "--secret", &secret, "--body-file", &body_path];
    for h in &headers {
        args.extend(["-H", h.as_str()]);
    }
    let ok = portico(&app, "cli-user", &args).await?;
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).starts_with("valid:"), "{}", stdout(&ok));

    let mut tampered = delivery.body.to_vec();
    let last = tampered.len() - 2;
    tampered[last] ^= 0x01;
    let tampered = scratch(&app, "tampered.json", &tampered)?;
    let tampered_path = tampered.to_string_lossy().into_owned();
    let mut args = vec!["verify", "--secret", &secret, "--body-file", &tampered_path];
    for h in &headers {
        args.extend(["-H", h.as_str()]);
    }
    let bad = portico(&app, "cli-user", &args).await?;
    assert_eq!(bad.status.code(), Some(6), "{}", stderr(&bad));
    assert!(
        stderr(&bad).starts_with("error: invalid: verification failed: no matching signature"),
        "{}",
        stderr(&bad)
    );

    // The delivery is listed with its status, and `get` shows the attempt.
    let wh = id.clone();
    wait_for(Duration::from_secs(20), || {
        let app = &app;
        let wh = wh.clone();
        async move {
            portico(
                app,
                "cli-user",
                &[
                    "-o",
                    "json",
                    "deliveries",
                    "list",
                    &wh,
                    "--status",
                    "succeeded",
                ],
            )
            .await
            .ok()
            .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
            .is_some_and(|v| v.as_array().is_some_and(|a| a.len() == 1))
        }
    })
    .await?;

    let _ = std::fs::remove_file(body);
    let _ = std::fs::remove_file(tampered);
    app.cleanup().await;
    Ok(())
}

/// A refused request prints one line `error: <status> <code>: <detail> (request <id>)`,
/// one line per field error, and exits 3; bad credentials exit 4.
#[tokio::test]
async fn problems_print_one_line_with_field_errors_and_exit_codes() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(&[], &[portico_e2e::ServiceKind::Gateway]).await?;

    let out = portico(
        &app,
        "cli-user",
        &[
            "webhooks",
            "create",
            "--url",
            "not a url",
            "--event",
            "order.*",
        ],
    )
    .await?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    let mut lines = err.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.starts_with("error: 400 validation_failed: "), "{err}");
    assert!(first.contains("(request "), "{err}");
    assert!(lines.any(|l| l.starts_with("  /url: ")), "{err}");
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));

    let missing = uuid::Uuid::new_v4().to_string();
    let out = portico(&app, "cli-user", &["webhooks", "get", &missing]).await?;
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).starts_with("error: 404 not_found: "),
        "{}",
        stderr(&out)
    );

    let out = portico_env(
        &app,
        &[("PORTICO_USER_ID", "u"), ("PORTICO_SERVICE_TOKEN", "wrong")],
        &["webhooks", "list"],
    )
    .await?;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("error: 401 unauthenticated: "),
        "{}",
        stderr(&out)
    );

    // A typed id is checked before any request.
    let out = portico(&app, "cli-user", &["webhooks", "get", "not-a-uuid"]).await?;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));

    app.cleanup().await;
    Ok(())
}

/// `bulk submit` follows the batch to its end: a file with one invalid order exits 7
/// with the error code in the summary; `bulk results --status failed --format csv`
/// lists that order; an all-valid file exits 0.
#[tokio::test]
async fn bulk_submit_waits_for_the_summary() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;

    let mut ndjson = String::new();
    for (reference, quantity) in [("CLI-1", 1), ("CLI-2", 0), ("CLI-3", 2)] {
        ndjson.push_str(&order(reference, quantity).to_string());
        ndjson.push('\n');
    }
    let file = scratch(&app, "orders.ndjson", ndjson.as_bytes())?;
    let path = file.to_string_lossy().into_owned();
    let out = portico(&app, "bulk-user", &["-o", "json", "bulk", "submit", &path]).await?;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let batch: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(batch["status"], "completed_with_errors", "{batch}");
    assert_eq!(batch["counts"]["total"], 3);
    assert_eq!(batch["counts"]["succeeded"], 2);
    assert_eq!(batch["counts"]["failed"], 1);
    let summary = batch["errorSummary"].as_object().expect("error summary");
    assert_eq!(
        summary.values().filter_map(Value::as_i64).sum::<i64>(),
        1,
        "{batch}"
    );

    let id = batch["id"].as_str().expect("batch id").to_owned();
    let out = portico(
        &app,
        "bulk-user",
        &[
            "bulk", "results", &id, "--status", "failed", "--format", "csv",
        ],
    )
    .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let csv = stdout(&out);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2, "{csv}");
    assert!(rows[0].starts_with("index,clientOrderRef"), "{csv}");
    assert!(rows[1].contains("CLI-2"), "{csv}");

    // Table output: the summary names the error codes.
    let good = scratch(
        &app,
        "good.json",
        json!({"orders": [order("OK-1", 1), order("OK-2", 3)]})
            .to_string()
            .as_bytes(),
    )?;
    let good_path = good.to_string_lossy().into_owned();
    let out = portico(&app, "bulk-user", &["bulk", "submit", &good_path]).await?;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("completed"), "{}", stdout(&out));

    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(good);
    app.cleanup().await;
    Ok(())
}

/// The typed client against the real gateway: a list streamed over several cursor
/// pages yields every webhook once, newest first; problems decode with their code,
/// field errors and request id; a partner's 429 carries Retry-After, and the default
/// policy waits for it and succeeds.
#[tokio::test]
async fn typed_client_pages_problems_and_retry_after() -> anyhow::Result<()> {
    use futures::TryStreamExt;
    use portico_client::api::integrations::CreateIntegrationBody;
    use portico_client::api::webhooks::CreateWebhookBody;
    use portico_client::{Auth, Client, RetryPolicy};

    let app = TestApp::spawn_with(&[], &[portico_e2e::ServiceKind::Gateway]).await?;
    let client = Client::builder(app.base_url())
        .auth(Auth::service(SERVICE_TOKEN, "client-user"))
        .build()?;
    let mut created = Vec::new();
    for i in 0..5 {
        let body = CreateWebhookBody {
            url: format!("http://127.0.0.1:9/hooks/{i}"),
            events: vec!["order.*".into()],
            description: None,
            headers: None,
            retry_policy: None,
            rate_limit_per_second: None,
            max_concurrency: None,
            ordering_enabled: None,
        };
        created.push(client.create_webhook(&body).await?.webhook.id);
    }
    let streamed: Vec<_> = client
        .webhooks(Some(2))
        .map_ok(|w| w.id)
        .try_collect()
        .await?;
    created.reverse();
    assert_eq!(streamed, created, "newest first, each once, over 3 pages");

    let missing = client
        .get_webhook(uuid::Uuid::new_v4().into())
        .await
        .expect_err("no such webhook");
    let api = missing.api().expect("an API error");
    assert_eq!((api.status, api.code()), (404, "not_found"));
    assert!(api.request_id.is_some());

    let invalid = CreateWebhookBody {
        url: "ftp://example.com".into(),
        events: vec![],
        description: None,
        headers: None,
        retry_policy: None,
        rate_limit_per_second: None,
        max_concurrency: None,
        ordering_enabled: None,
    };
    let err = client.create_webhook(&invalid).await.expect_err("invalid");
    let api = err.api().expect("an API error");
    assert_eq!(api.code(), "validation_failed");
    let paths: Vec<&str> = api.field_errors().iter().map(|f| f.path.as_str()).collect();
    assert!(
        paths.contains(&"/url") && paths.contains(&"/events"),
        "{paths:?}"
    );

    // A partner allowed 1 request per second (a burst of 2).
    let integration = client
        .create_integration(&CreateIntegrationBody {
            name: "Rate limited".into(),
            integration_type: "erp".into(),
            webhook_url: None,
            scopes: None,
            expires_at: None,
            rate_limit_per_second: Some(1),
            daily_quota: None,
        })
        .await?;
    let partner = |retry: RetryPolicy| {
        Client::builder(app.base_url())
            .auth(Auth::partner(
                integration.credentials.api_key.clone(),
                integration.credentials.api_secret.clone(),
            ))
            .retry(retry)
            .build()
    };
    let impatient = partner(RetryPolicy::none())?;
    let mut limited = None;
    for _ in 0..5 {
        if let Err(e) = impatient.current_integration().await {
            limited = Some(e);
            break;
        }
    }
    let limited = limited.expect("the burst of 2 runs out within 5 calls");
    let api = limited.api().expect("an API error");
    assert_eq!((api.status, api.code()), (429, "rate_limited"));
    let wait = api.retry_after.expect("Retry-After on a 429");
    assert!(wait >= Duration::from_secs(1), "{wait:?}");

    let patient = partner(RetryPolicy::default())?;
    let started = std::time::Instant::now();
    for _ in 0..4 {
        let me = patient.current_integration().await?;
        assert_eq!(me.integration.id, integration.integration.id);
    }
    // Four calls at one per second (the bucket was empty) needed waiting.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    app.cleanup().await;
    Ok(())
}

/// Runs `portico` with exactly this environment (plus the empty config location unless
/// given), for the profile tests.
async fn portico_raw(app: &TestApp, env: &[(&str, &str)], args: &[&str]) -> anyhow::Result<Output> {
    let config = std::env::temp_dir().join(format!("portico-cli-e2e-{}.json", app.id));
    let mut cmd = tokio::process::Command::new(bin_dir().join("portico"));
    cmd.env_clear()
        .env("PORTICO_CONFIG", &config)
        .args(args)
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(tokio::time::timeout(Duration::from_secs(120), cmd.output()).await??)
}

/// Every other command's happy path and a bad input: profiles, webhook update,
/// secrets, test events, delivery detail and retries, integrations and a partner's own
/// usage, completions.
#[tokio::test]
async fn every_command_happy_path_and_a_bad_input() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let sink = Sink::start().await?;
    // The first delivery fails for good (no retries), so it can be retried by hand.
    sink.script([Reply::status(500)]);
    let user = "every-user";

    // Profiles: `config set` writes one, later commands use it without any PORTICO_*.
    let base = app.base_url();
    let out = portico_raw(
        &app,
        &[],
        &[
            "config",
            "set",
            "local",
            "--server",
            &base,
            "--service-token",
            SERVICE_TOKEN,
            "--user-id",
            user,
            "--default",
        ],
    )
    .await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = json_out(&portico_raw(&app, &[], &["config", "show", "-o", "json"]).await?);
    assert_eq!(shown["url"], base.as_str());
    assert_eq!(shown["userId"], user);
    assert!(
        !shown["serviceToken"]
            .as_str()
            .unwrap_or_default()
            .contains(SERVICE_TOKEN)
    );
    let out = portico_raw(&app, &[], &["--profile", "nope", "webhooks", "list"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    let created = json_out(
        &portico_raw(
            &app,
            &[],
            &[
                "-o",
                "json",
                "webhooks",
                "create",
                "--url",
                &sink.url("/h"),
                "-e",
                "order.*",
                "--max-retries",
                "0",
            ],
        )
        .await?,
    );
    let id = created["id"].as_str().expect("id").to_owned();
    let first_secret = created["secret"].as_str().expect("secret").to_owned();

    // update: disable, then enable with a description; a bad rate limit is refused.
    let updated = json_out(
        &portico(
            &app,
            user,
            &["-o", "json", "webhooks", "update", &id, "--disable"],
        )
        .await?,
    );
    assert_eq!(updated["active"], false);
    let updated = json_out(
        &portico(
            &app,
            user,
            &[
                "-o",
                "json",
                "webhooks",
                "update",
                &id,
                "--enable",
                "--description",
                "on again",
            ],
        )
        .await?,
    );
    assert_eq!(
        (updated["active"].clone(), updated["description"].clone()),
        (json!(true), json!("on again"))
    );
    let out = portico(
        &app,
        user,
        &["webhooks", "update", &id, "--rate-limit", "0"],
    )
    .await?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // Secrets: rotation gives a new one, `secret` shows it.
    let rotated = json_out(
        &portico(
            &app,
            user,
            &[
                "-o",
                "json",
                "webhooks",
                "rotate-secret",
                &id,
                "--grace-period",
                "0",
            ],
        )
        .await?,
    );
    let new_secret = rotated["secret"].as_str().expect("secret").to_owned();
    assert_ne!(new_secret, first_secret);
    let shown = json_out(&portico(&app, user, &["-o", "json", "webhooks", "secret", &id]).await?);
    assert_eq!(shown["secret"], new_secret.as_str());

    // A test event reaches the sink; its delivery is listed, shown with its attempt
    // and retried.
    let sent = json_out(&portico(&app, user, &["-o", "json", "webhooks", "test", &id]).await?);
    let event_id = sent["eventId"].as_str().expect("event id").to_owned();
    wait_for(Duration::from_secs(30), || async { sink.count() >= 1 }).await?;
    assert_eq!(sink.received()[0].header("webhook-id"), event_id);
    let found = std::sync::Mutex::new(String::new());
    wait_for(Duration::from_secs(20), || {
        let app = &app;
        let id = id.clone();
        let found = &found;
        async move {
            let Ok(out) = portico(
                app,
                user,
                &[
                    "-o",
                    "json",
                    "deliveries",
                    "list",
                    &id,
                    "--status",
                    "failed",
                ],
            )
            .await
            else {
                return false;
            };
            let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
            match list[0]["id"].as_str() {
                Some(d) => {
                    *found.lock().expect("not poisoned") = d.to_owned();
                    true
                }
                None => false,
            }
        }
    })
    .await?;
    let delivery_id = found.lock().expect("not poisoned").clone();
    let detail = portico(&app, user, &["deliveries", "get", &id, &delivery_id]).await?;
    assert!(detail.status.success(), "{}", stderr(&detail));
    let text = stdout(&detail);
    assert!(text.contains("attempts:") && text.contains("500"), "{text}");
    let dry = portico(
        &app,
        user,
        &["deliveries", "retry-failed", &id, "--dry-run"],
    )
    .await?;
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert_eq!(stdout(&dry).trim(), "1 deliveries would be retried");
    let retried = json_out(
        &portico(
            &app,
            user,
            &["-o", "json", "deliveries", "retry", &id, &delivery_id],
        )
        .await?,
    );
    assert_eq!(retried["id"], delivery_id.as_str());
    wait_for(Duration::from_secs(30), || async { sink.count() >= 2 }).await?;
    let out = portico(
        &app,
        user,
        &["deliveries", "list", &id, "--status", "bogus"],
    )
    .await?;
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("/status"), "{}", stderr(&out));

    // Events: bad data is refused before any request.
    let out = portico(
        &app,
        user,
        &[
            "events",
            "publish",
            "--type",
            "order.created",
            "--data",
            "{nope",
        ],
    )
    .await?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not JSON"), "{}", stderr(&out));

    // Integrations: create, list, regenerate, usage by the owner and by the partner.
    let integration = json_out(
        &portico(
            &app,
            user,
            &[
                "-o",
                "json",
                "integrations",
                "create",
                "--name",
                "Acme",
                "--type",
                "erp",
                "--scope",
                "orders:read",
            ],
        )
        .await?,
    );
    let iid = integration["id"]
        .as_str()
        .expect("integration id")
        .to_owned();
    let listed = json_out(&portico(&app, user, &["-o", "json", "integrations", "list"]).await?);
    assert_eq!(listed[0]["id"], iid.as_str());
    let regenerated = json_out(
        &portico(
            &app,
            user,
            &[
                "-o",
                "json",
                "integrations",
                "regenerate",
                &iid,
                "--grace-period",
                "0",
            ],
        )
        .await?,
    );
    let key = regenerated["credentials"]["apiKey"]
        .as_str()
        .expect("key")
        .to_owned();
    let secret = regenerated["credentials"]["apiSecret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_ne!(
        secret,
        integration["credentials"]["apiSecret"]
            .as_str()
            .unwrap_or_default()
    );
    let mine = json_out(
        &portico_raw(
            &app,
            &[
                ("PORTICO_URL", &base),
                ("PORTICO_API_KEY", &key),
                ("PORTICO_API_SECRET", &secret),
            ],
            &["-o", "json", "--profile", "local", "integrations", "usage"],
        )
        .await?,
    );
    assert!(mine["totals"]["total"].is_u64(), "{mine}");
    // The partner's call is logged (asynchronously) and the owner sees it.
    wait_for(Duration::from_secs(20), || {
        let app = &app;
        let iid = iid.clone();
        async move {
            portico(app, user, &["-o", "json", "integrations", "usage", &iid])
                .await
                .ok()
                .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
                .is_some_and(|u| u["totals"]["total"].as_u64().unwrap_or(0) >= 1)
        }
    })
    .await?;
    let out = portico(
        &app,
        user,
        &["integrations", "create", "--name", "x", "--type", "crm"],
    )
    .await?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // Delete, and the webhook is gone.
    let out = portico(&app, user, &["webhooks", "delete", &id]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    let out = portico(&app, user, &["webhooks", "get", &id]).await?;
    assert_eq!(out.status.code(), Some(3));

    let completions = portico(&app, user, &["completions", "bash"]).await?;
    assert!(completions.status.success());
    assert!(
        stdout(&completions).contains("_portico"),
        "bash completion script"
    );

    let _ =
        std::fs::remove_file(std::env::temp_dir().join(format!("portico-cli-e2e-{}.json", app.id)));
    app.cleanup().await;
    Ok(())
}

/// `deliveries tail` prints the attempt of an event published after it subscribed, one
/// line, and exits after `--count 1`.
#[tokio::test]
async fn deliveries_tail_prints_live_attempts() -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let app = TestApp::spawn().await?;
    let sink = Sink::start().await?;
    let user = "tail-user";
    let created = json_out(
        &portico(
            &app,
            user,
            &[
                "-o",
                "json",
                "webhooks",
                "create",
                "--url",
                &sink.url("/t"),
                "-e",
                "order.*",
            ],
        )
        .await?,
    );
    let id = created["id"].as_str().expect("id").to_owned();

    let config = std::env::temp_dir().join(format!("portico-cli-e2e-{}.json", app.id));
    let mut tail = tokio::process::Command::new(bin_dir().join("portico"))
        .env_clear()
        .env("PORTICO_CONFIG", &config)
        .env("PORTICO_URL", app.base_url())
        .env("PORTICO_SERVICE_TOKEN", SERVICE_TOKEN)
        .env("PORTICO_USER_ID", user)
        .args(["deliveries", "tail", &id, "--count", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr_pipe = tail.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr_pipe).lines();
    let subscribed = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with("subscribed") {
                return Ok::<_, anyhow::Error>(true);
            }
        }
        Ok(false)
    })
    .await??;
    assert!(subscribed, "tail never subscribed");

    let published = json_out(
        &portico(
            &app,
            user,
            &[
                "-o",
                "json",
                "events",
                "publish",
                "--type",
                "order.created",
                "--data",
                "{\"n\":1}",
            ],
        )
        .await?,
    );
    assert!(published["id"].is_string());
    let output = tokio::time::timeout(Duration::from_secs(30), tail.wait_with_output()).await??;
    assert!(output.status.success(), "{:?}", output.status);
    let text = stdout(&output);
    let printed: Vec<&str> = text.lines().collect();
    assert_eq!(printed.len(), 1, "{text}");
    assert!(printed[0].contains(" attempt 1 order.created "), "{text}");
    assert!(printed[0].contains("200 -> succeeded"), "{text}");

    app.cleanup().await;
    Ok(())
}

/// `audit list` with every filter the API offers, as JSON and as a table, scoped to
/// the caller's user; `audit verify` exits 0 on an intact chain and 8 (naming the
/// record) once a record is edited in the database; partner credentials exit 4; a bad
/// time is refused before any request (1), a bad actor kind by the API (3).
#[tokio::test]
async fn audit_list_filters_and_verify_exit_codes() -> anyhow::Result<()> {
    // The gateway writes, links and verifies the log: no other service is needed.
    let app = TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await?;
    let user = "audit-cli-user";

    // Three changes: webhook.created, webhook.updated, integration.created.
    let created = json_out(
        &portico(
            &app,
            user,
            &[
                "-o",
                "json",
                "webhooks",
                "create",
                "--url",
                "http://127.0.0.1:9/hooks",
                "--event",
                "order.*",
            ],
        )
        .await?,
    );
    let hook = created["id"].as_str().expect("webhook id").to_owned();
    json_out(
        &portico(
            &app,
            user,
            &[
                "-o",
                "json",
                "webhooks",
                "update",
                &hook,
                "--description",
                "audited",
            ],
        )
        .await?,
    );
    let integration = json_out(
        &portico(
            &app,
            user,
            &[
                "-o",
                "json",
                "integrations",
                "create",
                "--name",
                "Audit ERP",
                "--type",
                "erp",
                "--scope",
                "orders:read",
            ],
        )
        .await?,
    );

    let actions = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("a list")
            .iter()
            .filter_map(|r| r["action"].as_str().map(str::to_owned))
            .collect()
    };
    let all = json_out(&portico(&app, user, &["-o", "json", "audit", "list"]).await?);
    assert_eq!(
        actions(&all),
        ["integration.created", "webhook.updated", "webhook.created"],
        "{all}"
    );
    assert_eq!(all[0]["seq"], 3, "{all}");
    assert_eq!(all[0]["actor"]["kind"], "service", "{all}");
    assert_eq!(all[1]["resourceId"], hook.as_str());
    assert!(
        all[0]["hash"].as_str().is_some_and(|h| h.len() == 64),
        "{all}"
    );

    for (args, expected) in [
        (
            vec!["--resource-type", "webhook"],
            vec!["webhook.updated", "webhook.created"],
        ),
        (
            vec![
                "--action",
                "webhook.updated",
                "--resource-id",
                hook.as_str(),
            ],
            vec!["webhook.updated"],
        ),
        (
            vec!["--actor-kind", "service", "--actor-id", user],
            vec!["integration.created", "webhook.updated", "webhook.created"],
        ),
        (vec!["--actor-kind", "partner"], vec![]),
        (
            vec!["--since", "2000-01-01T00:00:00Z"],
            vec!["integration.created", "webhook.updated", "webhook.created"],
        ),
        (vec!["--until", "2000-01-01T00:00:00Z"], vec![]),
        (vec!["--limit", "1"], vec!["integration.created"]),
        (
            vec!["--limit", "2"],
            vec!["integration.created", "webhook.updated"],
        ),
    ] {
        let mut full = vec!["-o", "json", "audit", "list"];
        full.extend(args.iter().copied());
        let listed = json_out(&portico(&app, user, &full).await?);
        assert_eq!(actions(&listed), expected, "{args:?}: {listed}");
    }
    // Another user's log is not visible.
    let other =
        json_out(&portico(&app, "audit-cli-other", &["-o", "json", "audit", "list"]).await?);
    assert_eq!(other, json!([]));

    let table = portico(&app, user, &["audit", "list", "--resource-type", "webhook"]).await?;
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("SEQ") && lines[0].contains("ACTION"),
        "{text}"
    );
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].contains("webhook.updated") && lines[1].contains(&hook),
        "{text}"
    );

    // Refusals: a bad time locally (1), a bad actor kind by the API (3).
    let out = portico(&app, user, &["audit", "list", "--since", "yesterday"]).await?;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("--since"), "{}", stderr(&out));
    let out = portico(&app, user, &["audit", "list", "--actor-kind", "robot"]).await?;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("/actorKind"), "{}", stderr(&out));

    // Partner credentials are refused (403: exit 4).
    let key = integration["credentials"]["apiKey"].as_str().expect("key");
    let secret = integration["credentials"]["apiSecret"]
        .as_str()
        .expect("secret");
    let base = app.base_url();
    let out = portico_raw(
        &app,
        &[
            ("PORTICO_URL", &base),
            ("PORTICO_API_KEY", key),
            ("PORTICO_API_SECRET", secret),
        ],
        &["audit", "list"],
    )
    .await?;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("403"), "{}", stderr(&out));

    // An intact chain: exit 0, as JSON and as a table.
    let verified = json_out(&portico(&app, user, &["-o", "json", "audit", "verify"]).await?);
    assert_eq!(verified["valid"], true, "{verified}");
    assert_eq!(
        (verified["records"].clone(), verified["headSeq"].clone()),
        (json!(3), json!(3))
    );
    assert_eq!(verified["head"], all[0]["hash"], "{verified}");
    let out = portico(&app, user, &["audit", "verify", "--from-seq", "2"]).await?;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("valid    true"), "{}", stdout(&out));
    assert!(stdout(&out).contains("records  2"), "{}", stdout(&out));

    // Someone with database access edits record 2: exit 8, the record named.
    sqlx::query(
        "UPDATE audit_log SET changes = '{\"fields\": [\"url\"]}' WHERE owner_id = $1 AND seq = 2",
    )
    .bind(user)
    .execute(&app.pool)
    .await?;
    let out = portico(&app, user, &["audit", "verify"]).await?;
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("broken at record 2 (edited)"),
        "{}",
        stderr(&out)
    );
    let out = portico(&app, user, &["-o", "json", "audit", "verify"]).await?;
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    let broken: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        (
            broken["valid"].clone(),
            broken["brokenAt"].clone(),
            broken["reason"].clone()
        ),
        (json!(false), json!(2), json!("edited")),
        "{broken}"
    );

    let _ =
        std::fs::remove_file(std::env::temp_dir().join(format!("portico-cli-e2e-{}.json", app.id)));
    app.cleanup().await;
    Ok(())
}

/// `bulk submit` of 10,000 orders (NDJSON) exits 0 with every order succeeded; the
/// elapsed time is printed (`--nocapture`) as the CLI's end-to-end figure.
#[tokio::test]
async fn bulk_submit_ten_thousand_orders() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let mut ndjson = String::with_capacity(10_000 * 300);
    for i in 0..10_000 {
        ndjson.push_str(&order(&format!("TEN-{i}"), 1).to_string());
        ndjson.push('\n');
    }
    let file = scratch(&app, "ten-thousand.ndjson", ndjson.as_bytes())?;
    let path = file.to_string_lossy().into_owned();
    let started = std::time::Instant::now();
    let out = portico(&app, "bulk-10k", &["-o", "json", "bulk", "submit", &path]).await?;
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let batch: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(batch["status"], "completed", "{batch}");
    assert_eq!(batch["counts"]["total"], 10_000);
    assert_eq!(batch["counts"]["succeeded"], 10_000);
    assert_eq!(batch["errorSummary"], json!({}));
    println!("portico bulk submit: 10,000 orders submitted and completed in {elapsed:?}");
    let _ = std::fs::remove_file(file);
    app.cleanup().await;
    Ok(())
}
