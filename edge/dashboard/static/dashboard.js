// edgecache dashboard: renders /api/overview every few seconds. No framework, no build step.
"use strict";

const TOKEN_KEY = "edgecache-admin-token";
const REFRESH_MS = 3000;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

const percent = (value) => (value === null || value === undefined ? "–" : (value * 100).toFixed(1) + " %");
const number = (value, digits = 1) => (value === null || value === undefined ? "–" : Number(value).toFixed(digits));
function bits(value) {
  if (value === null || value === undefined) return "–";
  const units = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s"];
  let index = 0;
  while (value >= 1000 && index < units.length - 1) { value /= 1000; index += 1; }
  return value.toFixed(1) + " " + units[index];
}
function bytes(value) {
  if (value === null || value === undefined) return "–";
  const units = ["B/s", "kB/s", "MB/s", "GB/s"];
  let index = 0;
  while (value >= 1000 && index < units.length - 1) { value /= 1000; index += 1; }
  return value.toFixed(1) + " " + units[index];
}
const local = (iso) => (iso ? new Date(iso).toLocaleString() : "–");  // the viewer's time zone

const WINDOW_MS = 15 * 60 * 1000;
const SVG = "http://www.w3.org/2000/svg";
const errorsOf = (klass) => (point) => (point.errors_per_s || {})[klass] || 0;
// Each chart: its lines (what to pick from a point of the series, and the legend) and how to print a value.
const CHARTS = [
  { id: "chart-rps", lines: [[(point) => point.requests_per_s, "requests/s"]], format: (value) => number(value) },
  { id: "chart-hits", lines: [[(point) => point.hit_ratio, "by requests"], [(point) => point.byte_hit_ratio, "by bytes"]],
    format: percent, max: 1 },
  { id: "chart-offload", lines: [[(point) => point.offload_bytes_per_s, "served without the origin"]], format: bytes },
  { id: "chart-bw", lines: [[(point) => point.bandwidth_bps, "bandwidth"]], format: bits },
  { id: "chart-latency", lines: [[(point) => point.p50_ms, "p50"], [(point) => point.p99_ms, "p99"]],
    format: (value) => number(value, 2) + " ms" },
  { id: "chart-errors", lines: [[errorsOf("4xx"), "4xx"], [errorsOf("5xx"), "5xx"]],
    format: (value) => number(value, 2) + "/s" },
];
let chartScope = "";  // "" charts the whole CDN (or this edge); otherwise one edge's name
let lastData = null;

// Lines over the last 15 minutes, placed by time (a gap in sampling shows as a gap, not a squeeze).
function plot(svg, series, lines, end, width, height, fixedMax) {
  svg.replaceChildren();
  // Up to 15 minutes: a young CDN's first minute fills the width rather than a sliver of it.
  const start = Math.min(Math.max(end - WINDOW_MS, series.length ? Date.parse(series[0][0]) : end), end - 10000);
  const columns = lines.map(([pick]) => series.map(([at, point]) => [Date.parse(at), pick(point)]));
  const values = columns.flat().map(([, value]) => value).filter((value) => value !== null && value !== undefined);
  const max = fixedMax ?? Math.max(...values, 1e-9);
  lines.forEach((line, index) => {
    let run = [];
    const flush = () => {
      if (run.length > 1) {
        const node = document.createElementNS(SVG, "polyline");
        node.setAttribute("points", run.join(" "));
        node.setAttribute("class", "line-" + index);
        svg.append(node);
      } else if (run.length === 1) {  // a lone sample (traffic in one interval only) shows as a dot
        const [x, y] = run[0].split(",");
        const node = document.createElementNS(SVG, "circle");
        node.setAttribute("cx", x);
        node.setAttribute("cy", y);
        node.setAttribute("r", "2");
        node.setAttribute("class", "line-" + index);
        svg.append(node);
      }
      run = [];
    };
    for (const [at, value] of columns[index]) {
      if (value === null || value === undefined || at < start) { flush(); continue; }
      const x = ((at - start) / (end - start)) * width;
      const y = height - 2 - (Math.min(value, max) / max) * (height - 6);
      run.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    }
    flush();
  });
  return { max: values.length ? max : null, span: end - start };
}

const ago = (ms) => (ms >= 90000 ? Math.round(ms / 60000) + " min ago" : Math.round(ms / 1000) + " s ago");

function renderCharts(data) {
  const edge = chartScope ? data.edges.find((item) => item.name === chartScope) : null;
  if (chartScope && !edge) chartScope = "";
  const series = edge ? edge.series || [] : data.total.series;
  const end = Date.parse(data.generated_at);
  document.getElementById("chart-title").textContent = edge ? "edge " + edge.name : (data.scope === "cdn" ? "whole CDN" : "this edge");
  const now = (edge ? edge.now : data.total.now) || {};  // the legend says the last minute, as the cards do
  for (const chart of CHARTS) {
    const svg = document.getElementById(chart.id);
    const { max, span } = plot(svg, series, chart.lines, end, 300, 80, chart.max);
    const figure = svg.closest("figure");
    figure.querySelector(".axis span").textContent = ago(span);
    figure.querySelector(".legend").replaceChildren(...chart.lines.map(([pick, label], index) =>
      el("span", { class: "key line-" + index }, label + " " + chart.format(pick(now)))));
    figure.querySelector(".max").textContent = max === null ? "no data yet" : "max " + chart.format(max);
  }
}

function scopeChoices(data) {
  if (chartScope && !data.edges.some((edge) => edge.name === chartScope)) chartScope = "";  // it left the CDN
  const select = document.getElementById("chart-scope");
  select.parentElement.hidden = data.scope !== "cdn";
  const names = ["", ...data.edges.map((edge) => edge.name).sort()];
  const have = Array.from(select.options).map((option) => option.value);
  if (have.join("\n") !== names.join("\n")) {
    select.replaceChildren(...names.map((name) => el("option", { value: name }, name || "whole CDN")));
  }
  select.value = chartScope;
}

function chooseScope(name) {
  chartScope = name;
  if (lastData) render(lastData);
}

function spark(series) {
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 100 24");
  svg.setAttribute("class", "spark");
  plot(svg, series || [], [[(point) => point.requests_per_s, ""]], lastData ? Date.parse(lastData.generated_at) : Date.now(), 100, 24);
  return svg;
}

// The router knows each edge's lag; an edge alone knows how far it applied and whether it listens.
function lagText(edge) {
  if (edge.purge_lag !== null && edge.purge_lag !== undefined) return String(edge.purge_lag);
  if (edge.applied_seq === undefined) return "–";
  return `applied #${edge.applied_seq}` + (edge.control_plane && edge.control_plane !== "none" ? ` (${edge.control_plane})` : "");
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function render(data) {
  lastData = data;
  document.getElementById("scope").textContent = data.scope === "cdn" ? "— whole CDN" : "— edge " + data.edges[0].name;
  document.getElementById("status").textContent = "updated " + local(data.generated_at);
  const now = data.total.now || {};
  document.getElementById("total-rps").textContent = number(now.requests_per_s);
  document.getElementById("hit-ratio").textContent = percent(now.hit_ratio);
  document.getElementById("byte-hit-ratio").textContent = percent(now.byte_hit_ratio);
  document.getElementById("offload").textContent = bytes(now.offload_bytes_per_s);
  document.getElementById("bandwidth").textContent = bits(now.bandwidth_bps);
  const errors = now.errors_per_s || {};
  document.getElementById("errors").textContent = number(errors["4xx"] || 0, 2) + " / " + number(errors["5xx"] || 0, 2);
  document.getElementById("latency").textContent = number(now.p50_ms, 2) + " / " + number(now.p99_ms, 2) + " ms";
  scopeChoices(data);
  renderCharts(data);

  const byRegion = {};
  for (const edge of data.edges) (byRegion[edge.region] = byRegion[edge.region] || []).push(edge);
  document.getElementById("regions").replaceChildren(...Object.keys(byRegion).sort().map((region) =>
    el("div", { class: "region" }, el("h3", {}, region || "(no region)"),
      ...byRegion[region].map((edge) => el("div", { class: "member", "data-edge": edge.name },
        el("span", { class: "pill " + edge.state, title: edge.last_error || edge.state }, edge.name),
        el("span", { class: "muted" }, ` ${number((edge.now || {}).requests_per_s)} req/s · purge lag ${lagText(edge)}`))))));
  fill(document.querySelector("#edges tbody"), data.edges
    .slice().sort((a, b) => (a.region + a.name).localeCompare(b.region + b.name))
    .map((edge) => {
      const current = edge.now || {};
      const row = el("tr", { "data-edge": edge.name, class: edge.name === chartScope ? "chosen" : "",
        title: "show this edge's charts" },
        el("td", {}, edge.region), el("td", {}, edge.name), el("td", { class: "state " + edge.state }, edge.state),
        el("td", {}, local(edge.last_change_iso)), el("td", { class: "lag" }, lagText(edge)),
        el("td", { class: "rps" }, number(current.requests_per_s)), el("td", { class: "trend" }, spark(edge.series)),
        el("td", { class: "hit-ratio" }, percent(current.hit_ratio)),
        el("td", { class: "byte-hit-ratio" }, percent(current.byte_hit_ratio)),
        el("td", { class: "bandwidth" }, bits(current.bandwidth_bps)),
        el("td", { class: "latency" }, number(current.p50_ms, 2) + " / " + number(current.p99_ms, 2) + " ms"),
        el("td", { class: "errors" }, number((current.errors_per_s || {})["4xx"] || 0, 2) + " / "
          + number((current.errors_per_s || {})["5xx"] || 0, 2)),
        el("td", {}, edge.last_error || ""));
      row.addEventListener("click", () => chooseScope(edge.name === chartScope ? "" : edge.name));
      return row;
    }));

  const purgeError = document.getElementById("purge-error");
  purgeError.hidden = !data.purge_error;
  purgeError.textContent = data.purge_error ? "purge log: " + data.purge_error : "";
  fill(document.querySelector("#purges tbody"), data.purges.map((purge) => {
    const summary = purge.summary || {};
    const what = purge.kind === "all" ? "everything" : (purge.values || []).join(" ");
    return el("tr", { "data-purge-id": purge.id },
      el("td", {}, local(purge.created_at_iso)), el("td", {}, purge.id), el("td", {}, purge.kind + (purge.soft ? " (soft)" : "")),
      el("td", {}, what), el("td", { class: "applied" }, `${summary.applied ?? "?"} of ${Object.keys(data.edges).length}`),
      el("td", { class: "lagging" }, (summary.lagging || []).join(", ") || (summary.complete ? "none" : "")));
  }));

  const originRows = [];
  for (const [edgeName, report] of Object.entries(data.origins || {})) {
    for (const site of report.sites || []) {
      for (const origin of site.origins) {
        originRows.push(el("tr", {}, el("td", {}, edgeName), el("td", {}, site.name), el("td", {}, origin.url),
          el("td", { class: "state " + origin.state }, origin.state), el("td", {}, origin.requests),
          el("td", {}, origin.failures), el("td", {}, origin.state === "up" ? "" : (origin.last_error || ""))));
      }
    }
  }
  fill(document.querySelector("#origins tbody"), originRows);
  const regions = Object.entries(data.regions || {});
  document.getElementById("decisions-section").hidden = data.scope !== "cdn";
  fill(document.querySelector("#decisions tbody"), regions.sort().map(([region, entry]) => el("tr", {},
    el("td", {}, region), el("td", {}, entry.redirects),
    el("td", {}, Object.entries(entry.edges).map(([name, count]) => `${name}: ${count}`).join(", ")))));
}

let asked = false;  // the token is asked for once per page load, never on every refresh
let loading = false;  // one request at a time: a slow answer is not overtaken by the next refresh

async function load() {
  if (loading) return;
  loading = true;
  try {
    await loadOnce();
  } finally {
    loading = false;
  }
}

async function loadOnce() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const status = document.getElementById("status");
  let response;
  try {
    const query = kept.since ? "?since=" + encodeURIComponent(kept.since) : "";
    response = await fetch("/api/overview" + query, { headers, cache: "no-store" });
  } catch (error) {
    status.textContent = "cannot reach the admin API: " + error;
    return;
  }
  if (response.status === 401 || response.status === 403) {
    if (sessionStorage.getItem(TOKEN_KEY) === token) sessionStorage.removeItem(TOKEN_KEY);  // a wrong token is not kept
    if (!asked) {
      asked = true;
      const given = window.prompt("This admin API needs its token:");  // kept for the session
      if (given) { sessionStorage.setItem(TOKEN_KEY, given); return loadOnce(); }
    }
    status.textContent = "an admin token is needed: reload the page to enter it";
    return;
  }
  if (!response.ok) {
    status.textContent = `the admin API answered ${response.status}; retrying every ${REFRESH_MS / 1000} s`;
    return;
  }
  render(merge(await response.json()));
}

// The points already here are kept: a refresh asks only for newer ones (?since=), a few hundred
// bytes instead of the whole 15 minutes of every edge.
const kept = { since: null, total: [], edges: {} };

function merge(data) {
  const horizon = new Date(Date.parse(data.generated_at) - WINDOW_MS).toISOString();  // as the points: to the ms
  const join = (old, fresh) => old.concat(fresh).filter(([at]) => at >= horizon);
  const full = kept.since === null;
  let newest = kept.since;
  const note = (points) => { for (const [at] of points) if (newest === null || at > newest) newest = at; };
  note(data.total.series);
  kept.total = full ? data.total.series : join(kept.total, data.total.series);
  data.total.series = kept.total;
  const edges = {};
  let stranger = false;  // an edge this page has no history of: the next refresh asks for everything
  for (const edge of data.edges) {
    note(edge.series || []);
    if (!full && !(edge.name in kept.edges)) stranger = true;
    edges[edge.name] = full ? edge.series || [] : join(kept.edges[edge.name] || [], edge.series || []);
    edge.series = edges[edge.name];
  }
  kept.edges = edges;
  kept.since = stranger ? null : newest;
  return data;
}

document.getElementById("chart-scope").addEventListener("change", (event) => chooseScope(event.target.value));
load();
setInterval(load, REFRESH_MS);
