// Host page: what this host's kernel is set to and did, over the window. Mode and mitigate
// timeline, per-CPU detection (drift shows as red cells while the mode says on), its events
// by action, the guests seen on it, its gaps, and the agent's own health figures (#5).

import * as api from "../api.js";
import {
  ACTION_COLORS, ACTION_ORDER, barLayout, changeMarks, chooseStep, cpuHeatmap, grandTotal, heatmapLayout, modeTimeline,
  stackedBars, stepLabel, timelineLayout,
} from "../charts.js";
import {
  actionBadge, ago, code, emptyState, fmtNum, fmtTime, h, keyValues, modeBadge, plot, section, sourcePicker, statusBadge,
  table, viewLink,
} from "../dom.js";
import { formatHash, sourceLabel, toIso, withChanges } from "../state.js";
import { eventColumns } from "./events.js";
import { erasPanel, readinessPanel, throttlingPanel } from "./insights.js";

export async function render(state, range) {
  const name = state.name;
  const src = state.source ? { source: state.source } : {};
  const [host, byAction, guestList, gapList, recent, throttle, readiness, eras] = await Promise.all([
    api.host(name, range),
    api.series({ ...range, ...src, step: chooseStep(range), host: name, group_by: "action" }),
    // A host has at most SPLITWATCH_MAX_GUESTS_PER_HOST guests (1000 by default): one page.
    api.guests({ ...range, host: name, limit: 1000 }),
    api.gaps({ ...range, host: name }),
    api.events({ ...range, ...src, host: name, limit: 20 }),
    api.throttling({ ...range, host: name, limit: 10 }),
    api.fatalReadiness({ ...range, host: name, limit: 10 }),
    api.kernelEras({ ...range, host: name, limit: 10 }),
  ]);
  const marks = changeMarks([host], gapList.items, range, { fleet: false });
  const total = grandTotal(byAction);
  const actionChart = h("div", { class: "chart", id: "chart-host-action" });
  const modeChart = h("div", { class: "chart", id: "chart-mode" });
  const cpuChart = h("div", { class: "chart", id: "chart-cpus" });
  const states = host.states || [];
  const cpuTrace = cpuHeatmap(states, range);
  const timeline = modeTimeline(states, range);

  const node = h(
    "div",
    { class: "view view-host" },
    h("div", { class: "title-row" },
      h("h1", {}, h("span", { class: "crumb" }, viewLink(state, { page: "fleet" }, "Fleet"), " / host "), name, " ",
        statusBadge(host.status), " ", modeBadge(host)),
      sourcePicker(state)),
    host.status === "drift"
      ? h("div", { class: "banner warn" }, `Detection is off on CPU(s) ${host.drifting_cpus.join(", ")} in several samples in a row, while the mode is ${host.mode}: split locks there go unseen.`)
      : null,
    host.status === "silent"
      ? h("div", { class: "banner warn" }, `The agent has not reported since ${fmtTime(host.last_seen_at)} UTC (${ago(host.last_seen_at)}): check \`splitwatch agent\` on ${name}.`)
      : null,
    h(
      "div",
      { class: "two-col" },
      section("Host", facts(host)),
      section("Agent health", health(host)),
    ),
    h(
      "div",
      { class: "two-col", id: "host-insights" },
      throttlingPanel(throttle, state, { host: name }),
      readinessPanel(readiness, state, { host: name }),
    ),
    erasPanel(eras, state, { host: name }),
    section(
      `Events by action (per ${stepLabel(byAction.step)}, UTC, ${sourceLabel(state)})`,
      total ? actionChart : emptyState(`No split-lock or bus-lock trap on ${name} in this window.`),
      marks.items.length
        ? h("p", { class: "hint" }, `${marks.items.length} change(s), drift(s) or gap(s) marked on the chart.`)
        : null,
    ),
    section(
      "Mode, split_lock_mitigate and drift over time",
      timeline.length ? modeChart : emptyState("The agent has sent no state for this host in this window."),
    ),
    section(
      "Split-lock detection per CPU (MSR_TEST_CTRL bit 29: green on, red off, grey error/unknown)",
      cpuTrace ? cpuChart : emptyState("No per-CPU state reported: the agent could not read /dev/cpu/*/msr, or sent no state yet."),
      latestCpus(host),
    ),
    h(
      "div",
      { class: "two-col" },
      section("Guests seen on this host", guestTable(guestList.items, state)),
      section("Gaps (counted losses)", gapTable(gapList.items)),
    ),
    section(
      "Latest events",
      table(eventColumns(state), recent.items, {
        id: "host-events",
        rowData: (e) => ({ id: e.id }),
        empty: `No event on ${name} in this window.`,
      }),
      h("p", {}, viewLink(state, { page: "events", host: name, guest: null, kind: null, action: null, source: null }, "All events of this host →")),
    ),
  );

  return {
    node,
    draw() {
      if (total) {
        plot(actionChart, stackedBars(byAction, { colors: ACTION_COLORS, order: ACTION_ORDER }),
          barLayout(range, { yTitle: `events per ${stepLabel(byAction.step)}`, marks }), {
            onClick: (pt) => {
              const start = new Date(pt.customdata);
              window.location.hash = formatHash(withChanges(state, {
                page: "events", name: null, host: name, action: pt.data.meta,
                since: toIso(start), until: toIso(new Date(start.getTime() + byAction.step * 1000)),
              }));
            },
          });
      }
      if (timeline.length) plot(modeChart, timeline, timelineLayout(range));
      if (cpuTrace) plot(cpuChart, [cpuTrace], heatmapLayout(range, cpuTrace.y.length, { yTitle: "CPU" }));
    },
  };
}

function facts(x) {
  const yesNo = (v) => (v === null || v === undefined ? "unknown" : v ? "yes" : "no");
  return keyValues([
    ["kernel", x.kernel],
    ["CPU model", x.cpu_model],
    ["boot id", code(x.boot_id)],
    ["mode", x.mode ? (x.mode === "ratelimit" ? `ratelimit:${x.ratelimit}` : x.mode) : "no state yet"],
    ["split_lock_mitigate", x.mitigate === null || x.mitigate === undefined ? "n/a (kernel < 5.19 or unreadable)" : String(x.mitigate)],
    ["split-lock detect supported", yesNo(x.sld_supported)],
    ["bus-lock detect supported", yesNo(x.bld_supported)],
    ["CPUs", `${x.cpus_total} total · ${x.cpus_on} on · ${x.cpus_off} off · ${x.cpus_error} error`],
    ["drifting CPUs", x.drifting_cpus && x.drifting_cpus.length ? x.drifting_cpus.join(", ") : "none"],
    ["events in window", fmtNum(x.events)],
    ["agent version", x.agent_version],
    ["first seen", `${fmtTime(x.first_seen_at)} UTC`],
    ["last report", `${fmtTime(x.last_seen_at)} UTC (${ago(x.last_seen_at)})`],
  ]);
}

function health(x) {
  if (!x.health || typeof x.health !== "object" || !Object.keys(x.health).length) {
    return emptyState("The agent sent no health figures (agents before #4, or an import).");
  }
  const show = (v) => (v !== null && typeof v === "object" ? JSON.stringify(v) : String(v));
  return h("div", { id: "health" }, keyValues(Object.entries(x.health).map(([k, v]) => [k.replaceAll("_", " "), show(v)])));
}

function latestCpus(x) {
  const errors = (x.cpus || []).filter((c) => c.error);
  if (!errors.length) return null;
  return h(
    "details",
    { class: "cpu-errors" },
    h("summary", {}, `${errors.length} CPU(s) could not be read`),
    h("ul", {}, errors.map((c) => h("li", {}, `cpu ${c.cpu}: ${c.error}`))),
  );
}

function guestTable(guests, state) {
  const rows = [...guests].sort((a, b) => b.events - a.events || a.name.localeCompare(b.name));
  return table(
    [
      { label: "guest", value: (g) => viewLink(state, { page: "guest", name: g.name }, g.name) },
      { label: "VMM", value: (g) => g.vmm },
      { label: "events", class: "num", value: (g) => fmtNum(g.events) },
      { label: "last action", value: (g) => actionBadge(g.last_action) },
      { label: "killed", value: (g) => (g.killed ? h("span", { class: "killed" }, "killed") : "") },
    ],
    rows,
    {
      id: "host-guests",
      rowLink: (g) => formatHash(withChanges(state, { page: "guest", name: g.name })),
      rowData: (g) => ({ guest: g.name }),
      empty: "No guest took a split lock on this host in this window.",
    },
  );
}

export function gapTable(gaps) {
  return table(
    [
      { label: "received (UTC)", value: (g) => fmtTime(g.received_at) },
      { label: "source", value: (g) => g.source },
      { label: "seq", value: (g) => `${g.first_seq}–${g.last_seq}` },
      { label: "lost", class: "num", value: (g) => fmtNum(g.count) },
      { label: "reason", value: (g) => h("span", { class: `badge reason-${g.reason}` }, g.reason) },
    ],
    gaps,
    { id: "gaps", empty: "No loss in this window: every record read was delivered." },
  );
}
