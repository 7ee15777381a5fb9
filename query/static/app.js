// The dashboard page: asks the API (dashboard.py) every few seconds and draws with uPlot.
// When the data cannot be loaded it says so above everything and greys out the panels:
// an empty chart would look like no traffic.
"use strict";

const REFRESH_MS = 5000;
const CLASSES = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const COLORS = { "1xx": "#8c8c8c", "2xx": "#2e8b57", "3xx": "#3b7dd8", "4xx": "#e0a000", "5xx": "#d0312d" };
const TOPS = ["path", "agent", "client"];

const dashboard = { window: "1h", charts: {}, data: null, updates: 0, failed: false, error: null };
window.dashboard = dashboard;

const $ = (id) => document.getElementById(id);

async function getJSON(path) {
  let response;
  try {
    response = await fetch(path, { cache: "no-store" });
  } catch (err) {
    throw new Error("the dashboard server does not answer (is the stack running?)");
  }
  let body = null;
  try { body = await response.json(); } catch (err) { /* not JSON: reported below */ }
  if (!response.ok) {
    throw new Error((body && body.error) || `${path} answered HTTP ${response.status}`);
  }
  if (!body) throw new Error(`${path} did not answer JSON`);
  return body;
}

async function load(win) {
  const q = `window=${encodeURIComponent(win)}`;
  const [traffic, latency, errors, pipeline, ...tops] = await Promise.all([
    getJSON(`/api/traffic?${q}`),
    getJSON(`/api/latency?${q}`),
    getJSON(`/api/errors?${q}&examples=3`),
    getJSON(`/api/pipeline?${q}`),
    ...TOPS.map((by) => getJSON(`/api/top?${q}&by=${by}&limit=10`)),
  ]);
  return { traffic, latency, errors, pipeline, top: Object.fromEntries(TOPS.map((by, i) => [by, tops[i]])) };
}

function fail(message) {
  dashboard.failed = true;
  dashboard.error = message;
  const box = $("failure");
  box.textContent = `Could not load the dashboard's data: ${message}. ` +
    (dashboard.data ? "What is shown below is from the last successful refresh and is not current." :
      "Nothing below is data: there is none to show until the API answers.");
  box.hidden = false;
  document.querySelectorAll("main section").forEach((s) => s.classList.add("stale"));
  $("state").textContent = `failed at ${new Date().toISOString().slice(11, 19)} UTC; retrying every ${REFRESH_MS / 1000} s`;
}

function succeed(data) {
  dashboard.failed = false;
  dashboard.error = null;
  dashboard.data = data;
  $("failure").hidden = true;
  document.querySelectorAll("main section").forEach((s) => s.classList.remove("stale"));
  render(data);
  dashboard.updates += 1;
  $("state").textContent = `${data.traffic.start.slice(11, 16)}–${data.traffic.end.slice(11, 16)} UTC, updated ${data.traffic.end.slice(11, 19)}`;
}

function width(el) {
  return Math.max(300, el.clientWidth || el.parentElement.clientWidth - 10);
}

// One chart per element; recreated when its series change (another window).
function chart(id, opts, data) {
  const el = $(id);
  const key = JSON.stringify(opts.series.map((s) => s.label)) + data[0].length;
  const old = dashboard.charts[id];
  if (old && old.key === key) {
    old.plot.setData(data);
    return old.plot;
  }
  if (old) old.plot.destroy();
  el.textContent = "";
  // axes and legend in UTC, like the API's times and the query tool
  const tzDate = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");
  const plot = new uPlot({ width: width(el), height: opts.height || 220, tzDate, ...opts }, data, el);
  dashboard.charts[id] = { plot, key };
  return plot;
}

function renderTraffic(t) {
  $("bucket-label").textContent = `per ${t.bucket_seconds / 60} min, stacked by status class`;
  $("total-requests").textContent = t.requests;
  for (const c of CLASSES.slice(1)) $(`total-${c}`).textContent = t.totals[c] || 0;
  $("rate-5xx").textContent = t.rate_5xx_total === null ? "–" : `${(100 * t.rate_5xx_total).toFixed(1)} %`;
  // stacked: each series is drawn up to the running sum; the legend shows its own count
  const order = ["2xx", "3xx", "4xx", "5xx", "1xx"];
  const sums = [];
  let running = t.times.map(() => 0);
  for (const c of order) {
    running = running.map((v, i) => v + ((t.classes[c] || [])[i] || 0));
    sums.push(running);
  }
  const bars = uPlot.paths.bars({ size: [0.8, 40] });
  const series = order.map((c, k) => ({
    label: c, stroke: COLORS[c], fill: COLORS[c], paths: bars, points: { show: false },
    value: (u, v, si, idx) => (idx === null || idx === undefined ? "–" : (t.classes[c] || [])[idx] || 0),
  })).reverse();
  chart("chart-requests", { series: [{}, ...series], scales: { x: { time: true } }, axes: [{}, { label: "requests" }] },
    [t.times, ...sums.slice().reverse()]);
  chart("chart-rate", {
    height: 140,
    series: [{}, { label: "5xx rate %", stroke: COLORS["5xx"], spanGaps: false }],
    axes: [{}, { label: "5xx %" }],
    // from 0, and at least to 5 %: a low rate stays readable, a spike shows as one
    scales: { y: { range: (u, min, max) => [0, Math.max(5, (max || 0) * 1.2)] } },
  }, [t.times, t.rate_5xx.map((r) => (r === null ? null : 100 * r))]);
}

function renderLatency(l) {
  const note = $("latency-note");
  if (!l.available) {
    note.textContent = l.message;
    note.hidden = false;
    if (dashboard.charts["chart-latency"]) dashboard.charts["chart-latency"].plot.destroy();
    delete dashboard.charts["chart-latency"];
    $("chart-latency").textContent = "";
    return;
  }
  note.hidden = true;
  // milliseconds: a static page takes 0.000 to 0.002 s, which a seconds axis shows as 0
  const ms = (values) => values.map((v) => (v === null ? null : 1000 * v));
  chart("chart-latency", {
    series: [{}, { label: "p50", stroke: "#2e8b57" }, { label: "p95", stroke: "#e0a000" }, { label: "p99", stroke: "#d0312d" }],
    axes: [{}, { label: "ms" }],
  }, [l.times, ms(l.p50), ms(l.p95), ms(l.p99)]);
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  td.title = text;
  if (cls) td.className = cls;
  return td;
}

function renderTop(by, answer) {
  const body = $(`top-${by}`).querySelector("tbody");
  body.replaceChildren(...answer.rows.map((row) => {
    const tr = document.createElement("tr");
    tr.append(cell(row.value, "value"), cell(String(row.requests), "requests"), cell(String(row.errors), "errors"));
    return tr;
  }));
  if (!answer.rows.length) {
    const tr = document.createElement("tr");
    tr.append(cell("no requests in this window", "empty"));
    body.append(tr);
  }
}

function renderErrors(e) {
  $("errors-total").textContent = e.total;
  const box = $("errors");
  box.replaceChildren();
  if (!e.codes.length) {
    box.textContent = "none: every line in the window parsed";
    return;
  }
  for (const code of e.codes) {
    const h = document.createElement("p");
    h.innerHTML = "<b></b> <span></span>";
    h.firstChild.textContent = code.code;
    h.lastChild.textContent = `${code.lines} line(s), newest ${code.newest}`;
    h.dataset.code = code.code;
    const ex = document.createElement("div");
    ex.className = "examples";
    ex.textContent = code.examples.join("\n");
    box.append(h, ex);
  }
}

function bytes(n) {
  const units = ["B", "KB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function renderPipeline(p) {
  $("freshness").textContent = p.newest_record === null ? "no record in this window" :
    `${p.newest_record} (${p.freshness_seconds} s ago)`;
  const f = p.function;
  $("function").textContent = !f.available ? f.message :
    `${f.batches} batch(es) in the window, ${f.failed} failed` + (f.message ? ` (${f.message})` : "") +
    (f.recent.length ? `; latest failure: ${f.recent[f.recent.length - 1].at} ${f.recent[f.recent.length - 1].text}` : "");
  const s = p.saved;
  $("saved").textContent = !s.available ? s.message :
    `${s.files} object(s) saved, ${bytes(s.bytes)}` + (s.newest_saved ? `, newest ${s.newest_saved}` : "") +
    (s.message ? ` (${s.message})` : "");
  $("hours").querySelector("tbody").replaceChildren(...p.hours.map((h) => {
    const tr = document.createElement("tr");
    tr.append(cell(h.hour), cell(String(h.objects)), cell(bytes(h.bytes)));
    return tr;
  }));
}

function render(d) {
  renderTraffic(d.traffic);
  renderLatency(d.latency);
  for (const by of TOPS) renderTop(by, d.top[by]);
  renderErrors(d.errors);
  renderPipeline(d.pipeline);
}

async function refresh() {
  const win = dashboard.window;
  try {
    const data = await load(win);
    if (win === dashboard.window) succeed(data);
  } catch (err) {
    fail(err.message || String(err));
  }
}

function choose(win) {
  dashboard.window = win;
  document.querySelectorAll("#windows button").forEach((b) => b.classList.toggle("active", b.dataset.window === win));
  if (location.hash !== `#${win}`) history.replaceState(null, "", `#${win}`);
}

async function loop() {
  await refresh();
  setTimeout(loop, REFRESH_MS);
}

document.querySelectorAll("#windows button").forEach((b) => b.addEventListener("click", () => { choose(b.dataset.window); refresh(); }));
const fromHash = location.hash.slice(1);
choose(["15m", "1h", "6h", "24h"].includes(fromHash) ? fromHash : "1h");
if (typeof uPlot === "undefined") {
  fail("the chart library did not load");
} else {
  loop();
}
