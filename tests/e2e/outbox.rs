//! The foundation's outbox guarantee: state and the job it needs are committed in one
//! transaction, so a process that dies right after the commit (before publishing) loses
//! nothing: the next relay publishes the job and the work gets done.

use std::time::Duration;

use portico_e2e::{ServiceKind, TestApp, wait_for};
use serde_json::{Value, json};

async fn stream_messages(app: &TestApp) -> anyhow::Result<u64> {
    let client = async_nats::connect(&app.nats_url).await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(format!("{}_JOBS", app.stream_prefix)).await?;
    Ok(stream.info().await?.state.messages)
}

fn order(i: usize) -> Value {
    json!({
        "clientOrderRef": format!("OB-{i}"),
        "currency": "USD",
        "customer": {"email": "o@example.com", "name": "O"},
        "shippingAddress": {"line1": "1 Main St", "city": "Austin", "postalCode": "73301", "country": "US"},
        "lineItems": [{"sku": "S", "quantity": 1, "unitPrice": 100}]
    })
}

/// The gateway aborts (like `kill -9`) right after committing a batch and its outbox
/// row, before publishing: the client sees a connection error, the batch and the job are
/// committed, and nothing is in JetStream yet. A fresh gateway's relay then publishes
/// the job, and the batch-processor completes the batch.
#[tokio::test]
async fn a_job_committed_before_a_crash_is_published_by_the_next_relay() -> anyhow::Result<()> {
    let mut app = TestApp::prepare().await?;
    app.start_with(
        ServiceKind::Gateway,
        &[("PORTICO_FAILPOINT", "after_outbox_commit")],
    )
    .await?;
    let token = app.user_token("outbox-user");
    let orders: Vec<Value> = (0..1_500).map(order).collect();
    let res = app
        .http
        .post(app.api("/bulk-orders"))
        .bearer_auth(&token)
        .json(&json!({ "orders": orders }))
        .send()
        .await;
    assert!(res.is_err(), "the gateway must die before answering");
    let status = app
        .take(ServiceKind::Gateway)
        .wait_exit(Duration::from_secs(10))
        .await?;
    assert!(!status.success(), "the failpoint aborts the process");

    let (batch_id, state, total): (uuid::Uuid, String, i32) =
        sqlx::query_as("SELECT id, status, total FROM bulk_order_batches")
            .fetch_one(&app.pool)
            .await?;
    assert_eq!((state.as_str(), total), ("pending", 1_500));
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM bulk_order_batch_chunks")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(chunks, 2);
    let outbox: Vec<String> = sqlx::query_scalar("SELECT message_id FROM outbox")
        .fetch_all(&app.pool)
        .await?;
    assert_eq!(outbox, vec![format!("batch:{batch_id}")]);
    assert_eq!(stream_messages(&app).await?, 0, "nothing was published");

    // A normal gateway starts; its relay publishes the committed job.
    app.start(ServiceKind::Gateway).await?;
    let pool = app.pool.clone();
    wait_for(Duration::from_secs(15), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM outbox")
                .fetch_one(&pool)
                .await
                .unwrap_or(-1)
                == 0
        }
    })
    .await?;
    assert_eq!(stream_messages(&app).await?, 1);

    // The batch-processor picks it up and completes the batch.
    app.start(ServiceKind::BatchProcessor).await?;
    let id = batch_id.to_string();
    let client = app.http.clone();
    let url = app.api(&format!("/bulk-orders/{id}"));
    let last = std::sync::Mutex::new(Value::Null);
    wait_for(Duration::from_secs(60), || async {
        let Ok(res) = client.get(&url).bearer_auth(&token).send().await else {
            return false;
        };
        let Ok(body) = res.json::<Value>().await else {
            return false;
        };
        let done = body["status"] == "completed";
        if let Ok(mut l) = last.lock() {
            *l = body;
        }
        done
    })
    .await?;
    let last = last.into_inner().unwrap_or_default();
    assert_eq!(last["counts"]["succeeded"], 1_500);
    let results: i64 = sqlx::query_scalar("SELECT count(*) FROM bulk_order_results")
        .fetch_one(&app.pool)
        .await?;
    assert_eq!(results, 1_500);
    app.cleanup().await;
    Ok(())
}
