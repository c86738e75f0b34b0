// Image in: edit an uploaded PNG by an instruction, with an optional mask
// (POST /v1/images/edits), and caption it (POST /v1/images/captions). Both synchronous: a
// busy state, then the images / captions or the server's message. Shown only when a served
// model edits (GET /v1/models: "edits").

import * as api from "./api.js";
import { showResult } from "./images.js";
import { showError, clearError } from "./notice.js";

const $ = (id) => document.getElementById(id);
let sourceUrl = null;

function source() {
  return $("edit-image").files[0] || null;
}

function preview() {
  const file = source();
  if (sourceUrl) URL.revokeObjectURL(sourceUrl);
  sourceUrl = file ? URL.createObjectURL(file) : null;
  const img = $("edit-source");
  img.hidden = !file;
  if (file) {
    img.src = sourceUrl;
    img.alt = `Source image: ${file.name}`;
  }
}

function setBusy(busy, what) {
  for (const id of ["edit-submit", "caption-submit"]) $(id).disabled = busy;
  $("edit-submit").textContent = busy && what === "edit" ? "Editing…" : "Edit";
  $("caption-submit").textContent = busy && what === "caption" ? "Captioning…" : "Caption";
  $("images").setAttribute("aria-busy", String(busy));
}

function needSource() {
  if (source()) return false;
  showError("Choose a source image first.");
  $("edit-image").focus();
  return true;
}

async function run(what, call) {
  clearError();
  if (needSource()) return;
  setBusy(true, what);
  $("stage").textContent = what === "edit" ? "Editing" : "Captioning";
  $("step-counter").textContent = "";
  $("progress").hidden = true;
  try {
    await call();
  } catch (err) {
    $("stage").textContent = "Idle";
    showError(api.errorText(err));
  } finally {
    setBusy(false, what);
  }
}

async function edit(event) {
  event.preventDefault();
  await run("edit", async () => {
    const file = source();
    const form = new FormData();
    form.append("image", file, file.name || "image.png");
    form.append("prompt", $("edit-prompt").value);
    const mask = $("edit-mask").files[0];
    if (mask) form.append("mask", mask, mask.name || "mask.png");
    for (const id of ["edit-n", "edit-seed", "edit-image-guidance", "edit-guidance"]) {
      if ($(id).value !== "") form.append($(id).name, $(id).value);
    }
    const result = await api.edit(form);
    const what = `${file.name || "the image"} edited: ${$("edit-prompt").value}`;
    showResult($("images"), result, what, "edit");
    $("stage").textContent = "Done";
    $("step-counter").textContent = `${result.data.length} edit(s), seed ${result.seed}`;
  });
}

async function caption() {
  await run("caption", async () => {
    const file = source();
    const form = new FormData();
    form.append("image", file, file.name || "image.png");
    const body = await api.caption(form);
    const items = body.captions.map((c) => {
      const li = document.createElement("li");
      li.textContent = `${c.text} (score ${c.score.toFixed(2)})`;
      return li;
    });
    $("captions").replaceChildren(...items);
    $("captions").hidden = false;
    $("stage").textContent = "Done";
    $("step-counter").textContent = `${items.length} caption(s)`;
  });
}

export function initEdits() {
  $("edit-image").addEventListener("change", preview);
  $("edit-form").addEventListener("submit", edit);
  $("caption-submit").addEventListener("click", caption);
}

/** The panel appears only when a served model edits and captions images. */
export function showEdits(models) {
  $("edits").hidden = !models.some((m) => m.edits);
}
