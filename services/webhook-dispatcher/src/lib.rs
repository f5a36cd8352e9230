//! Portico's webhook-dispatcher: consumes accepted events from JetStream, records them,
//! signs and delivers them to every matching webhook, records every attempt, schedules
//! retries, disables endpoints that keep failing, and runs retry-failed jobs.
//!
//! # Layout
//! - [`config`]: flags and environment.
//! - [`events`]: the hot path: event jobs in chunks → events, first attempts,
//!   delivery rows in one transaction → acks.
//! - [`retries`]: the poller that claims due deliveries (retries, manual retries,
//!   deferred and released ordered deliveries, expired leases) and attempts them.
//! - [`maintenance`]: retry-failed jobs, resumable and cancellable.
//! - [`delivery`]: one attempt and the decision that follows (HTTP etiquette).
//! - [`transport`]: the shared HTTP client, the SSRF guard at connect time, attempt records.
//! - [`envelope`]: the Standard Webhooks body and headers.
//! - [`endpoints`]: the per-user cache of active webhooks and decrypted secrets.
//! - [`limits`]: per-endpoint concurrency cap and rate limit.
//! - [`record`]: committing a batch of results (rows, attempts, health, operational events).
//! - [`operational`]: the `portico.*` events that tell owners about their endpoints.
//! - [`announce`]: live announcements (attempts, state changes) after each commit.
//!
//! [`run`] is the seam: the binary binds the admin listener and calls it.

pub mod announce;
pub mod config;
pub mod delivery;
pub mod endpoints;
pub mod envelope;
pub mod events;
pub mod limits;
pub mod maintenance;
pub mod operational;
pub mod record;
pub mod retries;
pub mod transport;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use portico_domain::retry::RetryJitter;
use portico_queue::Topology;
use portico_queue::consumer::{JobStream, run_bounded};
use portico_queue::outbox::OutboxSignal;
use portico_queue::setup::{ConsumerSettings, ensure_consumer};
use portico_queue::topology::JobKind;
use portico_runtime::Foundation;
use portico_signing::seal::Keyring;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::config::DispatcherConfig;
use crate::endpoints::EndpointCache;
use crate::transport::Transport;

/// Why the dispatcher stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DispatcherError {
    /// The configuration cannot run.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// Connecting at start-up failed.
    #[error(transparent)]
    Start(#[from] portico_runtime::RuntimeError),
    /// PostgreSQL failed at start-up.
    #[error(transparent)]
    Storage(#[from] portico_storage::StorageError),
    /// NATS or JetStream failed.
    #[error(transparent)]
    Queue(#[from] portico_queue::QueueError),
    /// The HTTP client could not be built (its TLS configuration).
    #[error("HTTP client: {0}")]
    Http(#[from] rustls::Error),
    /// The admin listener failed.
    #[error("admin server: {0}")]
    Admin(#[from] std::io::Error),
}

/// What every part of the dispatcher shares; built once, behind an `Arc`.
pub struct Dispatcher {
    /// PostgreSQL.
    pub pool: PgPool,
    /// PostgreSQL, for recording events only (a pool of their own, so chunks recording
    /// events never wait behind the retry poller and the outbox). Its commits wait for
    /// the WAL flush like every other: an event row committed without it was lost when
    /// PostgreSQL crashed before the flush, while its deliveries, committed after the
    /// restart, were kept and its job acked, so its retries had no payload to send
    /// (`tests/e2e/chaos.rs`, `an_event_recorded_just_before_postgres_crashes_is_retried`).
    pub events_pool: PgPool,
    /// Active endpoints per user.
    pub cache: EndpointCache,
    /// The outgoing HTTP client.
    pub transport: Transport,
    /// Outgoing requests in flight in this replica (`PORTICO_DELIVERY_CONCURRENCY`).
    pub global: Arc<Semaphore>,
    /// Deliveries held in memory in this replica (`PORTICO_DISPATCH_MAX_DELIVERIES`):
    /// each group of a chunk's deliveries takes one permit per delivery before it sends
    /// any, and gives them back once the group is committed.
    pub held: Semaphore,
    /// The number of permits `held` was made with.
    pub held_cap: usize,
    /// Most deliveries sent and committed together (`PORTICO_DISPATCH_BATCH`): a
    /// chunk whose events fan out to more is split into groups of this many, so that
    /// what one commit holds does not grow with the number of endpoints per event.
    pub group_size: usize,
    /// Deliveries planned by the chunks in hand and not yet committed (waiting for
    /// room in `held`, in flight, or being committed); see [`Dispatcher::room_to_pull`].
    pub planned: Arc<PlannedCount>,
    /// Stream and subject names.
    pub topology: Topology,
    /// Wakes the outbox relay after operational events were committed.
    pub outbox: OutboxSignal,
    /// Wakes the retry poller (deferred deliveries were just stored).
    pub retry_signal: Notify,
    /// Core NATS, for cache invalidation broadcasts.
    pub nats: async_nats::Client,
    /// Live announcements after each commit (fire-and-forget, core NATS).
    pub live: portico_queue::live::LivePublisher,
    /// `PORTICO_DISABLE_AFTER_FAILURES` (0 = never).
    pub disable_after: i32,
    /// The events consumer's redelivery limit: an event failing on its last delivery is
    /// dead-lettered instead of being dropped by JetStream.
    pub max_deliver: i64,
    /// The events consumer's ack wait: chunks still working send in-progress acks
    /// every third of it.
    pub ack_wait: Duration,
    /// This replica's stable name; its delivery leases carry it, so that after a
    /// restart it takes back what it had claimed.
    pub replica_id: String,
    /// `PORTICO_RETRY_JITTER`: how much of each scheduled retry delay may be taken
    /// off at random (none by default).
    pub retry_jitter: RetryJitter,
}

impl Dispatcher {
    /// Waits for room for `deliveries` in this replica's memory budget
    /// (`PORTICO_DISPATCH_MAX_DELIVERIES`); a chunk larger than the whole budget takes
    /// all of it, so it still runs, alone. `None` only if the budget were closed
    /// (it never is), in which case the chunk runs unbounded rather than not at all.
    pub async fn hold(&self, deliveries: usize) -> Option<tokio::sync::SemaphorePermit<'_>> {
        if deliveries == 0 {
            return None;
        }
        let wanted = deliveries.min(self.held_cap).min(u32::MAX as usize) as u32;
        self.held.acquire_many(wanted).await.ok()
    }

    /// Waits until fewer than twice `PORTICO_DISPATCH_MAX_DELIVERIES` deliveries are
    /// planned and not yet committed, so that a new chunk is pulled only when its
    /// deliveries could soon get room: with ten endpoints per event, two or three
    /// chunks already fill the budget, and pulling sixteen would only hold their
    /// events and plans in memory. Twice the budget keeps the next groups ready when
    /// room frees up. With one endpoint per event, `PORTICO_DISPATCH_CHUNKS` binds
    /// first and this never waits.
    pub async fn room_to_pull(&self) {
        self.planned.below(self.held_cap.saturating_mul(2)).await;
    }

    /// Drops a user's cached endpoints here and in every other replica (and gateway).
    pub async fn invalidate_user(&self, user: &str) {
        self.cache.invalidate(user);
        let subject = self.topology.invalidation_subject("webhooks");
        if let Err(err) = self.nats.publish(subject, user.to_owned().into()).await {
            tracing::warn!(%err, "cache invalidation broadcast failed; other replicas catch up within the TTL");
        }
    }
}

/// A count of deliveries planned and not yet committed, shared by the chunks that
/// add to it and the loop that waits for it to fall before pulling more.
#[derive(Debug, Default)]
pub struct PlannedCount {
    deliveries: AtomicUsize,
    fell: Notify,
}

impl PlannedCount {
    /// Counts `deliveries` until the returned guard is dropped (when they are
    /// committed or given up, or, for a pulled chunk's estimate, planned).
    pub fn count(self: &Arc<Self>, deliveries: usize) -> Counted {
        self.deliveries.fetch_add(deliveries, Ordering::AcqRel);
        Counted {
            count: self.clone(),
            deliveries,
        }
    }

    /// Deliveries counted now.
    pub fn get(&self) -> usize {
        self.deliveries.load(Ordering::Acquire)
    }

    /// Waits until fewer than `limit` deliveries are counted.
    pub async fn below(&self, limit: usize) {
        loop {
            let fell = self.fell.notified();
            tokio::pin!(fell);
            fell.as_mut().enable();
            if self.get() < limit {
                return;
            }
            fell.await;
        }
    }
}

/// Deliveries counted in a [`PlannedCount`] until dropped.
pub struct Counted {
    count: Arc<PlannedCount>,
    deliveries: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.deliveries > 0 {
            self.count
                .deliveries
                .fetch_sub(self.deliveries, Ordering::AcqRel);
            self.count.fell.notify_waiters();
        }
    }
}

/// Runs until `shutdown`: stops pulling and claiming, finishes (attempts and commits)
/// the work in hand, then returns.
pub async fn run(
    config: DispatcherConfig,
    admin_listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), DispatcherError> {
    let retry_jitter = config.validate()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let base = Foundation::connect(&config.common, "portico-webhook-dispatcher").await?;
    let (pool, nats, js, topology) = (
        base.pool.clone(),
        base.nats.clone(),
        base.jetstream.clone(),
        base.topology.clone(),
    );
    let events_pool = portico_storage::connect(
        &config.common.database_url,
        config.dispatch_chunks.clamp(1, 16) as u32,
    )
    .await?;
    let timeout = Duration::from_millis(config.delivery_timeout_ms);
    // PORTICO_ACK_WAIT_SECS bounds how long a crashed replica's jobs wait. A chunk
    // that takes longer (a slow endpoint) keeps its messages with in-progress acks
    // every third of it (events::handle_chunk), so it can be short.
    let ack_wait = Duration::from_secs(config.common.ack_wait_secs.max(1));
    let events_settings = ConsumerSettings {
        ack_wait,
        ..ConsumerSettings::default()
    };
    let consumer =
        ensure_consumer(&js, &topology, JobKind::EventDispatch, &events_settings).await?;
    // Retry jobs send a keep-alive after every chunk.
    let maintenance_settings = ConsumerSettings {
        ack_wait,
        max_ack_pending: 256,
        ..ConsumerSettings::default()
    };
    let maintenance_consumer = ensure_consumer(
        &js,
        &topology,
        JobKind::WebhookMaintenance,
        &maintenance_settings,
    )
    .await?;
    let secrets_key = if config.secrets_key.is_none() && config.secrets_keys.is_none() {
        Keyring::insecure_dev()
    } else {
        Keyring::from_config(
            config.secrets_keys.as_deref(),
            config.secrets_key.as_deref(),
        )
        .map_err(|e| config::ConfigError(format!("PORTICO_SECRETS_KEYS: {e}")))?
    };
    let (allowlist, dev_loopback) = portico_domain::network::Allowlist::for_service(
        &config.webhook_allowlist,
        config.common.dev_mode,
    )
    .map_err(|e| config::ConfigError(format!("PORTICO_WEBHOOK_ALLOWLIST: {e}")))?;
    if dev_loopback {
        tracing::warn!(
            "PORTICO_DEV_MODE: deliveries to loopback (127.0.0.0/8, ::1) are allowed; never run dev mode in production"
        );
    }
    let outbox = OutboxSignal::default();
    let dispatcher = Arc::new(Dispatcher {
        pool: pool.clone(),
        events_pool: events_pool.clone(),
        cache: EndpointCache::new(pool.clone(), secrets_key, config.endpoint_concurrency),
        transport: Transport::new(
            allowlist,
            timeout,
            transport::ListenRoute {
                nats: nats.clone(),
                topology: topology.clone(),
            },
        )?,
        global: Arc::new(Semaphore::new(config.delivery_concurrency.max(1))),
        held: Semaphore::new(config.dispatch_max_deliveries.max(1)),
        held_cap: config.dispatch_max_deliveries.max(1),
        group_size: config.dispatch_batch.max(1),
        planned: Arc::default(),
        topology: topology.clone(),
        outbox: outbox.clone(),
        retry_signal: Notify::new(),
        nats: nats.clone(),
        live: portico_queue::live::LivePublisher::new(nats.clone(), topology.clone()),
        disable_after: config.disable_after_failures.min(i32::MAX as u32) as i32,
        max_deliver: events_settings.max_deliver,
        ack_wait,
        replica_id: config.common.replica_id(),
        retry_jitter,
    });
    // Deliveries this replica had claimed before it last stopped (killed mid-attempt)
    // are due again now, not when their lease runs out.
    match portico_storage::deliveries::reclaim_own_leases(&pool, &dispatcher.replica_id).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            deliveries = n,
            "taking back deliveries claimed before a restart"
        ),
        Err(err) => tracing::warn!(%err, "could not take back earlier claims; their leases expire"),
    }

    let invalidations = nats
        .subscribe(topology.invalidation_subject("webhooks"))
        .await
        .map_err(|e| portico_queue::QueueError::Connect(e.to_string()))?;
    let admin = base.spawn_admin(admin_listener, shutdown.clone());
    let background = shutdown.child_token();
    let mut side_tasks = tokio::task::JoinSet::new();
    side_tasks.spawn(watch_invalidations(
        dispatcher.clone(),
        invalidations,
        background.clone(),
    ));
    side_tasks.spawn(sweep_cache(
        dispatcher.clone(),
        Duration::from_secs(config.listen_timeout_secs.max(1)),
        background.clone(),
    ));
    side_tasks.spawn(portico_queue::consumer::report_pending(
        base.jetstream.clone(),
        vec![
            ("webhook-dispatcher.events", consumer.clone()),
            (
                "webhook-dispatcher.maintenance",
                maintenance_consumer.clone(),
            ),
        ],
        background.clone(),
    ));
    let relay = base.spawn_relay(outbox, background.clone());
    let poller = tokio::spawn(retries::run(
        dispatcher.clone(),
        consumer.clone(),
        Duration::from_millis(config.retry_poll_ms.max(10)),
        shutdown.clone(),
    ));
    let maintenance = tokio::spawn(run_maintenance(
        pool.clone(),
        maintenance_consumer,
        shutdown.clone(),
    ));

    let stream = JobStream::open(
        &consumer,
        pool.clone(),
        "webhook-dispatcher.events",
        config.dispatch_batch,
    )
    .await?;
    let mut chunks = futures::stream::unfold(stream, |mut s| async move {
        s.next().await.map(|item| (item, s))
    })
    .ready_chunks(config.dispatch_batch.max(1))
    .boxed();
    let batch = config.dispatch_batch.max(1);
    let linger = Duration::from_millis(config.dispatch_linger_ms);
    let chunk_permits = Arc::new(Semaphore::new(config.dispatch_chunks.max(1)));
    let mut chunk_tasks = tokio::task::JoinSet::new();
    tracing::info!("webhook-dispatcher consuming");
    loop {
        // Take a slot first, so at most `dispatch_chunks` chunks are held unacked.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = chunk_permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        // And room for more deliveries, however many endpoints the events fan out to.
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = dispatcher.room_to_pull() => {}
        }
        let chunk = tokio::select! {
            _ = shutdown.cancelled() => break,
            chunk = chunks.next() => chunk,
        };
        let Some(mut chunk) = chunk else { break };
        let linger_until = tokio::time::Instant::now() + linger;
        while !linger.is_zero() && chunk.len() < batch {
            match tokio::time::timeout_at(linger_until, chunks.next()).await {
                Ok(Some(more)) => chunk.extend(more),
                _ => break,
            }
        }
        let mut messages = Vec::with_capacity(chunk.len());
        for item in chunk {
            match item {
                Ok(m) => messages.push(m),
                Err(err) => tracing::warn!(%err, "pull failed; continuing"),
            }
        }
        // Until the chunk has planned its deliveries, count one per event, so that the
        // next turn of this loop sees it.
        let estimate = dispatcher.planned.count(messages.len());
        let d = dispatcher.clone();
        chunk_tasks.spawn(async move {
            let _permit = permit;
            events::handle_chunk(&d, messages, estimate).await;
        });
        while chunk_tasks.try_join_next().is_some() {}
    }
    // Stop pulling. Jobs already pulled into this process but not started are handed
    // back at once (nak), so another replica takes them now rather than after the ack
    // wait; the chunks in hand are finished (attempts, commit, ack).
    // The nak carries a short delay so they are not handed straight back to this
    // process while it drains.
    let drain_until = tokio::time::Instant::now() + Duration::from_secs(3);
    loop {
        let next = (tokio::time::Instant::now() + Duration::from_millis(150)).min(drain_until);
        let Ok(Some(chunk)) = tokio::time::timeout_at(next, chunks.next()).await else {
            break;
        };
        let naks = chunk.into_iter().filter_map(Result::ok).map(|m| {
            m.finish(portico_queue::consumer::Outcome::RetryAfter(
                Duration::from_secs(1),
            ))
        });
        futures::future::join_all(naks).await;
    }
    drop(chunks);
    while chunk_tasks.join_next().await.is_some() {}
    let _ = poller.await;
    let _ = maintenance.await;
    background.cancel();
    let _ = relay.await;
    while side_tasks.join_next().await.is_some() {}
    let _ = admin.await;
    nats.flush().await.ok();
    pool.close().await;
    events_pool.close().await;
    tracing::info!("webhook-dispatcher stopped");
    Ok(())
}

/// Drops cached endpoints of users named on the invalidation subject.
async fn watch_invalidations(
    dispatcher: Arc<Dispatcher>,
    mut subscriber: async_nats::Subscriber,
    shutdown: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = subscriber.next() => m,
        };
        let Some(message) = message else { break };
        match std::str::from_utf8(&message.payload) {
            Ok(user) => dispatcher.cache.invalidate(user.trim()),
            Err(_) => tracing::warn!("ignoring a non-UTF-8 webhook invalidation"),
        }
    }
}

/// The periodic upkeep: expired cache entries every [`endpoints::CACHE_TTL`], and
/// listen endpoints whose connection has been gone past `listen_timeout` (checked
/// every half of it, at most every TTL).
async fn sweep_cache(
    dispatcher: Arc<Dispatcher>,
    listen_timeout: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(endpoints::CACHE_TTL);
    let mut listen_tick = tokio::time::interval(
        (listen_timeout / 2).clamp(Duration::from_secs(1), endpoints::CACHE_TTL),
    );
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => dispatcher.cache.sweep(),
            _ = listen_tick.tick() => sweep_listen_endpoints(&dispatcher, listen_timeout).await,
        }
    }
}

/// Deletes the listen endpoints no gateway has seen connected for `timeout` (the tool
/// died without deleting its endpoint) and drops their owners' cached endpoints.
async fn sweep_listen_endpoints(dispatcher: &Dispatcher, timeout: Duration) {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(timeout).unwrap_or_default();
    match portico_storage::listen::delete_abandoned(&dispatcher.pool, cutoff).await {
        Ok(gone) => {
            for endpoint in gone {
                tracing::info!(webhook = %endpoint.id.as_uuid(), "removed a listen endpoint whose connection was gone past PORTICO_LISTEN_TIMEOUT_SECS");
                dispatcher.invalidate_user(&endpoint.user_id).await;
            }
        }
        Err(err) => tracing::warn!(%err, "listen endpoint sweep failed; retrying at the next tick"),
    }
}

/// Consumes retry-failed jobs, a few at a time, until `shutdown`; a job interrupted by
/// shutdown is nak'ed and resumes on the next delivery.
async fn run_maintenance(
    pool: PgPool,
    consumer: async_nats::jetstream::consumer::PullConsumer,
    shutdown: CancellationToken,
) {
    let stream =
        match JobStream::open(&consumer, pool.clone(), "webhook-dispatcher.maintenance", 4).await {
            Ok(s) => s,
            Err(err) => {
                tracing::error!(%err, "cannot consume webhook maintenance jobs");
                return;
            }
        };
    let stopping = shutdown.clone();
    run_bounded(stream, 4, shutdown, move |message| {
        let pool = pool.clone();
        let shutdown = stopping.clone();
        async move {
            let outcome = maintenance::handle(&pool, &message, &shutdown).await;
            (message, outcome)
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    /// Waiting for room to pull returns at once below the limit, waits while the
    /// counted deliveries reach it, and returns once enough of them are dropped.
    #[tokio::test]
    async fn pulling_waits_for_planned_deliveries_to_fall() {
        let count = Arc::new(PlannedCount::default());
        assert!(count.below(10).now_or_never().is_some());
        let first = count.count(6);
        let second = count.count(4);
        assert_eq!(count.get(), 10);
        let waiter = tokio::spawn({
            let count = count.clone();
            async move { count.below(10).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        assert_eq!(count.get(), 4);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("the waiter is woken when the count falls")
            .expect("the waiter does not panic");
        drop(second);
        assert_eq!(count.get(), 0);
    }
}
