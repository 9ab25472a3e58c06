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
// The node Top shows ("" for this node) and its query string.
let topNode = "";
const topQuery = () => (topNode ? `?node=${encodeURIComponent(topNode)}` : "");

function topPage() {
  $("info-close").addEventListener("click", () => { $("info-panel").hidden = true; infoPid = null; });
  $("info-refresh").addEventListener("click", () => infoPid && showInfo(infoPid));
  $("info-kill").addEventListener("click", () => infoPid && kill(infoPid));
  const pick = $("top-node"), note = $("top-node-note");
  let source = null, opened = 0;
  function say(text) { note.textContent = text; note.hidden = !text; }
  function onTop(top) {
    if (top.error) { say(top.error); return; }
    say(top.node ? `Showing ${top.node}, an Ember node: its own figures, taken by its console's sampler. ` +
      `Read-only: kill its processes on its own console.` : "");
    renderTop(top);
  }
  // Shows `node` ("" for this node): checks it with a GET first, so that an
  // error (not connected, no answer) shows as a message, then streams.
  async function open(node) {
    const mine = ++opened;
    if (source) { source.close(); source = null; }
    topNode = node;
    $("info-panel").hidden = true;
    infoPid = null;
    $("info-kill").hidden = !!node;
    const params = new URLSearchParams(location.search);
    if (node) params.set("node", node); else params.delete("node");
    params.delete("pid");
    const q = params.toString();
    history.replaceState(null, "", "/top" + (q ? `?${q}` : ""));
    if (node) {
      say(`Asking ${node}…`);
      try { await api("GET", "/api/top" + topQuery()); } catch (e) { if (mine === opened) say(e.message); return; }
    } else {
      say("");
    }
    if (mine === opened) source = stream("/api/top/events" + topQuery(), onTop);
  }
  async function refreshNodes() {
    let cluster;
    try { cluster = await api("GET", "/api/cluster"); } catch (_) { return; }
    const self = cluster.node;
    const names = cluster.nodes.map((n) => n.name);
    if (topNode && !names.includes(topNode)) names.push(topNode);
    pick.firstElementChild.textContent = self ? `this node (${self})` : "this node";
    pick.replaceChildren(pick.firstElementChild, ...names.map((n) => el("option", { value: n, text: n })));
    pick.value = topNode;
    pick.disabled = !cluster.distributed;
    pick.title = cluster.distributed ? "whose processes this page shows" : "this node is not distributed";
  }
  pick.addEventListener("change", () => open(pick.value));
  const search = new URLSearchParams(location.search);
  const wanted = search.get("node") || "";
  if (wanted) pick.append(el("option", { value: wanted, text: wanted }));
  pick.value = wanted;
  const pid = search.get("pid");
  open(wanted).then(() => pid && showInfo(pid));
  refreshNodes();
  setInterval(refreshNodes, 5000);
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
        top.node ? null
          : el("button", { type: "button", class: "small danger", onclick: () => kill(pidPath(p.pid)), text: "kill" })));
  }));
}

async function showInfo(pid) {
  infoPid = pid;
  const panel = $("info-panel");
  panel.hidden = false;
  $("info-pid").textContent = `<${pid}>`;
  const poll = $("info-poll");
  try {
    const info = await api("GET", `/api/processes/${pid}${topQuery()}`);
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
      ["memory limit", info.memory_limit == null ? "none"
        : `${fmtBytes(info.memory_attributed_bytes)} of ${fmtBytes(info.memory_limit)} allocated`],
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

// ---- cluster ------------------------------------------------------------------------

let remoteNode = null;
let remoteInfo = null;

function clusterPage() {
  stream("/api/cluster/events", renderCluster);
  $("remote-close").addEventListener("click", () => { $("remote-panel").hidden = true; remoteNode = null; });
  $("remote-refresh").addEventListener("click", () => remoteNode && showRemoteTop(remoteNode));
  $("rinfo-close").addEventListener("click", () => { $("rinfo-panel").hidden = true; remoteInfo = null; });
  $("rinfo-refresh").addEventListener("click", () => remoteInfo && showRemoteInfo(...remoteInfo));
}

function renderCluster(cluster) {
  const body = $("cluster-rows");
  if (!cluster.distributed) {
    $("cluster-meta").textContent = "";
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 9,
      text: "This node is not distributed: start it with --sname NAME (or --name NAME@HOST) and --cookie COOKIE." })));
    return;
  }
  $("cluster-meta").textContent = `This node is ${cluster.node}; ${cluster.nodes.length} connected.`;
  if (!cluster.nodes.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 9, text: "No node is connected." })));
    return;
  }
  body.replaceChildren(...cluster.nodes.map((n) => el("tr", { "data-node": n.name },
    el("td", { class: "mono", text: n.name }),
    el("td", { text: new Date(n.up_since_ms).toLocaleString() }),
    el("td", { class: "num", text: fmtMs(n.up_for_s * 1000) }),
    el("td", { class: "num mono", text: fmtBytes(n.bytes_in) }),
    el("td", { class: "num mono", text: fmtBytes(n.bytes_out) }),
    el("td", { class: "num mono", text: fmtNum(n.messages_in) }),
    el("td", { class: "num mono", text: fmtNum(n.messages_out) }),
    el("td", { class: "num mono", text: fmtBytes(n.queued_bytes) }),
    el("td", { class: "actions" },
      el("button", { type: "button", class: "small", onclick: () => showRemoteTop(n.name), text: "top" })))));
}

async function showRemoteTop(node) {
  remoteNode = node;
  $("remote-panel").hidden = false;
  $("remote-node").textContent = node;
  $("remote-meta").textContent = "Asking…";
  const body = $("remote-rows");
  try {
    const top = await api("GET", `/api/cluster/nodes/${encodeURIComponent(node)}/top`);
    $("remote-meta").textContent = top.kind === "ember"
      ? `An Ember node: its ${top.shown} processes with the most reductions (ember_introspect:top/1).`
      : `An Erlang node: ${top.shown} of its ${top.total} processes with the most reductions` +
        ` (process_info of ${top.examined}).`;
    body.replaceChildren(...top.processes.map((p) => {
      const name = Array.isArray(p.info.registered_name) ? "" : p.info.registered_name;
      return el("tr", { "data-pid": p.pid },
        el("td", { class: "mono", text: p.pid }),
        el("td", { class: "mono", text: name || "" }),
        el("td", { text: p.info.status }),
        el("td", { class: "num mono", text: fmtNum(p.info.reductions) }),
        el("td", { class: "num mono", text: fmtNum(p.info.message_queue_len) }),
        el("td", { class: "num mono", text: fmtBytes(p.info.memory) }),
        el("td", { class: "actions" },
          el("button", { type: "button", class: "small", onclick: () => showRemoteInfo(node, p.pid), text: "info" })));
    }));
  } catch (e) {
    $("remote-meta").textContent = e.message;
    body.replaceChildren();
  }
}

function showTerm(v) {
  if (Array.isArray(v)) return v.length ? v.map(showTerm).join(", ") : "[]";
  return String(v);
}

async function showRemoteInfo(node, pid) {
  remoteInfo = [node, pid];
  $("rinfo-panel").hidden = false;
  $("rinfo-pid").textContent = pid;
  $("rinfo-node").textContent = node;
  const error = $("rinfo-error");
  try {
    const r = await api("GET", `/api/cluster/nodes/${encodeURIComponent(node)}/processes/${encodeURIComponent(pid)}`);
    error.hidden = true;
    setFacts($("rinfo-facts"), Object.entries(r.info).map(([k, v]) => [k.replaceAll("_", " "), showTerm(v)]));
  } catch (e) {
    error.hidden = false;
    error.textContent = e.message;
    $("rinfo-facts").replaceChildren();
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
  const pick = $("load-node"), note = $("load-node-note");
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
  let latest = null, source = null, shown = "", self = null, opened = 0;
  function say(text) { note.textContent = text; note.hidden = !text; }
  function onLoad(load) {
    if (load.error) { say(load.error); return; }
    latest = load;
    if (!load.node) {
      say("");
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
    } else if (load.kind === "ember") {
      say(`Showing ${load.node}, an Ember node: its own figures, taken by its console's sampler. ` +
        `The controls (workers, failure rate, schedulers) change this node (${self || "this node"}) only: ` +
        `select it to use them.`);
      setFacts($("load-facts"), [
        ["node", load.node],
        ["workers", `${fmtNum(load.live_workers)} alive of ${fmtNum(load.workers)} wanted${load.starting ? " (starting…)" : ""}`],
        ["jobs", `${fmtNum(load.jobs_per_s)} / s ok, ${fmtNum(load.failures_per_s)} / s crashed and restarted`],
        ["failure rate", load.failure_rate + "%"],
        ["schedulers online", `${load.schedulers_online} of ${load.schedulers_total}`],
        ["processes", fmtNum(load.process_count)],
        ["run queues", (load.run_queues || []).join(" · ")],
        ["memory", `${fmtBytes(load.memory && load.memory.rss_bytes)} RSS`],
      ]);
    } else {
      say(`Showing ${load.node}, an Erlang node: what erlang:system_info/1, statistics/1 and memory/1 tell. ` +
        `It runs no load demo (no jobs or failures) and per-scheduler utilisation is not available; ` +
        `the CPU line is the VM's CPU time over wall time × schedulers online. ` +
        `The controls change this node (${self || "this node"}) only: select it to use them.`);
      setFacts($("load-facts"), [
        ["node", load.node],
        ["processes", fmtNum(load.process_count)],
        ["schedulers online", `${load.schedulers_online} of ${load.schedulers_total}`],
        ["run queues", (load.run_queues || []).join(" · ")],
        ["memory", `${fmtBytes(load.memory_bytes)} (erlang:memory(total))`],
        ["CPU", load.cpu === null ? "– (needs two samples)" : fmtPct(load.cpu)],
      ]);
    }
    drawLoad(load);
  }
  // Shows `node` ("" for this node): checks it with a GET first, so that an
  // error (not connected, no answer) shows as a message, then streams.
  async function open(node) {
    const mine = ++opened;
    if (source) { source.close(); source = null; }
    shown = node;
    latest = null;
    // The controls change this node only: hidden while another is shown.
    form.style.display = node ? "none" : "";
    for (const c of form.querySelectorAll("input, button")) c.disabled = !!node;
    const q = node ? `?node=${encodeURIComponent(node)}` : "";
    history.replaceState(null, "", "/load" + q);
    if (node) {
      say(`Asking ${node}…`);
      try { await api("GET", "/api/load" + q); } catch (e) { if (mine === opened) say(e.message); return; }
    }
    if (mine === opened) source = stream("/api/load/events" + q, onLoad);
  }
  async function refreshNodes() {
    let cluster;
    try { cluster = await api("GET", "/api/cluster"); } catch (_) { return; }
    self = cluster.node;
    const names = cluster.nodes.map((n) => n.name);
    if (shown && !names.includes(shown)) names.push(shown);
    pick.firstElementChild.textContent = self ? `this node (${self})` : "this node";
    pick.replaceChildren(pick.firstElementChild, ...names.map((n) => el("option", { value: n, text: n })));
    pick.value = shown;
    pick.disabled = !cluster.distributed;
    pick.title = cluster.distributed ? "whose figures this page shows" : "this node is not distributed";
  }
  pick.addEventListener("change", () => open(pick.value));
  const wanted = new URLSearchParams(location.search).get("node") || "";
  if (wanted) pick.append(el("option", { value: wanted, text: wanted }));
  pick.value = wanted;
  open(wanted);
  refreshNodes();
  setInterval(refreshNodes, 5000);
  window.addEventListener("resize", () => latest && drawLoad(latest));
}

function legend(id, items) {
  const box = $(id);
  box.replaceChildren(...items.map(([label, color]) => el("span", {}, el("i", { style: `background:${color}` }), label)));
}

function drawLoad(load) {
  const h = load.history;
  if (load.kind === "erlang") {
    drawChart($("chart-jobs"), []);
    legend("legend-jobs", [["no load demo on an Erlang node", "transparent"]]);
    drawChart($("chart-util"), [{ values: h.map((p) => p.cpu || 0), color: PALETTE[0] }], { max: 1, format: (v) => fmtPct(v) });
    legend("legend-util", [["VM CPU time ÷ (wall time × schedulers online)", PALETTE[0]]]);
    $("caption-util").textContent = "CPU (the VM's, over schedulers online)";
    $("caption-mem").textContent = "memory (erlang:memory(total))";
    drawChart($("chart-mem"), [{ values: h.map((p) => p.memory_bytes), color: PALETTE[1] }], { format: fmtBytes });
  } else {
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
    $("caption-util").textContent = "scheduler utilisation";
    $("caption-mem").textContent = "memory (RSS)";
    drawChart($("chart-mem"), [{ values: h.map((p) => p.rss_bytes), color: PALETTE[1] }], { format: fmtBytes });
  }
  drawChart($("chart-procs"), [{ values: h.map((p) => p.process_count), color: PALETTE[3] }]);
}

// ---- start ------------------------------------------------------------------------------

stream("/api/system/events", onSystem);
// ---- jobs -------------------------------------------------------------------------

const JOB_EXAMPLES = { llm: '{"seconds": 20}', fact: '{"n": 200000}', flaky: '{"fail_times": 2}', leak: '{"mb_per_s": 16}' };
const FINAL = new Set(["succeeded", "failed", "cancelled"]);
let jobSource = null;

function jobsPage() {
  const form = $("jobs-form"), kind = $("jobs-kind"), args = $("jobs-args"), err = $("jobs-error");
  kind.addEventListener("change", () => { args.value = JOB_EXAMPLES[kind.value] || "{}"; });
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    err.hidden = true;
    try {
      const parsed = JSON.parse(args.value);
      const { id } = await api("POST", "/api/jobs", { kind: kind.value, args: parsed });
      refreshJobs();
      showJob(id);
    } catch (ex) {
      err.textContent = ex.message;
      err.hidden = false;
    }
  });
  $("job-close").addEventListener("click", closeJob);
  refreshJobs();
  setInterval(refreshJobs, 1000);
  refreshCron();
  setInterval(refreshCron, 5000);
}

async function refreshJobs() {
  try {
    const [counts, jobs] = await Promise.all([
      api("GET", "/api/jobs/counts"),
      api("GET", "/api/jobs?order=desc&limit=50"),
    ]);
    $("jobs-node").textContent = counts.node;
    $("job-counts").replaceChildren(...Object.entries(counts.counts).map(([state, n]) =>
      el("span", { "data-state": state }, el("b", { text: fmtNum(n) }), state)));
    renderJobs(jobs);
  } catch (e) {
    $("jobs-rows").replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 8, text: "Jobs unavailable: " + e.message })));
  }
}

async function refreshCron() {
  let entries = [];
  try { entries = (await api("GET", "/api/cron")).entries; } catch (e) { entries = []; }
  $("cron-panel").hidden = !entries.length;
  const when = (ms) => (ms == null ? "–" : new Date(ms).toISOString().replace(".000Z", "Z"));
  $("cron-rows").replaceChildren(...entries.map((c) => el("tr", {},
    el("td", { class: "mono", text: c.name }),
    el("td", { class: "mono", text: c.expression }),
    el("td", { class: "mono", text: c.kind }),
    el("td", { class: "mono muted", text: JSON.stringify(c.args) }),
    el("td", { class: "mono", text: when(c.next_run) }),
    el("td", { class: "mono muted", text: when(c.last_slot) }),
    c.last_job == null
      ? el("td", { class: "muted", text: "–" })
      : el("td", { class: "mono job-row", text: "#" + c.last_job, onclick: () => showJob(c.last_job) }))));
}

function jobAction(label, method, url, danger) {
  return el("button", {
    type: "button", class: "small" + (danger ? " danger" : ""), text: label,
    onclick: async (e) => {
      e.stopPropagation();
      try { await api(method, url); } catch (ex) { alert(ex.message); }
      refreshJobs();
    },
  });
}

function renderJobs(jobs) {
  const body = $("jobs-rows");
  if (!jobs.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: 8, text: "No jobs yet." })));
    return;
  }
  body.replaceChildren(...jobs.map((job) => {
    const pct = Math.max(0, Math.min(100, job.progress.pct || 0));
    const shown = JSON.stringify(job.result);
    const outcome = job.state === "succeeded"
      ? el("span", { class: "mono", title: shown, text: shown.length > 80 ? shown.slice(0, 80) + "…" : shown })
      : el("span", { class: "muted", text: job.error || "" });
    const actions = el("td", { class: "actions" });
    if (!FINAL.has(job.state)) actions.append(jobAction("Cancel", "DELETE", `/api/jobs/${job.id}`, true));
    if (job.state === "failed" || job.state === "cancelled") actions.append(jobAction("Retry", "POST", `/api/jobs/${job.id}/retry`));
    return el("tr", { class: "job-row", "data-id": job.id, "data-state": job.state, onclick: () => showJob(job.id) },
      el("td", { class: "mono muted", text: job.id }),
      el("td", { class: "mono", text: job.kind }),
      el("td", { class: "mono muted", text: job.queue }),
      el("td", {}, el("span", { class: "state " + job.state, text: job.state })),
      el("td", { class: "num mono", text: `${job.attempt}/${job.max_attempts}` }),
      el("td", {}, el("div", { class: "job-progress" },
        el("span", { class: "meter" }, el("i", { style: `width: ${pct}%` })),
        el("span", { class: "muted", text: `${pct.toFixed(0)}% ${job.progress.message || ""}` }))),
      el("td", { class: "result" }, outcome),
      actions);
  }));
}

function closeJob() {
  if (jobSource) { jobSource.close(); jobSource = null; }
  $("job-panel").hidden = true;
}

async function showJob(id) {
  closeJob();
  $("job-panel").hidden = false;
  $("job-id").textContent = "#" + id;
  const events = $("job-events");
  events.replaceChildren();
  const facts = async () => {
    try {
      const job = await api("GET", `/api/jobs/${id}`);
      setFacts($("job-facts"), [
        ["kind", job.kind], ["args", JSON.stringify(job.args)], ["queue", job.queue],
        ["state", job.state], ["attempt", `${job.attempt} of ${job.max_attempts}`],
        ["node", job.node || "–"], ["result", JSON.stringify(job.result)], ["error", job.error || "–"],
      ]);
    } catch (e) { setFacts($("job-facts"), [["error", e.message]]); }
  };
  facts();
  const source = new EventSource(`/api/jobs/${id}/events`);
  jobSource = source;
  const add = (type) => (event) => {
    const d = JSON.parse(event.data);
    const details = type === "state"
      ? `${d.state} (attempt ${d.attempt})${d.error ? " · " + d.error : ""}`
      : `${Number(d.pct).toFixed(0)}% ${d.message}`;
    events.append(el("tr", {}, el("td", { class: "num mono muted", text: event.lastEventId }),
      el("td", { text: type }), el("td", { class: "mono", text: details })));
    if (type === "state") {
      facts();
      if (FINAL.has(d.state)) { source.close(); }
    }
  };
  source.addEventListener("state", add("state"));
  source.addEventListener("progress", add("progress"));
}

// ---- services ---------------------------------------------------------------------
// The binary's cluster services API (/api/services, /api/node): the nodes of the
// cluster with the services on each, polled every second so moves show live.

function servicesPage() {
  $("svc-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const err = $("svc-error");
    err.hidden = true;
    try {
      await api("POST", "/api/services", { name: $("svc-name").value });
      refreshServices();
    } catch (e) { err.textContent = e.message; err.hidden = false; }
  });
  $("remote-close").addEventListener("click", () => { $("remote-panel").hidden = true; remoteNode = null; });
  $("remote-refresh").addEventListener("click", () => remoteNode && showRemoteTop(remoteNode));
  $("rinfo-close").addEventListener("click", () => { $("rinfo-panel").hidden = true; remoteInfo = null; });
  $("rinfo-refresh").addEventListener("click", () => remoteInfo && showRemoteInfo(...remoteInfo));
  refreshServices();
  setInterval(refreshServices, 1000);
}

async function invokeService(name) {
  const out = $("svc-reply");
  out.hidden = false;
  try {
    const r = await api("POST", `/api/services/${encodeURIComponent(name)}/call`, {});
    out.textContent = `${r.reply} · ${r.calls} calls answered` +
      (r.version > 1 ? ` · version ${r.version}` : "");
  } catch (e) { out.textContent = `${name}: ${e.message} (retry shortly if it is moving)`; }
}

async function stopNode(node, self) {
  if (!confirm(`Stop ${node} gracefully? Its services move to the other nodes.`)) return;
  try {
    await api("POST", "/api/node/stop", self ? {} : { node });
    $("svc-meta").textContent = `${node} is stopping…`;
  } catch (e) { $("svc-error").textContent = e.message; $("svc-error").hidden = false; }
}

async function refreshServices() {
  const box = $("svc-nodes");
  let node, services;
  try {
    [node, services] = await Promise.all([api("GET", "/api/node"), api("GET", "/api/services")]);
  } catch (e) {
    box.replaceChildren(el("p", { class: "muted", text: "Services unavailable: " + e.message +
      " (the node must be distributed: --sname NAME)." }));
    return;
  }
  $("svc-meta").textContent = `This page is served by ${node.node}.`;
  const nodes = [...new Set([...node.members, ...services.map((s) => s.node).filter(Boolean)])].sort();
  const card = (n) => {
    const mine = services.filter((s) => s.node === n);
    const self = n === node.node;
    return el("div", { class: "svc-node", "data-node": n },
      el("div", { class: "panel-head" },
        el("h2", { class: "mono", text: n + (self ? " (this node)" : "") }),
        el("span", {},
          self ? el("a", { href: "/top", class: "small", text: "top" })
            : el("button", { type: "button", class: "small", onclick: () => showRemoteTop(n), text: "top" }),
          " ",
          el("button", { type: "button", class: "small danger", "data-stop": n,
            onclick: () => stopNode(n, self), text: "stop node" }))),
      el("table", { class: "grid" },
        el("tbody", {}, ...(mine.length ? mine.map((s) => el("tr", { "data-service": s.name },
          el("td", { class: "mono", text: s.name }),
          el("td", { class: "mono muted", text: s.pid }),
          el("td", { class: "actions" },
            el("button", { type: "button", class: "small", onclick: () => invokeService(s.name), text: "invoke" }),
            " ",
            el("button", { type: "button", class: "small", onclick: async () => {
              try { await api("DELETE", `/api/services/${encodeURIComponent(s.name)}`); refreshServices(); }
              catch (e) { $("svc-error").textContent = e.message; $("svc-error").hidden = false; }
            }, text: "delete" }))))
          : [el("tr", { class: "empty" }, el("td", { colspan: 3, text: "No services." }))]))));
  };
  const moving = services.filter((s) => !s.node);
  box.replaceChildren(...nodes.map(card), ...(moving.length
    ? [el("p", { class: "muted", text: "Moving: " + moving.map((s) => s.name).join(", ") })] : []));
}

({ math: mathPage, top: topPage, load: loadPage, cluster: clusterPage, jobs: jobsPage, services: servicesPage }[document.body.dataset.page] || (() => {}))();
