// Ember console: plain JavaScript, no framework. Every page keeps the header's
// vitals live; each page then wires its own part (see the bottom of the file).
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
}

function fmtNum(n, digits = 0) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits });
}

function fmtPct(x, digits = 0) {
  return (x * 100).toFixed(digits) + "%";
}

function fmtMs(ms) {
  if (ms < 1000) return ms.toFixed(0) + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
  return Math.floor(ms / 60000) + " min " + Math.floor((ms % 60000) / 1000) + " s";
}

function pidPath(pid) {
  return pid.replace(/^</, "").replace(/>$/, "");
}

async function api(method, url, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  let data = null;
  try { data = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    throw new Error((data && data.error) || response.status + " " + response.statusText);
  }
  return data;
}

// A live stream of JSON events; reconnects by itself (EventSource does).
function stream(url, onData) {
  const source = new EventSource(url);
  const live = $("v-live");
  source.onopen = () => live && live.classList.add("on");
  source.onerror = () => live && live.classList.remove("on");
  source.onmessage = (event) => {
    try { onData(JSON.parse(event.data)); } catch (e) { console.error(e); }
  };
  return source;
}

function setFacts(dl, pairs) {
  dl.replaceChildren();
  for (const [k, v] of pairs) {
    dl.append(el("dt", { text: k }), el("dd", {}, v));
  }
}

// ---- header vitals and home -------------------------------------------------

function renderSchedulers(container, system) {
  container.replaceChildren();
  for (const s of system.schedulers) {
    const meter = el("div", { class: "meter" }, el("i", { style: `width:${(s.utilization * 100).toFixed(1)}%` }));
    container.append(el("div", { class: "sched" + (s.online ? "" : " offline") },
      `scheduler ${s.index + 1} · ${s.online ? fmtPct(s.utilization) : "offline"}`, meter));
  }
}

function onSystem(system) {
  $("v-procs").textContent = fmtNum(system.process_count);
  $("v-util").textContent = fmtPct(system.utilization);
  $("v-mem").textContent = fmtBytes(system.memory.rss_bytes);
  if (document.body.dataset.page === "home") {
    renderSchedulers($("home-schedulers"), system);
    const t = system.threads;
    setFacts($("home-facts"), [
      ["uptime", fmtMs(system.uptime_s * 1000)],
      ["processes", fmtNum(system.process_count)],
      ["schedulers online", `${system.schedulers_online} of ${system.schedulers_total}`],
      ["memory", `${fmtBytes(system.memory.rss_bytes)} RSS` +
        (system.memory.allocated_bytes !== null ? `, ${fmtBytes(system.memory.allocated_bytes)} allocated` : "")],
      ["timers", fmtNum(system.timers)],
      ["worker threads", `${t.workers} (${t.spares} spare, ${t.background} background)`],
      ["preemption", `${fmtNum(t.handoffs)} hand-offs (${fmtNum(t.blocked_handoffs)} blocked), ${fmtNum(t.demotions)} demotions`],
    ]);
  }
}

// ---- math ----------------------------------------------------------------------

function mathPage() {
  const form = $("math-form"), input = $("math-n"), fact = $("math-fact"), err = $("math-error");
  const queue = $("math-queue");
  async function submit(n) {
    err.hidden = true;
    try {
      await api("POST", "/api/math", {
        n: Number(n), op: fact.checked ? "factorial" : "sum", queue: queue.checked,
      });
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
    }
  }
  form.addEventListener("submit", (e) => { e.preventDefault(); submit(input.value); });
  for (const b of form.querySelectorAll("[data-n]")) {
    b.addEventListener("click", () => { input.value = b.dataset.n; submit(b.dataset.n); });
  }
  stream("/api/math/events", (data) => { renderMath(data.jobs); renderPool(data.pool); });
}

function renderPool(pool) {
  $("math-pool").textContent = pool
    ? `Pool: ${pool.running} of ${pool.limit} slots busy, ${pool.queued} of at most ${pool.max_queued} jobs queued.`
    : "Pool: restarting…";
}

function renderMath(jobs) {
  const body = $("math-rows");
  if (!jobs.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 6, text: "No jobs yet." })));
    return;
  }
  body.replaceChildren(...jobs.map((job) => {
    const what = job.op === "sum" ? `∑(1..${fmtNum(job.n)})` : `${fmtNum(job.n)}!`;
    let state, result;
    if (job.state === "queued") {
      state = el("span", { class: "state calculating", text: "queued (waiting for a slot)" });
      result = el("span", { class: "muted", text: "" });
    } else if (job.state === "calculating") {
      state = el("span", { class: "state calculating" }, el("span", { class: "spinner" }), "calculating…");
      result = el("span", { class: "muted", text: "" });
    } else if (job.state === "error") {
      state = el("span", { class: "state error", text: "error" });
      result = el("span", { class: "muted", text: job.error || "" });
    } else {
      state = el("span", { class: "state done", text: "done" });
      result = job.op === "factorial"
        ? el("span", {}, el("b", { text: fmtNum(job.digits) + " digits" }), el("span", { class: "muted" }, " · " + job.result))
        : el("span", { text: job.result });
    }
    const pid = job.pid
      ? el("a", { class: "mono", href: `/top?pid=${encodeURIComponent(pidPath(job.pid))}`, text: job.pid })
      : el("span", { class: "muted", text: "–" });
    return el("tr", { "data-id": job.id, "data-n": job.n, "data-state": job.state },
      el("td", { class: "mono muted", text: job.id }),
      el("td", { class: "mono", text: what }),
      el("td", {}, pid),
      el("td", {}, state),
      el("td", { class: "result" }, result),
      el("td", { class: "num mono", text: fmtMs(job.elapsed_ms) }));
  }));
}

// ---- top --------------------------------------------------------------------------

let infoPid = null;

function topPage() {
  stream("/api/top/events", renderTop);
  $("info-close").addEventListener("click", () => { $("info-panel").hidden = true; infoPid = null; });
  $("info-refresh").addEventListener("click", () => infoPid && showInfo(infoPid));
  $("info-kill").addEventListener("click", () => infoPid && kill(infoPid));
  const wanted = new URLSearchParams(location.search).get("pid");
  if (wanted) showInfo(wanted);
}

function renderTop(top) {
  $("top-meta").textContent =
    `${fmtNum(top.process_count)} processes, ${top.schedulers_online} schedulers online.`;
  const body = $("top-rows");
  if (!top.processes.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 8, text: "Nothing ran in the last second." })));
    return;
  }
  const perSec = 1000 / Math.max(top.interval_ms, 1);
  body.replaceChildren(...top.processes.map((p) => {
    const share = Math.min(p.cpu_share, 1);
    const doing = p.label ? `${p.spawned_as}: ${p.label}` : p.spawned_as;
    const label = p.name ? `${doing} (${p.name})` : doing;
    return el("tr", { "data-pid": p.pid },
      el("td", { class: "mono" }, p.pid),
      el("td", { class: "mono", title: p.current_poll ? p.current_poll.text : "" }, label,
        p.current_poll ? el("div", { class: "muted", text: p.current_poll.text }) : null),
      el("td", { text: p.status }),
      el("td", { class: "num" }, el("div", { class: "bar-cell" },
        el("div", { class: "meter" }, el("i", { style: `width:${(share * 100).toFixed(1)}%` })), fmtPct(p.cpu_share, 1))),
      el("td", { class: "num mono", text: fmtNum(p.reductions_delta * perSec) }),
      el("td", { class: "num mono", text: fmtNum(p.mailbox_len) }),
      el("td", { class: "num mono", text: fmtBytes(p.memory_bytes) }),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "small", onclick: () => showInfo(pidPath(p.pid)), text: "info" }), " ",
        el("button", { type: "button", class: "small danger", onclick: () => kill(pidPath(p.pid)), text: "kill" })));
  }));
}

async function showInfo(pid) {
  infoPid = pid;
  const panel = $("info-panel");
  panel.hidden = false;
  $("info-pid").textContent = `<${pid}>`;
  const poll = $("info-poll");
  try {
    const info = await api("GET", `/api/processes/${pid}`);
    poll.hidden = !info.current_poll;
    poll.textContent = info.current_poll ? info.current_poll.text : "";
    const list = (xs) => (xs.length ? xs.join(", ") : "none");
    setFacts($("info-facts"), [
      ["spawned as", info.spawned_as],
      ["label", info.label || "none"],
      ["registered name", info.name || "none"],
      ["status", info.status],
      ["priority", info.priority],
      ["reductions", fmtNum(info.reductions)],
      ["CPU time", fmtMs(info.cpu_time_ms)],
      ["mailbox", fmtNum(info.mailbox_len) + " messages"],
      ["memory", fmtBytes(info.memory_bytes)],
      ["links", list(info.links)],
      ["monitors", list(info.monitors)],
      ["monitored by", list(info.monitored_by)],
      ["traps exits", info.trap_exit ? "yes" : "no"],
      ["group leader", info.group_leader],
      ["watchdog offenses", String(info.offenses)],
      ["current poll", info.current_poll
        ? `${info.current_poll.text} (thread ${info.current_poll.tid}, nice ${info.current_poll.nice})` : "none"],
    ]);
  } catch (e) {
    poll.hidden = false;
    poll.textContent = e.message;
    $("info-facts").replaceChildren();
  }
}

async function kill(pid) {
  try {
    const r = await api("POST", `/api/processes/${pid}/kill`, {});
    if (infoPid === pid) {
      $("info-poll").hidden = false;
      $("info-poll").textContent = r.current_poll ? `killed: ${r.current_poll}` : "killed";
      $("info-facts").replaceChildren();
    }
    const row = document.querySelector(`tr[data-pid="<${pid}>"]`);
    if (row) row.classList.add("killed");
  } catch (e) {
    alert(e.message);
  }
}

// ---- load ---------------------------------------------------------------------------

const PALETTE = ["#e8672e", "#3b82c4", "#2f8f5b", "#a855c7", "#c9a227", "#d04a7a", "#4aa3a3", "#7a7a80"];

// Draws series (arrays of numbers, oldest first) on a canvas as lines.
function drawChart(canvas, series, { max, format } = {}) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== Math.round(w * dpr)) { canvas.width = Math.round(w * dpr); canvas.height = Math.round(h * dpr); }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const css = getComputedStyle(document.body);
  const line = css.getPropertyValue("--line").trim(), muted = css.getPropertyValue("--muted").trim();
  let top = max;
  if (top === undefined) {
    top = Math.max(1, ...series.flatMap((s) => s.values));
    const mag = Math.pow(10, Math.floor(Math.log10(top)));
    top = Math.ceil(top / mag) * mag;
  }
  const left = 56, right = 8, topPad = 8, bottom = 18;
  const pw = w - left - right, ph = h - topPad - bottom;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = muted;
  ctx.strokeStyle = line;
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = topPad + ph - (ph * i) / 4 + 0.5;
    ctx.beginPath(); ctx.moveTo(left, y); ctx.lineTo(w - right, y); ctx.stroke();
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    ctx.fillText((format || fmtNum)((top * i) / 4), left - 6, y);
  }
  ctx.textAlign = "left"; ctx.textBaseline = "alphabetic";
  ctx.fillText("−60 s", left, h - 4);
  ctx.textAlign = "right";
  ctx.fillText("now", w - right, h - 4);
  const slots = 60;
  series.forEach((s, k) => {
    const values = s.values.slice(-slots - 1);
    if (!values.length) return;
    ctx.strokeStyle = s.color || PALETTE[k % PALETTE.length];
    ctx.lineWidth = 1.8;
    ctx.lineJoin = "round";
    ctx.beginPath();
    values.forEach((v, i) => {
      const x = left + pw * (1 - (values.length - 1 - i) / slots);
      const y = topPad + ph - (ph * Math.min(v, top)) / top;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  });
}

function loadPage() {
  const form = $("load-form"), err = $("load-error");
  let edited = false;
  for (const input of form.querySelectorAll("input")) input.addEventListener("input", () => { edited = true; });
  async function apply(body) {
    err.hidden = true;
    try {
      await api("POST", "/api/load", body);
      edited = false;
    } catch (e) {
      err.textContent = e.message;
      err.hidden = false;
    }
  }
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    apply({
      workers: Number($("load-workers").value),
      failure_rate: Number($("load-failure").value),
      schedulers: Number($("load-schedulers").value),
    });
  });
  for (const b of form.querySelectorAll("[data-workers]")) {
    b.addEventListener("click", () => { $("load-workers").value = b.dataset.workers; apply({ workers: Number(b.dataset.workers) }); });
  }
  let latest = null;
  stream("/api/load/events", (load) => {
    latest = load;
    if (!edited && document.activeElement.tagName !== "INPUT") {
      $("load-workers").value = load.workers;
      $("load-failure").value = load.failure_rate;
      $("load-schedulers").value = load.schedulers_online;
      $("load-schedulers").max = load.schedulers_total;
    }
    setFacts($("load-facts"), [
      ["workers", `${fmtNum(load.live_workers)} alive of ${fmtNum(load.workers)} wanted${load.starting ? " (starting…)" : ""}`],
      ["jobs", `${fmtNum(load.jobs_per_s)} / s ok, ${fmtNum(load.failures_per_s)} / s crashed and restarted`],
      ["failure rate", load.failure_rate + "%"],
      ["schedulers online", `${load.schedulers_online} of ${load.schedulers_total}`],
    ]);
    drawLoad(load);
  });
  window.addEventListener("resize", () => latest && drawLoad(latest));
}

function legend(id, items) {
  const box = $(id);
  box.replaceChildren(...items.map(([label, color]) => el("span", {}, el("i", { style: `background:${color}` }), label)));
}

function drawLoad(load) {
  const h = load.history;
  drawChart($("chart-jobs"), [
    { values: h.map((p) => p.jobs_per_s), color: PALETTE[2] },
    { values: h.map((p) => p.failures_per_s), color: "#c93c3c" },
  ]);
  const n = Math.max(0, ...h.map((p) => p.utilization.length));
  const util = [];
  for (let i = 0; i < n; i++) util.push({ values: h.map((p) => p.utilization[i] || 0) });
  drawChart($("chart-util"), util, { max: 1, format: (v) => fmtPct(v) });
  legend("legend-jobs", [["ok", PALETTE[2]], ["crashed", "#c93c3c"]]);
  legend("legend-util", util.map((_, i) => [`scheduler ${i + 1}`, PALETTE[i % PALETTE.length]]));
  drawChart($("chart-mem"), [{ values: h.map((p) => p.rss_bytes), color: PALETTE[1] }], { format: fmtBytes });
}

// ---- start ------------------------------------------------------------------------------

stream("/api/system/events", onSystem);
({ math: mathPage, top: topPage, load: loadPage }[document.body.dataset.page] || (() => {}))();
