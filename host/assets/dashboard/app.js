// The wasmvisor dashboard: plain DOM code, no framework, no build step.
//
// Data flow: the children of one API page ("window", up to 10,000) live in
// a Map; only the rows of the visible table page exist in the DOM (id ->
// <tr>). Events from /v1/events are queued and applied once per animation
// frame; touched rows are patched in place and the touched children are
// re-read with GET /v1/children/{id}, coalesced. Every data request carries
// the token from sessionStorage, if there is one.
"use strict";

(() => {
  const TOKEN_KEY = "wasmvisor.token";
  const PAGE_ROWS = 200; // table rows rendered at once
  const API_PAGE = 10000; // the API's largest page: one window
  const EVENTS_PER_CHILD = 50;
  const EVENTS_PER_PLUGIN = 50;
  const RATE_POINTS = 150; // 5 minutes at one sample per 2 s
  const METRICS_MS = 2000;
  const REFRESH_BATCH = 64; // ids re-read per refresh round
  const REFRESH_PARALLEL = 6;

  const $ = (id) => document.getElementById(id);

  // Builds an element: attrs are properties, except "class", "data-*",
  // "aria-*" and others that go through setAttribute.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === "class") e.className = v;
        else if (k === "text") e.textContent = v;
        else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role" || k === "title" || k === "scope" || k === "colspan") e.setAttribute(k, v);
        else e[k] = v;
      }
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  const S = {
    gen: 0, // bumped on every (re)start; loops of an older one stop
    authState: "unknown", // "ok" | "needed"
    children: new Map(), // id -> child (the window)
    rows: new Map(), // id -> <tr>, the rendered page only
    cursors: [null], // `after` of each window visited; last is current
    windowFull: false,
    windowLast: null,
    tree: { groups: [], children: [] },
    view: [], // [{section}|{id, depth}] after filter and sort
    page: 0,
    orderDirty: true,
    lastRender: 0,
    renderTimer: null,
    queue: [],
    frameScheduled: false,
    refresh: new Set(), // ids to re-read
    refreshRunning: false,
    childEvents: new Map(), // id -> [{kind, data, at}], oldest first
    pluginEvents: new Map(), // plugin -> [{kind, data, at}], oldest first
    recentLoaded: false,
    liveBeforeRecent: [],
    plugins: new Map(), // name -> info
    pluginRows: new Map(), // name -> <tr>
    selected: null,
    detailChild: null,
    samples: [], // metrics samples {t, calls, casts, restarts, children, running}
    statusCounts: null,
    eventsAbort: null,
    everConnected: false,
    timers: {},
  };

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
    toString() {
      return this.status ? `${this.status} ${this.code}: ${this.message}` : `${this.code}: ${this.message}`;
    }
  }

  function authHeaders() {
    const h = {};
    const t = sessionStorage.getItem(TOKEN_KEY);
    if (t) h.Authorization = "Bearer " + t;
    return h;
  }

  // One request to the API; resolves to the parsed JSON (or text with
  // `text: true`), rejects with an ApiError. A 401 also asks for a token.
  async function api(method, path, body, opts) {
    const headers = authHeaders();
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (e) {
      throw new ApiError(0, "network", "cannot reach the host (" + e.message + ")");
    }
    // The host answers again: a connection error shown earlier is over.
    if (S.bannerNetwork) showBanner("");
    const text = await res.text();
    if (res.status === 401) {
      needToken();
      throw new ApiError(401, "unauthorized", "the host refused the token");
    }
    if (opts && opts.text && res.ok) return text;
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = text;
    }
    if (!res.ok) {
      const code = data && typeof data === "object" && data.error ? data.error : "http_" + res.status;
      const msg = data && typeof data === "object" && data.message ? data.message : String(text || res.statusText);
      throw new ApiError(res.status, code, msg);
    }
    return data;
  }

  const enc = encodeURIComponent;

  // Runs an async job and shows what went wrong, so that no promise is
  // left rejected (which the console would report).
  function run(promise) {
    promise.catch((e) => {
      if (e instanceof ApiError && e.status === 401) return;
      showBanner(String(e));
    });
  }

  function showBanner(text) {
    S.bannerNetwork = text.startsWith("network:");
    const b = $("banner");
    b.textContent = text;
    b.hidden = !text;
  }

  // ---------------------------------------------------------------- token

  function needToken() {
    if (S.authState === "needed") return;
    const hadToken = !!sessionStorage.getItem(TOKEN_KEY);
    sessionStorage.removeItem(TOKEN_KEY);
    S.authState = "needed";
    stopAll();
    clearData();
    $("app").hidden = true;
    showBanner("");
    $("auth").hidden = false;
    $("forget-token").hidden = true;
    const err = $("token-error");
    if (hadToken) {
      err.textContent = "The host refused that token (401 unauthorized). Check it and enter it again.";
      err.hidden = false;
    } else {
      err.hidden = true;
    }
    setConn("locked", "token needed");
    const input = $("token");
    input.value = "";
    input.focus();
  }

  function onTokenSubmit(ev) {
    ev.preventDefault();
    const value = $("token").value.trim();
    if (!value) {
      const err = $("token-error");
      err.textContent = "Enter the host's token.";
      err.hidden = false;
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    boot();
  }

  function forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    S.authState = "unknown";
    needToken();
  }

  // ---------------------------------------------------------------- boot

  function stopAll() {
    S.gen++;
    for (const t of Object.values(S.timers)) clearTimeout(t);
    S.timers = {};
    if (S.eventsAbort) S.eventsAbort.abort();
    S.eventsAbort = null;
  }

  function clearData() {
    S.children.clear();
    S.rows.clear();
    S.view = [];
    S.queue = [];
    S.refresh.clear();
    S.childEvents.clear();
    S.pluginEvents.clear();
    S.plugins.clear();
    S.pluginRows.clear();
    S.samples = [];
    S.statusCounts = null;
    S.recentLoaded = false;
    S.liveBeforeRecent = [];
    S.everConnected = false;
    S.selected = null;
    S.detailChild = null;
    $("children-body").replaceChildren();
    $("plugins-body").replaceChildren();
    $("detail").hidden = true;
    $("summary").replaceChildren();
  }

  function boot() {
    stopAll();
    clearData();
    const gen = S.gen;
    S.authState = "unknown";
    $("auth").hidden = true;
    $("app").hidden = false;
    $("forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
    showBanner("");
    // The stream first, so that nothing that happens while the rest loads
    // is missed; the recent events then fill in what came before.
    eventsLoop(gen);
    run(
      (async () => {
        await Promise.all([loadWindow(gen), loadTree(gen), loadPlugins(gen)]);
        if (gen !== S.gen) return;
        S.authState = "ok";
        await loadRecent(gen);
        if (gen !== S.gen) return;
        every(gen, "metrics", METRICS_MS, pollMetrics);
        every(gen, "plugins", 10000, loadPlugins);
        every(gen, "window", () => 5000 + S.children.size, loadWindow);
        every(gen, "ages", 1000, () => updateAges());
        pollMetrics(gen);
      })()
    );
  }

  // Calls `fn(gen)` every `ms` (a number or a function giving one) while
  // `gen` is current; one call at a time.
  function every(gen, name, ms, fn) {
    const tick = async () => {
      if (gen !== S.gen) return;
      try {
        await fn(gen);
      } catch (e) {
        if (!(e instanceof ApiError && e.status === 401)) showBanner(String(e));
      }
      if (gen !== S.gen) return;
      S.timers[name] = setTimeout(tick, typeof ms === "function" ? ms() : ms);
    };
    S.timers[name] = setTimeout(tick, typeof ms === "function" ? ms() : ms);
  }

  const cursor = () => S.cursors[S.cursors.length - 1];

  // Whether `id` belongs to the window of children this page holds.
  function inWindow(id) {
    const after = cursor();
    if (after !== null && id <= after) return false;
    return !S.windowFull || id <= S.windowLast;
  }

  // (Re)reads the window and merges it: changed children are patched,
  // new and vanished ones change the order.
  async function loadWindow(gen) {
    const after = cursor();
    const q = "/v1/children?limit=" + API_PAGE + (after !== null ? "&after=" + enc(after) : "");
    const list = await api("GET", q);
    if (gen !== S.gen || after !== cursor()) return;
    S.authState = "ok";
    S.windowFull = list.length === API_PAGE;
    S.windowLast = list.length ? list[list.length - 1].id : null;
    const seen = new Set();
    for (const c of list) {
      seen.add(c.id);
      const old = S.children.get(c.id);
      if (!old) {
        S.children.set(c.id, c);
        S.orderDirty = true;
      } else if (JSON.stringify(old) !== JSON.stringify(c)) {
        S.children.set(c.id, c);
        touched(c.id, old);
      }
    }
    for (const id of [...S.children.keys()]) {
      if (!seen.has(id)) removeChild(id);
    }
    updateWindowNav();
    scheduleRender(true);
  }

  function updateWindowNav() {
    const nav = $("window-nav");
    const paged = S.cursors.length > 1 || S.windowFull;
    nav.hidden = !paged;
    if (!paged) return;
    $("window-prev").disabled = S.cursors.length <= 1;
    $("window-next").disabled = !S.windowFull;
    const first = S.cursors.length > 1 ? "after " + cursor() : "from the first id";
    $("window-info").textContent = `API page ${S.cursors.length}: ${S.children.size} children ${first}` + (S.windowLast ? ` to ${S.windowLast}` : "") + " (search and sort apply to this page)";
  }

  function moveWindow(delta) {
    if (delta > 0) {
      if (!S.windowFull) return;
      S.cursors.push(S.windowLast);
    } else {
      if (S.cursors.length <= 1) return;
      S.cursors.pop();
    }
    S.children.clear();
    S.page = 0;
    S.orderDirty = true;
    run(loadWindow(S.gen));
  }

  async function loadTree(gen) {
    const t = await api("GET", "/v1/tree");
    if (gen !== S.gen) return;
    // Only the config structure is kept; dynamic children come from the
    // window (the tree lists every one of them, the window only its own).
    S.tree = { groups: t.groups || [], children: (t.children || []).map((c) => c.id) };
    S.treeLoadedAt = Date.now();
    S.orderDirty = true;
    scheduleRender(true);
  }

  // Re-reads the tree at most every 3 s (group restart counts change with
  // every member restart).
  function refreshTreeSoon() {
    if (S.timers.tree) return;
    const gen = S.gen;
    const wait = Math.max(0, 3000 - (Date.now() - (S.treeLoadedAt || 0)));
    S.timers.tree = setTimeout(() => {
      delete S.timers.tree;
      run(loadTree(gen));
    }, wait);
  }

  // ---------------------------------------------------------------- events

  async function eventsLoop(gen) {
    let delay = 500;
    while (gen === S.gen) {
      const ctrl = new AbortController();
      S.eventsAbort = ctrl;
      try {
        const res = await fetch("/v1/events", { headers: authHeaders(), signal: ctrl.signal, cache: "no-store" });
        if (res.status === 401) {
          needToken();
          return;
        }
        if (!res.ok || !res.body) throw new Error("HTTP " + res.status);
        setConn("live", "live");
        if (S.everConnected) resync(gen); // events were missed while away
        S.everConnected = true;
        delay = 500;
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          // Normalise line ends, keeping a trailing "\r" that may be half
          // of a "\r\n" split across chunks.
          const keep = buf.endsWith("\r") ? "\r" : "";
          if (keep) buf = buf.slice(0, -1);
          buf = buf.replace(/\r\n?/g, "\n");
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            parseSseBlock(buf.slice(0, i));
            buf = buf.slice(i + 2);
          }
          buf += keep;
        }
      } catch (_) {
        // An abort (token change) or a dropped connection; the loop decides.
      }
      if (gen !== S.gen) return;
      setConn("down", `reconnecting in ${Math.round(delay / 100) / 10} s`);
      await new Promise((r) => {
        S.timers.reconnect = setTimeout(r, delay);
      });
      delay = Math.min(delay * 2, 15000);
    }
  }

  function parseSseBlock(block) {
    let kind = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const c = line.indexOf(":");
      const field = c < 0 ? line : line.slice(0, c);
      let value = c < 0 ? "" : line.slice(c + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") kind = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    let parsed;
    try {
      parsed = JSON.parse(data.join("\n"));
    } catch (_) {
      return;
    }
    if (kind === "topic") return; // published messages are not shown here
    if (!S.recentLoaded) S.liveBeforeRecent.push(JSON.stringify(parsed));
    S.queue.push({ kind, data: parsed, at: Date.now() });
    scheduleFrame();
  }

  function setConn(state, text) {
    const c = $("conn");
    c.dataset.state = state;
    c.textContent = text;
  }

  // After a reconnect or a `lagged` event: re-read what events would have said.
  function resync(gen) {
    run(loadWindow(gen));
    run(loadPlugins(gen));
    refreshTreeSoon();
  }

  function scheduleFrame() {
    if (S.frameScheduled) return;
    S.frameScheduled = true;
    // requestAnimationFrame stops in a hidden tab; the timeout keeps the
    // queue from growing without bound there.
    const fire = () => {
      if (!S.frameScheduled) return;
      S.frameScheduled = false;
      applyEvents();
    };
    requestAnimationFrame(fire);
    setTimeout(fire, 500);
  }

  function record(map, key, ev, cap) {
    let list = map.get(key);
    if (!list) map.set(key, (list = []));
    list.push(ev);
    if (list.length > cap) list.splice(0, list.length - cap);
  }

  // Applies every queued event: patches the children it names, records it
  // for the detail and plugin history, and schedules what must be re-read.
  function applyEvents() {
    const batch = S.queue;
    S.queue = [];
    let pluginsChanged = false;
    for (const ev of batch) {
      const d = ev.data;
      const id = d.id;
      switch (ev.kind) {
        case "child_started":
        case "child_exited":
        case "child_restarted":
        case "child_backoff":
        case "child_failed":
        case "child_removed":
        case "child_checkpoint_dropped":
        case "child_hibernated":
        case "child_woken": {
          record(S.childEvents, id, ev, EVENTS_PER_CHILD);
          patchChild(ev.kind, d, ev.at);
          if (S.selected === id) appendDetailEvent(ev);
          break;
        }
        case "group_escalated":
          refreshTreeSoon();
          S.refresh.add("*window*");
          break;
        case "plugin_loaded":
        case "plugin_reloaded":
        case "plugin_removed":
        case "reload_failed":
          record(S.pluginEvents, d.plugin, ev, EVENTS_PER_PLUGIN);
          pluginsChanged = true;
          // Its children change version or status without events of their own.
          if (ev.kind !== "plugin_loaded") S.refresh.add("*window*");
          break;
        case "lagged":
          resync(S.gen);
          break;
        default:
          break;
      }
    }
    if (pluginsChanged) {
      renderPlugins();
      loadPluginsSoon();
    }
    scheduleRender(false);
    pumpRefresh();
  }

  // What an event says about a child, applied before the child is re-read.
  function patchChild(kind, d, at) {
    const id = d.id;
    if (kind === "child_removed") {
      removeChild(id);
      return;
    }
    let c = S.children.get(id);
    if (!c) {
      if (kind !== "child_started" || !inWindow(id)) return;
      c = { id, plugin: d.plugin, status: "starting", activated: true, version: d.version, restarts: 0, last_exit: null, restart: "", args: null, queued: 0, memory_bytes: 0, restored: false, started_at_ms: at, backoff_until_ms: null };
      S.children.set(id, c);
      S.orderDirty = true;
    }
    const old = Object.assign({}, c);
    switch (kind) {
      case "child_started":
        c.status = "running";
        c.version = d.version;
        break;
      case "child_exited":
        c.last_exit = d.reason;
        c.status = "restarting";
        break;
      case "child_restarted":
        c.status = "running";
        c.restarts = d.restarts;
        c.version = d.version;
        c.started_at_ms = at;
        break;
      case "child_backoff":
        c.status = "backoff";
        c.last_exit = d.reason;
        c.backoff_until_ms = at + d.delay_ms;
        break;
      case "child_failed":
        c.status = "failed";
        c.last_exit = d.reason;
        break;
      case "child_hibernated":
        c.status = "hibernated";
        break;
      case "child_woken":
        c.status = "running";
        break;
      default:
        break;
    }
    touched(id, old);
    S.refresh.add(id);
  }

  function removeChild(id) {
    if (!S.children.delete(id)) return;
    const tr = S.rows.get(id);
    if (tr) {
      tr.remove();
      S.rows.delete(id);
    }
    S.orderDirty = true;
    if (S.selected === id) renderDetailGone(id);
  }

  const SORT_FIELDS = { restarts: "restarts", queued: "queued", memory: "memory_bytes" };

  // A child changed (old: its previous fields): patch its row and the
  // detail; a change of the sort key or of the group means a new order.
  function touched(id, old) {
    const c = S.children.get(id);
    if (!c) return;
    const tr = S.rows.get(id);
    if (tr) fillRow(tr, c);
    const key = SORT_FIELDS[$("sort").value];
    if (old && ((key && old[key] !== c[key]) || old.group !== c.group || old.plugin !== c.plugin)) S.orderDirty = true;
    if (c.group) refreshTreeSoon();
    if (S.selected === id) renderDetail(c);
  }

  // Re-reads touched children, a few at a time; a flood of them re-reads
  // the whole window instead.
  async function pumpRefresh() {
    if (S.refreshRunning) return;
    S.refreshRunning = true;
    const gen = S.gen;
    try {
      while (S.refresh.size && gen === S.gen) {
        if (S.refresh.has("*window*") || S.refresh.size > 500) {
          S.refresh.clear();
          await loadWindow(gen);
        } else {
          const ids = [...S.refresh].slice(0, REFRESH_BATCH);
          for (const id of ids) S.refresh.delete(id);
          for (let i = 0; i < ids.length; i += REFRESH_PARALLEL) {
            await Promise.all(ids.slice(i, i + REFRESH_PARALLEL).map((id) => refreshChild(gen, id)));
          }
        }
        // Let events that came meanwhile coalesce before the next round.
        await new Promise((r) => setTimeout(r, 250));
      }
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) showBanner(String(e));
    } finally {
      S.refreshRunning = false;
    }
  }

  async function refreshChild(gen, id) {
    let c;
    try {
      c = await api("GET", "/v1/children/" + enc(id));
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        if (gen === S.gen) removeChild(id);
        return;
      }
      throw e;
    }
    if (gen !== S.gen) return;
    const old = S.children.get(id);
    if (!old && !inWindow(id)) {
      if (S.selected === id) renderDetail(c);
      return;
    }
    if (!old) S.orderDirty = true;
    S.children.set(id, c);
    touched(id, old);
    if (!old) scheduleRender(false);
  }

  // ---------------------------------------------------------------- recent events

  async function loadRecent(gen) {
    const list = await api("GET", "/v1/events/recent");
    if (gen !== S.gen) return;
    // Drop the events the stream delivered too (it was open before this
    // answer was made).
    const drop = new Set();
    const strings = list.map((e) => JSON.stringify(e));
    for (const s of S.liveBeforeRecent) {
      for (let i = strings.length - 1; i >= 0; i--) {
        if (!drop.has(i) && strings[i] === s) {
          drop.add(i);
          break;
        }
      }
    }
    S.recentLoaded = true;
    S.liveBeforeRecent = [];
    const byChild = new Map();
    const byPlugin = new Map();
    list.forEach((d, i) => {
      if (drop.has(i) || !d || !d.type) return;
      const ev = { kind: d.type, data: d, at: null };
      if (d.plugin && d.type.startsWith("plugin_") || d.type === "reload_failed") record(byPlugin, d.plugin, ev, EVENTS_PER_PLUGIN);
      else if (d.id && d.type.startsWith("child_")) record(byChild, d.id, ev, EVENTS_PER_CHILD);
    });
    // Older events go before the live ones already recorded.
    for (const [k, v] of byChild) S.childEvents.set(k, v.concat(S.childEvents.get(k) || []).slice(-EVENTS_PER_CHILD));
    for (const [k, v] of byPlugin) S.pluginEvents.set(k, v.concat(S.pluginEvents.get(k) || []).slice(-EVENTS_PER_PLUGIN));
    renderPlugins();
    if (S.selected) renderDetailEvents(S.selected);
  }

  // ---------------------------------------------------------------- formatting

  function bytes(n) {
    if (n === null || n === undefined) return "—";
    if (n === 0) return "0";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let v = n;
    while (v >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 1 : 0)) + " " + units[i];
  }

  function duration(ms) {
    if (ms < 0) ms = 0;
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m " + (s % 60) + "s";
    const h = Math.floor(m / 60);
    if (h < 24) return h + "h " + (m % 60) + "m";
    return Math.floor(h / 24) + "d " + (h % 24) + "h";
  }

  function age(c) {
    return c.started_at_ms ? duration(Date.now() - c.started_at_ms) : "—";
  }

  // An exit reason is "normal"/"shutdown"/"noproc" or {code: text}.
  function exitParts(reason) {
    if (reason === null || reason === undefined) return null;
    if (typeof reason === "string") return { code: reason, message: "", backtrace: "" };
    const code = Object.keys(reason)[0];
    const text = String(reason[code] ?? "");
    const i = text.indexOf("wasm backtrace:");
    const message = (i >= 0 ? text.slice(0, i) : text).trim();
    const backtrace = i >= 0 ? text.slice(i).trimEnd() : "";
    return { code, message, backtrace };
  }

  // One line for the table: a Rust panic ("panicked at FILE:LINE:COL:\nMSG
  // (wasm trap: …)") reads best as its message and where it happened.
  function exitShort(reason) {
    const p = exitParts(reason);
    if (!p) return "";
    if (!p.message) return p.code;
    let text = p.message;
    const m = /panicked at (\S+?):?\n([\s\S]*)$/.exec(text);
    if (m) text = m[2].replace(/\s*\(wasm trap: [^)]*\)\s*$/, "") + " · at " + m[1];
    text = text.replace(/\s+/g, " ").trim();
    return p.code + ": " + (text.length > 160 ? text.slice(0, 157) + "…" : text);
  }

  function time(at) {
    return at ? new Date(at).toLocaleTimeString() : "earlier";
  }

  function eventSummary(ev) {
    const d = ev.data;
    switch (ev.kind) {
      case "child_started":
        return `started (${d.plugin} ${d.version})`;
      case "child_exited":
        return "exited: " + exitShort(d.reason);
      case "child_restarted":
        return `restarted (#${d.restarts}, ${d.version})`;
      case "child_backoff":
        return `backoff ${d.delay_ms} ms after ` + exitShort(d.reason);
      case "child_failed":
        return "failed after " + exitShort(d.reason);
      case "child_removed":
        return "removed";
      case "child_checkpoint_dropped":
        return "checkpoint dropped (started from args)";
      case "plugin_loaded":
        return `loaded ${d.version} (${fmtMs(d.compile_ms)}${d.cached ? ", cached" : ""})`;
      case "plugin_reloaded":
        return `reloaded to ${d.version}: ${d.instances} moved in ${fmtMs(d.ms)}` + (d.failed && d.failed.length ? `, ${d.failed.length} stayed` : "");
      case "plugin_removed":
        return `removed (${d.instances} waiting)`;
      case "reload_failed":
        return "reload failed: " + d.error;
      default:
        return ev.kind;
    }
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return "—";
    return (ms < 10 ? ms.toFixed(1) : Math.round(ms)) + " ms";
  }

  // ---------------------------------------------------------------- table

  // The sections of the table, in order: config groups (depth-first, each
  // with its direct child members), the config's top-level children, the
  // dynamic children; or one section per plugin.
  function sections() {
    const out = [];
    const placed = new Set();
    if ($("group-by-plugin").checked) {
      const byPlugin = new Map();
      for (const c of S.children.values()) {
        if (!byPlugin.has(c.plugin)) byPlugin.set(c.plugin, []);
        byPlugin.get(c.plugin).push(c.id);
      }
      for (const name of [...byPlugin.keys()].sort()) {
        out.push({ key: "plugin:" + name, kind: "plugin", title: name, depth: 0, ids: byPlugin.get(name) });
      }
      return out;
    }
    const walk = (g, depth) => {
      const ids = [];
      const sub = [];
      for (const m of g.members || []) {
        if (m.child) ids.push(m.child.id);
        else if (m.group) sub.push(m.group);
      }
      ids.forEach((id) => placed.add(id));
      out.push({ key: "group:" + g.id, kind: "group", title: g.id, group: g, depth, ids: ids.filter((id) => S.children.has(id)) });
      for (const s of sub) walk(s, depth + 1);
    };
    for (const g of S.tree.groups) walk(g, 0);
    const top = S.tree.children.filter((id) => S.children.has(id));
    top.forEach((id) => placed.add(id));
    if (top.length) out.push({ key: "config", kind: "config", title: "config children", depth: 0, ids: top });
    // Members of groups the tree does not show yet (it is re-read later).
    const stray = new Map();
    const dynamic = [];
    for (const c of S.children.values()) {
      if (placed.has(c.id)) continue;
      if (c.group) {
        if (!stray.has(c.group)) stray.set(c.group, []);
        stray.get(c.group).push(c.id);
      } else dynamic.push(c.id);
    }
    for (const [g, ids] of stray) out.push({ key: "group:" + g, kind: "group", title: g, depth: 0, ids });
    out.push({ key: "dynamic", kind: "dynamic", title: "dynamic children", depth: 0, ids: dynamic });
    return out;
  }

  function computeView() {
    const q = $("search").value.trim().toLowerCase();
    const sort = $("sort").value;
    const field = SORT_FIELDS[sort];
    const byId = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
    const view = [];
    for (const sec of sections()) {
      let ids = q ? sec.ids.filter((id) => id.toLowerCase().includes(q)) : sec.ids.slice();
      if (field) {
        ids.sort((a, b) => (S.children.get(b)[field] || 0) - (S.children.get(a)[field] || 0) || byId(a, b));
      } else if (sort === "id" || sec.kind === "dynamic" || sec.kind === "plugin") {
        ids.sort(byId);
      }
      if (q && !ids.length) continue;
      sec.shown = ids.length;
      view.push({ section: sec });
      for (const id of ids) view.push({ id, depth: sec.kind === "group" ? sec.depth + 1 : 0 });
    }
    // A table with no children at all shows no lone "dynamic" header.
    if (view.length === 1 && !S.children.size) view.length = 0;
    S.view = view;
    S.orderDirty = false;
  }

  // Renders the table soon: at once for a user action (`now`), else at
  // most once a second so that rows do not jump under the pointer.
  function scheduleRender(now) {
    if (!S.orderDirty && !now) return;
    if (S.renderTimer) {
      if (!now) return;
      clearTimeout(S.renderTimer);
    }
    const wait = now ? 0 : Math.max(0, 1000 - (Date.now() - S.lastRender));
    S.renderTimer = setTimeout(() => {
      S.renderTimer = null;
      renderTable();
    }, wait);
  }

  function renderTable() {
    S.lastRender = Date.now();
    if (S.orderDirty) computeView();
    const pages = Math.max(1, Math.ceil(S.view.length / PAGE_ROWS));
    if (S.page >= pages) S.page = pages - 1;
    const slice = S.view.slice(S.page * PAGE_ROWS, (S.page + 1) * PAGE_ROWS);
    // A page that starts inside a section repeats its header.
    if (slice.length && !slice[0].section) {
      for (let i = S.page * PAGE_ROWS; i >= 0; i--) {
        if (S.view[i].section) {
          slice.unshift({ section: S.view[i].section, cont: true });
          break;
        }
      }
    }
    const keep = new Map();
    const frag = document.createDocumentFragment();
    for (const item of slice) {
      if (item.section) {
        frag.append(sectionRow(item.section, item.cont));
        continue;
      }
      const c = S.children.get(item.id);
      if (!c) continue;
      let tr = S.rows.get(item.id);
      if (!tr) {
        tr = makeRow(c);
      }
      tr.firstChild.style.paddingLeft = 0.6 + item.depth * 1.2 + "em";
      keep.set(item.id, tr);
      frag.append(tr);
    }
    S.rows = keep;
    $("children-body").replaceChildren(frag);
    $("empty").hidden = S.children.size > 0;
    const childRows = S.view.filter((v) => v.id).length;
    $("page-info").textContent = `page ${S.page + 1} of ${pages} · ${childRows} shown of ${S.children.size}`;
    $("page-prev").disabled = S.page === 0;
    $("page-next").disabled = S.page >= pages - 1;
    for (const b of document.querySelectorAll(".pager")) b.hidden = pages <= 1 && !childRows;
  }

  function sectionRow(sec, cont) {
    const th = el("th", { colspan: "10", scope: "colgroup" });
    th.style.paddingLeft = 0.6 + sec.depth * 1.2 + "em";
    if (sec.kind === "group") {
      const g = sec.group;
      th.append(el("span", { class: "sec-kind", text: "group" }), el("strong", { text: sec.title }));
      if (g) {
        th.append(el("span", { class: "strategy", text: g.strategy }), el("span", { class: "muted", text: `restarts ${g.restarts}/${g.max_restarts} in ${g.max_seconds} s` }));
        if (g.down) th.append(el("span", { class: "badge status-failed", text: "down" }));
      }
    } else if (sec.kind === "plugin") {
      th.append(el("span", { class: "sec-kind", text: "plugin" }), el("strong", { text: sec.title }));
    } else {
      th.append(el("strong", { text: sec.title }));
    }
    th.append(el("span", { class: "muted", text: ` ${sec.shown}` + (cont ? " (continued)" : "") }));
    return el("tr", { class: "section", "data-section": sec.key }, th);
  }

  function makeRow(c) {
    const tr = el(
      "tr",
      { class: "child", "data-id": c.id },
      el("td", { class: "id" }, el("button", { type: "button", class: "link", "data-action": "open", title: "Show " + c.id, text: c.id })),
      el("td", { class: "status" }, el("span", { class: "badge" })),
      el("td", { class: "plugin" }),
      el("td", { class: "version" }),
      el("td", { class: "num restarts" }),
      el("td", { class: "num queued" }),
      el("td", { class: "num memory" }),
      el("td", { class: "num age" }),
      el("td", { class: "last-exit" }),
      el("td", { class: "row-actions" }, el("button", { type: "button", class: "small restart-btn", "data-action": "restart", "aria-label": "Restart " + c.id, text: "Restart" }))
    );
    tr._v = {};
    S.rows.set(c.id, tr);
    fillRow(tr, c);
    return tr;
  }

  // Sets the cells that changed; the row remembers what it shows.
  function fillRow(tr, c) {
    const v = tr._v;
    const cells = tr.children;
    const set = (i, key, text) => {
      if (v[key] !== text) {
        v[key] = text;
        cells[i].textContent = text;
      }
    };
    if (v.status !== c.status) {
      v.status = c.status;
      tr.dataset.status = c.status;
      const b = cells[1].firstChild;
      b.className = "badge status-" + c.status;
      b.textContent = c.status;
    }
    set(2, "plugin", c.plugin);
    set(3, "version", c.version || "—");
    set(4, "restarts", String(c.restarts));
    set(5, "queued", String(c.queued));
    set(6, "memory", bytes(c.memory_bytes));
    set(7, "age", age(c));
    const exit = exitShort(c.last_exit);
    if (v.exit !== exit) {
      v.exit = exit;
      cells[8].textContent = exit;
      cells[8].title = exit;
      cells[8].dataset.code = c.last_exit ? exitParts(c.last_exit).code : "";
    }
    tr.classList.toggle("selected", S.selected === c.id);
  }

  function updateAges() {
    for (const [id, tr] of S.rows) {
      const c = S.children.get(id);
      if (c) {
        const a = age(c);
        if (tr._v.age !== a) {
          tr._v.age = a;
          tr.children[7].textContent = a;
        }
      }
    }
    if (S.detailChild) {
      const cell = document.querySelector("#detail-fields [data-field=age]");
      if (cell) cell.textContent = age(S.detailChild);
    }
  }

  function onTableClick(ev) {
    const btn = ev.target.closest("button[data-action]");
    const tr = ev.target.closest("tr[data-id]");
    if (!tr) return;
    const id = tr.dataset.id;
    if (btn && btn.dataset.action === "restart") {
      btn.disabled = true;
      api("POST", "/v1/children/" + enc(id) + "/restart")
        .then(() => {
          S.refresh.add(id);
          pumpRefresh();
        })
        .catch((e) => {
          if (!(e instanceof ApiError && e.status === 401)) showBanner(`restart ${id}: ${e}`);
        })
        .finally(() => {
          btn.disabled = false;
        });
      return;
    }
    select(id);
  }

  // ---------------------------------------------------------------- detail

  function select(id) {
    const prev = S.selected;
    S.selected = id;
    if (prev && S.rows.get(prev)) S.rows.get(prev).classList.remove("selected");
    if (S.rows.get(id)) S.rows.get(id).classList.add("selected");
    $("detail").hidden = false;
    $("call-result").textContent = "";
    $("call-result").className = "code result";
    $("action-result").textContent = "";
    $("call-json-error").hidden = true;
    resetStop();
    const c = S.children.get(id);
    if (c) renderDetail(c);
    else $("detail-title").textContent = id;
    renderDetailEvents(id);
    run(refreshChild(S.gen, id));
  }

  function closeDetail() {
    if (S.selected && S.rows.get(S.selected)) S.rows.get(S.selected).classList.remove("selected");
    S.selected = null;
    S.detailChild = null;
    $("detail").hidden = true;
  }

  function renderDetail(c) {
    S.detailChild = c;
    $("detail").dataset.id = c.id;
    $("detail-title").textContent = c.id;
    const dl = $("detail-fields");
    const rows = [
      ["status", el("span", { class: "badge status-" + c.status, text: c.status })],
      ["plugin", c.plugin],
      ["version", c.version || "—"],
      ["restart", c.restart || "—"],
      ["restarts", String(c.restarts)],
      ["queue", String(c.queued)],
      ["memory", bytes(c.memory_bytes)],
      ["age", age(c)],
      ["started", c.started_at_ms ? new Date(c.started_at_ms).toLocaleString() : "—"],
      ["activated", c.activated ? "yes" : "no"],
      ["restored", c.restored ? "yes" : "no"],
    ];
    if (c.group) rows.push(["group", c.group]);
    if (c.backoff_until_ms) rows.push(["backoff until", new Date(c.backoff_until_ms).toLocaleTimeString()]);
    const frag = document.createDocumentFragment();
    for (const [k, v] of rows) frag.append(el("dt", { text: k }), el("dd", { "data-field": k }, v));
    dl.replaceChildren(frag);
    $("detail-args").textContent = c.args === null || c.args === undefined ? "—" : JSON.stringify(c.args, null, 2);
    const exit = $("detail-exit");
    const p = exitParts(c.last_exit);
    if (!p) {
      exit.replaceChildren(el("p", { class: "muted", text: "No exit yet." }));
    } else {
      exit.replaceChildren(
        el("p", { class: "exit-line" }, el("span", { class: "badge exit-" + p.code, text: p.code })),
        p.message ? el("pre", { class: "exit-message", text: p.message }) : null,
        p.backtrace ? el("pre", { class: "code backtrace", text: p.backtrace }) : null
      );
    }
    const hib = $("act-hibernate");
    hib.disabled = c.status === "hibernated";
  }

  function renderDetailGone(id) {
    $("detail-title").textContent = id + " (removed)";
    $("detail").dataset.id = id;
    const dl = $("detail-fields");
    dl.replaceChildren(el("dt", { text: "status" }), el("dd", { "data-field": "status" }, el("span", { class: "badge status-ignored", text: "removed" })));
    S.detailChild = null;
  }

  function eventItem(ev) {
    return el("li", { "data-kind": ev.kind }, el("time", { text: time(ev.at) }), " ", el("span", { class: "ev-kind", text: ev.kind }), " ", el("span", { text: eventSummary(ev) }));
  }

  function renderDetailEvents(id) {
    const list = S.childEvents.get(id) || [];
    const ol = $("detail-events");
    const frag = document.createDocumentFragment();
    for (let i = list.length - 1; i >= 0; i--) frag.append(eventItem(list[i]));
    ol.replaceChildren(frag);
    if (!list.length) ol.append(el("li", { class: "muted", text: "No events in the recent history." }));
  }

  function appendDetailEvent(ev) {
    const ol = $("detail-events");
    const empty = ol.querySelector("li.muted");
    if (empty) empty.remove();
    ol.prepend(eventItem(ev));
    while (ol.children.length > EVENTS_PER_CHILD) ol.lastChild.remove();
  }

  function resetStop() {
    const b = $("act-stop");
    b.textContent = "Stop";
    delete b.dataset.confirm;
    clearTimeout(S.stopTimer);
  }

  function onAction(ev) {
    const btn = ev.target.closest("button[data-action]");
    if (!btn || !S.selected) return;
    const id = S.selected;
    const action = btn.dataset.action;
    // Stopping removes the child: ask for a second click.
    if (action === "stop" && !btn.dataset.confirm) {
      btn.dataset.confirm = "1";
      btn.textContent = "Confirm stop";
      S.stopTimer = setTimeout(resetStop, 4000);
      return;
    }
    const out = $("action-result");
    const path = "/v1/children/" + enc(id);
    const req = {
      restart: () => api("POST", path + "/restart"),
      kill: () => api("POST", path + "/kill", {}),
      hibernate: () => api("POST", path + "/hibernate"),
      stop: () => api("DELETE", path),
    }[action];
    if (!req) return;
    resetStop();
    btn.disabled = true;
    out.className = "result";
    out.textContent = action + "…";
    req()
      .then((r) => {
        out.className = "result ok";
        out.textContent = action + ": " + JSON.stringify(r);
        S.refresh.add(id);
        pumpRefresh();
      })
      .catch((e) => {
        out.className = "result error";
        out.textContent = action + " failed: " + e;
      })
      .finally(() => {
        btn.disabled = false;
      });
  }

  // Reads the JSON editor; shows why it is not JSON.
  function readMessage() {
    const err = $("call-json-error");
    try {
      const msg = JSON.parse($("call-msg").value);
      err.hidden = true;
      $("call-msg").removeAttribute("aria-invalid");
      return { ok: true, msg };
    } catch (e) {
      err.textContent = "Not valid JSON: " + e.message;
      err.hidden = false;
      $("call-msg").setAttribute("aria-invalid", "true");
      return { ok: false };
    }
  }

  function send(kind) {
    if (!S.selected) return;
    const m = readMessage();
    if (!m.ok) return;
    const id = S.selected;
    const out = $("call-result");
    out.className = "code result";
    out.textContent = kind + "…";
    let body;
    if (kind === "call") {
      body = { msg: m.msg };
      const t = parseInt($("call-timeout").value, 10);
      if (Number.isFinite(t)) body.timeout_ms = t;
    } else {
      body = { msg: m.msg };
    }
    api("POST", "/v1/children/" + enc(id) + "/" + kind, body)
      .then((r) => {
        out.className = "code result ok";
        out.textContent = kind === "call" ? JSON.stringify(r.reply, null, 2) : "queued (202)";
      })
      .catch((e) => {
        out.className = "code result error";
        out.textContent = e.toString();
      });
  }

  // ---------------------------------------------------------------- plugins

  async function loadPlugins(gen) {
    const list = await api("GET", "/v1/plugins");
    if (gen !== S.gen) return;
    S.plugins = new Map(list.map((p) => [p.name, p]));
    renderPlugins();
  }

  function loadPluginsSoon() {
    if (S.timers.pluginsSoon) return;
    const gen = S.gen;
    S.timers.pluginsSoon = setTimeout(() => {
      delete S.timers.pluginsSoon;
      run(loadPlugins(gen));
    }, 300);
  }

  function renderPlugins() {
    const body = $("plugins-body");
    const names = new Set([...S.plugins.keys(), ...S.pluginEvents.keys()]);
    const sorted = [...names].sort();
    const rows = new Map();
    const frag = document.createDocumentFragment();
    for (const name of sorted) {
      const p = S.plugins.get(name) || { name, version: null, instances: 0, last_error: null };
      let tr = S.pluginRows.get(name);
      if (!tr) tr = el("tr", { "data-plugin": name }, ...Array.from({ length: 8 }, () => el("td")));
      const cells = tr.children;
      cells[0].textContent = name;
      cells[1].textContent = p.version || "—";
      cells[2].textContent = bytes(p.size);
      cells[2].className = "num";
      cells[3].textContent = fmtMs(p.compile_ms) + (p.cached ? " (cached)" : "");
      cells[3].className = "num";
      cells[4].textContent = p.allocation || "—";
      cells[5].textContent = String(p.instances);
      cells[5].className = "num instances";
      cells[6].textContent = p.last_error || "";
      cells[6].className = p.last_error ? "error last-error" : "last-error";
      const hist = S.pluginEvents.get(name) || [];
      const sig = hist.length + ":" + (hist.length ? hist[hist.length - 1].at : "");
      if (tr._hist !== sig) {
        tr._hist = sig;
        if (!hist.length) {
          cells[7].replaceChildren(el("span", { class: "muted", text: "—" }));
        } else {
          const open = cells[7].querySelector("details")?.open;
          const ol = el("ol", { class: "events" });
          for (let i = hist.length - 1; i >= 0; i--) ol.append(eventItem(hist[i]));
          const latest = hist[hist.length - 1];
          cells[7].replaceChildren(el("details", { open: !!open }, el("summary", { text: `${hist.length} · ${eventSummary(latest)}` }), ol));
        }
      }
      rows.set(name, tr);
      frag.append(tr);
    }
    S.pluginRows = rows;
    body.replaceChildren(frag);
  }

  // ---------------------------------------------------------------- metrics

  // Parses Prometheus or OpenMetrics text: `name{labels} value [ts]`;
  // returns name -> [{labels, value}].
  function parseMetrics(text) {
    const out = new Map();
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (!line || line.startsWith("#")) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const value = Number(m[4]);
      if (!Number.isFinite(value)) continue;
      const labels = {};
      if (m[3]) {
        const re = /([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"/g;
        let l;
        while ((l = re.exec(m[3]))) labels[l[1]] = l[2];
      }
      if (!out.has(m[1])) out.set(m[1], []);
      out.get(m[1]).push({ labels, value });
    }
    return out;
  }

  function sum(metrics, name, pred) {
    const list = metrics.get(name);
    if (!list) return null;
    return list.filter((s) => !pred || pred(s.labels)).reduce((a, s) => a + s.value, 0);
  }

  async function pollMetrics(gen) {
    const text = await api("GET", "/metrics", undefined, { text: true });
    if (gen !== S.gen) return;
    const m = parseMetrics(text);
    const sample = {
      t: Date.now(),
      calls: sum(m, "wasmvisor_calls_total"),
      casts: sum(m, "wasmvisor_casts_total"),
      restarts: sum(m, "wasmvisor_restarts_total"),
      children: sum(m, "wasmvisor_children"),
      running: sum(m, "wasmvisor_children", (l) => l.status === "running"),
    };
    S.samples.push(sample);
    $("rates-title").dataset.samples = String(S.samples.length);
    if (S.samples.length > RATE_POINTS + 1) S.samples.splice(0, S.samples.length - RATE_POINTS - 1);
    const counts = {};
    for (const s of m.get("wasmvisor_children") || []) if (s.labels.status) counts[s.labels.status] = s.value;
    S.statusCounts = counts;
    renderSummary();
    drawCharts();
  }

  function renderSummary() {
    const counts = S.statusCounts || {};
    const frag = document.createDocumentFragment();
    let total = 0;
    for (const v of Object.values(counts)) total += v;
    frag.append(el("span", { class: "count", "data-status": "total" }, el("strong", { text: String(total) }), " children"));
    for (const st of ["running", "starting", "restarting", "backoff", "failed", "waiting", "hibernated", "ignored"]) {
      if (!counts[st]) continue;
      frag.append(el("span", { class: "count", "data-status": st }, el("span", { class: "badge status-" + st, text: st }), " " + counts[st]));
    }
    $("summary").replaceChildren(frag);
  }

  // Per-second rates between consecutive samples; a counter that went down
  // (the host restarted) gives no point.
  function rates(key) {
    const out = [];
    for (let i = 1; i < S.samples.length; i++) {
      const a = S.samples[i - 1];
      const b = S.samples[i];
      const dt = (b.t - a.t) / 1000;
      if (a[key] === null || b[key] === null || dt <= 0 || b[key] < a[key]) out.push({ t: b.t, v: null });
      else out.push({ t: b.t, v: (b[key] - a[key]) / dt });
    }
    return out;
  }

  function gauge(key) {
    return S.samples.map((s) => ({ t: s.t, v: s[key] }));
  }

  function fmtRate(v) {
    if (v === null || v === undefined) return "—";
    if (v >= 1000) return (v / 1000).toFixed(1) + "k";
    return v >= 10 || v === 0 ? String(Math.round(v)) : v.toFixed(1);
  }

  function drawCharts() {
    const css = getComputedStyle(document.documentElement);
    const color = (n) => css.getPropertyValue(n).trim() || "#888";
    const charts = [
      ["calls", [{ points: rates("calls"), color: color("--c-calls") }]],
      ["casts", [{ points: rates("casts"), color: color("--c-casts") }]],
      ["restarts", [{ points: rates("restarts"), color: color("--c-restarts") }]],
      ["children", [{ points: gauge("children"), color: color("--c-children") }, { points: gauge("running"), color: color("--c-running") }]],
    ];
    for (const [name, series] of charts) {
      const last = series[0].points.length ? series[0].points[series[0].points.length - 1].v : null;
      let label = fmtRate(last);
      if (name === "children") {
        const run = series[1].points.length ? series[1].points[series[1].points.length - 1].v : null;
        const n = (v) => (v === null || v === undefined ? "—" : String(Math.round(v)));
        label = `${n(last)} (${n(run)} running)`;
      }
      $("rate-" + name).textContent = label;
      drawChart($("chart-" + name), series, color("--muted"), color("--grid"));
    }
  }

  function drawChart(canvas, series, textColor, gridColor) {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(100, canvas.clientWidth);
    const h = Math.max(60, canvas.clientHeight);
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const now = Date.now();
    // Five minutes once there is that much; until then what there is (at
    // least 20 s), so that a fresh page draws lines rather than a dot.
    const first = S.samples.length ? S.samples[0].t : now;
    const span = Math.min(RATE_POINTS * METRICS_MS, Math.max(20000, now - first + METRICS_MS));
    let max = 0;
    for (const s of series) for (const p of s.points) if (p.v !== null && p.v > max) max = p.v;
    max = niceMax(max);
    const left = 4;
    const top = 14;
    const bottom = h - 4;
    const right = w - 4;
    ctx.strokeStyle = gridColor;
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (const f of [0, 0.5, 1]) {
      const y = Math.round(bottom - f * (bottom - top)) + 0.5;
      ctx.moveTo(left, y);
      ctx.lineTo(right, y);
    }
    ctx.stroke();
    ctx.fillStyle = textColor;
    ctx.font = "10px system-ui, sans-serif";
    ctx.textBaseline = "top";
    ctx.fillText(fmtRate(max), left, 1);
    ctx.textAlign = "right";
    ctx.fillText("last " + duration(span), right, 1);
    ctx.textAlign = "left";
    for (const s of series) {
      ctx.strokeStyle = s.color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      let pen = false;
      for (const p of s.points) {
        if (p.v === null) {
          pen = false;
          continue;
        }
        const x = right - ((now - p.t) / span) * (right - left);
        if (x < left) continue;
        const y = bottom - (max ? p.v / max : 0) * (bottom - top);
        if (pen) ctx.lineTo(x, y);
        else ctx.moveTo(x, y);
        pen = true;
      }
      ctx.stroke();
    }
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  // ---------------------------------------------------------------- wiring

  function init() {
    $("token-form").addEventListener("submit", onTokenSubmit);
    $("forget-token").addEventListener("click", forgetToken);
    $("children-body").addEventListener("click", onTableClick);
    let searchTimer = null;
    $("search").addEventListener("input", () => {
      clearTimeout(searchTimer);
      searchTimer = setTimeout(() => {
        S.page = 0;
        S.orderDirty = true;
        scheduleRender(true);
      }, 120);
    });
    for (const id of ["sort", "group-by-plugin"]) {
      $(id).addEventListener("change", () => {
        S.page = 0;
        S.orderDirty = true;
        scheduleRender(true);
      });
    }
    $("page-prev").addEventListener("click", () => {
      if (S.page > 0) S.page--;
      scheduleRender(true);
    });
    $("page-next").addEventListener("click", () => {
      S.page++;
      scheduleRender(true);
    });
    $("window-prev").addEventListener("click", () => moveWindow(-1));
    $("window-next").addEventListener("click", () => moveWindow(1));
    $("detail-close").addEventListener("click", closeDetail);
    document.querySelector("#detail .actions").addEventListener("click", onAction);
    $("call-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      send("call");
    });
    $("cast-send").addEventListener("click", () => send("cast"));
    $("call-msg").addEventListener("input", () => {
      if (!$("call-json-error").hidden) readMessage();
    });
    window.addEventListener("resize", () => drawCharts());
    boot();
  }

  init();
})();
