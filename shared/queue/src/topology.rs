//! Names of every stream, subject and consumer, derived from one prefix.

/// The JetStream layout of one Portico deployment (or one test run).
#[derive(Debug, Clone)]
pub struct Topology {
    prefix: String,
    /// Stream replicas: 1 on one machine, 3 in a clustered JetStream.
    pub replicas: usize,
}

/// The kinds of job, one subject and one durable consumer each. WorkQueue streams
/// require consumers with disjoint filters, and scaling a worker means more replicas
/// on the same durable consumer, never more consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Events to fan out to webhooks (gateway -> webhook-dispatcher).
    EventDispatch,
    /// Bulk-order batches to process (gateway -> batch-processor).
    BulkOrderBatch,
    /// Retry-failed jobs and other webhook maintenance (gateway -> webhook-dispatcher).
    WebhookMaintenance,
}

impl JobKind {
    /// Every job kind, for stream setup.
    pub const ALL: [JobKind; 3] = [
        JobKind::EventDispatch,
        JobKind::BulkOrderBatch,
        JobKind::WebhookMaintenance,
    ];

    fn token(self) -> &'static str {
        match self {
            JobKind::EventDispatch => "events",
            JobKind::BulkOrderBatch => "bulk_orders",
            JobKind::WebhookMaintenance => "webhook_maintenance",
        }
    }
}

impl Topology {
    /// A topology for `prefix` (letters, digits, `_` and `-` only, as stream names require).
    pub fn new(prefix: &str, replicas: usize) -> Result<Self, crate::QueueError> {
        let ok = !prefix.is_empty()
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(crate::QueueError::Setup(format!(
                "stream prefix {prefix:?} must be non-empty letters, digits, '_' or '-'"
            )));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            replicas: replicas.max(1),
        })
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The work-queue stream that holds every job.
    pub fn jobs_stream(&self) -> String {
        format!("{}_JOBS", self.prefix)
    }

    /// The wildcard the jobs stream captures.
    pub fn jobs_wildcard(&self) -> String {
        format!("{}.jobs.>", self.prefix)
    }

    /// The subject jobs of `kind` are published on.
    pub fn subject(&self, kind: JobKind) -> String {
        format!("{}.jobs.{}", self.prefix, kind.token())
    }

    /// The durable consumer that workers of `kind` share.
    pub fn consumer(&self, kind: JobKind) -> String {
        format!("{}_{}", self.prefix, kind.token())
    }

    /// Core-NATS subject on which cached state is invalidated across replicas
    /// (`topic` is e.g. `webhooks` or `credentials`).
    pub fn invalidation_subject(&self, topic: &str) -> String {
        format!("{}.invalidate.{topic}", self.prefix)
    }

    /// Core-NATS subject of listen endpoint `webhook_id`: the dispatcher sends each
    /// delivery to it as a request, and the gateway replica holding the endpoint's
    /// `portico listen` connection answers (see [`crate::listen`]). Outside the jobs
    /// stream's subjects, so a request is never stored.
    pub fn listen_subject(&self, webhook_id: impl std::fmt::Display) -> String {
        format!("{}.listen.{webhook_id}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names never collide between prefixes and refuse characters NATS forbids.
    #[test]
    fn names_derive_from_the_prefix() {
        let t = Topology::new("T1", 1).unwrap();
        assert_eq!(t.jobs_stream(), "T1_JOBS");
        assert_eq!(t.subject(JobKind::EventDispatch), "T1.jobs.events");
        assert_eq!(t.consumer(JobKind::BulkOrderBatch), "T1_bulk_orders");
        assert!(Topology::new("a.b", 1).is_err());
        assert!(Topology::new("", 1).is_err());
    }
}
