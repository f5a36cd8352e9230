//! Dead letters for operators, against the real binaries: jobs that could not be
//! decoded and an event PostgreSQL refuses are recorded by the dispatcher; an operator
//! (and nobody else) lists and inspects them, discards one, replays one whose cause is
//! fixed and sees its event delivered, and every action leaves an audit record. A
//! resolved record cannot be resolved again; a replayed job that fails again reopens
//! its record; the batch-processor's gauge counts what is unresolved.

use std::time::Duration;

use base64::Engine;
use portico_e2e::sink::Sink;
use portico_e2e::{
    ALL_SERVICES, OPERATOR_TOKEN, SERVICE_TOKEN, ServiceKind, TestApp, assert_problem, wait_for,
};
use portico_queue::jobs::{EventDispatch, Job};
use portico_queue::topology::Topology;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

/// How long a scenario waits for something asynchronous to happen.
const PATIENCE: Duration = Duration::from_secs(30);

const ALICE: &str = "user-alice";
const CONSUMER: &str = "webhook-dispatcher.events";

fn event_job(event_id: Uuid, idempotency_key: &str, n: &str) -> anyhow::Result<Job> {
    Ok(Job::EventDispatchV1(EventDispatch {
        event_id,
        user_id: ALICE.to_owned(),
        event_type: "order.created".to_owned(),
        data: serde_json::value::to_raw_value(&json!({ "n": n }))?,
        idempotency_key: idempotency_key.to_owned(),
        ordering_key: None,
        accepted_at: chrono::Utc::now(),
        only_webhook_id: None,
    }))
}

/// GET as the operator; returns status and body.
async fn operator_get(app: &TestApp, path: &str) -> anyhow::Result<(StatusCode, Value)> {
    let res = app
        .http
        .get(format!("{}/api/v1/admin{path}", app.base_url()))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?;
    let status = res.status();
    Ok((status, res.json().await?))
}

/// POST an action as the operator `name`.
async fn operator_post(
    app: &TestApp,
    path: &str,
    name: &str,
    reason: &str,
) -> anyhow::Result<reqwest::Response> {
    Ok(app
        .http
        .post(app.api(&format!("/admin{path}")))
        .bearer_auth(OPERATOR_TOKEN)
        .header("x-portico-operator", name)
        .json(&json!({ "reason": reason }))
        .send()
        .await?)
}

async fn unresolved_gauge(app: &TestApp) -> Option<f64> {
    let url = format!(
        "http://{}/metrics",
        app.addr(ServiceKind::BatchProcessor, "http")
    );
    let text = app.http.get(url).send().await.ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("portico_dead_letters_unresolved "))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_for_gauge(app: &TestApp, expected: f64) -> anyhow::Result<()> {
    let last = std::sync::Mutex::new(None);
    wait_for(PATIENCE, || async {
        let value = unresolved_gauge(app).await;
        if let Ok(mut l) = last.lock() {
            *l = value;
        }
        value == Some(expected)
    })
    .await
    .map_err(|_| {
        anyhow::anyhow!(
            "portico_dead_letters_unresolved is {:?}, expected {expected}",
            last.lock().map(|l| *l).unwrap_or_default()
        )
    })
}

/// The whole operator flow, end to end.
#[tokio::test]
async fn operators_inspect_replay_and_discard_dead_letters() -> anyhow::Result<()> {
    // Retention rounds every second: the unresolved count follows within a second.
    let mut app =
        TestApp::spawn_with(&[("PORTICO_RETENTION_INTERVAL_SECS", "1")], &ALL_SERVICES).await?;
    let sink = Sink::start().await?;
    let res = app
        .http
        .post(app.api("/webhooks"))
        .bearer_auth(app.user_token(ALICE))
        .json(&json!({"url": sink.url("/alice"), "events": ["order.*"]}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);

    // Two messages no version decodes and an event PostgreSQL refuses (a NUL in its
    // idempotency key), straight to JetStream as a broken producer would send them.
    let nats = async_nats::connect(&app.nats_url).await?;
    let js = async_nats::jetstream::new(nats);
    let topology = Topology::new(&app.stream_prefix, 1)?;
    let events_subject = topology.subject(portico_queue::topology::JobKind::EventDispatch);
    for garbage in [
        &b"not a job"[..],
        br#"{"type":"event_dispatch.v9","job":{}}"#,
    ] {
        js.publish(events_subject.clone(), garbage.to_vec().into())
            .await?
            .await?;
    }
    let poison_id = Uuid::now_v7();
    let poison = event_job(poison_id, "poison\u{0}key", "poison")?;
    js.publish(events_subject.clone(), poison.encode()?.into())
        .await?
        .await?;
    // A valid event that was dead-lettered while, say, the database was down: its
    // cause is gone, so a replay succeeds.
    let good_id = Uuid::now_v7();
    let good = event_job(good_id, "good-key", "replayed")?;
    let good_dl: i64 = sqlx::query_scalar(
        "INSERT INTO job_dead_letters (consumer, subject, payload, reason, user_id, message_id)
         VALUES ($1, $2, $3, 'gave up after 10 deliveries: database: pool timed out', $4, $5)
         RETURNING id",
    )
    .bind(CONSUMER)
    .bind(&events_subject)
    .bind(good.encode()?)
    .bind(ALICE)
    .bind(good.message_id())
    .fetch_one(&app.pool)
    .await?;

    let pool = app.pool.clone();
    wait_for(PATIENCE, move || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM job_dead_letters")
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                == 4
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("the dispatcher did not record the dead letters: {e}"))?;
    let id_of_payload = |payload: &'static [u8]| {
        sqlx::query_scalar::<_, i64>("SELECT id FROM job_dead_letters WHERE payload = $1")
            .bind(payload)
            .fetch_one(&app.pool)
    };
    let garbage_dl = id_of_payload(b"not a job").await?;
    let unknown_type_dl = id_of_payload(br#"{"type":"event_dispatch.v9","job":{}}"#).await?;
    let poison_dl: i64 =
        sqlx::query_scalar("SELECT id FROM job_dead_letters WHERE message_id = $1")
            .bind(format!("evt:{poison_id}"))
            .fetch_one(&app.pool)
            .await?;
    wait_for_gauge(&app, 4.0).await?;

    // --- nobody but the operator ------------------------------------------------------
    let list = app.api("/admin/dead-letters");
    let res = app.http.get(&list).send().await?;
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await?;
    let as_user = app.http.get(&list).bearer_auth(app.user_token(ALICE));
    assert_problem(
        as_user.send().await?,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await?;
    let as_service = app
        .http
        .get(&list)
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", ALICE);
    assert_problem(
        as_service.send().await?,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await?;
    let wrong = app
        .http
        .get(&list)
        .bearer_auth("e2e-operator-token-0123456780");
    assert_problem(
        wrong.send().await?,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await?;
    let integration: Value = app
        .http
        .post(app.api("/integrations"))
        .bearer_auth(app.user_token(ALICE))
        .json(&json!({"name": "ERP", "type": "erp"}))
        .send()
        .await?
        .json()
        .await?;
    let partner = app.http.get(&list).basic_auth(
        integration["credentials"]["apiKey"].as_str().unwrap_or(""),
        integration["credentials"]["apiSecret"].as_str(),
    );
    assert_problem(
        partner.send().await?,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await?;
    let replay_as_service = app
        .http
        .post(app.api(&format!("/admin/dead-letters/{good_dl}/replay")))
        .bearer_auth(SERVICE_TOKEN)
        .header("x-portico-user-id", ALICE)
        .json(&json!({"reason": "not allowed"}))
        .send()
        .await?;
    assert_problem(
        replay_as_service,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await?;
    // The operator token is no credential anywhere else.
    let res = app
        .http
        .get(app.api("/webhooks"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?;
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await?;

    // --- list, filters, pages -----------------------------------------------------------
    let (status, page) = operator_get(&app, "/dead-letters").await?;
    assert_eq!(status, StatusCode::OK, "{page}");
    let ids: Vec<i64> = page["data"]
        .as_array()
        .map(|a| a.iter().filter_map(|d| d["id"].as_i64()).collect())
        .unwrap_or_default();
    let mut expected = vec![garbage_dl, unknown_type_dl, poison_dl, good_dl];
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, expected, "newest first: {page}");
    assert_eq!(page["nextCursor"], Value::Null);
    let first = &page["data"][0];
    for field in ["consumer", "subject", "reason", "payloadBytes", "createdAt"] {
        assert!(!first[field].is_null(), "{field}: {first}");
    }
    assert_eq!(first["resolution"], Value::Null);

    let (_, p1) = operator_get(&app, "/dead-letters?limit=3").await?;
    assert_eq!(p1["data"].as_array().map(Vec::len), Some(3));
    let cursor = p1["nextCursor"].as_str().unwrap_or_default().to_owned();
    let (_, p2) = operator_get(&app, &format!("/dead-letters?limit=3&cursor={cursor}")).await?;
    assert_eq!(p2["data"][0]["id"].as_i64(), expected.last().copied());
    assert_eq!(p2["nextCursor"], Value::Null);

    let count = |v: &Value| v["data"].as_array().map_or(0, Vec::len);
    let (_, by_owner) = operator_get(&app, &format!("/dead-letters?userId={ALICE}")).await?;
    assert_eq!(count(&by_owner), 2, "{by_owner}");
    let (_, by_consumer) =
        operator_get(&app, &format!("/dead-letters?consumer={CONSUMER}")).await?;
    assert_eq!(count(&by_consumer), 4);
    let (_, other_consumer) = operator_get(&app, "/dead-letters?consumer=batch-processor").await?;
    assert_eq!(count(&other_consumer), 0);
    let (_, future) = operator_get(&app, "/dead-letters?since=2999-01-01T00:00:00Z").await?;
    assert_eq!(count(&future), 0);
    let (_, past) = operator_get(&app, "/dead-letters?until=2000-01-01T00:00:00Z").await?;
    assert_eq!(count(&past), 0);
    let (_, window) = operator_get(
        &app,
        "/dead-letters?since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z&status=unresolved",
    )
    .await?;
    assert_eq!(count(&window), 4);
    let (status, bad) = operator_get(&app, "/dead-letters?since=yesterday&status=all").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let codes: Vec<&str> = bad["errors"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["code"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(codes, ["invalid_status", "invalid_timestamp"], "{bad}");

    // --- one dead letter ------------------------------------------------------------------
    let (status, garbage) = operator_get(&app, &format!("/dead-letters/{garbage_dl}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(garbage["job"], Value::Null);
    assert_eq!(
        garbage["payloadBase64"],
        base64::engine::general_purpose::STANDARD.encode(b"not a job")
    );
    assert!(garbage["decodeError"].is_string(), "{garbage}");
    assert!(
        garbage["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("undecodable job")),
        "{garbage}"
    );
    let (_, poisoned) = operator_get(&app, &format!("/dead-letters/{poison_dl}")).await?;
    assert_eq!(poisoned["job"]["type"], "event_dispatch.v1", "{poisoned}");
    assert_eq!(poisoned["job"]["job"]["event_id"], poison_id.to_string());
    assert_eq!(poisoned["job"]["job"]["data"]["n"], "poison");
    assert_eq!(poisoned["userId"], ALICE);
    assert_eq!(poisoned["payloadBase64"], Value::Null);
    assert_eq!(poisoned["actions"], json!([]));
    let res = app
        .http
        .get(app.api("/admin/dead-letters/999999999"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await?;
    let res = app
        .http
        .get(app.api("/admin/dead-letters/abc"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;

    // --- discard ---------------------------------------------------------------------------
    let res = operator_post(
        &app,
        &format!("/dead-letters/{garbage_dl}/discard"),
        "sre-ana",
        " ",
    )
    .await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    let res = app
        .http
        .post(app.api(&format!("/admin/dead-letters/{garbage_dl}/discard")))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?;
    assert_problem(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await?;
    let res = app
        .http
        .post(app.api(&format!("/admin/dead-letters/{garbage_dl}/discard")))
        .bearer_auth(OPERATOR_TOKEN)
        .header("x-portico-operator", "sre-ana")
        .header("x-request-id", "req-discard-1")
        .json(&json!({"reason": "garbage from a test producer"}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let discarded: Value = res.json().await?;
    assert_eq!(discarded["resolution"], "discarded", "{discarded}");
    assert!(discarded["resolvedAt"].is_string());
    assert_eq!(discarded["actions"][0]["action"], "discarded");
    assert_eq!(discarded["actions"][0]["operator"], "sre-ana");
    assert_eq!(discarded["actions"][0]["requestId"], "req-discard-1");
    assert_eq!(discarded["actions"][0]["clientAddr"], "127.0.0.1");
    for action in ["replay", "discard"] {
        let res = operator_post(
            &app,
            &format!("/dead-letters/{garbage_dl}/{action}"),
            "sre-ana",
            "again",
        )
        .await?;
        assert_problem(res, StatusCode::CONFLICT, "dead_letter_resolved").await?;
    }
    // Bytes that are no job cannot be replayed, only discarded.
    let res = operator_post(
        &app,
        &format!("/dead-letters/{unknown_type_dl}/replay"),
        "sre-ana",
        "try it",
    )
    .await?;
    assert_problem(res, StatusCode::CONFLICT, "dead_letter_undecodable").await?;
    let res = operator_post(
        &app,
        &format!("/dead-letters/{unknown_type_dl}/discard"),
        "sre-ana",
        "no version knows v9",
    )
    .await?;
    assert_eq!(res.status(), StatusCode::OK);
    wait_for_gauge(&app, 2.0).await?;

    // --- replay ------------------------------------------------------------------------------
    let res = operator_post(
        &app,
        &format!("/dead-letters/{good_dl}/replay"),
        "sre-bo",
        "database is back",
    )
    .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let replayed: Value = res.json().await?;
    assert_eq!(replayed["resolution"], "replayed", "{replayed}");
    let message_id = format!("evt:{good_id}:replay:{good_dl}.1");
    assert_eq!(replayed["actions"][0]["replayMessageId"], message_id);
    assert_eq!(replayed["actions"][0]["operator"], "sre-bo");
    let s = sink.clone();
    wait_for(PATIENCE, move || {
        let s = s.clone();
        async move {
            s.received_at("/alice")
                .iter()
                .any(|r| r.json()["data"]["n"] == "replayed")
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("the replayed event was not delivered: {e}"))?;
    let delivery = sink
        .received_at("/alice")
        .into_iter()
        .find(|r| r.json()["data"]["n"] == "replayed")
        .ok_or_else(|| anyhow::anyhow!("no delivery"))?;
    assert_eq!(delivery.header("webhook-id"), good_id.to_string());
    let res = operator_post(
        &app,
        &format!("/dead-letters/{good_dl}/replay"),
        "sre-bo",
        "once more",
    )
    .await?;
    assert_problem(res, StatusCode::CONFLICT, "dead_letter_resolved").await?;

    // A replay whose cause is not fixed fails again and reopens its record.
    let res = operator_post(
        &app,
        &format!("/dead-letters/{poison_dl}/replay"),
        "sre-bo",
        "maybe it works now",
    )
    .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let pool = app.pool.clone();
    wait_for(PATIENCE, move || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT resolved_at IS NULL AND resolution IS NULL FROM job_dead_letters WHERE id = $1",
            )
            .bind(poison_dl)
            .fetch_one(&pool)
            .await
            .unwrap_or(false)
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("the failed replay did not reopen its record: {e}"))?;
    let (_, reopened) = operator_get(&app, &format!("/dead-letters/{poison_dl}")).await?;
    assert_eq!(reopened["resolution"], Value::Null, "{reopened}");
    assert_eq!(reopened["actions"][0]["action"], "replayed");
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM job_dead_letters")
            .fetch_one(&app.pool)
            .await?,
        4,
        "reopened, not recorded twice"
    );

    // --- the audit -----------------------------------------------------------------------------
    let audit: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT dead_letter_id, action, operator, reason FROM dead_letter_actions ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await?;
    let summary: Vec<(i64, &str, &str, &str)> = audit
        .iter()
        .map(|(id, action, operator, reason)| {
            (*id, action.as_str(), operator.as_str(), reason.as_str())
        })
        .collect();
    assert_eq!(
        summary,
        [
            (
                garbage_dl,
                "discarded",
                "sre-ana",
                "garbage from a test producer"
            ),
            (
                unknown_type_dl,
                "discarded",
                "sre-ana",
                "no version knows v9"
            ),
            (good_dl, "replayed", "sre-bo", "database is back"),
            (poison_dl, "replayed", "sre-bo", "maybe it works now"),
        ]
    );
    let traced: bool = sqlx::query_scalar(
        "SELECT bool_and(request_id IS NOT NULL AND client_addr = '127.0.0.1'
                         AND at >= (SELECT created_at FROM job_dead_letters WHERE id = dead_letter_id))
           FROM dead_letter_actions",
    )
    .fetch_one(&app.pool)
    .await?;
    assert!(
        traced,
        "every action records its request id and client address"
    );
    // Unresolved: the reopened poison event only.
    wait_for_gauge(&app, 1.0).await?;

    // --- a gateway without an operator token has no admin API -----------------------------------
    let bare = app
        .start_extra(ServiceKind::Gateway, &[("PORTICO_OPERATOR_TOKEN", "")])
        .await?;
    let bare_url = format!(
        "http://{}/api/admin/dead-letters",
        bare.addrs.get("http").cloned().unwrap_or_default()
    );
    let res = app
        .http
        .get(bare_url)
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await?;
    assert_problem(res, StatusCode::NOT_FOUND, "operator_access_disabled").await?;
    bare.terminate(Duration::from_secs(20)).await?;
    app.cleanup().await;
    Ok(())
}
