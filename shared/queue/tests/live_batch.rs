//! `LiveBatch` against the test NATS server (`PORTICO_TEST_NATS_URL`, default
//! `nats://127.0.0.1:4222`): one commit's announcements reach each owner's subscriber as
//! one message per topic, in the order they were pushed, and a group past the size
//! limit is split into several messages without losing or reordering a line.

use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use portico_domain::webhooks::DeliveryStatus;
use portico_queue::Topology;
use portico_queue::live::{DeliveryAttempt, LiveEvent, LivePublisher, lines, owner_wildcard};
use uuid::Uuid;

const PATIENCE: Duration = Duration::from_secs(10);

fn attempt(owner: &str, n: i32) -> LiveEvent<'static> {
    LiveEvent::DeliveryAttempt(DeliveryAttempt {
        owner: owner.to_owned().into(),
        delivery_id: Uuid::now_v7(),
        webhook_id: Uuid::nil(),
        event_id: Uuid::nil(),
        event_type: "order.created".into(),
        attempt: n,
        status: DeliveryStatus::Succeeded,
        http_status: Some(200),
        duration_ms: 1,
        error_kind: None,
        next_attempt_at: None,
        occurred_at: Utc::now(),
    })
}

/// Every attempt number in the messages received until `want` of them arrived.
async fn attempts(sub: &mut async_nats::Subscriber, want: usize) -> (usize, Vec<i32>) {
    let mut messages = 0;
    let mut seen = Vec::new();
    while seen.len() < want {
        let message = tokio::time::timeout(PATIENCE, sub.next())
            .await
            .expect("announcements within the deadline")
            .expect("subscription open");
        messages += 1;
        for line in lines(&message.payload) {
            match serde_json::from_slice::<LiveEvent<'_>>(line).expect("one JSON object per line") {
                LiveEvent::DeliveryAttempt(a) => seen.push(a.attempt),
                other => panic!("unexpected announcement {other:?}"),
            }
        }
    }
    (messages, seen)
}

#[tokio::test]
async fn a_commits_announcements_travel_as_one_message_per_owner() {
    let url =
        std::env::var("PORTICO_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let client = portico_queue::connect(&url, "portico-queue-test")
        .await
        .expect("connect to the test NATS server");
    let prefix = format!("LB{}", Uuid::now_v7().simple());
    let topology = Topology::new(&prefix, 1).expect("topology");
    let mut alice = client
        .subscribe(owner_wildcard(&topology, "alice"))
        .await
        .expect("subscribe");
    let mut bob = client
        .subscribe(owner_wildcard(&topology, "bob"))
        .await
        .expect("subscribe");
    client.flush().await.expect("flush");

    let publisher = LivePublisher::new(client.clone(), topology);
    let mut batch = publisher.batch();
    for n in 1..=3 {
        batch.push(&attempt("alice", n));
        batch.push(&attempt("bob", 10 + n));
    }
    batch.send();
    client.flush().await.expect("flush");
    assert_eq!(attempts(&mut alice, 3).await, (1, vec![1, 2, 3]));
    assert_eq!(attempts(&mut bob, 3).await, (1, vec![11, 12, 13]));

    // About 350 bytes each: 1,000 of them are several 64 KiB messages, in order.
    let mut batch = publisher.batch();
    for n in 0..1_000 {
        batch.push(&attempt("alice", n));
    }
    batch.send();
    client.flush().await.expect("flush");
    let (messages, seen) = attempts(&mut alice, 1_000).await;
    assert!(messages > 1, "1,000 announcements in {messages} message");
    assert_eq!(seen, (0..1_000).collect::<Vec<_>>());
}
