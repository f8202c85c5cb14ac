// The dashboard of `wn serve`: notes the ring's position, reads the API once, then
// follows the event stream (GET /api/events as text/event-stream) from that position,
// so no event between the read and the stream is missed, and refetches only what an
// event touched.
// No polling, no framework. A token, when the server needs one, is given in the page's
// address as #token=TOKEN and sent as `Authorization: Bearer`.
"use strict";

const STATUSES = ["pending", "blocked", "ready", "claimed", "in_progress", "complete", "failed", "cancelled"];
const FEED_MAX = 100;
const token = new URLSearchParams(location.hash.slice(1)).get("token");
const headers = token ? { Authorization: "Bearer " + token } : {};

const tasks = new Map(); // uuid -> node
const docs = new Set(); // uuids of the documents listed
let lastSeq = null;
const TASKS_MAX = 1000;
const DOCS_MAX = 200;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k === "style") e.style.cssText = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
}

async function api(path) {
  const r = await fetch(path, { headers });
  const body = await r.json();
  if (!r.ok) throw Object.assign(new Error(body.error ? body.error.message : r.statusText), { status: r.status });
  return body;
}

function ago(ms) {
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 0) return "in " + span(-s);
  return span(s) + " ago";
}
function span(s) { return s < 90 ? s + "s" : s < 5400 ? Math.round(s / 60) + "m" : Math.round(s / 3600) + "h"; }

// ---- the board ----
function card(n) {
  const meta = [];
  if (n.claim && n.claim.live) meta.push(n.claim.agent + " · epoch " + n.claim.epoch);
  if (n.priority) meta.push("p" + n.priority);
  const c = el("div", { class: "card s-" + n.status, "data-uuid": n.uuid },
    el("div", { class: "name" }, n.name),
    el("div", { class: "meta" }, (n.path || "") + (meta.length ? " — " + meta.join(", ") : "")),
    el("div", { class: "bar", title: n.progress + "%" }, el("span", { class: "progress", style: "width:" + n.progress + "%" })),
    el("div", { class: "meta pct" }, n.progress + "%"));
  return c;
}

function renderBoard() {
  const board = document.getElementById("board");
  board.replaceChildren();
  for (const s of STATUSES) {
    const list = [...tasks.values()].filter(n => n.status === s).sort((a, b) => b.priority - a.priority || a.created_ms - b.created_ms);
    const col = el("div", { class: "column", id: "col-" + s },
      el("h3", {}, s.replace("_", " ") + " ", el("span", { class: "count" }, list.length)));
    for (const n of list) col.append(card(n));
    board.append(col);
  }
  renderBlocked();
}

function renderBlocked() {
  const ul = document.getElementById("blocked");
  ul.replaceChildren();
  const blocked = [...tasks.values()].filter(n => n.status === "blocked");
  if (!blocked.length) ul.append(el("li", { class: "dim" }, "nothing is blocked"));
  for (const n of blocked) {
    const by = n.blocked_by.filter(b => b.status !== "complete").map(b => (b.name || "(deleted)") + " [" + b.status + "]");
    ul.append(el("li", {}, el("b", {}, n.name), " waits for " + (by.join(", ") || "—")));
  }
}

// Says when a list holds only the first `max` of more (`truncated` in the answer).
function noteTruncated(id, r, max, what) {
  const note = document.getElementById(id);
  note.hidden = !r.truncated;
  note.textContent = r.truncated ? "showing the first " + max + " " + what + " only; there are more (narrow with wn ls)" : "";
}

async function loadTasks() {
  const r = await api("/api/tasks?limit=" + TASKS_MAX);
  tasks.clear();
  for (const n of r.nodes) tasks.set(n.uuid, n);
  noteTruncated("tasks-truncated", r, TASKS_MAX, "tasks");
  renderBoard();
}

// Refetches one node an event named: a task's card, the document list, a project.
async function refreshNode(uuid) {
  let n = null;
  try {
    n = await api("/api/tasks/" + uuid);
  } catch (e) {
    if (e.status !== 404) throw e;
  }
  if (n && n.kind === "task") { tasks.set(uuid, n); renderBoard(); }
  else if (!n && tasks.delete(uuid)) renderBoard();
  if ((n && n.kind === "document") || (!n && docs.has(uuid))) await loadDocuments();
  if (n && n.kind === "project") await loadProjects();
}

// ---- agents, projects, documents ----
async function loadAgents() {
  const r = await api("/api/agents");
  const body = document.querySelector("#agents tbody");
  body.replaceChildren();
  for (const a of r.agents) {
    const holds = a.claims.map(c => c.name + " (" + c.epoch + ", lease " + ago(c.lease_until_ms) + ")").join("; ");
    body.append(el("tr", { "data-agent": a.name }, el("td", {}, a.name), el("td", {}, a.role),
      el("td", {}, ago(a.heartbeat_ms)), el("td", {}, holds || "—")));
  }
}

async function loadProjects() {
  const r = await api("/api/analytics/progress");
  const box = document.getElementById("projects");
  box.replaceChildren();
  if (!r.projects.length) box.append(el("div", { class: "dim" }, "no projects under " + r.path));
  for (const p of r.projects) {
    const pct = Math.round(p.percent_complete);
    box.append(el("div", { class: "project", "data-uuid": p.node },
      el("div", {}, el("b", {}, p.name), " — " + p.by_status.complete + "/" + p.total + " complete, " + pct + "%, mean progress " + Math.round(p.mean_progress) + "%"),
      el("div", { class: "bar" }, el("span", { style: "width:" + pct + "%" }))));
  }
}

async function loadDocuments() {
  const r = await api("/api/tasks?kind=document&limit=" + DOCS_MAX);
  noteTruncated("documents-truncated", r, DOCS_MAX, "documents");
  const ul = document.getElementById("documents");
  ul.replaceChildren();
  docs.clear();
  if (!r.nodes.length) ul.append(el("li", { class: "dim" }, "no documents"));
  for (const d of r.nodes) {
    docs.add(d.uuid);
    const b = el("button", { class: "link" }, d.path);
    b.onclick = () => openDocument(d.uuid);
    ul.append(el("li", {}, b, el("span", { class: "dim" }, " v" + d.version + ", " + d.document.len + " bytes")));
  }
}

async function openDocument(uuid) {
  const d = await api("/api/documents/" + uuid);
  const pre = document.getElementById("document");
  pre.hidden = false;
  pre.textContent = d.path + " (" + d.content_type + ")\n\n" + (d.text !== undefined ? d.text : "(binary, " + d.len + " bytes)");
}

// ---- the live feed ----
const pending = new Map(); // what to refetch -> timer
function soon(key, f) {
  if (pending.has(key)) return;
  pending.set(key, setTimeout(() => { pending.delete(key); f().catch(show); }, 150));
}

function onEvent(e) {
  lastSeq = e.seq;
  document.getElementById("seq").textContent = "seq " + e.seq;
  const feed = document.getElementById("feed");
  const who = e.actor && e.actor.name ? " by " + e.actor.name : "";
  const name = e.node && tasks.has(e.node) ? " " + tasks.get(e.node).name : "";
  feed.prepend(el("li", {}, e.seq + " " + e.kind + (e.topic ? ":" + e.topic : "") + name + who));
  while (feed.children.length > FEED_MAX) feed.lastChild.remove();
  const k = e.kind;
  if (e.node) soon("node:" + e.node, () => refreshNode(e.node));
  // Claims change what agents hold; any change of a task may move a project's totals.
  if (k.startsWith("task") || k.startsWith("claim") || k.startsWith("agent")) soon("agents", loadAgents);
  if (k.startsWith("task") || k.startsWith("claim") || k.startsWith("node")) soon("projects", loadProjects);
}

function live(on, text) {
  const s = document.getElementById("live");
  s.className = "live " + (on ? "on" : "off");
  s.textContent = text;
}

// Server-Sent Events over fetch (EventSource cannot send Authorization): from ring
// position `start` (taken before the first load), resuming with Last-Event-ID after a
// break.
async function follow(start) {
  for (;;) {
    try {
      const h = Object.assign({ Accept: "text/event-stream" }, headers);
      if (lastSeq !== null) h["Last-Event-ID"] = String(lastSeq);
      const from = lastSeq === null && start !== null ? "?since=" + start : "";
      const r = await fetch("/api/events" + from, { headers: h });
      if (!r.ok) throw new Error("event stream: HTTP " + r.status);
      live(true, "live");
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let type = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) type = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (type === "event" && data) onEvent(JSON.parse(data));
          else if (type === "lagged") { live(true, "live (caught up after a lag)"); await loadAll(); }
        }
      }
    } catch (e) {
      show(e);
    }
    live(false, "reconnecting…");
    await new Promise(r => setTimeout(r, 2000));
  }
}

function show(e) { live(false, String(e.message || e)); }

async function loadAll() {
  await Promise.all([loadTasks(), loadAgents(), loadProjects(), loadDocuments()]);
}

// The ring's position first, then the lists, then the stream from that position: an
// event in between is applied again (refetching is idempotent) rather than missed.
async function start() {
  let at = null;
  try {
    at = (await api("/api/events?limit=1")).tail;
    await loadAll();
    document.body.dataset.loaded = "1";
  } catch (e) {
    show(e);
  }
  follow(at);
}

start();
