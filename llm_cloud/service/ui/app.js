// Tandem's web page: plain JavaScript over the service's /v1 routes, no build step and no network beyond this server.
"use strict";

const $ = (sel) => document.querySelector(sel);
const KEY = "tandem-api-key";
const state = {
  history: [],          // [{item_id, title}], oldest first
  userId: null,         // the loaded user, while the history is still exactly theirs
  userHistoryLength: 0,
  nextItem: null,       // the loaded user's real next item
  store: null,          // GET /v1/store
  last: null,           // the last /v1/recommend answer
  steps: 0,
};

// --- API ----------------------------------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message, type) { super(message); this.status = status; this.type = type; }
}

async function api(method, path, body) {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  let payload;
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, { method, headers, body: payload });
  } catch (err) {
    throw new ApiError(0, `the server did not answer (${err.message}); is tandem serve still running?`);
  }
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    const message = data && data.error && data.error.message ? data.error.message : text || resp.statusText;
    throw new ApiError(resp.status, message, data && data.error ? data.error.type : undefined);
  }
  data.http = { request: payload ? new TextEncoder().encode(payload).length : 0,
                response: new TextEncoder().encode(text).length };
  return data;
}

function showError(err) {
  const box = $("#error");
  if (!err) { box.hidden = true; box.textContent = ""; return; }
  box.textContent = err.status ? `Error ${err.status}: ${err.message}` : `Error: ${err.message}`;
  box.hidden = false;
  if (err.status === 401) openKeyForm();
}

async function guarded(fn) {
  showError(null);
  try { await fn(); } catch (err) { showError(err); }
}

function openKeyForm() {
  $("#key-form").hidden = false;
  $("#key-input").focus();
}

// --- small DOM helpers ----------------------------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const child of children) node.append(child);
  return node;
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));

function table(node, rows, head) {
  node.replaceChildren();
  if (head) node.append(el("tr", {}, ...head.map((h) => el("th", { scope: "col", textContent: h }))));
  for (const row of rows) {
    node.append(el("tr", {}, el("th", { scope: "row", textContent: row[0] }),
      ...row.slice(1).map((c) => el("td", { textContent: c }))));
  }
}

// --- history --------------------------------------------------------------------------------------------------------
function renderHistory() {
  const list = $("#history");
  list.replaceChildren();
  state.history.forEach((item, i) => {
    const remove = el("button", { type: "button", class: "small", textContent: "Remove",
      ariaLabel: `Remove ${item.title} from the history` });
    remove.addEventListener("click", () => {
      state.history.splice(i, 1);
      state.userId = null;
      renderHistory();
    });
    list.append(el("li", { "data-item-id": item.item_id }, el("span", { textContent: item.title }), " ", remove));
  });
  const source = state.userId !== null ? `User ${state.userId}'s history` : "Your history";
  const limit = state.store ? state.store.max_history : 200;
  const sent = state.history.length > limit && state.userId === null ? ` The newest ${limit} are sent.` : "";
  $("#history-source").textContent = state.history.length
    ? `${source}: ${state.history.length} items, oldest first.${sent}`
    : "No history yet: load a user or add items (an empty history gets popular items).";
  renderNextChoices();
}

function addToHistory(item) {
  state.history.push({ item_id: item.item_id, title: item.title });
  if (state.userId !== null && state.history.length !== state.userHistoryLength) state.userId = null;
  renderHistory();
}

async function loadUser(userId) {
  const user = await api("GET", `/v1/users/${userId}`);
  state.history = user.history.slice();
  state.userId = user.user_id;
  state.userHistoryLength = user.history.length;
  state.nextItem = user.next_item;
  renderHistory();
}

// --- search (a combobox: arrows move, Enter adds, Escape closes) ----------------------------------------------------
let searchTimer = null;
let searchSeq = 0;

function options() { return [...$("#search-results").querySelectorAll("[role=option]")]; }

function closeSearch() {
  $("#search-results").hidden = true;
  $("#search").setAttribute("aria-expanded", "false");
  $("#search").removeAttribute("aria-activedescendant");
}

function pickOption(li) {
  addToHistory({ item_id: Number(li.dataset.itemId), title: li.textContent });
  $("#search").value = "";
  closeSearch();
  $("#search").focus();
}

async function runSearch() {
  const q = $("#search").value.trim();
  const seq = ++searchSeq;
  if (!q) { closeSearch(); return; }
  const found = await api("GET", `/v1/items?q=${encodeURIComponent(q)}&limit=10`);
  if (seq !== searchSeq) return; // a newer query is on its way
  const list = $("#search-results");
  list.replaceChildren();
  found.items.forEach((item, i) => {
    const li = el("li", { role: "option", id: `opt-${i}`, textContent: item.title, "data-item-id": item.item_id });
    li.setAttribute("aria-selected", "false");
    li.addEventListener("mousedown", (e) => { e.preventDefault(); pickOption(li); });
    list.append(li);
  });
  if (!found.items.length) list.append(el("li", { class: "hint", textContent: `No title contains “${q}”.` }));
  list.hidden = false;
  $("#search").setAttribute("aria-expanded", "true");
}

function moveActive(delta) {
  const opts = options();
  if (!opts.length) return;
  let at = opts.findIndex((o) => o.getAttribute("aria-selected") === "true");
  if (at >= 0) opts[at].setAttribute("aria-selected", "false");
  at = (at + delta + opts.length) % opts.length;
  opts[at].setAttribute("aria-selected", "true");
  $("#search").setAttribute("aria-activedescendant", opts[at].id);
  opts[at].scrollIntoView({ block: "nearest" });
}

// --- recommend ------------------------------------------------------------------------------------------------------
// what a device sends: its newest items, at most the server's limit (the models read fewer still)
function sentHistory() {
  const limit = state.store ? state.store.max_history : 200;
  return state.history.slice(-limit).map((it) => it.item_id);
}

function requestBody() {
  const k = Number($("#k").value);
  const body = state.userId !== null ? { user_id: state.userId } : { history: sentHistory() };
  return { ...body, k, candidates: true };
}

function decisionText(d) {
  let text;
  if (d.requested) {
    text = d.score === null ? "asked the cloud: nothing usable was cached for this history"
      : "asked the cloud for a fresh list: the policy judged the cached list too stale";
  } else if (d.score === null) {
    text = "used the list cached for exactly this history (no decision needed)";
  } else {
    text = "reused the cached list, reranked with the fresher history";
  }
  return text;
}

function scoreLine(it) {
  return `fused ${fmt(it.score)} · LLM ${fmt(it.llm_score)} · SRM ${fmt(it.srm_score)}`;
}

function itemRow(it, extra) {
  const li = el("li", { "data-item-id": it.item_id }, el("span", { class: "title", textContent: it.title }),
    el("span", { class: "scores", textContent: scoreLine(it) + (extra || "") }));
  return li;
}

function rankMap(items, key) {
  const sorted = items.slice().sort((a, b) => b[key] - a[key]);
  return new Map(sorted.map((it, i) => [it.item_id, i + 1]));
}

function renderResult(res) {
  const k = res.items.length;
  const d = res.decision;
  const box = $("#decision");
  box.replaceChildren(
    el("p", {}, el("strong", { textContent: "Policy decision: " }),
      el("span", { id: "decision-text", textContent: decisionText(d) })),
    el("p", { textContent: `Policy ${d.policy}; score ${fmt(d.score)}, threshold ${fmt(d.threshold)}.` }),
    el("p", { class: "flags" },
      el("span", { class: `flag ${d.degraded ? "on" : ""}`, id: "flag-degraded",
        textContent: `degraded: ${d.degraded ? "yes" : "no"}` }),
      el("span", { class: `flag ${d.cold_start ? "on" : ""}`, id: "flag-cold",
        textContent: `cold start: ${d.cold_start ? "yes" : "no"}` }),
      el("span", { class: "flag", textContent: `cache hit: ${d.cache_hit ? "yes" : "no"}` })));
  box.dataset.requested = String(d.requested);
  box.dataset.score = d.score === null ? "" : String(d.score);
  for (const note of res.notes || []) box.append(el("p", { class: "note", textContent: note }));

  const pool = res.candidates;
  if (pool) {
    $("#llm-hint").textContent = `The first ${Math.min(k, pool.length)} of the ${pool.length} candidates the LLM ` +
      "generated, by sequence log-probability.";
    const srmRank = rankMap(pool, "srm_score");
    const staticRank = rankMap(pool, "static_srm_score");
    $("#list-llm").replaceChildren(...pool.slice(0, k).map((it) => itemRow(it, ` · SRM #${srmRank.get(it.item_id)}`)));
    const bySrm = pool.slice().sort((a, b) => b.srm_score - a.srm_score).slice(0, k);
    $("#list-srm").replaceChildren(...bySrm.map((it) => itemRow(it, ` · static #${staticRank.get(it.item_id)}`)));
  } else {
    $("#llm-hint").textContent = "No candidate list could be had, so the SRM ranked the whole catalogue.";
    $("#list-llm").replaceChildren();
    $("#list-srm").replaceChildren(...res.items.map((it) => itemRow(it)));
  }
  $("#list-fused").replaceChildren(...res.items.map((it) => itemRow(it)));
  $("#fusion-rule").textContent = `Fusion rule: ${res.fusion}` +
    (res.fusion === "srm" ? " (the SRM alone)." : ", over the LLM's and the SRM's calibrated scores.");

  table($("#timings"), Object.entries(res.timings_ms).map(([stage, ms]) => [stage, fmt(ms, 1)]));
  const w = res.wire_bytes || { up: 0, down: 0, parameters: 0 };
  table($("#bytes"), [
    ["device → cloud (history ids)", `${w.up} B`],
    ["cloud → device (candidate list)", `${w.down} B`],
    ["one parameter update (Persona)", `${w.parameters} B`],
    ["this page's request (JSON)", `${res.http.request} B`],
    ["this page's response (JSON)", `${res.http.response} B`],
  ]);
  const raw = { ...res };
  delete raw.http;
  $("#raw").textContent = JSON.stringify(raw, null, 2);
  $("#explanation").hidden = true;
  $("#result").hidden = false;
}

async function recommend() {
  const res = await api("POST", "/v1/recommend", requestBody());
  const before = state.last;
  state.last = res;
  renderResult(res);
  renderNextChoices();
  return { res, before };
}

// --- explain --------------------------------------------------------------------------------------------------------
async function explain() {
  const box = $("#explanation");
  if (!state.last || !state.last.items.length) throw new ApiError(0, "recommend first: Explain explains the top item");
  const top = state.last.items[0];
  box.hidden = false;
  box.replaceChildren(el("p", { textContent: `Asking the reasoning model about “${top.title}”…` }));
  try {
    const ex = await api("POST", "/v1/explain", { history: sentHistory(), item_id: top.item_id });
    box.replaceChildren(el("h3", { textContent: `Why “${ex.title}”` }), el("p", { textContent: ex.trace }),
      el("p", { textContent: `p(yes) with thinking ${fmt(ex.p_yes)}, without ${fmt(ex.p_yes_direct)}; ` +
        `adapter ${ex.adapter}${ex.route ? ` (route ${ex.route})` : ""}.` }));
  } catch (err) {
    box.replaceChildren(el("p", { class: "note", id: "explain-message", textContent: err.message }));
    if (err.type !== "feature_not_enabled") throw err;
  }
}

// --- device view ----------------------------------------------------------------------------------------------------
function renderNextChoices() {
  const select = $("#next-item");
  const choices = [];
  if (state.userId !== null && state.nextItem) choices.push(["the user's real next item", state.nextItem]);
  if (state.last) state.last.items.forEach((it, i) => choices.push([`recommended #${i + 1}`, it]));
  select.replaceChildren(...choices.map(([why, it], i) =>
    el("option", { value: String(i), textContent: `${it.title} (${why})`, "data-item-id": it.item_id })));
  if (!choices.length) select.append(el("option", { value: "", textContent: "recommend first" }));
  select.choices = choices.map(([, it]) => it);
  $("#step").disabled = !choices.length;
}

// how many of the SRM's top k the generated parameters put at another rank than the static SRM would
function moved(res) {
  if (!res.candidates) return "–";
  const k = res.items.length;
  const staticRank = rankMap(res.candidates, "static_srm_score");
  const top = res.candidates.slice().sort((a, b) => b.srm_score - a.srm_score).slice(0, k);
  const changed = top.filter((it, i) => staticRank.get(it.item_id) !== i + 1).length;
  return `${changed} of the SRM's top ${k}`;
}

async function step() {
  const select = $("#next-item");
  const item = select.choices[Number(select.value)];
  if (!item) return;
  const wasUser = state.userId;
  addToHistory(item);
  if (wasUser !== null && item === state.nextItem) state.nextItem = null;
  const { res, before } = await recommend();
  const prev = before ? new Set(before.items.map((it) => it.item_id)) : new Set();
  const changed = before ? res.items.filter((it) => !prev.has(it.item_id)).length : res.items.length;
  const d = res.decision;
  state.steps += 1;
  const row = el("tr", { "data-requested": String(d.requested) },
    el("td", { textContent: String(state.steps) }), el("td", { textContent: item.title }),
    el("td", { class: "step-decision", textContent: decisionText(d) + (d.degraded ? " (degraded)" : "") }),
    el("td", { textContent: `${fmt(d.score)} / ${fmt(d.threshold)}` }),
    el("td", { textContent: `${changed} of ${res.items.length} items new` }),
    el("td", { textContent: moved(res) }));
  $("#steps tbody").append(row);
}

// --- store page -----------------------------------------------------------------------------------------------------
function dl(node, pairs) {
  node.replaceChildren(...pairs.flatMap(([k, v]) => [el("dt", { textContent: k }), el("dd", { textContent: v })]));
}

// a stage's measured summary in one line: numbers and words as they are, nested tables one level deep, lists counted
function summaryText(summary, prefix = "") {
  const parts = [];
  for (const [k, v] of Object.entries(summary || {})) {
    const name = prefix + k;
    if (typeof v === "number") parts.push(`${name} ${Number.isInteger(v) ? v : v.toFixed(4)}`);
    else if (typeof v === "string" || typeof v === "boolean") parts.push(`${name} ${v}`);
    else if (Array.isArray(v)) parts.push(`${name} [${v.length}]`);
    else if (v && typeof v === "object" && !prefix) {
      const inner = summaryText(v, `${name}.`);
      if (inner) parts.push(inner);
    }
  }
  return parts.join(", ");
}

function renderStore(s) {
  dl($("#store-facts"), [
    ["store", s.root], ["dataset", s.dataset || "–"], ["users", String(s.n_users)], ["items", String(s.n_items)],
    ["fusion rule", s.fusion], ["request policy", `${s.policy} at a ${s.request_ratio} request ratio`],
    ["candidates per list", String(s.n_candidates)], ["staleness", `${s.staleness} items`],
    ["generated parameters", s.device_methods.join(", ") || "none"],
    ["reasoning model", s.reasoning ? "loaded (Explain works)"
      : "none loaded (Explain says how to get one)"],
    ["build time", s.total_seconds ? `${s.total_seconds} s` : "–"],
  ]);
  const stages = Object.entries(s.stages).sort(([, a], [, b]) =>
    String(a.finished_at || "").localeCompare(String(b.finished_at || "")));  // in the order they were built
  table($("#stages"), stages.length ? stages.map(([name, st]) => [name, st.seconds === undefined ? "–" : `${st.seconds} s`,
    st.finished_at || "–", st.hash || "–", summaryText(st.summary)]) : [["–", "the manifest lists no stages"]],
  ["stage", "seconds", "finished", "hash", "measured"]);
  dl($("#versions"), Object.entries(s.versions));
}

async function loadStore() {
  state.store = await api("GET", "/v1/store");
  renderStore(state.store);
  $("#user-range").textContent = `(0–${state.store.n_users - 1})`;
  $("#user-id").max = String(state.store.n_users - 1);
  $("#k").max = String(state.store.max_k);
}

// --- pages and wiring -----------------------------------------------------------------------------------------------
function route() {
  const store = location.hash === "#store";
  $("#page-store").hidden = !store;
  $("#page-recommend").hidden = store;
  $("#nav-store").setAttribute("aria-current", store ? "page" : "false");
  $("#nav-recommend").setAttribute("aria-current", store ? "false" : "page");
}

function parseIds(text) {
  const parts = text.split(/[\s,]+/).filter(Boolean);
  const bad = parts.filter((p) => !/^-?\d+$/.test(p));
  if (bad.length) throw new ApiError(0, `item ids must be whole numbers, got ${bad.join(", ")}`);
  return parts.map(Number);
}

async function useIds() {
  const ids = parseIds($("#ids").value);
  // titles come from the catalogue; an id it does not know keeps its number, and the API says what is wrong with it
  const items = await Promise.all(ids.map(async (id) => {
    try { return await api("GET", `/v1/items/${id}`); } catch (err) {
      if (err.status === 404) return { item_id: id, title: `unknown item ${id}` };
      throw err;
    }
  }));
  state.history = items.map((it) => ({ item_id: it.item_id, title: it.title }));
  state.userId = null;
  state.nextItem = null;
  renderHistory();
}

function init() {
  window.addEventListener("hashchange", route);
  route();
  $("#key-button").addEventListener("click", openKeyForm);
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(KEY, $("#key-input").value.trim());
    $("#key-form").hidden = true;
    guarded(loadStore);
  });
  $("#user-form").addEventListener("submit", (e) => { e.preventDefault(); guarded(() => loadUser($("#user-id").value)); });
  $("#ids-form").addEventListener("submit", (e) => { e.preventDefault(); guarded(useIds); });
  $("#recommend-form").addEventListener("submit", (e) => { e.preventDefault(); guarded(recommend); });
  $("#explain").addEventListener("click", () => guarded(explain));
  $("#step-form").addEventListener("submit", (e) => { e.preventDefault(); guarded(step); });
  $("#clear-history").addEventListener("click", () => {
    state.history = []; state.userId = null; state.nextItem = null; renderHistory();
  });
  const search = $("#search");
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => guarded(runSearch), 150);
  });
  search.addEventListener("keydown", (e) => {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") { e.preventDefault(); moveActive(e.key === "ArrowDown" ? 1 : -1); }
    else if (e.key === "Escape") closeSearch();
    else if (e.key === "Enter") {
      e.preventDefault();
      const active = options().find((o) => o.getAttribute("aria-selected") === "true") || options()[0];
      if (active) pickOption(active);
    }
  });
  search.addEventListener("blur", () => setTimeout(closeSearch, 100));
  renderHistory();
  guarded(loadStore);
}

document.addEventListener("DOMContentLoaded", init);
