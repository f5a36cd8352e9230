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
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = Math.round(100 * e.loaded / e.total); };
    xhr.onload = () => {
      let answer = {};
      try { answer = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 202 && answer.location) {
        bar.value = 100;
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
