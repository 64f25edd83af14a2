// Events explorer: filters (host, guest, kind, action, source), newest first, keyset pages.
// The URL keeps the stack of cursors that led to the current page, so "newer" pops one, a
// reload shows the same page, and the back button undoes a page turn (#5). The CSV is the
// API's own (format=csv) with the same filters and window as the table.

import * as api from "../api.js";
import { ACTION_ORDER, KIND_ORDER } from "../charts.js";
import { actionBadge, code, emptyState, fmtNum, fmtTime, h, section, table, viewLink } from "../dom.js";
import { EVENT_FILTERS, PAGE_SIZES, SOURCES, formatHash, rangeLabel, withChanges } from "../state.js";


// A kernel-log record of count 0 (#17): the kernel printed the trap, but tracefs counted it, so
// the line is kept for its thread and address and adds nothing to the traps counted.
export const COUNT_ZERO = "count 0: a kernel-log first sighting of a trap that tracefs already counted; "
  + "listed for its thread and address, it adds nothing to the traps counted.";

export function eventColumns(state) {
  return [
    { label: "time (UTC)", value: (e) => fmtTime(e.time) },
    { label: "host", value: (e) => viewLink(state, { page: "host", name: e.host }, e.host) },
    { label: "guest", value: (e) => (e.guest ? viewLink(state, { page: "guest", name: e.guest }, e.guest) : h("span", { class: "muted" }, "(host)")) },
    { label: "vCPU", class: "num", value: (e) => (e.vcpu === null || e.vcpu === undefined ? "" : e.vcpu) },
    { label: "kind", value: (e) => e.kind },
    { label: "action", value: (e) => actionBadge(e.action) },
    { label: "comm/tid", value: (e) => code(`${e.comm}/${e.tid}`) },
    { label: "address", value: (e) => (e.address ? code(e.address) : "") },
    {
      label: "count",
      class: "num",
      value: (e) => (e.count === 0 ? h("span", { class: "count-zero", title: COUNT_ZERO }, "0 *") : fmtNum(e.count)),
    },
    { label: "source", value: (e) => `${e.source} #${e.seq}` },
  ];
}

export function filterParams(state) {
  const params = {};
  for (const key of EVENT_FILTERS) if (state[key]) params[key] = state[key];
  return params;
}

export async function render(state, range) {
  const filters = filterParams(state);
  const cursor = state.cursors.length ? state.cursors[state.cursors.length - 1] : null;
  const [page, hostList, guestList] = await Promise.all([
    api.events({ ...range, ...filters, limit: state.limit, cursor }),
    // Suggestions only (any name can be typed): the hosts and guests with events in the range, the
    // busiest 1,000 of each (the lists are paged, #14; in a fleet of 10,000 the first 1,000 names
    // would be mostly hosts with nothing to explore, and not the busy ones).
    api.hosts({ ...range, sort: "events", limit: 1000 }).catch(() => ({ items: [] })),
    api.guests({ ...range, sort: "events", limit: 1000 }).catch(() => ({ items: [] })),
  ]);
  const go = (changes) => {
    window.location.hash = formatHash(withChanges(state, changes));
  };
  const status = h("span", { class: "csv-status", id: "csv-status" });

  const form = h(
    "form",
    { class: "filters", id: "event-filters", onsubmit: (e) => e.preventDefault() },
    textFilter("host", state.host, hostList.items.map((x) => x.name), go),
    textFilter("guest", state.guest, guestList.items.map((g) => g.name), go),
    selectFilter("kind", state.kind, KIND_ORDER, go),
    selectFilter("action", state.action, ACTION_ORDER, go),
    selectFilter("source", state.source, Object.keys(SOURCES), go),
    h(
      "label",
      {},
      "per page ",
      h(
        "select",
        { name: "limit", onchange: (e) => go({ limit: Number(e.target.value), cursors: [] }) },
        PAGE_SIZES.map((n) => h("option", { value: n, selected: n === state.limit }, n)),
      ),
    ),
    Object.keys(filters).length
      ? h("button", { type: "button", class: "link", onclick: () => go({ ...Object.fromEntries(EVENT_FILTERS.map((k) => [k, null])), cursors: [] }) }, "clear filters")
      : null,
  );

  const pageNo = state.cursors.length + 1;
  const pager = h(
    "div",
    { class: "pager" },
    h("button", { type: "button", id: "page-newer", disabled: !state.cursors.length, onclick: () => go({ cursors: state.cursors.slice(0, -1) }) }, "← newer"),
    h("span", { id: "page-no" }, `page ${pageNo} · ${page.items.length} record(s)`),
    h("button", { type: "button", id: "page-older", disabled: !page.next_cursor, onclick: () => go({ cursors: [...state.cursors, page.next_cursor] }) }, "older →"),
    h(
      "button",
      {
        type: "button",
        id: "download-csv",
        class: "primary",
        onclick: async (e) => {
          e.target.disabled = true;
          status.textContent = "preparing…";
          try {
            const text = await api.downloadCsv("/events", { ...range, ...filters }, csvName(filters, range));
            const rows = Math.max(0, text.trim().split("\n").length - 1);
            status.textContent = `${rows} row(s) saved`;
          } catch (err) {
            status.textContent = err.message;
            status.classList.add("error-message");
          } finally {
            e.target.disabled = false;
          }
        },
      },
      "Download CSV",
    ),
    status,
  );

  const why = Object.keys(filters).length
    ? `No event matches ${Object.entries(filters).map(([k, v]) => `${k}=${v}`).join(", ")} in ${rangeLabel(state)}.`
    : `No event in ${rangeLabel(state)}.`;
  const node = h(
    "div",
    { class: "view view-events" },
    h("h1", {}, "Events"),
    section(
      null,
      form,
      h(
        "p",
        { class: "totals", id: "event-totals" },
        h("strong", {}, `${fmtNum(page.traps_total)} trap(s) counted`),
        ` in ${fmtNum(page.records_total)} record(s). A record is one observation: a tracefs record counts `
          + "every trap it saw, a kernel-log line is a first sighting (count 1, or 0 when tracefs counted the same trap). "
          + "The Fleet's Traps counted card is the first figure.",
      ),
      page.items.some((e) => e.count === 0) ? h("p", { class: "hint", id: "count-zero-note" }, `* ${COUNT_ZERO}`) : null,
      h("p", { class: "hint" }, `Newest first, ${rangeLabel(state)}. The CSV holds every page of these filters in this window, with the API's columns.`),
      pager,
      table(eventColumns(state), page.items, {
        id: "events",
        rowData: (e) => ({ id: e.id }),
        empty: state.cursors.length ? "No older event." : why,
      }),
    ),
  );
  return { node, draw() {}, charts: false };
}

function csvName(filters, range) {
  const parts = Object.entries(filters).map(([k, v]) => `${k}-${v}`.replace(/[^A-Za-z0-9_.-]+/g, "_"));
  return `splitwatch-events-${[fileStamp(range.since), fileStamp(range.until), ...parts].join("-")}.csv`;
}

// 2026-11-30T00:21:00Z -> 20261130T0021Z: ISO 8601 basic format, no ':' (not allowed in Windows
// file names), readable; the old name ran date and time together ("2026-11-300021", #17).
export function fileStamp(iso) {
  return new Date(iso).toISOString().slice(0, 16).replace(/[-:]/g, "") + "Z";
}

function textFilter(name, value, options, go) {
  const listId = `list-${name}`;
  return h(
    "label",
    {},
    `${name} `,
    h("input", {
      name,
      value: value || "",
      list: listId,
      placeholder: "any",
      autocomplete: "off",
      onchange: (e) => go({ [name]: e.target.value.trim() || null, cursors: [] }),
    }),
    h("datalist", { id: listId }, [...new Set(options)].sort().map((o) => h("option", { value: o }))),
  );
}

function selectFilter(name, value, options, go) {
  return h(
    "label",
    {},
    `${name} `,
    h(
      "select",
      { name, onchange: (e) => go({ [name]: e.target.value || null, cursors: [] }) },
      h("option", { value: "" }, "any"),
      options.map((o) => h("option", { value: o, selected: o === value }, o)),
    ),
  );
}

