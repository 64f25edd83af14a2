// Guest page: one guest's split locks over time, the hosts it ran on and what each host did
// about them (the action), and its top addresses, kernel code (canonical upper half,
// 0xffff...) told from user code (#5).

import * as api from "../api.js";
import { ACTION_COLORS, ACTION_ORDER, barLayout, chooseStep, grandTotal, seriesTotals, stackedBars, stepLabel } from "../charts.js";
import { actionBadge, ago, code, emptyState, fmtNum, fmtTime, h, keyValues, plot, section, sourcePicker, table, viewLink } from "../dom.js";
import { formatHash, sourceLabel, toIso, withChanges } from "../state.js";
import { eventColumns } from "./events.js";

export async function render(state, range) {
  const name = state.name;
  const src = state.source ? { source: state.source } : {};
  const [guest, byAction, byHost, recent] = await Promise.all([
    api.guest(name, range),
    api.series({ ...range, ...src, step: chooseStep(range), guest: name, group_by: "action" }),
    api.series({ ...range, ...src, step: chooseStep(range), guest: name, group_by: "host" }),
    api.events({ ...range, ...src, guest: name, limit: 20 }),
  ]);
  // What each host did with this guest's traps: one small series per host it ran on.
  const perHost = await Promise.all(
    (guest.hosts || []).map(async (hostName) => {
      const answer = await api.series({ ...range, ...src, step: chooseStep(range, 1), guest: name, host: hostName, group_by: "action" });
      return { host: hostName, actions: seriesTotals(answer) };
    }),
  );
  const namesakes = new Set((guest.sightings || []).filter((s) => !s.same_guest).map((s) => s.host));
  const total = grandTotal(byAction);
  const actionChart = h("div", { class: "chart", id: "chart-guest-action" });
  const hostChart = h("div", { class: "chart", id: "chart-guest-hosts" });
  const actions = Object.entries(guest.actions || {}).sort(
    (a, b) => ACTION_ORDER.indexOf(a[0]) - ACTION_ORDER.indexOf(b[0]),
  );

  const node = h(
    "div",
    { class: "view view-guest" },
    h("div", { class: "title-row" },
      h("h1", {}, h("span", { class: "crumb" }, viewLink(state, { page: "fleet" }, "Fleet"), " / guest "), name),
      sourcePicker(state)),
    guest.killed
      ? h("div", { class: "banner bad", id: "killed-banner" },
        `Killed: a split lock in fatal mode sent SIGBUS to its vCPU thread${guest.killed_at ? ` at ${fmtTime(guest.killed_at)} UTC` : ""}${guest.last_host ? ` on ${guest.last_host}` : ""}.`)
      : null,
    h(
      "div",
      { class: "two-col" },
      section(
        "Guest",
        keyValues([
          ["VMM", guest.vmm],
          ["UUID", guest.uuid ? code(guest.uuid) : "unknown"],
          ["events in window", fmtNum(guest.events)],
          ["last host", guest.last_host ? viewLink(state, { page: "host", name: guest.last_host }, guest.last_host) : "–"],
          ["last action", actionBadge(guest.last_action)],
          ["first seen", `${fmtTime(guest.first_seen_at)} UTC`],
          ["last seen", `${fmtTime(guest.last_seen_at)} UTC (${ago(guest.last_seen_at)})`],
        ]),
      ),
      section(
        "What the hosts did (events by action, this window, all sources)",
        table(
          [
            { label: "action", value: ([a]) => actionBadge(a) },
            { label: "events", class: "num", value: ([, n]) => fmtNum(n) },
          ],
          actions,
          { id: "guest-actions", empty: "No event in this window." },
        ),
        h("h3", {}, `Hosts it ran on, and what each did (${sourceLabel(state)})`),
        table(
          [
            { label: "host", value: (r) => viewLink(state, { page: "host", name: r.host }, r.host) },
            {
              label: "actions",
              value: (r) => ACTION_ORDER.filter((a) => r.actions[a] > 0).map((a) => [actionBadge(a), ` ${fmtNum(r.actions[a])} `]),
            },
            {
              // A host that reported this name with another uuid (or none) is a namesake: its
              // events count under the name, but it never moves the last host or the kill (#14).
              label: "",
              value: (r) => (namesakes.has(r.host)
                ? h("span", { class: "badge namesake", title: "this host reported the name with another uuid: not this guest" }, "namesake")
                : ""),
            },
          ],
          perHost,
          {
            id: "guest-hosts",
            rowLink: (r) => formatHash(withChanges(state, { page: "host", name: r.host })),
            rowData: (r) => ({ host: r.host }),
            empty: "Not seen on any host in this window.",
          },
        ),
      ),
    ),
    section(
      `Events by action (per ${stepLabel(byAction.step)}, UTC, ${sourceLabel(state)})`,
      total ? actionChart : emptyState(`${name} took no split lock in this window; widen the range to see older ones.`),
    ),
    section(
      `Events by host (per ${stepLabel(byHost.step)}, UTC, ${sourceLabel(state)})`,
      total ? hostChart : emptyState("No events in this window."),
    ),
    section(
      "Top addresses (guest RIP, all sources)",
      table(
        [
          { label: "address", value: (a) => code(a.address) },
          { label: "space", value: (a) => h("span", { class: `badge space-${a.space}` }, a.space) },
          { label: "events", class: "num", value: (a) => fmtNum(a.count) },
        ],
        guest.top_addresses || [],
        { id: "top-addresses", empty: "No address reported (tracefs counts carry none, kmsg lines do)." },
      ),
    ),
    section(
      "Latest events",
      table(eventColumns(state), recent.items, { id: "guest-events", rowData: (e) => ({ id: e.id }), empty: "No event in this window." }),
      h("p", {}, viewLink(state, { page: "events", guest: name, host: null, kind: null, action: null, source: null }, "All events of this guest →")),
    ),
  );

  return {
    node,
    draw() {
      if (!total) return;
      const open = (pt, extra) => {
        const start = new Date(pt.customdata);
        window.location.hash = formatHash(withChanges(state, {
          page: "events", name: null, guest: name, ...extra,
          since: toIso(start), until: toIso(new Date(start.getTime() + byAction.step * 1000)),
        }));
      };
      plot(actionChart, stackedBars(byAction, { colors: ACTION_COLORS, order: ACTION_ORDER }),
        barLayout(range, { yTitle: `events per ${stepLabel(byAction.step)}` }), { onClick: (pt) => open(pt, { action: pt.data.meta }) });
      plot(hostChart, stackedBars(byHost, { colors: {}, order: null }),
        barLayout(range, { yTitle: `events per ${stepLabel(byHost.step)}`, height: 260 }), { onClick: (pt) => open(pt, { host: pt.data.meta }) });
    },
  };
}
