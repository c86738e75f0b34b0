// The public API as the page uses it: the API key, JSON calls, errors, and a job's events.
// URLs are relative to the page's <base href> (the app's root), so a route prefix works.

const KEY_STORAGE = "tessera.apiKey";

export function getKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setKey(key) {
  if (key) localStorage.setItem(KEY_STORAGE, key);
  else localStorage.removeItem(KEY_STORAGE);
}

/** The app's root URL (no trailing slash): what a curl or SDK call would be sent to. */
export function baseUrl() {
  return new URL(".", document.baseURI).href.replace(/\/$/, "");
}

/** An API error: the body's `error.message` and `code`, the status, and Retry-After (s). */
export class ApiError extends Error {
  constructor(status, message, code = "", retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** The text a person should read for an error (the server's own message when it sent one). */
export function errorText(err) {
  if (!(err instanceof ApiError)) return `Could not reach the server: ${err.message || err}`;
  if (err.status === 401) return `${err.message}. Enter the server's API key (API key, at the top).`;
  if (err.status === 429) {
    const wait = err.retryAfter ? ` Retry in ${err.retryAfter} s (Retry-After).` : "";
    return `The server is busy: ${err.message}.${wait}`;
  }
  return err.message;
}

function headers(extra = {}) {
  const key = getKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

async function toError(res) {
  let message = `${res.status} ${res.statusText}`;
  let code = "";
  try {
    const body = await res.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code || "";
    }
  } catch {
    // not JSON: keep the status line
  }
  const retry = res.headers.get("Retry-After");
  return new ApiError(res.status, message, code, retry ? Number(retry) : null);
}

/** fetch(path) with the key; the parsed JSON body, or an ApiError. */
export async function request(path, { method = "GET", json, form, signal, extraHeaders } = {}) {
  const init = { method, signal, headers: headers(extraHeaders) };
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  } else if (form !== undefined) {
    init.body = form; // multipart; the browser sets the boundary
  }
  const res = await fetch(path, init);
  if (!res.ok) throw await toError(res);
  return res.json();
}

export const listModels = () => request("v1/models");
export const submitJob = (params, idempotencyKey) =>
  request("v1/jobs", {
    method: "POST",
    json: params,
    extraHeaders: { "Idempotency-Key": idempotencyKey },
  });
export const getJob = (id, includeResult = true) =>
  request(`v1/jobs/${encodeURIComponent(id)}?include_result=${includeResult}`);
export const cancelJob = (id) => request(`v1/jobs/${encodeURIComponent(id)}`, { method: "DELETE" });
export const variations = (form) => request("v1/images/variations", { method: "POST", form });
export const edit = (form) => request("v1/images/edits", { method: "POST", form });
export const caption = (form) => request("v1/images/captions", { method: "POST", form });

/**
 * A job's Server-Sent Events, read with fetch (EventSource cannot send the key).
 * Calls onEvent(name, data) for each `progress`, `done` and `error` event; resolves when the
 * stream ends. A dropped stream is resumed from the last event id (Last-Event-ID).
 */
export async function watchJob(id, onEvent, signal) {
  let lastId = null;
  for (let attempt = 0; attempt < 5; attempt += 1) {
    const extra = lastId ? { "Last-Event-ID": lastId } : {};
    const res = await fetch(`v1/jobs/${encodeURIComponent(id)}/events`, {
      headers: headers(extra),
      signal,
    });
    if (!res.ok) throw await toError(res);
    let ended = false;
    try {
      for await (const ev of parseSse(res.body)) {
        if (ev.id) lastId = ev.id;
        onEvent(ev.event, ev.data);
        if (ev.event === "done" || ev.event === "error") ended = true;
      }
    } catch (err) {
      if (signal && signal.aborted) throw err;
    }
    if (ended || (signal && signal.aborted)) return;
    await new Promise((r) => setTimeout(r, 500 * (attempt + 1)));
  }
  throw new ApiError(0, "lost the job's event stream");
}

async function* parseSse(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const ev = { event: "message", data: "", id: null };
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue; // comments are keepalives
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") ev.event = val;
        else if (field === "data") ev.data += (ev.data ? "\n" : "") + val;
        else if (field === "id") ev.id = val;
      }
      if (ev.data) yield { ...ev, data: JSON.parse(ev.data) };
    }
  }
}
