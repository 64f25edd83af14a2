// The only module that calls fetch: it adds the viewer token, and turns every failure into an
// ApiError carrying the API's own sentence (app/errors.py: {"error", "message", "details"}).
// A 401 forgets the token and tells the page to show the login again (#5).

const TOKEN_KEY = "splitwatch.token";
export const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, code, message, details = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

// The logged-in token's {token_id, role, host}, asked once per token (GET /whoami, #15).
let me = null;

// sessionStorage unless the user asked to be remembered: a viewer token is a credential.
export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || localStorage.getItem(TOKEN_KEY);
}

export function setToken(token, remember) {
  clearToken();
  me = null;
  (remember ? localStorage : sessionStorage).setItem(TOKEN_KEY, token);
}

export function clearToken() {
  me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
}

export function query(params = {}) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (Array.isArray(value)) value.forEach((v) => q.append(key, String(v)));
    else if (value !== null && value !== undefined && value !== "") q.set(key, String(value));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function request(path, params, { token = getToken(), accept = "application/json", method = "GET", json = undefined } = {}) {
  const url = `${API}${path}${query(params)}`;
  const headers = { Authorization: `Bearer ${token || ""}`, Accept: accept };
  if (json !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: json === undefined ? undefined : JSON.stringify(json),
      cache: "no-store",
    });
  } catch (err) {
    throw new ApiError(0, "network", `Cannot reach the splitwatch server at ${location.origin} (${err.message}): check that \`splitwatch serve\` is running.`);
  }
  if (response.ok) return response;
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  const message =
    (body && typeof body.message === "string" && body.message) ||
    `${url} answered HTTP ${response.status} ${response.statusText}`;
  const error = new ApiError(response.status, (body && body.error) || `http_${response.status}`, message, body && body.details);
  if (response.status === 401 && token === getToken()) {
    clearToken();
    window.dispatchEvent(new CustomEvent("splitwatch:unauthorized", { detail: message }));
  }
  throw error;
}

export async function get(path, params = {}, options = {}) {
  const response = await request(path, params, options);
  return response.json();
}

// Writes (admin token): JSON in, the JSON answer out (null for 204 No Content).
async function send(method, path, body) {
  const response = await request(path, {}, { method, json: body });
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

// Checks a token before it is stored: any viewer read will do; /summary is the cheapest.
export async function checkToken(token) {
  await request("/summary", {}, { token });
}

// The CSV needs the Authorization header, so a plain <a href> cannot fetch it: fetch it here
// and hand the browser a blob to save. Returns the text so callers can show a count.
export async function downloadCsv(path, params, filename) {
  const response = await request(path, { ...params, format: "csv" }, { accept: "text/csv" });
  const text = await response.text();
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  return text;
}

export const hosts = (params) => get("/hosts", params);
export const host = (name, params) => get(`/hosts/${encodeURIComponent(name)}`, params);
export const guests = (params) => get("/guests", params);
export const guest = (name, params) => get(`/guests/${encodeURIComponent(name)}`, params);
export const events = (params) => get("/events", params);
export const series = (params) => get("/series", params);
export const gaps = (params) => get("/gaps", params);
export const summary = (params) => get("/summary", params);
export const tokens = (params) => get("/tokens", params);

// Who the stored token is: the admin page and its nav link show only for role "admin".
export async function whoami() {
  const token = getToken();
  if (me && me.token === token) return me.answer;
  const answer = await get("/whoami");
  me = { token, answer };
  return answer;
}
// Issue 16 §2-§4: `host` may be an array (a pool); URLSearchParams repeats it.
export const throttling = (params) => get("/insights/throttling", params);
export const fatalReadiness = (params) => get("/insights/fatal-readiness", params);
export const kernelEras = (params) => get("/insights/kernel-eras", params);

// Alerting (#12): reads need a viewer token, writes an admin token (403 otherwise).
export const alerts = (params) => get("/alerts", params);
export const alertRules = (params) => get("/alert-rules", params);
export const silences = (params) => get("/silences", params);
export const createSilence = (body) => send("POST", "/silences", body);
export const deleteSilence = (id) => send("DELETE", `/silences/${encodeURIComponent(id)}`);
export const webhooks = (params) => get("/webhooks", params);
export const deliveries = (id, params) => get(`/webhooks/${encodeURIComponent(id)}/deliveries`, params);
