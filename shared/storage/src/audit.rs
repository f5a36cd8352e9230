//! The tamper-evident audit log (`audit_log`, `audit_chain_heads`, migration 0015).
//!
//! Every record belongs to one owner's chain (the user whose resources changed; the
//! empty owner [`SYSTEM_OWNER`] holds operator actions on no user's data). Record `n`
//! stores `prev_hash` (the hash of record `n - 1`, or the chain's anchor) and
//! `hash = SHA-256(prev_hash || canonical bytes)` ([`canonical_bytes`], [`chain_hash`]).
//! Editing a record changes what its bytes hash to; removing one leaves a gap in the
//! sequence numbers and a `prev_hash` that links to nothing; so [`verify`] finds both.
//!
//! Writing is two steps (migration 0020). [`enqueue`] runs inside the caller's
//! transaction (the same one as the change it records) and inserts the record into
//! `audit_pending`, touching no chain head: the change and its record commit together
//! or not at all, and writers of one owner do not wait for each other. [`link`] then
//! moves an owner's committed waiting records into the chain, a batch per transaction:
//! it locks the owner's chain head (`INSERT .. ON CONFLICT DO UPDATE`, which creates the
//! head on first use), gives the records, in queued order, the next sequence numbers,
//! their times (the time queued, never before the previous record's, so time order is
//! sequence order) and their hashes, and moves them and the head in one statement.
//! Linkers of one owner serialise on the head row, so the chain never forks; one WAL
//! flush links the whole batch. (Holding the head from each write's audit statement to
//! its commit, as [`append`] does, let one owner's writers commit one at a time: about
//! 500 creates/s here, with seconds of queueing behind them.)
//!
//! [`append`] is the one-step form (lock, link and insert inside the caller's
//! transaction), kept for tools and tests that want the linked record at once.
//!
//! Retention ([`purge`]) removes the oldest records of a chain only, and moves the
//! chain's anchor (`anchor_seq`, `anchor_hash`: the first retained record's sequence
//! number and the `prev_hash` it must carry) in the same statement, so verification
//! still starts from a known hash after old records are gone.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The owner of the chain of operator actions that concern no user (the key re-seal
/// job, a dead letter without an owner). No user id is empty, so it cannot collide.
pub const SYSTEM_OWNER: &str = "";

/// The `prev_hash` of a chain's first record.
pub const GENESIS: [u8; 32] = [0; 32];

/// Records verified per statement.
const VERIFY_PAGE: i64 = 1_000;

/// Records deleted per retention statement.
const PURGE_BATCH: i64 = 5_000;

/// A record to append: who did what to which resource.
#[derive(Debug, Clone, Copy)]
pub struct NewAuditRecord<'a> {
    /// The chain: the user whose resources changed, or [`SYSTEM_OWNER`].
    pub owner_id: &'a str,
    /// `user`, `service`, `partner` or `operator`.
    pub actor_kind: &'a str,
    /// The user, the user a service acts for, the integration, or the operator's name.
    pub actor_id: &'a str,
    /// The client's address, when known.
    pub client_addr: Option<&'a str>,
    /// The request's `x-request-id`, when known.
    pub request_id: Option<&'a str>,
    /// What happened, e.g. `webhook.updated`.
    pub action: &'a str,
    /// The kind of resource, e.g. `webhook`.
    pub resource_type: &'a str,
    /// Its id.
    pub resource_id: &'a str,
    /// Changed field names and small non-secret details (never a secret value).
    pub changes: &'a serde_json::Value,
}

/// One stored record, as lists and verification read it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecordRow {
    /// The chain.
    pub owner_id: String,
    /// Position in the owner's chain, from 1.
    pub seq: i64,
    /// Globally unique id (the list cursor's tie-breaker).
    pub id: Uuid,
    /// When, read while the chain head was locked.
    pub at: DateTime<Utc>,
    /// `user`, `service`, `partner` or `operator`.
    pub actor_kind: String,
    /// Who, within the kind.
    pub actor_id: String,
    /// Client address.
    pub client_addr: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// What happened.
    pub action: String,
    /// Kind of resource.
    pub resource_type: String,
    /// Resource id.
    pub resource_id: String,
    /// Changed fields and details.
    pub changes: serde_json::Value,
    /// The previous record's hash (or the anchor).
    pub prev_hash: Vec<u8>,
    /// `SHA-256(prev_hash || canonical bytes)`.
    pub hash: Vec<u8>,
}

impl AuditRecordRow {
    /// What this record's hash must be, recomputed from its stored fields.
    pub fn expected_hash(&self) -> [u8; 32] {
        chain_hash(&self.prev_hash, &canonical_bytes(self))
    }
}

/// Appends one length-prefixed field (`u32` big-endian length, then the bytes; an
/// absent value is length `u32::MAX`), so no two different records share their bytes.
fn field(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(v) => {
            out.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX - 1).to_be_bytes());
            out.extend_from_slice(v);
        }
        None => out.extend_from_slice(&u32::MAX.to_be_bytes()),
    }
}

/// JSON with object keys sorted at every level and no whitespace: the same bytes
/// before the value is stored and after `jsonb` (which reorders keys) gives it back.
pub fn canonical_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    canonical_json(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The bytes a record's hash covers: a version tag, then every field but the hashes,
/// length-prefixed, the time as microseconds since the epoch (what PostgreSQL keeps).
pub fn canonical_bytes(r: &AuditRecordRow) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"portico-audit-v1");
    field(&mut out, Some(r.owner_id.as_bytes()));
    field(&mut out, Some(&r.seq.to_be_bytes()));
    field(&mut out, Some(r.id.as_bytes()));
    field(&mut out, Some(&r.at.timestamp_micros().to_be_bytes()));
    field(&mut out, Some(r.actor_kind.as_bytes()));
    field(&mut out, Some(r.actor_id.as_bytes()));
    field(&mut out, r.client_addr.as_deref().map(str::as_bytes));
    field(&mut out, r.request_id.as_deref().map(str::as_bytes));
    field(&mut out, Some(r.action.as_bytes()));
    field(&mut out, Some(r.resource_type.as_bytes()));
    field(&mut out, Some(r.resource_id.as_bytes()));
    let mut changes = String::new();
    canonical_json(&r.changes, &mut changes);
    field(&mut out, Some(changes.as_bytes()));
    out
}

/// `SHA-256(prev_hash || canonical)`.
pub fn chain_hash(prev_hash: &[u8], canonical: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev_hash);
    ctx.update(canonical);
    let digest = ctx.finish();
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Lowercase hex, how hashes are shown to clients.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Appends a record to its owner's chain inside the caller's transaction and returns
/// it. Locks the owner's chain head until the transaction ends: call it last, just
/// before the commit, so the lock is held briefly.
pub async fn append(
    conn: &mut sqlx::PgConnection,
    record: &NewAuditRecord<'_>,
) -> Result<AuditRecordRow, sqlx::Error> {
    // Creates the head on first use, or locks the existing one (the no-op update takes
    // the row lock); either way answers the head as it is and the time under the lock.
    let head = sqlx::query!(
        r#"INSERT INTO audit_chain_heads AS h (owner_id) VALUES ($1)
           ON CONFLICT (owner_id) DO UPDATE SET owner_id = h.owner_id
           RETURNING head_seq, head_hash,
                     GREATEST(clock_timestamp(), head_at) AS "now!""#,
        record.owner_id
    )
    .fetch_one(&mut *conn)
    .await?;
    let mut row = AuditRecordRow {
        owner_id: record.owner_id.to_owned(),
        seq: head.head_seq + 1,
        id: Uuid::now_v7(),
        // PostgreSQL keeps microseconds; hash what will be read back.
        at: DateTime::from_timestamp_micros(head.now.timestamp_micros()).unwrap_or(head.now),
        actor_kind: record.actor_kind.to_owned(),
        actor_id: record.actor_id.to_owned(),
        client_addr: record.client_addr.map(str::to_owned),
        request_id: record.request_id.map(str::to_owned),
        action: record.action.to_owned(),
        resource_type: record.resource_type.to_owned(),
        resource_id: record.resource_id.to_owned(),
        changes: record.changes.clone(),
        prev_hash: head.head_hash,
        hash: Vec::new(),
    };
    row.hash = row.expected_hash().to_vec();
    sqlx::query!(
        r#"WITH rec AS (
               INSERT INTO audit_log (owner_id, seq, id, at, actor_kind, actor_id, client_addr,
                                      request_id, action, resource_type, resource_id, changes,
                                      prev_hash, hash)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
               RETURNING owner_id)
           UPDATE audit_chain_heads SET head_seq = $2, head_hash = $14, head_at = $4
            WHERE owner_id = (SELECT owner_id FROM rec)"#,
        row.owner_id,
        row.seq,
        row.id,
        row.at,
        row.actor_kind,
        row.actor_id,
        row.client_addr,
        row.request_id,
        row.action,
        row.resource_type,
        row.resource_id,
        row.changes,
        row.prev_hash,
        row.hash,
    )
    .execute(&mut *conn)
    .await?;
    Ok(row)
}

/// Records linked per transaction by [`link`].
const LINK_BATCH: i64 = 1_000;

/// Writes a record to be linked into its owner's chain, inside the caller's transaction
/// (the one of the change it records), without locking the chain head; [`link`] gives
/// it its place in the chain after the commit. The record's time is read here
/// (`clock_timestamp()`).
pub async fn enqueue(
    executor: impl sqlx::PgExecutor<'_>,
    record: &NewAuditRecord<'_>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query!(
        r#"INSERT INTO audit_pending (id, owner_id, actor_kind, actor_id, client_addr,
                                     request_id, action, resource_type, resource_id, changes)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"#,
        id,
        record.owner_id,
        record.actor_kind,
        record.actor_id,
        record.client_addr,
        record.request_id,
        record.action,
        record.resource_type,
        record.resource_id,
        record.changes,
    )
    .execute(executor)
    .await?;
    Ok(id)
}

/// True when `owner_id` has committed records not yet linked into its chain.
pub async fn has_pending(
    executor: impl sqlx::PgExecutor<'_>,
    owner_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM audit_pending WHERE owner_id = $1) AS "exists!""#,
        owner_id
    )
    .fetch_one(executor)
    .await
}

/// Up to `limit` owners with committed records not yet linked (a sweep's work list).
pub async fn pending_owners(
    executor: impl sqlx::PgExecutor<'_>,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT DISTINCT owner_id FROM audit_pending LIMIT $1",
        limit
    )
    .fetch_all(executor)
    .await
}

/// Links every committed waiting record of `owner_id` into its chain, oldest queued
/// first, [`LINK_BATCH`] per transaction, and returns how many. Each transaction locks
/// the chain head, so linkers of one owner (every gateway replica, a list, a
/// verification) run one after another and the chain never forks; a record committed
/// while a batch is linked waits for the next call. Cheap when there is nothing to
/// link (one indexed read, no lock).
pub async fn link(pool: &sqlx::PgPool, owner_id: &str) -> Result<u64, sqlx::Error> {
    if !has_pending(pool, owner_id).await? {
        return Ok(0);
    }
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let head = sqlx::query!(
            r#"INSERT INTO audit_chain_heads AS h (owner_id) VALUES ($1)
               ON CONFLICT (owner_id) DO UPDATE SET owner_id = h.owner_id
               RETURNING head_seq, head_hash, head_at"#,
            owner_id
        )
        .fetch_one(&mut *tx)
        .await?;
        let waiting = sqlx::query!(
            r#"SELECT id, queued_at, actor_kind, actor_id, client_addr, request_id, action,
                      resource_type, resource_id, changes
                 FROM audit_pending WHERE owner_id = $1
                ORDER BY queued_at, id
                LIMIT $2"#,
            owner_id,
            LINK_BATCH
        )
        .fetch_all(&mut *tx)
        .await?;
        let count = waiting.len();
        if count == 0 {
            tx.rollback().await?;
            return Ok(total);
        }
        let mut prev_hash = head.head_hash;
        let mut prev_at = head.head_at;
        let mut seq = head.head_seq;
        let (mut ids, mut seqs, mut ats, mut prevs, mut hashes) = (
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
            Vec::with_capacity(count),
        );
        for w in waiting {
            seq += 1;
            // PostgreSQL keeps microseconds; hash what will be read back.
            let queued = DateTime::from_timestamp_micros(w.queued_at.timestamp_micros())
                .unwrap_or(w.queued_at);
            let at = prev_at.map_or(queued, |p| p.max(queued));
            let mut row = AuditRecordRow {
                owner_id: owner_id.to_owned(),
                seq,
                id: w.id,
                at,
                actor_kind: w.actor_kind,
                actor_id: w.actor_id,
                client_addr: w.client_addr,
                request_id: w.request_id,
                action: w.action,
                resource_type: w.resource_type,
                resource_id: w.resource_id,
                changes: w.changes,
                prev_hash: std::mem::take(&mut prev_hash),
                hash: Vec::new(),
            };
            row.hash = row.expected_hash().to_vec();
            prev_hash = row.hash.clone();
            prev_at = Some(at);
            ids.push(row.id);
            seqs.push(row.seq);
            ats.push(row.at);
            prevs.push(row.prev_hash);
            hashes.push(row.hash);
        }
        // The waiting rows move as read (the head's lock keeps other linkers out, and
        // nothing else changes them), with the place in the chain computed above.
        let linked = sqlx::query_scalar!(
            r#"WITH place AS (
                   SELECT * FROM UNNEST($2::uuid[], $3::int8[], $4::timestamptz[],
                                        $5::bytea[], $6::bytea[])
                            AS p(id, seq, at, prev_hash, hash)),
               gone AS (
                   DELETE FROM audit_pending w USING place
                    WHERE w.id = place.id AND w.owner_id = $1
                   RETURNING w.*),
               rec AS (
                   INSERT INTO audit_log (owner_id, seq, id, at, actor_kind, actor_id,
                                          client_addr, request_id, action, resource_type,
                                          resource_id, changes, prev_hash, hash)
                   SELECT g.owner_id, p.seq, g.id, p.at, g.actor_kind, g.actor_id,
                          g.client_addr, g.request_id, g.action, g.resource_type,
                          g.resource_id, g.changes, p.prev_hash, p.hash
                     FROM gone g JOIN place p ON p.id = g.id
                   RETURNING 1),
               moved AS (
                   UPDATE audit_chain_heads SET head_seq = $7, head_hash = $8, head_at = $9
                    WHERE owner_id = $1
                   RETURNING 1)
               SELECT (SELECT count(*) FROM rec) AS "linked!""#,
            owner_id,
            &ids,
            &seqs,
            &ats,
            &prevs,
            &hashes,
            seq,
            &prev_hash,
            prev_at,
        )
        .fetch_one(&mut *tx)
        .await?;
        if usize::try_from(linked).ok() != Some(count) {
            // Cannot happen while only linkers delete waiting rows; never commit a
            // chain whose head names records that were not written.
            tx.rollback().await?;
            return Err(sqlx::Error::Protocol(format!(
                "audit link for {owner_id:?}: {linked} of {count} waiting records moved"
            )));
        }
        tx.commit().await?;
        total += count as u64;
        if (count as i64) < LINK_BATCH {
            return Ok(total);
        }
    }
}

/// What a list may be narrowed to; `None` = any.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditFilter<'a> {
    /// Exact action.
    pub action: Option<&'a str>,
    /// Exact resource type.
    pub resource_type: Option<&'a str>,
    /// Exact resource id.
    pub resource_id: Option<&'a str>,
    /// Exact actor kind.
    pub actor_kind: Option<&'a str>,
    /// Exact actor id.
    pub actor_id: Option<&'a str>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
}

/// One page of an owner's records, newest first, after the keyset `(at, id)`.
pub async fn list(
    executor: impl sqlx::PgExecutor<'_>,
    owner_id: &str,
    filter: &AuditFilter<'_>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<AuditRecordRow>, sqlx::Error> {
    let (after_at, after_id) = after.unzip();
    sqlx::query_as!(
        AuditRecordRow,
        r#"SELECT owner_id, seq, id, at, actor_kind, actor_id, client_addr, request_id, action,
                  resource_type, resource_id, changes, prev_hash, hash
             FROM audit_log
            WHERE owner_id = $1
              AND ($2::text IS NULL OR action = $2)
              AND ($3::text IS NULL OR resource_type = $3)
              AND ($4::text IS NULL OR resource_id = $4)
              AND ($5::text IS NULL OR actor_kind = $5)
              AND ($6::text IS NULL OR actor_id = $6)
              AND ($7::timestamptz IS NULL OR at >= $7)
              AND ($8::timestamptz IS NULL OR at < $8)
              AND ($9::timestamptz IS NULL OR (at, id) < ($9, $10::uuid))
            ORDER BY at DESC, id DESC
            LIMIT $11"#,
        owner_id,
        filter.action,
        filter.resource_type,
        filter.resource_id,
        filter.actor_kind,
        filter.actor_id,
        filter.since,
        filter.until,
        after_at,
        after_id,
        limit
    )
    .fetch_all(executor)
    .await
}

/// A chain's head and anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// The newest record's sequence number (0: no record yet).
    pub head_seq: i64,
    /// The newest record's hash.
    pub head_hash: Vec<u8>,
    /// The oldest retained record's sequence number.
    pub anchor_seq: i64,
    /// The `prev_hash` that record must carry.
    pub anchor_hash: Vec<u8>,
}

/// The owner's chain head, or `None` when nothing was ever recorded for the owner.
pub async fn head(
    executor: impl sqlx::PgExecutor<'_>,
    owner_id: &str,
) -> Result<Option<ChainHead>, sqlx::Error> {
    sqlx::query_as!(
        ChainHead,
        "SELECT head_seq, head_hash, anchor_seq, anchor_hash
           FROM audit_chain_heads WHERE owner_id = $1",
        owner_id
    )
    .fetch_optional(executor)
    .await
}

/// Up to `limit` records of an owner from sequence number `from_seq` on, in order.
pub async fn records_from(
    executor: impl sqlx::PgExecutor<'_>,
    owner_id: &str,
    from_seq: i64,
    limit: i64,
) -> Result<Vec<AuditRecordRow>, sqlx::Error> {
    sqlx::query_as!(
        AuditRecordRow,
        r#"SELECT owner_id, seq, id, at, actor_kind, actor_id, client_addr, request_id, action,
                  resource_type, resource_id, changes, prev_hash, hash
             FROM audit_log
            WHERE owner_id = $1 AND seq >= $2
            ORDER BY seq
            LIMIT $3"#,
        owner_id,
        from_seq,
        limit
    )
    .fetch_all(executor)
    .await
}

/// How a chain breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Break {
    /// The record's fields no longer hash to its stored hash, or its `prev_hash` is not
    /// the hash of the record before it (or the anchor).
    Edited,
    /// The record with this sequence number is missing (a gap, or the newest records
    /// are gone while the head still names them).
    Removed,
}

impl Break {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Break::Edited => "edited",
            Break::Removed => "removed",
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Records checked and found intact (up to the break, if any).
    pub records: u64,
    /// The sequence number verification started from.
    pub from_seq: i64,
    /// The chain head's sequence number.
    pub head_seq: i64,
    /// The chain head's hash (32 zero bytes for an empty chain).
    pub head_hash: Vec<u8>,
    /// The first broken sequence number and how, or `None` when the chain holds.
    pub broken: Option<(i64, Break, String)>,
}

/// Recomputes an owner's chain from its anchor (or from `from_seq`, trusting that
/// record's `prev_hash`; a sequence number before the anchor starts at the anchor) up
/// to its head, a page at a time, and reports the first record that was edited or
/// removed. Reads only; runs outside any write transaction (records appended meanwhile
/// are past the head read first and are not checked).
pub async fn verify(
    pool: &sqlx::PgPool,
    owner_id: &str,
    from_seq: Option<i64>,
) -> Result<Verification, sqlx::Error> {
    let Some(head) = head(pool, owner_id).await? else {
        return Ok(Verification {
            records: 0,
            from_seq: 1,
            head_seq: 0,
            head_hash: GENESIS.to_vec(),
            broken: None,
        });
    };
    let start = from_seq.unwrap_or(head.anchor_seq).max(head.anchor_seq);
    let mut outcome = Verification {
        records: 0,
        from_seq: start,
        head_seq: head.head_seq,
        head_hash: head.head_hash.clone(),
        broken: None,
    };
    // `None` = trust the first record's prev_hash (a start after the anchor).
    let mut prev: Option<Vec<u8>> = (start == head.anchor_seq).then(|| head.anchor_hash.clone());
    let mut expected_seq = start;
    while expected_seq <= head.head_seq {
        let page = records_from(pool, owner_id, expected_seq, VERIFY_PAGE).await?;
        let mut progressed = false;
        for record in page {
            if record.seq > head.head_seq {
                break;
            }
            progressed = true;
            if record.seq != expected_seq {
                outcome.broken = Some((
                    expected_seq,
                    Break::Removed,
                    format!(
                        "record {expected_seq} is missing (the next one present is {})",
                        record.seq
                    ),
                ));
                return Ok(outcome);
            }
            if let Some(p) = &prev
                && *p != record.prev_hash
            {
                outcome.broken = Some((
                    record.seq,
                    Break::Edited,
                    "its prev_hash is not the hash of the record before it".into(),
                ));
                return Ok(outcome);
            }
            if record.expected_hash().as_slice() != record.hash.as_slice() {
                outcome.broken = Some((
                    record.seq,
                    Break::Edited,
                    "its fields do not hash to its stored hash".into(),
                ));
                return Ok(outcome);
            }
            outcome.records += 1;
            expected_seq = record.seq + 1;
            prev = Some(record.hash);
        }
        if !progressed {
            break;
        }
    }
    if expected_seq <= head.head_seq {
        outcome.broken = Some((
            expected_seq,
            Break::Removed,
            format!(
                "records {expected_seq} to {} are missing (the head names {})",
                head.head_seq, head.head_seq
            ),
        ));
    } else if head.head_seq >= start && prev.as_deref() != Some(head.head_hash.as_slice()) {
        outcome.broken = Some((
            head.head_seq,
            Break::Edited,
            "the newest record's hash is not the chain head's".into(),
        ));
    }
    Ok(outcome)
}

/// Deletes records older than `days` days (0 = keep forever) in bounded batches, the
/// oldest of each chain first, and moves each touched chain's anchor to the first
/// retained record in the same statement, so [`verify`] starts there.
/// Within a chain times never decrease with the sequence number ([`append`]), so what
/// is older than the cut-off is a prefix of the chain. Several replicas may run it at
/// once (`SKIP LOCKED`; the anchor only moves forward).
pub async fn purge(pool: &sqlx::PgPool, days: u32) -> Result<u64, sqlx::Error> {
    if days == 0 {
        return Ok(0);
    }
    let age = f64::from(days) * 86_400.0;
    let mut total = 0;
    loop {
        let n = sqlx::query!(
            r#"WITH doomed AS (
                   SELECT a.owner_id, a.seq FROM audit_log a
                    WHERE a.at < now() - make_interval(secs => $1)
                    ORDER BY a.at
                    LIMIT $2 FOR UPDATE SKIP LOCKED),
               gone AS (
                   DELETE FROM audit_log l USING doomed d
                    WHERE l.owner_id = d.owner_id AND l.seq = d.seq
                   RETURNING l.owner_id, l.seq, l.hash),
               last AS (
                   SELECT DISTINCT ON (owner_id) owner_id, seq, hash
                     FROM gone ORDER BY owner_id, seq DESC),
               moved AS (
                   UPDATE audit_chain_heads h SET anchor_seq = last.seq + 1, anchor_hash = last.hash
                     FROM last
                    WHERE h.owner_id = last.owner_id AND h.anchor_seq <= last.seq
                   RETURNING 1)
               SELECT (SELECT count(*) FROM gone) AS "deleted!""#,
            age,
            PURGE_BATCH
        )
        .fetch_one(pool)
        .await?
        .deleted;
        let n = u64::try_from(n).unwrap_or(0);
        total += n;
        if n < PURGE_BATCH as u64 {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> AuditRecordRow {
        AuditRecordRow {
            owner_id: "alice".into(),
            seq: 1,
            id: Uuid::nil(),
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap_or_default(),
            actor_kind: "user".into(),
            actor_id: "alice".into(),
            client_addr: None,
            request_id: Some("r1".into()),
            action: "webhook.created".into(),
            resource_type: "webhook".into(),
            resource_id: "w1".into(),
            changes: serde_json::json!({"fields": ["url"], "a": {"z": 1, "b": [true, null]}}),
            prev_hash: GENESIS.to_vec(),
            hash: Vec::new(),
        }
    }

    /// Key order does not change the bytes (jsonb reorders keys); values do.
    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut out = String::new();
        canonical_json(
            &serde_json::json!({"b": {"y": 1, "x": "é\""}, "a": [2, {"d": 1, "c": 2}]}),
            &mut out,
        );
        assert_eq!(out, r#"{"a":[2,{"c":2,"d":1}],"b":{"x":"é\"","y":1}}"#);
    }

    /// Every field is covered: changing any one changes the hash; an absent value
    /// differs from an empty one.
    #[test]
    fn every_field_changes_the_hash() {
        let base = row().expected_hash();
        let mut changed = row();
        changed.request_id = Some(String::new());
        assert_ne!(changed.expected_hash(), base);
        let mut changed = row();
        changed.at += chrono::Duration::microseconds(1);
        assert_ne!(changed.expected_hash(), base);
        let mut changed = row();
        changed.changes = serde_json::json!({"fields": ["events"]});
        assert_ne!(changed.expected_hash(), base);
        let mut changed = row();
        changed.prev_hash = vec![1; 32];
        assert_ne!(changed.expected_hash(), base);
        assert_eq!(row().expected_hash(), base);
        assert_eq!(hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
