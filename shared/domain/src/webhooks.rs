//! Webhooks: the rules an endpoint's configuration must satisfy, and the event filter
//! that decides which events reach it.
//!
//! Both the gateway (which validates input on create and update, over REST and gRPC)
//! and the webhook-dispatcher (which matches events against filters and computes retry
//! delays) use this module, so a rule can never differ between the two. Every failure
//! is a [`FieldError`] with a JSON pointer into the request body and a stable code.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::FieldError;
use crate::network::parse_webhook_url;

/// Longest event type name.
pub const MAX_EVENT_TYPE_LEN: usize = 128;
/// Most entries in one webhook's `events` filter list.
pub const MAX_EVENT_FILTERS: usize = 100;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// Most custom headers on one webhook.
pub const MAX_CUSTOM_HEADERS: usize = 20;
/// Longest custom header name, in bytes.
pub const MAX_HEADER_NAME_LEN: usize = 256;
/// Longest custom header value, in bytes.
pub const MAX_HEADER_VALUE_LEN: usize = 4096;
/// Header names a webhook may not set: the transport's own, and the signature's.
pub const RESERVED_HEADERS: [&str; 6] = [
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "user-agent",
];
/// Header name prefixes a webhook may not use (`webhook-id`, `webhook-signature`, ...
/// and Portico's own).
pub const RESERVED_HEADER_PREFIXES: [&str; 2] = ["webhook-", "x-portico-"];
/// Bounds of `retryPolicy.maxRetries`.
pub const MAX_RETRIES_LIMIT: u32 = 20;
/// Smallest `retryPolicy.baseDelayMs`: faster retries would hammer a failing endpoint.
pub const MIN_BASE_DELAY_MS: u64 = 100;
/// Largest `retryPolicy.baseDelayMs` (one hour).
pub const MAX_BASE_DELAY_MS: u64 = 3_600_000;
/// Largest `retryPolicy.maxDelayMs` (one day).
pub const MAX_MAX_DELAY_MS: u64 = 86_400_000;
/// Bounds of `rateLimitPerSecond`.
pub const MAX_RATE_LIMIT_PER_SECOND: u32 = 10_000;
/// Bounds of `maxConcurrency`.
pub const MAX_CONCURRENCY_LIMIT: u32 = 1_000;
/// Event types starting with this are Portico's own operational events (delivery
/// failing, endpoint disabled, ...). `*` does not match them: an owner subscribes to
/// them explicitly or with `portico.*`, so a catch-all endpoint is never surprised.
pub const OPERATIONAL_EVENT_PREFIX: &str = "portico.";
/// The event type of `POST /webhooks/{id}/test`.
pub const TEST_EVENT_TYPE: &str = "webhook.test";

/// Checks an event type name: dot-separated segments of letters, digits, `_` and `-`.
pub fn validate_event_type(name: &str, path: &str) -> Result<(), FieldError> {
    if name.is_empty() || name.len() > MAX_EVENT_TYPE_LEN || !name.split('.').all(valid_segment) {
        return Err(FieldError::new(
            "invalid_event_type",
            path,
            format!(
                "event type must be 1-{MAX_EVENT_TYPE_LEN} characters of dot-separated segments of letters, digits, '_' or '-' (e.g. order.created)"
            ),
        ));
    }
    Ok(())
}

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Checks one entry of a webhook's `events` list: an exact event type, a `prefix.*`
/// filter (a valid event type followed by `.*`) or `*`.
pub fn validate_event_filter(filter: &str, path: &str) -> Result<(), FieldError> {
    let ok = filter == "*"
        || match filter.strip_suffix(".*") {
            Some(prefix) => validate_event_type(prefix, path).is_ok(),
            None => validate_event_type(filter, path).is_ok(),
        };
    if ok && filter.len() <= MAX_EVENT_TYPE_LEN {
        Ok(())
    } else {
        Err(FieldError::new(
            "invalid_event_filter",
            path,
            format!(
                "{filter:?} is not an event filter: use an exact event type (order.created), a prefix (order.*) or *"
            ),
        ))
    }
}

/// Validates a whole `events` list: non-empty, at most [`MAX_EVENT_FILTERS`], every
/// entry a valid filter. Returns the list without repeated entries, in input order.
pub fn validate_event_filters(
    events: &[String],
    path: &str,
) -> Result<Vec<String>, Vec<FieldError>> {
    if events.is_empty() {
        return Err(vec![FieldError::new(
            "empty_events",
            path,
            "events must list at least one event type or filter",
        )]);
    }
    if events.len() > MAX_EVENT_FILTERS {
        return Err(vec![FieldError::new(
            "too_many_events",
            path,
            format!("events may list at most {MAX_EVENT_FILTERS} entries"),
        )]);
    }
    let errors: Vec<FieldError> = events
        .iter()
        .enumerate()
        .filter_map(|(i, f)| validate_event_filter(f, &format!("{path}/{i}")).err())
        .collect();
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut unique: Vec<String> = Vec::with_capacity(events.len());
    for e in events {
        if !unique.contains(e) {
            unique.push(e.clone());
        }
    }
    Ok(unique)
}

/// Whether an event of `event_type` matches one filter entry: exact names match
/// themselves; `prefix.*` matches `prefix.x` and `prefix.x.y` but not `prefix`; `*`
/// matches everything except Portico's operational events (`portico.*`).
pub fn filter_matches(filter: &str, event_type: &str) -> bool {
    if filter == "*" {
        return !event_type.starts_with(OPERATIONAL_EVENT_PREFIX);
    }
    match filter.strip_suffix(".*") {
        Some(prefix) => event_type
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|rest| !rest.is_empty()),
        None => filter == event_type,
    }
}

/// Whether any of a webhook's filters matches `event_type`.
pub fn any_filter_matches(filters: &[String], event_type: &str) -> bool {
    filters.iter().any(|f| filter_matches(f, event_type))
}

/// Checks a description: at most [`MAX_DESCRIPTION_CHARS`] characters, no control
/// characters other than tab and line breaks.
pub fn validate_description(text: &str, path: &str) -> Result<(), FieldError> {
    if text.chars().count() > MAX_DESCRIPTION_CHARS
        || crate::text::has_forbidden_control(text, crate::text::Lines::Multi)
    {
        return Err(FieldError::new(
            "invalid_description",
            path,
            format!(
                "description must be at most {MAX_DESCRIPTION_CHARS} characters, without control characters other than tab and line breaks"
            ),
        ));
    }
    Ok(())
}

/// Whether `name` is a header a webhook may not set (case-insensitive).
pub fn is_reserved_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_HEADERS.contains(&lower.as_str())
        || RESERVED_HEADER_PREFIXES
            .iter()
            .any(|p| lower.starts_with(p))
}

fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Escapes a key for use in a JSON pointer (RFC 6901).
pub fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Validates custom headers: at most [`MAX_CUSTOM_HEADERS`], names are HTTP tokens and
/// not reserved, values are printable ASCII without line breaks, and no name repeats
/// in another letter case.
pub fn validate_headers(headers: &BTreeMap<String, String>, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if headers.len() > MAX_CUSTOM_HEADERS {
        errors.push(FieldError::new(
            "too_many_headers",
            path,
            format!("at most {MAX_CUSTOM_HEADERS} custom headers are allowed"),
        ));
        return errors;
    }
    let mut seen = std::collections::BTreeSet::new();
    for (name, value) in headers {
        let at = format!("{path}/{}", pointer_escape(name));
        if name.is_empty() || name.len() > MAX_HEADER_NAME_LEN || !name.bytes().all(is_token_char) {
            errors.push(FieldError::new(
                "invalid_header",
                at,
                format!("{name:?} is not a valid HTTP header name"),
            ));
            continue;
        }
        if is_reserved_header(name) {
            errors.push(FieldError::new(
                "reserved_header",
                at,
                format!(
                    "{name} is reserved (host, content-type, content-length, transfer-encoding, connection, user-agent, webhook-*, x-portico-*)"
                ),
            ));
            continue;
        }
        if !seen.insert(name.to_ascii_lowercase()) {
            errors.push(FieldError::new(
                "invalid_header",
                at,
                format!("{name} is given more than once (header names are case-insensitive)"),
            ));
            continue;
        }
        if value.len() > MAX_HEADER_VALUE_LEN
            || !value
                .bytes()
                .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            errors.push(FieldError::new(
                "invalid_header",
                at,
                format!(
                    "the value of {name} must be at most {MAX_HEADER_VALUE_LEN} printable ASCII characters"
                ),
            ));
        }
    }
    errors
}

/// How a webhook's failed deliveries are retried: exponential backoff
/// `baseDelay * 2^(attempt-1)`, capped at `maxDelay`, for at most `maxRetries` retries
/// after the first attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = a single attempt).
    pub max_retries: u32,
    /// Delay before the first retry, in milliseconds.
    pub base_delay_ms: u64,
    /// Upper bound of any delay, in milliseconds.
    pub max_delay_ms: u64,
}

impl RetryPolicy {
    /// The delay before retry number `retry` (1-based: the delay after the first failed
    /// attempt is `delay_for(1)` = the base delay).
    pub fn delay_for(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(63);
        let factor = 1u64.checked_shl(exponent).unwrap_or(u64::MAX);
        let ms = self
            .base_delay_ms
            .saturating_mul(factor)
            .min(self.max_delay_ms);
        Duration::from_millis(ms)
    }

    /// Checks the bounds, e.g. of the configured server defaults at start-up.
    pub fn validate(&self, path: &str) -> Result<(), Vec<FieldError>> {
        RetryPolicyPatch {
            max_retries: Some(i64::from(self.max_retries)),
            base_delay_ms: Some(i64::try_from(self.base_delay_ms).unwrap_or(i64::MAX)),
            max_delay_ms: Some(i64::try_from(self.max_delay_ms).unwrap_or(i64::MAX)),
        }
        .apply(*self, path)
        .map(|_| ())
    }
}

/// Retry policy input: unset fields take the server default (create) or keep their
/// current value (update). Signed, so a negative number gets a field error rather
/// than a decoding error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryPolicyPatch {
    /// `maxRetries`, 0..=20.
    pub max_retries: Option<i64>,
    /// `baseDelayMs`, 100..=3,600,000.
    pub base_delay_ms: Option<i64>,
    /// `maxDelayMs`, at least `baseDelayMs` and at most 86,400,000.
    pub max_delay_ms: Option<i64>,
}

impl RetryPolicyPatch {
    /// Checks each given field's own bounds.
    pub fn check_bounds(&self, path: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut check = |value: Option<i64>, name: &str, min: i64, max: i64| {
            if let Some(v) = value
                && !(min..=max).contains(&v)
            {
                errors.push(FieldError::new(
                    "invalid_retry_policy",
                    format!("{path}/{name}"),
                    format!("{name} must be between {min} and {max}"),
                ));
            }
        };
        check(
            self.max_retries,
            "maxRetries",
            0,
            i64::from(MAX_RETRIES_LIMIT),
        );
        check(
            self.base_delay_ms,
            "baseDelayMs",
            MIN_BASE_DELAY_MS as i64,
            MAX_BASE_DELAY_MS as i64,
        );
        check(
            self.max_delay_ms,
            "maxDelayMs",
            MIN_BASE_DELAY_MS as i64,
            MAX_MAX_DELAY_MS as i64,
        );
        errors
    }

    /// The policy that results from applying this patch over `base`, checked as a
    /// whole (`maxDelayMs` may not be below `baseDelayMs`).
    pub fn apply(&self, base: RetryPolicy, path: &str) -> Result<RetryPolicy, Vec<FieldError>> {
        let errors = self.check_bounds(path);
        if !errors.is_empty() {
            return Err(errors);
        }
        // In range, so the conversions cannot fail; fall back to the base to stay total.
        let policy = RetryPolicy {
            max_retries: self
                .max_retries
                .and_then(|v| u32::try_from(v).ok())
                .unwrap_or(base.max_retries),
            base_delay_ms: self
                .base_delay_ms
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(base.base_delay_ms),
            max_delay_ms: self
                .max_delay_ms
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(base.max_delay_ms),
        };
        if policy.max_delay_ms < policy.base_delay_ms {
            return Err(vec![FieldError::new(
                "invalid_retry_policy",
                format!("{path}/maxDelayMs"),
                format!(
                    "maxDelayMs ({}) must not be below baseDelayMs ({})",
                    policy.max_delay_ms, policy.base_delay_ms
                ),
            )]);
        }
        Ok(policy)
    }
}

/// Checks an optional bounded integer setting; returns it as `u32`.
fn bounded(
    value: Option<i64>,
    max: u32,
    code: &str,
    path: &str,
    name: &str,
) -> Result<Option<u32>, FieldError> {
    match value {
        None => Ok(None),
        Some(v) if (1..=i64::from(max)).contains(&v) => Ok(u32::try_from(v).ok()),
        Some(_) => Err(FieldError::new(
            code,
            path,
            format!("{name} must be between 1 and {max}"),
        )),
    }
}

/// Checks `rateLimitPerSecond` (1..=10,000; absent = no limit).
pub fn validate_rate_limit(value: Option<i64>, path: &str) -> Result<Option<u32>, FieldError> {
    bounded(
        value,
        MAX_RATE_LIMIT_PER_SECOND,
        "invalid_rate_limit",
        path,
        "rateLimitPerSecond",
    )
}

/// Checks `maxConcurrency` (1..=1,000; absent = the dispatcher's default).
pub fn validate_max_concurrency(value: Option<i64>, path: &str) -> Result<Option<u32>, FieldError> {
    bounded(
        value,
        MAX_CONCURRENCY_LIMIT,
        "invalid_max_concurrency",
        path,
        "maxConcurrency",
    )
}

/// A webhook as submitted for creation, before validation.
#[derive(Debug, Clone, Default)]
pub struct NewWebhook {
    /// Absolute http(s) URL.
    pub url: String,
    /// Event filters.
    pub events: Vec<String>,
    /// Free text for the owner.
    pub description: Option<String>,
    /// Custom headers sent with every delivery.
    pub headers: BTreeMap<String, String>,
    /// Retry policy overrides.
    pub retry_policy: RetryPolicyPatch,
    /// Deliveries per second; `None` = no limit.
    pub rate_limit_per_second: Option<i64>,
    /// Concurrent deliveries; `None` = the dispatcher's default.
    pub max_concurrency: Option<i64>,
    /// Per-ordering-key ordering.
    pub ordering_enabled: bool,
}

/// A webhook configuration that passed every rule except the address check (which
/// needs DNS and happens in the gateway).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidWebhook {
    /// The parsed URL.
    pub url: url::Url,
    /// Event filters, without repeats.
    pub events: Vec<String>,
    /// Description; `None` when absent or empty.
    pub description: Option<String>,
    /// Custom headers.
    pub headers: BTreeMap<String, String>,
    /// Effective retry policy.
    pub retry_policy: RetryPolicy,
    /// Deliveries per second.
    pub rate_limit_per_second: Option<u32>,
    /// Concurrent deliveries.
    pub max_concurrency: Option<u32>,
    /// Per-ordering-key ordering.
    pub ordering_enabled: bool,
}

/// Collects a field result into an error list.
fn take<T>(result: Result<T, FieldError>, errors: &mut Vec<FieldError>) -> Option<T> {
    result.map_err(|e| errors.push(e)).ok()
}

impl NewWebhook {
    /// Validates every field and reports every problem at once; unset retry policy
    /// fields take `defaults`.
    pub fn validate(self, defaults: RetryPolicy) -> Result<ValidWebhook, Vec<FieldError>> {
        let mut errors = Vec::new();
        let url = take(parse_webhook_url(&self.url, "/url"), &mut errors);
        let events = match validate_event_filters(&self.events, "/events") {
            Ok(e) => Some(e),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        if let Some(d) = &self.description {
            take(validate_description(d, "/description"), &mut errors);
        }
        errors.extend(validate_headers(&self.headers, "/headers"));
        let retry_policy = match self.retry_policy.apply(defaults, "/retryPolicy") {
            Ok(p) => Some(p),
            Err(e) => {
                errors.extend(e);
                None
            }
        };
        let rate = take(
            validate_rate_limit(self.rate_limit_per_second, "/rateLimitPerSecond"),
            &mut errors,
        );
        let concurrency = take(
            validate_max_concurrency(self.max_concurrency, "/maxConcurrency"),
            &mut errors,
        );
        match (url, events, retry_policy, rate, concurrency) {
            (Some(url), Some(events), Some(retry_policy), Some(rate), Some(concurrency))
                if errors.is_empty() =>
            {
                Ok(ValidWebhook {
                    url,
                    events,
                    description: self.description.filter(|d| !d.is_empty()),
                    headers: self.headers,
                    retry_policy,
                    rate_limit_per_second: rate,
                    max_concurrency: concurrency,
                    ordering_enabled: self.ordering_enabled,
                })
            }
            _ => Err(errors),
        }
    }
}

/// A partial update: `None` leaves a field unchanged; for nullable fields
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    /// New URL.
    pub url: Option<String>,
    /// New filter list (replaces the old one; must not be empty).
    pub events: Option<Vec<String>>,
    /// New description, or clear it.
    pub description: Option<Option<String>>,
    /// Enable or disable.
    pub active: Option<bool>,
    /// New custom headers (replace all; an empty map removes them).
    pub headers: Option<BTreeMap<String, String>>,
    /// Retry policy fields to change.
    pub retry_policy: Option<RetryPolicyPatch>,
    /// New rate limit, or remove it.
    pub rate_limit_per_second: Option<Option<i64>>,
    /// New concurrency cap, or remove it.
    pub max_concurrency: Option<Option<i64>>,
    /// Turn ordering on or off.
    pub ordering_enabled: Option<bool>,
}

/// A patch whose fields each passed their rules. The retry policy is checked as a
/// whole against the current policy when it is applied ([`RetryPolicyPatch::apply`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidPatch {
    /// New URL (its address still to be checked).
    pub url: Option<url::Url>,
    /// New filters.
    pub events: Option<Vec<String>>,
    /// New description (`Some(None)` clears).
    pub description: Option<Option<String>>,
    /// Enable or disable.
    pub active: Option<bool>,
    /// New headers.
    pub headers: Option<BTreeMap<String, String>>,
    /// Retry policy fields to change (bounds checked).
    pub retry_policy: Option<RetryPolicyPatch>,
    /// New rate limit (`Some(None)` removes).
    pub rate_limit_per_second: Option<Option<u32>>,
    /// New concurrency cap (`Some(None)` removes).
    pub max_concurrency: Option<Option<u32>>,
    /// Ordering on or off.
    pub ordering_enabled: Option<bool>,
}

impl WebhookPatch {
    /// Validates every field present and reports every problem at once.
    pub fn validate(self) -> Result<ValidPatch, Vec<FieldError>> {
        let mut errors = Vec::new();
        let url = self
            .url
            .as_deref()
            .and_then(|u| take(parse_webhook_url(u, "/url"), &mut errors));
        let events = match self
            .events
            .as_deref()
            .map(|e| validate_event_filters(e, "/events"))
        {
            Some(Ok(e)) => Some(e),
            Some(Err(e)) => {
                errors.extend(e);
                None
            }
            None => None,
        };
        if let Some(Some(d)) = &self.description {
            take(validate_description(d, "/description"), &mut errors);
        }
        if let Some(h) = &self.headers {
            errors.extend(validate_headers(h, "/headers"));
        }
        if let Some(p) = &self.retry_policy {
            errors.extend(p.check_bounds("/retryPolicy"));
        }
        let rate = self
            .rate_limit_per_second
            .map(|v| take(validate_rate_limit(v, "/rateLimitPerSecond"), &mut errors).flatten());
        let concurrency = self
            .max_concurrency
            .map(|v| take(validate_max_concurrency(v, "/maxConcurrency"), &mut errors).flatten());
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(ValidPatch {
            url,
            events,
            description: self.description.map(|d| d.filter(|d| !d.is_empty())),
            active: self.active,
            headers: self.headers,
            retry_policy: self.retry_policy,
            rate_limit_per_second: rate,
            max_concurrency: concurrency,
            ordering_enabled: self.ordering_enabled,
        })
    }
}

/// The state of one delivery (one event on its way to one webhook).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum DeliveryStatus {
    /// Accepted, first attempt not started yet.
    Pending,
    /// An attempt is in flight.
    Delivering,
    /// An attempt got a 2xx. Final.
    Succeeded,
    /// The last attempt failed; another is scheduled.
    Retrying,
    /// Retries exhausted or a non-retryable outcome; final until retried by hand.
    Failed,
}

impl DeliveryStatus {
    /// Every status.
    pub const ALL: [DeliveryStatus; 5] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Delivering,
        DeliveryStatus::Succeeded,
        DeliveryStatus::Retrying,
        DeliveryStatus::Failed,
    ];

    /// The name stored in `webhook_deliveries.status` and used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivering => "delivering",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Retrying => "retrying",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Parses a stored or API name.
    pub fn parse(text: &str) -> Option<Self> {
        <Self as crate::wire::WireName>::from_wire(text)
    }

    /// Whether a delivery in this status may be retried by hand (one delivery or a
    /// retry-failed job): only when no attempt is pending or in flight or it succeeded.
    pub fn is_retryable(self) -> bool {
        matches!(self, DeliveryStatus::Failed | DeliveryStatus::Retrying)
    }
}

/// Where a retry-failed job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub enum RetryJobStatus {
    /// Stored; the dispatcher has not started it.
    Pending,
    /// The dispatcher is re-queueing its deliveries.
    Running,
    /// Every matching delivery was re-queued (a dry run answers this at once).
    Completed,
    /// Cancelled by its owner.
    Cancelled,
    /// Could not be carried out.
    Failed,
}

impl RetryJobStatus {
    /// Every status.
    pub const ALL: [RetryJobStatus; 5] = [
        RetryJobStatus::Pending,
        RetryJobStatus::Running,
        RetryJobStatus::Completed,
        RetryJobStatus::Cancelled,
        RetryJobStatus::Failed,
    ];

    /// The name stored in `webhook_retry_jobs.status` and used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryJobStatus::Pending => "pending",
            RetryJobStatus::Running => "running",
            RetryJobStatus::Completed => "completed",
            RetryJobStatus::Cancelled => "cancelled",
            RetryJobStatus::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        <Self as crate::wire::WireName>::from_wire(text)
    }
}

/// The filters of a retry-failed job, stored as `webhook_retry_jobs.filters`
/// (`{"statuses": [...], "eventType": str|null, "since": rfc3339|null, "until": rfc3339|null}`)
/// by the gateway and read back by the dispatcher that executes the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryJobFilters {
    /// Delivery statuses to retry (each [`DeliveryStatus::is_retryable`]).
    pub statuses: Vec<DeliveryStatus>,
    /// Exact event type, or any.
    pub event_type: Option<String>,
    /// Inclusive lower bound on `created_at`.
    pub since: Option<DateTime<Utc>>,
    /// Exclusive upper bound on `created_at`.
    pub until: Option<DateTime<Utc>>,
}

impl RetryJobFilters {
    /// Validates filters as submitted: statuses default to `failed` and must be
    /// retryable; the event type must be valid; `since` must precede `until`.
    pub fn new(
        statuses: Vec<DeliveryStatus>,
        event_type: Option<String>,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut statuses = if statuses.is_empty() {
            vec![DeliveryStatus::Failed]
        } else {
            statuses
        };
        statuses.sort();
        statuses.dedup();
        for (i, s) in statuses.iter().enumerate() {
            if !s.is_retryable() {
                errors.push(FieldError::new(
                    "invalid_status",
                    format!("/statuses/{i}"),
                    format!(
                        "{} deliveries cannot be retried; use failed or retrying",
                        s.as_str()
                    ),
                ));
            }
        }
        if let Some(t) = &event_type {
            take(validate_event_type(t, "/eventType"), &mut errors);
        }
        if let (Some(a), Some(b)) = (since, until)
            && a >= b
        {
            errors.push(FieldError::new(
                "invalid_time_range",
                "/until",
                "until must be later than since",
            ));
        }
        if errors.is_empty() {
            Ok(Self {
                statuses,
                event_type,
                since,
                until,
            })
        } else {
            Err(errors)
        }
    }

    /// The statuses as stored names, for SQL `= ANY($n)`.
    pub fn status_names(&self) -> Vec<String> {
        self.statuses
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect()
    }
}

crate::wire_name!(DeliveryStatus, RetryJobStatus);

#[cfg(test)]
mod tests {
    use super::*;

    /// Delivery and retry-job statuses: the serde names are the stored names.
    #[test]
    fn statuses_round_trip() {
        for s in DeliveryStatus::ALL {
            assert_eq!(serde_json::json!(s), s.as_str());
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
        }
        for s in RetryJobStatus::ALL {
            assert_eq!(serde_json::json!(s), s.as_str());
            assert_eq!(RetryJobStatus::parse(s.as_str()), Some(s));
        }
        assert!(RetryJobStatus::parse("done").is_none());
    }

    fn defaults() -> RetryPolicy {
        RetryPolicy {
            max_retries: 5,
            base_delay_ms: 1000,
            max_delay_ms: 300_000,
        }
    }

    fn codes(errors: &[FieldError]) -> Vec<(&str, &str)> {
        errors
            .iter()
            .map(|e| (e.code.as_str(), e.path.as_str()))
            .collect()
    }

    /// Event names follow the dotted convention; anything else is refused with a path.
    #[test]
    fn event_type_rules() {
        for ok in ["order.created", "a", "bulk_order.completed", "x-y.z_1"] {
            assert!(validate_event_type(ok, "/type").is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "order.",
            "order..created",
            "order created",
            "ördér",
        ] {
            let err = validate_event_type(bad, "/type").unwrap_err();
            assert_eq!(err.code, "invalid_event_type");
        }
        assert!(validate_event_type(&"a".repeat(MAX_EVENT_TYPE_LEN + 1), "/t").is_err());
    }

    /// Filters are exact names, `prefix.*` or `*`; anything else is refused.
    #[test]
    fn event_filter_rules() {
        for ok in ["order.created", "order.*", "*", "portico.*", "a.b.*"] {
            assert!(validate_event_filter(ok, "/events/0").is_ok(), "{ok}");
        }
        for bad in [
            "",
            "order.**",
            "*.created",
            "order*",
            "or der",
            ".*",
            "a.*.b",
            "**",
        ] {
            let err = validate_event_filter(bad, "/events/0").unwrap_err();
            assert_eq!(err.code, "invalid_event_filter", "{bad}");
        }
    }

    /// A filter list must be non-empty and bounded; errors point at the bad entry;
    /// repeats are dropped.
    #[test]
    fn event_filter_lists() {
        let err = validate_event_filters(&[], "/events").unwrap_err();
        assert_eq!(codes(&err), [("empty_events", "/events")]);
        let many: Vec<String> = (0..=MAX_EVENT_FILTERS).map(|i| format!("e{i}")).collect();
        let err = validate_event_filters(&many, "/events").unwrap_err();
        assert_eq!(codes(&err), [("too_many_events", "/events")]);
        let err =
            validate_event_filters(&["a.b".into(), "bad filter".into()], "/events").unwrap_err();
        assert_eq!(codes(&err), [("invalid_event_filter", "/events/1")]);
        let ok =
            validate_event_filters(&["a.b".into(), "a.*".into(), "a.b".into()], "/events").unwrap();
        assert_eq!(ok, ["a.b", "a.*"]);
    }

    /// Exact names match themselves only; `prefix.*` matches deeper names but not the
    /// prefix itself; `*` matches everything but Portico's operational events.
    #[test]
    fn filters_match_events() {
        assert!(filter_matches("order.created", "order.created"));
        assert!(!filter_matches("order.created", "order.created.v2"));
        assert!(!filter_matches("order.created", "order"));
        assert!(filter_matches("order.*", "order.created"));
        assert!(filter_matches("order.*", "order.line.added"));
        assert!(!filter_matches("order.*", "order"));
        assert!(!filter_matches("order.*", "orders.created"));
        assert!(!filter_matches("order.*", "bulk_order.created"));
        assert!(filter_matches("*", "order.created"));
        assert!(filter_matches("*", "webhook.test"));
        assert!(!filter_matches("*", "portico.delivery.failing"));
        assert!(filter_matches("portico.*", "portico.endpoint.disabled"));
        assert!(filter_matches(
            "portico.endpoint.disabled",
            "portico.endpoint.disabled"
        ));
        assert!(any_filter_matches(
            &["a.b".into(), "portico.*".into()],
            "portico.x"
        ));
        assert!(!any_filter_matches(&["*".into()], "portico.x"));
    }

    /// Reserved headers are refused whatever their case; names must be tokens and
    /// values printable; the count is bounded.
    #[test]
    fn custom_header_rules() {
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_owned(), v.to_owned())]);
        assert!(validate_headers(&one("X-Api-Key", "abc 123"), "/headers").is_empty());
        for reserved in [
            "Host",
            "content-type",
            "Content-Length",
            "transfer-encoding",
            "Connection",
            "User-Agent",
            "webhook-signature",
            "Webhook-Id",
            "X-Portico-Anything",
        ] {
            let errs = validate_headers(&one(reserved, "x"), "/headers");
            assert_eq!(errs[0].code, "reserved_header", "{reserved}");
            assert_eq!(errs[0].path, format!("/headers/{reserved}"));
        }
        for bad_name in ["", "bad header", "a:b", "ü"] {
            let errs = validate_headers(&one(bad_name, "x"), "/headers");
            assert_eq!(errs[0].code, "invalid_header", "{bad_name:?}");
        }
        for bad_value in ["a\r\nInjected: 1", "é", "\u{7f}"] {
            let errs = validate_headers(&one("X-A", bad_value), "/headers");
            assert_eq!(errs[0].code, "invalid_header", "{bad_value:?}");
        }
        let dup = BTreeMap::from([
            ("X-A".to_owned(), "1".to_owned()),
            ("x-a".to_owned(), "2".to_owned()),
        ]);
        assert_eq!(validate_headers(&dup, "/headers")[0].code, "invalid_header");
        let many: BTreeMap<String, String> = (0..=MAX_CUSTOM_HEADERS)
            .map(|i| (format!("X-H{i}"), "v".to_owned()))
            .collect();
        assert_eq!(
            codes(&validate_headers(&many, "/headers")),
            [("too_many_headers", "/headers")]
        );
        assert_eq!(pointer_escape("a/b~c"), "a~1b~0c");
    }

    /// Policy bounds, the maxDelay >= baseDelay rule, defaults filling gaps, and the
    /// backoff schedule 1, 2, 4, 8, 16 s capped at the maximum.
    #[test]
    fn retry_policy_rules_and_backoff() {
        let p = RetryPolicyPatch::default()
            .apply(defaults(), "/retryPolicy")
            .unwrap();
        assert_eq!(p, defaults());
        let p = RetryPolicyPatch {
            max_retries: Some(0),
            ..Default::default()
        }
        .apply(defaults(), "/retryPolicy")
        .unwrap();
        assert_eq!(p.max_retries, 0);
        for (patch, path) in [
            (
                RetryPolicyPatch {
                    max_retries: Some(21),
                    ..Default::default()
                },
                "/retryPolicy/maxRetries",
            ),
            (
                RetryPolicyPatch {
                    max_retries: Some(-1),
                    ..Default::default()
                },
                "/retryPolicy/maxRetries",
            ),
            (
                RetryPolicyPatch {
                    base_delay_ms: Some(99),
                    ..Default::default()
                },
                "/retryPolicy/baseDelayMs",
            ),
            (
                RetryPolicyPatch {
                    base_delay_ms: Some(3_600_001),
                    ..Default::default()
                },
                "/retryPolicy/baseDelayMs",
            ),
            (
                RetryPolicyPatch {
                    max_delay_ms: Some(86_400_001),
                    ..Default::default()
                },
                "/retryPolicy/maxDelayMs",
            ),
            (
                RetryPolicyPatch {
                    max_delay_ms: Some(500),
                    ..Default::default()
                },
                "/retryPolicy/maxDelayMs",
            ),
        ] {
            let err = patch.apply(defaults(), "/retryPolicy").unwrap_err();
            assert_eq!(codes(&err), [("invalid_retry_policy", path)], "{patch:?}");
        }
        let schedule: Vec<u64> = (1..=6)
            .map(|n| defaults().delay_for(n).as_millis() as u64)
            .collect();
        assert_eq!(schedule, [1000, 2000, 4000, 8000, 16000, 32000]);
        assert_eq!(defaults().delay_for(40), Duration::from_millis(300_000));
        assert_eq!(defaults().delay_for(0), Duration::from_millis(1000));
        assert!(defaults().validate("/").is_ok());
    }

    /// A complete valid webhook passes; a bad one reports every problem at once.
    #[test]
    fn new_webhook_validation() {
        let ok = NewWebhook {
            url: "https://example.com/hook".into(),
            events: vec!["order.*".into()],
            description: Some(String::new()),
            rate_limit_per_second: Some(10),
            ..Default::default()
        }
        .validate(defaults())
        .unwrap();
        assert_eq!(ok.description, None);
        assert_eq!(ok.rate_limit_per_second, Some(10));
        assert_eq!(ok.retry_policy, defaults());
        let err = NewWebhook {
            url: "ftp://x".into(),
            events: vec![],
            description: Some("x".repeat(MAX_DESCRIPTION_CHARS + 1)),
            headers: BTreeMap::from([("Host".into(), "x".into())]),
            rate_limit_per_second: Some(0),
            max_concurrency: Some(1001),
            ..Default::default()
        }
        .validate(defaults())
        .unwrap_err();
        assert_eq!(
            codes(&err),
            [
                ("invalid_url", "/url"),
                ("empty_events", "/events"),
                ("invalid_description", "/description"),
                ("reserved_header", "/headers/Host"),
                ("invalid_rate_limit", "/rateLimitPerSecond"),
                ("invalid_max_concurrency", "/maxConcurrency"),
            ]
        );
    }

    /// A patch checks only what it changes; clearing nullable fields is allowed.
    #[test]
    fn patch_validation() {
        let p = WebhookPatch {
            description: Some(None),
            rate_limit_per_second: Some(None),
            ..Default::default()
        }
        .validate()
        .unwrap();
        assert_eq!(p.rate_limit_per_second, Some(None));
        let err = WebhookPatch {
            events: Some(vec![]),
            url: Some("nope".into()),
            retry_policy: Some(RetryPolicyPatch {
                max_retries: Some(99),
                ..Default::default()
            }),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(
            codes(&err),
            [
                ("invalid_url", "/url"),
                ("empty_events", "/events"),
                ("invalid_retry_policy", "/retryPolicy/maxRetries"),
            ]
        );
    }

    /// Retry-job filters default to failed, refuse non-retryable statuses and inverted
    /// time ranges, and serialise to the documented JSON shape.
    #[test]
    fn retry_job_filters() {
        let f = RetryJobFilters::new(vec![], None, None, None).unwrap();
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"statuses": ["failed"], "eventType": null, "since": null, "until": null})
        );
        let err =
            RetryJobFilters::new(vec![DeliveryStatus::Succeeded], None, None, None).unwrap_err();
        assert_eq!(codes(&err), [("invalid_status", "/statuses/0")]);
        let t = Utc::now();
        let err =
            RetryJobFilters::new(vec![], Some("bad type".into()), Some(t), Some(t)).unwrap_err();
        assert_eq!(
            codes(&err),
            [
                ("invalid_event_type", "/eventType"),
                ("invalid_time_range", "/until")
            ]
        );
        assert_eq!(
            DeliveryStatus::parse("retrying"),
            Some(DeliveryStatus::Retrying)
        );
        assert_eq!(DeliveryStatus::parse("nope"), None);
    }
}
