// Fleet overview: what an SRE opens first. The hosts that need action lead (their consistency
// verdict and its reason, #16); then totals for the window, split locks over time by action and
// by kind, which hosts and guests, a host × time heatmap, and what changed (mode changes,
// verdicts needing action, gaps) drawn on the chart and listed below it (#5), with the alerts
// that fired in the window (#12).

import { alertOf, alertsInRange } from "../alerting.js";
import * as api from "../api.js";
import {
  ACTION_COLORS, ACTION_ORDER, KIND_COLORS, KIND_ORDER, alertMarks, barLayout, changeMarks, chooseStep, grandTotal,
  heatmap, heatmapLayout, mergeMarks, seriesTotals, stackedBars, stepLabel,
} from "../charts.js";
import {
  actionBadge, ago, card, code, emptyState, fmtNum, fmtTime, h, plot, section, sourcePicker, statusBadge, table,
  viewLink,
} from "../dom.js";
import { formatHash, isPast, shortTime, sourceLabel, toIso, withChanges } from "../state.js";
import { hostTable } from "./hosts.js";
import { erasPanel, readinessPanel, throttlingPanel } from "./insights.js";

// Mode and verdict marks need each host's states: one request per host, so only the busiest.
const MARKED_HOSTS = 25;
// Lists are pages (#14), one request each: the busiest guests and hosts, ranked by the API over
// the whole fleet (in a fleet of 10,000 the busiest host's name can sort anywhere), and the
// first hosts by name, which are every host of a small fleet (its quiet hosts are listed too).
const TOP_GUESTS = 100;
const BUSY_HOSTS = 100;
const HOST_PAGE = 200;
// Hosts that need action, and silent ones, asked for by those filters: a host whose name sorts
// past the first page must still be listed (the cards count every host).
const ACTION_PAGE = 200;
const SILENT_PAGE = 200;
const HEAT_ROWS = 30;

export async function render(state, range) {
  const src = state.source ? { source: state.source } : {};
  // The fleet's week, whatever the range: "guests lost N vCPU-hours to throttling this week".
  const week = { since: toIso(new Date(Date.parse(range.until) - 7 * 86400 * 1000)), until: range.until };
  const [summary, byAction, byKind, byHost, nameList, busyList, actionList, silentList, guestList, gapList, throttle, readiness, eras, thisWeek, alertList] = await Promise.all([
    api.summary(range),
    api.series({ ...range, ...src, step: chooseStep(range), group_by: "action" }),
    api.series({ ...range, ...src, step: chooseStep(range), group_by: "kind" }),
    api.series({ ...range, ...src, step: chooseStep(range), group_by: "host", top: HEAT_ROWS }),
    api.hosts({ ...range, limit: HOST_PAGE }),
    api.hosts({ ...range, sort: "events", limit: BUSY_HOSTS }),
    api.hosts({ ...range, needs_action: true, limit: ACTION_PAGE }),
    api.hosts({ ...range, status: "silent", limit: SILENT_PAGE }),
    api.guests({ ...range, sort: "events", limit: TOP_GUESTS }),
    api.gaps(range),
    api.throttling({ ...range, limit: 10 }),
    api.fatalReadiness({ ...range, limit: 10 }),
    api.kernelEras({ ...range, limit: 10 }),
    api.throttling({ ...week, limit: 1 }),
    // Marks only: the overview still draws when alerts cannot be read.
    api.alerts({ since: range.since, limit: 1000 }).catch((err) => ({ items: [], error: err })),
  ]);
  const hostList = topHosts(nameList, busyList, actionList, silentList);
  const busiest = [...hostList.items].sort((a, b) => b.events - a.events || a.name.localeCompare(b.name));
  const details = await Promise.all(
    busiest.slice(0, MARKED_HOSTS).map((x) => api.host(x.name, range).catch(() => null)),
  );
  const alerts = alertsInRange(alertList.items.map(alertOf), range);
  const marks = mergeMarks(changeMarks(details.filter(Boolean), gapList.items, range), alertMarks(alerts, range));

  const node = h(
    "div",
    { class: "view view-fleet" },
    h("div", { class: "title-row" }, h("h1", {}, "Fleet overview"), sourcePicker(state)),
  );
  const past = isPast(range);
  node.append(cards(summary, range, past));
  node.append(needsAction(actionList, summary, state));

  if (summary.hosts_total === 0) {
    node.append(
      section(
        null,
        emptyState(
          "No agent has reported yet, so there is nothing to chart.",
          h("p", {}, "Start one on each host with ",
            code(`splitwatch agent --server ${location.origin} --token <agent token>`),
            " (create the token with ", code("splitwatch token create --role agent --host <name>"),
            "), or try ", code("splitwatch demo"), "."),
        ),
      ),
    );
    return { node, draw() {}, charts: false };
  }

  const total = grandTotal(byAction);
  const noEvents = emptyState(
    `No split-lock or bus-lock trap in this window on any of the ${summary.hosts_total} reporting host(s).`,
    h("p", {}, "That is good news; widen the time range to see older ones."),
  );
  const actionChart = h("div", { class: "chart", id: "chart-action" });
  const kindChart = h("div", { class: "chart", id: "chart-kind" });
  const hostChart = h("div", { class: "chart", id: "chart-hosts" });
  const heat = heatmap(byHost);

  // What needs action first (issue 16): who would be killed, what throttling costs, which
  // kernels hide counts; the charts and the change/gap list come after.
  node.append(
    h(
      "div",
      { class: "two-col needs-action", id: "needs-action" },
      readinessPanel(readiness, state),
      throttlingPanel(throttle, state, { week: thisWeek }),
    ),
    erasPanel(eras, state),
  );

  node.append(
    section(
      `Split locks by action (events per ${stepLabel(byAction.step)}, UTC, ${sourceLabel(state)})`,
      total ? actionChart : noEvents,
      total ? h("p", { class: "hint" }, "Click a bar to list its events.") : null,
      changesList(marks.items, state),
      alertList.error ? h("p", { class: "hint" }, `Alerts not marked: ${alertList.error.message}`) : null,
    ),
    h(
      "div",
      { class: "two-col" },
      section(`By kind (events per ${stepLabel(byKind.step)}, ${sourceLabel(state)})`, total ? kindChart : emptyState("No events in this window.")),
      section(
        `Hosts × time (events per ${stepLabel(byHost.step)}, ${sourceLabel(state)})`,
        heat ? hostChart : emptyState("No host had an event in this window."),
        heat ? h("p", { class: "hint" }, heatHint(heat, byHost)) : null,
      ),
    ),
    h(
      "div",
      { class: "two-col" },
      section("Top guests", guestTable(guestList.items, state, 15, "top-guests"), more(guestList.items.filter((g) => g.events > 0 || g.killed), 15, guestList.next_cursor ? "busiest guests" : "guests with events", (rows) => guestTable(rows, state, rows.length, "all-guests"), !!guestList.next_cursor)),
      section("Top hosts", topTable(hostList.items, state, 15, "top-hosts", past), topHostsHint(hostList, summary, state), more(hostList.items, 15, hostList.partial ? "hosts: the busiest, the silent and those needing action" : "hosts", (rows) => topTable(rows, state, rows.length, "all-hosts", past), hostList.partial)),
    ),
  );

  return {
    node,
    draw() {
      if (total) {
        const openBucket = (pt, field) => {
          const start = new Date(pt.customdata);
          const until = new Date(start.getTime() + byAction.step * 1000);
          window.location.hash = formatHash(
            withChanges(state, { page: "events", name: null, [field]: pt.data.meta, since: toIso(start), until: toIso(until) }),
          );
        };
        plot(actionChart, stackedBars(byAction, { colors: ACTION_COLORS, order: ACTION_ORDER }),
          barLayout(range, { yTitle: `events per ${stepLabel(byAction.step)}`, marks }),
          { onClick: (pt) => openBucket(pt, "action") });
        plot(kindChart, stackedBars(byKind, { colors: KIND_COLORS, order: KIND_ORDER }),
          barLayout(range, { yTitle: `events per ${stepLabel(byKind.step)}`, height: 260 }),
          { onClick: (pt) => openBucket(pt, "kind") });
      }
      if (heat) {
        plot(hostChart, [heat], heatmapLayout(range, heat.y.length), {
          onClick: (pt) => {
            const name = pt.data.meta[pt.pointIndex[0]];
            window.location.hash = formatHash(withChanges(state, { page: "host", name }));
          },
        });
      }
    },
  };
}

function heatHint(heat, byHost) {
  const named = byHost.others > 0 ? byHost.series.slice(0, -1) : byHost.series;
  const busy = named.filter((s) => s.points.some(([, c]) => c > 0)).length + (byHost.others || 0);
  const shown = heat.y.length < busy ? `The ${heat.y.length} busiest of ${busy} hosts with events. ` : "";
  return `${shown}Click a cell to open that host.`;
}

function cards(s, range, past) {
  const modes = Object.entries(s.hosts_by_mode || {})
    .sort((a, b) => b[1] - a[1])
    .map(([m, n]) => `${m} ${n}`)
    .join(" · ");
  // Event figures are counted over the window; host conditions are the fleet's current ones
  // (the API keeps no status per past instant), so a past window says so in the labels (#17).
  const counted = `${shortTime(range.since)} → ${shortTime(range.until)} UTC`;
  const cardsRow = h(
    "div",
    { class: "cards", id: "summary" },
    // Traps, not records (#17): the Events explorer lists records, one of which may count many.
    card("Traps counted", fmtNum(s.events), "split + bus lock traps, all sources", { id: "card-events" }),
    card("Guests affected", fmtNum(s.guests_affected), "took at least one", { id: "card-guests" }),
    card("Guests killed", fmtNum(s.guests_killed), "SIGBUS in fatal mode", { tone: s.guests_killed ? "bad" : null, id: "card-killed" }),
    card(past ? "Hosts now" : "Hosts", fmtNum(s.hosts_total), modes || "no mode reported", { id: "card-hosts" }),
    card(past ? "Need action now" : "Need action", fmtNum(s.hosts_need_action), "drift, stuck off, inconsistent config, foreign hypervisor", { tone: s.hosts_need_action ? "bad" : null, id: "card-action" }),
    card(past ? "Silent now" : "Silent", fmtNum(s.hosts_silent), "agent stopped reporting", { tone: s.hosts_silent ? "warn" : null, id: "card-silent" }),
    card("Gaps", fmtNum(s.gaps), "counted losses", { tone: s.gaps ? "warn" : null, id: "card-gaps" }),
  );
  const note = h(
    "p",
    { class: `hint counted${past ? " past" : ""}`, id: "counted" },
    past
      ? `Traps, guests, kills and gaps counted ${counted}. This window is in the past: hosts, modes, verdicts, silence and last reports are as of now, not of the window.`
      : `Traps, guests, kills and gaps counted ${counted}; hosts, verdicts and silence as of now.`,
  );
  return h("div", {}, cardsRow, note);
}

function changesList(items, state) {
  if (!items.length) return h("p", { class: "hint" }, "No mode change, verdict needing action, gap or alert in this window.");
  return h(
    "details",
    { class: "changes", open: items.length <= 8 },
    h("summary", {}, `${items.length} change(s), verdict(s), gap(s) and alert(s) in this window`),
    table(
      [
        { label: "time (UTC)", class: "nowrap", value: (i) => fmtTime(i.at) },
        { label: "host", class: "nowrap", value: (i) => (i.host ? viewLink(state, { page: "host", name: i.host }, i.host) : "–") },
        {
          label: "what",
          value: (i) =>
            i.type === "alert"
              ? viewLink(state, { page: "alerts" }, i.name, { class: `mark mark-alert severity-${i.severity}` })
              : h("span", { class: `mark mark-${i.type}` }, i.type === "action" ? i.text.split(" (")[0] : i.type),
        },
        { label: "detail", value: (i) => i.text },
      ],
      items,
      { id: "changes", rowData: (i) => ({ type: i.type }) },
    ),
  );
}

// The longer list, folded: a big fleet's 16th host is still one click away. `partial`: the
// list is one page of a longer one (the API pages it), so it says "the N ..." not "all N".
function more(rows, shown, what, build, partial = false) {
  if (rows.length <= shown) return null;
  return h("details", { class: "more" }, h("summary", {}, `${partial ? "the" : "all"} ${rows.length} ${what}`), build(rows));
}

function guestTable(guests, state, limit, id) {
  // Killed guests first (#17): a SIGBUS kill is the worst outcome and usually comes with few
  // events, so ranking by events alone hid it at the bottom of the list.
  const rows = guests
    .filter((g) => g.events > 0 || g.killed)
    .sort((a, b) => Number(b.killed) - Number(a.killed) || b.events - a.events || a.name.localeCompare(b.name))
    .slice(0, limit);
  return table(
    [
      { label: "guest", value: (g) => viewLink(state, { page: "guest", name: g.name }, g.name) },
      { label: "events", class: "num", value: (g) => fmtNum(g.events) },
      { label: "last action", value: (g) => actionBadge(g.last_action) },
      { label: "killed", value: (g) => (g.killed ? h("span", { class: "killed" }, `killed ${ago(g.killed_at)}`) : "") },
      { label: "hosts", value: (g) => g.hosts.join(", ") },
    ],
    rows,
    {
      id,
      rowLink: (g) => formatHash(withChanges(state, { page: "guest", name: g.name })),
      rowData: (g) => ({ guest: g.name }),
      empty: "No guest took a split lock in this window.",
    },
  );
}

// The hosts the "Top hosts" table ranks: every host when the first page by name holds the whole
// fleet; else those in trouble (needing action, silent) and the busiest, fleet-wide.
function topHosts(nameList, busyList, actionList, silentList) {
  const partial = !!nameList.next_cursor;
  const byName = new Map();
  for (const list of [actionList, silentList, busyList, ...(partial ? [] : [nameList])]) {
    for (const x of list.items) if (!byName.has(x.name)) byName.set(x.name, x);
  }
  return { items: [...byName.values()], partial };
}

// A fleet larger than the first page by name: the table is not every host, and says which.
function topHostsHint(hostList, summary, state) {
  if (!hostList.partial) return null;
  const list = (status, text) => viewLink(state, { page: "hosts", status, sort: "name" }, text);
  return h(
    "p",
    { class: "hint", id: "top-hosts-hint" },
    `Of the fleet's ${fmtNum(summary.hosts_total)} hosts: those that need action, the silent ones and the ${BUSY_HOSTS} busiest in this window. `,
    "Every host, page by page: ", list(null, "all"), " · ", list("silent", "silent"), " · ", list("needs_action", "needing action"), ".",
  );
}

// The fleet's "Top hosts": those in trouble first (they may have no events precisely because
// detection is off), then the busiest.
function topTable(hosts, state, limit, id, past = false) {
  const rows = [...hosts]
    .sort((a, b) => rank(a) - rank(b) || b.events - a.events || a.name.localeCompare(b.name))
    .slice(0, limit);
  return hostTable(rows, state, { id, past });
}

// needs action, then silent, then the rest (unknown, transient, per-task off...), consistent last.
function rank(x) {
  if (x.needs_action) return 0;
  if (x.status === "silent") return 1;
  if (x.status === "consistent") return 3;
  return 2;
}

// The hosts an operator must act on, with the agent's reason, ahead of every chart.
function needsAction(actionList, summary, state) {
  const rows = actionList.items;
  if (!rows.length) return h("p", { class: "hint", id: "hosts-need-action" }, "No host needs action: every verdict is one the kernel explains.");
  const total = Math.max(summary.hosts_need_action, rows.length);
  const shown = actionList.next_cursor ? `the first ${rows.length} by name of ${total}` : `${rows.length}`;
  return section(
    `Hosts that need action (${shown})`,
    table(
      [
        { label: "host", value: (x) => viewLink(state, { page: "host", name: x.name }, x.name) },
        { label: "verdict", value: (x) => statusBadge(x.status, x.reason) },
        { label: "reason", value: (x) => h("span", { class: "reason" }, x.reason) },
        { label: "since", value: (x) => (x.verdict_since ? ago(x.verdict_since) : "") },
      ],
      rows,
      { id: "hosts-need-action", rowData: (x) => ({ host: x.name }) },
    ),
  );
}
