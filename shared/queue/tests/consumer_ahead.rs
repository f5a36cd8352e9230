//! `report_pending` against the test NATS server (`PORTICO_TEST_NATS_URL`, default
//! `nats://127.0.0.1:4222`): a healthy durable consumer, caught up with its stream, is
//! reported with `portico_queue_consumer_ahead_of_stream` at 0.
//!
//! The state that turns the gauge on (a stream that came back from a kill at a lower
//! sequence than its consumer, nats-server 2.9.10) cannot be made at will: nats-server
//! clamps a consumer's start sequence to the stream's end, and neither purging nor
//! deleting messages lowers a stream's last sequence. The decision itself is unit-tested
//! beside `consumer_ahead_of_stream`; this test covers the wiring, and the case most
//! likely to raise a false alarm: a consumer that has delivered the stream's last
//! message, its sequence equal to the stream's, on a stream holding other subjects too.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

const METRIC: &str = portico_telemetry::metrics::QUEUE_CONSUMER_AHEAD_OF_STREAM;
/// Longer than a few of `report_pending`'s 5-second ticks on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// The gauge's value for `label` in the exposition text, if it is there.
fn gauge(text: &str, label: &str) -> Option<f64> {
    let prefix = format!("{METRIC}{{consumer=\"{label}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_caught_up_consumer_is_not_reported_ahead_of_its_stream() {
    let url =
        std::env::var("PORTICO_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let handle = portico_telemetry::metrics::install().expect("metrics recorder");
    let client = portico_queue::connect(&url, "portico-queue-test")
        .await
        .expect("connect to the test NATS server");
    let js = jetstream::new(client);
    let name = format!("AHEAD_{}", uuid::Uuid::now_v7().simple());
    let stream = js
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![format!("{name}.>")],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("create stream");
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("mine".into()),
            filter_subject: format!("{name}.mine"),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("create the consumer");
    // Another subject's jobs first, then this consumer's: its jobs end the stream.
    for subject in ["other", "other", "mine", "other", "mine", "mine"] {
        js.publish(format!("{name}.{subject}"), "job".into())
            .await
            .expect("publish")
            .await
            .expect("publish acknowledged");
    }
    let mut messages = consumer
        .fetch()
        .max_messages(3)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("fetch");
    let mut acked = 0;
    while let Some(message) = messages.next().await {
        message.expect("message").ack().await.expect("ack");
        acked += 1;
    }
    assert_eq!(acked, 3, "the consumer's three jobs");
    let info = consumer.get_info().await.expect("consumer info");
    let last = stream
        .get_info()
        .await
        .expect("stream info")
        .state
        .last_sequence;
    assert_eq!(
        (info.delivered.stream_sequence, last),
        (6, 6),
        "the consumer has delivered the stream's last message"
    );

    let label: &'static str = Box::leak(format!("{name}.mine").into_boxed_str());
    let shutdown = CancellationToken::new();
    let reporter = tokio::spawn(portico_queue::consumer::report_pending(
        js.clone(),
        vec![(label, consumer)],
        shutdown.clone(),
    ));
    // The first tick is immediate; wait for the gauge to appear.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut value = None;
    while value.is_none() && tokio::time::Instant::now() < deadline {
        value = gauge(&handle.render(), label);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(value, Some(0.0), "{METRIC} for a caught-up consumer");

    shutdown.cancel();
    reporter.await.expect("report_pending ends at shutdown");
    js.delete_stream(&name).await.expect("delete stream");
}
