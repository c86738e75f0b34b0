// Image in: variations of an uploaded or dropped image (POST /v1/images/variations, multipart,
// synchronous: a busy state, then the images or the server's message).

import * as api from "./api.js";
import { showResult } from "./images.js";
import { showError, clearError } from "./notice.js";

const $ = (id) => document.getElementById(id);
let chosen = null; // the File to send
let sourceUrl = null;

function choose(file) {
  if (!file) return;
  chosen = file;
  if (sourceUrl) URL.revokeObjectURL(sourceUrl);
  sourceUrl = URL.createObjectURL(file);
  const img = $("var-source");
  img.src = sourceUrl;
  img.alt = `Source image: ${file.name}`;
  img.hidden = false;
}

function setBusy(busy) {
  const button = $("var-submit");
  button.disabled = busy;
  button.textContent = busy ? "Working…" : "Make variations";
  $("images").setAttribute("aria-busy", String(busy));
}

async function submit(event) {
  event.preventDefault();
  clearError();
  if (!chosen) {
    showError("Choose or drop an image first.");
    $("var-image").focus();
    return;
  }
  const form = new FormData();
  form.append("image", chosen, chosen.name || "image.png");
  for (const [name, id] of [["n", "var-n"], ["seed", "var-seed"], ["steps", "var-steps"],
    ["size", "var-size"]]) {
    if ($(id).value !== "") form.append(name, $(id).value);
  }
  setBusy(true);
  $("stage").textContent = "Making variations";
  $("step-counter").textContent = "";
  $("progress").hidden = true;
  try {
    const result = await api.variations(form);
    showResult($("images"), result, `Variation of ${chosen.name || "the image"}`, "variation");
    $("stage").textContent = "Done";
    $("step-counter").textContent = `${result.data.length} variation(s), seed ${result.seed}`;
  } catch (err) {
    $("stage").textContent = "Idle";
    showError(api.errorText(err));
  } finally {
    setBusy(false);
  }
}

export function initVariations() {
  const input = $("var-image");
  const zone = $("drop-zone");
  input.addEventListener("change", () => choose(input.files[0]));
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    choose(e.dataTransfer.files[0]);
  });
  $("variations-form").addEventListener("submit", submit);
}
