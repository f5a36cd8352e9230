// Portico portal: the only script, compiled into the gateway and loaded as a module
// (the Content-Security-Policy forbids inline script). It adds copy buttons and the
// batch upload with progress; pages work without it otherwise.

const csrf = () => document.querySelector("main")?.dataset.csrf || "";

// Copy buttons: <button data-copy="element-id">.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  try {
    await navigator.clipboard.writeText(source.textContent);
    button.textContent = "Copied";
  } catch {
    button.textContent = "Select and copy";
  }
});

// Batch upload: sends the file as the request body (NDJSON streamed by the gateway,
// or a JSON array) with upload progress, then opens the batch's page.
const upload = document.getElementById("upload-form");
if (upload) {
  upload.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = upload.querySelector("input[type=file]").files[0];
    const status = document.getElementById("upload-status");
    const bar = document.getElementById("upload-progress");
    if (!file) { status.textContent = "Choose a file first."; return; }
    const json = file.name.endsWith(".json") || file.type === "application/json";
    const xhr = new XMLHttpRequest();
    xhr.open("POST", upload.action);
    xhr.setRequestHeader("content-type", json ? "application/json" : "application/x-ndjson");
    xhr.setRequestHeader("x-csrf-token", upload.dataset.csrf || csrf());
    bar.hidden = false;
    const setBar = (percent) => { bar.value = percent; bar.setAttribute("aria-valuenow", String(percent)); };
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) setBar(Math.round(100 * e.loaded / e.total)); };
    xhr.onload = () => {
      let answer = {};
      try { answer = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 202 && answer.location) {
        setBar(100);
        window.location.assign(answer.location);
      } else {
        status.textContent = answer.error || `Upload failed (HTTP ${xhr.status}).`;
      }
    };
    xhr.onerror = () => { status.textContent = "The upload did not reach the server; check the connection and try again."; };
    status.textContent = `Uploading ${file.name}…`;
    xhr.send(file);
  });
}

// Live updates: a single-use ticket from the portal (the session's caller), then the
// live WebSocket (/api/v1/live). The delivery log of a webhook page gains rows and
// changes statuses as attempts happen; batch progress bars move. Everything is written
// with textContent, never as HTML.
const deliveries = document.getElementById("deliveries");
const batchBars = () => document.querySelectorAll("progress[data-batch-id]");

const badgeClass = (status) => {
  if (["succeeded", "active", "completed"].includes(status)) return "badge ok";
  if (["failed", "disabled", "failing", "cancelled"].includes(status)) return "badge bad";
  if (["retrying", "completed_with_errors", "duplicate", "unprocessed"].includes(status)) return "badge warn";
  return "badge";
};

const setBadge = (cell, status) => {
  if (!cell) return;
  let badge = cell.querySelector(".badge");
  if (!badge) { badge = document.createElement("span"); cell.replaceChildren(badge); }
  badge.className = badgeClass(status);
  badge.textContent = status;
};

const flash = (el) => { el.classList.remove("live-flash"); void el.offsetWidth; el.classList.add("live-flash"); };

// A new delivery joins the log only when it matches the page's filter (status,
// event type, time range: the table's data-filter-* attributes) and the page shows
// the newest deliveries (not an older page).
function matchesFilter(m) {
  const f = deliveries.dataset;
  if (new URLSearchParams(location.search).get("cursor")) return false;
  if (f.filterStatus && f.filterStatus !== m.status) return false;
  if (f.filterEventType && f.filterEventType !== m.eventType) return false;
  const at = Date.parse(m.occurredAt || "") || Date.now();
  if (f.filterFrom && at < Date.parse(f.filterFrom)) return false;
  if (f.filterTo && at >= Date.parse(f.filterTo)) return false;
  return true;
}

function deliveryRow(m) {
  if (!matchesFilter(m)) return null;
  const body = deliveries.tBodies[0];
  body.querySelector(".empty-row")?.remove();
  const row = document.createElement("tr");
  row.dataset.deliveryId = m.deliveryId;
  const cells = ["created", "event", "status", "attempts", "response", "actions"].map((name) => {
    const td = document.createElement("td");
    if (name === "status" || name === "attempts") td.className = name;
    row.append(td);
    return td;
  });
  const link = document.createElement("a");
  link.href = `/portal/webhooks/${m.webhookId}/deliveries/${m.deliveryId}`;
  link.textContent = (m.occurredAt || new Date().toISOString()).replace("T", " ").slice(0, 19) + " UTC";
  cells[0].append(link);
  cells[1].textContent = m.eventType || "";
  cells[3].textContent = "0";
  body.prepend(row);
  return row;
}

function onDelivery(m) {
  if (!deliveries || m.webhookId !== deliveries.dataset.webhookId) return;
  let row = deliveries.querySelector(`tr[data-delivery-id="${CSS.escape(m.deliveryId)}"]`);
  if (!row) row = deliveryRow(m);
  if (!row) return;
  setBadge(row.querySelector("td.status"), m.status);
  if (m.attempt) row.querySelector("td.attempts").textContent = String(m.attempt);
  const response = row.children[4];
  if (response && (m.httpStatus || m.errorKind)) response.textContent = m.httpStatus ? String(m.httpStatus) : m.errorKind;
  flash(row);
}

function onBatch(m) {
  for (const bar of batchBars()) {
    if (bar.dataset.batchId !== m.batchId) continue;
    bar.max = Math.max(m.total || 0, 1);
    bar.value = m.processed || 0;
    bar.setAttribute("aria-valuemax", String(bar.max));
    bar.setAttribute("aria-valuenow", String(bar.value));
    bar.setAttribute("aria-label", `${m.processed} of ${m.total} orders processed`);
    const text = bar.nextElementSibling;
    if (text && text.classList.contains("progress-text")) text.textContent = `${m.processed} / ${m.total}`;
    const holder = bar.closest("tr") || document;
    setBadge(holder.querySelector(".status"), m.status);
    // A batch's own page: once it is final, reload for its counts and results.
    const final = ["completed", "completed_with_errors", "failed", "cancelled"].includes(m.status);
    if (final && !bar.closest("tr")) setTimeout(() => location.reload(), 500);
  }
}

async function startLive() {
  document.body.dataset.live = "connecting";
  let answer;
  try {
    const res = await fetch("/portal/live-ticket", { method: "POST", headers: { "x-csrf-token": csrf() }, credentials: "same-origin" });
    if (!res.ok) { document.body.dataset.live = "off"; return; }
    answer = await res.json();
  } catch { document.body.dataset.live = "off"; return; }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/api/v1/live?batch=true&ticket=${encodeURIComponent(answer.ticket)}`);
  ws.onopen = () => {
    const subscribe = { op: "subscribe", topics: [] };
    if (deliveries) { subscribe.topics.push("deliveries"); subscribe.webhookId = deliveries.dataset.webhookId; if (deliveries.dataset.filterEventType) subscribe.eventType = deliveries.dataset.filterEventType; }
    const bars = batchBars();
    if (bars.length) { subscribe.topics.push("batches"); if (bars.length === 1) subscribe.batchId = bars[0].dataset.batchId; }
    ws.send(JSON.stringify(subscribe));
  };
  // ?batch=true: a message holds one or more pushed messages, one JSON object per line.
  ws.onmessage = (event) => {
    for (const line of event.data.split("\n")) {
      let m;
      try { m = JSON.parse(line); } catch { continue; }
      if (m.type === "subscribed") document.body.dataset.live = "on";
      else if (m.type === "delivery.attempt" || m.type === "delivery.state") onDelivery(m);
      else if (m.type === "batch.progress") onBatch(m);
    }
  };
  ws.onclose = () => { document.body.dataset.live = "closed"; };
}

if ((deliveries || batchBars().length) && window.WebSocket && csrf()) startLive();
