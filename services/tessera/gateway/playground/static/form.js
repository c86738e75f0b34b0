// The generate form: filled from /v1/models, read into a request, refilled from a past job.
// Bounds are the server's: the form sends what was typed and shows the server's message.

// Routes that sample image tokens (temperature / top-k apply); the others denoise (steps).
const TOKEN_ROUTES = new Set(["ar", "mixed"]);
// Routes that are not text-to-image (kept out of the generate form's route list).
const IMAGE_IN_ROUTES = new Set(["edit", "edits"]);
const SIZE_FACTORS = [1, 2, 4, 8, 16];
const MAX_SIDE = 1024;
const NUMBER_FIELDS = ["n", "steps", "guidance_scale", "temperature", "top_k"];

const $ = (id) => document.getElementById(id);

function option(value, text) {
  const el = document.createElement("option");
  el.value = value;
  el.textContent = text;
  return el;
}

/** The sizes a model can return: its native size and integer upscales of it. */
export function sizeOptions(select, native) {
  select.replaceChildren();
  for (const f of SIZE_FACTORS) {
    const side = native * f;
    if (side > MAX_SIDE) break;
    const label = f === 1 ? `${side}×${side} (native)` : `${side}×${side}`;
    select.append(option(`${side}x${side}`, label));
  }
}

/** Fill route, model and size from the models the server reports. */
export function fillModels(models) {
  const model = $("model");
  model.replaceChildren(...models.map((m) => option(m.id, m.id)));
  $("model-field").hidden = models.length < 2;
  const pick = () => models.find((m) => m.id === model.value) || models[0];
  const refill = () => {
    const m = pick();
    const route = $("route");
    const keep = route.value;
    const routes = m.routes.filter((r) => !IMAGE_IN_ROUTES.has(r));
    route.replaceChildren(...routes.map((r) => option(r, r)));
    if (routes.includes(keep)) route.value = keep;
    for (const id of ["size", "var-size"]) {
      const keepSize = $(id).value;
      sizeOptions($(id), m.image_size);
      if (keepSize && [...$(id).options].some((o) => o.value === keepSize)) $(id).value = keepSize;
    }
    showRouteFields();
  };
  model.onchange = refill;
  refill();
}

/** Show the fields that apply to the chosen route; hidden ones are not sent. */
export function showRouteFields() {
  const tokens = TOKEN_ROUTES.has($("route").value);
  for (const el of document.querySelectorAll("[data-for]")) {
    el.hidden = (el.dataset.for === "tokens") !== tokens;
  }
}

export function seedIsRandom() {
  return $("seed-random").checked;
}

function setRandomSeed(random) {
  $("seed-random").checked = random;
  $("seed").disabled = random;
}

/** A seed as JSON can carry it: a number when exact, else its digits (the server parses). */
function seedValue(text) {
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : text;
}

/** The request the form describes (unset fields left out: the server's defaults apply). */
export function readParams() {
  const params = { prompt: $("prompt").value, route: $("route").value };
  if (!$("model-field").hidden && $("model").value) params.model = $("model").value;
  if ($("size").value) params.size = $("size").value;
  for (const name of NUMBER_FIELDS) {
    const input = $(name);
    if (input.closest("[hidden]") || input.value === "") continue;
    params[name] = Number(input.value);
  }
  if (!seedIsRandom() && $("seed").value !== "") params.seed = seedValue($("seed").value);
  return params;
}

/** Put a past request back in the form; ``seed``: also reuse its seed (else random). */
export function applyParams(params, seed = null) {
  if (params.prompt !== undefined) $("prompt").value = params.prompt;
  if (params.model && [...$("model").options].some((o) => o.value === params.model)) {
    $("model").value = params.model;
    $("model").onchange();
  }
  if ([...$("route").options].some((o) => o.value === params.route)) {
    $("route").value = params.route;
  }
  showRouteFields();
  if (params.size && [...$("size").options].some((o) => o.value === params.size)) {
    $("size").value = params.size;
  }
  for (const name of NUMBER_FIELDS) {
    const value = params[name];
    $(name).value = value === undefined || value === null ? (name === "n" ? 1 : "") : value;
  }
  if (seed !== null && seed !== undefined) {
    setRandomSeed(false);
    $("seed").value = String(seed);
  } else {
    setRandomSeed(true);
  }
}

/** Wire the route and seed controls; ``onChange`` runs on any edit. */
export function initForm(onChange) {
  $("route").addEventListener("change", showRouteFields);
  $("seed-random").addEventListener("change", () => {
    setRandomSeed($("seed-random").checked);
    if (!$("seed-random").checked) $("seed").focus();
  });
  $("generate-form").addEventListener("input", onChange);
  $("generate-form").addEventListener("change", onChange);
}

/** Show the seed a job used (the field keeps the user's choice). */
export function showSeedUsed(seed) {
  $("seed-used").textContent = seed === null || seed === undefined ? "" : `Seed used: ${seed}`;
}
