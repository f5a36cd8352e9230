//! Submissions streamed as NDJSON: the line splitter and the streaming submission.

use super::*;

/// Splits a byte stream into NDJSON lines without holding more than one partial line.
pub(super) struct LineSplitter {
    pub(super) pending: Vec<u8>,
    pub(super) line: usize,
    pub(super) bytes: u64,
    pub(super) max_bytes: u64,
}

impl LineSplitter {
    pub(super) fn new(max_bytes: u64) -> Self {
        Self {
            pending: Vec::new(),
            line: 0,
            bytes: 0,
            max_bytes,
        }
    }

    /// Feeds one frame; calls `each(line_number, order_text)` for every complete,
    /// non-blank line.
    pub(super) fn feed(
        &mut self,
        frame: &[u8],
        each: &mut impl FnMut(usize, &str) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        self.bytes += frame.len() as u64;
        if self.bytes > self.max_bytes {
            return Err(ApiError::PayloadTooLarge(format!(
                "an NDJSON batch is at most {} bytes",
                self.max_bytes
            )));
        }
        let mut rest = frame;
        while let Some(end) = rest.iter().position(|b| *b == b'\n') {
            let (head, tail) = rest.split_at(end);
            if self.pending.is_empty() {
                self.line(head, each)?;
            } else {
                self.pending.extend_from_slice(head);
                let joined = std::mem::take(&mut self.pending);
                self.line(&joined, each)?;
            }
            rest = &tail[1..];
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() > MAX_ORDER_BYTES {
            return Err(ApiError::PayloadTooLarge(format!(
                "line {} is longer than {MAX_ORDER_BYTES} bytes",
                self.line + 1
            )));
        }
        Ok(())
    }

    /// The last line, when the body does not end with a newline.
    pub(super) fn finish(
        &mut self,
        each: &mut impl FnMut(usize, &str) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        let last = std::mem::take(&mut self.pending);
        if !last.is_empty() {
            self.line(&last, each)?;
        }
        Ok(())
    }

    pub(super) fn line(
        &mut self,
        bytes: &[u8],
        each: &mut impl FnMut(usize, &str) -> Result<(), ApiError>,
    ) -> Result<(), ApiError> {
        self.line += 1;
        let line = self.line;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ApiError::MalformedBody(format!("line {line} is not valid UTF-8")))?;
        let text = text.trim();
        if text.is_empty() {
            return Ok(());
        }
        if let Err(e) = serde_json::from_str::<&RawValue>(text) {
            return Err(ApiError::MalformedBody(format!(
                "line {line} is not valid JSON: {e}"
            )));
        }
        each(line, text)
    }
}

/// Submits a batch streamed as NDJSON (one order per line), reading the body frame by
/// frame: chunks are written while the upload is still arriving, so memory stays at a
/// few chunks whatever the size. A line that is not JSON refuses the whole batch
/// (`malformed_body`, naming the line); an order that is JSON but invalid becomes a
/// `failed` result like in a JSON batch.
pub async fn submit_ndjson<S, E>(
    state: &AppState,
    caller: &Caller,
    mut body: S,
    options: SubmitOptions,
) -> Result<Submitted, ApiError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    caller.require(Scope::BulkOrdersWrite)?;
    let max = state.config().max_ndjson_orders;
    let mut splitter = LineSplitter::new(state.config().max_ndjson_bytes);
    let read_error = |e: E| ApiError::MalformedBody(format!("reading the request body: {e}"));

    if options.validate_only {
        let mut texts: Vec<String> = Vec::new();
        let mut collect = |line: usize, text: &str| {
            check_order_structure(text, || format!("/lines/{line}"))?;
            if texts.len() == max {
                return Err(too_many_orders("/lines", max));
            }
            texts.push(text.to_owned());
            Ok(())
        };
        while let Some(frame) = body.next().await {
            splitter.feed(&frame.map_err(read_error)?, &mut collect)?;
        }
        splitter.finish(&mut collect)?;
        if texts.is_empty() {
            return Err(empty_batch("/lines"));
        }
        return Ok(Submitted::Validated(validation_report(
            texts.iter().map(String::as_str),
        )));
    }

    let key = options.idempotency_key.as_deref();
    check_idempotency_key(key)?;
    let (mut tx, batch_id, existing) = match begin_batch(state, caller, key, None).await? {
        Begun::Fresh { tx, batch_id } => (Some(tx), batch_id, None),
        Begun::Existing(existing) => (None, existing.id, Some(existing)),
    };
    let mut writer = ChunkWriter::new(tx.is_some());
    let inserter = tx.take().map(|tx| ChunkInserter::start(tx, batch_id));
    while let Some(frame) = body.next().await {
        let frame = frame.map_err(read_error)?;
        splitter.feed(&frame, &mut |line, text| {
            push_line(&mut writer, max, line, text)
        })?;
        if let Some(inserter) = &inserter
            && writer.ready_orders.len() >= CHUNKS_PER_INSERT
            && let Some(chunks) = writer.take_ready()
            && !inserter.send(chunks).await
        {
            break;
        }
    }
    splitter.finish(&mut |line, text| push_line(&mut writer, max, line, text))?;
    if writer.total == 0 {
        return Err(empty_batch("/lines"));
    }
    let Some(inserter) = inserter else {
        let existing = existing.ok_or_else(|| ApiError::internal("no batch and no transaction"))?;
        return replay(state, existing, &writer.finish_hash()).await;
    };
    writer.close_chunk();
    if let Some(chunks) = writer.take_ready() {
        inserter.send(chunks).await;
    }
    let mut tx = inserter.finish().await?;
    let total = writer.total;
    crate::app::audit::record(
        &mut tx,
        caller,
        crate::app::audit::AuditEntry::new("bulk_batch.submitted", "bulk_batch", batch_id)
            .detail("orders", total),
    )
    .await?;
    let batch = commit_batch(state, tx, batch_id, total, &writer.finish_hash()).await?;
    Ok(Submitted::Accepted {
        batch,
        replay: false,
    })
}

pub(super) fn push_line(
    writer: &mut ChunkWriter,
    max: usize,
    line: usize,
    text: &str,
) -> Result<(), ApiError> {
    check_order_structure(text, || format!("/lines/{line}"))?;
    if writer.total == max {
        return Err(too_many_orders("/lines", max));
    }
    writer.push(text);
    Ok(())
}
