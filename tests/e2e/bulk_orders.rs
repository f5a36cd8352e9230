//! Bulk-order batches end to end: the real gateway and batch-processor over real
//! PostgreSQL and JetStream. A batch is accepted at once, processed in the background,
//! and every order ends with exactly one result, even across a `kill -9`.

use std::time::Duration;

use portico_e2e::{ServiceKind, TestApp, assert_problem, wait_for};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FINAL: [&str; 4] = ["completed", "completed_with_errors", "failed", "cancelled"];

/// A valid order with this reference.
fn order(reference: &str) -> Value {
    json!({
        "clientOrderRef": reference,
        "currency": "EUR",
        "customer": {"email": "ada@example.com", "name": "Ada Lovelace"},
        "shippingAddress": {"line1": "1 Main St", "city": "Berlin", "postalCode": "10115", "country": "DE"},
        "lineItems": [
            {"sku": "SKU-1", "quantity": 2, "unitPrice": "12.50"},
            {"sku": "SKU-2", "quantity": 1, "unitPrice": 399}
        ],
        "metadata": {"source": "e2e"}
    })
}

fn orders(prefix: &str, n: usize) -> Vec<Value> {
    (0..n).map(|i| order(&format!("{prefix}-{i}"))).collect()
}

fn ndjson(orders: &[Value]) -> String {
    let mut body = String::new();
    for o in orders {
        body.push_str(&o.to_string());
        body.push('\n');
    }
    body
}

struct Client<'a> {
    app: &'a TestApp,
    token: String,
}

impl<'a> Client<'a> {
    fn new(app: &'a TestApp, user: &str) -> Self {
        Self {
            app,
            token: app.user_token(user),
        }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.app
            .http
            .get(self.app.api(path))
            .bearer_auth(&self.token)
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.app
            .http
            .post(self.app.api(path))
            .bearer_auth(&self.token)
    }

    async fn submit(&self, body: &Value) -> anyhow::Result<reqwest::Response> {
        Ok(self.post("/bulk-orders").json(body).send().await?)
    }

    async fn submit_ndjson(&self, body: String, query: &str) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .post(&format!("/bulk-orders{query}"))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?)
    }

    /// Submits and expects 202; returns the batch.
    async fn accepted(&self, body: &Value) -> anyhow::Result<Value> {
        let res = self.submit(body).await?;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        Ok(res.json().await?)
    }

    async fn batch(&self, id: &str) -> anyhow::Result<Value> {
        let res = self.get(&format!("/bulk-orders/{id}")).send().await?;
        assert_eq!(res.status(), StatusCode::OK);
        Ok(res.json().await?)
    }

    /// Waits until the batch reaches a final status and returns it.
    async fn finished(&self, id: &str) -> anyhow::Result<Value> {
        let last = std::sync::Mutex::new(Value::Null);
        wait_for(Duration::from_secs(60), || async {
            let Ok(b) = self.batch(id).await else {
                return false;
            };
            let done = FINAL.contains(&b["status"].as_str().unwrap_or(""));
            if let Ok(mut l) = last.lock() {
                *l = b;
            }
            done
        })
        .await?;
        Ok(last.into_inner().unwrap_or_default())
    }

    /// Every result of a batch, following cursors.
    async fn all_results(&self, id: &str, query: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!("/bulk-orders/{id}/results?limit=500{query}");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page: Value = self.get(&url).send().await?.json().await?;
            out.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(out),
            }
        }
    }
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&app.pool)
        .await
        .unwrap_or(-1)
}

/// A batch of valid orders is accepted at once (202, pending), processed in the
/// background to `completed`, reports one `succeeded` result per order in input order,
/// and each order can be read back with its items through GET /orders/{id}; the batch
/// shows up in the list, also filtered by status.
#[tokio::test]
async fn a_valid_batch_is_processed_to_completed_with_readable_orders() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let user = Client::new(&app, "user-valid");
    let res = user.submit(&json!({"orders": orders("V", 3)})).await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let location = res
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let batch: Value = res.json().await?;
    assert_eq!(batch["status"], "pending");
    assert_eq!(batch["counts"]["total"], 3);
    let id = batch["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(location, format!("/api/bulk-orders/{id}"));

    let done = user.finished(&id).await?;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        done["counts"],
        json!({"total": 3, "processed": 3, "succeeded": 3, "failed": 0, "duplicate": 0, "unprocessed": 0})
    );
    assert!(done["startedAt"].is_string() && done["completedAt"].is_string());
    assert_eq!(done["errorSummary"], json!({}));

    let results = user.all_results(&id, "").await?;
    assert_eq!(results.len(), 3);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
        assert_eq!(r["clientOrderRef"], format!("V-{i}"));
        assert_eq!(r["status"], "succeeded");
        assert_eq!(r["errors"], json!([]));
    }
    let order_id = results[1]["orderId"].as_str().unwrap_or_default();
    let res = user.get(&format!("/orders/{order_id}")).send().await?;
    assert_eq!(res.status(), StatusCode::OK);
    let stored: Value = res.json().await?;
    assert_eq!(stored["clientOrderRef"], "V-1");
    assert_eq!(stored["batchId"], id.as_str());
    assert_eq!(stored["currency"], "EUR");
    assert_eq!(stored["totalMinor"], 2 * 1250 + 399);
    assert_eq!(stored["total"], "28.99");
    assert_eq!(stored["customer"]["email"], "ada@example.com");
    assert_eq!(stored["shippingAddress"]["postalCode"], "10115");
    assert_eq!(stored["metadata"], json!({"source": "e2e"}));
    assert_eq!(
        stored["lineItems"],
        json!([
            {"sku": "SKU-1", "quantity": 2, "unitPriceMinor": 1250},
            {"sku": "SKU-2", "quantity": 1, "unitPriceMinor": 399}
        ])
    );
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 3);
    assert_eq!(count(&app, "SELECT count(*) FROM order_items").await, 6);

    let list: Value = user.get("/bulk-orders").send().await?.json().await?;
    assert_eq!(list["data"][0]["id"], id.as_str());
    assert_eq!(list["nextCursor"], Value::Null);
    let completed: Value = user
        .get("/v1/bulk-orders?status=completed")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(completed["data"].as_array().map(Vec::len), Some(1));
    let pending: Value = user
        .get("/bulk-orders?status=pending")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(pending["data"], json!([]));
    let res = user.get("/bulk-orders?status=nope").send().await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    app.cleanup().await;
    Ok(())
}

/// An empty orders array, more orders than PORTICO_MAX_BATCH_ORDERS, a malformed body,
/// an order that is not an object and an unsupported content type are refused with
/// problem+json and stable codes, and nothing is stored.
#[tokio::test]
async fn empty_too_many_and_malformed_batches_are_refused() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(
        &[("PORTICO_MAX_BATCH_ORDERS", "5")],
        &[ServiceKind::Gateway],
    )
    .await?;
    let user = Client::new(&app, "user-limits");
    let res = user.submit(&json!({"orders": []})).await?;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(body["errors"][0]["code"], "empty_batch");
    assert_eq!(body["errors"][0]["path"], "/orders");

    let res = user.submit(&json!({"orders": orders("T", 6)})).await?;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(body["errors"][0]["code"], "too_many_orders");
    let res = user.submit(&json!({"orders": orders("T", 5)})).await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    let res = user
        .post("/bulk-orders")
        .header("content-type", "application/json")
        .body("{\"orders\": [")
        .send()
        .await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "malformed_body").await?;
    let res = user.submit(&json!({"orders": "many"})).await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "malformed_body").await?;
    let res = user.submit(&json!({"orderz": []})).await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "malformed_body").await?;
    let res = user.submit(&json!({"orders": [order("T-x"), 42]})).await?;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(body["errors"][0]["code"], "invalid_order");
    assert_eq!(body["errors"][0]["path"], "/orders/1");
    let res = user
        .post("/bulk-orders")
        .header("content-type", "text/csv")
        .body("a,b")
        .send()
        .await?;
    assert_problem(
        res,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await?;
    let res = user.submit_ndjson(String::from("\n\n"), "").await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    let res = user
        .submit_ndjson(format!("{}\n{{broken\n", order("N-1")), "")
        .await?;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "malformed_body").await?;
    assert!(
        body["detail"].as_str().unwrap_or("").contains("line 2"),
        "{body}"
    );
    let res = app
        .http
        .post(app.api("/bulk-orders"))
        .json(&json!({"orders": orders("T", 1)}))
        .send()
        .await?;
    assert_problem(res, StatusCode::UNAUTHORIZED, "unauthenticated").await?;

    assert_eq!(
        count(&app, "SELECT count(*) FROM bulk_order_batches").await,
        1
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM bulk_order_batch_chunks").await,
        1
    );
    app.cleanup().await;
    Ok(())
}

/// validateOnly returns every order's validation result in input order (JSON body
/// flag, query parameter and NDJSON alike) and creates nothing: no batch, no job.
#[tokio::test]
async fn validate_only_reports_every_order_and_creates_nothing() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let user = Client::new(&app, "user-validate");
    let mut bad = order("VO-1");
    bad["currency"] = json!("EURO");
    bad["lineItems"][0]["unitPrice"] = json!(12.5);
    let body = json!({"orders": [order("VO-0"), bad], "validateOnly": true});
    let res = user.submit(&body).await?;
    assert_eq!(res.status(), StatusCode::OK);
    let report: Value = res.json().await?;
    assert_eq!(report["valid"], false);
    assert_eq!(report["results"][0]["index"], 0);
    assert_eq!(report["results"][0]["status"], "succeeded");
    assert_eq!(report["results"][1]["status"], "failed");
    assert_eq!(report["results"][1]["clientOrderRef"], "VO-1");
    let errors = &report["results"][1]["errors"];
    assert_eq!(errors[0]["code"], "invalid_currency");
    assert_eq!(errors[0]["path"], "/currency");
    assert_eq!(errors[1]["code"], "invalid_price");
    assert_eq!(errors[1]["path"], "/lineItems/0/unitPrice");

    let report: Value = user
        .submit_ndjson(ndjson(&orders("VN", 3)), "?validateOnly=true")
        .await?
        .json()
        .await?;
    assert_eq!(report["valid"], true);
    assert_eq!(report["results"].as_array().map(Vec::len), Some(3));

    let res = user
        .post("/bulk-orders?validateOnly=true")
        .json(&json!({"orders": orders("VQ", 2)}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        count(&app, "SELECT count(*) FROM bulk_order_batches").await,
        0
    );
    assert_eq!(count(&app, "SELECT count(*) FROM outbox").await, 0);
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 0);
    app.cleanup().await;
    Ok(())
}

/// Invalid orders do not refuse the batch: each gets a `failed` result with JSON-pointer
/// paths and stable codes, the batch ends `completed_with_errors` with an error summary
/// by code, and results can be filtered by status and paged in input order.
#[tokio::test]
async fn invalid_orders_fail_with_paths_codes_and_an_error_summary() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let user = Client::new(&app, "user-invalid");
    let mut list = orders("I", 6);
    list[1]["lineItems"][0]["quantity"] = json!(0);
    list[3]["shippingAddress"]["country"] = json!("XX");
    list[3]["lineItems"][1]["quantity"] = json!(-1);
    list[4] = json!({"clientOrderRef": "I-4"});
    let batch = user.accepted(&json!({"orders": list})).await?;
    let id = batch["id"].as_str().unwrap_or_default().to_owned();
    let done = user.finished(&id).await?;
    assert_eq!(done["status"], "completed_with_errors");
    assert_eq!(done["counts"]["succeeded"], 3);
    assert_eq!(done["counts"]["failed"], 3);
    assert_eq!(done["counts"]["processed"], 6);
    assert_eq!(
        done["errorSummary"],
        json!({"invalid_quantity": 2, "invalid_country": 1, "required": 1})
    );

    let failed = user.all_results(&id, "&status=failed").await?;
    let indexes: Vec<i64> = failed.iter().filter_map(|r| r["index"].as_i64()).collect();
    assert_eq!(indexes, [1, 3, 4]);
    assert_eq!(failed[0]["errors"][0]["path"], "/lineItems/0/quantity");
    assert_eq!(failed[0]["errors"][0]["code"], "invalid_quantity");
    assert!(failed[0]["errors"][0]["message"].is_string());
    assert!(failed[0].get("orderId").is_none());
    let paths: Vec<&str> = failed[1]["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["path"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(paths, ["/shippingAddress/country", "/lineItems/1/quantity"]);
    assert_eq!(failed[2]["errors"][0]["code"], "required");

    // Pages of two, in input order, via the cursor.
    let first: Value = user
        .get(&format!("/bulk-orders/{id}/results?limit=2"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(first["data"][0]["index"], 0);
    assert_eq!(first["data"][1]["index"], 1);
    let cursor = first["nextCursor"].as_str().unwrap_or_default().to_owned();
    let second: Value = user
        .get(&format!(
            "/bulk-orders/{id}/results?limit=2&cursor={cursor}"
        ))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(second["data"][0]["index"], 2);
    let res = user
        .get(&format!("/bulk-orders/{id}/results?cursor=garbage"))
        .send()
        .await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 3);
    app.cleanup().await;
    Ok(())
}

/// An NDJSON upload of 2,500 orders (three chunks) is streamed in one request, processed,
/// and its results download as NDJSON and CSV, one line per order in input order; a
/// reference a spreadsheet would run as a formula is neutralised in the CSV only.
#[tokio::test]
async fn ndjson_batches_are_accepted_and_results_download_as_ndjson_and_csv() -> anyhow::Result<()>
{
    let app = TestApp::spawn().await?;
    let user = Client::new(&app, "user-ndjson");
    let mut list = orders("N", 2_500);
    list[7]["currency"] = json!("eur");
    list[1_500]["currency"] = json!("ZZZ");
    let formula = "=HYPERLINK(\"http://evil.test/\",\"click\")";
    list[9]["clientOrderRef"] = json!(formula);
    let res = user.submit_ndjson(ndjson(&list), "").await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let batch: Value = res.json().await?;
    assert_eq!(batch["counts"]["total"], 2_500);
    let id = batch["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        count(&app, "SELECT count(*) FROM bulk_order_batch_chunks").await,
        3
    );
    let done = user.finished(&id).await?;
    assert_eq!(done["status"], "completed_with_errors");
    assert_eq!(done["counts"]["succeeded"], 2_497);
    // The summary adds up across chunks.
    assert_eq!(
        done["errorSummary"],
        json!({"invalid_currency": 2, "invalid_client_order_ref": 1})
    );

    let res = user
        .get(&format!("/bulk-orders/{id}/results/download?format=ndjson"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-ndjson")
    );
    let text = res.text().await?;
    let lines: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 2_500);
    assert!(lines.iter().enumerate().all(|(i, l)| l["index"] == i));
    assert_eq!(lines[7]["status"], "failed");
    assert_eq!(lines[7]["errors"][0]["code"], "invalid_currency");
    assert_eq!(lines[9]["clientOrderRef"], formula);

    let res = user
        .get(&format!("/bulk-orders/{id}/results/download?format=csv"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()
            .get("content-disposition")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .contains(".csv")
    );
    let csv = res.text().await?;
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 2_501);
    assert_eq!(
        rows[0],
        "index,clientOrderRef,status,orderId,errorCodes,errors"
    );
    assert!(rows[1].starts_with("0,N-0,succeeded,"), "{}", rows[1]);
    assert!(
        rows[8].starts_with("7,N-7,failed,,invalid_currency,\"[{"),
        "{}",
        rows[8]
    );
    assert!(
        rows[10].starts_with(
            "9,\"'=HYPERLINK(\"\"http://evil.test/\"\",\"\"click\"\")\",failed,,invalid_client_order_ref,"
        ),
        "{}",
        rows[10]
    );
    let failed_only = user
        .get(&format!(
            "/bulk-orders/{id}/results/download?format=csv&status=failed"
        ))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(failed_only.lines().count(), 4);
    let res = user
        .get(&format!("/bulk-orders/{id}/results/download?format=xml"))
        .send()
        .await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    app.cleanup().await;
    Ok(())
}

/// A clientOrderRef that already exists (from an earlier batch) is reported `duplicate`
/// with the existing order's id and never creates a second order; a reference repeated
/// inside one batch is created once from its first occurrence (also across chunks
/// processed in parallel), the repeat reported `duplicate` of it.
#[tokio::test]
async fn resubmitted_references_are_duplicates_with_the_existing_order_id() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let user = Client::new(&app, "user-dup");
    let first = user.accepted(&json!({"orders": orders("D", 2)})).await?;
    let first_id = first["id"].as_str().unwrap_or_default().to_owned();
    user.finished(&first_id).await?;
    let originals = user.all_results(&first_id, "").await?;

    let second = user
        .accepted(&json!({"orders": [order("D-1"), order("D-9"), order("D-9")]}))
        .await?;
    let second_id = second["id"].as_str().unwrap_or_default().to_owned();
    let done = user.finished(&second_id).await?;
    assert_eq!(done["status"], "completed");
    assert_eq!(done["counts"]["duplicate"], 2);
    assert_eq!(done["counts"]["succeeded"], 1);
    let results = user.all_results(&second_id, "").await?;
    assert_eq!(results[0]["status"], "duplicate");
    assert_eq!(results[0]["orderId"], originals[1]["orderId"]);
    assert_eq!(results[1]["status"], "succeeded");
    assert_eq!(results[2]["status"], "duplicate");
    assert_eq!(results[2]["orderId"], results[1]["orderId"]);
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 3);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM orders WHERE client_order_ref = 'D-1'"
        )
        .await,
        1
    );
    // Across chunks processed in parallel, the first occurrence in input order wins.
    let mut list = orders("DC", 2_000);
    list[1_500] = order("DC-200");
    list[1_500]["lineItems"][0]["sku"] = json!("LATER");
    let spread = user.accepted(&json!({ "orders": list })).await?;
    let spread_id = spread["id"].as_str().unwrap_or_default().to_owned();
    let done = user.finished(&spread_id).await?;
    assert_eq!(done["counts"]["duplicate"], 1);
    let results = user.all_results(&spread_id, "").await?;
    assert_eq!(results[200]["status"], "succeeded");
    assert_eq!(results[1_500]["status"], "duplicate");
    assert_eq!(results[1_500]["orderId"], results[200]["orderId"]);
    let kept: Value = user
        .get(&format!(
            "/orders/{}",
            results[200]["orderId"].as_str().unwrap_or_default()
        ))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(kept["lineItems"][0]["sku"], "SKU-1");
    // Four chunks in flight at once (the default concurrency): the last repeats a
    // reference of the first, the middle ones share none and insert meanwhile.
    let mut list = orders("DF", 4_000);
    list[3_900] = order("DF-7");
    let far = user.accepted(&json!({ "orders": list })).await?;
    let far_id = far["id"].as_str().unwrap_or_default().to_owned();
    let done = user.finished(&far_id).await?;
    assert_eq!(done["counts"]["succeeded"], 3_999);
    assert_eq!(done["counts"]["duplicate"], 1);
    let results = user.all_results(&far_id, "").await?;
    assert_eq!(results[7]["status"], "succeeded");
    assert_eq!(results[3_900]["status"], "duplicate");
    assert_eq!(results[3_900]["orderId"], results[7]["orderId"]);

    // Another user's references are their own.
    let other = Client::new(&app, "user-dup-other");
    let theirs = other.accepted(&json!({"orders": [order("D-1")]})).await?;
    let done = other
        .finished(theirs["id"].as_str().unwrap_or_default())
        .await?;
    assert_eq!(done["counts"]["succeeded"], 1);
    app.cleanup().await;
    Ok(())
}

/// An Idempotency-Key makes a retried submission return the same batch (200, marked as
/// a replay) without a second batch; the same key with a different body is a 409.
#[tokio::test]
async fn idempotency_key_returns_the_same_batch_or_conflicts() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(&[], &[ServiceKind::Gateway]).await?;
    let user = Client::new(&app, "user-idem");
    let body = json!({"orders": orders("K", 3)});
    let first = user
        .post("/bulk-orders")
        .header("idempotency-key", "batch-key-1")
        .json(&body)
        .send()
        .await?;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    let first: Value = first.json().await?;
    let again = user
        .post("/bulk-orders")
        .header("idempotency-key", "batch-key-1")
        .json(&body)
        .send()
        .await?;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(
        again
            .headers()
            .get("idempotent-replayed")
            .and_then(|v| v.to_str().ok()),
        Some("true")
    );
    let again: Value = again.json().await?;
    assert_eq!(again["id"], first["id"]);
    // The same orders as NDJSON are the same request.
    let as_ndjson = user
        .post("/bulk-orders")
        .header("idempotency-key", "batch-key-1")
        .header("content-type", "application/x-ndjson")
        .body(ndjson(&orders("K", 3)))
        .send()
        .await?;
    assert_eq!(as_ndjson.status(), StatusCode::OK);
    let different = user
        .post("/bulk-orders")
        .header("idempotency-key", "batch-key-1")
        .json(&json!({"orders": orders("K", 4)}))
        .send()
        .await?;
    assert_problem(different, StatusCode::CONFLICT, "conflict").await?;
    // Keys are per user.
    let other = Client::new(&app, "user-idem-2");
    let theirs = other
        .post("/bulk-orders")
        .header("idempotency-key", "batch-key-1")
        .json(&body)
        .send()
        .await?;
    assert_eq!(theirs.status(), StatusCode::ACCEPTED);
    assert_eq!(
        count(&app, "SELECT count(*) FROM bulk_order_batches").await,
        2
    );
    app.cleanup().await;
    Ok(())
}

/// Cancel mid-run: the chunk in flight finishes, every remaining order is reported
/// `unprocessed`, the batch ends `cancelled`, and cancelling it again is refused.
/// (A test transaction holds chunk 3 so the cancel lands while the batch runs.)
#[tokio::test]
async fn cancel_mid_run_reports_the_rest_unprocessed() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(
        &[("PORTICO_CHUNK_CONCURRENCY", "1")],
        &[ServiceKind::Gateway],
    )
    .await?;
    let mut app = app;
    let user = Client::new(&app, "user-cancel");
    let res = user.submit_ndjson(ndjson(&orders("C", 8_000)), "").await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let id = res.json::<Value>().await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let batch_id: uuid::Uuid = id.parse()?;
    let mut hold = app.pool.begin().await?;
    sqlx::query(
        "SELECT 1 FROM bulk_order_batch_chunks WHERE batch_id = $1 AND chunk_index = 3 FOR UPDATE",
    )
    .bind(batch_id)
    .execute(&mut *hold)
    .await?;
    app.start(ServiceKind::BatchProcessor).await?;
    let user = Client::new(&app, "user-cancel");
    wait_for(Duration::from_secs(30), || async {
        user.batch(&id)
            .await
            .map(|b| b["counts"]["processed"] == 3_000)
            .unwrap_or(false)
    })
    .await?;
    let res = user
        .post(&format!("/bulk-orders/{id}/cancel"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let cancelling: Value = res.json().await?;
    assert_eq!(cancelling["cancelRequested"], true);
    hold.rollback().await?;

    let done = user.finished(&id).await?;
    assert_eq!(done["status"], "cancelled", "{done}");
    assert_eq!(done["counts"]["processed"], 4_000);
    assert_eq!(done["counts"]["unprocessed"], 4_000);
    let unprocessed = user.all_results(&id, "&status=unprocessed").await?;
    assert_eq!(unprocessed.len(), 4_000);
    assert_eq!(unprocessed[0]["index"], 4_000);
    assert_eq!(unprocessed[0]["clientOrderRef"], "C-4000");
    assert_eq!(user.all_results(&id, "").await?.len(), 8_000);
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 4_000);

    let res = user
        .post(&format!("/bulk-orders/{id}/cancel"))
        .send()
        .await?;
    assert_problem(res, StatusCode::CONFLICT, "failed_precondition").await?;

    // The unprocessed orders can be retried as a child batch.
    let res = user
        .post(&format!("/bulk-orders/{id}/retry-failed"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let child: Value = res.json().await?;
    assert_eq!(child["counts"]["total"], 4_000);
    let child_done = user
        .finished(child["id"].as_str().unwrap_or_default())
        .await?;
    assert_eq!(child_done["status"], "completed");
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 8_000);
    app.cleanup().await;
    Ok(())
}

/// retry-failed creates a child batch (parentBatchId = the batch) of exactly the failed
/// orders, as originally submitted; it is refused while the batch runs and when there
/// is nothing to retry; an Idempotency-Key returns the same child.
#[tokio::test]
async fn retry_failed_creates_a_child_batch_of_the_failed_orders() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let user = Client::new(&app, "user-retry");
    let mut list = orders("R", 4);
    list[0]["currency"] = json!("XXX");
    list[2]["customer"]["email"] = json!("nope");
    let batch = user.accepted(&json!({"orders": list})).await?;
    let id = batch["id"].as_str().unwrap_or_default().to_owned();
    user.finished(&id).await?;

    let res = user
        .post(&format!("/bulk-orders/{id}/retry-failed"))
        .header("idempotency-key", "retry-1")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let child: Value = res.json().await?;
    assert_eq!(child["parentBatchId"], id.as_str());
    assert_eq!(child["counts"]["total"], 2);
    let replay = user
        .post(&format!("/bulk-orders/{id}/retry-failed"))
        .header("idempotency-key", "retry-1")
        .send()
        .await?;
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(replay.json::<Value>().await?["id"], child["id"]);

    let child_id = child["id"].as_str().unwrap_or_default().to_owned();
    let done = user.finished(&child_id).await?;
    // The same invalid orders fail again, in the child's own order.
    assert_eq!(done["status"], "failed");
    let results = user.all_results(&child_id, "").await?;
    assert_eq!(results[0]["clientOrderRef"], "R-0");
    assert_eq!(results[0]["errors"][0]["code"], "invalid_currency");
    assert_eq!(results[1]["clientOrderRef"], "R-2");
    assert_eq!(results[1]["errors"][0]["code"], "invalid_email");

    let clean = user.accepted(&json!({"orders": orders("RC", 1)})).await?;
    let clean_id = clean["id"].as_str().unwrap_or_default().to_owned();
    user.finished(&clean_id).await?;
    let res = user
        .post(&format!("/bulk-orders/{clean_id}/retry-failed"))
        .send()
        .await?;
    assert_problem(res, StatusCode::CONFLICT, "failed_precondition").await?;
    app.cleanup().await;
    Ok(())
}

/// Users are isolated: another user's batch, its results, its download, cancel,
/// retry-failed and its orders all answer 404, and their lists are empty.
#[tokio::test]
async fn another_users_batch_and_orders_answer_404() -> anyhow::Result<()> {
    let app = TestApp::spawn().await?;
    let owner = Client::new(&app, "owner");
    let stranger = Client::new(&app, "stranger");
    let batch = owner.accepted(&json!({"orders": orders("O", 1)})).await?;
    let id = batch["id"].as_str().unwrap_or_default().to_owned();
    owner.finished(&id).await?;
    let order_id = owner.all_results(&id, "").await?[0]["orderId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for path in [
        format!("/bulk-orders/{id}"),
        format!("/bulk-orders/{id}/results"),
        format!("/bulk-orders/{id}/results/download"),
        format!("/orders/{order_id}"),
    ] {
        let res = stranger.get(&path).send().await?;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await?;
    }
    for path in [
        format!("/bulk-orders/{id}/cancel"),
        format!("/bulk-orders/{id}/retry-failed"),
    ] {
        let res = stranger.post(&path).send().await?;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await?;
    }
    let list: Value = stranger.get("/bulk-orders").send().await?.json().await?;
    assert_eq!(list["data"], json!([]));
    // An internal service acting for the owner sees the owner's batch.
    let res = app
        .http
        .get(app.api(&format!("/bulk-orders/{id}")))
        .bearer_auth(portico_e2e::SERVICE_TOKEN)
        .header("x-portico-user-id", "owner")
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    let res = stranger.get("/bulk-orders/not-a-uuid").send().await?;
    assert_problem(res, StatusCode::BAD_REQUEST, "validation_failed").await?;
    app.cleanup().await;
    Ok(())
}

/// Partners (HTTP Basic with an integration's credentials) act for the integration's
/// owner within its scopes: bulk_orders:write submits, bulk_orders:read reads, and
/// orders:read is needed for orders. The batch and every order it creates record the
/// integration.
#[tokio::test]
async fn partners_act_within_their_scopes_and_orders_record_the_integration() -> anyhow::Result<()>
{
    let app = TestApp::spawn().await?;
    let owner = Client::new(&app, "partner-owner");
    let create = |name: &str, scopes: Value| {
        owner
            .post("/integrations")
            .json(&json!({"name": name, "type": "erp", "scopes": scopes}))
            .send()
    };
    let writer: Value = create("Writer", json!(["bulk_orders:write", "bulk_orders:read"]))
        .await?
        .json()
        .await?;
    let reader: Value = create("Reader", json!(["bulk_orders:read"]))
        .await?
        .json()
        .await?;
    let basic = |integration: &Value, req: reqwest::RequestBuilder| {
        req.basic_auth(
            integration["credentials"]["apiKey"]
                .as_str()
                .unwrap_or_default(),
            integration["credentials"]["apiSecret"].as_str(),
        )
    };
    let writer_id = writer["id"].as_str().unwrap_or_default().to_owned();

    let res = basic(&writer, app.http.post(app.api("/bulk-orders")))
        .json(&json!({"orders": orders("P", 2)}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let batch: Value = res.json().await?;
    assert_eq!(batch["integrationId"], writer_id.as_str());
    let id = batch["id"].as_str().unwrap_or_default().to_owned();
    let done = owner.finished(&id).await?;
    assert_eq!(done["status"], "completed");

    let res = basic(&reader, app.http.post(app.api("/bulk-orders")))
        .json(&json!({"orders": orders("PR", 1)}))
        .send()
        .await?;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await?;
    let res = basic(
        &reader,
        app.http.get(app.api(&format!("/bulk-orders/{id}"))),
    )
    .send()
    .await?;
    assert_eq!(res.status(), StatusCode::OK);

    let order_id = owner.all_results(&id, "").await?[0]["orderId"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let res = basic(
        &writer,
        app.http.get(app.api(&format!("/orders/{order_id}"))),
    )
    .send()
    .await?;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await?;
    let stored: Value = owner
        .get(&format!("/orders/{order_id}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(stored["integrationId"], writer_id.as_str());
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM orders WHERE integration_id IS NOT NULL"
        )
        .await,
        2
    );
    app.cleanup().await;
    Ok(())
}

/// gRPC is the same capability: SubmitBatch accepts (or validates) a batch, GetBatch,
/// ListBatches and ListBatchResults report it, GetOrder reads an order, and errors
/// use the matching status codes.
#[tokio::test]
async fn grpc_submits_and_reads_batches_like_rest() -> anyhow::Result<()> {
    use portico_proto::v1::bulk_order_service_client::BulkOrderServiceClient;
    use portico_proto::v1::{self as pb, submit_batch_response::Outcome};
    let app = TestApp::spawn().await?;
    let token = app.user_token("grpc-bulk");
    let mut client = BulkOrderServiceClient::connect(app.grpc_url()).await?;
    fn with_token<T>(token: &str, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if let Ok(v) = format!("Bearer {token}").parse() {
            r.metadata_mut().insert("authorization", v);
        }
        r
    }
    let proto_order = |reference: &str, price: &str| pb::Order {
        client_order_ref: reference.into(),
        currency: "EUR".into(),
        customer: Some(pb::Customer {
            email: "g@example.com".into(),
            name: "G".into(),
            phone: String::new(),
        }),
        shipping_address: Some(pb::Address {
            line1: "1 Main St".into(),
            line2: String::new(),
            city: "Paris".into(),
            region: String::new(),
            postal_code: "75001".into(),
            country: "FR".into(),
        }),
        line_items: vec![pb::LineItem {
            sku: "S-1".into(),
            quantity: 3,
            unit_price: price.into(),
        }],
        metadata_json: String::new(),
    };
    let request = pb::SubmitBatchRequest {
        orders: vec![proto_order("G-1", "9.99"), proto_order("G-2", "9.999")],
        validate_only: true,
        idempotency_key: String::new(),
    };
    let report = client
        .submit_batch(with_token(&token, request.clone()))
        .await?
        .into_inner();
    let Some(Outcome::Validation(report)) = report.outcome else {
        anyhow::bail!("expected a validation report");
    };
    assert!(!report.valid);
    assert_eq!(report.results[1].errors[0].code, "invalid_price");
    assert_eq!(report.results[1].errors[0].path, "/lineItems/0/unitPrice");

    let accepted = client
        .submit_batch(with_token(
            &token,
            pb::SubmitBatchRequest {
                validate_only: false,
                ..request
            },
        ))
        .await?
        .into_inner();
    let Some(Outcome::Batch(batch)) = accepted.outcome else {
        anyhow::bail!("expected a batch");
    };
    assert_eq!(batch.status, pb::BatchStatus::Pending as i32);
    let user = Client::new(&app, "grpc-bulk");
    user.finished(&batch.id).await?;
    let got = client
        .get_batch(with_token(
            &token,
            pb::GetBatchRequest {
                id: batch.id.clone(),
            },
        ))
        .await?
        .into_inner();
    assert_eq!(got.status, pb::BatchStatus::CompletedWithErrors as i32);
    let counts = got.counts.unwrap_or_default();
    assert_eq!((counts.succeeded, counts.failed), (1, 1));
    assert_eq!(got.error_summary.get("invalid_price"), Some(&1));

    let listed = client
        .list_batches(with_token(
            &token,
            pb::ListBatchesRequest {
                status: pb::BatchStatus::CompletedWithErrors as i32,
                page: None,
            },
        ))
        .await?
        .into_inner();
    assert_eq!(listed.batches.len(), 1);
    let results = client
        .list_batch_results(with_token(
            &token,
            pb::ListBatchResultsRequest {
                batch_id: batch.id.clone(),
                status: "succeeded".into(),
                page: None,
            },
        ))
        .await?
        .into_inner();
    assert_eq!(results.results.len(), 1);
    let stored = client
        .get_order(with_token(
            &token,
            pb::GetOrderRequest {
                id: results.results[0].order_id.clone(),
            },
        ))
        .await?
        .into_inner();
    assert_eq!(stored.client_order_ref, "G-1");
    assert_eq!(stored.total_minor, 3 * 999);
    assert_eq!(stored.line_items[0].unit_price_minor, 999);

    let err = client
        .submit_batch(with_token(&token, pb::SubmitBatchRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = client
        .get_batch(with_token(
            &token,
            pb::GetBatchRequest {
                id: uuid::Uuid::new_v4().to_string(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let err = client
        .cancel_batch(with_token(&token, pb::CancelBatchRequest { id: batch.id }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    app.cleanup().await;
    Ok(())
}

/// Completion goes through Portico's own webhooks: `bulk_order.completed` is recorded
/// for every batch, and `order.created` once per created order only for a user with a
/// webhook subscribed to it. Expired batches are removed by the retention job (their
/// results go with their day's partition), while their orders stay.
#[tokio::test]
async fn completion_events_and_retention() -> anyhow::Result<()> {
    let app = TestApp::spawn_with(
        &[("PORTICO_RETENTION_INTERVAL_SECS", "1")],
        &portico_e2e::ALL_SERVICES,
    )
    .await?;
    let subscriber = Client::new(&app, "subscriber");
    let res = subscriber
        .post("/webhooks")
        .json(
            &json!({"url": "http://127.0.0.1:9/hook", "events": ["order.*"],
                      "retryPolicy": {"maxRetries": 0}}),
        )
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::CREATED);
    let quiet = Client::new(&app, "quiet");
    let a = subscriber
        .accepted(&json!({"orders": orders("E", 3)}))
        .await?;
    let b = quiet.accepted(&json!({"orders": orders("Q", 2)})).await?;
    let a_id = a["id"].as_str().unwrap_or_default().to_owned();
    let b_id = b["id"].as_str().unwrap_or_default().to_owned();
    subscriber.finished(&a_id).await?;
    quiet.finished(&b_id).await?;
    let pool = app.pool.clone();
    wait_for(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM events WHERE event_type = 'bulk_order.completed'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                == 2
        }
    })
    .await?;
    let (payload,): (Value,) = sqlx::query_as(
        "SELECT payload FROM events WHERE event_type = 'bulk_order.completed' AND user_id = 'subscriber'",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!(payload["batchId"], a_id.as_str());
    assert_eq!(payload["status"], "completed");
    assert_eq!(payload["counts"]["succeeded"], 3);
    wait_for(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM events WHERE event_type = 'order.created' AND user_id = 'subscriber'",
            )
            .fetch_one(&pool)
            .await
            .unwrap_or(0)
                == 3
        }
    })
    .await?;
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM events WHERE event_type = 'order.created' AND user_id = 'quiet'"
        )
        .await,
        0
    );

    sqlx::query(
        "UPDATE bulk_order_batches SET expires_at = now() - interval '1 day' WHERE id = $1",
    )
    .bind(uuid::Uuid::parse_str(&a_id)?)
    .execute(&app.pool)
    .await?;
    wait_for(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM bulk_order_batches")
                .fetch_one(&pool)
                .await
                .unwrap_or(0)
                == 1
        }
    })
    .await?;
    let res = subscriber
        .get(&format!("/bulk-orders/{a_id}"))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        // A deleted batch's results are unreadable at once and leave with their day's
        // partition (migration 0019), so count those of the batches still stored.
        count(
            &app,
            "SELECT count(*) FROM bulk_order_results r
             WHERE EXISTS (SELECT 1 FROM bulk_order_batches b WHERE b.id = r.batch_id)"
        )
        .await,
        2
    );
    assert_eq!(count(&app, "SELECT count(*) FROM orders").await, 5);
    app.cleanup().await;
    Ok(())
}

/// Crash safety: the batch-processor is killed with SIGKILL in the middle of a
/// 20,000-order batch, while chunk transactions are in flight; after a restart the batch
/// resumes and completes, every order has exactly one result, and no order is created
/// twice. (A test transaction holds chunk 10 until the kill, so the batch cannot finish
/// before it; the other chunks are processed around it.)
#[tokio::test]
async fn kill_9_mid_batch_resumes_with_exactly_one_result_per_order() -> anyhow::Result<()> {
    // A short ack wait, so the killed replica's job is redelivered within seconds.
    let mut app = TestApp::spawn_with(
        &[("PORTICO_ACK_WAIT_SECS", "3")],
        &[ServiceKind::Gateway, ServiceKind::WebhookDispatcher],
    )
    .await?;
    let total = 20_000;
    let user = Client::new(&app, "user-crash");
    let res = user.submit_ndjson(ndjson(&orders("X", total)), "").await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let id = res.json::<Value>().await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let batch_id: uuid::Uuid = id.parse()?;
    let mut hold = app.pool.begin().await?;
    sqlx::query(
        "SELECT 1 FROM bulk_order_batch_chunks WHERE batch_id = $1 AND chunk_index = 10 FOR UPDATE",
    )
    .bind(batch_id)
    .execute(&mut *hold)
    .await?;
    app.start(ServiceKind::BatchProcessor).await?;
    let user = Client::new(&app, "user-crash");
    let seen = std::sync::atomic::AtomicI64::new(0);
    wait_for(Duration::from_secs(60), || async {
        let processed = user
            .batch(&id)
            .await
            .ok()
            .and_then(|b| b["counts"]["processed"].as_i64())
            .unwrap_or(0);
        seen.store(processed, std::sync::atomic::Ordering::SeqCst);
        processed > 0
    })
    .await?;
    assert!((seen.into_inner() as usize) < total);
    app.take(ServiceKind::BatchProcessor).kill().await?;
    hold.rollback().await?;
    let (status, processed): (String, i32) =
        sqlx::query_as("SELECT status, processed FROM bulk_order_batches")
            .fetch_one(&app.pool)
            .await?;
    assert_eq!(status, "processing");
    assert!(processed > 0 && (processed as usize) < total, "{processed}");
    app.start(ServiceKind::BatchProcessor).await?;
    let user = Client::new(&app, "user-crash");
    let done = user.finished(&id).await?;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["counts"]["processed"], total);
    assert_eq!(done["counts"]["succeeded"], total);

    let (results, distinct, min, max): (i64, i64, i32, i32) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT order_index), min(order_index), max(order_index)
         FROM bulk_order_results",
    )
    .fetch_one(&app.pool)
    .await?;
    assert_eq!((results, distinct), (total as i64, total as i64));
    assert_eq!((min, max), (0, total as i32 - 1));
    assert_eq!(
        count(&app, "SELECT count(*) FROM orders").await,
        done["counts"]["succeeded"].as_i64().unwrap_or(-1)
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM (SELECT client_order_ref FROM orders GROUP BY 1 HAVING count(*) > 1) d"
        )
        .await,
        0
    );
    assert_eq!(
        count(&app, "SELECT count(*) FROM order_items").await,
        2 * total as i64
    );
    app.cleanup().await;
    Ok(())
}
