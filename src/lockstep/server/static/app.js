// lockstep status page: fetches /api/overview whenever /api/events says something changed
// (or, when the stream fails, every poll_seconds) and redraws in place (no reload, no framework).
// Every value from the API goes through textContent, never innerHTML.
"use strict";

const STREAM_RETRY_MS = 30000;  // while polling, how often to try the event stream again
const state = { token: sessionStorage.getItem("lockstep-token") || "", timer: null,
                pollSeconds: 1, histories: {}, historyAt: 0, source: null, mode: "connecting",
                version: null, fetching: false, again: false, streamRetryAt: 0 };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function replace(id, nodes) {
  const target = document.getElementById(id);
  target.replaceChildren(...nodes);
}

async function api(path) {
  const headers = state.token ? { Authorization: "Bearer " + state.token } : {};
  const resp = await fetch(path, { headers, cache: "no-store" });
  if (resp.status === 401 || resp.status === 403) {
    document.getElementById("token-form").hidden = false;
    throw new Error("this server needs a token to read");
  }
  if (!resp.ok) {
    let message = resp.status + " " + resp.statusText;
    try { message = (await resp.json()).error || message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return resp.json();
}

function short(sha) { return sha ? sha.slice(0, 10) : ""; }

function stageChips(progress) {
  return progress.map((cfg) => el("div", { class: "stages", "data-configuration": cfg.configuration },
    el("span", { class: "muted" }, cfg.configuration + ":"),
    cfg.stages.map((s) => el("span", {
      class: "stage " + s.state, "data-stage": s.stage, "data-state": s.state,
      title: s.tries > 1 ? s.tries + " tries" : null,
    }, s.stage + " " + (s.state === "running" ? "▶" : s.state === "passed" ? "✓"
        : s.state === "pending" ? "·" : "✗")))));
}

function itemTitle(item) {
  return el("div", { class: "title" },
    el("span", { class: "id" }, item.id),
    el("span", { class: "state " + item.state }, item.state),
    el("span", {}, item.component + " " + item.version),
    el("code", { class: "muted" }, short(item.sha)),
    el("span", { class: "muted" }, "→ " + item.configurations.join(", ")));
}

function liveCard(item, live, runner) {
  const doing = runner ? (runner.run.landing ? "landing"
    : "testing " + (runner.run.configuration || "") + "/" + (runner.run.stage || "…")) : null;
  const card = el("li", { class: "card live", "data-item": item.id, "data-state": item.state },
    itemTitle(item),
    doing && el("div", { class: "runner" }, (runner.worker || "worker") + ": " + doing
      + (runner.state === "lost" ? " — LOST (" + runner.lost_reason + "); " + runner.next : "")),
    live ? stageChips(live.progress) : null,
    live && live.log_tail.length ? el("pre", { class: "log" }, live.log_tail.join("\n")) : null);
  return card;
}

function waitingCard(item) {
  return el("li", { class: "card", "data-item": item.id, "data-state": item.state },
    itemTitle(item),
    el("div", { class: "why" }, "#" + item.position + " waits: " + (item.wait_reason || "—")));
}

function outcome(item) {
  if (item.landed) return el("div", {}, "landed as ", el("strong", {}, item.landed.tag || "?"));
  if (item.rejection) {
    const r = item.rejection;
    const where = r.stage ? " at " + (r.configuration ? r.configuration + "/" : "") + r.stage : "";
    return [el("div", { class: "error reason" }, r.kind + where + ": " + (r.message || "")),
      r.log_tail && r.log_tail.length
        ? el("pre", { class: "log" }, r.log_tail.slice(-12).join("\n")) : null];
  }
  if (item.skipped) return el("div", { class: "muted" }, "skipped: " + item.skipped.reason);
  if (item.cancelled) return el("div", { class: "muted" }, "cancelled by " + item.cancelled.by);
  return null;
}

function drawQueue(data) {
  const q = data.queue;
  const badge = document.getElementById("queue-state");
  badge.textContent = q.queue.state;
  badge.className = "badge " + q.queue.state;
  document.getElementById("queue-pause").textContent = q.queue.paused_reason
    ? "paused: " + q.queue.paused_reason + (q.queue.paused_message ? " — " + q.queue.paused_message : "")
    : "";
  drawPipeline(q);
  const runners = Object.fromEntries(q.queue.runners.map((r) => [r.run.item, r]));
  const live = q.items.filter((i) => q.live[i.id] || runners[i.id]);
  const waiting = q.items.filter((i) => !(q.live[i.id] || runners[i.id]));
  replace("runners", live.length ? [el("ol", { class: "items" },
    live.map((i) => liveCard(i, q.live[i.id], runners[i.id])))]
    : [el("p", { class: "muted" }, "no item under test")]);
  replace("waiting", waiting.length ? waiting.map(waitingCard)
    : [el("li", { class: "muted" }, "nothing waiting")]);
  replace("recent", q.recent.length ? q.recent.map((i) => el("li", {
    class: "card " + i.state, "data-item": i.id, "data-state": i.state }, itemTitle(i), outcome(i)))
    : [el("li", { class: "muted" }, "nothing finished yet")]);
}

function itemLabel(known, id, cls) {
  const item = known[id];
  return el("span", { class: cls, "data-item": id },
    id + (item ? " " + item.component + " " + item.version : ""));
}

function drawPipeline(q) {
  const p = q.pipeline;
  const table = document.getElementById("pipeline-runners");
  document.getElementById("window").textContent = p ? p.mode + " · window " + p.window : "";
  table.hidden = !(p && p.runners.length);
  if (table.hidden) { table.tBodies[0].replaceChildren(); return; }
  const known = Object.fromEntries(q.items.concat(q.recent).map((i) => [i.id, i]));
  table.tBodies[0].replaceChildren(...p.runners.map((r) => {
    const who = r.runner + (r.worker ? " (" + r.worker + ")" : "");
    if (!r.run) {
      return el("tr", { class: "free", "data-runner": r.runner },
        el("td", {}, who), el("td", {}, "free"), el("td", {}), el("td", {}));
    }
    const own = new Set(r.own);
    const items = r.items.map((id) => itemLabel(known, id, own.has(id) ? "own" : "assumed"));
    return el("tr", { "data-runner": r.runner, "data-candidate": r.candidate },
      el("td", {}, who),
      el("td", { class: "candidate" }, r.candidate + ": ",
        items.flatMap((node, k) => (k ? [" + ", node] : [node]))),
      el("td", { class: "doing" }, (r.configuration || "") + "/" + (r.stage || "")
        + (r.attempt ? " (try " + (r.attempt + 1) + ")" : "")),
      el("td", { class: "muted" }, r.started_at
        ? new Date(r.started_at * 1000).toLocaleTimeString() : ""));
  }));
}

const STEP_MARK = { done: "✓", started: "▶", failed: "✗", skipped: "–" };

function drawCuts(data) {
  const cuts = data.cuts || [];
  const error = document.getElementById("cuts-error");
  error.hidden = !data.cuts_error;
  error.textContent = data.cuts_error || "";
  replace("cut-list", cuts.length ? cuts.map((c) => el("li", {
    class: "card cut", "data-cut": c.configuration + "/" + c.release, "data-state": c.state },
    el("div", { class: "title" }, el("strong", {}, c.release),
      el("span", { class: "muted" }, "[" + c.configuration + "]"),
      el("span", { class: "cut-state " + c.state.replace(" ", "-") }, c.state),
      el("span", { class: "muted" }, "from " + (c.integration_tag || short(c.integration_commit)))),
    el("ul", { class: "components" }, c.components.map((k) => el("li", {
      "data-component": k.component, "data-state": k.state },
      "level " + k.level + " " + k.component + " " + k.state + " ",
      el("span", { class: "steps" }, (k.steps || []).map((s) => el("span", {
        class: "step " + s.state, "data-step": s.step, "data-state": s.state,
        title: s.error || null }, s.step + " " + (STEP_MARK[s.state] || s.state)))),
      k.error ? el("div", { class: "error" }, k.error) : null))),
    (c.warnings || []).map((w) => el("div", { class: "muted" }, "warning: " + w))))
    : [el("li", { class: "muted" }, "no release cut yet")]);
}

function drawReleases(data) {
  const rel = data.releases;
  const error = document.getElementById("releases-error");
  error.hidden = !rel.error;
  error.textContent = rel.error || "";
  replace("release-list", rel.releases.length ? rel.releases.map((r) => el("li", {
    class: "card", "data-tag": r.tag },
    el("div", { class: "title" }, el("strong", {}, r.tag), el("code", { class: "muted" }, short(r.commit))),
    el("ul", { class: "changes" }, r.changes.map((c) => el("li", {},
      c.component + " " + (c.old ? c.old.version : "(none)") + " → "
      + (c.new ? c.new.version : "(removed)") + " [" + c.configuration + "]"))),
    distLine((data.distributions || {})[r.tag])))
    : [el("li", { class: "muted" }, "no integration release yet")]);
}

function distLine(d) {
  if (!d) return null;
  const text = "distribution " + d.state
    + (d.state === "published" ? " (" + d.artifacts + " artifact" + (d.artifacts === 1 ? "" : "s") + ")" : "")
    + (d.error ? ": " + d.error : "");
  return el("div", { class: "dist " + (d.state === "failed" ? "error" : "muted"),
    "data-dist-state": d.state }, text);
}

function drawEnvironments(data) {
  const envs = data.environments;
  replace("environment-list", envs.length ? envs.map((e) => {
    const cond = e.condition || {};
    const history = state.histories[e.name] || [];
    return el("div", { class: "card env", "data-environment": e.name },
      el("div", { class: "title" }, el("strong", {}, e.name),
        el("span", { class: "cond " + (cond.status || "") }, cond.reason || "no condition yet")),
      el("div", {}, "active generation " + (e.activeGeneration ?? "—")
        + (e.pending ? " · pending rollout of generation " + e.generation : "")
        + " · release " + (e.release || "—")),
      cond.message ? el("div", { class: "muted" }, cond.message) : null,
      history.length ? el("ol", { class: "timeline" }, history.slice(-6).map((h) => el("li", {},
        new Date(h.at * 1000).toLocaleTimeString() + " gen " + h.generation + " "
        + (h.reason || "") + (h.message ? ": " + h.message : "")))) : null);
  }) : [el("p", { class: "muted" }, "no environment applied")]);
}

async function refreshHistories(envs) {
  if (Date.now() - state.historyAt < 5000) return;
  state.historyAt = Date.now();
  for (const e of envs.slice(0, 20)) {
    try { state.histories[e.name] = await api("/api/environments/" + encodeURIComponent(e.name) + "/history"); }
    catch (err) { /* shown on the next overview */ }
  }
}

async function refresh() {
  // One fetch at a time; a change announced meanwhile fetches once more afterwards.
  if (state.fetching) { state.again = true; return; }
  state.fetching = true;
  try {
    const data = await api("/api/overview");
    state.pollSeconds = data.poll_seconds || 1;
    drawQueue(data);
    drawReleases(data);
    drawCuts(data);
    await refreshHistories(data.environments);
    drawEnvironments(data);
    document.getElementById("connection").textContent = "";
    document.getElementById("updated").textContent = new Date().toLocaleTimeString();
  } catch (err) {
    document.getElementById("connection").textContent = "not updating: " + err.message;
  } finally {
    state.fetching = false;
  }
  if (state.again) { state.again = false; await refresh(); }
}

function showMode() {
  const mode = document.getElementById("mode");
  mode.dataset.mode = state.mode;
  mode.textContent = state.mode === "live" ? "live"
    : state.mode === "polling" ? "polling every " + state.pollSeconds + " s" : "connecting…";
}

function startStream() {
  clearTimeout(state.timer);
  if (state.source) state.source.close();
  if (!window.EventSource) { startPolling(); return; }
  // EventSource cannot send headers: the token goes in the query (the server's log masks it).
  const query = state.token ? "?token=" + encodeURIComponent(state.token) : "";
  const source = new EventSource("/api/events" + query);
  state.source = source;
  source.addEventListener("changed", (ev) => {
    state.mode = "live";
    state.version = JSON.parse(ev.data).version;
    showMode();
    refresh();
  });
  source.onerror = () => {
    if (state.source !== source) return;
    source.close();
    state.source = null;
    startPolling();
  };
}

function startPolling() {
  state.mode = "polling";
  state.streamRetryAt = Date.now() + STREAM_RETRY_MS;
  showMode();
  clearTimeout(state.timer);
  pollTick();
}

async function pollTick() {
  await refresh();
  showMode();
  if (state.mode !== "polling") return;
  if (Date.now() >= state.streamRetryAt) { startStream(); return; }
  state.timer = setTimeout(pollTick, state.pollSeconds * 1000);
}

document.getElementById("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = document.getElementById("token").value.trim();
  sessionStorage.setItem("lockstep-token", state.token);
  document.getElementById("token-form").hidden = true;
  startStream();
});
startStream();
