// Async jobs: submit, follow the event stream (stage, steps, previews), cancel, show results.
// Several jobs may run; the output panel shows one of them (the "viewed" job).

import * as api from "./api.js";
import * as history from "./history.js";
import { showPreviews, showResult, clear } from "./images.js";
import { showSeedUsed } from "./form.js";
import { showError, clearError } from "./notice.js";

const $ = (id) => document.getElementById(id);
const watching = new Map(); // job id → AbortController
let viewed = null; // id of the job the output panel shows

function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function setStatus(stage, counter = "", progress = null) {
  $("stage").textContent = stage;
  $("step-counter").textContent = counter;
  const bar = $("progress");
  bar.hidden = progress === null;
  if (progress !== null) {
    bar.max = Math.max(1, progress.total_steps);
    bar.value = progress.step;
  }
}

function setBusy(busy) {
  $("images").setAttribute("aria-busy", String(busy));
  $("cancel").disabled = !busy;
}

const title = (s) => s.charAt(0).toUpperCase() + s.slice(1);

function onProgress(id, data) {
  history.update(id, { state: data.state });
  if (id !== viewed) return;
  const p = data.progress;
  const stage = data.cancel_requested ? "Cancelling" : title(data.state);
  const where = p.stage ? ` · ${p.stage}` : "";
  const counter = p.total_steps ? `step ${p.step} of ${p.total_steps}` : "";
  setStatus(`${stage}${where}`, counter, p.total_steps ? p : null);
  setBusy(true);
  if (data.previews.length) showPreviews($("images"), data.previews, p.step, p.total_steps);
}

function onDone(id, job) {
  const seed = job.result ? job.result.seed : undefined;
  const fields = { state: job.state, error: job.error || null };
  if (seed !== undefined) fields.seed = seed;
  history.update(id, fields);
  if (id === viewed) render(job);
}

/** Show a finished or running job in the output panel. */
function render(job) {
  setBusy(history.ACTIVE.has(job.state));
  if (job.state === "succeeded" && job.result) {
    setStatus("Done", `${job.result.data.length} image(s) in ${Math.round(job.result.elapsed_ms)} ms`);
    showResult($("images"), job.result, job.request.prompt);
    showSeedUsed(job.result.seed);
  } else if (job.state === "succeeded") {
    setStatus("Done", "the result has expired");
    clear($("images"));
  } else if (job.state === "cancelled") {
    setStatus("Cancelled");
  } else if (job.state === "failed") {
    setStatus("Failed");
    showError(job.error || "the job failed");
  } else {
    setStatus(title(job.state), "", job.progress.total_steps ? job.progress : null);
  }
}

function follow(id) {
  if (watching.has(id)) return;
  const controller = new AbortController();
  watching.set(id, controller);
  api
    .watchJob(
      id,
      (name, data) => {
        if (name === "progress") onProgress(id, data);
        else if (name === "done") onDone(id, data);
        else if (name === "error" && id === viewed) showError(data.message || "stream error");
      },
      controller.signal,
    )
    .catch((err) => {
      if (!controller.signal.aborted && id === viewed) showError(api.errorText(err));
    })
    .finally(() => {
      watching.delete(id);
      if (id === viewed) setBusy(false);
    });
}

/** Submit the form's request as a job and follow it. */
export async function submit(params) {
  clearError();
  setStatus("Submitting");
  let job;
  try {
    job = await api.submitJob(params, randomKey());
  } catch (err) {
    setStatus("Idle");
    showError(api.errorText(err));
    return;
  }
  history.add(job, params);
  viewed = job.id;
  showSeedUsed(null);
  clear($("images"));
  render(job);
  follow(job.id);
}

/** Cancel a job (the viewed one by default); its stream then reports "cancelled". */
export async function cancel(id = viewed) {
  if (!id) return;
  try {
    const job = await api.cancelJob(id);
    // The job's stream can report its end before this reply (sent while it still ran)
    // arrives: a final state the page already knows is the newer one, so keep it.
    const known = history.all().find((e) => e.id === id);
    if (known && !history.ACTIVE.has(known.state)) return;
    history.update(id, { state: job.state });
    if (id === viewed && history.ACTIVE.has(job.state)) setStatus("Cancelling");
    else if (id === viewed) render(job);
  } catch (err) {
    showError(api.errorText(err));
  }
}

/** Show a job from the history: follow it if it still runs, else fetch its result. */
export async function view(entry) {
  clearError();
  viewed = entry.id;
  clear($("images"));
  try {
    const job = await api.getJob(entry.id);
    onDone(entry.id, job); // records its state; renders it (it is the viewed job)
    if (history.ACTIVE.has(job.state)) follow(entry.id);
  } catch (err) {
    setStatus("Idle");
    if (err instanceof api.ApiError && err.status === 404) {
      history.update(entry.id, { state: "expired" });
    }
    showError(api.errorText(err));
  }
}

/** On load: refresh the states of jobs this browser left queued or running. */
export async function resume() {
  for (const entry of history.all().filter((e) => history.ACTIVE.has(e.state))) {
    try {
      const job = await api.getJob(entry.id, false);
      history.update(entry.id, { state: job.state });
      if (history.ACTIVE.has(job.state)) follow(entry.id);
    } catch (err) {
      if (err instanceof api.ApiError && err.status === 404) {
        history.update(entry.id, { state: "expired" });
      }
    }
  }
}
