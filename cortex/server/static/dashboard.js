// Cortex live dashboard: polls /v1/dashboard every second and redraws. No dependencies.
"use strict";

const POLL_MS = 1000;
const COLORS = ["#5b9cf6", "#3ecf8e", "#f5a524", "#f25f5c", "#b57cf6", "#4fd1d9", "#e879b9"];
let updates = 0;

function apiKey() {
  const match = /(?:^#|&)key=([^&]+)/.exec(location.hash);
  if (match) sessionStorage.setItem("cortexKey", decodeURIComponent(match[1]));
  return sessionStorage.getItem("cortexKey");
}

const $ = (id) => document.getElementById(id);
const pct = (x) => (x === null || x === undefined) ? "-" : (100 * x).toFixed(1) + " %";
const secs = (x) => (x === null || x === undefined) ? "-"
  : (x < 1 ? (1000 * x).toFixed(1) + " ms" : x.toFixed(2) + " s");
const esc = (s) => String(s).replace(/[&<>"]/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c]));

function cell(text, cls) { return `<td class="${cls || ""}">${text}</td>`; }

function renderRuns(runs) {
  const rows = Object.entries(runs).map(([key, w]) => {
    const s = w.by_status || {};
    const bad = `${s.failed || 0} / ${s.rejected || 0} / ${s.timed_out || 0}`;
    return `<tr data-window="${key}">${cell(key)}${cell(w.finished, "num finished")}` +
      cell(s.succeeded || 0, "num succeeded") + cell(bad, "num") +
      cell(secs(w.p50_latency_s), "num p50") + cell(secs(w.p90_latency_s), "num p90") +
      cell(secs(w.p99_latency_s), "num p99") + cell(pct(w.slo_attainment), "num slo") +
      cell(w.throughput_rps.toFixed(2) + " runs/s", "num throughput") + "</tr>";
  });
  $("runs").tBodies[0].innerHTML = rows.join("");
}

function engineChips(pool) {
  const chips = pool.engines.map((e) => {
    const cls = (e.healthy ? "healthy" : "unhealthy") + (e.borrowed ? " borrowed" : "") +
      (e.draining ? " draining" : "");
    const home = e.borrowed ? ` from ${esc(e.home)}` : "";
    const moving = e.pending ? ` &rarr; ${esc(e.pending.target || "stop")}` : "";
    return `<span class="chip ${cls}" title="utilisation ${pct(e.utilisation)}">` +
      `${esc(e.id)} (${e.in_flight})${home}${moving}</span>`;
  });
  const lent = (pool.lent_out || []).map((l) =>
    `<span class="chip lent" title="lent out">${esc(l.id)} lent to ${esc(l.serving)}</span>`);
  return chips.concat(lent).join("");
}

function renderMoves(allocation) {
  $("moves-section").hidden = !allocation;
  if (!allocation) return;
  $("alloc-policy").textContent = allocation.policy;
  const counts = Object.entries(allocation.decisions).filter(([, n]) => n > 0)
    .map(([kind, n]) => `${n} ${kind}`);
  $("alloc-counts").textContent = (counts.length ? counts.join(", ") : "no decisions") +
    `, ${allocation.in_flight.length} in flight, ${allocation.refused} refused`;
  $("moves").tBodies[0].innerHTML = allocation.recent.map((m) =>
    `<tr data-kind="${esc(m.kind)}">${cell(secs(m.t), "num")}${cell(esc(m.kind))}` +
    cell(esc(m.engine || "-")) + cell(esc(m.source || "-")) + cell(esc(m.target || "-")) +
    cell(m.done ? "done" : "in flight") + cell(esc(m.reason)) + "</tr>").join("");
}

function renderPools(pools) {
  $("pools").tBodies[0].innerHTML = pools.map((p) => {
    const fill = Math.min(100, 100 * p.queue_depth / Math.max(1, p.max_queue));
    const queue = `${p.queue_depth} / ${p.max_queue}<span class="bar"><span style="width:${fill}%"></span></span>`;
    return `<tr data-pool="${esc(p.name)}">${cell(esc(p.name))}${cell(esc(p.stages.join(", ")))}` +
      cell(engineChips(p), "engines") + cell(queue, "num queue") + cell(`${p.in_flight} / ${p.capacity}`, "num") +
      cell(pct(p.utilisation), "num utilisation") + cell(pct(p.prefix_hit_rate), "num hit-rate") +
      cell(p.num_calls, "num calls") + cell(secs(p.recent.p50_queue_wait_s), "num") +
      cell(pct(p.slo_attainment), "num slo") + "</tr>";
  }).join("");
}

function renderWorkflows(workflows) {
  $("workflows").tBodies[0].innerHTML = Object.entries(workflows).map(([name, w]) =>
    `<tr data-workflow="${esc(name)}">${cell(esc(name))}${cell(w.finished, "num")}` +
    cell(secs(w.p50_latency_s), "num") + cell(secs(w.p99_latency_s), "num") +
    cell(pct(w.slo_attainment), "num") + "</tr>").join("");
}

function drawSeries(canvas, series, tMin, tMax) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, left = 24, top = 8, bottom = h - 8;
  ctx.clearRect(0, 0, w, h);
  const yMax = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[1])));
  ctx.fillStyle = "#8a96ad"; ctx.font = "11px sans-serif";
  ctx.fillText(String(yMax), 2, top + 8); ctx.fillText("0", 2, bottom);
  ctx.strokeStyle = "#26304a"; ctx.strokeRect(left, top, w - left - 4, bottom - top);
  const x = (t) => left + (w - left - 4) * (t - tMin) / Math.max(1e-9, tMax - tMin);
  const y = (v) => bottom - (bottom - top) * v / yMax;
  series.forEach((s) => {
    ctx.strokeStyle = s.color; ctx.lineWidth = 2; ctx.beginPath();
    s.points.forEach(([t, v], i) => (i ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
    ctx.stroke();
  });
}

function renderCharts(history) {
  if (!history.length) return;
  const tMax = history[history.length - 1].t, tMin = Math.max(history[0].t, tMax - 300);
  const recent = history.filter((p) => p.t >= tMin);
  const pools = Object.keys(recent[recent.length - 1].queue);
  const series = pools.map((name, i) => ({color: COLORS[i % COLORS.length],
    points: recent.map((p) => [p.t, p.queue[name] || 0])}));
  drawSeries($("queue-chart"), series, tMin, tMax);
  $("queue-legend").innerHTML = pools.map((name, i) =>
    `<span style="color:${COLORS[i % COLORS.length]}">&#9632; ${esc(name)}</span>`).join("");
  drawSeries($("active-chart"), [{color: COLORS[1], points: recent.map((p) => [p.t, p.active])}], tMin, tMax);
}

function render(data) {
  const state = $("state");
  state.textContent = data.ready ? "ready" : data.state;
  state.className = "badge " + (data.ready ? "ready" : data.state);
  $("policy").textContent = data.policy;
  $("uptime").textContent = secs(data.uptime_s);
  $("active-runs").textContent = data.active_runs === undefined ? "-" : data.active_runs;
  renderRuns(data.runs || {});
  renderPools(data.pools || []);
  renderMoves(data.allocation || null);
  renderWorkflows(data.workflows || {});
  renderCharts(data.history || []);
  updates += 1;
  $("updates").textContent = updates;
  $("updated-at").textContent = new Date(data.generated_at * 1000).toLocaleTimeString();
  document.body.dataset.updates = updates;
}

async function poll() {
  const key = apiKey();
  try {
    const response = await fetch("/v1/dashboard", {headers: key ? {Authorization: "Bearer " + key} : {}});
    const body = await response.json();
    if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
    render(body);
    $("error").hidden = true;
  } catch (err) {
    $("error").hidden = false;
    $("error").textContent = "cannot load /v1/dashboard: " + err.message;
    $("state").textContent = "down"; $("state").className = "badge down";
  }
  setTimeout(poll, POLL_MS);
}

poll();
