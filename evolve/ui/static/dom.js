// Small DOM helpers. Every piece of archive text (code, errors, model replies) goes into the page as a
// text node or through textContent: nothing here ever parses data as HTML.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

// Attributes the helpers may set; event handlers are attached with addEventListener, never as text.
const SAFE_ATTRS = new Set(["class", "id", "title", "type", "value", "placeholder", "name", "for", "min", "max",
  "step", "colspan", "hidden", "checked", "selected", "disabled", "role", "tabindex", "data-id", "data-sort",
  "aria-label", "width", "height", "open"]);

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "href") el.setAttribute("href", safeHref(v));
    else if (SAFE_ATTRS.has(k) || k.startsWith("data-")) el.setAttribute(k, v === true ? "" : String(v));
    else throw new Error("attribute not allowed: " + k);
  }
}

// Links stay inside the page: only "#/..." routes.
function safeHref(v) {
  const text = String(v);
  return text.startsWith("#/") ? text : "#/";
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

// Replace `el`'s children (arrays are flattened, strings become text nodes).
function fill(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

function fmt(v, digits) {
  if (v === null || v === undefined) return "-";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e9) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(digits === undefined ? 3 : digits - 1);
  return v.toPrecision(digits === undefined ? 5 : digits).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
}

function short(id) {
  return id ? String(id).slice(0, 12) : "-";
}

function time(t) {
  if (!t) return "-";
  const d = new Date(t * 1000);
  return d.toISOString().replace("T", " ").slice(0, 19);
}

async function api(path) {
  const res = await fetch("/api/" + path, {headers: {"Accept": "application/json"}});
  let body;
  try {
    body = await res.json();
  } catch (e) {
    throw new Error("the server sent no JSON for " + path + " (status " + res.status + ")");
  }
  if (!res.ok) throw new Error(body && body.error ? body.error : "request failed: " + res.status);
  return body;
}

const ISLAND_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
  "#bcbd22", "#17becf"];

function islandColor(i) {
  return ISLAND_COLORS[((Number(i) || 0) % ISLAND_COLORS.length + ISLAND_COLORS.length) % ISLAND_COLORS.length];
}
