// Small DOM helpers shared by the views: element building, formatting, tables, states
// (loading, empty, error) and the one call into Plotly.

import { ACTION_COLORS, wholeTicks } from "./charts.js";
import { SOURCES, formatHash, withChanges } from "./state.js";

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function fmtNum(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US");
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toISOString().slice(0, 19).replace("T", " ");
}

export function ago(iso, now = new Date()) {
  if (!iso) return "never";
  const s = Math.round((now - new Date(iso)) / 1000);
  if (s < 0) return "just now";
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

// A link to another view that keeps the current range and refresh setting.
export function viewLink(state, changes, text, attrs = {}) {
  return h("a", { href: formatHash(withChanges(state, changes)), ...attrs }, text);
}

export function actionBadge(action) {
  if (!action) return "–";
  return h("span", { class: `badge action action-${action}`, style: `--c:${ACTION_COLORS[action] || "#999"}` }, action);
}

// Host status: silent, else the agent's consistency verdict, else unknown (app/store/status.py).
export const NEEDS_ACTION = new Set(["drift", "stuck_off", "inconsistent_config", "foreign_hypervisor"]);
const STATUS_LABELS = {
  off_by_design: "off by design", per_task_off: "per-task off", stuck_off: "stuck off",
  inconsistent_config: "inconsistent config", foreign_hypervisor: "foreign hypervisor",
};

export function statusLabel(status) {
  return STATUS_LABELS[status] || status || "–";
}

// The badge's tone: bad when it needs action, quiet when all is as the kernel says.
export function statusTone(status) {
  if (NEEDS_ACTION.has(status)) return "bad";
  if (status === "consistent" || status === "off_by_design" || status === "unsupported") return "ok";
  return "warn";
}

// `now`: shown beside a past window (#17), so it must not read as that window's status.
export function statusBadge(status, reason = null, { now = false } = {}) {
  const title = reason || statusLabel(status);
  return h(
    "span",
    { class: `badge status status-${statusTone(status)}`, title: now ? `${title} (as of now, not the window)` : title, "data-status": status || "" },
    now ? `now: ${statusLabel(status)}` : statusLabel(status),
  );
}

export function modeBadge(host) {
  if (!host || !host.mode) return h("span", { class: "badge mode" }, "no state yet");
  const label = host.mode === "ratelimit" && host.ratelimit ? `ratelimit:${host.ratelimit}` : host.mode;
  return h("span", { class: `badge mode mode-${host.mode}` }, label);
}

export function card(label, value, sub = null, { tone = null, id = null } = {}) {
  return h(
    "div",
    { class: `card${tone ? ` tone-${tone}` : ""}`, id },
    h("div", { class: "card-label" }, label),
    h("div", { class: "card-value" }, value),
    sub ? h("div", { class: "card-sub" }, sub) : null,
  );
}

export function section(title, ...children) {
  return h("section", { class: "panel" }, title ? h("h2", {}, title) : null, ...children);
}

export function emptyState(message, ...extra) {
  return h("div", { class: "empty" }, h("p", {}, message), ...extra);
}

export function errorBox(err) {
  const status = err && err.status ? `HTTP ${err.status}${err.code ? ` · ${err.code}` : ""}` : "error";
  return h(
    "div",
    { class: "error", role: "alert" },
    h("strong", {}, status),
    h("p", { class: "error-message" }, (err && err.message) || String(err)),
  );
}

export function loading(text = "Loading…") {
  return h("div", { class: "loading", "aria-busy": "true" }, text);
}

export function code(text) {
  return h("code", {}, text);
}

// columns: [{label, value(row) -> node|string, class}]; rowLink(row) -> href makes the whole
// row a drill-down (click anywhere), and still a real link in the first cell for keyboards.
export function table(columns, rows, { id = null, rowLink = null, rowData = null, empty = "Nothing here." } = {}) {
  if (!rows.length) return emptyState(empty);
  const thead = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.class }, c.label))));
  const tbody = h(
    "tbody",
    {},
    rows.map((row) => {
      const link = rowLink ? rowLink(row) : null;
      const tr = h(
        "tr",
        { class: link ? "clickable" : null, dataset: rowData ? rowData(row) : undefined },
        columns.map((c) => h("td", { class: c.class }, c.value(row))),
      );
      if (link) {
        tr.addEventListener("click", (e) => {
          if (e.target.closest("a")) return; // a link inside the row goes where it says
          window.location.hash = link;
        });
      }
      return tr;
    }),
  );
  return h("table", { class: "grid", id }, thead, tbody);
}

export function keyValues(pairs) {
  return h(
    "dl",
    { class: "kv" },
    pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v === null || v === undefined || v === "" ? "–" : v)]),
  );
}

export const PLOTLY_URL = "/static/vendor/plotly.min.js";
let plotlyLoading = null;

// Runs Plotly's script once, on first need; the page preloads the file so it is usually here.
export function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!plotlyLoading) {
    plotlyLoading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = PLOTLY_URL;
      script.onload = () => resolve(window.Plotly);
      script.onerror = () => {
        plotlyLoading = null;
        reject(new Error(`Cannot load the chart library from ${PLOTLY_URL}: is the plotly package installed on the server?`));
      };
      document.head.append(script);
    });
  }
  return plotlyLoading;
}

const PLOT_CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

export function plot(el, traces, layout, { onClick = null } = {}) {
  window.Plotly.react(el, traces, wholeTicks(traces, layout), PLOT_CONFIG);
  if (onClick) {
    el.removeAllListeners && el.removeAllListeners("plotly_click");
    el.on("plotly_click", (ev) => {
      // A trace with meta null (the "others" of a folded series) has nothing to open.
      if (ev && ev.points && ev.points.length && ev.points[0].data.meta !== null) onClick(ev.points[0]);
    });
  }
}

// Which source the charts count (docs/kernel.md: every number says which source it came from).
export function sourcePicker(state) {
  return h(
    "label",
    { class: "source-picker", title: "kmsg lines are first sightings; tracefs counts every trap" },
    "counted from ",
    h(
      "select",
      {
        id: "source-picker",
        onchange: (e) => {
          window.location.hash = formatHash(withChanges(state, { source: e.target.value || null, cursors: [] }));
        },
      },
      h("option", { value: "" }, "all sources"),
      Object.entries(SOURCES).map(([key, text]) => h("option", { value: key, selected: state.source === key }, `${key} (${text})`)),
    ),
  );
}
