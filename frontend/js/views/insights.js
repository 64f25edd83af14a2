// Panels of the three answers no other tool gives (issue 16 §2-§4), for the fleet page and, with
// a host filter, for a host page: vCPU time lost to misery mode (a lower bound from tracefs
// counts), who fatal mode would have killed, and what each kernel era means for the counts.
// The views fetch (through api.js) and hand the answers here; this module only builds DOM.

import { code, emptyState, fmtNum, fmtTime, h, section, table, viewLink } from "../dom.js";

const SHOWN = 10;

// "at least 2.5 vCPU-s", or the reason there is no figure. Seconds as the API gives them.
export function vcpuText(figure) {
  if (figure.vcpu_seconds_lower_bound === null || figure.vcpu_seconds_lower_bound === undefined) {
    return "no count known";
  }
  const s = figure.vcpu_seconds_lower_bound;
  if (s >= 3600) return `at least ${fmtNum(Math.round((s / 3600) * 100) / 100)} vCPU-h`;
  return `at least ${fmtNum(Math.round(s * 1000) / 1000)} vCPU-s`;
}

function shareText(figure) {
  if (figure.vcpu_share === null || figure.vcpu_share === undefined) return "–";
  const pct = figure.vcpu_share * 100;
  if (pct === 0) return "0%";
  return `${pct < 0.001 ? "< 0.001" : Number(pct.toPrecision(3))}% of a vCPU`;
}

function badgeFor(ready) {
  if (ready === true) return h("span", { class: "badge status-ok" }, "ready");
  if (ready === false) return h("span", { class: "badge status-drift" }, "not ready");
  return h("span", { class: "badge status-silent" }, "cannot tell");
}

function moreText(n, what) {
  return n > 0 ? h("p", { class: "hint more-count" }, `and ${fmtNum(n)} more ${what}`) : null;
}

// ------------------------------------------------------------------------------ throttling

function weekLine(week) {
  const g = week.guests_total;
  const text = g.vcpu_seconds_lower_bound === null
    ? "This week: guests were throttled, but no count is known (kernel-log sightings only)."
    : `This week: guests lost ${vcpuText(g)} to throttling (${fmtNum(g.counted_traps)} counted traps × 10 ms).`;
  return h("p", { id: "throttle-week" }, text);
}

export function throttlingPanel(answer, state, { host = null, week = null } = {}) {
  const rows = answer.guests.slice(0, SHOWN);
  const total = host ? answer.total : answer.guests_total;
  let headline = total.sentence;
  if (host && total.vcpu_seconds_lower_bound === null) {
    headline = `Throttled traps on ${host} have no figure: ${total.no_figure_reason}.`;
  } else if (host && !total.counted_traps) {
    headline = `No split-lock trap on ${host} was counted in misery mode in this window: no throttling cost.`;
  } else if (host) {
    headline = `Misery mode took ${vcpuText(total)} on ${host} in this window (${fmtNum(total.counted_traps)} counted traps × 10 ms).`;
  }
  return section(
    "Throttling cost (split-lock misery mode, a lower bound)",
    h("p", { class: "headline", id: "throttle-total" }, headline),
    week ? weekLine(week) : null,
    rows.length
      ? table(
        [
          { label: "host", value: (g) => viewLink(state, { page: "host", name: g.host }, g.host) },
          { label: "guest", value: (g) => (g.guest === "(host)" ? h("span", { class: "muted" }, "host processes") : viewLink(state, { page: "guest", name: g.guest }, g.guest)) },
          { label: "vCPU time lost", class: "num", value: (g) => vcpuText(g) },
          { label: "share", class: "num", value: (g) => shareText(g) },
          { label: "counted traps", class: "num", value: (g) => fmtNum(g.counted_traps) },
          { label: "note", value: (g) => (g.no_figure_reason ? h("span", { class: "muted", title: g.no_figure_reason }, `${fmtNum(g.uncounted_sightings)} log line(s), no count`) : "") },
        ],
        rows,
        { id: "throttle-guests", rowData: (g) => ({ host: g.host, guest: g.guest }) },
      )
      : emptyState("No split-lock trap was taken in misery mode in this window."),
    moreText(answer.more_guests, "guests"),
    h("p", { class: "hint" }, "Each split-lock trap counted by tracefs while misery mode was on (warn mode, 5.19+, split_lock_mitigate=1) cost its thread at least a 10 ms sleep. Kernel-log lines are first sightings, not counts: no figure is made from them."),
  );
}

// ------------------------------------------------------------------------- fatal readiness

export function readinessPanel(answer, state, { host = null } = {}) {
  const offenders = answer.offenders.slice(0, SHOWN);
  const hosts = answer.hosts.slice(0, SHOWN);
  const summary = host
    ? (answer.hosts[0] ? answer.hosts[0].verdict : "no report")
    : `${fmtNum(answer.hosts_ready)} ready · ${fmtNum(answer.hosts_not_ready)} not ready · ${fmtNum(answer.hosts_unknown)} cannot tell`;
  return section(
    "Fatal-mode readiness (split_lock_detect=fatal)",
    h("p", { class: "headline", id: "readiness-summary" }, summary),
    host
      ? null
      : table(
        [
          { label: "host", value: (x) => viewLink(state, { page: "host", name: x.host }, x.host) },
          { label: "ready", value: (x) => badgeFor(x.ready) },
          { label: "verdict", value: (x) => x.verdict },
          { label: "offenders", class: "num", value: (x) => fmtNum(x.offenders) },
        ],
        hosts,
        { id: "readiness-hosts", rowData: (x) => ({ host: x.host }), empty: "No host in this selection." },
      ),
    host ? null : moreText(answer.more_hosts, "hosts"),
    h("h3", {}, "Would have been killed (SIGBUS)"),
    table(
      [
        { label: "host", value: (o) => o.host },
        { label: "guest or process", value: (o) => (o.guest ? viewLink(state, { page: "guest", name: o.guest }, o.guest) : h("span", {}, "process ", code(o.comm))) },
        { label: "kind", value: (o) => o.kind },
        { label: "last trap (UTC)", value: (o) => fmtTime(o.last_trap_at) },
        { label: "count", class: "num", value: (o) => (o.count === null ? "–" : fmtNum(o.count)) },
        { label: "log lines", class: "num", value: (o) => fmtNum(o.sightings) },
        { label: "source", value: (o) => o.sources.join(", ") },
        { label: "", value: (o) => (o.killed ? h("span", { class: "killed" }, "already killed") : "") },
      ],
      offenders,
      {
        id: "readiness-offenders",
        rowData: (o) => ({ host: o.host, who: o.guest || o.comm }),
        empty: "No guest or process would have been killed: nothing split-locked in this window.",
      },
    ),
    moreText(answer.more_offenders, "offenders"),
  );
}

// ----------------------------------------------------------------------------- kernel eras

const ERA_WORDS = {
  none: "before 5.7: no detection",
  per_task: "5.7–5.18: counts are floors",
  misery: "5.19–6.1: misery mode, no sysctl",
  mitigate_on: "misery mode (mitigate=1)",
  stuck_off: "mitigate=0 before 6.15: cores can stay off",
  mitigate_off: "6.15+, mitigate=0: warnings only",
  unknown: "era unknown from version",
};

export function erasPanel(answer, state, { host = null } = {}) {
  if (host) {
    const mine = answer.hosts[0];
    return section(
      "Kernel era (now)",
      mine
        ? h("p", { class: "headline", id: "era-host", dataset: { era: mine.era } }, h("strong", {}, mine.era), ": ", mine.reason)
        : emptyState("No report from this host."),
      upgradeTable(answer, state),
    );
  }
  const eras = Object.entries(answer.by_era).sort((a, b) => b[1] - a[1]);
  return section(
    "Kernel eras (each host's kernel now)",
    h("ul", { class: "inline-list", id: "era-counts" },
      eras.map(([era, n]) => h("li", { dataset: { era } }, h("strong", {}, fmtNum(n)), ` ${era} `, h("span", { class: "muted" }, `(${ERA_WORDS[era] || era})`)))),
    answer.floors.length
      ? h("p", { id: "era-floors" }, "Counts are floors (per-task off, 5.7–5.18): ", answer.floors.map((x) => x.host).join(", "), answer.more_floors ? ` and ${answer.more_floors} more` : "")
      : null,
    answer.stuck_off.length
      ? h("p", { id: "era-stuck" }, "Stuck-off era (split_lock_mitigate=0 before v6.15): ", answer.stuck_off.map((x) => x.host).join(", "), answer.more_stuck_off ? ` and ${answer.more_stuck_off} more` : "")
      : null,
    upgradeTable(answer, state),
  );
}

function upgradeTable(answer, state) {
  const rows = answer.upgrade.flatMap((u) => u.offenders.map((o) => ({ ...o, kernel: u.kernel })));
  if (!rows.length) return null;
  return h(
    "div",
    {},
    h("h3", {}, "Would start being throttled after an upgrade to 5.19+"),
    table(
      [
        { label: "host", value: (o) => viewLink(state, { page: "host", name: o.host }, o.host) },
        { label: "kernel", value: (o) => o.kernel },
        { label: "guest or process", value: (o) => o.guest || o.comm },
        { label: "rate", class: "num", value: (o) => `${fmtNum(Math.round(o.per_hour * 100) / 100)}/h` },
        { label: "basis", value: (o) => o.basis },
        { label: "cost after upgrade", class: "num", value: (o) => (o.throttled_s_per_hour_after_upgrade === null ? "no count known" : `at least ${fmtNum(Math.round(o.throttled_s_per_hour_after_upgrade * 1000) / 1000)} vCPU-s/h`) },
      ],
      rows.slice(0, SHOWN),
      { id: "era-upgrade", rowData: (o) => ({ host: o.host, who: o.guest || o.comm }) },
    ),
    moreText(rows.length - Math.min(rows.length, SHOWN) + answer.more_upgrade, "offenders"),
  );
}
