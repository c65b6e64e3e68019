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

function spark(svg, series, pick) {
  svg.replaceChildren();
  const values = series.map(([, point]) => pick(point)).filter((value) => value !== null && value !== undefined);
  if (values.length < 2) return;
  const max = Math.max(...values, 1e-9);
  const step = 300 / (values.length - 1);
  const points = values.map((value, index) => `${(index * step).toFixed(1)},${(78 - (value / max) * 74).toFixed(1)}`);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function render(data) {
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
  spark(document.getElementById("chart-rps"), data.total.series, (point) => point.requests_per_s);
  spark(document.getElementById("chart-hits"), data.total.series, (point) => point.hit_ratio);
  spark(document.getElementById("chart-bw"), data.total.series, (point) => point.bandwidth_bps);
  spark(document.getElementById("chart-p99"), data.total.series, (point) => point.p99_ms);

  const byRegion = {};
  for (const edge of data.edges) (byRegion[edge.region] = byRegion[edge.region] || []).push(edge);
  document.getElementById("regions").replaceChildren(...Object.keys(byRegion).sort().map((region) =>
    el("div", { class: "region" }, el("h3", {}, region || "(no region)"),
      ...byRegion[region].map((edge) => el("span", { class: "pill " + edge.state, title: edge.last_error || "" }, edge.name)))));
  fill(document.querySelector("#edges tbody"), data.edges
    .slice().sort((a, b) => (a.region + a.name).localeCompare(b.region + b.name))
    .map((edge) => {
      const current = edge.now || {};
      return el("tr", { "data-edge": edge.name },
        el("td", {}, edge.region), el("td", {}, edge.name), el("td", { class: "state " + edge.state }, edge.state),
        el("td", {}, local(edge.last_change_iso)), el("td", { class: "lag" }, edge.purge_lag ?? "–"),
        el("td", { class: "rps" }, number(current.requests_per_s)), el("td", { class: "hit-ratio" }, percent(current.hit_ratio)),
        el("td", { class: "latency" }, number(current.p50_ms, 2) + " / " + number(current.p99_ms, 2) + " ms"),
        el("td", {}, number((current.errors_per_s || {})["5xx"] || 0, 2)), el("td", {}, edge.last_error || ""));
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

async function load() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: "Bearer " + token } : {};
  try {
    const response = await fetch("/api/overview", { headers, cache: "no-store" });
    if (response.status === 401) {
      const given = window.prompt("This admin API needs its token:");  // asked once, kept for the session
      if (given) { sessionStorage.setItem(TOKEN_KEY, given); return load(); }
      document.getElementById("status").textContent = "an admin token is needed";
      return;
    }
    render(await response.json());
  } catch (error) {
    document.getElementById("status").textContent = "cannot reach the admin API: " + error;
  }
}

load();
setInterval(load, REFRESH_MS);
