// The review page: one photo at a time, keyboard first. A decision is taken at once: the next photo is already
// decoded in memory, and the decision goes to the API through the reviewer's outbox, which keeps it (in
// localStorage, across reloads, tabs and sign-ins) until the API has it. Nothing here waits on the network between
// two decisions.

import { LOCAL_REVIEWER, Session, SignInError } from "./sign-in.js";
import { renderSummary } from "./summary.js";

const API = new URL(".", window.location.href); // the page is <api>/review: the routes are its siblings
const PRELOAD = 4; // photos fetched and decoded ahead of the one on screen
const PAGE_SIZE = 50;
const REFILL_BELOW = 10;
const KEEP_DECIDED = 20; // decoded photos kept for undo
const OUTBOX_PREFIX = "refund-sorter.outbox."; // + the reviewer's subject + ":" + one decision's key
const LEGACY_OUTBOX_KEY = "refund-sorter.outbox"; // one list shared by every tab and every reviewer (before)
const OUTBOX_CHECK_MS = 5000; // how often a tab looks for decisions left by a tab that closed while sending
const RETRY_MS = [500, 1000, 2000, 5000, 10000];

const $ = (id) => document.getElementById(id);
const session = new Session(JSON.parse($("sign-in-config").textContent || "{}"));
// optional: ?date=YYYY-MM-DD&department=shoes&order=oldest (the API's default order: informative with a head)
const filters = new URLSearchParams(window.location.search);
const ORDER_NAMES = { informative: "most useful to the sorter first", oldest: "oldest first" };

const state = {
  queue: [], // Results waiting for a person, oldest first; queue[0] is on screen
  seen: new Set(), // ids queued or decided here: a later page may list them again until the API has our decision
  nextToken: null,
  more: true,
  refilling: null,
  photos: new Map(), // id → Promise of its decoded <img>
  ready: new Map(), // id → decoded <img>, to show without waiting
  decisions: [], // this page's decisions, newest last: {id, item, department, status}
  latest: new Map(), // id → the revision the API last answered
  counts: null,
  names: new Map(),
  departments: [],
  view: "loading",
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  get retriable() {
    return this.status === 0 || this.status === 401 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = await session.headers();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(new URL(path, API), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "unreachable", "the API cannot be reached");
  }
  if (response.status === 401) session.expire(); // the next attempt refreshes the token or signs in again
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.code || `http_${response.status}`, error.message || (data && data.message) || response.statusText);
  }
  return data;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const nameOf = (department) => state.names.get(department) || department;
const dayOf = (item) => item.timestamp.slice(0, 10);
const percent = (value) => `${Math.round(value * 100)} %`;
// The numbered choices: the model's top departments (Results from before they were kept: its prediction).
const choicesOf = (item) =>
  item.top_departments && item.top_departments.length
    ? item.top_departments.slice(0, 9)
    : [{ department: item.prediction, confidence: item.confidence }];

// ------------------------------------------------------------------------------------------------ messages

function showBanner(text, { error = false, actions = [] } = {}) {
  $("banner-text").textContent = text;
  $("banner").classList.toggle("error", error);
  $("banner-actions").replaceChildren(
    ...actions.map(([label, run]) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = label;
      button.addEventListener("click", () => {
        hideBanner();
        run();
      });
      return button;
    }),
  );
  $("banner").hidden = false;
}

function hideBanner() {
  $("banner").hidden = true;
}

// ------------------------------------------------------------------------------------------------ the outbox

// Decisions and undos on their way to the API, one at a time and in order (an undo follows its decision).
// A failure that may pass (the API down, a 5xx, an expired sign-in) is retried; nothing is dropped until the
// API has answered it.
//
// One outbox per reviewer, shared by their tabs: each decision is its own localStorage key under the reviewer's
// subject, so tabs never write over each other's decisions, and a page only ever reads (and sends) the outbox of
// the reviewer signed in on it: after a sign-out, another reviewer's page leaves it alone, and it is sent when its
// reviewer signs in again. One tab at a time sends (a Web Lock per outbox), all of the outbox, oldest first:
// decisions left by a tab that closed are sent by another one.
let opCount = 0;
const TAB = Math.random().toString(36).slice(2, 8);
// Sorts by time: the outbox is sent in the order the decisions were made, whichever tab made them.
const nextOpKey = () => `${String(Date.now()).padStart(15, "0")}-${String((opCount += 1)).padStart(6, "0")}-${TAB}`;

class Outbox {
  constructor(subject) {
    this.subject = subject;
    this.prefix = `${OUTBOX_PREFIX}${encodeURIComponent(subject)}:`;
    this.running = false;
    this.failures = 0;
    this.saved = 0;
    this.adoptLegacy();
    window.addEventListener("storage", (event) => this.changedElsewhere(event));
    setInterval(() => {
      if (!this.running && this.keys().length) this.run();
    }, OUTBOX_CHECK_MS);
  }

  // The one shared list of before: whose decisions it holds is unknown, so only the local stack (where everyone
  // is the same reviewer) takes it over; a signed-in page never sends it.
  adoptLegacy() {
    if (this.subject !== LOCAL_REVIEWER || localStorage.getItem(LEGACY_OUTBOX_KEY) === null) return;
    let ops = [];
    try {
      ops = JSON.parse(localStorage.getItem(LEGACY_OUTBOX_KEY)) || [];
    } catch {
      ops = [];
    }
    for (const op of ops) {
      delete op.inFlight;
      localStorage.setItem(this.prefix + nextOpKey(), JSON.stringify(op));
    }
    localStorage.removeItem(LEGACY_OUTBOX_KEY);
  }

  keys() {
    const keys = [];
    for (let i = 0; i < localStorage.length; i += 1) {
      const key = localStorage.key(i);
      if (key && key.startsWith(this.prefix)) keys.push(key);
    }
    return keys.sort();
  }

  read(key) {
    try {
      const op = JSON.parse(localStorage.getItem(key));
      return op && op.kind ? op : null;
    } catch {
      return null;
    }
  }

  // What waits, oldest first, each with its key.
  get ops() {
    return this.keys()
      .map((key) => ({ key, op: this.read(key) }))
      .filter(({ op }) => op)
      .map(({ key, op }) => ({ ...op, key }));
  }

  write(key, op) {
    const { key: _, ...stored } = op;
    localStorage.setItem(key, JSON.stringify(stored));
  }

  changed() {
    document.body.dataset.pending = String(this.keys().length);
    renderOutbox(this);
  }

  // Another tab of this browser changed an outbox: if it is this reviewer's, show it, and don't offer a photo
  // that other tab has just decided.
  changedElsewhere(event) {
    if (event.storageArea !== localStorage || !event.key || !event.key.startsWith(this.prefix)) return;
    this.changed();
    if (event.newValue && !event.oldValue) {
      const op = this.read(event.key);
      if (op && op.kind === "decide") {
        state.seen.add(op.id);
        dropFromQueue(op.id);
      }
    }
  }

  push(op) {
    this.write(this.prefix + nextOpKey(), op);
    this.changed();
    this.run();
  }

  // Take back an op not yet sent; true if there was one.
  withdraw(predicate) {
    const op = this.ops.find((waiting) => !waiting.inFlight && predicate(waiting));
    if (!op) return false;
    localStorage.removeItem(op.key);
    this.changed();
    return true;
  }

  run() {
    if (this.running) return;
    this.running = true;
    // A browser without Web Locks (none the page supports otherwise) sends from every tab: a repeat is a conflict.
    const sending = navigator.locks ? navigator.locks.request(this.prefix, () => this.drain()) : this.drain();
    sending.finally(() => {
      this.running = false;
      this.lastError = null;
      this.changed();
    });
  }

  async drain() {
    // Only under this reviewer's own token: the page is signed in as them, or sends nothing at all.
    while (session.subject === this.subject) {
      const [key] = this.keys();
      if (!key) return;
      const op = this.read(key);
      if (!op) {
        localStorage.removeItem(key); // unreadable: nothing to send
        continue;
      }
      op.inFlight = true; // from now on an undo is sent after it rather than withdrawing it
      this.write(key, op);
      try {
        const result = await send(op);
        localStorage.removeItem(key);
        this.failures = 0;
        this.saved += 1;
        document.body.dataset.saved = String(this.saved); // how many this tab has sent: a signal to tests, too
        if (result) {
          for (const later of this.ops) {
            if (later.id === op.id) this.write(later.key, { ...later, revision: result.revision });
          }
        }
        this.changed();
        settled(op, result, null);
      } catch (error) {
        if (localStorage.getItem(key) !== null) this.write(key, { ...op, inFlight: false });
        if (error instanceof ApiError && error.retriable) {
          this.lastError = error;
          this.failures += 1;
          renderOutbox(this);
          await sleep(RETRY_MS[Math.min(this.failures - 1, RETRY_MS.length - 1)]);
          continue;
        }
        localStorage.removeItem(key);
        this.changed();
        settled(op, null, error);
      }
    }
  }
}

function send(op) {
  const path = `predictions/${encodeURIComponent(op.id)}`;
  if (op.kind === "undo") return api(`${path}/review`, { method: "DELETE" });
  return api(path, { method: "PATCH", body: { category: op.department, revision: op.revision } });
}

function renderOutbox(outbox) {
  const box = $("outbox");
  const waiting = outbox.keys().length;
  if (!waiting || !outbox.lastError) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  box.textContent =
    `${waiting} decision${waiting === 1 ? "" : "s"} waiting to be saved: ${outbox.lastError.message} ` +
    `(${outbox.lastError.status || "no answer"}). Retrying; nothing is lost, even if you reload the page.`;
}

let outbox = null; // the signed-in reviewer's, once start() knows who they are

function recordFor(id) {
  for (let i = state.decisions.length - 1; i >= 0; i -= 1) if (state.decisions[i].id === id) return state.decisions[i];
  return null;
}

// What the API said about an op.
function settled(op, result, error) {
  if (result) state.latest.set(op.id, result.revision);
  const record = recordFor(op.id);
  if (op.kind === "decide") {
    if (!error) {
      if (record) record.status = "saved";
      return;
    }
    if (record) record.status = "refused";
    if (error.code === "review_conflict") {
      const mine = op.department;
      showBanner(`Someone else decided this photo first: ${error.message}. Your choice “${nameOf(mine)}” was not saved.`, {
        actions: [
          [`Use “${nameOf(mine)}” anyway`, () => override(op.id, mine)],
          ["Keep theirs", () => {}],
        ],
      });
    } else {
      showBanner(`Your decision on a photo was refused: ${error.message}`, { error: true });
    }
    return;
  }
  // an undo
  if (error) {
    dropFromQueue(op.id);
    showBanner(`Could not undo: ${error.message}`, { error: true });
    return;
  }
  const waiting = state.queue.findIndex((item) => item.id === op.id);
  if (waiting >= 0) state.queue[waiting] = result; // the fresh revision and state
}

async function override(id, department) {
  try {
    const current = await api(`predictions/${encodeURIComponent(id)}`);
    const record = { id, item: current, department, status: "sending" };
    state.decisions.push(record);
    outbox.push({ kind: "decide", id, department, revision: current.revision });
  } catch (error) {
    showBanner(`Could not read that photo's decision again: ${error.message}`, { error: true });
  }
}

// ------------------------------------------------------------------------------------------------ the queue

function queueQuery(token, { limit = PAGE_SIZE, counts = false } = {}) {
  const query = new URLSearchParams({ status: "needs_review", limit: String(limit), counts: String(counts) });
  for (const name of ["date", "department", "order"]) if (filters.get(name)) query.set(name, filters.get(name));
  if (token) query.set("next_token", token);
  return `predictions?${query}`;
}

function refill(force = false) {
  if (state.refilling) return state.refilling;
  if (!force && (!state.more || state.queue.length >= REFILL_BELOW)) return Promise.resolve();
  state.refilling = (async () => {
    const page = await api(queueQuery(state.nextToken));
    for (const item of page.items) {
      if (!state.seen.has(item.id)) {
        state.seen.add(item.id);
        state.queue.push(item);
      }
    }
    state.nextToken = page.next_token;
    state.more = Boolean(page.next_token);
    if (page.order) {
      $("queue-order").dataset.order = page.order;
      $("queue-order").textContent = ORDER_NAMES[page.order] || page.order;
    }
  })().finally(() => {
    state.refilling = null;
  });
  return state.refilling;
}

// How much is left: asked for after the first photo is on screen (counting costs the API three queries).
async function loadCounts() {
  try {
    const page = await api(queueQuery(null, { limit: 1, counts: true }));
    state.counts = page.counts;
    // Decisions this page made that the API may not have counted yet.
    for (const op of outbox.ops) if (op.kind === "decide") adjustCounts(op.day, 1);
    renderProgress();
  } catch (error) {
    showBanner(`How much is left cannot be counted right now: ${error.message}`);
  }
}

async function lookAgain() {
  state.nextToken = null;
  state.more = true;
  try {
    await refill(true);
  } catch (error) {
    apiDown(error, lookAgain);
    return;
  }
  show();
  loadCounts();
}

function dropFromQueue(id) {
  const index = state.queue.findIndex((item) => item.id === id);
  if (index < 0) return;
  state.queue.splice(index, 1);
  if (index === 0) show();
}

// ------------------------------------------------------------------------------------------------ photos

function preload(item) {
  if (state.photos.has(item.id)) return state.photos.get(item.id);
  const promise = (async () => {
    const link = await api(`predictions/${encodeURIComponent(item.id)}/photo?as=json`);
    const img = new Image();
    img.alt = `Returned item, predicted ${nameOf(item.prediction)}`;
    img.src = link.url;
    await img.decode(); // decoded now, so showing it later costs no decode either
    state.ready.set(item.id, img);
    return img;
  })();
  state.photos.set(item.id, promise);
  promise.then(
    () => {
      if (state.queue[0] && state.queue[0].id === item.id && !isShown(item.id)) showPhoto(item);
    },
    (error) => {
      state.photos.delete(item.id);
      if (state.queue[0] && state.queue[0].id === item.id) showMissingPhoto(item, error);
    },
  );
  return promise;
}

function preloadAhead() {
  for (const item of state.queue.slice(0, PRELOAD + 1)) preload(item);
  // Forget decoded photos nobody will look at again (kept: the queue's head and recent decisions, for undo).
  const keep = new Set([...state.queue.slice(0, PRELOAD + 1), ...state.decisions.slice(-KEEP_DECIDED)].map((x) => x.id));
  for (const id of state.ready.keys()) {
    if (!keep.has(id)) {
      state.ready.delete(id);
      state.photos.delete(id);
    }
  }
}

function isShown(id) {
  const shown = $("photo-frame").firstElementChild;
  return Boolean(shown && shown.dataset.predictionId === id && shown.tagName === "IMG");
}

function showPhoto(item) {
  const img = state.ready.get(item.id);
  img.dataset.predictionId = item.id;
  $("photo-frame").replaceChildren(img);
}

function showMissingPhoto(item, error) {
  const note = document.createElement("p");
  note.className = "placeholder";
  note.dataset.predictionId = item.id;
  note.textContent = `No photo to show (${error.message}). You can still decide from the model's suggestions.`;
  $("photo-frame").replaceChildren(note);
}

async function openFullSize() {
  const item = state.queue[0];
  if (!item) return;
  try {
    const link = await api(`predictions/${encodeURIComponent(item.id)}/photo?size=full&as=json`);
    window.open(link.url, "_blank", "noopener");
  } catch (error) {
    showBanner(`No full-size photo: ${error.message}`, { error: true });
  }
}

// ------------------------------------------------------------------------------------------------ the screen

function setView(view) {
  state.view = view;
  $("review-view").hidden = view !== "review";
  $("empty-view").hidden = view !== "empty";
  $("summary-view").hidden = view !== "summary";
}

function show() {
  const item = state.queue[0];
  refill().catch((error) => apiDown(error, lookAgain));
  if (!item) {
    if (state.refilling) {
      state.refilling.then(show, () => {});
      return;
    }
    if (state.view !== "summary") setView("empty");
    return;
  }
  if (state.view !== "summary") setView("review");
  renderItem(item);
  if (state.ready.has(item.id)) {
    showPhoto(item);
  } else {
    const waiting = document.createElement("p");
    waiting.className = "placeholder";
    waiting.textContent = "Loading the photo…";
    $("photo-frame").replaceChildren(waiting);
  }
  preloadAhead();
}

function renderItem(item) {
  const buttons = choicesOf(item).map((choice, index) => {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.department = choice.department;
    const key = document.createElement("span");
    key.className = "key";
    key.textContent = String(index + 1);
    const name = document.createElement("span");
    name.textContent = nameOf(choice.department);
    const confidence = document.createElement("span");
    confidence.className = "confidence";
    confidence.textContent = percent(choice.confidence);
    button.append(key, name, confidence);
    button.addEventListener("click", () => decide(choice.department));
    const line = document.createElement("li");
    line.append(button);
    return line;
  });
  $("suggestions").replaceChildren(...buttons);
  $("hint").textContent = item.label ? `Image model: ${item.label} (${percent(item.label_confidence)})` : "";
  $("reason").textContent =
    item.review_reason === "not_a_product"
      ? "Looks like no product"
      : `Unsure: ${percent(item.confidence)} ${nameOf(item.prediction)}`;
  // Why this photo is asked now (the API's sentence, e.g. "torn between shirt (0.41) and t-shirt (0.38)").
  $("why").textContent = item.asked_because ? `Asked because ${item.asked_because}` : "";
  $("when").textContent = new Date(item.timestamp).toLocaleString();
}

function renderProgress() {
  const counts = state.counts;
  if (!counts) return;
  $("done-today").textContent = String(counts.done_today);
  $("left-today").textContent = String(counts.left_today);
  $("left-total").textContent = String(counts.left);
  const total = counts.done_today + counts.left_today;
  $("progress-bar").value = total ? counts.done_today / total : 1;
}

function adjustCounts(day, decided) {
  const counts = state.counts;
  if (!counts) return;
  if (day === counts.date) {
    counts.done_today += decided;
    counts.left_today -= decided;
  }
  counts.left -= decided;
  renderProgress();
}

// ------------------------------------------------------------------------------------------------ deciding

function decide(department) {
  const item = state.queue[0];
  if (!item || state.view !== "review") return;
  state.queue.shift();
  state.decisions.push({ id: item.id, item, department, status: "sending" });
  const revision = state.latest.has(item.id) ? state.latest.get(item.id) : item.revision;
  outbox.push({ kind: "decide", id: item.id, department, revision, day: dayOf(item) });
  adjustCounts(dayOf(item), 1);
  show();
}

function choose(index) {
  const item = state.queue[0];
  const choice = item && choicesOf(item)[index];
  if (choice) decide(choice.department);
}

function undo() {
  if (state.view !== "review" && state.view !== "empty") return;
  const record = state.decisions.pop();
  if (!record) {
    showBanner("Nothing to undo yet.");
    return;
  }
  if (record.status === "refused") {
    showBanner("Your decision on that photo was not saved (someone else decided it): nothing to undo.");
    return;
  }
  // Not sent yet: simply never send it. Sent: ask the API to take it back.
  if (!outbox.withdraw((op) => op.kind === "decide" && op.id === record.id)) {
    outbox.push({ kind: "undo", id: record.id });
  }
  state.queue.unshift(record.item);
  adjustCounts(dayOf(record.item), -1);
  hideBanner();
  show();
}

// ------------------------------------------------------------------------------------------------ choosing any department

function renderChooser() {
  const text = $("chooser-filter").value.trim().toLowerCase();
  const matches = state.departments.filter(
    (d) => !text || d.id.toLowerCase().includes(text) || d.name.toLowerCase().includes(text),
  );
  $("chooser-list").replaceChildren(
    ...matches.map((department, index) => {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.department = department.id;
      button.textContent = department.name;
      button.title = department.description;
      button.addEventListener("click", () => chooseOther(department.id));
      const line = document.createElement("li");
      line.classList.toggle("active", index === 0 && Boolean(text));
      line.append(button);
      return line;
    }),
  );
}

function chooseOther(department) {
  $("chooser-filter").value = "";
  $("chooser-filter").blur();
  renderChooser();
  decide(department);
}

function onChooserKey(event) {
  if (event.key === "Escape") {
    $("chooser-filter").value = "";
    $("chooser-filter").blur();
    renderChooser();
  } else if (event.key === "Enter") {
    const first = $("chooser-list").querySelector("button");
    if (first && $("chooser-filter").value.trim()) chooseOther(first.dataset.department);
  }
}

// ------------------------------------------------------------------------------------------------ the summary

async function openSummary() {
  setView("summary");
  if (!$("summary-date").value) $("summary-date").value = (state.counts && state.counts.date) || new Date().toISOString().slice(0, 10);
  await loadSummary();
}

async function loadSummary() {
  const body = $("summary-body");
  body.textContent = "Counting…";
  try {
    const summary = await api(`summaries/${$("summary-date").value}`);
    renderSummary(body, summary, state.names);
  } catch (error) {
    body.textContent = `The summary cannot be loaded: ${error.message}`;
  }
}

function closeSummary() {
  setView("review");
  show();
}

// ------------------------------------------------------------------------------------------------ start

function onKey(event) {
  if (event.target === $("chooser-filter")) {
    onChooserKey(event);
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey || event.target instanceof HTMLInputElement) return;
  if (state.view === "summary") {
    if (event.key === "Escape" || event.key === "s") closeSummary();
    return;
  }
  if (/^[1-9]$/.test(event.key)) {
    event.preventDefault();
    choose(Number(event.key) - 1);
  } else if (event.key === "u" || event.key === "Backspace") {
    event.preventDefault();
    undo();
  } else if (event.key === "o" || event.key === "/") {
    event.preventDefault();
    $("chooser-filter").focus();
  } else if (event.key === "s") {
    openSummary();
  } else if (event.key === "f") {
    openFullSize();
  }
}

function apiDown(error, retry) {
  showBanner(`The API cannot be used right now: ${error.message}.`, { error: true, actions: [["Try again", retry]] });
}

async function loadDepartments() {
  state.departments = await api("departments");
  for (const department of state.departments) state.names.set(department.id, department.name);
  renderChooser();
}

async function start() {
  document.addEventListener("keydown", onKey);
  $("undo-button").addEventListener("click", undo);
  $("summary-button").addEventListener("click", openSummary);
  $("summary-close").addEventListener("click", closeSummary);
  $("summary-date").addEventListener("change", loadSummary);
  $("reload-queue").addEventListener("click", lookAgain);
  $("chooser-filter").addEventListener("input", renderChooser);
  try {
    await session.start();
  } catch (error) {
    if (!(error instanceof SignInError)) throw error;
    showBanner(error.message, { error: true, actions: [["Sign in", () => session.begin()]] });
    return;
  }
  outbox = new Outbox(session.subject);
  if (session.enabled) {
    $("user").textContent = session.user || "";
    $("user").hidden = false;
    $("sign-out").hidden = false;
    $("sign-out").addEventListener("click", () => session.signOut());
  }
  outbox.changed();
  // This reviewer's decisions left from before a reload, a sign-in or in another tab: send them, and don't show
  // their photos again meanwhile.
  const lastOp = new Map(outbox.ops.map((op) => [op.id, op.kind]));
  for (const [id, kind] of lastOp) if (kind === "decide") state.seen.add(id);
  outbox.run();
  try {
    await Promise.all([refill(true), loadDepartments()]);
  } catch (error) {
    apiDown(error, () => window.location.reload());
    return;
  }
  show();
  const first = state.queue[0] && state.photos.get(state.queue[0].id);
  (first || Promise.resolve()).finally(loadCounts);
}

start();
