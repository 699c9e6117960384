// helioforge studio: the page's behaviour. Talks only to this app's /api routes (no CDN, works offline).
"use strict";

const S = { status: null, seed: 0, start: null, moves: {}, hold: [], k: 8, renders: 0, inflight: false, pending: false };
const $ = (id) => document.getElementById(id);
// RdBu reversed, as the server's colour map: -clip (blue) ... +clip (red)
const RDBU = ["#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f"];

function fmt(v, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return "n/a";
  const a = Math.abs(v);
  const s = (a !== 0 && (a >= 1e4 || a < 1e-2)) ? v.toExponential(2) : v.toFixed(a >= 100 ? 0 : 2);
  return unit ? `${s} ${unit}` : s;
}
function signed(v, unit) { return (v > 0 ? "+" : "") + fmt(v, unit); }
// every string that comes from the server (file names, header values) goes through esc() before innerHTML
function esc(x) {
  return String(x ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function showError(msg) {
  const e = $("error");
  if (!msg) { e.hidden = true; e.textContent = ""; return; }
  e.hidden = false; e.textContent = msg;
}

async function api(path, opts = {}) {
  const r = await fetch(path, opts);
  const type = r.headers.get("content-type") || "";
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    if (type.includes("json")) { const j = await r.json(); msg = typeof j.detail === "string" ? j.detail : JSON.stringify(j.detail); }
    throw new Error(msg);
  }
  return type.includes("json") ? r.json() : r.blob();
}

function viewBody() {
  return JSON.stringify({ seed: S.seed, start: S.start, moves: S.moves, hold: S.hold, k: S.k, refine: 3 });
}

// ------------------------------------------------------------------ figure (image, Mm axes, colour bar)
const FIG = { x0: 62, y0: 12, size: 360, barX: 446, barW: 16 };

function niceStep(span) {
  const raw = span / 5, p = Math.pow(10, Math.floor(Math.log10(raw)));
  return [1, 2, 5, 10].map((m) => m * p).find((s) => span / s <= 6);
}

function drawFigure(dataUrl, pixelMm) {
  const svg = $("figure"), ns = "http://www.w3.org/2000/svg", st = S.status;
  const side = (pixelMm || st.pixel_mm) * st.image_size, clip = st.clip_gauss;
  const el = (name, attrs, text) => {
    const e = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.appendChild(e); return e;
  };
  svg.innerHTML = "";
  const defs = el("defs", {});
  const grad = document.createElementNS(ns, "linearGradient");
  grad.setAttribute("id", "cbar"); grad.setAttribute("x1", "0"); grad.setAttribute("y1", "1"); grad.setAttribute("x2", "0"); grad.setAttribute("y2", "0");
  RDBU.forEach((c, i) => { const s = document.createElementNS(ns, "stop"); s.setAttribute("offset", i / (RDBU.length - 1)); s.setAttribute("stop-color", c); grad.appendChild(s); });
  defs.appendChild(grad);
  const img = el("image", { id: "magnetogram", x: FIG.x0, y: FIG.y0, width: FIG.size, height: FIG.size, preserveAspectRatio: "none", href: dataUrl });
  img.style.imageRendering = "pixelated";
  el("rect", { x: FIG.x0, y: FIG.y0, width: FIG.size, height: FIG.size, fill: "none", stroke: "#333" });
  const step = niceStep(side);
  for (let t = 0; t <= side + 1e-9; t += step) {
    const px = FIG.x0 + (t / side) * FIG.size, py = FIG.y0 + FIG.size - (t / side) * FIG.size;
    el("line", { x1: px, y1: FIG.y0 + FIG.size, x2: px, y2: FIG.y0 + FIG.size + 5, stroke: "#333" });
    el("text", { x: px, y: FIG.y0 + FIG.size + 18, "text-anchor": "middle", "font-size": 11 }, fmt(t));
    el("line", { x1: FIG.x0 - 5, y1: py, x2: FIG.x0, y2: py, stroke: "#333" });
    el("text", { x: FIG.x0 - 8, y: py + 4, "text-anchor": "end", "font-size": 11 }, fmt(t));
  }
  el("text", { x: FIG.x0 + FIG.size / 2, y: FIG.y0 + FIG.size + 34, "text-anchor": "middle", "font-size": 12 }, "x (Mm)");
  el("text", { x: 14, y: FIG.y0 + FIG.size / 2, "text-anchor": "middle", "font-size": 12, transform: `rotate(-90 14 ${FIG.y0 + FIG.size / 2})` }, "y (Mm)");
  el("rect", { id: "colorbar", x: FIG.barX, y: FIG.y0, width: FIG.barW, height: FIG.size, fill: "url(#cbar)", stroke: "#333" });
  for (const g of [-clip, -clip / 2, 0, clip / 2, clip]) {
    const py = FIG.y0 + FIG.size * (1 - (g + clip) / (2 * clip));
    el("line", { x1: FIG.barX + FIG.barW, y1: py, x2: FIG.barX + FIG.barW + 4, y2: py, stroke: "#333" });
    el("text", { x: FIG.barX + FIG.barW + 6, y: py + 4, "font-size": 10 }, (g > 0 ? "+" : "") + g.toFixed(0));
  }
  el("text", { x: FIG.barX + FIG.barW / 2, y: FIG.y0 + FIG.size + 18, "text-anchor": "middle", "font-size": 11 }, "Br (G)");
}

// ------------------------------------------------------------------ sliders
function buildSliders() {
  const box = $("sliders");
  box.innerHTML = "";
  $("units-note").textContent = S.status.calibrated ? "(physical units, calibrated)" : "(ε: no calibration in this work folder)";
  for (const d of S.status.directions) {
    const div = document.createElement("div");
    div.className = "slider"; div.id = `box-${d.name}`;
    const unit = d.unit === "ε" ? "" : d.unit;
    const r2 = d.r2 === null ? "" : ` · R² ${d.r2.toFixed(2)} · 1 ε = ${fmt(d.per_eps, unit)}`;
    div.innerHTML = `<div class="head"><label for="slider-${d.name}">Δ${d.label} (${d.unit})</label>
      <label><input type="checkbox" id="hold-${d.name}"> hold</label></div>
      <input type="range" id="slider-${d.name}" min="${-d.max}" max="${d.max}" step="${d.step}" value="0" ${d.fitted ? "" : "disabled"}>
      <div class="value" id="value-${d.name}">0</div>
      <div class="note" title="calibration">${d.fitted ? `range ±${fmt(d.max, unit)} (|ε| ≤ ${d.eps_valid})${r2}` : "direction not fitted"}</div>`;
    box.appendChild(div);
    const slider = div.querySelector("input[type=range]"), hold = div.querySelector("input[type=checkbox]");
    slider.addEventListener("input", () => {
      const v = parseFloat(slider.value);
      if (v === 0) delete S.moves[d.name]; else S.moves[d.name] = v;
      $(`value-${d.name}`).textContent = signed(v, unit);
      render();
    });
    hold.addEventListener("change", () => {
      S.hold = S.status.directions.filter((x) => $(`hold-${x.name}`).checked).map((x) => x.name);
      slider.disabled = hold.checked || !d.fitted;
      div.classList.toggle("held", hold.checked);
      if (hold.checked) { slider.value = 0; delete S.moves[d.name]; $(`value-${d.name}`).textContent = "held"; }
      render();
    });
  }
}

// ------------------------------------------------------------------ rendering
async function render() {
  if (S.inflight) { S.pending = true; return; }
  S.inflight = true; S.pending = false;
  const t0 = performance.now();
  try {
    const r = await api("/api/render", { method: "POST", headers: { "Content-Type": "application/json" }, body: viewBody() });
    drawFigure(r.image, r.pixel_mm);
    showParams(r.params);
    showMoves(r.moves);
    showMatches(r.matches, "of the generated image");
    showError(null);
    S.renders += 1;
    document.body.dataset.renders = S.renders;
    $("timing").textContent = `${(performance.now() - t0).toFixed(0)} ms (server: generate ${r.timing_ms.generate} ms, parameters + search ${r.timing_ms.params_and_search} ms)`;
  } catch (e) {
    showError(e.message);
  } finally {
    S.inflight = false;
    if (S.pending) render();
  }
}

function showParams(p) {
  const rows = [["TUF", p.TUF_Mx, "Mx", p.TUF, "kG px"], ["TPF", p.TPF_Mx, "Mx", p.TPF, "kG px"], ["TNF", p.TNF_Mx, "Mx", p.TNF, "kG px"],
    ["R", p.R_Mx, "Mx", p.R, "kG px"], ["PSEP", p.PSEP_Mm, "Mm", p.PSEP, "px"], ["tilt", p.tilt, "deg", null, ""],
    ["leading polarity", p.leading_sign, "", null, ""]];
  $("params").innerHTML = "<tr><th>parameter</th><th>physical</th><th>image units</th></tr>" + rows.map(([n, v, u, w, wu]) =>
    `<tr><td>${n}</td><td id="param-${n.split(" ")[0]}" data-value="${v}">${n === "leading polarity" ? (v > 0 ? "+" : v < 0 ? "−" : "none") : fmt(v, u)}</td><td>${w === null ? "" : fmt(w, wu)}</td></tr>`).join("");
}

function showMoves(moves) {
  $("moves").innerHTML = moves.length ? "<b>moves</b> (requested → achieved in this image):<br>" + moves.map((m) =>
    `<span id="move-${esc(m.name)}">${esc(m.name.toUpperCase())}: ${esc(signed(m.requested, m.unit === "ε" ? "ε" : m.unit))} → ε ${m.eps.toFixed(2)}, achieved ${m.achieved === null ? "n/a" : esc(signed(m.achieved, m.achieved_unit))}${m.outside_valid ? " <b>(outside the calibrated range)</b>" : ""}</span>`).join("<br>") : "";
  for (const m of moves) {
    const d = S.status.directions.find((x) => x.name === m.name);
    if (d) $(`value-${m.name}`).textContent = `${signed(m.requested, d.unit === "ε" ? "" : d.unit)} (ε ${m.eps.toFixed(2)})`;
  }
}

function showMatches(matches, what) {
  $("matches-note").textContent = what;
  $("matches").innerHTML = matches.map((m) => `<div class="match" data-row="${Number(m.row)}">
    <img src="/api/corpus/${Number(m.row)}/image.png" alt="patch ${Number(m.row)}">
    <div><b>#${Number(m.rank)}</b> cos ${Number(m.score).toFixed(3)}</div>
    <div>${m.HARPNUM > 0 ? `HARP ${Number(m.HARPNUM)}` : esc(m.source)}${m.NOAA_AR ? ` · AR ${Number(m.NOAA_AR)}` : ""}</div>
    <div>${esc(m.T_REC)}</div>
    <div>TUF ${fmt(m.TUF, "kG px")} · PSEP ${fmt(m.PSEP, "px")} · R ${fmt(m.R, "kG px")}</div>
    ${m.USFLUX ? `<div>USFLUX ${fmt(m.USFLUX, "Mx")}</div>` : ""}</div>`).join("");
  for (const el of document.querySelectorAll(".match")) el.addEventListener("click", () => showDetail(el.dataset.row));
}

async function showDetail(row) {
  try {
    const d = await api(`/api/corpus/${Number(row)}`);
    $("detail-title").textContent = `corpus patch ${d.row}: ${d.table.region || ""} ${d.table.T_REC || ""}`;
    $("detail-image").src = d.image;
    const entries = [...Object.entries(d.table), ...Object.entries(d.header).map(([k, v]) => [`header ${k}`, v])];
    $("detail-table").innerHTML = entries.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${v === null ? "" : esc(v)}</td></tr>`).join("");
    $("detail").hidden = false;
  } catch (e) { showError(e.message); }
}

// ------------------------------------------------------------------ upload, project, download
async function onUpload() {
  const f = $("upload").files[0];
  if (!f) return;
  $("upload-info").hidden = false; $("upload-info").textContent = `reading ${f.name} …`;
  try {
    const r = await api(`/api/upload?k=${S.k}`, { method: "POST", headers: { "Content-Type": "application/octet-stream", "X-Filename": f.name }, body: await f.arrayBuffer() });
    S.upload = r.token;
    const p = r.params;
    $("upload-info").innerHTML = `<b>${esc(r.name)}</b>: HARP ${esc(r.HARPNUM)}, ${esc(r.T_REC)}<br>TUF ${fmt(p.TUF, "Mx")} · PSEP ${fmt(p.PSEP, "Mm")} · R ${fmt(p.R, "Mx")}<br><img src="${esc(r.image)}" width="128" style="image-rendering:pixelated">`;
    $("project").disabled = false;
    showMatches(r.matches, `of your upload ${r.name}`);
    showError(null);
  } catch (e) { $("upload-info").textContent = ""; showError(`upload: ${e.message}`); }
}

async function onProject() {
  $("project").disabled = true;
  $("start-info").hidden = false; $("start-info").textContent = "projecting (optimisation in z) …";
  try {
    const r = await api(`/api/project/${S.upload}`, { method: "POST" });
    S.start = r.start;
    $("start-info").innerHTML = `base: projection of <b>${esc(r.name)}</b> (${r.seconds} s): |ΔTUF|/TUF ${fmt(r.errors.rel_dTUF)}, median |ΔB| ${fmt(r.errors.median_abs_G, "G")} (best random start: ${fmt(r.random_start.rel_dTUF)}, ${fmt(r.random_start.median_abs_G, "G")}); scale: ${esc(r.scale)}`;
    $("use-seed").hidden = false;
    render();
  } catch (e) { $("start-info").textContent = ""; showError(`project: ${e.message}`); }
  $("project").disabled = false;
}

async function download(kind) {
  try {
    const blob = await api(`/api/download/${kind}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: viewBody() });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob); a.download = `helioforge_studio.${kind}`;
    document.body.appendChild(a); a.click(); a.remove();
  } catch (e) { showError(`download: ${e.message}`); }
}

// ------------------------------------------------------------------ start
async function init() {
  let st;
  try { st = await api("/api/status"); } catch (e) { showError(`status: ${e.message}`); return; }
  S.status = st;
  $("workdir").textContent = `work folder: ${st.workdir}`;
  if (!st.ready) {
    $("not-ready").hidden = false;
    $("status-message").textContent = st.message;
    $("status-problem").textContent = st.problem || "";
    $("status-command").textContent = st.command;
    document.body.dataset.ready = "false";
    return;
  }
  $("studio").hidden = false;
  document.body.dataset.ready = "true";
  buildSliders();
  $("seed").addEventListener("change", () => { S.seed = Math.max(0, parseInt($("seed").value || "0", 10)); S.start = null; render(); });
  $("random").addEventListener("click", () => { S.seed = Math.floor(Math.random() * 1e9); $("seed").value = S.seed; S.start = null; $("start-info").hidden = true; render(); });
  $("reset").addEventListener("click", () => { S.moves = {}; for (const d of st.directions) { $(`slider-${d.name}`).value = 0; $(`value-${d.name}`).textContent = $(`hold-${d.name}`).checked ? "held" : "0"; } render(); });
  $("upload").addEventListener("change", onUpload);
  $("project").addEventListener("click", onProject);
  $("use-seed").addEventListener("click", () => { S.start = null; $("use-seed").hidden = true; $("start-info").hidden = true; render(); });
  $("download-fits").addEventListener("click", () => download("fits"));
  $("download-png").addEventListener("click", () => download("png"));
  $("detail-close").addEventListener("click", () => { $("detail").hidden = true; });
  $("detail").addEventListener("click", (e) => { if (e.target === $("detail")) $("detail").hidden = true; });
  render();
}

init();
