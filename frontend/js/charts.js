// API JSON in, Plotly traces and layouts out: pure functions, no DOM, no fetch, no clock.
//
// Colours are fixed per action so a glance reads the same on every page and every day
// (#5): sigbus (a killed guest) red and drawn at the bottom of each stack, throttle orange,
// warn amber, ratelimit purple, reflect blue, oops black, unknown grey.

export const ACTION_ORDER = ["sigbus", "oops", "throttle", "warn", "ratelimit", "reflect", "unknown"];
export const ACTION_COLORS = {
  sigbus: "#d62728",
  oops: "#111111",
  throttle: "#ff7f0e",
  warn: "#f5b700",
  ratelimit: "#8e44ad",
  reflect: "#1f77b4",
  unknown: "#9e9e9e",
};
export const KIND_ORDER = ["split_lock", "bus_lock"];
export const KIND_COLORS = { split_lock: "#3b5b92", bus_lock: "#2a9d8f" };
export const MODE_COLORS = { off: "#9e9e9e", warn: "#f5b700", fatal: "#d62728", ratelimit: "#8e44ad" };
export const MITIGATE_COLORS = { "1": "#ff7f0e", "0": "#f5d58a", "n/a": "#d0d0d0" };
// Consistency verdicts (agent/kernel/consistency.py): red needs action, green and grey do not.
export const VERDICT_COLORS = {
  consistent: "#cfe8cf", unsupported: "#d0d0d0", off_by_design: "#d0d0d0", transient: "#f5d58a",
  per_task_off: "#f5b700", stuck_off: "#e15759", drift: "#e15759", inconsistent_config: "#e15759",
  foreign_hypervisor: "#e15759", unknown: "#eeeeee",
};
const NEEDS_ACTION = new Set(["drift", "stuck_off", "inconsistent_config", "foreign_hypervisor"]);
const PALETTE = ["#4e79a7", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#76b7b2", "#bab0ac"];

// Plotly has no time zones: it draws a date string's wall clock. Give it UTC wall clock,
// without the `Z` it would otherwise ignore, and say "UTC" on every axis.
export function plotTime(iso) {
  const d = iso instanceof Date ? iso : new Date(iso);
  return d.toISOString().slice(0, 19).replace("T", " ");
}

// About 60-120 bars whatever the window: enough detail, bars still wide enough to click.
// Whole hours from a day up, so /series reads rollup_1h (docs/benchmarks.md: rollups, not scans).
const NICE_STEPS = [60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];

export function chooseStep(range, targetBuckets = 100) {
  const seconds = (new Date(range.until) - new Date(range.since)) / 1000;
  const wanted = seconds / targetBuckets;
  return NICE_STEPS.find((s) => s >= wanted) || NICE_STEPS[NICE_STEPS.length - 1];
}

// Plotly reads a small HTML subset in names, tick labels, annotations and hover text (<a
// href>, <span style>) and `%{...}` in hover templates: a host or guest name is data, so
// its markup and template characters become entities.
export function plotText(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/%/g, "&#37;");
}

export function stepLabel(step) {
  if (step % 86400 === 0) return step === 86400 ? "day" : `${step / 86400} days`;
  if (step % 3600 === 0) return step === 3600 ? "hour" : `${step / 3600} h`;
  if (step % 60 === 0) return step === 60 ? "minute" : `${step / 60} min`;
  return `${step} s`;
}

export function colorFor(key, colors, index) {
  return (colors && colors[key]) || PALETTE[index % PALETTE.length];
}

function sortKeys(keys, order) {
  const rank = (k) => (order && order.includes(k) ? order.indexOf(k) : (order ? order.length : 0));
  return [...keys].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

// A series answer folds the keys beyond `top` into one last line, key "(other)", when `others`
// is above 0 (#14). The key alone cannot tell it from a guest named "(other)": `others` can.
export function otherLine(response) {
  return response && response.others > 0 && response.series.length ? response.series[response.series.length - 1] : null;
}

export function seriesTotals(response) {
  const totals = {};
  for (const s of (response && response.series) || []) {
    totals[s.key] = s.points.reduce((sum, [, count]) => sum + count, 0);
  }
  return totals;
}

export function grandTotal(response) {
  const lines = (response && response.series) || [];
  return lines.reduce((sum, s) => sum + s.points.reduce((a, [, c]) => a + c, 0), 0);
}

// One bar trace per key, stacked; a key with no event in the window is left out of the
// legend. Bars start at their bucket's start and are one step wide.
export function stackedBars(response, { colors = ACTION_COLORS, order = ACTION_ORDER, unit = "events" } = {}) {
  const step = response.step;
  const totals = seriesTotals(response);
  const other = otherLine(response);
  const named = other ? response.series.slice(0, -1) : response.series;
  const byKey = Object.fromEntries(named.map((s) => [s.key, s]));
  const traces = sortKeys(Object.keys(byKey).filter((k) => totals[k] > 0), order).map((key, i) => {
    const points = byKey[key].points;
    return {
      type: "bar",
      name: `${plotText(key)} (${totals[key]})`,
      meta: key,
      x: points.map(([t]) => plotTime(t)),
      y: points.map(([, c]) => c),
      customdata: points.map(([t]) => t),
      width: step * 1000,
      offset: 0,
      marker: { color: colorFor(key, colors, i), line: { width: 0 } },
      hovertemplate: `<b>${plotText(key)}</b>: %{y} ${unit}<br>%{x} UTC (${stepLabel(step)} bucket)<extra></extra>`,
    };
  });
  if (other) {
    // The rest, summed: drawn last (on top) in grey, with no key to open (meta null).
    const sum = other.points.reduce((a, [, c]) => a + c, 0);
    traces.push({
      type: "bar",
      name: `${response.others} others (${sum})`,
      meta: null,
      x: other.points.map(([t]) => plotTime(t)),
      y: other.points.map(([, c]) => c),
      customdata: other.points.map(([t]) => t),
      width: step * 1000,
      offset: 0,
      marker: { color: "#bab0ac", line: { width: 0 } },
      hovertemplate: `<b>${response.others} others</b>: %{y} ${unit}<br>%{x} UTC (${stepLabel(step)} bucket)<extra></extra>`,
    });
  }
  return traces;
}

// Rows are keys (hosts), busiest on top, at most maxRows; columns are buckets given by their
// edges so a cell spans exactly its bucket.
export function heatmap(response, { maxRows = 30, unit = "events" } = {}) {
  const step = response.step;
  const totals = seriesTotals(response);
  const other = otherLine(response);
  const rows = (other ? response.series.slice(0, -1) : [...response.series])
    .filter((s) => totals[s.key] > 0)
    .sort((a, b) => totals[b.key] - totals[a.key] || a.key.localeCompare(b.key))
    .slice(0, maxRows)
    .reverse(); // Plotly draws the first row at the bottom
  if (!rows.length) return null;
  const starts = rows[0].points.map(([t]) => t);
  const edges = starts.map(plotTime);
  if (starts.length) edges.push(plotTime(new Date(new Date(starts[starts.length - 1]).getTime() + step * 1000)));
  return {
    type: "heatmap",
    x: edges,
    y: rows.map((s) => plotText(s.key)),
    meta: rows.map((s) => s.key), // the names as they are, for a click
    z: rows.map((s) => s.points.map(([, c]) => c)),
    zmin: 0,
    colorscale: [
      [0, "#f4f4f4"],
      [0.0001, "#fde0c5"],
      [0.5, "#f28e2b"],
      [1, "#b2182b"],
    ],
    colorbar: { title: { text: `${unit} per ${stepLabel(step)}`, side: "right" }, thickness: 12 },
    xgap: 1,
    ygap: 1,
    hovertemplate: `<b>%{y}</b><br>%{z} ${unit}<br>%{x} UTC<extra>click: open host</extra>`,
  };
}

// Consecutive states as [start, end) segments clipped to the window, for timelines.
export function stateSegments(states, range) {
  const since = new Date(range.since).getTime();
  const until = new Date(range.until).getTime();
  const segments = [];
  states.forEach((s, i) => {
    const start = Math.max(new Date(s.observed_at).getTime(), since);
    const next = i + 1 < states.length ? new Date(states[i + 1].observed_at).getTime() : until;
    const end = Math.min(next, until);
    if (end > start) segments.push({ start, end, state: s });
  });
  return segments;
}

export function modeLabel(state) {
  if (!state || !state.mode) return "unknown";
  return state.mode === "ratelimit" && state.ratelimit ? `ratelimit:${state.ratelimit}` : state.mode;
}

// Horizontal bars on a date axis (base = start, x = duration): one row for the mode, one for
// split_lock_mitigate, one for the consistency verdict, each segment coloured by its value.
export function modeTimeline(states, range) {
  const rows = [
    { row: "mode", value: (s) => s.mode || "unknown", label: modeLabel, colors: MODE_COLORS },
    {
      row: "mitigate",
      value: (s) => (s.mitigate === null || s.mitigate === undefined ? "n/a" : String(s.mitigate)),
      label: (s) => `mitigate=${s.mitigate === null || s.mitigate === undefined ? "n/a" : s.mitigate}`,
      colors: MITIGATE_COLORS,
    },
    {
      row: "verdict",
      value: (s) => s.verdict || "unknown",
      label: (s) => (s.verdict || "unknown").replaceAll("_", " "),
      colors: VERDICT_COLORS,
    },
  ];
  const traces = new Map();
  const segments = stateSegments(states, range);
  for (const r of rows) {
    // Adjacent segments with the same value are one bar: a state row is written for any
    // change (a CPU, the kernel), and the mode row should not flicker for it.
    const merged = [];
    for (const seg of segments) {
      const value = r.value(seg.state);
      const last = merged[merged.length - 1];
      if (last && last.value === value && last.end === seg.start) last.end = seg.end;
      else merged.push({ value, start: seg.start, end: seg.end, state: seg.state });
    }
    for (const m of merged) {
      const key = `${r.row}:${m.value}`;
      if (!traces.has(key)) {
        traces.set(key, {
          type: "bar",
          orientation: "h",
          name: r.label(m.state),
          meta: r.row,
          showlegend: false,
          y: [],
          x: [],
          base: [],
          text: [],
          textposition: "inside",
          insidetextanchor: "middle",
          marker: { color: r.colors[m.value] || "#bbbbbb" },
          hovertemplate: "%{text}<br>from %{base} UTC<extra></extra>",
        });
      }
      const t = traces.get(key);
      t.y.push(r.row);
      t.base.push(plotTime(new Date(m.start)));
      t.x.push(m.end - m.start);
      t.text.push(r.label(m.state));
    }
  }
  return [...traces.values()];
}

function cpuValue(cpu) {
  if (!cpu || cpu.error) return -1;
  if (cpu.sld_on === true) return 1;
  if (cpu.sld_on === false) return 0;
  return -1;
}

function cpuText(cpu) {
  if (!cpu) return "not reported";
  if (cpu.error) return `error: ${cpu.error}`;
  const sld = cpu.sld_on === null || cpu.sld_on === undefined ? "?" : cpu.sld_on ? "on" : "off";
  const bld = cpu.bld_on === null || cpu.bld_on === undefined ? "?" : cpu.bld_on ? "on" : "off";
  return `#AC ${sld} · #DB ${bld}`;
}

// Per-CPU split-lock detection (TEST_CTRL bit 29) over time: rows are CPUs. While the state
// rows' spans fit (MAX_CPU_COLUMNS), a column per span: on green, off red, error or unknown
// grey. Beyond that (6 h or 24 h of an agent reporting every minute) the columns were under a
// pixel and the grid read empty (#17), so the window is cut into chooseStep buckets and a cell
// is the share of the bucket's read time the CPU was on: 1 green, any off reddens it, 0 red;
// grey when it was only unreadable, blank where no state covers the bucket.
export const MAX_CPU_COLUMNS = 120;

const CPU_COLORSCALE = [
  [0, "#c8c8c8"],
  [0.4999, "#c8c8c8"],
  [0.5, "#d62728"],
  [0.995, "#f4a582"],
  [1, "#2ca02c"],
];

export function cpuHeatmap(states, range) {
  const segments = stateSegments(states, range);
  const cpuIds = [...new Set(segments.flatMap((s) => (s.state.cpus || []).map((c) => c.cpu)))].sort((a, b) => a - b);
  if (!segments.length || !cpuIds.length) return null;
  const trace = segments.length > MAX_CPU_COLUMNS ? cpuBuckets(segments, cpuIds, range) : cpuSpans(segments, cpuIds);
  return {
    type: "heatmap",
    y: cpuIds.map((c) => `cpu ${c}`),
    ...trace,
    zmin: -1,
    zmax: 1,
    colorscale: CPU_COLORSCALE,
    showscale: false,
    xgap: 1,
    ygap: 1,
    hovertemplate: "<b>%{y}</b>: %{text}<br>from %{x} UTC<extra></extra>",
  };
}

function cpuSpans(segments, cpuIds) {
  const x = segments.map((s) => plotTime(new Date(s.start)));
  x.push(plotTime(new Date(segments[segments.length - 1].end)));
  const z = [];
  const text = [];
  for (const id of cpuIds) {
    const cpus = segments.map((seg) => (seg.state.cpus || []).find((c) => c.cpu === id));
    z.push(cpus.map(cpuValue));
    text.push(cpus.map((cpu) => plotText(cpuText(cpu))));
  }
  return { x, z, text };
}

function cpuBuckets(segments, cpuIds, range) {
  const stepMs = chooseStep(range) * 1000;
  const first = Math.floor(segments[0].start / stepMs) * stepMs;
  const count = Math.ceil((segments[segments.length - 1].end - first) / stepMs);
  const row = cpuIds.map(() => Array.from({ length: count }, () => ({ on: 0, off: 0, other: 0 })));
  const at = new Map(cpuIds.map((id, i) => [id, i]));
  for (const seg of segments) {
    const byCpu = new Map((seg.state.cpus || []).map((c) => [c.cpu, c]));
    for (let b = Math.floor((seg.start - first) / stepMs); b < count && first + b * stepMs < seg.end; b += 1) {
      const overlap = Math.min(seg.end, first + (b + 1) * stepMs) - Math.max(seg.start, first + b * stepMs);
      if (overlap <= 0) continue;
      for (const id of cpuIds) {
        const value = cpuValue(byCpu.get(id));
        const cell = row[at.get(id)][b];
        if (value === 1) cell.on += overlap;
        else if (value === 0) cell.off += overlap;
        else cell.other += overlap;
      }
    }
  }
  const x = Array.from({ length: count + 1 }, (_, b) => plotTime(new Date(first + b * stepMs)));
  const z = row.map((cells) => cells.map((c) => {
    if (c.on + c.off > 0) return c.on / (c.on + c.off);
    return c.other > 0 ? -1 : null;
  }));
  const text = row.map((cells) => cells.map((c) => {
    const read = c.on + c.off;
    if (read > 0) {
      const off = Math.round((100 * c.off) / read);
      return off ? `#AC off ${off}% of the time read` : "#AC on all the time read";
    }
    return c.other > 0 ? "error or unknown" : "no state";
  }));
  return { x, z, text };
}

// Marks on a fleet or host chart for what changed: mode or mitigate changes and reboots
// (dotted lines), verdicts needing action (shaded spans), gaps (red dashed lines). Also returned as a list so
// the page can print them: a chart annotation is easy to miss.
export function changeMarks(hostDetails, gapItems, range, { maxLabels = 12, fleet = true } = {}) {
  const since = new Date(range.since).getTime();
  const until = new Date(range.until).getTime();
  const items = [];
  const shapes = [];
  for (const h of hostDetails) {
    const states = h.states || [];
    states.forEach((s, i) => {
      const at = new Date(s.observed_at).getTime();
      const prev = i > 0 ? states[i - 1] : null;
      if (prev && at >= since && at <= until) {
        const changes = [];
        if (prev.boot_id !== s.boot_id) changes.push(`rebooted (kernel ${s.kernel})`);
        if (modeLabel(prev) !== modeLabel(s)) changes.push(`mode ${modeLabel(prev)} → ${modeLabel(s)}`);
        if (prev.mitigate !== s.mitigate) changes.push(`mitigate ${prev.mitigate ?? "n/a"} → ${s.mitigate ?? "n/a"}`);
        if (changes.length) {
          items.push({ type: "change", host: h.name, at: s.observed_at, text: changes.join(", ") });
        }
      }
      const acting = NEEDS_ACTION.has(s.verdict);
      if (acting && (!prev || prev.verdict !== s.verdict)) {
        let end = until;
        for (let j = i + 1; j < states.length; j++) {
          if (states[j].verdict !== s.verdict) {
            end = new Date(states[j].observed_at).getTime();
            break;
          }
        }
        const start = Math.max(at, since);
        if (end > start) {
          items.push({ type: "action", host: h.name, at: new Date(start).toISOString(), end: new Date(end).toISOString(),
            text: `${s.verdict.replaceAll("_", " ")} (${s.cpus_off} CPU(s) off, mode ${modeLabel(s)})` });
        }
      }
    });
  }
  items.push(...groupGaps(gapItems, since, until));
  items.sort((a, b) => new Date(a.at) - new Date(b.at));
  const annotations = [];
  // Labels flat and apart (#17): rotated labels stood over the toolbar, and a pile of them at
  // the newest bars read as one red column. A mark closer than LABEL_SPACING of the window to
  // the last labelled one keeps its line; the list under the chart names every one.
  const spacing = (until - since) / LABEL_SPACING;
  let lastLabelled = -Infinity;
  for (const item of items) {
    if (item.type === "action") {
      shapes.push({ type: "rect", xref: "x", yref: "paper", x0: plotTime(item.at), x1: plotTime(item.end), y0: 0, y1: 1,
        fillcolor: "rgba(225,87,89,0.12)", line: { width: 0 }, layer: "below" });
    } else {
      const gap = item.type === "gap";
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: plotTime(item.at), x1: plotTime(item.at), y0: 0, y1: 1,
        line: { color: gap ? "#d62728" : "#333333", width: 1, dash: gap ? "dash" : "dot" } });
    }
    const at = new Date(item.at).getTime();
    if (annotations.length < maxLabels && at - lastLabelled >= spacing) {
      lastLabelled = at;
      annotations.push({
        x: plotTime(item.at), xref: "x", y: 1, yref: "paper", yanchor: "bottom", showarrow: false,
        text: plotText(markLabel(item, fleet)),
        hovertext: plotText(`${item.host}: ${item.text}`), font: { size: 10, color: item.type === "change" ? "#333" : "#d62728" },
      });
    }
  }
  return { shapes, annotations, items };
}

const LABEL_SPACING = 10; // at most ~10 labels across the chart, whatever the window

// Gaps of one host close together are one mark (#17): an agent that drops records keeps
// reporting gaps (122 entries in 10 minutes, mostly one host's `suppressed`). Gaps of a host
// within GAP_GROUP of the window of the previous one join its group; the group says how many,
// how many records were lost in all, and why.
const GAP_GROUP = 40;

export function groupGaps(gapItems, since, until) {
  const window = (until - since) / GAP_GROUP;
  const byHost = new Map();
  const sorted = [...(gapItems || [])]
    .filter((g) => {
      const at = new Date(g.received_at).getTime();
      return at >= since && at <= until;
    })
    .sort((a, b) => new Date(a.received_at) - new Date(b.received_at));
  const groups = [];
  for (const g of sorted) {
    const at = new Date(g.received_at).getTime();
    const open = byHost.get(g.host);
    if (open && at - open.last <= window) {
      open.gaps.push(g);
      open.last = at;
    } else {
      const group = { host: g.host, first: at, last: at, gaps: [g] };
      byHost.set(g.host, group);
      groups.push(group);
    }
  }
  return groups.map(({ host, first, last, gaps }) => {
    const lost = gaps.reduce((sum, g) => sum + g.count, 0);
    const reasons = [...new Set(gaps.map((g) => g.reason))].sort().join(", ");
    const g = gaps[0];
    const text = gaps.length === 1
      ? `${g.count} lost (${g.reason}, ${g.source} seq ${g.first_seq}–${g.last_seq})`
      : `${lost} lost in ${gaps.length} gaps (${reasons}) until ${plotTime(new Date(last))} UTC`;
    return { type: "gap", host, at: new Date(first).toISOString(), text, gaps: gaps.length };
  });
}

// On the fleet chart a mark names its host; on a host's own chart it says what changed.
function markLabel(item, fleet) {
  const what = item.type === "action" ? item.text.split(" (")[0] : item.type;
  if (fleet) return item.type === "change" ? item.host : `${what} ${item.host}`;
  if (item.type === "change") return item.text.length > 28 ? `${item.text.slice(0, 27)}…` : item.text;
  return what;
}

export const SEVERITY_COLORS = { critical: "#d62728", warning: "#e08a00", info: "#4e79a7" };

// Marks for alerts (alerting.js alertOf objects) on a fleet or host chart: a band along the
// top of the plot from when each alert fired to when it resolved (or the window's end while
// it fires), a line where it fired, in its severity's colour; also listed, like changeMarks.
// Alerts that fire close together (within `clusterShare` of the window: one evaluation often
// fires several) share one label, "N alerts", whose hover lists them.
export function alertMarks(alerts, range, { maxLabels = 8, fleet = true, clusterShare = 0.03 } = {}) {
  const since = new Date(range.since).getTime();
  const until = new Date(range.until).getTime();
  const span = Math.max(until - since, 1);
  const shapes = [];
  const items = [];
  const clusters = [];
  const worst = (a, b) => (SEVERITY_RANK[a] ?? 9) <= (SEVERITY_RANK[b] ?? 9) ? a : b;
  const sorted = [...alerts].filter((a) => a.startsAt).sort((a, b) => new Date(a.startsAt) - new Date(b.startsAt));
  for (const a of sorted) {
    const startMs = new Date(a.startsAt).getTime();
    const endMs = a.endsAt ? new Date(a.endsAt).getTime() : until;
    if (startMs > until || endMs < since) continue;
    const start = Math.max(startMs, since);
    const end = Math.min(Math.max(endMs, start), until);
    const color = SEVERITY_COLORS[a.severity] || SEVERITY_COLORS.warning;
    const who = [a.host, a.guest].filter(Boolean).join(" / ");
    const label = fleet && who ? `${a.name} ${who}` : a.name;
    items.push({
      type: "alert", host: a.host, at: new Date(start).toISOString(), end: new Date(end).toISOString(),
      severity: a.severity, name: a.name, fingerprint: a.fingerprint,
      text: `${a.name}${a.endsAt ? "" : " (firing)"}: ${a.summary}`,
    });
    shapes.push({ type: "rect", xref: "x", yref: "paper", x0: plotTime(new Date(start)), x1: plotTime(new Date(end)),
      y0: 0.94, y1: 1, fillcolor: color, opacity: 0.35, line: { width: 0 }, layer: "above" });
    if (startMs >= since) {
      shapes.push({ type: "line", xref: "x", yref: "paper", x0: plotTime(new Date(start)), x1: plotTime(new Date(start)),
        y0: 0, y1: 1, line: { color, width: 1.5 } });
    }
    const last = clusters[clusters.length - 1];
    if (last && (start - last.start) / span <= clusterShare) {
      last.labels.push(label);
      last.severity = worst(last.severity, a.severity);
    } else {
      clusters.push({ start, labels: [label], severity: a.severity });
    }
  }
  const annotations = clusters.slice(0, maxLabels).map((c) => ({
    x: plotTime(new Date(c.start)), xref: "x", y: 0.97, yref: "paper", showarrow: false,
    // Near the right edge the label reads leftwards, inside the plot, clear of the legend.
    xanchor: (c.start - since) / span > 0.7 ? "right" : "left",
    text: plotText(c.labels.length === 1 ? c.labels[0] : `${c.labels.length} alerts`),
    hovertext: c.labels.map(plotText).join("<br>"),
    font: { size: 10, color: SEVERITY_COLORS[c.severity] || SEVERITY_COLORS.warning },
  }));
  return { shapes, annotations, items };
}

const SEVERITY_RANK = { critical: 0, warning: 1, info: 2 };

// Several mark sets drawn on one chart (changes, gaps, alerts).
export function mergeMarks(...sets) {
  const present = sets.filter(Boolean);
  return {
    shapes: present.flatMap((m) => m.shapes),
    annotations: present.flatMap((m) => m.annotations),
    items: present.flatMap((m) => m.items).sort((a, b) => new Date(a.at) - new Date(b.at)),
  };
}

export function timeAxis(range) {
  return { type: "date", title: { text: "time (UTC)" }, range: [plotTime(range.since), plotTime(range.until)] };
}

// The tallest stack of bars.
export function maxStack(traces) {
  if (!traces || !traces.length) return 0;
  return Math.max(0, ...traces[0].y.map((_, i) => traces.reduce((sum, t) => sum + (t.y[i] || 0), 0)));
}

export function barLayout(range, { yTitle, marks = null, height = 300 } = {}) {
  return {
    barmode: "stack",
    bargap: 0,
    height,
    margin: { l: 60, r: 20, t: 40, b: 50 },
    xaxis: timeAxis(range),
    yaxis: { title: { text: yTitle }, rangemode: "tozero", fixedrange: true },
    // At the right, top to bottom in stack order: below the chart it collided with the axis title.
    showlegend: true,
    legend: { traceorder: "normal", x: 1.01, y: 1, yanchor: "top", font: { size: 11 } },
    shapes: marks ? marks.shapes : [],
    annotations: marks ? marks.annotations : [],
    hovermode: "closest",
  };
}

// Counts are whole: with short stacks Plotly would tick 0.2, 0.4...; ask for one tick per unit.
export function wholeTicks(traces, layout) {
  if (layout.barmode !== "stack" || maxStack(traces) >= 6) return layout;
  return { ...layout, yaxis: { ...layout.yaxis, dtick: 1 } };
}

export function heatmapLayout(range, rows, { yTitle = "host" } = {}) {
  return {
    height: Math.max(190, 70 + rows * 22),
    margin: { l: 140, r: 20, t: 10, b: 60 },
    xaxis: timeAxis(range),
    yaxis: { title: { text: yTitle }, type: "category", automargin: true, fixedrange: true },
  };
}

export function timelineLayout(range) {
  return {
    barmode: "overlay",
    height: 170,
    margin: { l: 80, r: 20, t: 10, b: 50 },
    xaxis: timeAxis(range),
    yaxis: { type: "category", categoryorder: "array", categoryarray: ["verdict", "mitigate", "mode"], fixedrange: true },
    showlegend: false,
    uniformtext: { mode: "hide", minsize: 9 },
  };
}
