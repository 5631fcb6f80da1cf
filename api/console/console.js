// The Fulcrum operator console: a client of /api/v1 like any other.
//
// No framework and no build step: the page is rendered from the API's JSON
// with DOM calls (never innerHTML with data, so nothing the log holds can
// run as markup). The token lives in this tab's sessionStorage; every read
// and action is an API call that checks its role, so what the console shows
// a role is what the API lets that role see.

const TOKEN = "fulcrum.console.token";
const SAGA_STATUSES = ["running", "compensating", "stuck", "completed", "compensated", "aborted"];
const POLL_MS = 2000;

// ---------------------------------------------------------------- helpers

/** Builds an element: h("a", {href: "#"}, "text", child...). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

/** Appends children (nodes, text, arrays of them; null and false skipped). */
function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function svg(tag, attrs = {}) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
  return el;
}

/**
 * A finder for `node`'s counterpart in re-rendered content: the same id, or
 * the same tag, href and text in the same identified table row.
 */
function counterpart(node) {
  if (node.id) return (root) => root.querySelector(`#${CSS.escape(node.id)}`);
  const tag = node.tagName;
  const href = node.getAttribute("href");
  const text = node.textContent;
  const row = node.closest("tr[id]")?.id;
  return (root) => [...root.getElementsByTagName(tag)].find((n) =>
    n.getAttribute("href") === href && n.textContent === text && n.closest("tr[id]")?.id === row);
}

/**
 * Replaces an element's children (same rules as append). Polled views
 * re-render every few seconds: the keyboard focus moves to the new copy of
 * the focused element, so tabbing through a live page does not lose its place.
 */
function fill(el, ...children) {
  const focused = document.activeElement;
  const find = focused && focused !== el && el.contains(focused) ? counterpart(focused) : null;
  el.replaceChildren();
  append(el, ...children);
  if (find) find(el)?.focus({ preventScroll: true });
  return el;
}

const main = () => document.getElementById("main");

/** Local time, `HH:MM:SS` for today and `YYYY-MM-DD HH:MM:SS` otherwise. */
function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const pad = (n) => String(n).padStart(2, "0");
  const day = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  const today = new Date();
  const isToday = d.toDateString() === today.toDateString();
  return isToday ? time : `${day} ${time}`;
}

function fmtNum(n, digits = 0) {
  if (n === undefined || n === null || Number.isNaN(n)) return "—";
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function fmtSeconds(s) {
  if (s === undefined || s === null || Number.isNaN(s)) return "—";
  if (s < 0.001) return `${fmtNum(s * 1e6)} µs`;
  if (s < 1) return `${fmtNum(s * 1000, 1)} ms`;
  if (s < 120) return `${fmtNum(s, 1)} s`;
  return `${fmtNum(s / 60, 1)} min`;
}

const badge = (status) => h("span", { class: `badge s-${status}` }, status);
const table = (head, rows) =>
  h("div", { class: "scroll" },
    h("table", {}, h("thead", {}, h("tr", {}, head.map((c) => h("th", { scope: "col" }, c)))), h("tbody", {}, rows)));
const isUuid = (s) => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s);
const streamLink = (id) => h("a", { href: `#/audit/stream/${encodeURIComponent(id)}` }, id);

function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

// ---------------------------------------------------------------- the API

class Problem extends Error {
  constructor(status, body) {
    super(body?.detail || body?.title || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

function token() {
  return sessionStorage.getItem(TOKEN);
}

/** A call to the API with the signed-in token; throws a Problem on a non-2xx answer. */
async function api(path, { method = "GET", body } = {}) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    throw new Problem(0, { title: "The server did not answer", detail: String(error) });
  }
  const text = await response.text();
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { detail: text };
  }
  if (!response.ok) {
    if (response.status === 401 && path.startsWith("/api/")) {
      sessionStorage.removeItem(TOKEN);
    }
    throw new Problem(response.status, parsed);
  }
  return { body: parsed, headers: response.headers };
}

const get = async (path) => (await api(path)).body;

function problemBox(error) {
  const body = error.body || {};
  return h("div", { class: "problem", role: "alert" },
    h("strong", {}, error.status ? `${error.status} ${body.title || ""}` : body.title || "Error"),
    h("p", {}, body.detail || error.message),
    (body.errors || []).length ? h("ul", {}, body.errors.map((e) => h("li", {}, `${e.field}: ${e.message}`))) : null);
}

/** The claims of the signed-in token, for display only (the API decides). */
function claims() {
  const t = token();
  if (!t) return null;
  try {
    const part = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
  } catch {
    return null;
  }
}

const isAdmin = () => claims()?.role === "admin";

// ---------------------------------------------------------------- feedback

let toastTimer;
function toast(message, kind = "ok") {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = `show ${kind}`;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { el.className = ""; }, 6000);
}

/**
 * Asks before a change. `extra` may hold inputs; `run` gets the dialog's form
 * and does the change; its error is shown in the dialog, which stays open.
 * Resolves to run's answer, or null when cancelled.
 */
function confirmAction({ title, text, action, extra, run }) {
  const dialog = document.getElementById("confirm");
  const form = document.getElementById("confirm-form");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const extraBox = document.getElementById("confirm-extra");
  fill(extraBox, ...(extra ? [extra] : []));
  const errorBox = document.getElementById("confirm-error");
  errorBox.textContent = "";
  const ok = document.getElementById("confirm-ok");
  ok.textContent = action;
  return new Promise((resolve) => {
    const onSubmit = async (event) => {
      if (event.submitter?.value !== "ok") return;
      event.preventDefault();
      if (!form.reportValidity()) return;
      ok.disabled = true;
      try {
        const answer = await run(form);
        cleanup();
        dialog.close();
        resolve(answer);
      } catch (error) {
        errorBox.textContent = error.message;
      } finally {
        ok.disabled = false;
      }
    };
    const onClose = () => { cleanup(); resolve(null); };
    const cleanup = () => {
      form.removeEventListener("submit", onSubmit);
      dialog.removeEventListener("close", onClose);
    };
    form.addEventListener("submit", onSubmit);
    dialog.addEventListener("close", onClose);
    dialog.showModal();
    (extra?.querySelector("input, textarea") || document.getElementById("confirm-cancel")).focus();
  });
}

/** Repeats `fn` every `ms` while the view is shown; the view's cleanup stops it. */
function every(ms, fn, view) {
  let stopped = false;
  let timer;
  const tick = async () => {
    if (stopped) return;
    try {
      await fn();
    } finally {
      if (!stopped) timer = setTimeout(tick, ms);
    }
  };
  tick();
  view.cleanups.push(() => { stopped = true; clearTimeout(timer); });
}

// ---------------------------------------------------------------- charts

/** A small line chart of `values` (newest last). */
function sparkline(values, { label, width = 220, height = 44 } = {}) {
  const box = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "spark", role: "img", "aria-label": label });
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length < 2) return box;
  const max = Math.max(...finite, 1e-9);
  const step = width / Math.max(values.length - 1, 1);
  const points = values
    .map((v, i) => (Number.isFinite(v) ? `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}` : null))
    .filter(Boolean)
    .join(" ");
  box.append(svg("polyline", { points, fill: "none", stroke: "currentColor", "stroke-width": 1.5 }));
  return box;
}

// ---------------------------------------------------------------- metrics

/** Parses Prometheus/OpenMetrics text into [{name, labels, value}]. */
function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

const sum = (samples, name, where = () => true) =>
  samples.filter((s) => s.name === name && where(s.labels)).reduce((a, s) => a + s.value, 0);

/** Cumulative bucket counts of a histogram, summed over every label but `le`. */
function buckets(samples, name) {
  const byLe = new Map();
  for (const s of samples) {
    if (s.name !== `${name}_bucket`) continue;
    const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
    byLe.set(le, (byLe.get(le) || 0) + s.value);
  }
  return [...byLe.entries()].sort((a, b) => a[0] - b[0]);
}

/** The q-quantile of the observations between two bucket readings (upper bound). */
function quantile(before, after, q) {
  const was = new Map(before);
  const delta = after.map(([le, n]) => [le, n - (was.get(le) || 0)]);
  const total = delta.length ? delta[delta.length - 1][1] : 0;
  if (total <= 0) return null;
  const want = q * total;
  for (const [le, n] of delta) {
    if (n >= want) return Number.isFinite(le) ? le : delta[delta.length - 2]?.[0] ?? null;
  }
  return null;
}

// ---------------------------------------------------------------- views

const views = {};

views.overview = (view) => {
  const history = { commands: [], commandP99: [], appendP99: [], relayLag: [] };
  let previous = null;
  const cards = h("div", { class: "cards" });
  const projBox = h("div");
  const sagaBox = h("div");
  append(main(), h("h1", {}, "Overview"),
    h("p", { class: "hint" }, `Rates and latencies over the last ${POLL_MS / 1000} s, read from /metrics; the charts keep two minutes.`),
    cards,
    h("div", { class: "two" }, h("section", {}, h("h2", {}, "Projections"), projBox), h("section", {}, h("h2", {}, "Sagas by status"), sagaBox)));

  const card = (id, title, value, chart, note) =>
    h("div", { class: "card", id }, h("h3", {}, title), h("div", { class: "big" }, value), chart, note ? h("div", { class: "hint" }, note) : null);
  const push = (list, v) => { list.push(v); if (list.length > 60) list.shift(); };

  every(POLL_MS, async () => {
    try {
      const [metricsText, projections, sagas] = await Promise.all([
        fetch("/metrics").then((r) => (r.ok ? r.text() : "")),
        get("/api/v1/admin/projections"),
        get("/api/v1/admin/sagas?limit=1"),
      ]);
      const samples = parseMetrics(metricsText);
      const now = performance.now();
      const reading = {
        at: now,
        commands: sum(samples, "fulcrum_commands_total"),
        command: buckets(samples, "fulcrum_command_duration_seconds"),
        append: buckets(samples, "fulcrum_append_duration_seconds"),
      };
      let rate = null, commandP50 = null, commandP99 = null, appendP99 = null;
      if (previous) {
        const seconds = (now - previous.at) / 1000;
        rate = Math.max(0, (reading.commands - previous.commands) / seconds);
        commandP50 = quantile(previous.command, reading.command, 0.5);
        commandP99 = quantile(previous.command, reading.command, 0.99);
        appendP99 = quantile(previous.append, reading.append, 0.99);
        push(history.commands, rate);
        push(history.commandP99, commandP99 ?? NaN);
        push(history.appendP99, appendP99 ?? NaN);
      }
      previous = reading;
      const relayEvents = sum(samples, "fulcrum_relay_lag_events");
      const relaySeconds = sum(samples, "fulcrum_relay_lag_seconds");
      const relayKnown = samples.some((s) => s.name === "fulcrum_relay_lag_events");
      push(history.relayLag, relayEvents);
      const deadLetters = projections.items.reduce((a, p) => a + p.dead_letters, 0);
      const counts = sagas.counts || {};
      fill(cards,
        card("m-commands", "Commands/s", fmtNum(rate, 1), sparkline(history.commands, { label: "commands per second" })),
        card("m-command-latency", "Command latency", `p50 ${fmtSeconds(commandP50)} · p99 ${fmtSeconds(commandP99)}`,
          sparkline(history.commandP99, { label: "command p99 latency" })),
        card("m-append-latency", "Append latency p99", fmtSeconds(appendP99), sparkline(history.appendP99, { label: "append p99 latency" })),
        card("m-relay", "Relay lag", relayKnown ? `${fmtNum(relayEvents)} events · ${fmtSeconds(relaySeconds)}` : "no relay in this process",
          sparkline(history.relayLag, { label: "relay lag in events" })),
        card("m-dead-letters", "Dead letters", fmtNum(deadLetters), null,
          deadLetters ? h("a", { href: "#/projections" }, "see projections") : "none"),
        card("m-stuck", "Stuck sagas", fmtNum(counts.stuck || 0), null,
          counts.stuck ? h("a", { href: "#/sagas?status=stuck" }, "see stuck sagas") : "none"),
      );
      fill(projBox, table(["Projection", "Status", "Position", "Lag", "Dead letters"],
        projections.items.map((p) => h("tr", {},
          h("td", {}, h("a", { href: `#/projections/${p.name}` }, p.name)), h("td", {}, badge(p.status)),
          h("td", { class: "num" }, fmtNum(p.position)), h("td", { class: "num" }, fmtNum(p.lag)),
          h("td", { class: "num" }, fmtNum(p.dead_letters))))));
      const most = Math.max(1, ...SAGA_STATUSES.map((s) => counts[s] || 0));
      fill(sagaBox, h("ul", { class: "bars", id: "saga-counts" }, SAGA_STATUSES.map((s) => {
        const bar = h("span", { class: `bar s-${s}` });
        bar.style.width = `${((counts[s] || 0) / most) * 100}%`;
        return h("li", {}, h("a", { href: `#/sagas?status=${s}` }, s), bar, h("span", { class: "num" }, fmtNum(counts[s] || 0)));
      })));
    } catch (error) {
      fill(cards, problemBox(error));
    }
  }, view);
};

views.sagas = (view, params) => {
  const status = params.get("status") || "";
  const cursor = params.get("cursor") || "";
  const search = h("form", { class: "inline", role: "search", onsubmit: (e) => {
    e.preventDefault();
    const id = e.target.elements.order.value.trim();
    if (!isUuid(id)) { searchError.textContent = "An order id is a UUID, e.g. 0f8fad5b-d9cb-469f-a165-70867728950e."; return; }
    location.hash = `#/sagas/${id.toLowerCase()}`;
  } },
  h("label", { for: "saga-search" }, "Order id"),
  h("input", { id: "saga-search", name: "order", placeholder: "order uuid", autocomplete: "off", size: 38 }),
  h("button", { type: "submit" }, "Find saga"));
  const searchError = h("p", { class: "error", role: "alert" });
  const filters = h("div", { class: "chips", role: "group", "aria-label": "Filter by status" });
  const list = h("div", {}, h("p", { class: "hint" }, "Loading…"));
  append(main(), h("h1", {}, "Sagas"), search, searchError, filters, list);

  const load = async () => {
    const q = new URLSearchParams({ limit: "50" });
    if (status) q.set("status", status);
    if (cursor) q.set("cursor", cursor);
    try {
      const page = await get(`/api/v1/admin/sagas?${q}`);
      const counts = page.counts || {};
      const total = Object.values(counts).reduce((a, n) => a + n, 0);
      fill(filters,
        h("a", { href: "#/sagas", class: status ? "chip" : "chip on", "aria-current": status ? null : "true" }, `all ${total}`),
        SAGA_STATUSES.map((s) => h("a", { href: `#/sagas?status=${s}`, class: status === s ? "chip on" : "chip", "aria-current": status === s ? "true" : null }, `${s} ${counts[s] || 0}`)));
      fill(list,
        page.items.length === 0 ? h("p", { class: "hint" }, "No sagas here.") :
          table(["Order", "Status", "Step", "Last error", "Started", "Updated"], page.items.map((s) => h("tr", {},
            h("td", {}, h("a", { href: `#/sagas/${s.order_id}`, class: "mono" }, s.order_id)), h("td", {}, badge(s.status)),
            h("td", {}, s.step || "—"), h("td", { class: "error-text" }, s.last_error || ""),
            h("td", {}, fmtTime(s.started_at)), h("td", {}, fmtTime(s.updated_at))))),
        page.next_cursor ? h("p", {}, h("a", { href: `#/sagas?${new URLSearchParams({ ...(status ? { status } : {}), cursor: page.next_cursor })}` }, "Next page →")) : null);
    } catch (error) {
      fill(list, problemBox(error));
    }
  };
  every(POLL_MS * 2, load, view);
};

views.saga = (view, params, orderId) => {
  const head = h("div");
  const steps = h("section", { class: "panel" }, h("h2", {}, "Saga timeline"), h("p", { class: "hint" }, "Loading…"));
  const order = h("section", { class: "panel" }, h("h2", {}, "The order's events"), h("p", { class: "hint" }, "Loading…"));
  const outcome = h("p", { id: "saga-outcome", role: "status" });
  append(main(), h("p", {}, h("a", { href: "#/sagas" }, "← Sagas")), h("h1", {}, "Saga ", h("span", { class: "mono" }, orderId)), head, outcome, h("div", { class: "two wide-first" }, steps, order));

  const act = (kind) => async () => {
    const reason = h("textarea", { id: "abort-reason", name: "reason", required: true, rows: 3, maxlength: 500 });
    const answer = await confirmAction(kind === "retry"
      ? { title: "Retry this saga?", text: "Its failing step is tried again at once.", action: "Retry", run: () => api(`/api/v1/admin/sagas/${orderId}/retry`, { method: "POST", body: {} }) }
      : { title: "Abort this saga?", text: "It takes no further step, and nothing it did is undone. You and the reason are recorded.", action: "Abort saga",
        extra: h("label", { for: "abort-reason" }, "Reason (required)", reason),
        run: () => api(`/api/v1/admin/sagas/${orderId}/abort`, { method: "POST", body: { reason: reason.value.trim() } }) });
    if (!answer) return;
    const message = `${kind === "retry" ? "Retried" : "Aborted"}: the saga is now ${answer.body.status}.`;
    outcome.textContent = message;
    toast(message);
    await load();
  };

  const load = async () => {
    try {
      const saga = await get(`/api/v1/admin/sagas/${orderId}`);
      const finished = ["completed", "compensated", "aborted"].includes(saga.status);
      const actions = [];
      if (isAdmin() && saga.status === "stuck") actions.push(h("button", { type: "button", id: "saga-retry", onclick: act("retry") }, "Retry failing step"));
      if (isAdmin() && !finished) actions.push(h("button", { type: "button", id: "saga-abort", class: "danger", onclick: act("abort") }, "Abort…"));
      fill(head, h("dl", { class: "facts" },
        h("dt", {}, "Status"), h("dd", { id: "saga-status" }, badge(saga.status)),
        saga.reason ? [h("dt", {}, "Cancel reason"), h("dd", {}, saga.reason)] : null,
        saga.aborted_by ? [h("dt", {}, "Aborted by"), h("dd", { id: "saga-aborted-by" }, saga.aborted_by)] : null,
        saga.abort_reason ? [h("dt", {}, "Abort reason"), h("dd", { id: "saga-abort-reason" }, saga.abort_reason)] : null,
        h("dt", {}, "Streams"), h("dd", {}, streamLink(`saga-${orderId}`), " · ", streamLink(`order-${orderId}`), " · ", streamLink(`payment-${orderId}`))),
      actions.length ? h("div", { class: "actions" }, actions) : (!isAdmin() && !finished ? h("p", { class: "hint" }, "Retry and abort need the admin role.") : null));
      fill(steps, h("h2", {}, "Saga timeline"),
        table(["Step", "Kind", "Status", "Attempts", "Error", "At", "Deadline"], saga.steps.map((s) => h("tr", { class: `kind-${s.kind}` },
          h("td", {}, s.name, s.sku ? h("span", { class: "hint" }, ` ${s.sku}`) : null), h("td", {}, s.kind), h("td", {}, badge(s.status)),
          h("td", { class: "num" }, s.attempts), h("td", { class: "error-text" }, s.error || ""),
          h("td", { class: "time", title: s.at || "" }, fmtTime(s.at)), h("td", { class: "time", title: s.deadline || "" }, fmtTime(s.deadline))))),
        h("h3", {}, "History"),
        h("ol", { class: "timeline", id: "saga-history" }, saga.history.map((e) => h("li", { class: e.user_id && e.user_id !== "saga" ? "operator" : "" },
          h("time", {}, fmtTime(e.recorded_at)), " ", h("strong", {}, e.event_type), e.user_id && e.user_id !== "saga" ? h("span", { class: "who-tag" }, ` by ${e.user_id}`) : null,
          h("details", {}, h("summary", {}, "data"), json(e.data))))));
    } catch (error) {
      fill(head, problemBox(error));
      return;
    }
    try {
      const events = await get(`/api/v1/audit/streams/${encodeURIComponent(`order-${orderId}`)}/events`);
      fill(order, h("h2", {}, "The order's events"), h("ol", { class: "timeline", id: "order-events" }, events.events.map((e) => h("li", {},
        h("time", {}, fmtTime(e.recorded_at)), " ", h("strong", {}, e.event_type), h("span", { class: "hint" }, ` v${e.version} · #${e.global_position}`),
        h("details", {}, h("summary", {}, "data"), json(e.data))))));
    } catch (error) {
      fill(order, h("h2", {}, "The order's events"), problemBox(error));
    }
  };
  every(POLL_MS * 2, load, view);
};

function rebuildCell(p) {
  const r = p.rebuild;
  if (!r) return h("span", { class: "hint" }, "never rebuilt");
  if (!r.finished_at) {
    const share = r.head ? Math.min(1, r.position / r.head) : 0;
    return h("div", { class: "rebuild running" },
      h("progress", { max: 1, value: share, "aria-label": `rebuild of ${p.name}` }),
      h("div", {}, `${fmtNum(r.events)} events · ${fmtNum(r.events_per_second)} ev/s · ETA ${fmtSeconds(r.eta_seconds)}`));
  }
  const seconds = (new Date(r.finished_at) - new Date(r.started_at)) / 1000;
  if (r.error) return h("div", { class: "rebuild error-text" }, `failed ${fmtTime(r.finished_at)}: ${r.error}`);
  return h("div", { class: "rebuild done" }, `swapped in ${fmtTime(r.finished_at)}: ${fmtNum(r.events)} events in ${fmtSeconds(seconds)} (${fmtNum(r.events / Math.max(seconds, 0.001))} ev/s)`);
}

views.projections = (view) => {
  const box = h("div", {}, h("p", { class: "hint" }, "Loading…"));
  const outcome = h("p", { id: "projection-outcome", role: "status" });
  append(main(), h("h1", {}, "Projections"), outcome, box);
  const rebuild = (name) => async () => {
    const answer = await confirmAction({ title: `Rebuild ${name}?`, action: "Rebuild",
      text: "Replays every event into fresh tables, then swaps them in. Queries keep answering from the current tables meanwhile.",
      run: () => api(`/api/v1/admin/projections/${name}/rebuild`, { method: "POST" }) });
    if (!answer) return;
    outcome.textContent = `Rebuild of ${name} started.`;
    toast(`Rebuild of ${name} started.`);
    await load();
  };
  const load = async () => {
    try {
      const list = await get("/api/v1/admin/projections");
      fill(box, table(["Projection", "Status", "Position", "Head", "Lag", "Dead letters", "Rebuild", ""],
        list.items.map((p) => h("tr", { id: `projection-${p.name}` },
          h("td", {}, h("a", { href: `#/projections/${p.name}` }, p.name)), h("td", { class: "status" }, badge(p.status)),
          h("td", { class: "num" }, fmtNum(p.position)), h("td", { class: "num" }, fmtNum(p.head)), h("td", { class: "num" }, fmtNum(p.lag)),
          h("td", { class: "num" }, p.dead_letters ? h("a", { href: `#/projections/${p.name}` }, fmtNum(p.dead_letters)) : "0"),
          h("td", {}, rebuildCell(p), p.last_error ? h("div", { class: "error-text" }, p.last_error) : null),
          h("td", {}, isAdmin() ? h("button", { type: "button", class: "rebuild-button", disabled: p.status === "rebuilding", onclick: rebuild(p.name) }, "Rebuild…") : null)))),
      isAdmin() ? null : h("p", { class: "hint" }, "Rebuilds need the admin role."));
    } catch (error) {
      fill(box, problemBox(error));
    }
  };
  every(1000, load, view);
};

views.projection = async (view, params, name) => {
  append(main(), h("p", {}, h("a", { href: "#/projections" }, "← Projections")), h("h1", {}, `Dead letters of ${name}`));
  try {
    const letters = await get(`/api/v1/admin/projections/${encodeURIComponent(name)}/dead-letters?limit=500`);
    append(main(), h("p", {}, `${fmtNum(letters.total)} in all; the first ${letters.items.length}, oldest first (the one that halted it comes first).`),
      letters.items.length ? table(["Event", "Stream", "Version", "Position", "Type", "Error", "At"], letters.items.map((d) => h("tr", {},
        h("td", { class: "mono" }, d.event_id), h("td", {}, streamLink(d.stream_id)), h("td", { class: "num" }, d.version),
        h("td", { class: "num" }, d.global_position), h("td", {}, d.event_type), h("td", { class: "error-text" }, d.error),
        h("td", {}, fmtTime(d.recorded_at))))) : h("p", { class: "hint" }, "None."));
  } catch (error) {
    append(main(), problemBox(error));
  }
};

function eventRow(e) {
  return h("tr", {},
    h("td", { class: "num" }, e.global_position), h("td", {}, e.event_type), h("td", {}, streamLink(e.stream_id)),
    h("td", { class: "num" }, e.version), h("td", {}, e.metadata?.user_id || ""),
    h("td", {}, e.metadata?.correlation_id ? h("a", { href: `#/audit/correlation/${encodeURIComponent(e.metadata.correlation_id)}`, class: "mono" }, e.metadata.correlation_id.slice(0, 13)) : ""),
    h("td", {}, fmtTime(e.recorded_at)),
    h("td", {}, h("a", { href: `#/audit/proof/${e.event_id}` }, "proof")));
}
const EVENT_HEAD = ["#", "Type", "Stream", "Version", "User", "Correlation", "Recorded", ""];

const AUDIT_FILTERS = [
  ["event_type", "Event type", "OrderPlaced"], ["stream_type", "Stream type", "order"], ["stream_id", "Stream id", "order-…"],
  ["user_id", "User", "alice"], ["correlation_id", "Correlation id", ""], ["from", "From", ""], ["to", "To", ""],
];

function auditTabs(current) {
  return h("nav", { class: "chips", "aria-label": "Audit views" },
    [["search", "#/audit", "Event search"], ["seals", "#/audit/seals", "Seals"]].map(([k, href, label]) =>
      h("a", { href, class: current === k ? "chip on" : "chip" }, label)));
}

views.audit = (view, params) => {
  const form = h("form", { class: "filters", id: "audit-search", onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const [key] of AUDIT_FILTERS) {
      const v = e.target.elements[key].value.trim();
      if (!v) continue;
      q.set(key, key === "from" || key === "to" ? new Date(v).toISOString() : v);
    }
    const limit = e.target.elements.limit.value;
    if (limit) q.set("limit", limit);
    location.hash = `#/audit?${q}`;
  } },
  AUDIT_FILTERS.map(([key, label, placeholder]) => {
    let value = params.get(key) || "";
    if ((key === "from" || key === "to") && value) {
      const d = new Date(value);
      value = Number.isNaN(d.getTime()) ? "" : new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
    }
    return h("label", {}, label, h("input", { name: key, value, placeholder, type: key === "from" || key === "to" ? "datetime-local" : "text", step: 1 }));
  }),
  h("label", {}, "Per page", h("input", { name: "limit", type: "number", min: 1, max: 500, value: params.get("limit") || "50" })),
  h("button", { type: "submit" }, "Search"));
  const results = h("div", { id: "audit-results" });
  const jump = h("form", { class: "inline", onsubmit: (e) => {
    e.preventDefault();
    const id = e.target.elements.stream.value.trim();
    if (id) location.hash = `#/audit/stream/${encodeURIComponent(id)}`;
  } }, h("label", { for: "stream-jump" }, "Open a stream"), h("input", { id: "stream-jump", name: "stream", placeholder: "order-<uuid>, inventory-SKU…" }), h("button", { type: "submit" }, "Open"));
  append(main(), h("h1", {}, "Audit"), auditTabs("search"), jump, form, results);
  (async () => {
    const q = new URLSearchParams(params);
    try {
      const page = await get(`/api/v1/audit/events?${q}`);
      const next = new URLSearchParams(params);
      if (page.next_cursor) next.set("after", page.next_cursor);
      fill(results,
        h("p", { class: "hint" }, `${page.items.length} events${params.get("after") ? " after the cursor" : ""}, in global order.`),
        table(EVENT_HEAD, page.items.map(eventRow)),
        h("p", {}, params.get("after") ? h("a", { href: "#/audit?" + (() => { const p = new URLSearchParams(params); p.delete("after"); return p; })() }, "← First page") : null,
          " ", page.next_cursor ? h("a", { href: `#/audit?${next}`, id: "audit-next" }, "Next page →") : h("span", { class: "hint" }, "Last page.")));
    } catch (error) {
      fill(results, problemBox(error));
    }
  })();
};

views.stream = async (view, params, streamId) => {
  const verify = h("div", { id: "verify-result", class: "verify" }, "Verifying…");
  const state = h("div", { id: "stream-state" });
  const events = h("div");
  const travel = h("form", { class: "inline", id: "state-form", onsubmit: async (e) => {
    e.preventDefault();
    const version = e.target.elements.version.value;
    const q = version ? `version=${encodeURIComponent(version)}` : "";
    try {
      const answer = await get(`/api/v1/audit/streams/${encodeURIComponent(streamId)}/state?${q}`);
      fill(state, h("p", {}, `State at version ${answer.version}:`), json(answer.state));
    } catch (error) {
      fill(state, problemBox(error));
    }
  } }, h("label", { for: "state-version" }, "State at version"), h("input", { id: "state-version", name: "version", type: "number", min: 1 }), h("button", { type: "submit" }, "Fold"));
  append(main(), h("p", {}, h("a", { href: "#/audit" }, "← Audit")), h("h1", {}, "Stream ", h("span", { class: "mono" }, streamId)), verify,
    h("section", { class: "panel" }, h("h2", {}, "Time travel"), travel, state), h("h2", {}, "History"), events);
  try {
    const [answer, check] = await Promise.all([
      get(`/api/v1/audit/streams/${encodeURIComponent(streamId)}/events`),
      get(`/api/v1/audit/streams/${encodeURIComponent(streamId)}/verify`),
    ]);
    verify.className = `verify ${check.valid ? "valid" : "invalid"}`;
    fill(verify, check.valid
      ? `Hash chain verified: ${check.events_checked} events intact.`
      : `Verification FAILED at version ${check.first_invalid_version} (${check.events_checked} events checked): the stored event does not match its hash chain.`);
    fill(events, table(["Version", "#", "Type", "User", "Recorded", "Hash", "Data"], answer.events.map((e) => h("tr", {
      class: !check.valid && e.version >= check.first_invalid_version ? "tampered" : "" },
      h("td", { class: "num" }, e.version), h("td", { class: "num" }, e.global_position), h("td", {}, e.event_type),
      h("td", {}, e.metadata?.user_id || ""), h("td", {}, fmtTime(e.recorded_at)), h("td", { class: "mono" }, (e.hash || "").slice(0, 12)),
      h("td", {}, h("details", {}, h("summary", {}, "data"), json(e.data)))))));
  } catch (error) {
    verify.className = "verify";
    fill(verify, problemBox(error));
  }
};

function causalTree(nodes) {
  return h("ul", { class: "tree" }, nodes.map((n) => h("li", {},
    h("strong", {}, n.event.event_type), " ", streamLink(n.event.stream_id), h("span", { class: "hint" }, ` v${n.event.version} · #${n.event.global_position} · ${n.event.metadata?.user_id || ""}`),
    n.caused.length ? causalTree(n.caused) : null)));
}

views.correlation = async (view, params, id) => {
  append(main(), h("p", {}, h("a", { href: "#/audit" }, "← Audit")), h("h1", {}, "Correlation ", h("span", { class: "mono" }, id)));
  try {
    const tree = await get(`/api/v1/audit/correlations/${encodeURIComponent(id)}?format=tree`);
    append(main(), h("p", {}, `${tree.events} events caused by one request, as a causal tree across streams${tree.truncated ? " (truncated)" : ""}.`),
      h("div", { id: "causal-tree" }, causalTree(tree.roots)));
  } catch (error) {
    append(main(), problemBox(error));
  }
};

views.seals = async (view) => {
  const box = h("div");
  const seal = async () => {
    const answer = await confirmAction({ title: "Seal now?", text: "Signs a new seal over every event committed so far.", action: "Seal",
      run: () => api("/api/v1/audit/seals", { method: "POST" }) });
    if (answer) { toast("Sealed."); await load(); }
  };
  append(main(), h("h1", {}, "Audit"), auditTabs("seals"), h("p", {}, h("button", { type: "button", onclick: seal }, "Seal now…")), box);
  const load = async () => {
    try {
      const page = await get("/api/v1/audit/seals?limit=500");
      fill(box, h("p", {}, "Public key: ", h("code", {}, page.public_key || "none configured")),
        table(["Seal", "Events", "Up to #", "Root", "Previous", "Sealed"], page.items.slice().reverse().map((s) => h("tr", {},
          h("td", { class: "num" }, s.seal_id), h("td", { class: "num" }, s.events ?? s.tree_size), h("td", { class: "num" }, s.up_to_position),
          h("td", { class: "mono" }, s.root.slice(0, 16)), h("td", { class: "mono" }, s.previous.slice(0, 16)), h("td", {}, fmtTime(s.sealed_at))))));
    } catch (error) {
      fill(box, problemBox(error));
    }
  };
  load();
};

const hex = (s) => new Uint8Array(s.match(/../g).map((b) => parseInt(b, 16)));
const toHex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");
async function sha256(...parts) {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { all.set(p, at); at += p.length; }
  return new Uint8Array(await crypto.subtle.digest("SHA-256", all));
}

/** The root an RFC 6962 §2.1.1 audit path leads to from a leaf hash. */
async function rootFromPath(leaf, index, size, path) {
  let fn = index, sn = size - 1, r = leaf;
  for (const p of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await sha256(new Uint8Array([1]), p, r);
      while (fn % 2 === 0 && fn !== 0) { fn >>= 1; sn >>= 1; }
    } else {
      r = await sha256(new Uint8Array([1]), r, p);
    }
    fn >>= 1; sn >>= 1;
  }
  return sn === 0 ? r : null;
}

views.proof = async (view, params, eventId) => {
  append(main(), h("p", {}, h("a", { href: "#/audit" }, "← Audit")), h("h1", {}, "Inclusion proof"));
  try {
    const proof = await get(`/api/v1/audit/events/${encodeURIComponent(eventId)}/proof`);
    const found = await get(`/api/v1/audit/events?${new URLSearchParams({ after: String(proof.leaf_index), limit: "1" })}`);
    const event = found.items.find((e) => e.event_id === eventId);
    let check = "Your browser cannot compute SHA-256 here (it needs a secure context); check it with the audit CLI.";
    if (event && globalThis.crypto?.subtle) {
      const leaf = await sha256(new Uint8Array([0]), hex(event.hash));
      const root = await rootFromPath(leaf, proof.leaf_index, proof.tree_size, proof.audit_path.map(hex));
      check = root && toHex(root) === proof.root
        ? "Checked in this browser: the audit path leads from the event's hash to the seal's root."
        : "Checked in this browser: the audit path does NOT lead to the seal's root.";
    }
    append(main(), h("p", { id: "proof-check", class: "verify" }, check), h("dl", { class: "facts" },
      h("dt", {}, "Event"), h("dd", { class: "mono" }, eventId),
      event ? [h("dt", {}, "Stream"), h("dd", {}, streamLink(event.stream_id), ` v${event.version}`)] : null,
      h("dt", {}, "Seal"), h("dd", {}, proof.seal_id), h("dt", {}, "Leaf"), h("dd", {}, `${proof.leaf_index} of ${proof.tree_size}`),
      h("dt", {}, "Root"), h("dd", { class: "mono" }, proof.root)),
    h("h2", {}, "Audit path"), h("ol", { class: "mono" }, proof.audit_path.map((p) => h("li", {}, p))));
  } catch (error) {
    append(main(), problemBox(error));
  }
};

views.live = (view) => {
  const events = [];
  let after = null;
  let paused = false;
  const typeFilter = h("input", { id: "live-type", placeholder: "event type", oninput: () => render() });
  const streamFilter = h("input", { id: "live-stream", placeholder: "stream id contains", oninput: () => render() });
  const pause = h("button", { type: "button", "aria-pressed": "false", onclick: () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
  } }, "Pause");
  const body = h("tbody", { id: "live-events" });
  const note = h("p", { class: "hint" });
  append(main(), h("h1", {}, "Live log"), h("div", { class: "inline" }, h("label", {}, "Type ", typeFilter), h("label", {}, "Stream ", streamFilter), pause), note,
    h("div", { class: "scroll" }, h("table", {}, h("thead", {}, h("tr", {}, EVENT_HEAD.map((c) => h("th", { scope: "col" }, c)))), body)));
  const render = () => {
    const t = typeFilter.value.trim().toLowerCase();
    const s = streamFilter.value.trim().toLowerCase();
    fill(body, ...events.filter((e) => (!t || e.event_type.toLowerCase().includes(t)) && (!s || e.stream_id.toLowerCase().includes(s))).slice(0, 200).map(eventRow));
  };
  every(1000, async () => {
    if (paused) return;
    try {
      if (after === null) {
        const { items } = await get("/api/v1/admin/projections");
        after = Math.max(0, (items[0]?.head || 0) - 50);
      }
      for (let pages = 0; pages < 10; pages++) {
        const page = await get(`/api/v1/audit/events?after=${after}&limit=500`);
        for (const e of page.items) events.unshift(e);
        if (page.items.length) after = page.items[page.items.length - 1].global_position;
        if (!page.next_cursor) break;
      }
      events.splice(1000);
      note.textContent = `Newest first; up to position ${after}. Shows the latest 200 that match.`;
      render();
    } catch (error) {
      fill(note, problemBox(error));
    }
  }, view);
};

// ---------------------------------------------------------------- sign-in

function signIn() {
  const dev = document.body.dataset.dev === "true";
  const error = h("div", { id: "sign-in-error" });
  const use = (t) => { sessionStorage.setItem(TOKEN, t); route(); };
  const paste = h("form", { id: "token-form", onsubmit: (e) => {
    e.preventDefault();
    const t = e.target.elements.token.value.trim();
    if (t.split(".").length !== 3) { fill(error, h("p", { class: "error" }, "That is not a JWT (three dot-separated parts).")); return; }
    use(t);
  } },
  h("label", { for: "token" }, "Bearer token"),
  h("textarea", { id: "token", name: "token", rows: 4, required: true, placeholder: "eyJhbGciOi…", spellcheck: "false" }),
  h("button", { type: "submit", id: "token-sign-in" }, "Sign in"));
  const devBox = dev ? h("section", { class: "panel", id: "dev-sign-in" }, h("h2", {}, "Development sign-in"),
    h("p", { class: "hint" }, "This server runs with --dev: pick a role. The name is the token's subject (dev-<role> when empty)."),
    h("label", { for: "dev-name" }, "Name"), h("input", { id: "dev-name", placeholder: "dev-<role>", maxlength: 64 }),
    h("div", { class: "actions" }, ["operator", "admin", "customer"].map((role) => h("button", { type: "button", id: `dev-${role}`, onclick: async () => {
      try {
        const name = document.getElementById("dev-name").value.trim();
        const { body } = await api("/console/dev-sign-in", { method: "POST", body: name ? { role, name } : { role } });
        use(body.token);
      } catch (e) { fill(error, problemBox(e)); }
    } }, `as ${role}`)))) : null;
  fill(main(), h("h1", {}, "Sign in"),
    h("p", {}, "The console reads and acts through /api/v1 with your token; operators and admins see everything, only admins act."),
    error, devBox, h("section", { class: "panel" }, h("h2", {}, "With a token"), paste,
      h("p", { class: "hint" }, "Mint one with ", h("code", {}, dev ? "fulcrum token --dev --sub you --role operator" : "fulcrum token --sub you --role operator"),
        dev ? "." : " (with the server's JWT_SECRET), or use your identity provider's.")));
}

/** Whether the token may read the operator routes: 'ok', 'forbidden' or a Problem. */
let access = null;
async function checkAccess() {
  if (access) return access;
  try {
    await get("/api/v1/admin/projections");
    access = "ok";
  } catch (error) {
    if (error.status === 403) access = "forbidden";
    else throw error;
  }
  return access;
}

// ---------------------------------------------------------------- routing

const ROUTES = [
  [/^overview$/, "overview", views.overview],
  [/^sagas$/, "sagas", views.sagas],
  [/^sagas\/([^/]+)$/, "sagas", views.saga],
  [/^projections$/, "projections", views.projections],
  [/^projections\/([^/]+)$/, "projections", views.projection],
  [/^audit$/, "audit", views.audit],
  [/^audit\/seals$/, "audit", views.seals],
  [/^audit\/stream\/(.+)$/, "audit", views.stream],
  [/^audit\/correlation\/(.+)$/, "audit", views.correlation],
  [/^audit\/proof\/(.+)$/, "audit", views.proof],
  [/^live$/, "live", views.live],
];

let current = { cleanups: [] };

async function route() {
  for (const stop of current.cleanups) stop();
  current = { cleanups: [] };
  const view = current;
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  const out = document.getElementById("sign-out");
  fill(main(), );
  if (!token()) {
    access = null;
    nav.hidden = true; out.hidden = true; who.textContent = "";
    signIn();
    return;
  }
  const c = claims();
  who.textContent = c ? `${c.sub} · ${c.role}` : "";
  out.hidden = false;
  let allowed;
  try {
    allowed = await checkAccess();
  } catch (error) {
    if (view !== current) return;
    if (!token()) {
      // A refused token (401) was dropped: sign in again, seeing why.
      nav.hidden = true; out.hidden = true; who.textContent = "";
      signIn();
      document.getElementById("sign-in-error").replaceChildren(problemBox(error));
      return;
    }
    fill(main(), h("h1", {}, "The server did not answer"), problemBox(error));
    return;
  }
  if (view !== current) return;
  if (allowed !== "ok") {
    nav.hidden = true;
    fill(main(), h("h1", {}, "No operator pages for this role"),
      h("p", { id: "refused" }, `Signed in as ${c?.sub ?? "?"} with role ${c?.role ?? "?"}: the API refuses this token on operator routes (403), so the console has nothing to show. Sign in as an operator or admin.`));
    return;
  }
  nav.hidden = false;
  const raw = location.hash.replace(/^#\/?/, "") || "overview";
  const [path, query = ""] = raw.split("?");
  for (const [pattern, section, render] of ROUTES) {
    const m = path.match(pattern);
    if (!m) continue;
    for (const a of nav.querySelectorAll("a")) {
      if (a.dataset.section === section) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    render(view, new URLSearchParams(query), ...m.slice(1).map(decodeURIComponent));
    return;
  }
  fill(main(), h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/overview" }, "Go to the overview")));
}

document.getElementById("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN);
  access = null;
  location.hash = "#/overview";
  route();
});
window.addEventListener("hashchange", () => { route(); main().focus({ preventScroll: true }); });
route();

// A fault in the console itself is shown, not swallowed by the dev tools.
window.addEventListener("error", (event) => toast(`Console error: ${event.message}`, "error"));
window.addEventListener("unhandledrejection", (event) => toast(`Console error: ${event.reason?.message ?? event.reason}`, "error"));
