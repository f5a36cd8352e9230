//! The fan-out: one core-NATS subscription per owner with listeners in this replica,
//! and a bounded queue per listener.
//!
//! The first listener of an owner subscribes `<prefix>.live.<owner token>.>`; the last
//! one to leave unsubscribes. A replica therefore receives the traffic of the owners it
//! serves and nothing else, and any number of replicas can serve the same owner (each
//! has its own subscription). A NATS message holds one announcement or several, one
//! per line ([`portico_queue::live::LiveBatch`]). Every one is decoded once per replica, checked
//! against the owner it was addressed to, and handed to each matching listener as one
//! shared [`Frame`]: a listener's queue holds at most `queue` frames, and a full queue
//! drops the frame and counts it (the listener is told how many with a `lagged`
//! notice), so a slow client costs a bounded amount of memory and never holds up the
//! others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use futures::StreamExt;
use portico_queue::Topology;
use portico_queue::live::{LiveKind, LivePublisher, LiveRouting, Topic, owner_wildcard};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{CloseCode, LiveConfig};

/// Frames dropped because a listener's queue was full.
const LAGGED_FRAMES: &str = "portico_live_lagged_total";
/// Listeners connected to this replica.
const LISTENERS: &str = "portico_live_listeners";

/// Why a listener could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The owner already has the configured number of live connections here.
    #[error("at most {0} live connections per user")]
    TooMany(usize),
}

/// One announcement, decoded once and shared by every listener it goes to.
pub struct Frame {
    /// What routing needs of the message (filters, owner, credentials).
    pub route: LiveRouting,
    /// The announcement without its opening brace, preceded by its cursor:
    /// `"cursor":"<occurredAt>",<rest of the object>`. A connection writes `{"seq":N,`
    /// and then this text: no re-encoding per listener, and its UTF-8 is checked once
    /// here rather than at every render.
    pub tail: Box<str>,
}

impl Frame {
    /// Builds a frame from one announcement (a line of a NATS message), or `None` when
    /// it is not a live message.
    fn decode(payload: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        let route: LiveRouting = serde_json::from_str(text).ok()?;
        let rest = text.strip_prefix('{')?;
        let cursor = route.occurred_at.as_str();
        let mut tail = String::with_capacity(rest.len() + cursor.len() + 12);
        tail.push_str("\"cursor\":\"");
        tail.push_str(cursor);
        tail.push_str("\",");
        tail.push_str(rest);
        Some(Self {
            route,
            tail: tail.into_boxed_str(),
        })
    }

    /// This frame as sent to one connection, numbered `seq`.
    pub fn render(&self, seq: u64) -> String {
        let mut out = String::with_capacity(self.tail.len() + 24);
        self.render_into(&mut out, seq);
        out
    }

    /// Appends this frame, numbered `seq`, to `out` (a batched message holds several).
    pub fn render_into(&self, out: &mut String, seq: u64) {
        // itoa, not write!: core::fmt cost more than the rest of a frame.
        out.push_str("{\"seq\":");
        out.push_str(itoa::Buffer::new().format(seq));
        out.push(',');
        out.push_str(&self.tail);
    }
}

/// What one listener wants to hear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Bit set of [`Topic::bit`].
    pub topics: u8,
    /// Only this webhook's deliveries and endpoint changes.
    pub webhook_id: Option<Uuid>,
    /// Only this batch's progress.
    pub batch_id: Option<Uuid>,
    /// Only deliveries of event types matching this filter (`order.*`, exact, `*`).
    pub event_type: Option<String>,
}

impl Filter {
    /// Whether `event` passes.
    pub fn admits(&self, event: &LiveRouting) -> bool {
        if self.topics & event.topic().bit() == 0 {
            return false;
        }
        if let (Some(want), Some(got)) = (self.webhook_id, event.webhook_id)
            && want != got
        {
            return false;
        }
        if let (Some(want), Some(got)) = (self.batch_id, event.batch_id)
            && want != got
        {
            return false;
        }
        if let (Some(pattern), Some(got)) = (&self.event_type, event.event_type.as_deref())
            && !portico_domain::webhooks::filter_matches(pattern, got)
        {
            return false;
        }
        true
    }

    /// The topics, by name.
    pub fn topic_names(&self) -> Vec<&'static str> {
        Topic::ALL
            .into_iter()
            .filter(|t| self.topics & t.bit() != 0)
            .map(Topic::as_str)
            .collect()
    }
}

/// One connection's end of the hub.
pub struct Listener {
    filter: RwLock<Filter>,
    queue: mpsc::Sender<Arc<Frame>>,
    missed: AtomicU64,
    /// A partner's integration: its credential events concern this listener only,
    /// and its revocation closes it.
    integration: Option<Uuid>,
    close: OnceLock<CloseCode>,
    closing: CancellationToken,
}

impl Listener {
    /// Replaces the filter.
    pub fn set_filter(&self, filter: Filter) {
        if let Ok(mut f) = self.filter.write() {
            *f = filter;
        }
    }

    /// The current filter.
    pub fn filter(&self) -> Filter {
        self.filter.read().map(|f| f.clone()).unwrap_or_default()
    }

    /// Frames dropped since the last call (the `lagged` notice's count).
    pub fn take_missed(&self) -> u64 {
        self.missed.swap(0, Ordering::Relaxed)
    }

    /// Asks the connection to close with `code` (first reason wins).
    pub fn close(&self, code: CloseCode) {
        let _ = self.close.set(code);
        self.closing.cancel();
    }

    /// Resolves once [`Listener::close`] was called; then [`Listener::close_code`].
    pub async fn closed(&self) {
        self.closing.cancelled().await;
    }

    /// Why the hub closed this listener.
    pub fn close_code(&self) -> Option<CloseCode> {
        self.close.get().copied()
    }

    fn offer(&self, frame: &Arc<Frame>) {
        let wanted = self
            .filter
            .read()
            .map(|f| f.admits(&frame.route))
            .unwrap_or(false);
        if !wanted {
            return;
        }
        if frame.route.kind == LiveKind::CredentialEvent
            && self
                .integration
                .is_some_and(|mine| Some(mine) != frame.route.integration_id)
        {
            // A partner hears of its own integration's credentials only.
            return;
        }
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(Arc::clone(frame)) {
            self.missed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(LAGGED_FRAMES).increment(1);
        }
    }
}

/// A listener's membership in the hub; leaving is dropping it.
pub struct Membership {
    hub: Hub,
    owner: String,
    shared: Arc<OwnerShared>,
    /// The listener (filter, close).
    pub listener: Arc<Listener>,
    /// The frames for this listener, at most `queue` of them.
    pub frames: mpsc::Receiver<Arc<Frame>>,
}

impl Membership {
    /// Waits (bounded) until this replica's subscription for the owner is active, so
    /// that a `subscribed` reply means "from now on"; false if NATS did not confirm.
    pub async fn ready(&self) -> bool {
        let mut ready = self.shared.ready.clone();
        let wait = ready.wait_for(|r| *r);
        matches!(
            tokio::time::timeout(Duration::from_secs(5), wait).await,
            Ok(Ok(_))
        )
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        metrics::gauge!(LISTENERS).decrement(1.0);
        let Ok(mut owners) = self.hub.0.owners.lock() else {
            return;
        };
        let empty = match self.shared.listeners.write() {
            Ok(mut list) => {
                list.retain(|l| !Arc::ptr_eq(l, &self.listener));
                list.is_empty()
            }
            Err(_) => false,
        };
        if empty
            && owners
                .get(&self.owner)
                .is_some_and(|s| Arc::ptr_eq(s, &self.shared))
        {
            // The last listener of this owner here: drop the NATS subscription.
            owners.remove(&self.owner);
            self.shared.stop.cancel();
        }
    }
}

/// The listeners of one owner in this replica and its subscription task.
struct OwnerShared {
    listeners: RwLock<Vec<Arc<Listener>>>,
    ready: watch::Receiver<bool>,
    stop: CancellationToken,
}

/// The hub; cheap to clone.
#[derive(Clone)]
pub struct Hub(Arc<HubInner>);

struct HubInner {
    nats: async_nats::Client,
    topology: Topology,
    publisher: LivePublisher,
    config: LiveConfig,
    owners: Mutex<HashMap<String, Arc<OwnerShared>>>,
    shutdown: CancellationToken,
    tickets: super::ticket::Tickets,
}

impl Hub {
    /// A hub over `nats` for `topology`'s prefix, signing tickets with
    /// `ticket_secret`; every subscription ends at `shutdown`.
    pub fn new(
        nats: async_nats::Client,
        topology: Topology,
        config: LiveConfig,
        ticket_secret: &[u8],
        shutdown: CancellationToken,
    ) -> Self {
        Self(Arc::new(HubInner {
            tickets: super::ticket::Tickets::new(ticket_secret),
            publisher: LivePublisher::new(nats.clone(), topology.clone()),
            nats,
            topology,
            config,
            owners: Mutex::new(HashMap::new()),
            shutdown,
        }))
    }

    /// The settings.
    pub fn config(&self) -> &LiveConfig {
        &self.0.config
    }

    /// Issues and redeems live tickets.
    pub fn tickets(&self) -> &super::ticket::Tickets {
        &self.0.tickets
    }

    /// Publishes the gateway's own announcements (credential events).
    pub fn publisher(&self) -> &LivePublisher {
        &self.0.publisher
    }

    /// Ends when the gateway shuts down.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    /// Adds a listener for `owner` (subscribing to NATS if it is the owner's first in
    /// this replica), refusing past the per-user limit.
    pub fn join(&self, owner: &str, integration: Option<Uuid>) -> Result<Membership, JoinError> {
        let (queue, frames) = mpsc::channel(self.0.config.queue.max(1));
        let listener = Arc::new(Listener {
            filter: RwLock::new(Filter::default()),
            queue,
            missed: AtomicU64::new(0),
            integration,
            close: OnceLock::new(),
            closing: CancellationToken::new(),
        });
        let mut owners = self
            .0
            .owners
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let shared = match owners.get(owner) {
            Some(s) => Arc::clone(s),
            None => {
                let s = self.subscribe(owner);
                owners.insert(owner.to_owned(), Arc::clone(&s));
                s
            }
        };
        {
            let mut list = shared
                .listeners
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let limit = self.0.config.max_connections_per_user.max(1);
            if list.len() >= limit {
                drop(list);
                if shared
                    .listeners
                    .read()
                    .map(|l| l.is_empty())
                    .unwrap_or(false)
                {
                    owners.remove(owner);
                    shared.stop.cancel();
                }
                return Err(JoinError::TooMany(limit));
            }
            list.push(Arc::clone(&listener));
        }
        metrics::gauge!(LISTENERS).increment(1.0);
        Ok(Membership {
            hub: self.clone(),
            owner: owner.to_owned(),
            shared,
            listener,
            frames,
        })
    }

    /// Starts the owner's subscription task.
    fn subscribe(&self, owner: &str) -> Arc<OwnerShared> {
        let (ready_tx, ready) = watch::channel(false);
        let shared = Arc::new(OwnerShared {
            listeners: RwLock::new(Vec::new()),
            ready,
            stop: self.0.shutdown.child_token(),
        });
        let nats = self.0.nats.clone();
        let subject = owner_wildcard(&self.0.topology, owner);
        let owner = owner.to_owned();
        let task_shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let subscriber = tokio::select! {
                _ = task_shared.stop.cancelled() => return,
                s = nats.subscribe(subject) => s,
            };
            let mut subscriber = match subscriber {
                Ok(s) => s,
                Err(err) => {
                    tracing::warn!(%err, "live subscription failed; closing the owner's listeners");
                    close_all(&task_shared, CloseCode::Unavailable);
                    return;
                }
            };
            // Confirmed by the server once the flush returns: from here on, nothing
            // published is missed.
            if let Err(err) = nats.flush().await {
                tracing::debug!(%err, "flush after live subscribe failed");
            }
            let _ = ready_tx.send(true);
            loop {
                let message = tokio::select! {
                    _ = task_shared.stop.cancelled() => break,
                    m = subscriber.next() => m,
                };
                let Some(message) = message else {
                    close_all(&task_shared, CloseCode::Unavailable);
                    break;
                };
                // One message may carry a commit's worth of announcements, one per line.
                let Ok(listeners) = task_shared.listeners.read() else {
                    break;
                };
                for line in portico_queue::live::lines(&message.payload) {
                    let Some(frame) = Frame::decode(line) else {
                        tracing::debug!("ignoring a malformed live message");
                        continue;
                    };
                    if frame.route.owner != owner {
                        // Another owner with the same token (a hash collision): never
                        // theirs to see.
                        continue;
                    }
                    let frame = Arc::new(frame);
                    if frame.route.kind == LiveKind::CredentialEvent
                        && frame.route.action.as_deref() != Some("regenerated")
                    {
                        for l in listeners.iter() {
                            if l.integration.is_some()
                                && l.integration == frame.route.integration_id
                            {
                                l.close(CloseCode::CredentialRevoked);
                            }
                        }
                    }
                    for l in listeners.iter() {
                        l.offer(&frame);
                    }
                }
            }
            // Dropping the subscriber unsubscribes.
            drop(subscriber);
        });
        shared
    }
}

fn close_all(shared: &OwnerShared, code: CloseCode) {
    if let Ok(list) = shared.listeners.read() {
        for l in list.iter() {
            l.close(code);
        }
    }
}
