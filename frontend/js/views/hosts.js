// Hosts: every host of the fleet, a page at a time (#13), by name or the busiest first, all of
// them or those with one status (silent, needing action, drifting...). In an outage of a
// thousand hosts this is where the whole list is: the fleet view shows its top ones. The URL
// keeps the stack of cursors that led to the page, as the Events explorer does.

import * as api from "../api.js";
import { ago, fmtNum, fmtTime, h, modeBadge, section, statusBadge, statusLabel, table, viewLink } from "../dom.js";
import { HOST_STATUSES, formatHash, isPast, rangeLabel, withChanges } from "../state.js";

const PAGE = 100;
// The filter's words: a status as every badge says it, or any status that needs action.
const filterLabel = (status) => (status === "needs_action" ? "needs action (any)" : statusLabel(status));

export function hostTable(rows, state, { id, past = false, empty = "No host has reported." }) {
  return table(
    [
      { label: "host", value: (x) => viewLink(state, { page: "host", name: x.name }, x.name) },
      { label: past ? "status now" : "status", value: (x) => statusBadge(x.status, x.reason, { now: past }) },
      { label: "why", value: (x) => h("span", { class: "reason" }, x.status === "consistent" ? "" : x.reason) },
      { label: past ? "mode now" : "mode", value: (x) => modeBadge(x) },
      { label: "events", class: "num", value: (x) => fmtNum(x.events) },
      { label: "guests", class: "num", value: (x) => fmtNum(x.guests) },
      { label: "CPUs on/off/err", class: "num", value: (x) => `${x.cpus_on}/${x.cpus_off}/${x.cpus_error}` },
      // A past window: the absolute time, not "1 s ago" beside a window that ended yesterday.
      { label: past ? "last report (now)" : "last report", value: (x) => (past ? `${fmtTime(x.last_seen_at)} UTC` : ago(x.last_seen_at)) },
    ],
    rows,
    {
      id,
      rowLink: (x) => formatHash(withChanges(state, { page: "host", name: x.name })),
      rowData: (x) => ({ host: x.name }),
      empty,
    },
  );
}

export function statusParams(status) {
  if (!status) return {};
  return status === "needs_action" ? { needs_action: true } : { status };
}

export async function render(state, range) {
  const cursor = state.cursors.length ? state.cursors[state.cursors.length - 1] : null;
  const page = await api.hosts({ ...range, ...statusParams(state.status), sort: state.sort, limit: PAGE, cursor });
  const go = (changes) => {
    window.location.hash = formatHash(withChanges(state, { ...changes, cursors: changes.cursors || [] }));
  };
  const form = h(
    "form",
    { class: "filters", id: "host-filters", onsubmit: (e) => e.preventDefault() },
    h(
      "label",
      {},
      "status ",
      h(
        "select",
        { name: "status", onchange: (e) => go({ status: e.target.value || null }) },
        h("option", { value: "", selected: !state.status }, "any"),
        HOST_STATUSES.map((s) => h("option", { value: s, selected: s === state.status }, filterLabel(s))),
      ),
    ),
    h(
      "label",
      {},
      "order ",
      h(
        "select",
        { name: "sort", onchange: (e) => go({ sort: e.target.value }) },
        h("option", { value: "name", selected: state.sort === "name" }, "by name"),
        h("option", { value: "events", selected: state.sort === "events" }, "busiest first (with events in the window)"),
      ),
    ),
  );
  const pager = h(
    "div",
    { class: "pager" },
    h("button", { type: "button", id: "page-previous", disabled: !state.cursors.length, onclick: () => go({ cursors: state.cursors.slice(0, -1) }) }, "← previous"),
    h("span", { id: "page-no" }, `page ${state.cursors.length + 1} · ${page.items.length} host(s)`),
    h("button", { type: "button", id: "page-next", disabled: !page.next_cursor, onclick: () => go({ cursors: [...state.cursors, page.next_cursor] }) }, "next →"),
  );
  const which = state.status ? `with status ${filterLabel(state.status)}` : "";
  const node = h(
    "div",
    { class: "view view-hosts" },
    h("h1", {}, "Hosts"),
    section(
      null,
      form,
      h(
        "p",
        { class: "hint" },
        `${state.sort === "events" ? "The hosts with events in the window, most first" : "Every host by name"}${which ? `, ${which}` : ""}; `
          + `events and guests counted ${rangeLabel(state)}, status as of now.`,
      ),
      pager,
      hostTable(page.items, state, {
        id: "hosts",
        past: isPast(range),
        empty: state.cursors.length ? "No more hosts." : `No host ${which || "has reported"}${state.sort === "events" ? " with events in this window" : ""}.`,
      }),
    ),
  );
  return { node, draw() {}, charts: false };
}
