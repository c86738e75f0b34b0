// The queue/history panel: this browser's jobs (kept in localStorage), with their parameters.

const STORAGE = "tessera.history";
const MAX_ENTRIES = 30;
export const ACTIVE = new Set(["queued", "running"]);

let entries = load();
let handlers = { show() {}, reuse() {}, cancel() {} };

function load() {
  try {
    const value = JSON.parse(localStorage.getItem(STORAGE) || "[]");
    return Array.isArray(value) ? value : [];
  } catch {
    return [];
  }
}

function save() {
  localStorage.setItem(STORAGE, JSON.stringify(entries.slice(0, MAX_ENTRIES)));
}

export function all() {
  return entries;
}

/** Add a submitted job at the top. */
export function add(job, params) {
  entries = [
    { id: job.id, params, state: job.state, seed: params.seed ?? null, createdAt: Date.now() },
    ...entries.filter((e) => e.id !== job.id),
  ].slice(0, MAX_ENTRIES);
  save();
  render();
}

/** Update a job's entry (state, seed used, error). */
export function update(id, fields) {
  const entry = entries.find((e) => e.id === id);
  if (!entry) return;
  Object.assign(entry, fields);
  save();
  render();
}

export function clearAll() {
  entries = entries.filter((e) => ACTIVE.has(e.state));
  save();
  render();
}

export function init(callbacks) {
  handlers = { ...handlers, ...callbacks };
  render();
}

function button(text, label, onClick, disabled = false) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.disabled = disabled;
  b.addEventListener("click", onClick);
  return b;
}

function summary(p, seed) {
  const parts = [p.route, `n=${p.n ?? 1}`];
  if (p.size) parts.push(p.size);
  if (p.steps !== undefined) parts.push(`steps=${p.steps}`);
  if (p.guidance_scale !== undefined) parts.push(`guidance=${p.guidance_scale}`);
  if (p.temperature !== undefined) parts.push(`temperature=${p.temperature}`);
  if (p.top_k !== undefined) parts.push(`top-k=${p.top_k}`);
  parts.push(seed === null || seed === undefined ? "seed random" : `seed ${seed}`);
  return parts.join(" · ");
}

function render() {
  const list = document.getElementById("history-list");
  if (!list) return;
  const items = entries.map((e) => {
    const li = document.createElement("li");
    li.className = `job state-${e.state}`;
    li.dataset.jobId = e.id;
    const state = document.createElement("span");
    state.className = "badge";
    state.textContent = e.state;
    const prompt = document.createElement("span");
    prompt.className = "prompt";
    prompt.textContent = e.params.prompt;
    const params = document.createElement("span");
    params.className = "params muted small";
    params.textContent = summary(e.params, e.seed);
    const actions = document.createElement("span");
    actions.className = "actions";
    const name = `job “${e.params.prompt.slice(0, 40)}”`;
    actions.append(
      button("Show", `Show ${name}`, () => handlers.show(e)),
      button("Reuse settings", `Reuse the settings of ${name}`, () => handlers.reuse(e, false)),
      button("Reuse seed", `Reuse the settings and seed of ${name}`, () => handlers.reuse(e, true),
        e.seed === null || e.seed === undefined),
    );
    if (ACTIVE.has(e.state)) actions.append(button("Cancel", `Cancel ${name}`, () => handlers.cancel(e)));
    if (e.error) {
      const err = document.createElement("span");
      err.className = "small error-text";
      err.textContent = e.error;
      li.append(state, prompt, params, err, actions);
    } else {
      li.append(state, prompt, params, actions);
    }
    return li;
  });
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "muted small";
    li.textContent = "No jobs yet.";
    items.push(li);
  }
  list.replaceChildren(...items);
}
