// The shell: login, header controls (range, auto-refresh), and routing the hash to a view.
// Views fetch through api.js and build their DOM; this file attaches it and draws charts once
// it is in the page (Plotly sizes a chart from its container).

import { alertOf, isFiring } from "./alerting.js";
import * as api from "./api.js";
import { errorBox, h, loadPlotly, loading } from "./dom.js";
import {
  AUTO_REFRESH_S, RANGE_PRESETS, current, formatHash, rangeLabel, resolveRange, toIso, withChanges,
} from "./state.js";
import * as admin from "./views/admin.js";
import * as alerts from "./views/alerts.js";
import * as events from "./views/events.js";
import * as fleet from "./views/fleet.js";
import * as guest from "./views/guest.js";
import * as host from "./views/host.js";
import * as hosts from "./views/hosts.js";

const VIEWS = { fleet, hosts, host, guest, events, alerts, admin };
const $ = (sel) => document.querySelector(sel);

let generation = 0;
let refreshTimer = null;

function showLogin(message = "") {
  document.body.classList.add("logged-out");
  $("#login").hidden = false;
  $("#app").hidden = true;
  $("#login-message").textContent = message;
  $("#login-token").focus();
}

function showApp() {
  document.body.classList.remove("logged-out");
  $("#login").hidden = true;
  $("#app").hidden = false;
}

async function login(event) {
  event.preventDefault();
  const token = $("#login-token").value.trim();
  const button = $("#login-submit");
  if (!token) {
    $("#login-message").textContent = "Paste a viewer token: `splitwatch token create --role viewer` prints one.";
    return;
  }
  button.disabled = true;
  $("#login-message").textContent = "Checking…";
  try {
    await api.checkToken(token);
    api.setToken(token, $("#login-remember").checked);
    $("#login-token").value = "";
    $("#login-message").textContent = "";
    showApp();
    route();
  } catch (err) {
    let text = err.message;
    if (err.status === 401) text = `Token refused: ${err.message}`;
    if (err.status === 403) text = `This token cannot read the dashboard: ${err.message} Create a viewer token with \`splitwatch token create --role viewer\`.`;
    $("#login-message").textContent = text;
  } finally {
    button.disabled = false;
  }
}

function syncControls(state) {
  for (const button of document.querySelectorAll("#range-presets button")) {
    button.classList.toggle("active", !state.since && button.dataset.range === state.range);
    button.setAttribute("aria-pressed", String(!state.since && button.dataset.range === state.range));
  }
  const range = resolveRange(state);
  $("#custom-since").value = (state.since ? range.since : "").slice(0, 16).replace("T", " ");
  $("#custom-until").value = (state.since && state.until ? range.until : "").slice(0, 16).replace("T", " ");
  $("#range-custom").classList.toggle("active", Boolean(state.since));
  $("#auto-refresh").checked = state.auto;
  for (const link of document.querySelectorAll("#nav a")) {
    const page = link.dataset.page;
    link.href = formatHash(withChanges(state, { page, name: null }));
    link.classList.toggle("active", state.page === page);
  }
  $("#range-label").textContent = rangeLabel(state);
}

// The Admin link shows only for an admin token; the admin view itself checks again (#15).
function showAdminLink() {
  api.whoami().then(
    (me) => {
      $("#nav-admin").hidden = me.role !== "admin";
    },
    () => {
      $("#nav-admin").hidden = true;
    },
  );
}

function setRefresh(state) {
  clearInterval(refreshTimer);
  refreshTimer = state.auto ? setInterval(() => route({ refresh: true }), AUTO_REFRESH_S * 1000) : null;
}

// The header's count of firing alerts (not silenced), on every page and every refresh. Its own
// request: a view that failed still shows it, and it failing leaves the view alone.
async function updateFiring() {
  const badge = $("#firing-count");
  try {
    const page = await api.alerts({ status: "firing", limit: 1000 });
    const list = page.items.map(alertOf).filter(isFiring);
    const loud = list.filter((a) => !a.silenced);
    // More fire than one page (a mass outage: an AgentSilent per host): "at least", not a count.
    const more = page.next_cursor ? "+" : "";
    badge.textContent = `${loud.length}${more}`;
    badge.title = more
      ? `more than ${list.length} alerts firing (${loud.length} of the newest ${list.length} not silenced): the Alerts page lists them`
      : `${loud.length} alert(s) firing${list.length > loud.length ? `, ${list.length - loud.length} more silenced` : ""}`;
    badge.classList.toggle("critical", loud.some((a) => a.severity === "critical"));
    badge.classList.toggle("none", loud.length === 0);
    badge.hidden = false;
  } catch (err) {
    badge.textContent = "?";
    badge.title = `Cannot read alerts: ${err.message}`;
    badge.classList.remove("critical", "none");
    badge.hidden = false;
  }
}

export async function route({ refresh = false } = {}) {
  if (!api.getToken()) {
    showLogin();
    return;
  }
  showApp();
  showAdminLink();
  const state = current();
  const focused = document.activeElement;
  if (refresh && focused && $("#view").contains(focused) && focused.matches("input, select")) {
    return; // someone is typing a filter: the next tick will refresh
  }
  syncControls(state);
  if (!refresh) setRefresh(state);
  updateFiring();
  const mine = ++generation;
  const hash = window.location.hash;
  const view = $("#view");
  if (!refresh) view.replaceChildren(loading(`Loading ${state.page}${state.name ? ` ${state.name}` : ""}…`));
  document.body.dataset.loading = "1";
  const range = resolveRange(state);
  document.title = `splitwatch · ${state.page}${state.name ? ` ${state.name}` : ""}`;
  try {
    const { node, draw, charts = true } = await VIEWS[state.page].render(state, range);
    if (mine !== generation) return; // a newer navigation won
    view.replaceChildren(node); // numbers and tables first; charts once Plotly has run
    if (charts) await loadPlotly();
    if (mine !== generation) return;
    draw();
    $("#updated").textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
    document.body.dataset.rendered = hash; // which URL the page shows: tests wait on it
  } catch (err) {
    if (mine !== generation) return;
    if (err.status === 401) return; // the unauthorized listener shows the login
    if (refresh) {
      $("#updated").textContent = `refresh failed: ${err.message}`;
    } else {
      const back = h("p", {}, h("a", { href: formatHash(withChanges(state, { page: "fleet", name: null })) }, "← back to the fleet overview"));
      view.replaceChildren(...[errorBox(err), back].slice(0, state.page === "fleet" ? 1 : 2));
    }
    console.error(err);
    document.body.dataset.rendered = hash;
  } finally {
    if (mine === generation) delete document.body.dataset.loading;
  }
}

function setup() {
  $("#login-form").addEventListener("submit", login);
  $("#logout").addEventListener("click", () => {
    api.clearToken();
    showLogin("Logged out.");
  });
  window.addEventListener("splitwatch:unauthorized", (e) => {
    clearInterval(refreshTimer);
    showLogin(`Your token was refused, log in again: ${e.detail}`);
  });
  const presets = $("#range-presets");
  for (const name of Object.keys(RANGE_PRESETS)) {
    presets.append(
      h("button", { type: "button", dataset: { range: name }, onclick: () => go({ range: name, cursors: [] }) }, name),
    );
  }
  $("#range-custom").addEventListener("submit", (e) => {
    e.preventDefault();
    // Plain text in ISO form, read as UTC (#17): the browser's datetime-local picker showed
    // the locale's format (US AM/PM) while the whole dashboard speaks ISO UTC, 24 h.
    const since = utcMinute($("#custom-since").value);
    const until = utcMinute($("#custom-until").value);
    if (!since || until === undefined || Number.isNaN(since.getTime()) || (until && Number.isNaN(until.getTime()))) {
      $("#range-error").textContent = since === null ? "Pick a start time (UTC)." : "Write times as YYYY-MM-DD HH:MM (UTC, 24 h).";
      return;
    }
    const s = since;
    const u = until;
    if (u && u <= s) {
      $("#range-error").textContent = "The end must be after the start.";
      return;
    }
    $("#range-error").textContent = "";
    go({ since: toIso(s), until: u ? toIso(u) : null, cursors: [] });
  });
  $("#auto-refresh").addEventListener("change", (e) => {
    // replace: toggling refresh is not a place to come back to with the back button
    history.replaceState(null, "", formatHash(withChanges(current(), { auto: e.target.checked })));
    document.body.dataset.rendered = window.location.hash; // same view, new URL
    setRefresh(current());
  });
  window.addEventListener("hashchange", () => route());
  // A view changed something (a silence made or ended): show the new state in place.
  window.addEventListener("splitwatch:reload", () => route({ refresh: true }));
  route();
}

// A custom-range field: null when empty, undefined when not YYYY-MM-DD HH:MM (a "T" between
// date and time also reads), else the Date, read as UTC.
function utcMinute(text) {
  const t = text.trim().replace(" ", "T");
  if (!t) return null;
  return /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$/.test(t) ? new Date(`${t}:00Z`) : undefined;
}

function go(changes) {
  window.location.hash = formatHash(withChanges(current(), changes));
}

setup();
