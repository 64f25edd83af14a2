// Alerts page (#12): what fires now, with a Silence button per alert; the active silences; the
// history of the window; the rules (built-in and threshold) and the webhooks with their last
// delivery. Reading needs a viewer token; silencing needs an admin token, and a viewer is
// told so in the form rather than finding a dead button. API fields are read only through
// alerting.js.

import {
  DEFAULT_SILENCE, RULE_HOSTS, SILENCE_DURATIONS, alertOf, alertsInRange, foldByRule, isFiring, labelText, ruleCondition,
  ruleOf, silenceBody, deliveryOf, silenceMatchers, silenceMatches, silenceOf, sortAlerts, webhookOf,
} from "../alerting.js";
import * as api from "../api.js";
import { ago, card, code, emptyState, fmtNum, fmtTime, h, section, table, viewLink } from "../dom.js";
import { rangeLabel } from "../state.js";

// Webhooks whose last delivery is fetched one by one when the list does not carry it: a
// handful of requests at most, never one per row of a long list.
const DELIVERY_LOOKUPS = 10;
const HISTORY_ROWS = 200;
// Firing rows per rule; the rest of a rule is one line under the table (see foldByRule).
const FIRING_ROWS_PER_RULE = 25;
// Rules asked for their own firing alerts when more fire than one page holds (withEveryRule).
const RULE_LOOKUPS = 20;

// Webhooks are an admin's to read (a receiver URL often holds a credential): a viewer gets
// the rest of the page and a sentence instead, without asking for what it would be refused.
async function readWebhooks() {
  const me = await api.whoami().catch(() => null);
  if (me && me.role !== "admin") return { items: [], forbidden: true };
  return api.webhooks().catch((err) => {
    if (err.status === 403) return { items: [], forbidden: true };
    throw err;
  });
}

export async function render(state, range) {
  const [firingList, historyList, silenceList, ruleList, hookList] = await Promise.all([
    api.alerts({ status: "firing", limit: 1000 }),
    api.alerts({ since: range.since, limit: 1000 }),
    api.silences({ active: true }),
    api.alertRules(),
    readWebhooks(),
  ]);
  const rules = ruleList.items.map(ruleOf);
  let firingRead = firingList.items.map(alertOf).filter(isFiring);
  if (firingList.next_cursor) firingRead = await withEveryRule(firingRead, rules);
  const firing = sortAlerts(firingRead);
  const history = sortAlerts(alertsInRange(historyList.items.map(alertOf), range).filter((a) => a.status === "resolved"));
  const silences = silenceList.items.map((s) => silenceOf(s)).filter((s) => s.active);
  const hooks = hookList.items.map(webhookOf);
  const hooksHidden = Boolean(hookList.forbidden);
  await lastDeliveries(hooks);
  // A silence the API did not mark on the alert still mutes it: say so either way.
  for (const alert of firing) alert.silenced = alert.silenced || silences.some((s) => silenceMatches(s, alert));

  const totals = Object.fromEntries(rules.filter((r) => r.firing !== null).map((r) => [r.name, r.firing]));
  const folded = foldByRule(firing, FIRING_ROWS_PER_RULE, totals);
  const node = h("div", { class: "view view-alerts" }, h("div", { class: "title-row" }, h("h1", {}, "Alerts")));
  node.append(
    cards(firing, silences, rules, hooksHidden ? null : hooks, !!firingList.next_cursor),
    section(
      "Firing now",
      firingList.next_cursor
        ? h("p", { class: "hint", id: "firing-more" }, `More than ${firingList.items.length} alerts fire: up to ${FIRING_ROWS_PER_RULE} of each rule below, and how many more; each rule's count is in Rules. GET /api/v1/alerts?status=firing pages through all of them (next_cursor).`)
        : null,
      table(firingColumns(state), folded.shown, {
        id: "firing",
        rowData: (a) => ({ fingerprint: a.fingerprint, severity: a.severity }),
        empty: "Nothing fires now.",
      }),
      foldedRules(folded.folded, state),
    ),
    section(
      "Silences in force",
      table(silenceColumns(), silences, {
        id: "silences",
        rowData: (s) => ({ id: String(s.id) }),
        empty: "No silence in force. Silence a firing alert with its button above.",
      }),
    ),
    section(
      `History (resolved, ${rangeLabel(state)})`,
      table(historyColumns(state), history.slice(0, HISTORY_ROWS), {
        id: "history",
        rowData: (a) => ({ fingerprint: a.fingerprint }),
        empty: "No alert resolved in this window.",
      }),
      history.length > HISTORY_ROWS
        ? h("p", { class: "hint" }, `The ${HISTORY_ROWS} most recent of ${history.length}; narrow the range for older ones.`)
        : null,
    ),
    h(
      "div",
      { class: "two-col" },
      section(
        "Rules",
        table(ruleColumns(), rules, { id: "rules", rowData: (r) => ({ name: r.name }), empty: "No rule." }),
        h("p", { class: "hint" }, "Add threshold rules, retune or disable built-in ones with ", code("/api/v1/alert-rules"), " (admin token): see docs/alerting.md."),
      ),
      section(
        "Webhooks",
        hooksHidden
          ? emptyState("Webhooks and their deliveries are shown to admin tokens only.",
            h("p", {}, "Log in with a token from ", code("splitwatch token create --role admin"), " to see where alerts go."))
          : table(webhookColumns(), hooks, {
            id: "webhooks",
            rowData: (w) => ({ id: String(w.id) }),
            empty: "No webhook: alerts show here but go nowhere else.",
          }),
        h("p", { class: "hint" }, "Add one with ", code("POST /api/v1/webhooks"), " (admin token); test it with ", code("splitwatch webhook test ID"), "."),
      ),
    ),
  );
  return { node, draw() {}, charts: false };
}

// Past 1,000 firing alerts the list read is the newest 1,000: a rule whose alerts all fired
// earlier (5 hosts drifting before 1,000 went silent) would have no row, critical or not. Each
// rule the list holds fewer of than it fires is asked for its own first ones: a request per such
// rule, RULE_LOOKUPS at most, only in an outage.
async function withEveryRule(firing, rules) {
  const listed = new Map();
  for (const a of firing) listed.set(a.name, (listed.get(a.name) || 0) + 1);
  const short = rules
    .filter((r) => r.firing && (listed.get(r.name) || 0) < Math.min(r.firing, FIRING_ROWS_PER_RULE))
    .slice(0, RULE_LOOKUPS);
  const pages = await Promise.all(
    short.map((r) =>
      api.alerts({ status: "firing", rule: r.name, limit: FIRING_ROWS_PER_RULE }).then((p) => p.items.map(alertOf)).catch(() => []),
    ),
  );
  const known = new Set(firing.map((a) => a.fingerprint));
  return [...firing, ...pages.flat().filter((a) => isFiring(a) && !known.has(a.fingerprint))];
}

// One line per rule with more firing alerts than the table shows: how many, and for the host
// rules the Hosts page listing every such host.
function foldedRules(folded, state) {
  if (!folded.length) return null;
  return h(
    "ul",
    { class: "hint folded", id: "firing-folded" },
    folded.map((f) => {
      const status = RULE_HOSTS[f.name];
      return h(
        "li",
        { dataset: { rule: f.name } },
        `${fmtNum(f.count)} more ${f.name} (${f.severity}) not shown`,
        status ? [": ", viewLink(state, { page: "hosts", status, sort: "name" }, "every such host")] : "",
      );
    }),
  );
}

async function lastDeliveries(hooks) {
  const missing = hooks.filter((w) => !w.hasLast).slice(0, DELIVERY_LOOKUPS);
  const found = await Promise.all(
    missing.map((w) => api.deliveries(w.id, { limit: 1 }).then((r) => r.items[0] || null).catch(() => undefined)),
  );
  missing.forEach((w, i) => {
    if (found[i] !== undefined) {
      w.last = deliveryOf(found[i]);
      w.hasLast = true;
    }
  });
}

function cards(firing, silences, rules, hooks, more = false) {
  const critical = firing.filter((a) => a.severity === "critical" && !a.silenced).length;
  const silenced = firing.filter((a) => a.silenced).length;
  // More fire than the page read: the rules' own counts (the server's) give the whole figure.
  const total = more ? rules.reduce((n, r) => n + (r.firing || 0), 0) : firing.length;
  const failing = hooks ? hooks.filter((w) => !w.enabled || (w.last && ["failed", "gone"].includes(w.last.status))).length : 0;
  const enabled = rules.filter((r) => r.enabled).length;
  return h(
    "div",
    { class: "cards", id: "alert-cards" },
    card("Firing", more && total && total >= firing.length ? fmtNum(total) : `${fmtNum(firing.length)}${more ? "+" : ""}`, `${critical} critical${silenced ? `, ${silenced} silenced` : ""}${more ? ` among ${fmtNum(firing.length)} read` : ""}`, {
      tone: critical ? "bad" : firing.length - silenced ? "warn" : null,
      id: "card-firing",
    }),
    card("Silences", fmtNum(silences.length), "in force now", { id: "card-silences" }),
    card("Rules", fmtNum(enabled), `enabled of ${rules.length}`, { id: "card-rules" }),
    card("Webhooks", hooks ? fmtNum(hooks.length) : "–", !hooks ? "admin tokens only" : failing ? `${failing} failing or disabled` : "all delivering", {
      tone: failing ? "warn" : null,
      id: "card-webhooks",
    }),
  );
}

export function severityBadge(severity) {
  return h("span", { class: `badge severity severity-${severity}` }, severity);
}

function who(state, a) {
  return [
    a.host ? viewLink(state, { page: "host", name: a.host }, a.host) : null,
    a.host && a.guest ? " / " : null,
    a.guest ? viewLink(state, { page: "guest", name: a.guest }, a.guest) : null,
    !a.host && !a.guest ? h("span", { class: "muted" }, "fleet") : null,
  ];
}

function summaryCell(a) {
  return h("div", { class: "alert-summary" }, h("div", {}, a.summary || a.name),
    a.description ? h("div", { class: "muted alert-description" }, a.description) : null);
}

function firingColumns(state) {
  return [
    { label: "severity", value: (a) => severityBadge(a.severity) },
    { label: "alert", value: (a) => h("strong", { class: "alertname" }, a.name) },
    { label: "where", class: "nowrap", value: (a) => who(state, a) },
    { label: "what", value: summaryCell },
    { label: "since (UTC)", class: "nowrap", value: (a) => h("span", { title: ago(a.startsAt) }, fmtTime(a.startsAt)) },
    { label: "", class: "actions", value: (a) => silenceControl(a) },
  ];
}

function historyColumns(state) {
  const duration = (a) => {
    if (!a.startsAt || !a.endsAt) return "–";
    const s = Math.max(0, Math.round((new Date(a.endsAt) - new Date(a.startsAt)) / 1000));
    if (s < 90) return `${s} s`;
    if (s < 5400) return `${Math.round(s / 60)} min`;
    return `${(s / 3600).toFixed(1)} h`;
  };
  return [
    { label: "severity", value: (a) => severityBadge(a.severity) },
    { label: "alert", value: (a) => a.name },
    { label: "where", class: "nowrap", value: (a) => who(state, a) },
    { label: "what", value: (a) => a.summary },
    { label: "fired (UTC)", class: "nowrap", value: (a) => fmtTime(a.startsAt) },
    { label: "resolved (UTC)", class: "nowrap", value: (a) => fmtTime(a.endsAt) },
    { label: "lasted", class: "num", value: duration },
  ];
}

function silenceColumns() {
  return [
    { label: "matches", value: (s) => code(labelText(s.matchers)) },
    { label: "until (UTC)", class: "nowrap", value: (s) => h("span", { title: `ends ${ago(s.endsAt).replace(" ago", "")}` }, fmtTime(s.endsAt)) },
    { label: "comment", value: (s) => s.comment },
    { label: "by", value: (s) => s.createdBy || "–" },
    { label: "", class: "actions", value: (s) => endSilenceButton(s) },
  ];
}

function ruleColumns() {
  return [
    { label: "rule", class: "nowrap", value: (r) => h("strong", {}, r.name) },
    { label: "fires on", value: (r) => ruleCondition(r) },
    { label: "severity", value: (r) => severityBadge(r.severity) },
    { label: "firing", class: "num", value: (r) => (r.firing === null ? "–" : fmtNum(r.firing)) },
    { label: "", value: (r) => [r.builtin ? h("span", { class: "badge" }, "built-in") : null, " ",
      r.enabled ? null : h("span", { class: "badge state-disabled" }, "disabled")] },
  ];
}

const DELIVERY_TONE = { delivered: "ok", pending: "pending", failed: "failed", gone: "failed" };

function deliveryCell(w) {
  if (!w.enabled) {
    return h("span", { class: "badge delivery delivery-failed" }, `disabled: ${w.disabledReason || "by an admin"}`);
  }
  const d = w.last;
  if (!w.hasLast) return h("span", { class: "muted" }, "not looked up");
  if (!d) return h("span", { class: "muted" }, "nothing sent yet");
  const detail = [
    d.code ? `HTTP ${d.code}` : null,
    d.attempts > 1 ? `${d.attempts} attempts` : null,
    d.latencyMs !== null && d.latencyMs !== undefined ? `${d.latencyMs} ms` : null,
    d.at ? ago(d.at) : null,
  ].filter(Boolean).join(" · ");
  return h(
    "span",
    { class: "delivery", title: d.error || "" },
    h("span", { class: `badge delivery delivery-${DELIVERY_TONE[d.status] || "pending"}` }, d.status),
    detail ? ` ${detail}` : null,
  );
}

function webhookColumns() {
  return [
    { label: "url", value: (w) => h("span", { class: "url" }, w.url) },
    { label: "format", value: (w) => w.format },
    { label: "sends", value: (w) => (Object.keys(w.match).length ? code(labelText(w.match)) : "every alert") },
    { label: "last delivery", value: deliveryCell },
  ];
}

function forbiddenText(err, what) {
  if (err.status === 403) {
    return `${what} needs an admin token; this one can only read (${err.message}). Log out and log in with a token from \`splitwatch token create --role admin\`.`;
  }
  return err.message;
}

function reload() {
  window.dispatchEvent(new CustomEvent("splitwatch:reload"));
}

// The Silence button opens a small form under it: how long, and why. The silence matches the
// alert's alertname, host and guest.
function silenceControl(alert) {
  if (alert.silenced) return h("span", { class: "badge silenced" }, "silenced");
  const message = h("p", { class: "error-message silence-message", role: "status" });
  const duration = h(
    "select",
    { name: "duration", "aria-label": "silence for" },
    Object.keys(SILENCE_DURATIONS).map((k) => h("option", { value: k, selected: k === DEFAULT_SILENCE }, `for ${k}`)),
  );
  const comment = h("input", { name: "comment", type: "text", placeholder: "why (shown to others)", "aria-label": "comment", maxlength: 500 });
  const submit = h("button", { type: "submit", class: "primary" }, "Create silence");
  const form = h(
    "form",
    { class: "silence-form", hidden: true },
    h("div", { class: "muted" }, "matches ", code(labelText(silenceMatchers(alert)))),
    h("div", { class: "silence-row" }, duration, comment, submit),
    message,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    submit.disabled = true;
    message.textContent = "Creating…";
    try {
      const text = comment.value.trim() || "silenced from the dashboard";
      await api.createSilence(silenceBody(alert, SILENCE_DURATIONS[duration.value], text));
      message.textContent = "";
      reload();
    } catch (err) {
      message.textContent = forbiddenText(err, "Silencing");
      submit.disabled = false;
    }
  });
  const open = h("button", { type: "button", class: "silence-button" }, "Silence…");
  open.addEventListener("click", () => {
    form.hidden = !form.hidden;
    if (!form.hidden) comment.focus();
  });
  return h("div", { class: "silence" }, open, form);
}

function endSilenceButton(silence) {
  const message = h("span", { class: "error-message", role: "status" });
  const button = h("button", { type: "button", class: "end-silence" }, "End now");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api.deleteSilence(silence.id);
      reload();
    } catch (err) {
      message.textContent = forbiddenText(err, "Ending a silence");
      button.disabled = false;
    }
  });
  return h("div", {}, button, " ", message);
}
