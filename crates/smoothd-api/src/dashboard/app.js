// smoothd dashboard. Plain JavaScript, no build step. Every value from the server is put into
// the page with textContent or as an attribute of an element we create, never parsed as HTML.
"use strict";

(function () {
  const body = document.body;
  const PAGE = body.dataset.page;
  const ID = body.dataset.id;
  const CSRF = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const app = document.getElementById("app");
  const banner = document.getElementById("banner");

  // ---- helpers -------------------------------------------------------------------------

  function safeUrl(u) {
    if (typeof u !== "string" || u === "") return null;
    try {
      const url = new URL(u, location.href);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch (_) {
      return null;
    }
  }

  // h("a", {href: x, class: "c", onclick: f}, "text", child...)
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "href" || k === "src") {
        const u = safeUrl(String(v));
        if (u) el.setAttribute(k, u);
      } else if (k === "class") el.className = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  function showBanner(msg, kind) {
    if (!msg) {
      banner.hidden = true;
      return;
    }
    banner.hidden = false;
    banner.className = kind || "warn";
    banner.textContent = msg;
  }

  class HttpError extends Error {}

  async function api(method, path, payload, isForm) {
    const opts = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") opts.headers["x-csrf-token"] = CSRF;
    if (payload !== undefined) {
      if (isForm) opts.body = payload;
      else {
        opts.headers["Content-Type"] = "application/json";
        opts.body = JSON.stringify(payload);
      }
    }
    let r;
    try {
      r = await fetch(path, opts);
    } catch (e) {
      showBanner("Cannot reach smoothd. Is the server running? Retrying when you act again.", "error");
      throw new HttpError("the server is unreachable");
    }
    if (r.status === 401) {
      location.href = "/dashboard/login?m=revoked";
      throw new HttpError("signed out");
    }
    let data = null;
    try {
      data = await r.json();
    } catch (_) {
      data = null;
    }
    if (!r.ok) {
      const detail = data && data.detail ? data.detail : "HTTP " + r.status;
      throw new HttpError(typeof detail === "string" ? detail : JSON.stringify(detail));
    }
    if (banner.className === "error") showBanner(null);
    return data;
  }

  const nf = new Intl.NumberFormat();
  function num(n) {
    return n === null || n === undefined ? "–" : nf.format(n);
  }
  function bytes(n) {
    if (n === null || n === undefined) return "–";
    const u = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) {
      n /= 1024;
      i++;
    }
    return (i ? n.toFixed(1) : n) + " " + u[i];
  }
  function when(ms) {
    if (!ms) return "–";
    const d = new Date(ms);
    const s = (Date.now() - ms) / 1000;
    if (s < 60) return Math.max(0, Math.round(s)) + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " +
      d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  function dur(ms) {
    if (ms === null || ms === undefined || ms < 0) return "–";
    const s = ms / 1000;
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + " min " + Math.round(s % 60) + " s";
    return Math.floor(m / 60) + " h " + (m % 60) + " min";
  }
  function stamp(ms) {
    return new Date(ms).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }
  function taskDuration(t) {
    if (!t.started_at) return null;
    return (t.finished_at || Date.now()) - t.started_at;
  }
  function isActive(s) {
    return s === "waiting" || s === "running";
  }
  function badge(status) {
    return h("span", { class: "badge s-" + status, "data-status": status }, status);
  }
  function sessionMark(t) {
    return t.kind === "session" ? h("span", { class: "badge session", title: "An interactive session" }, "session") : null;
  }
  function taskText(t) {
    if (typeof t.task === "string" && t.task.trim()) return t.task;
    return t.kind === "session" ? "(session, no task yet)" : "(no task text)";
  }
  function pretty(v) {
    try {
      return JSON.stringify(v, null, 2);
    } catch (_) {
      return String(v);
    }
  }
  function flash(el, msg, kind) {
    el.textContent = msg;
    el.className = "note " + (kind || "");
  }

  // One stream per page: the server fans out task changes of this key.
  function live(onTask, onResync) {
    if (!window.EventSource) return;
    let es;
    let warned = false;
    function open() {
      es = new EventSource("/dashboard/api/stream");
      es.addEventListener("hello", () => {
        if (warned) onResync && onResync();
        warned = false;
        showBanner(null);
      });
      es.addEventListener("task", (e) => {
        try {
          onTask(JSON.parse(e.data));
        } catch (_) {}
      });
      es.addEventListener("resync", () => onResync && onResync());
      es.onerror = () => {
        warned = true;
        showBanner("Live updates interrupted: cannot reach smoothd. Reconnecting…", "error");
        if (es.readyState === EventSource.CLOSED) setTimeout(open, 3000);
      };
    }
    open();
    window.addEventListener("beforeunload", () => es && es.close());
  }

  async function cancelTask(id, note) {
    if (!confirm("Cancel this task?")) return false;
    try {
      await api("DELETE", "/dashboard/api/v1/task/" + encodeURIComponent(id));
      note && flash(note, "Cancel requested.", "ok");
      return true;
    } catch (e) {
      note ? flash(note, "Cancel failed: " + e.message, "bad") : alert(e.message);
      return false;
    }
  }
  async function eraseTask(id, note) {
    if (!confirm("Delete this task's data (output, events, steps, recording, downloads)? This cannot be undone.")) return false;
    try {
      await api("DELETE", "/dashboard/api/v1/task/" + encodeURIComponent(id) + "/data");
      note && flash(note, "Data deleted.", "ok");
      return true;
    } catch (e) {
      note ? flash(note, "Delete failed: " + e.message, "bad") : alert(e.message);
      return false;
    }
  }

  // ---- tasks -------------------------------------------------------------------------------

  function tasksPage() {
    const params = new URLSearchParams(location.search);
    const f = {
      status: params.get("status") || "",
      range: params.get("range") || "",
      q: params.get("q") || "",
    };
    const RANGES = { "": "Any time", "1h": "Last hour", "24h": "Last 24 h", "7d": "Last 7 days", "30d": "Last 30 days" };
    const RANGE_MS = { "1h": 3600e3, "24h": 86400e3, "7d": 7 * 86400e3, "30d": 30 * 86400e3 };
    let cursors = [null]; // cursor of each visited page; the last is the current one
    let next = null;
    const rows = new Map();

    const status = h("select", { name: "status", "aria-label": "Status" },
      ["", "waiting", "running", "done", "failed", "cancelled"].map((s) =>
        h("option", { value: s, selected: s === f.status }, s || "All statuses")));
    const range = h("select", { name: "range", "aria-label": "Created" },
      Object.entries(RANGES).map(([k, v]) => h("option", { value: k, selected: k === f.range }, v)));
    const q = h("input", { type: "search", name: "q", placeholder: "Search task text, URL…", value: f.q, "aria-label": "Search" });
    const form = h("form", { class: "filters", role: "search", onsubmit: (e) => {
      e.preventDefault();
      const p = new URLSearchParams();
      if (status.value) p.set("status", status.value);
      if (range.value) p.set("range", range.value);
      if (q.value.trim()) p.set("q", q.value.trim());
      history.replaceState(null, "", "/dashboard" + (p.toString() ? "?" + p : ""));
      f.status = status.value;
      f.range = range.value;
      f.q = q.value.trim();
      cursors = [null];
      load();
    } }, status, range, q, h("button", { type: "submit" }, "Apply"));
    status.addEventListener("change", () => form.requestSubmit());
    range.addEventListener("change", () => form.requestSubmit());

    const tbody = h("tbody");
    const table = h("table", { class: "tasks" },
      h("thead", {}, h("tr", {},
        ["Status", "Task", "Started", "Duration", "Steps", "Tokens", "Credits", ""].map((c) => h("th", {}, c)))),
      tbody);
    const empty = h("div", { class: "empty", hidden: true });
    const newer = h("button", { type: "button", onclick: () => { cursors.pop(); load(); } }, "← Newer");
    const older = h("button", { type: "button", onclick: () => { cursors.push(next); load(); } }, "Older →");
    const pageNo = h("span", { class: "muted" });
    const pager = h("div", { class: "pager" }, newer, pageNo, older);
    const note = h("p", { class: "note", role: "status" });
    clear(app).append(h("div", { class: "bar" }, h("h1", {}, "Tasks"), form), note, h("div", { class: "card flush" }, table, empty), pager);

    function since() {
      return f.range ? Date.now() - RANGE_MS[f.range] : null;
    }
    function matches(t) {
      if (f.status && t.status !== f.status) return false;
      const s = since();
      if (s && t.created_at < s) return false;
      if (f.q) {
        const hay = ((t.task || "") + " " + (t.url || "")).toLowerCase();
        if (!hay.includes(f.q.toLowerCase())) return false;
      }
      return true;
    }

    function row(t) {
      const actions = h("td", { class: "actions" });
      if (isActive(t.status)) {
        actions.append(h("button", { type: "button", class: "danger small", "data-action": "cancel",
          onclick: async (e) => { e.stopPropagation(); await cancelTask(t.id, note); } }, "Cancel"));
      } else if (!t.data_deleted) {
        actions.append(h("button", { type: "button", class: "small", "data-action": "erase",
          onclick: async (e) => { e.stopPropagation(); if (await eraseTask(t.id, note)) refreshRow(t.id); } }, "Delete data"));
      } else {
        actions.append(h("span", { class: "muted small" }, "data deleted"));
      }
      const href = "/dashboard/task/" + encodeURIComponent(t.id);
      const tr = h("tr", { "data-id": t.id, "data-status": t.status },
        h("td", { "data-label": "Status" }, badge(t.status)),
        h("td", { class: "text", "data-label": "Task" },
          h("a", { href, class: "task-text" }, taskText(t)), " ", sessionMark(t),
          h("div", { class: "muted small mono" }, t.id),
          t.error ? h("div", { class: "err small" }, t.error) : null),
        h("td", { "data-label": "Started", title: t.started_at ? new Date(t.started_at).toLocaleString() : "not started" },
          t.started_at ? when(t.started_at) : (t.status === "waiting" ? "queued " + when(t.created_at) : "–")),
        h("td", { "data-label": "Duration", class: "dur" }, dur(taskDuration(t))),
        h("td", { "data-label": "Steps", class: "n" }, num(t.steps)),
        h("td", { "data-label": "Tokens", class: "n", title: num(t.prompt_tokens) + " prompt + " + num(t.completion_tokens) + " completion" },
          num(t.prompt_tokens + t.completion_tokens)),
        h("td", { "data-label": "Credits", class: "n" }, num(t.credits)),
        actions);
      tr.addEventListener("click", (e) => {
        if (e.target.closest("a,button")) return;
        location.href = href;
      });
      tr._task = t;
      return tr;
    }

    function put(t, prepend) {
      const old = rows.get(t.id);
      const tr = row(t);
      rows.set(t.id, tr);
      if (old) old.replaceWith(tr);
      else if (prepend) tbody.prepend(tr);
      else tbody.append(tr);
      empty.hidden = rows.size > 0;
      table.hidden = rows.size === 0;
    }

    async function refreshRow(id) {
      try {
        const d = await api("GET", "/dashboard/api/task/" + encodeURIComponent(id));
        put(d.summary, false);
      } catch (_) {}
    }

    function showEmpty(msg, hint) {
      clear(empty).append(h("p", { class: "big" }, msg), hint || "");
      empty.hidden = false;
      table.hidden = true;
    }

    async function load() {
      const p = new URLSearchParams({ l: "50" });
      if (f.status) p.set("status", f.status);
      const s = since();
      if (s) p.set("since", String(Math.floor(s)));
      if (f.q) p.set("q", f.q);
      const cur = cursors[cursors.length - 1];
      if (cur) p.set("after", cur);
      let d;
      try {
        d = await api("GET", "/dashboard/api/tasks?" + p);
      } catch (e) {
        showEmpty("Could not load tasks.", h("p", { class: "muted" }, e.message));
        return;
      }
      rows.clear();
      clear(tbody);
      next = d.next;
      d.items.forEach((t) => put(t, false));
      newer.disabled = cursors.length <= 1;
      older.disabled = !next;
      pageNo.textContent = "Page " + cursors.length;
      pager.hidden = cursors.length <= 1 && !next;
      if (!d.items.length) {
        if (f.status || f.range || f.q || cursors.length > 1) {
          showEmpty("No tasks match these filters.", h("p", { class: "muted" }, "Change the status, time or search above."));
        } else {
          showEmpty("No tasks yet.", h("div", { class: "muted" },
            h("p", {}, "Submit one with the Python SDK, and it appears here as it runs:"),
            h("pre", { class: "code" },
              "from smooth import SmoothClient\n" +
              "client = SmoothClient(api_key=\"…\", base_url=\"" + location.origin + "/\")\n" +
              "client.run(\"Find the price of a kettle on example.com\").result()")));
        }
      }
    }

    live((t) => {
      if (rows.has(t.id)) put(t, false);
      else if (cursors.length === 1 && matches(t)) put(t, true);
    }, load);
    // Durations of running tasks tick in the page; nothing is fetched for it.
    setInterval(() => {
      for (const tr of rows.values()) {
        const t = tr._task;
        if (t && t.status === "running") {
          const c = tr.querySelector(".dur");
          if (c) c.textContent = dur(taskDuration(t));
        }
      }
    }, 1000);
    load();
  }

  // ---- one task ----------------------------------------------------------------------------

  function taskPage() {
    const enc = encodeURIComponent(ID);
    let interactive = false;
    let liveSrc = null;
    let video = null;
    let markers = [];
    let lastKey = "";

    async function load() {
      let d, steps;
      try {
        [d, steps] = await Promise.all([
          api("GET", "/dashboard/api/task/" + enc),
          api("GET", "/dashboard/api/v1/task/" + enc + "/steps").then((r) => r.r),
        ]);
      } catch (e) {
        clear(app).append(h("div", { class: "empty" },
          h("p", { class: "big" }, "Cannot show this task."),
          h("p", { class: "muted" }, e.message),
          h("p", {}, h("a", { href: "/dashboard" }, "← All tasks"))));
        return;
      }
      render(d, steps || []);
    }

    function render(d, steps) {
      const t = d.summary;
      const resp = d.response || {};
      const note = h("p", { class: "note", role: "status" });
      const buttons = h("div", { class: "buttons" });
      if (isActive(t.status)) {
        buttons.append(h("button", { type: "button", class: "danger", "data-action": "cancel",
          onclick: async () => { if (await cancelTask(t.id, note)) load(); } }, "Cancel"));
      } else if (!t.data_deleted) {
        buttons.append(h("button", { type: "button", "data-action": "erase",
          onclick: async () => { if (await eraseTask(t.id, note)) load(); } }, "Delete data"));
      }
      buttons.append(h("a", { class: "button", href: "/dashboard/api/task/" + enc + "/trace", download: "trace-" + t.id + ".json" }, "Export trace JSON"));

      const facts = h("dl", { class: "facts" },
        fact("Status", badge(t.status)),
        fact("Created", stamp(t.created_at)),
        fact("Started", t.started_at ? stamp(t.started_at) : "not yet"),
        t.finished_at ? fact("Ended", stamp(t.finished_at)) : null,
        fact("Duration", dur(taskDuration(t))),
        fact("Steps", num(t.steps)),
        fact("Tokens", num(t.prompt_tokens) + " in · " + num(t.completion_tokens) + " out"),
        fact("Credits", num(t.credits)),
        fact("Device", resp.device || "–"),
        d.request && d.request.url ? fact("Start URL", d.request.url) : null);

      const head = h("div", { class: "task-head" },
        h("p", { class: "crumbs" }, h("a", { href: "/dashboard" }, "← Tasks")),
        h("h1", { class: "task-title" }, taskText(t), " ", sessionMark(t)),
        h("p", { class: "muted mono small" }, t.id),
        buttons, note);

      const sk = skeleton();
      lastKey = t.status + ":" + t.steps + ":" + t.data_deleted;
      const side = h("div", {});
      // The live view and the recording stay in the page across re-renders (moving an iframe
      // or a video in the document would reload it); they are rebuilt only when they change.
      let mediaKey = "none";
      const media = [];
      // Live view while it runs, with the takeover switch.
      if (resp.live_url && isActive(t.status)) {
        const base = resp.live_url + (resp.live_url.includes("?") ? "&" : "?") + "embed=true";
        const src = base + (interactive ? "&interactive=true" : "");
        mediaKey = "live:" + src;
        const frame = h("iframe", { id: "live-frame", src, title: "Live view", allow: "clipboard-read; clipboard-write" });
        liveSrc = src;
        const sw = h("input", { type: "checkbox", id: "takeover", checked: interactive, onchange: (e) => {
          interactive = e.target.checked;
          load();
        } });
        media.push(h("section", { class: "card" },
          h("div", { class: "card-head" }, h("h2", {}, "Live view"),
            h("label", { class: "switch", for: "takeover" }, sw, " Interactive takeover")),
          h("p", { class: "muted small" }, interactive
            ? "Your mouse and keyboard now drive the browser. The agent keeps running: coordinate with it."
            : "Watching. Turn on takeover to click and type in the browser."),
          frame));
      } else {
        liveSrc = null;
      }
      // The recording, with a marker per step.
      if (resp.recording_url) {
        mediaKey = "rec:" + resp.recording_url + ":" + steps.length;
        if (mediaKey !== sk.mediaKey) {
          video = h("video", { id: "recording", controls: true, preload: "metadata", src: resp.recording_url, playsinline: true });
          video.addEventListener("timeupdate", highlight);
          video.addEventListener("loadedmetadata", () => drawMarkers());
          media.push(h("section", { class: "card" }, h("h2", {}, "Recording"), video,
            steps.length ? h("div", { class: "markers", id: "markers" }) : null,
            h("p", { class: "muted small" }, steps.length ? "Click a step to jump to it; playing highlights the current step." : "No steps to mark.")));
        }
      } else if (resp.recording_url === "" && !isActive(t.status)) {
        side.append(h("section", { class: "card muted" }, h("h2", {}, "Recording"), h("p", {}, "No recording for this task (recording off, or ffmpeg missing on the worker).")));
      }
      // Output, checked against response_model.
      if (t.error) {
        side.append(h("section", { class: "card bad" }, h("h2", {}, "Error"), h("pre", { class: "wrap", id: "error" }, t.error)));
      }
      if (resp.output !== null && resp.output !== undefined) {
        const chk = d.output_check;
        side.append(h("section", { class: "card" },
          h("div", { class: "card-head" }, h("h2", {}, "Output"),
            chk ? (chk.valid ? h("span", { class: "badge s-done" }, "matches response_model")
                             : h("span", { class: "badge s-failed" }, "does not match response_model")) : null),
          chk && !chk.valid ? h("ul", { class: "err small" }, chk.errors.map((e) => h("li", {}, e))) : null,
          h("pre", { class: "json", id: "output" }, pretty(resp.output))));
      }
      if (resp.downloads_url) {
        side.append(h("section", { class: "card" }, h("h2", {}, "Downloads"),
          h("a", { class: "button", href: resp.downloads_url }, "Download files (zip)")));
      }
      const tools = toolCalls(d.events || []);
      if (tools.length) side.append(h("section", { class: "card" }, h("h2", {}, "Custom tool calls"), h("ol", { class: "tools" }, tools)));
      const shots = (d.artifacts || []).filter((a) => (a.content_type || "").startsWith("image/"));
      if (shots.length) {
        side.append(h("section", { class: "card" }, h("h2", {}, "Screenshots"),
          h("div", { class: "shots" }, shots.map((a) => h("a", { href: a.url, target: "_blank", rel: "noopener" },
            h("img", { src: a.url, alt: a.name, loading: "lazy" }))))));
      }

      markers = stepMarkers(d, steps);
      const timeline = h("section", { class: "card timeline" }, h("h2", {}, "Steps"),
        steps.length ? h("ol", { class: "steps", id: "steps" }, steps.map((s, i) => stepItem(s, i)))
          : h("p", { class: "muted" }, isActive(t.status) ? "No steps yet: the agent is starting." : "This task recorded no steps."));

      sk.head.replaceChildren(head);
      sk.facts.replaceChildren(facts);
      sk.timeline.replaceChildren(timeline);
      sk.rest.replaceChildren(side);
      if (mediaKey !== sk.mediaKey) {
        sk.media.replaceChildren(...media);
        sk.mediaKey = mediaKey;
      }
      if (mediaKey === "none") video = null;
      const req = sk.request.querySelector("details");
      const open = req ? req.open : false;
      sk.request.replaceChildren(h("section", { class: "card" }, h("details", { open },
        h("summary", {}, "Request"), h("pre", { class: "json" }, pretty(d.request)))));
      drawMarkers();
    }

    let sk = null;
    function skeleton() {
      if (sk && sk.side.isConnected) return sk;
      const mk = () => h("div", {});
      sk = { head: mk(), facts: mk(), timeline: mk(), media: mk(), rest: mk(), request: mk(), mediaKey: null };
      sk.side = h("div", { class: "side" }, sk.media, sk.rest);
      clear(app).append(sk.head, sk.facts, h("div", { class: "grid2" }, sk.timeline, sk.side), sk.request);
      return sk;
    }

    function fact(k, v) {
      return h("div", {}, h("dt", {}, k), h("dd", {}, v));
    }

    function toolCalls(events) {
      const answers = new Map();
      events.filter((e) => e.direction === "in" && e.name === "tool_call").forEach((e) => answers.set(e.id, e));
      return events.filter((e) => e.direction === "out" && e.name === "tool_call").map((e) => {
        const a = answers.get(e.id);
        const p = e.payload || {};
        return h("li", {}, h("strong", { class: "mono" }, p.name || "tool"),
          h("pre", { class: "json small" }, pretty(p.input)),
          a ? h("div", {}, h("span", { class: "muted small" }, "answer (" + ((a.payload || {}).code || "?") + ")"),
            h("pre", { class: "json small" }, pretty((a.payload || {}).output))) : h("p", { class: "muted small" }, "no answer yet"));
      });
    }

    // When each step began (ms), and the task's start and end: the recording runs from about
    // the browser's start to the task's end, so markers are placed back from the video's end
    // (its start lags the task's start by the browser launch), or from the start while the
    // duration is unknown.
    let span = { start: 0, end: 0, at: [] };
    function stepMarkers(d, steps) {
      const at = new Map((d.step_times || []).map((x) => [x.step, x.at]));
      span = {
        start: d.summary.started_at || d.summary.created_at,
        end: d.summary.finished_at || 0,
        at: steps.map((s) => (at.has(s.step) ? at.get(s.step) - (s.step_ms || 0) : null)),
      };
      return positions();
    }
    function positions() {
      const dur = video ? video.duration : NaN;
      return span.at.map((t) => {
        if (t === null) return null;
        if (span.end && isFinite(dur) && dur > 0) return Math.min(dur, Math.max(0, dur - (span.end - t) / 1000));
        return Math.max(0, (t - span.start) / 1000);
      });
    }

    function seekTo(i) {
      if (!video || markers[i] === null || markers[i] === undefined) return;
      const d = video.duration;
      let t = markers[i];
      if (isFinite(d) && d > 0) t = Math.min(t, Math.max(0, d - 0.01));
      video.currentTime = t;
      highlight();
    }

    function drawMarkers() {
      const box = document.getElementById("markers");
      if (!box || !video) return;
      markers = positions();
      clear(box);
      const d = video.duration;
      markers.forEach((m, i) => {
        if (m === null) return;
        const left = isFinite(d) && d > 0 ? Math.min(100, (m / d) * 100) : 0;
        const b = h("button", { type: "button", class: "marker",
          title: "Step " + (i + 1) + " at " + m.toFixed(1) + " s", "aria-label": "Step " + (i + 1), onclick: () => seekTo(i) }, String(i + 1));
        b.style.left = left.toFixed(2) + "%"; // CSSOM, allowed by the page's CSP
        box.append(b);
      });
    }

    function highlight() {
      if (!video) return;
      const now = video.currentTime;
      let cur = -1;
      markers.forEach((m, i) => {
        if (m !== null && m <= now + 0.01) cur = i;
      });
      document.querySelectorAll("#steps > li").forEach((li, i) => li.classList.toggle("current", i === cur));
      document.querySelectorAll("#markers .marker").forEach((b) => b.classList.toggle("current", b.textContent === String(cur + 1)));
    }

    function stepItem(s, i) {
      const acts = (s.actions || []).map((a) => h("li", {},
        h("span", { class: "mono act" }, a.name || "?"),
        a.args && Object.keys(a.args).length ? h("code", { class: "args" }, JSON.stringify(a.args)) : null,
        a.result !== undefined && a.result !== null ? h("div", { class: "result" }, "→ " + (typeof a.result === "string" ? a.result : JSON.stringify(a.result))) : null));
      const li = h("li", { "data-step": s.step },
        h("div", { class: "step-head" },
          h("button", { type: "button", class: "step-no", title: "Jump to this step in the recording", onclick: () => seekTo(i) }, "Step " + (s.step || i + 1)),
          h("span", { class: "muted small" },
            num(s.prompt_tokens) + " in · " + num(s.completion_tokens) + " out tokens · model " + dur(s.llm_ms) +
            " · step " + dur(s.step_ms) + (s.retries ? " · " + s.retries + " retries" : "") +
            (typeof s.cost_usd === "number" ? " · $" + s.cost_usd.toFixed(s.cost_usd < 0.01 ? 4 : 2) : ""))),
        s.url ? h("div", { class: "small mono url" }, s.url) : null,
        h("details", { class: "view" }, h("summary", {}, "What the model saw"),
          h("p", { class: "small" }, "Page ", h("span", { class: "mono" }, s.url || "(none)"), ", a page view of " + num(s.view_chars) + " characters" +
            (s.model ? " sent to " + s.model : "") + "."),
          s.view ? h("pre", { class: "wrap small" }, s.view) : null),
        s.reasoning ? h("p", { class: "reasoning" }, s.reasoning) : null,
        acts.length ? h("ul", { class: "acts" }, acts) : null,
        s.error ? h("p", { class: "err small" }, s.error) : null);
      li.addEventListener("click", (e) => {
        if (e.target.closest("a,button,summary,details")) return;
        seekTo(i);
      });
      return li;
    }

    let pending = null;
    live((t) => {
      if (t.id !== ID) return;
      const key = t.status + ":" + t.steps + ":" + t.data_deleted;
      if (key === lastKey) return;
      lastKey = key;
      clearTimeout(pending);
      pending = setTimeout(load, 200);
    }, load);
    load();
  }

  // ---- resources ---------------------------------------------------------------------------

  function resourcesPage() {
    const note = h("p", { class: "note", role: "status" });
    const profiles = h("section", { class: "card", id: "profiles" });
    const files = h("section", { class: "card", id: "files" });
    const exts = h("section", { class: "card", id: "extensions" });
    clear(app).append(h("h1", {}, "Resources"), note, h("div", { class: "grid3" }, files, exts, profiles));

    function list(items, cols, del) {
      if (!items.length) return null;
      return h("table", { class: "plain" }, h("tbody", {}, items.map((it) => h("tr", { "data-id": it.id },
        cols.map((c) => h("td", { "data-label": c[0] }, c[1](it))),
        h("td", { class: "actions" }, h("button", { type: "button", class: "danger small", onclick: () => del(it) }, "Delete"))))));
    }

    async function remove(path, what) {
      if (!confirm("Delete " + what + "?")) return;
      try {
        await api("DELETE", path);
        flash(note, "Deleted " + what + ".", "ok");
      } catch (e) {
        flash(note, "Delete failed: " + e.message, "bad");
      }
      load();
    }

    function uploader(path, accept, label) {
      const input = h("input", { type: "file", name: "file", accept, required: true, "aria-label": label });
      return h("form", { class: "upload", onsubmit: async (e) => {
        e.preventDefault();
        if (!input.files.length) return;
        const fd = new FormData();
        fd.append("file", input.files[0]);
        try {
          await api("POST", path, fd, true);
          flash(note, "Uploaded " + input.files[0].name + ".", "ok");
          input.value = "";
        } catch (err) {
          flash(note, "Upload failed: " + err.message, "bad");
        }
        load();
      } }, input, h("button", { type: "submit", class: "primary" }, "Upload"));
    }

    async function load() {
      let f, x, p;
      try {
        [f, x, p] = await Promise.all([
          api("GET", "/dashboard/api/files"),
          api("GET", "/dashboard/api/v1/extension"),
          api("GET", "/dashboard/api/v1/profile"),
        ]);
      } catch (e) {
        flash(note, "Could not load resources: " + e.message, "bad");
        return;
      }
      clear(files).append(h("h2", {}, "Files"),
        h("p", { class: "muted small" }, "Files a task can use (pass their ids in files=[…])."),
        uploader("/dashboard/api/v1/file", "", "File to upload"),
        list(f.items, [["Name", (i) => h("span", {}, i.name, h("div", { class: "muted small mono" }, i.id))],
          ["Size", (i) => bytes(i.size)], ["Uploaded", (i) => when(i.created_at)]],
          (i) => remove("/dashboard/api/v1/file/" + encodeURIComponent(i.id), "file " + i.name)) ||
          h("p", { class: "empty-small" }, "No files uploaded."));
      clear(exts).append(h("h2", {}, "Extensions"),
        h("p", { class: "muted small" }, "Chrome extensions (.zip or .crx) to load into a task's browser."),
        uploader("/dashboard/api/v1/extension", ".zip,.crx", "Extension to upload"),
        list(x.r, [["Name", (i) => h("span", {}, i.file_name, h("div", { class: "muted small mono" }, i.id))],
          ["Uploaded", (i) => when(i.creation_time * (i.creation_time < 1e11 ? 1000 : 1))]],
          (i) => remove("/dashboard/api/v1/extension/" + encodeURIComponent(i.id), "extension " + i.file_name)) ||
          h("p", { class: "empty-small" }, "No extensions uploaded."));
      const pid = h("input", { type: "text", name: "id", placeholder: "new profile id (optional)", "aria-label": "Profile id" });
      clear(profiles).append(h("h2", {}, "Profiles"),
        h("p", { class: "muted small" }, "Browser profiles keep cookies and storage between tasks."),
        h("form", { class: "upload", onsubmit: async (e) => {
          e.preventDefault();
          try {
            await api("POST", "/dashboard/api/v1/profile", pid.value.trim() ? { id: pid.value.trim() } : {});
            flash(note, "Profile created.", "ok");
          } catch (err) {
            flash(note, "Could not create the profile: " + err.message, "bad");
          }
          load();
        } }, pid, h("button", { type: "submit", class: "primary" }, "Create")),
        list(p.r, [["Profile", (i) => h("span", { class: "mono" }, i.id)],
          ["Cookies", (i) => num(i.cookie_count) + " cookies · " + (i.cookie_domains || []).length + " domains"],
          ["Size", (i) => bytes(i.profile_size_bytes)],
          ["Saved", (i) => i.last_saved_at ? when(i.last_saved_at * (i.last_saved_at < 1e11 ? 1000 : 1)) : "never"]],
          (i) => remove("/dashboard/api/v1/profile/" + encodeURIComponent(i.id), "profile " + i.id)) ||
          h("p", { class: "empty-small" }, "No profiles yet."));
    }
    load();
  }

  // ---- health --------------------------------------------------------------------------------

  function healthPage() {
    async function load() {
      let d;
      try {
        d = await api("GET", "/dashboard/api/health");
      } catch (e) {
        clear(app).append(h("div", { class: "empty" }, h("p", { class: "big" }, "Cannot read health."), h("p", { class: "muted" }, e.message)));
        return;
      }
      const stat = (label, value, hint, cls) => h("div", { class: "stat " + (cls || "") }, h("div", { class: "v" }, value), h("div", { class: "k" }, label), hint ? h("div", { class: "muted small" }, hint) : null);
      const oldest = d.queue_depth > 0 ? dur(d.oldest_waiting_ms) : "–";
      const by = d.tasks_by_status || {};
      clear(app).append(
        h("div", { class: "bar" }, h("h1", {}, "Health"), h("span", { class: "muted small" }, "Database: " + d.backend + " · same numbers as /metrics · updated " + new Date().toLocaleTimeString())),
        h("div", { class: "stats" },
          stat("Queue depth", num(d.queue_depth), "tasks waiting for a worker", d.queue_depth > 0 ? "warn" : ""),
          stat("Oldest waiting", oldest, "time the oldest task has waited", d.oldest_waiting_ms > 60000 ? "bad" : ""),
          stat("Running", num(by.running || 0), "tasks and sessions"),
          stat("Browsers", d.browsers === null ? "–" : num(d.browsers), "Chromium processes in this process"),
          stat("Browser crashes", d.browser_crashes === null ? "–" : num(d.browser_crashes), "since this process started", d.browser_crashes > 0 ? "bad" : "")),
        h("div", { class: "grid2" },
          h("section", { class: "card" }, h("h2", {}, "Running tasks per worker"),
            d.running_per_worker.length
              ? h("table", { class: "plain" }, h("tbody", {}, d.running_per_worker.map((w) => h("tr", {}, h("td", { class: "mono" }, w.worker), h("td", { class: "n" }, num(w.running))))))
              : h("p", { class: "empty-small" }, "No task is running.")),
          h("section", { class: "card" }, h("h2", {}, "Tasks by status (all keys)"),
            h("table", { class: "plain" }, h("tbody", {}, ["waiting", "running", "done", "failed", "cancelled"].map((s) =>
              h("tr", {}, h("td", {}, badge(s)), h("td", { class: "n" }, num(by[s] || 0))))))),
          h("section", { class: "card" }, h("h2", {}, "Your recent failures"),
            d.recent_failures.length
              ? h("ul", { class: "fails" }, d.recent_failures.map((t) => h("li", {},
                h("a", { href: "/dashboard/task/" + encodeURIComponent(t.id) }, taskText(t)),
                h("div", { class: "err small" }, t.error || "(no error text)"),
                h("div", { class: "muted small" }, when(t.finished_at || t.created_at)))))
              : h("p", { class: "empty-small" }, "No failed tasks."))));
    }
    let timer = null;
    live(() => {
      if (timer) return;
      timer = setTimeout(() => { timer = null; load(); }, 2000);
    }, load);
    load();
  }

  const pages = { tasks: tasksPage, task: taskPage, resources: resourcesPage, health: healthPage };
  if (pages[PAGE]) pages[PAGE]();
})();
