// The playground's entry point: loads the models, wires the panels together.

import * as api from "./api.js";
import * as form from "./form.js";
import * as history from "./history.js";
import * as jobs from "./jobs.js";
import * as snippets from "./snippets.js";
import { initEdits, showEdits } from "./edits.js";
import { initVariations } from "./variations.js";
import { showError, clearError } from "./notice.js";

const $ = (id) => document.getElementById(id);

function refreshSnippets() {
  const params = form.readParams();
  $("snippet-curl").value = snippets.curlSnippet(params);
  $("snippet-python").value = snippets.pythonSnippet(params);
}

async function loadModels() {
  try {
    const body = await api.listModels();
    const models = body.data;
    form.fillModels(models);
    showEdits(models);
    const m = models[0];
    $("server-info").textContent =
      `${models.length === 1 ? `Model ${m.id}` : `${models.length} models`} · ` +
      `routes ${m.routes.join(", ")} · native size ${m.image_size}×${m.image_size}`;
    clearError();
    refreshSnippets();
    await jobs.resume();
  } catch (err) {
    $("server-info").textContent = "Not connected";
    showError(api.errorText(err));
    if (err instanceof api.ApiError && err.status === 401) {
      $("key-panel").open = true;
      $("api-key").focus();
    }
  }
}

function initKey() {
  $("api-key").value = api.getKey();
  if (!api.getKey()) $("key-panel").open = false;
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    api.setKey($("api-key").value.trim());
    loadModels();
  });
  $("key-forget").addEventListener("click", () => {
    api.setKey("");
    $("api-key").value = "";
    refreshSnippets();
  });
}

function init() {
  initKey();
  form.initForm(refreshSnippets);
  initVariations();
  initEdits();
  history.init({
    show: (entry) => jobs.view(entry),
    reuse: (entry, withSeed) => {
      form.applyParams(entry.params, withSeed ? entry.seed : null);
      refreshSnippets();
      $("prompt").focus();
    },
    cancel: (entry) => jobs.cancel(entry.id),
  });
  $("generate-form").addEventListener("submit", (e) => {
    e.preventDefault();
    jobs.submit(form.readParams());
  });
  // Ctrl/⌘+Enter in the prompt generates, as in most playgrounds.
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      $("generate-form").requestSubmit();
    }
  });
  $("cancel").addEventListener("click", () => jobs.cancel());
  $("history-clear").addEventListener("click", () => history.clearAll());
  $("copy-curl").addEventListener("click", async () => {
    $("copy-status").textContent = await snippets.copy($("snippet-curl").value, $("snippet-curl"));
  });
  $("copy-python").addEventListener("click", async () => {
    const area = $("snippet-python");
    $("copy-status").textContent = await snippets.copy(area.value, area);
  });
  loadModels();
}

init();
