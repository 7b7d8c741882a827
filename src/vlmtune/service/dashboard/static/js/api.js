// Talking to the service, building DOM, formatting numbers: what every view uses.

export const API = "/dashboard/api";

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function request(method, path, body) {
  const options = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    options.headers["content-type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(API + path, options);
  const text = await response.text();
  let data = {};
  try { data = text ? JSON.parse(text) : {}; } catch { data = { message: text }; }
  if (!response.ok) {
    const message = data.message || (data.error && data.error.message) || `${response.status} ${response.statusText}`;
    if (response.status === 401 || response.status === 403) window.dispatchEvent(new CustomEvent("signed-out"));
    throw new ApiError(response.status, message);
  }
  return data;
}

export const get = (path) => request("GET", path);
export const post = (path, body = {}) => request("POST", path, body);
export const q = (params) => "?" + new URLSearchParams(params).toString();

// h("div", {class: "x", onclick: fn}, "text", child, [more]) -> an element; strings become text, never HTML.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) { el.replaceChildren(); append(el, children); return el; }

// ---- formatting
export function num(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return value.toLocaleString();
  if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e6)) return value.toExponential(2);
  return value.toFixed(digits).replace(/\.?0+$/, (m) => (m.startsWith(".") ? "" : m));
}

export const pct = (value) => (value === null || value === undefined ? "–" : (value * 100).toFixed(1));

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function clock(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  return hh ? `${hh}h ${String(mm).padStart(2, "0")}m` : mm ? `${mm}m ${String(ss).padStart(2, "0")}s` : `${ss}s`;
}

export function when(stamp) {
  if (!stamp) return "–";
  const t = new Date(stamp), ago = (Date.now() - t.getTime()) / 1000;
  if (ago < 60) return "just now";
  if (ago < 3600) return `${Math.floor(ago / 60)} min ago`;
  if (ago < 86400) return `${Math.floor(ago / 3600)} h ago`;
  return t.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + " " + t.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

export function short(text, n = 48) {
  if (!text) return "–";
  text = String(text);
  return text.length > n ? "…" + text.slice(-(n - 1)) : text;
}

const STATES = {
  Completed: "ok", Running: "live", Training: "live", "Validating data": "live", "Processing data": "live", Starting: "live",
  Queued: "wait", Stopping: "warn", Stopped: "muted", Interrupted: "muted", Failed: "bad", Active: "ok", Creating: "wait",
};

export function pill(state) {
  return h("span", { class: `pill ${STATES[state] || "muted"}`, "data-state": state }, state || "–");
}

export function card(title, ...body) {
  return h("section", { class: "card" }, title ? h("h3", {}, title) : null, ...body);
}

export function errorBox(error) {
  return h("div", { class: "error", role: "alert" }, error.message || String(error));
}

// A poller that stops when its view is left (the router calls every cleanup).
export function every(ms, fn, cleanups) {
  let stopped = false, timer = null;
  const tick = async () => {
    if (stopped) return;
    try { await fn(); } catch (e) { console.warn(e); }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  tick();
  cleanups.push(() => { stopped = true; clearTimeout(timer); });
}
