// Admin: the fleet's tokens (#15). Which hosts have an agent token and when it was last used,
// which hosts enrolled but never reported, and the enrollment tokens with their uses. Shown only
// to an admin token (main.js asks /whoami); a viewer gets the API's 403 sentence instead.
// Four requests, whatever the fleet's size: each list is one bounded page of /tokens.

import * as api from "../api.js";
import { ago, card, code, emptyState, fmtNum, fmtTime, h, section, table, viewLink } from "../dom.js";

export const PAGE = 500;

export function tokenState(t, now = new Date()) {
  if (t.revoked_at) return "revoked";
  if (t.expires_at && new Date(t.expires_at) <= now) return "expired";
  if (t.role === "enroll" && t.max_uses !== null && t.uses >= t.max_uses) return "used up";
  return "live";
}

function stateBadge(t) {
  const s = tokenState(t);
  return h("span", { class: `badge token-${s.replace(" ", "-")}` }, s);
}

function origin(t) {
  if (t.enrolled_by) return `enrolled (#${t.enrolled_by})`;
  return t.label || "made by an admin";
}

function more(page, what) {
  return page.next_cursor ? h("p", { class: "muted" }, `Showing the newest ${fmtNum(page.items.length)} ${what}; GET /api/v1/tokens pages through the rest.`) : null;
}

export async function render(state) {
  const me = await api.whoami();
  if (me.role !== "admin") {
    return { node: h("div", { class: "admin" }, h("h1", {}, "Admin"), notAdmin(me.role)), draw: () => {}, charts: false };
  }
  const [agents, quiet, enrolls] = await Promise.all([
    api.tokens({ role: "agent", state: "live", limit: PAGE }),
    api.tokens({ role: "agent", state: "live", reported: false, limit: PAGE }),
    api.tokens({ role: "enroll", limit: 100 }),
  ]);
  const liveEnrolls = enrolls.items.filter((t) => tokenState(t) === "live");
  const cards = h(
    "div",
    { class: "cards" },
    card("hosts with a live agent token", fmtNum(agents.items.length) + (agents.next_cursor ? "+" : ""), null, { id: "card-agent-tokens" }),
    card("enrolled, never reported", fmtNum(quiet.items.length) + (quiet.next_cursor ? "+" : ""), null, {
      id: "card-never-reported",
      tone: quiet.items.length ? "warn" : null,
    }),
    card("live enrollment tokens", fmtNum(liveEnrolls.length), null, { id: "card-enroll-tokens" }),
  );

  const hostLink = (t) => (t.host_last_seen_at ? viewLink(state, { page: "host", name: t.host }, t.host) : t.host);
  const hosts = section(
    "Hosts and their agent tokens",
    table(
      [
        { label: "host", value: hostLink },
        { label: "token", value: (t) => `#${t.id}` },
        { label: "origin", value: origin },
        { label: "token last used", value: (t) => h("span", { title: fmtTime(t.last_used_at) }, ago(t.last_used_at)) },
        { label: "host last report", value: (t) => h("span", { title: fmtTime(t.host_last_seen_at) }, ago(t.host_last_seen_at)) },
        { label: "created (UTC)", value: (t) => fmtTime(t.created_at) },
      ],
      agents.items,
      { id: "agent-tokens", rowData: (t) => ({ host: t.host }), empty: "No host has a live agent token yet." },
    ),
    more(agents, "agent tokens"),
  );

  const neverReported = section(
    "Enrolled, never reported",
    quiet.items.length
      ? h("p", { class: "muted" }, "These hosts hold an agent token but no report has arrived: check that the agent runs and reaches the server.")
      : null,
    table(
      [
        { label: "host", value: (t) => t.host },
        { label: "token", value: (t) => `#${t.id}` },
        { label: "origin", value: origin },
        { label: "since (UTC)", value: (t) => fmtTime(t.created_at) },
        { label: "token last used", value: (t) => ago(t.last_used_at) },
        { label: "machine id", value: (t) => (t.machine_id ? code(t.machine_id) : "–") },
      ],
      quiet.items,
      { id: "never-reported", rowData: (t) => ({ host: t.host }), empty: "Every host with a token has reported." },
    ),
    more(quiet, "hosts"),
  );

  const enrollment = section(
    "Enrollment tokens",
    table(
      [
        { label: "token", value: (t) => `#${t.id}` },
        { label: "state", value: stateBadge },
        { label: "host names", value: (t) => code(t.host_glob || "*") },
        { label: "uses", class: "num", value: (t) => `${fmtNum(t.uses)} / ${t.max_uses === null ? "∞" : fmtNum(t.max_uses)}` },
        { label: "expires (UTC)", value: (t) => fmtTime(t.expires_at) },
        { label: "last used", value: (t) => ago(t.last_used_at) },
        { label: "label", value: (t) => t.label || "–" },
      ],
      enrolls.items,
      {
        id: "enroll-tokens",
        rowData: (t) => ({ token: String(t.id) }),
        empty: "No enrollment token yet: `splitwatch token create --role enroll --host-glob 'kvm-*' --max-uses 500`.",
      },
    ),
  );
  return { node: h("div", { class: "admin" }, h("h1", {}, "Admin"), h("p", { class: "muted" }, "Tokens as they are now: the time range does not apply here."), cards, hosts, neverReported, enrollment), draw: () => {}, charts: false };
}

export function notAdmin(role) {
  return emptyState(`The admin page needs an admin token; this is a ${role} token. Log out and log in with one made by \`splitwatch token create --role admin\`.`);
}
