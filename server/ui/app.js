// The redeemd operator dashboard: one module, no dependencies. It talks to
// the same JSON API as every other client, with the token the operator
// typed, kept in this tab's sessionStorage and sent only in the
// Authorization header (never in a URL, so it never reaches a log or a
// Referer). Every string from the server is placed with textContent, never
// parsed as HTML.

const TOKEN_KEY = "redeemd.token";
const STATES = ["available", "assigned", "reserved", "redeemed", "voided"];
const RATES = [
  ["redemptions_per_second", "redemptions/s", "redeemed"],
  ["assignments_per_second", "assignments/s", "assigned"],
  ["failed_attempts_per_second", "failed attempts/s", "failed"],
];
// Chart ranges: seconds of history and how often to refresh them. A day is
// 8,640 points, so it is fetched less often than the live ten minutes.
const RANGES = { "10 min": [600, 2000], "1 h": [3600, 5000], "24 h": [86400, 15000] };
// Events kept on a campaign page.
const EVENTS_SHOWN = 30;
// Records one events poll asks for, and the shortest time between polls.
const EVENTS_LIMIT = 1000;
const EVENTS_POLL_MS = 1000;

const numberFormat = new Intl.NumberFormat("en-US");
const rateFormat = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
const fmt = (n) => numberFormat.format(n);
const fmtRate = (n) => rateFormat.format(n);

/** "in 4 min", "in 2 h", or "—" when the pool is not being used up. */
export function eta(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 60) return `in ${Math.max(1, Math.round(seconds))} s`;
  if (seconds < 3600) return `in ${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `in ${Math.round(seconds / 3600)} h`;
  return `in ${fmt(Math.round(seconds / 86400))} days`;
}

// ---- DOM helpers ------------------------------------------------------

/** An element with attributes (on* as listeners) and children. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

const main = () => document.getElementById("main");

function flash(message, ok = false) {
  const el = document.getElementById("flash");
  el.className = ok ? "ok" : "";
  el.textContent = message;
}

// ---- API --------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code || "";
    this.body = body;
  }
}

const token = () => sessionStorage.getItem(TOKEN_KEY);

/** A call with the token; JSON in and out unless told otherwise. */
async function api(method, path, { json, body, type, raw, signal } = {}) {
  const headers = { Authorization: `Bearer ${token()}` };
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (type) {
    headers["Content-Type"] = type;
  }
  const response = await fetch(path, { method, headers, body, signal, cache: "no-store" });
  if (!response.ok) {
    let parsed = null;
    try { parsed = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, parsed);
  }
  if (raw) return response;
  return response.json();
}

/** A message a person can act on, naming the role a 403 needs. */
function explain(error, role = "admin") {
  if (!(error instanceof ApiError)) return `Could not reach redeemd: ${error.message}`;
  if (error.status === 401) return "That token is not accepted (401 unauthenticated). Sign in again.";
  if (error.status === 403) return `This token's role may not do that: it needs the ${role} role (403 forbidden).`;
  return `${error.message} (${error.status} ${error.code})`;
}

/** Runs an action, reporting its failure; a 401 signs out. */
async function attempt(action, role) {
  try {
    return await action();
  } catch (error) {
    if (error.name === "AbortError") return undefined;
    flash(explain(error, role));
    if (error instanceof ApiError && error.status === 401) signOut();
    return undefined;
  }
}

/** Saves a response body as a file, without putting anything in a URL bar. */
async function download(response, name) {
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ---- pages ------------------------------------------------------------

// Work of the page on screen (timers, long-polls), stopped when it changes.
let pageAbort = new AbortController();

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  location.hash = "#/";
  render();
}

function signInPage() {
  document.getElementById("nav").hidden = true;
  const input = h("input", { id: "token", type: "password", autocomplete: "off", required: true });
  const form = h("form", { class: "panel signin", id: "signin" },
    h("h1", {}, "Sign in"),
    h("p", { class: "muted" }, "Paste an admin token. It stays in this tab only and is sent to this server alone."),
    h("label", { for: "token" }, "Token"),
    input,
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    try {
      await api("GET", "/v1/campaigns");
      flash("");
      render();
    } catch (error) {
      sessionStorage.removeItem(TOKEN_KEY);
      flash(error instanceof ApiError && error.status === 403
        ? "This token is valid but its role cannot use the dashboard: it needs the admin role (403 forbidden)."
        : explain(error));
    }
  });
  main().replaceChildren(form);
  input.focus();
}

function stateBar(stats) {
  const total = STATES.reduce((sum, k) => sum + stats[k], 0);
  const bar = h("div", {
    class: "bar", role: "img",
    "aria-label": STATES.map((k) => `${fmt(stats[k])} ${k}`).join(", "),
  });
  for (const k of STATES) {
    if (!stats[k]) continue;
    const part = h("span", { class: `s-${k}`, title: `${k}: ${fmt(stats[k])}` });
    part.style.width = `${(100 * stats[k]) / total}%`;
    bar.append(part);
  }
  return bar;
}

function legend(items) {
  return h("div", { class: "legend" },
    items.map(([cls, label]) => h("span", {}, h("i", { class: `s-${cls}` }), label)));
}

/** Guesses this minute per campaign, from the open `/metrics`. */
async function guessesByCampaign(signal) {
  const out = {};
  try {
    const text = await (await fetch("/metrics", { signal, cache: "no-store" })).text();
    for (const m of text.matchAll(/^redeemd_guesses_this_minute\{campaign="([^"]*)"\} (\d+)/gm)) {
      out[m[1]] = Number(m[2]);
    }
  } catch { /* metrics are a hint only */ }
  return out;
}

function badges(c, guesses) {
  const list = [];
  if (c.paused) list.push(h("span", { class: "badge paused" }, "paused"));
  if (c.stats.low_stock) list.push(h("span", { class: "badge low" }, "low stock"));
  const alertAt = c.guessing_alert_per_minute;
  if (alertAt && (guesses[c.id] || 0) > alertAt) {
    list.push(h("span", { class: "badge guess", title: `${fmt(guesses[c.id])} guesses this minute` }, "guessing"));
  }
  return list;
}

async function listPage(signal) {
  const tbody = h("tbody", { id: "campaign-rows" });
  const form = createForm();
  main().replaceChildren(
    h("h1", {}, "Campaigns"),
    h("div", { class: "panel" },
      legend(STATES.map((k) => [k, k])),
      h("div", { class: "table-wrap" },
        h("table", {},
          h("thead", {}, h("tr", {},
            h("th", {}, "Campaign"), h("th", { class: "hide-narrow" }, "Prefix"),
            h("th", {}, "Codes"), h("th", { class: "num" }, "Redeemed/s"),
            h("th", { class: "num" }, "Runs out"), h("th", {}, ""))),
          tbody))),
    form);
  const refresh = async () => {
    const [data, guesses] = await Promise.all([
      api("GET", "/v1/campaigns", { signal }), guessesByCampaign(signal)]);
    tbody.replaceChildren(...data.campaigns.map((c) => h("tr", { "data-campaign": c.id },
      h("td", {}, h("a", { href: `#/campaigns/${encodeURIComponent(c.id)}` }, c.id)),
      h("td", { class: "hide-narrow mono" }, c.code.prefix || "—"),
      h("td", {}, stateBar(c.stats), h("small", { class: "muted" }, `${fmt(c.stats.total)} codes`)),
      h("td", { class: "num" }, fmtRate(c.stats.redemptions_per_second)),
      h("td", { class: "num" }, eta(c.stats.depletion_eta_seconds)),
      h("td", {}, badges(c, guesses)))));
    if (!data.campaigns.length) {
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No campaigns yet: create one below.")));
    }
  };
  await attempt(refresh);
  poll(signal, 2000, refresh);
}

function createForm() {
  const field = (id, label, attrs = {}) => h("div", {},
    h("label", { for: id }, label), h("input", { id, name: id, ...attrs }));
  const form = h("form", { class: "panel", id: "create" },
    h("h2", {}, "Create a campaign"),
    h("div", { class: "row" },
      field("new-id", "Id (a-z, 0-9, -)", { required: true, pattern: "[a-z0-9-]{1,64}" }),
      field("new-prefix", "Code prefix (A-Z, 0-9)", { pattern: "[A-Z0-9]{0,8}" }),
      field("new-generate", "Codes to generate", { type: "number", min: 0, value: 1000 }),
      field("new-limit", "Per-user limit (0 = none)", { type: "number", min: 0, value: 1 }),
      field("new-low", "Low-stock threshold", { type: "number", min: 0, value: 0 })),
    h("button", { type: "submit" }, "Create"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const v = (id) => form.querySelector(`#${id}`).value;
    const id = v("new-id").trim();
    const created = await attempt(() => api("POST", "/v1/campaigns", {
      json: {
        id,
        generate: Number(v("new-generate") || 0),
        code: { prefix: v("new-prefix").trim().toUpperCase() },
        per_user_limit: Number(v("new-limit") || 0),
        low_stock_threshold: Number(v("new-low") || 0),
      },
    }));
    if (created) {
      flash(`Created ${created.id} with ${fmt(created.stats.total)} codes.`, true);
      location.hash = `#/campaigns/${encodeURIComponent(created.id)}`;
    }
  });
  return form;
}

/** Calls `f` every `ms` until the page changes; a failure is shown once. */
function poll(signal, ms, f) {
  let timer = null;
  const tick = async () => {
    if (signal.aborted) return;
    await attempt(f);
    if (!signal.aborted) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  signal.addEventListener("abort", () => clearTimeout(timer));
}

// ---- chart --------------------------------------------------------------

/** Lines of `series` ([key, class]) over `points`, as SVG. */
function chart(points, series, title) {
  const W = 600, H = 200, L = 48, R = 8, T = 10, B = 22;
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img" });
  svg.append(Object.assign(s("title"), { textContent: title }));
  if (!points.length) return svg;
  // The last point is the interval in progress: its values hold until now,
  // so lines run to the right edge (and a single point still draws).
  const tLast = Date.parse(points[points.length - 1].at);
  const t0 = Date.parse(points[0].at), t1 = Math.max(Date.now(), tLast + 1000);
  let max = 0;
  for (const p of points) for (const [k] of series) max = Math.max(max, p[k]);
  max = max || 1;
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  svg.append(s("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  svg.append(s("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  for (const v of [0, max / 2, max]) {
    const label = s("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" });
    label.textContent = max < 10 ? fmtRate(v) : fmt(Math.round(v));
    svg.append(label);
  }
  for (const [t, anchor] of [[t0, "start"], [t1, "end"]]) {
    const label = s("text", { x: x(t), y: H - 6, "text-anchor": anchor });
    label.textContent = new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    svg.append(label);
  }
  for (const [k, cls] of series) {
    const d = points.map((p, i) => `${i ? "L" : "M"}${x(Date.parse(p.at)).toFixed(1)},${y(p[k]).toFixed(1)}`).join("")
      + `L${x(t1).toFixed(1)},${y(points[points.length - 1][k]).toFixed(1)}`;
    svg.append(s("path", { class: `l-${cls}`, d, "vector-effect": "non-scaling-stroke" }));
  }
  return svg;
}

// ---- campaign page ------------------------------------------------------

function eventLine(e) {
  const detail = [e.code, e.recipient, e.user, e.count !== undefined ? `${fmt(e.count)} codes` : null,
    e.available !== undefined ? `${fmt(e.available)} left` : null,
    e.attempts !== undefined ? `${fmt(e.attempts)} attempts` : null].filter(Boolean).join(" · ");
  return h("li", { "data-kind": e.kind },
    h("time", { datetime: e.at }, new Date(e.at).toLocaleTimeString()),
    h("span", { class: "kind" }, e.kind.replaceAll("_", " ")),
    h("span", { class: "mono" }, detail));
}

/** Resolves after `ms`, or at once when the page changes. */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

/**
 * Long-polls `/v1/events` from `after`, keeping this campaign's newest.
 * At most one poll each EVENTS_POLL_MS: under load every poll would answer
 * at once, and the page would then cost the server (and the browser) a
 * request per round trip for events nobody can read that fast. A page
 * that is more than EVENTS_LIMIT records behind the log's end (`logEnd`,
 * from the chart's refresh) skips to the newest EVENTS_LIMIT: only the
 * latest are shown.
 */
async function followEvents(id, after, list, signal, logEnd) {
  const shown = [];
  while (!signal.aborted) {
    const started = Date.now();
    after = Math.max(after, logEnd() - EVENTS_LIMIT);
    try {
      const response = await api("GET", `/v1/events?after=${after}&limit=${EVENTS_LIMIT}&wait_seconds=25`,
        { raw: true, signal });
      const text = await response.text();
      for (const line of text.split("\n")) {
        if (!line) continue;
        const e = JSON.parse(line);
        after = Math.max(after, e.lsn);
        if (e.campaign !== id) continue;
        shown.unshift(e);
      }
      shown.length = Math.min(shown.length, EVENTS_SHOWN);
      list.replaceChildren(...(shown.length ? shown.map(eventLine) : [h("li", { class: "muted" }, "No events yet.")]));
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.code === "events_truncated") {
        after = error.body.error.oldest_lsn - 1;
        continue;
      }
      flash(explain(error));
      await sleep(5000, signal);
    }
    await sleep(EVENTS_POLL_MS - (Date.now() - started), signal);
  }
}

function fileForm({ id, title, help, button, extra = [], onfile }) {
  const input = h("input", { id, type: "file", required: true });
  const form = h("form", { class: "panel", id: `${id}-form` },
    h("h2", {}, title), h("p", { class: "muted" }, help),
    h("label", { for: id }, "File"), input, ...extra,
    h("button", { type: "submit" }, button));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const file = input.files[0];
    if (!file) return;
    const button = form.querySelector("button");
    button.disabled = true;
    try { await onfile(file, form); } finally { button.disabled = false; }
  });
  return form;
}

/** Counts of the `status` column of a CSV answer, for a summary line. */
function statusSummary(csv) {
  const counts = {};
  for (const line of csv.split("\n").slice(1)) {
    if (!line) continue;
    const status = line.slice(line.lastIndexOf(",") + 1);
    counts[status] = (counts[status] || 0) + 1;
  }
  return Object.entries(counts).map(([k, n]) => `${fmt(n)} ${k}`).join(", ");
}

async function campaignPage(id, signal) {
  const base = `/v1/campaigns/${encodeURIComponent(id)}`;
  let campaign = await api("GET", base, { signal });
  let range = "10 min";

  const title = h("h1", {}, id);
  const statsBox = h("div", { class: "stats", id: "stats" });
  const bar = h("div", {});
  const stateChart = h("div", { id: "state-chart" });
  const rateChart = h("div", { id: "rate-chart" });
  const events = h("ul", { class: "events", id: "events" }, h("li", { class: "muted" }, "Waiting for events…"));
  const settings = h("dl", { class: "settings", id: "settings" });
  const pause = h("button", { type: "button", id: "pause", class: "secondary" });
  const rangeSelect = h("select", { id: "range", "aria-label": "Chart range" },
    Object.keys(RANGES).map((k) => h("option", { value: k }, k)));

  const showCampaign = (c) => {
    campaign = c;
    title.replaceChildren(c.id, " ", ...badges(c, {}));
    const st = c.stats;
    statsBox.replaceChildren(
      ...STATES.map((k) => h("div", { class: "stat", "data-stat": k }, h("b", {}, fmt(st[k])), h("small", {}, k))),
      h("div", { class: "stat", "data-stat": "rate" }, h("b", {}, fmtRate(st.redemptions_per_second)), h("small", {}, "redeemed/s (1 min)")),
      h("div", { class: "stat", "data-stat": "eta" }, h("b", {}, eta(st.depletion_eta_seconds)), h("small", {}, "pool runs out")));
    bar.replaceChildren(stateBar(st));
    pause.textContent = c.paused ? "Resume" : "Pause";
    const rows = [
      ["Prefix", c.code.prefix || "(none)"], ["Code length", c.code.length],
      ["Per-user limit", c.per_user_limit || "unlimited"], ["Per-recipient limit", c.per_recipient_limit],
      ["Low-stock threshold", fmt(c.low_stock_threshold)],
      ["Guessing alert", `${fmt(c.guessing_alert_per_minute)} a minute`],
      ["Reservation TTL", `${fmt(c.reservation_ttl_seconds)} s`],
      ["Starts", c.starts_at || "—"], ["Expires", c.expires_at || "—"],
      ["Created", c.created_at], ["Paused", c.paused ? "yes" : "no"]];
    settings.replaceChildren(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]));
  };

  let lsn = 0;
  const refresh = async () => {
    const [c, history] = await Promise.all([
      api("GET", base, { signal }),
      api("GET", `${base}/history?seconds=${RANGES[range][0]}`, { signal })]);
    showCampaign(c);
    lsn = history.lsn;
    const pts = history.points;
    stateChart.replaceChildren(chart(pts, STATES.map((k) => [k, k]), "Codes by state"));
    rateChart.replaceChildren(chart(pts, RATES.map(([k, , cls]) => [k, cls]), "Rates per second"));
    stateChart.dataset.points = pts.length;
    stateChart.dataset.redeemed = pts.length ? pts[pts.length - 1].redeemed : 0;
  };

  pause.addEventListener("click", async () => {
    const c = await attempt(() => api("PATCH", base, { json: { paused: !campaign.paused } }));
    if (c) { showCampaign(c); flash(c.paused ? `Paused ${id}.` : `Resumed ${id}.`, true); }
  });

  const generate = h("form", { class: "panel", id: "generate" },
    h("h2", {}, "Generate codes"),
    h("div", { class: "row" },
      h("div", {}, h("label", { for: "gen-n" }, "How many"), h("input", { id: "gen-n", type: "number", min: 1, value: 100, required: true })),
      h("button", { type: "submit" }, "Generate")));
  generate.addEventListener("submit", async (e) => {
    e.preventDefault();
    const n = Number(generate.querySelector("#gen-n").value);
    const r = await attempt(() => api("POST", `${base}/codes`, { json: { generate: n } }));
    if (r) { flash(`Added ${fmt(r.added)} codes; ${fmt(r.total)} in all.`, true); attempt(refresh); }
  });

  const importForm = fileForm({
    id: "import-file", title: "Import codes", button: "Import",
    help: "A text file, one code a line (letters, digits, - and _).",
    onfile: async (file) => {
      const r = await attempt(() => api("POST", `${base}/codes`, { body: file, type: "text/plain" }));
      if (r) {
        flash(`Imported ${fmt(r.added)} codes, ${fmt(r.duplicates)} duplicates, ${fmt(r.rejected.length)} rejected.`, true);
        attempt(refresh);
      }
    },
  });

  const allOrNothing = h("input", { id: "all-or-nothing", type: "checkbox" });
  const bulkForm = fileForm({
    id: "bulk-file", title: "Bulk-assign recipients", button: "Assign and download",
    help: "A recipient file, one a line. The answer is the merge file for your mail tool: recipient, code, status.",
    extra: [h("label", { class: "check" }, allOrNothing, "All or nothing (assign none if the pool is short)")],
    onfile: async (file) => {
      const r = await attempt(() => api("POST", `${base}/assignments/bulk?all_or_nothing=${allOrNothing.checked}`,
        { body: file, type: "text/csv", raw: true }), "issuer");
      if (!r) return;
      const csv = await r.clone().text();
      await download(r, `${id}-assigned.csv`);
      flash(`Assigned: ${statusSummary(csv)}. Downloaded ${id}-assigned.csv.`, true);
      attempt(refresh);
    },
  });

  const voidBounced = h("input", { id: "reclaim-void", type: "checkbox" });
  const reclaimForm = fileForm({
    id: "reclaim-file", title: "Reclaim bounced recipients", button: "Reclaim and download",
    help: "Recipients whose message bounced: their unused codes go back to the pool (or are voided).",
    extra: [h("label", { class: "check" }, voidBounced, "Void the codes instead of returning them")],
    onfile: async (file) => {
      const r = await attempt(() => api("POST", `${base}/assignments/reclaim?void=${voidBounced.checked}`,
        { body: file, type: "text/csv", raw: true }), "issuer");
      if (!r) return;
      const csv = await r.clone().text();
      await download(r, `${id}-reclaimed.csv`);
      flash(`Reclaimed: ${statusSummary(csv)}.`, true);
      attempt(refresh);
    },
  });

  const exportState = h("select", { id: "export-state", "aria-label": "Codes in state" },
    h("option", { value: "" }, "all states"), STATES.map((k) => h("option", { value: k }, k)));
  const exports = h("div", { class: "panel", id: "exports" },
    h("h2", {}, "Export"),
    h("div", { class: "row" }, exportState,
      h("button", { type: "button", id: "export-codes", onclick: async () => {
        const q = exportState.value ? `?state=${exportState.value}` : "";
        const r = await attempt(() => api("GET", `${base}/codes${q}`, { raw: true }));
        if (r) await download(r, `${id}-codes.csv`);
      } }, "Codes CSV"),
      h("button", { type: "button", id: "export-assignments", class: "secondary", onclick: async () => {
        const r = await attempt(() => api("GET", `${base}/assignments`, { raw: true }), "issuer");
        if (r) await download(r, `${id}-assignments.csv`);
      } }, "Assignments CSV")));

  const lookupInput = h("input", { id: "lookup-code", autocomplete: "off", spellcheck: "false", required: true });
  const lookupOut = h("div", { id: "lookup-result" });
  const lookup = h("form", { class: "panel", id: "lookup" },
    h("h2", {}, "Look up a code"),
    h("div", { class: "row" }, h("div", {}, h("label", { for: "lookup-code" }, "Code"), lookupInput),
      h("button", { type: "submit" }, "Look up")),
    lookupOut);
  const showStatus = (st) => {
    const fields = Object.entries(st).map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))]).flat();
    const voidButton = st.state === "voided" || st.state === "redeemed" ? null
      : h("button", { type: "button", class: "danger", id: "void", onclick: async (e) => {
        // Two presses instead of a modal confirm(): keyboard- and test-friendly.
        if (!e.target.dataset.armed) {
          e.target.dataset.armed = "1";
          e.target.textContent = `Really void ${st.code}? Press again`;
          return;
        }
        const r = await attempt(() => api("POST", `/v1/codes/${encodeURIComponent(st.code)}/void`, { json: {} }));
        if (r) { showStatus(r); flash(`Voided ${r.code}.`, true); attempt(refresh); }
      } }, "Void this code");
    lookupOut.replaceChildren(h("dl", { class: "settings" }, fields), ...(voidButton ? [voidButton] : []));
  };
  lookup.addEventListener("submit", async (e) => {
    e.preventDefault();
    const code = lookupInput.value.trim();
    const st = await attempt(() => api("GET", `/v1/codes/${encodeURIComponent(code)}`));
    if (st) showStatus(st); else lookupOut.replaceChildren();
  });

  rangeSelect.addEventListener("change", () => { range = rangeSelect.value; attempt(refresh); });

  main().replaceChildren(
    title,
    h("div", { class: "panel" }, statsBox, bar, h("div", {}, pause)),
    h("div", { class: "grid" },
      h("div", { class: "panel" },
        h("div", { class: "row" }, h("h2", {}, "Codes by state"), rangeSelect),
        legend(STATES.map((k) => [k, k])), stateChart),
      h("div", { class: "panel" }, h("h2", {}, "Rates"),
        legend(RATES.map(([, label, cls]) => [cls, label])), rateChart)),
    h("div", { class: "grid" },
      h("div", { class: "panel" }, h("h2", {}, "Latest events"), events),
      h("div", { class: "panel" }, h("h2", {}, "Settings"), settings)),
    h("div", { class: "grid" }, generate, importForm, bulkForm, reclaimForm, exports, lookup));
  showCampaign(campaign);
  await attempt(refresh);
  // The last thousand records before now, then everything new as it lands.
  followEvents(id, Math.max(0, lsn - EVENTS_LIMIT), events, signal, () => lsn);
  const schedule = () => {
    const timer = setTimeout(async () => {
      await attempt(refresh);
      if (!signal.aborted) schedule();
    }, RANGES[range][1]);
    signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
  };
  schedule();
}

// ---- webhooks page --------------------------------------------------------

// The kinds a subscription may ask for (API.md, "Webhooks").
const EVENT_KINDS = ["campaign_created", "campaign_updated", "codes_added", "assigned",
  "unassigned", "reserved", "released", "redeemed", "rolled_back", "voided", "low_stock",
  "guessing_suspected", "webhook_disabled"];
// How often the subscriptions' progress is read again.
const HOOKS_REFRESH_MS = 3000;
// How long a first press of a destructive button stays armed.
const ARMED_MS = 5000;

/** "12 s ago", "in 3 min", "just now": a time relative to now. */
export function relative(iso, now = Date.now()) {
  const seconds = (Date.parse(iso) - now) / 1000;
  const a = Math.abs(seconds);
  if (a < 1.5) return "just now";
  let text;
  if (a < 90) text = `${Math.round(a)} s`;
  else if (a < 5400) text = `${Math.round(a / 60)} min`;
  else if (a < 172800) text = `${Math.round(a / 3600)} h`;
  else text = `${fmt(Math.round(a / 86400))} days`;
  return seconds < 0 ? `${text} ago` : `in ${text}`;
}

function timeOrNone(iso, none) {
  if (!iso) return h("span", { class: "muted" }, none);
  return h("time", { datetime: iso, title: new Date(iso).toLocaleString() }, relative(iso));
}

/**
 * A destructive button that acts on its second press within ARMED_MS (no
 * modal confirm(): keyboard- and test-friendly). The first press says what
 * the second will do.
 */
function confirmButton(attrs, label, question, action) {
  const button = h("button", { type: "button", class: "danger", ...attrs }, label);
  let timer = null;
  const disarm = () => { clearTimeout(timer); delete button.dataset.armed; button.textContent = label; };
  button.addEventListener("click", async () => {
    if (!button.dataset.armed) {
      button.dataset.armed = "1";
      button.textContent = question;
      timer = setTimeout(disarm, ARMED_MS);
      return;
    }
    disarm();
    button.disabled = true;
    try { await action(); } finally { button.disabled = false; }
  });
  button.addEventListener("blur", disarm);
  return button;
}

/** Copies `text`; falls back to selecting `el` for Ctrl+C. */
async function copyText(text, el) {
  try {
    await navigator.clipboard.writeText(text);
    return "Copied";
  } catch {
    getSelection().selectAllChildren(el);
    return document.execCommand("copy") ? "Copied" : "Selected: press Ctrl+C";
  }
}

const listOrAll = (list, all) => (!list.length || list[0] === "*" ? all : list.join(", "));

/**
 * One subscription's card. It is built once and `update`d in place on every
 * refresh, so a half-typed rewind position, an armed delete or the keyboard
 * focus survive the refresh.
 */
function hookCard(id, { changed, gone }) {
  const path = `/v1/webhooks/${encodeURIComponent(id)}`;
  let hook = null;
  const url = h("span", { class: "mono" });
  const status = h("span", { class: "badge", "data-field": "status" });
  const failing = h("span", { class: "badge st-disabled", "data-field": "failing", hidden: true }, "failing");
  const description = h("p", { class: "muted", hidden: true });
  const fields = h("dl", { class: "settings" });

  const pause = h("button", { type: "button", class: "secondary", "data-action": "pause" });
  pause.addEventListener("click", async () => {
    const next = hook.status === "active" ? "paused" : "active";
    const r = await attempt(() => api("PATCH", path, { json: { status: next } }));
    if (r) {
      changed(r);
      flash(next === "paused" ? `Paused deliveries to ${r.url}.` : `Resumed deliveries to ${r.url}.`, true);
    }
  });
  const remove = confirmButton({ "data-action": "delete" }, "Delete", "Really delete? Press again",
    async () => {
      const r = await attempt(() => api("DELETE", path));
      if (r) { gone(id); flash(`Deleted the webhook to ${hook.url}.`, true); }
    });

  const rewound = (r) => {
    if (!r) return;
    changed(r);
    flash(`Rewound: deliveries to ${r.url} start again after LSN ${fmt(r.cursor_lsn)}.`, true);
  };
  const lsnId = `rewind-${id}`;
  const lsn = h("input", { id: lsnId, type: "number", min: 0, step: 1, inputmode: "numeric", required: true });
  const rewindForm = h("form", { class: "row", "data-action": "rewind" },
    h("div", {}, h("label", { for: lsnId }, "Deliver again every event after LSN"), lsn),
    h("button", { type: "submit", class: "secondary" }, "Rewind"),
    confirmButton({ "data-action": "rewind-start" }, "From the start",
      "Resend everything? Press again",
      async () => rewound(await attempt(() => api("POST", `${path}/rewind`, { json: { after: 0 } })))));
  rewindForm.addEventListener("submit", async (e) => {
    e.preventDefault();
    const after = Number(lsn.value);
    if (!Number.isSafeInteger(after) || after < 0) {
      flash("The LSN is a whole number, 0 or more (an event's lsn).");
      return;
    }
    rewound(await attempt(() => api("POST", `${path}/rewind`, { json: { after } })));
  });
  const rewind = h("details", {},
    h("summary", {}, "Rewind"),
    h("p", { class: "muted" }, "Delivers the events after a log position again, as far as the log " +
      "reaches. The receiver sees them twice, so it should skip lsns it already processed."),
    rewindForm);

  const el = h("article", { class: "panel hook", "data-hook": id },
    h("div", { class: "hook-head" }, h("h2", {}, url), h("span", {}, failing, status)),
    description, fields,
    h("div", { class: "actions" }, pause, remove),
    rewind);

  const update = (next) => {
    hook = next;
    el.dataset.status = hook.status;
    url.textContent = hook.url;
    status.className = `badge st-${hook.status}`;
    status.textContent = hook.status;
    description.textContent = hook.description || "";
    description.hidden = !hook.description;
    pause.textContent = hook.status === "active" ? "Pause" : "Resume";
    failing.hidden = !(hook.consecutive_failures > 0);
    const rows = [
      ["events", "Events", listOrAll(hook.events, "all kinds")],
      ["campaigns", "Campaigns", listOrAll(hook.campaigns, "all campaigns")],
      ["cursor_lsn", "Cursor (LSN)", fmt(hook.cursor_lsn), hook.cursor_lsn],
      ["lag_events", "Behind by", `${fmt(hook.lag_events)} ${hook.lag_events === 1 ? "event" : "events"}`,
        hook.lag_events],
      ["last_delivery_at", "Last delivery", timeOrNone(hook.last_delivery_at, "never")],
      ["consecutive_failures", "Failures in a row", fmt(hook.consecutive_failures), hook.consecutive_failures],
      ["next_attempt_at", "Next attempt", timeOrNone(!failing.hidden ? hook.next_attempt_at : null,
        hook.status === "active" ? "when events arrive" : "none while not active")],
      ["last_error", "Last error", hook.last_error || h("span", { class: "muted" }, "none")],
      ["created_at", "Created", timeOrNone(hook.created_at, "—")],
      ["id", "Id", h("span", { class: "mono" }, hook.id)],
    ];
    if (hook.status === "disabled" && hook.disabled_reason) {
      rows.splice(2, 0, ["disabled_reason", "Disabled because", hook.disabled_reason]);
    }
    fields.replaceChildren(...rows.flatMap(([key, label, value, raw]) => [
      h("dt", {}, label),
      h("dd", { "data-field": key, "data-value": raw, class: key === "last_error" && hook.last_error ? "error" : null },
        value)]));
  };
  return { el, update };
}

/** The signing secret of a new subscription, shown once. */
function secretPanel(hook, onDone) {
  const code = h("code", { id: "hook-secret", class: "secret" }, hook.secret);
  const copy = h("button", { type: "button", id: "copy-secret" }, "Copy");
  copy.addEventListener("click", async () => { copy.textContent = await copyText(hook.secret, code); });
  const done = h("button", { type: "button", id: "secret-done", class: "secondary" }, "I have stored it");
  const panel = h("section", { class: "panel secret-box", id: "secret-panel", "aria-labelledby": "secret-title" },
    h("h2", { id: "secret-title" }, "Signing secret"),
    h("p", {}, h("strong", {}, "Copy it now: it will not be shown again."),
      " Your receiver checks each delivery's Redeemd-Signature header with it. ",
      "Lost it? Delete the webhook and create a new one."),
    h("p", { class: "muted" }, "For ", h("span", { class: "mono" }, hook.url)),
    h("div", { class: "secret-row" }, code, copy),
    done);
  done.addEventListener("click", () => { panel.remove(); onDone(); });
  return { panel, copy };
}

function hookCreateForm(campaigns, created) {
  const all = h("input", { type: "checkbox", id: "hook-all", checked: true });
  const kinds = EVENT_KINDS.map((k) =>
    h("input", { type: "checkbox", value: k, id: `hook-kind-${k}`, disabled: true }));
  all.addEventListener("change", () => { for (const k of kinds) k.disabled = all.checked; });
  const campaignBoxes = campaigns.map((c) =>
    h("input", { type: "checkbox", value: c.id, id: `hook-campaign-${c.id}` }));
  const url = h("input", { id: "hook-url", type: "url", required: true, autocomplete: "off",
    spellcheck: "false", placeholder: "your receiver's https URL" });
  const description = h("input", { id: "hook-description", autocomplete: "off", maxlength: 256 });
  const form = h("form", { class: "panel", id: "hook-create" },
    h("h2", {}, "New webhook"),
    h("label", { for: "hook-url" }, "URL"), url,
    h("p", { class: "hint" }, "An https URL to any host, or a plain http URL to this machine " +
      "(loopback) only, unless the server runs with --webhook-allow-http."),
    h("fieldset", {},
      h("legend", {}, "Events"),
      h("label", { class: "check" }, all, "All kinds, including ones added later"),
      h("div", { class: "checks" }, kinds.map((k) => h("label", { class: "check", for: k.id }, k, k.value)))),
    h("fieldset", {},
      h("legend", {}, "Campaigns"),
      h("p", { class: "hint" }, "None ticked: every campaign's events (and events of no campaign)."),
      h("div", { class: "checks" }, campaignBoxes.length
        ? campaignBoxes.map((c) => h("label", { class: "check", for: c.id }, c, c.value))
        : h("span", { class: "muted" }, "No campaigns yet."))),
    h("label", { for: "hook-description" }, "Description (optional)"), description,
    h("button", { type: "submit" }, "Create webhook"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const events = all.checked ? ["*"] : kinds.filter((k) => k.checked).map((k) => k.value);
    if (!events.length) {
      flash("Tick at least one event kind, or All kinds.");
      return;
    }
    const body = {
      url: url.value.trim(), events,
      campaigns: campaignBoxes.filter((c) => c.checked).map((c) => c.value),
    };
    if (description.value.trim()) body.description = description.value.trim();
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      const hook = await attempt(() => api("POST", "/v1/webhooks", { json: body }));
      if (hook) { form.reset(); for (const k of kinds) k.disabled = true; created(hook); }
    } finally { button.disabled = false; }
  });
  return form;
}

async function webhooksPage(signal) {
  const { campaigns } = await api("GET", "/v1/campaigns", { signal });
  const cards = new Map();
  const list = h("div", { class: "hooks", id: "hook-list" });
  const empty = h("p", { class: "muted panel", id: "hook-empty", hidden: true },
    "No webhooks yet. Create one below and redeemd will POST each event to its URL, in order, at least once.");
  const secretSlot = h("div", { id: "secret-slot" });

  const show = (hook) => {
    let card = cards.get(hook.id);
    if (!card) {
      card = hookCard(hook.id, { changed: show, gone });
      cards.set(hook.id, card);
      list.append(card.el);
    }
    card.update(hook);
    empty.hidden = true;
  };
  function gone(id) {
    cards.get(id)?.el.remove();
    cards.delete(id);
    empty.hidden = cards.size > 0;
  }
  const refresh = async () => {
    const { webhooks } = await api("GET", "/v1/webhooks", { signal });
    const seen = new Set(webhooks.map((w) => w.id));
    for (const id of [...cards.keys()]) if (!seen.has(id)) gone(id);
    for (const hook of webhooks) show(hook);
    empty.hidden = cards.size > 0;
    list.dataset.refreshed = String(Date.now());
  };

  const form = hookCreateForm(campaigns, (hook) => {
    const secret = secretPanel(hook, () => document.getElementById("hook-url")?.focus());
    secretSlot.replaceChildren(secret.panel);
    show(hook);
    flash(`Created the webhook to ${hook.url}. Copy its secret now.`, true);
    secret.copy.focus();
  });

  main().replaceChildren(
    h("h1", {}, "Webhooks"),
    h("p", { class: "muted" }, "Each subscription receives the events of ",
      h("code", {}, "/v1/events"), " it asks for as signed POSTs. See docs/webhooks.md for verifying them."),
    empty, list, secretSlot, form);
  await attempt(refresh);
  poll(signal, HOOKS_REFRESH_MS, refresh);
}

// ---- router ---------------------------------------------------------------

async function render() {
  pageAbort.abort();
  pageAbort = new AbortController();
  const signal = pageAbort.signal;
  if (!token()) return signInPage();
  document.getElementById("nav").hidden = false;
  const match = location.hash.match(/^#\/campaigns\/(.+)$/);
  const webhooks = location.hash === "#/webhooks";
  for (const a of document.querySelectorAll("#nav a")) {
    const here = webhooks ? a.hash === "#/webhooks" : a.hash === "#/";
    if (here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  try {
    if (match) await campaignPage(decodeURIComponent(match[1]), signal);
    else if (webhooks) await webhooksPage(signal);
    else await listPage(signal);
  } catch (error) {
    if (error.name === "AbortError") return;
    flash(explain(error));
    if (error instanceof ApiError && error.status === 401) signOut();
  }
  main().focus({ preventScroll: true });
}

window.addEventListener("hashchange", () => { flash(""); render(); });
document.getElementById("sign-out").addEventListener("click", signOut);
render();
