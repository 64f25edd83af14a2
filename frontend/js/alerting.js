// The alerting API's shapes, read in one place (#12): views and charts get these plain
// objects, never the API's field names, so a renamed field is one line here. Pure: JSON in,
// values out; no fetch, no DOM.

export const SEVERITY_ORDER = ["critical", "warning", "info"];
// Labels a silence made from the dashboard matches on: the alert's identity, not its severity
// (a rule retuned to another severity is still the same problem).
export const SILENCE_LABELS = ["alertname", "host", "guest"];
export const SILENCE_DURATIONS = { "1h": 3600, "4h": 4 * 3600, "24h": 86400, "7d": 7 * 86400 };
export const DEFAULT_SILENCE = "4h";

const GO_ZERO_TIME = "0001-01-01T00:00:00Z"; // Alertmanager's "not set" (a firing alert's endsAt)

function time(value) {
  if (!value || value === GO_ZERO_TIME) return null;
  return value;
}

function first(raw, ...keys) {
  for (const key of keys) {
    if (raw && raw[key] !== undefined && raw[key] !== null) return raw[key];
  }
  return null;
}

export function alertOf(raw) {
  const labels = raw.labels || {};
  const annotations = raw.annotations || {};
  const silencedBy = first(raw, "silenced_by", "silencedBy");
  return {
    fingerprint: raw.fingerprint,
    status: raw.status,
    labels,
    name: labels.alertname || first(raw, "rule") || "alert",
    severity: labels.severity || "warning",
    host: labels.host || null,
    guest: labels.guest || null,
    summary: annotations.summary || "",
    description: annotations.description || "",
    startsAt: time(first(raw, "startsAt", "starts_at")),
    endsAt: raw.status === "firing" ? null : time(first(raw, "endsAt", "ends_at")),
    url: first(raw, "generatorURL", "generator_url", "url"),
    value: first(raw, "value"),
    silenced: Boolean(first(raw, "silenced")) || (Array.isArray(silencedBy) && silencedBy.length > 0),
  };
}

export const isFiring = (alert) => alert.status === "firing";

// Firing first, worst first, then newest.
export function sortAlerts(alerts) {
  const rank = (a) => (SEVERITY_ORDER.includes(a.severity) ? SEVERITY_ORDER.indexOf(a.severity) : SEVERITY_ORDER.length);
  return [...alerts].sort(
    (a, b) =>
      Number(isFiring(b)) - Number(isFiring(a)) ||
      rank(a) - rank(b) ||
      String(b.startsAt || "").localeCompare(String(a.startsAt || "")),
  );
}

// A list of firing alerts that one rule does not drown: the first `perRule` of each rule (in the
// list's order, critical first), and per rule how many more there are (`totals`: the rules' own
// counts, when the list holds only some). A mass outage opens an AgentSilent per host; the few
// alerts of other rules beside them must not sit among 1,000 rows.
export function foldByRule(alerts, perRule, totals = {}) {
  const seen = new Map();
  const shown = [];
  const more = new Map();
  for (const alert of alerts) {
    const n = seen.get(alert.name) || 0;
    seen.set(alert.name, n + 1);
    if (n < perRule) shown.push(alert);
    else if (!more.has(alert.name)) more.set(alert.name, { name: alert.name, severity: alert.severity });
  }
  const folded = [];
  for (const [name, f] of more) {
    const count = Math.max(seen.get(name), totals[name] || 0) - perRule;
    if (count > 0) folded.push({ ...f, count });
  }
  return { shown, folded };
}

// Where the dashboard lists every host a built-in host rule fires for (the Hosts page).
export const RULE_HOSTS = { AgentSilent: "silent", HostInconsistent: "needs_action" };

// Alerts whose [start, end) overlaps the window (a firing one runs until now).
export function alertsInRange(alerts, range) {
  const since = new Date(range.since).getTime();
  const until = new Date(range.until).getTime();
  return alerts.filter((a) => {
    if (!a.startsAt) return false;
    const start = new Date(a.startsAt).getTime();
    const end = a.endsAt ? new Date(a.endsAt).getTime() : Infinity;
    return start <= until && end >= since;
  });
}

export function silenceMatchers(alert) {
  const matchers = {};
  for (const key of SILENCE_LABELS) if (alert.labels[key]) matchers[key] = alert.labels[key];
  return matchers;
}

// The POST /silences body for an alert, expiring `seconds` after `now`.
export function silenceBody(alert, seconds, comment, now = new Date()) {
  const endsAt = new Date(now.getTime() + seconds * 1000).toISOString().replace(/\.\d{3}Z$/, "Z");
  return { matchers: silenceMatchers(alert), ends_at: endsAt, comment };
}

function matcherObject(matchers) {
  if (Array.isArray(matchers)) {
    return Object.fromEntries(matchers.map((m) => [m.name, m.value]));
  }
  return matchers || {};
}

export function silenceOf(raw, now = new Date()) {
  const endsAt = time(first(raw, "endsAt", "ends_at", "expires_at"));
  const startsAt = time(first(raw, "startsAt", "starts_at"));
  return {
    id: raw.id,
    matchers: matcherObject(raw.matchers),
    startsAt,
    endsAt,
    comment: raw.comment || "",
    createdBy: first(raw, "created_by", "createdBy"),
    active: (!startsAt || new Date(startsAt) <= now) && (!endsAt || new Date(endsAt) > now),
  };
}

export function silenceMatches(silence, alert) {
  const entries = Object.entries(silence.matchers);
  return entries.length > 0 && entries.every(([k, v]) => alert.labels[k] === v);
}

export function ruleOf(raw) {
  return {
    id: raw.id,
    name: raw.name,
    type: raw.type,
    builtin: Boolean(raw.builtin),
    enabled: raw.enabled !== false,
    severity: raw.severity || "warning",
    kind: first(raw, "kind"),
    groupBy: first(raw, "group_by", "groupBy"),
    window: first(raw, "window"),
    threshold: first(raw, "threshold"),
    for: first(raw, "for"),
    match: raw.match || {},
    firing: Number.isInteger(raw.firing) ? raw.firing : null, // the server's count, whatever the alert list's page
  };
}

// What a rule watches, in words.
export function ruleCondition(rule) {
  const where = Object.entries(rule.match).map(([k, v]) => `${k}=${v}`).join(", ");
  const filter = where ? ` where ${where}` : "";
  const window = rule.window ? ` in ${rule.window}` : "";
  const lasting = rule.for && !/^0+[a-z]*$/.test(String(rule.for)) ? `, for ${rule.for}` : "";
  if (rule.type === "threshold") {
    const per = rule.groupBy && rule.groupBy !== "fleet" ? ` per ${rule.groupBy}` : " over the fleet";
    return `≥ ${rule.threshold} ${rule.kind || "split/bus lock"} event(s)${per}${window}${filter}${lasting}`;
  }
  const words = {
    guest_killed: "a guest killed by SIGBUS (fatal mode)",
    host_inconsistent: "a host whose detection is not what its mode says",
    agent_silent: "an agent that stopped reporting",
    events_lost: `≥ ${rule.threshold} events lost (counted gaps) per host`,
    forged_records: "forged kernel-log records on a host",
    new_offender: "a guest split-locking for the first time",
  };
  const windowed = rule.window && !/^0+[a-z]*$/.test(String(rule.window));
  const when = !windowed ? "" : rule.type === "agent_silent" ? ` for ${rule.window}` : ` in ${rule.window}`;
  return `${words[rule.type] || rule.type}${when}${lasting}`;
}

export function deliveryOf(raw) {
  if (!raw) return null;
  return {
    id: raw.id,
    status: raw.status, // pending | delivered | failed | gone
    code: first(raw, "last_status_code", "status_code", "code"),
    at: first(raw, "last_attempt_at", "delivered_at", "created_at"),
    attempts: first(raw, "attempts") || 0,
    latencyMs: first(raw, "latency_ms"),
    error: first(raw, "last_error", "error"),
    notice: first(raw, "notice"),
  };
}

export function webhookOf(raw) {
  const gone = Boolean(first(raw, "gone_at"));
  return {
    id: raw.id,
    url: raw.url,
    format: raw.format,
    match: raw.match || {},
    enabled: raw.enabled !== false && !gone,
    disabledReason: first(raw, "disabled_reason") || (gone ? "the receiver answered 410 Gone" : null),
    last: deliveryOf(first(raw, "last_delivery", "lastDelivery")),
    hasLast: "last_delivery" in raw || "lastDelivery" in raw,
  };
}

export function labelText(labels) {
  return Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(", ");
}
