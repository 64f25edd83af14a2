// The view state lives in the URL hash, all of it: a copied URL reopens the same view, and the
// back button walks views because every change is a history entry (#5).
//
//   #/fleet?range=24h
//   #/host/<name>?range=7d&auto=1
//   #/guest/<name>?since=2026-11-24T00:00:00Z&until=2026-11-25T00:00:00Z
//   #/events?range=6h&host=h1&action=sigbus&limit=100&cursors=<c1>,<c2>
//   #/alerts?range=7d                  (the range is the history's; firing is always "now")
//   #/hosts?status=silent&sort=events&cursors=<c1>   (every host, a page at a time, #13)
//
// Pure apart from `current()`, which reads window.location.

export const PAGES = ["fleet", "hosts", "host", "guest", "events", "alerts", "admin"];
export const RANGE_PRESETS = { "1h": 3600, "6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };
// 6 h (#17): `splitwatch demo` backfills 6 hours, so the first view a new user sees is full;
// a production fleet's recent trouble reads there too, and 24 h is one click away.
export const DEFAULT_RANGE = "6h";
export const EVENT_FILTERS = ["host", "guest", "kind", "action", "source"];
export const PAGE_SIZES = [25, 50, 100, 500];
export const AUTO_REFRESH_S = 30;
// The Hosts page's filter (a status, or every host that needs action) and order (#13).
export const HOST_STATUSES = [
  "needs_action", "silent", "drift", "stuck_off", "inconsistent_config", "foreign_hypervisor", "unknown",
  "transient", "per_task_off", "off_by_design", "unsupported", "consistent",
];
export const HOST_SORTS = ["name", "events"];
// The pages that keep a stack of cursors in their URL.
const PAGED = ["events", "hosts"];

// Keys in the order they are written, so one view always has one URL.
const KEYS = ["range", "since", "until", ...EVENT_FILTERS, "status", "sort", "limit", "cursors", "auto"];

export function parseHash(hash) {
  const raw = (hash || "").replace(/^#/, "");
  const [path, query = ""] = raw.split("?", 2);
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  let page = parts[0] || "fleet";
  let name = parts.length > 1 ? parts.slice(1).join("/") : null;
  if (!PAGES.includes(page) || ((page === "host" || page === "guest") && !name)) {
    page = "fleet";
    name = null;
  }
  const q = new URLSearchParams(query);
  const state = { page, name, range: null, since: null, until: null, auto: q.get("auto") === "1" };
  if (q.get("since")) {
    state.since = q.get("since");
    state.until = q.get("until") || null;
  } else {
    state.range = Object.hasOwn(RANGE_PRESETS, q.get("range")) ? q.get("range") : DEFAULT_RANGE;
  }
  for (const key of EVENT_FILTERS) state[key] = q.get(key) || null;
  const limit = Number(q.get("limit"));
  state.limit = PAGE_SIZES.includes(limit) ? limit : 100;
  state.cursors = q.get("cursors") ? q.get("cursors").split(",").filter(Boolean) : [];
  state.status = HOST_STATUSES.includes(q.get("status")) ? q.get("status") : null;
  state.sort = q.get("sort") === "events" ? "events" : "name";
  return state;
}

export function formatHash(state) {
  let path = `#/${state.page}`;
  if (state.name && (state.page === "host" || state.page === "guest")) {
    path += `/${encodeURIComponent(state.name)}`;
  }
  const q = new URLSearchParams();
  for (const key of KEYS) {
    const value = state[key];
    if (key === "range" && state.since) continue;
    if (key === "auto") {
      if (value) q.set("auto", "1");
      continue;
    }
    if (key === "limit" && (state.page !== "events" || value === 100)) continue;
    // `source` is kept on every page: charts say which source their numbers come from.
    if (key === "cursors" && !PAGED.includes(state.page)) continue;
    if (EVENT_FILTERS.includes(key) && key !== "source" && state.page !== "events") continue;
    if ((key === "status" || key === "sort") && state.page !== "hosts") continue;
    if (key === "sort" && value === "name") continue;
    if (key === "cursors") {
      if (value && value.length) q.set("cursors", value.join(","));
      continue;
    }
    if (value !== null && value !== undefined && value !== "") q.set(key, String(value));
  }
  const query = q.toString();
  return query ? `${path}?${query}` : path;
}

// The window a view shows, as ISO strings for the API. A preset is relative to `now`, so an
// auto-refreshing view slides; a custom range is fixed.
// A window ending now ends at the next whole second (toIso keeps whole seconds): rounded down,
// what the server received earlier in the current second (a gap, a batch) would be left out.
export function resolveRange(state, now = new Date()) {
  const end = new Date(Math.ceil(now.getTime() / 1000) * 1000);
  if (state.since) {
    const until = state.until ? new Date(state.until) : end;
    return { since: toIso(new Date(state.since)), until: toIso(until) };
  }
  const seconds = RANGE_PRESETS[state.range || DEFAULT_RANGE];
  return { since: toIso(new Date(end.getTime() - seconds * 1000)), until: toIso(end) };
}

// A window that ended this long before now is "past" (#17): the hosts' status, mode, drift and
// last report the API gives are today's, so a past window labels them "now" instead of showing
// them as if they were the window's.
export const PAST_AFTER_S = 300;

export function isPast(range, now = new Date()) {
  return now.getTime() - new Date(range.until).getTime() > PAST_AFTER_S * 1000;
}

export const SOURCES = {
  kmsg: "kernel log lines: first sightings, rate-limited",
  tracefs: "kprobe hits: every trap counted",
  import: "imported kernel logs",
};

export function sourceLabel(state) {
  return state.source ? `source ${state.source} only` : "all sources";
}

export function rangeLabel(state) {
  if (state.since) return `${shortTime(state.since)} → ${state.until ? shortTime(state.until) : "now"} UTC`;
  return `last ${state.range}`;
}

export function toIso(date) {
  // Whole seconds: shorter URLs and API params; the API buckets by minute anyway.
  return new Date(Math.floor(date.getTime() / 1000) * 1000).toISOString().replace(".000Z", "Z");
}

export function shortTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toISOString().slice(0, 16).replace("T", " ");
}

// A new state from the old one: page changes drop the page-specific parts.
export function withChanges(state, changes) {
  const next = { ...state, ...changes };
  if (changes.page && changes.page !== state.page) {
    if (!("cursors" in changes)) next.cursors = [];
    if (changes.page !== "host" && changes.page !== "guest" && !("name" in changes)) next.name = null;
  }
  if ("range" in changes && changes.range) {
    next.since = null;
    next.until = null;
  }
  if ("since" in changes && changes.since) next.range = null;
  return next;
}

export function current() {
  return parseHash(window.location.hash);
}
