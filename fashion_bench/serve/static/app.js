// The search page: queries /api/search and shows the hits; clicking a hit makes it the reference of a composed query.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { reference: null, uploadUrl: null, placeholder: "" };

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

async function callApi(url, options) {
  let response;
  try {
    response = await fetch(url, options);
  } catch (err) {
    throw new Error(`the server cannot be reached (${err.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(`${response.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return body;
}

function card(hit, onClick, title) {
  const element = document.createElement("figure");
  element.className = "card";
  element.dataset.itemId = hit.item_id;
  element.title = title;
  const image = document.createElement("img");
  image.src = hit.image_url;
  image.alt = hit.item_id;
  image.loading = "lazy";
  const caption = document.createElement("figcaption");
  const id = document.createElement("div");
  id.className = "id";
  id.textContent = hit.rank ? `#${hit.rank} ${hit.item_id}` : hit.item_id;
  caption.append(id);
  if (hit.score !== undefined && hit.rank) {
    const score = document.createElement("div");
    score.className = "score";
    score.textContent = `score ${hit.score.toFixed(4)}`;
    caption.append(score);
  }
  if (hit.category) {
    const category = document.createElement("div");
    category.textContent = hit.category;
    caption.append(category);
  }
  element.append(image, caption);
  element.addEventListener("click", () => onClick(hit));
  return element;
}

function showQueryImage(src, label) {
  $("reference").hidden = !src;
  if (state.uploadUrl) URL.revokeObjectURL(state.uploadUrl);
  state.uploadUrl = null;
  if (src) {
    $("reference-image").src = src;
    $("reference-label").textContent = label;
    $("query-text").placeholder = "describe the change, e.g. in blue";
  } else {
    $("query-text").placeholder = state.placeholder;
  }
}

function setReference(hit) {
  state.reference = hit;
  $("query-image").value = "";
  showQueryImage(hit && hit.image_url, hit && `item ${hit.item_id}`);
  if (hit) {
    $("query-text").value = "";
    $("query-text").focus();
  }
}

function useUpload() {
  const file = $("query-image").files[0];
  if (!file) return;
  state.reference = null;
  const url = URL.createObjectURL(file);
  showQueryImage(url, `uploaded ${file.name}`);
  state.uploadUrl = url;
}

async function search() {
  showError("");
  const form = new FormData();
  const text = $("query-text").value.trim();
  if (text) form.append("text", text);
  form.append("k", $("query-k").value || "20");
  if ($("query-category").value) form.append("category", $("query-category").value);
  const file = $("query-image").files[0];
  if (file) form.append("image", file);
  if (state.reference) form.append("reference", state.reference.item_id);
  $("status").textContent = "searching…";
  try {
    const result = await callApi("/api/search", { method: "POST", body: form });
    renderResults(result);
  } catch (err) {
    $("status").textContent = "";
    showError(err.message);
  }
}

function renderResults(result) {
  const query = result.query;
  const what = [query.text ? `“${query.text}”` : null, query.reference ? `reference ${query.reference}` : null,
    query.image ? "uploaded image" : null].filter(Boolean).join(" + ");
  const where = query.category ? ` in ${query.category}` : "";
  $("status").textContent = `${result.hits.length} results for ${what}${where} (${query.kind} query, ${result.took_ms} ms); ` +
    "click a result to refine from it";
  $("results").replaceChildren(...result.hits.map((hit) => card(hit, setReference, "refine from this item")));
}

async function pickFromCatalogue() {
  showError("");
  try {
    const result = await callApi("/api/random?n=12");
    $("picks").replaceChildren(...result.items.map((item) => card(item, (hit) => {
      setReference(hit);
      $("picks").hidden = true;
    }, "use as the query image")));
    $("picks").hidden = false;
  } catch (err) {
    showError(err.message);
  }
}

async function loadInfo() {
  try {
    const info = await callApi("/api/info");
    const index = info.index || {};
    const parts = [index.method_name && `method ${index.method_name}`, index.experiment && `experiment ${index.experiment}`,
      `${info.count} items`, index.kind && `${index.kind} index`].filter(Boolean);
    $("index-info").textContent = parts.join(" · ");
    $("query-category").append(...info.categories.map((category) => new Option(category, category)));
    $("query-kinds").replaceChildren(...info.query_kinds.map((kind) => {
      const badge = document.createElement("span");
      badge.className = "kind";
      badge.textContent = kind;
      return badge;
    }));
  } catch (err) {
    $("index-info").textContent = "";
    showError(`cannot load the index description: ${err.message}`);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  state.placeholder = $("query-text").placeholder;
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    search();
  });
  $("pick-button").addEventListener("click", pickFromCatalogue);
  $("reference-clear").addEventListener("click", () => setReference(null));
  $("query-image").addEventListener("change", useUpload);
  loadInfo();
});
