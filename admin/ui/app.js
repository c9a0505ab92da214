// mqttd dashboard: plain JavaScript, no dependencies, no network access but
// this server's /api/v1.
"use strict";

const $ = (sel) => document.querySelector(sel);
let token = sessionStorage.getItem("mqttd-admin-token") || "";

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

function showError(msg) {
  const e = $("#error");
  e.textContent = msg;
  e.hidden = !msg;
}

async function api(path, opts) {
  opts = opts || {};
  const res = await fetch("api/v1" + path, {
    method: opts.method || "GET",
    headers: headers(opts.body ? { "Content-Type": "application/json" } : {}),
    body: opts.body ? JSON.stringify(opts.body) : undefined,
    credentials: "same-origin",
  });
  let data = null;
  try { data = await res.json(); } catch (_) { data = null; }
  if (!res.ok) {
    const msg = (data && data.error) || res.status + " " + res.statusText;
    throw new Error(msg);
  }
  showError("");
  return data;
}

// stream reads a server-sent-events endpoint with fetch (so that the bearer
// token can be sent) and calls onEvent(name, data) per event; it returns a
// function that stops it.
function stream(path, onEvent, onEnd) {
  const ctl = new AbortController();
  (async () => {
    try {
      const res = await fetch("api/v1" + path, { headers: headers(), signal: ctl.signal, credentials: "same-origin" });
      if (!res.ok) {
        let msg = res.status + " " + res.statusText;
        try { msg = (await res.json()).error || msg; } catch (_) {}
        throw new Error(msg);
      }
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let name = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) name = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (data) onEvent(name, JSON.parse(data));
        }
      }
      if (onEnd) onEnd(null);
    } catch (err) {
      if (err.name !== "AbortError") {
        showError(err.message);
        if (onEnd) onEnd(err);
      }
    }
  })();
  return () => ctl.abort();
}

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "onclick") e.addEventListener("click", v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
}

function fmtBytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}

function fmtNum(n) { return Number(n).toLocaleString("en-US", { maximumFractionDigits: 1 }); }

// ---- pages ----
const pages = {};
let current = null;

function route() {
  const name = (location.hash.slice(1) || "overview").split("/")[0];
  const page = pages[name] ? name : "overview";
  if (current && pages[current].stop) pages[current].stop();
  for (const s of document.querySelectorAll(".page")) s.hidden = s.id !== "page-" + page;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  current = page;
  showError("");
  pages[page].start();
}

// ---- overview ----
const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

// drawChart draws series (arrays of [timeMs, value]) over the last hour.
function drawChart(node, series, classes) {
  const W = 800, H = Number(node.getAttribute("viewBox").split(" ")[3]), L = 50, B = 18, T = 8;
  while (node.firstChild) node.firstChild.remove();
  const now = Date.now(), t0 = now - 3600e3;
  let ymax = 1;
  for (const s of series) for (const [, v] of s) ymax = Math.max(ymax, v);
  ymax *= 1.1;
  const x = (t) => L + ((t - t0) / 3600e3) * (W - L - 4);
  const y = (v) => H - B - (v / ymax) * (H - B - T);
  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4, yy = y(v);
    node.append(svg("line", { x1: L, x2: W, y1: yy, y2: yy, class: "grid" }));
    const t = svg("text", { x: 2, y: yy + 4, class: "axis" });
    t.textContent = fmtNum(v);
    node.append(t);
  }
  for (let m = 0; m <= 60; m += 15) {
    const t = svg("text", { x: x(t0 + m * 60e3) - 12, y: H - 4, class: "axis" });
    t.textContent = m === 60 ? "now" : "-" + (60 - m) + "m";
    node.append(t);
  }
  series.forEach((s, i) => {
    const pts = s.filter(([t]) => t >= t0).map(([t, v]) => x(t).toFixed(1) + "," + y(v).toFixed(1)).join(" ");
    node.append(svg("polyline", { points: pts, class: classes[i], "data-n": s.length }));
  });
  node.dataset.updated = String(now);
}

pages.overview = (() => {
  let timer = null, samples = [], last = "";
  async function tick() {
    try {
      const q = last ? "?since=" + encodeURIComponent(last) : "";
      const d = await api("/samples" + q);
      samples = samples.concat(d.samples).filter((s) => Date.parse(s.time) > Date.now() - 3600e3);
      if (d.samples.length) last = d.samples[d.samples.length - 1].time;
      const b = await api("/broker");
      const s = samples[samples.length - 1];
      $("#ov-clients").textContent = fmtNum(b.clients);
      $("#ov-subs").textContent = fmtNum(b.subscriptions);
      $("#ov-retained").textContent = fmtNum(b.retained);
      $("#ov-dropped").textContent = fmtNum(b.dropped);
      if (s) {
        $("#ov-in").textContent = fmtNum(s.rate_in);
        $("#ov-out").textContent = fmtNum(s.rate_out);
        $("#ov-mem").textContent = fmtBytes(s.rss_bytes || s.heap_bytes);
        $("#ov-store").textContent = s.store_bytes ? fmtBytes(s.store_bytes) : "no store";
      }
      $("#ov-broker").textContent = b.version + " · up " + fmtNum(b.uptime_seconds) + " s · listeners: " +
        (b.listeners || []).map((l) => l.address).join(", ");
      const tms = (s) => Date.parse(s.time);
      drawChart($("#chart-rates"), [samples.map((s) => [tms(s), s.rate_in]), samples.map((s) => [tms(s), s.rate_out])], ["in", "out"]);
      drawChart($("#chart-conns"), [samples.map((s) => [tms(s), s.connected])], ["in"]);
      $("#chart-range").textContent = samples.length + " samples every " + d.interval_seconds + " s";
    } catch (err) {
      showError(err.message);
    }
  }
  return {
    start() { tick(); timer = setInterval(tick, 2000); },
    stop() { clearInterval(timer); },
  };
})();

// ---- clients ----
pages.clients = (() => {
  let cursor = "", next = "";
  function query() {
    const p = new URLSearchParams();
    if ($("#cs-id").value) p.set("id", $("#cs-id").value);
    if ($("#cs-user").value) p.set("user", $("#cs-user").value);
    if ($("#cs-addr").value) p.set("address", $("#cs-addr").value);
    if ($("#cs-conn").checked) p.set("connected", "true");
    p.set("limit", "50");
    if (cursor) p.set("cursor", cursor);
    return p.toString();
  }
  async function load() {
    try {
      const d = await api("/clients?" + query());
      next = d.next_cursor;
      const tb = $("#clients-table tbody");
      tb.replaceChildren();
      for (const c of d.items) {
        tb.append(el("tr", { "data-client": c.id },
          el("td", {}, el("a", { class: "level", text: c.id, onclick: () => detail(c.id) })),
          el("td", { text: c.username }),
          el("td", { text: c.connected ? c.remote : "offline" }),
          el("td", { text: c.protocol }),
          el("td", { text: c.subscriptions }),
          el("td", { text: c.inflight }),
          el("td", { text: c.queued }),
          el("td", {}, c.connected ? el("button", { class: "danger", text: "Kick", "data-kick": c.id, onclick: () => kick(c.id) }) : "")));
      }
      $("#clients-next").disabled = !next;
      $("#clients-count").textContent = d.items.length + " shown of " + d.sessions + " sessions";
    } catch (err) { showError(err.message); }
  }
  async function detail(id) {
    try {
      const d = await api("/clients/" + encodeURIComponent(id));
      const box = $("#client-detail");
      box.hidden = false;
      box.replaceChildren(
        el("h2", { text: "Client " + id }),
        el("p", { text: (d.client.connected ? "Connected from " + d.client.remote + " (MQTT " + d.client.protocol + ")" +
          (d.connected_since ? " since " + new Date(d.connected_since).toLocaleString() : "") : "Offline") +
          " · in flight " + d.inflight + " · queued " + d.queued + " (" + fmtBytes(d.queued_bytes) + ")" +
          " · session expiry " + (d.session_expiry < 0 ? "never" : d.session_expiry + " s") }),
        el("table", {}, el("thead", {}, el("tr", {}, el("th", { text: "Filter" }), el("th", { text: "QoS" }), el("th", { text: "Options" }))),
          el("tbody", {}, ...d.subscriptions.map((s) => el("tr", {}, el("td", { text: s.filter }), el("td", { text: s.qos }),
            el("td", { text: [s.no_local ? "no local" : "", s.retain_as_published ? "retain as published" : "",
              "retain handling " + s.retain_handling].filter(Boolean).join(", ") }))))));
      if (d.client.connected) box.append(el("button", { class: "danger", text: "Kick", onclick: () => kick(id) }));
    } catch (err) { showError(err.message); }
  }
  async function kick(id) {
    if (!confirm("Disconnect " + id + "?")) return;
    try { await api("/clients/" + encodeURIComponent(id) + "/kick", { method: "POST" }); } catch (err) { showError(err.message); }
    setTimeout(load, 300);
  }
  $("#clientsearch").addEventListener("submit", (e) => { e.preventDefault(); cursor = ""; load(); });
  $("#clients-first").addEventListener("click", () => { cursor = ""; load(); });
  $("#clients-next").addEventListener("click", () => { if (next) { cursor = next; load(); } });
  return { start() { load(); }, stop() {} };
})();

// ---- live topic tree ----
pages.topics = (() => {
  let prefix = "", stop = null, rows = new Map(), next = "";
  function crumbs() {
    const c = $("#topic-crumbs");
    c.replaceChildren(el("a", { class: "level", text: "(root)", onclick: () => open("") }));
    let acc = "";
    for (const lvl of prefix ? prefix.split("/") : []) {
      acc = acc ? acc + "/" + lvl : lvl;
      const p = acc;
      c.append(" / ", el("a", { class: "level", text: lvl === "" ? "(empty)" : lvl, onclick: () => open(p) }));
    }
  }
  function row(e) {
    let r = rows.get(e.level);
    if (!r) {
      r = { tr: el("tr", { "data-topic": e.topic }), prev: e.messages, prevAt: Date.now(), rate: 0, e };
      rows.set(e.level, r);
    }
    r.e = Object.assign(r.e, e);
    return r;
  }
  function render(r) {
    const e = r.e;
    const name = e.children > 0 ? el("a", { class: "level", text: e.level === "" ? "(empty)" : e.level, onclick: () => open(e.topic) })
      : document.createTextNode(e.level === "" ? "(empty)" : e.level);
    r.tr.replaceChildren(el("td", {}, name), el("td", { text: fmtNum(e.messages || 0) }), el("td", { text: fmtNum(r.rate) }),
      el("td", { text: e.retained ? "retained" : "" }), el("td", { text: e.children || "" }),
      el("td", { class: "value", text: e.last_value === undefined ? "" : (e.last_value_base64 ? "base64:" : "") + e.last_value }));
  }
  function redraw() {
    const tb = $("#topics-table tbody");
    const sorted = [...rows.values()].sort((a, b) => (a.e.level < b.e.level ? -1 : a.e.level > b.e.level ? 1 : 0));
    tb.replaceChildren(...sorted.map((r) => r.tr));
  }
  async function loadPage(cursor) {
    const d = await api("/topics?limit=200&prefix=" + encodeURIComponent(prefix) + (cursor ? "&cursor=" + cursor : ""));
    for (const e of d.items) render(row(e));
    next = d.next_cursor;
    $("#topics-more").hidden = !next;
    redraw();
  }
  function open(p) {
    if (stop) stop();
    prefix = p;
    rows = new Map();
    crumbs();
    loadPage("").catch((err) => showError(err.message));
    stop = stream("/stream/topics?prefix=" + encodeURIComponent(prefix), (name, ev) => {
      if (name !== "topics") return;
      const now = Date.now();
      let added = false;
      for (const e of ev.topics || []) {
        added = added || !rows.has(e.level);
        const r = row(e);
        const dt = (now - r.prevAt) / 1000;
        if (dt > 0 && !ev.full) r.rate = (e.messages - r.prev) / dt;
        r.prev = e.messages;
        r.prevAt = now;
        render(r);
        r.tr.classList.add("flash");
        setTimeout(() => r.tr.classList.remove("flash"), 600);
      }
      // levels with no news since the last event have a rate of 0
      for (const r of rows.values()) if (now - r.prevAt > 2500 && r.rate) { r.rate = 0; render(r); }
      if (added) redraw();
      $("#topic-live").textContent = "live · " + rows.size + " levels" + (ev.more ? " (busiest shown)" : "");
    });
  }
  $("#topics-more").addEventListener("click", () => loadPage(next).catch((err) => showError(err.message)));
  return { start() { open(prefix); }, stop() { if (stop) stop(); stop = null; } };
})();

// ---- retained ----
pages.retained = (() => {
  let next = "";
  async function load(cursor) {
    try {
      const p = new URLSearchParams({ limit: "100" });
      if ($("#rs-prefix").value) p.set("prefix", $("#rs-prefix").value);
      if (cursor) p.set("cursor", cursor);
      const d = await api("/retained?" + p);
      const tb = $("#retained-table tbody");
      if (!cursor) tb.replaceChildren();
      for (const m of d.items) {
        tb.append(el("tr", { "data-topic": m.topic }, el("td", { text: m.topic }),
          el("td", { class: "value", text: (m.payload_base64 ? "base64:" : "") + m.payload }),
          el("td", { text: fmtBytes(m.size) }), el("td", { text: m.qos }),
          el("td", {}, el("button", { class: "danger", text: "Delete", onclick: () => del(m.topic) }))));
      }
      next = d.next_cursor;
      $("#retained-next").hidden = !next;
    } catch (err) { showError(err.message); }
  }
  async function del(topic) {
    if (!confirm("Delete the retained message of " + topic + "?")) return;
    try { await api("/retained/" + encodeURIComponent(topic), { method: "DELETE" }); } catch (err) { showError(err.message); }
    load("");
  }
  $("#retainedsearch").addEventListener("submit", (e) => { e.preventDefault(); load(""); });
  $("#retained-next").addEventListener("click", () => load(next));
  $("#publishform").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await api("/publish", { method: "POST", body: { topic: $("#pub-topic").value, payload: $("#pub-payload").value,
        qos: Number($("#pub-qos").value), retain: $("#pub-retain").checked } });
      $("#pub-result").textContent = "published " + new Date().toLocaleTimeString();
      if ($("#pub-retain").checked) load("");
    } catch (err) { showError(err.message); }
  });
  return { start() { load(""); }, stop() {} };
})();

// ---- subscribe and watch ----
pages.watch = (() => {
  let stop = null, n = 0;
  function end() { if (stop) stop(); stop = null; }
  $("#watchform").addEventListener("submit", (e) => {
    e.preventDefault();
    end();
    const filter = $("#watch-filter").value;
    const tb = $("#watch-table tbody");
    tb.replaceChildren();
    n = 0;
    $("#watch-status").textContent = "watching " + filter;
    stop = stream("/stream/watch?filter=" + encodeURIComponent(filter), (name, ev) => {
      if (name !== "messages") return;
      for (const m of ev.messages || []) {
        n++;
        tb.prepend(el("tr", {}, el("td", { text: new Date(m.time).toLocaleTimeString() }), el("td", { text: m.topic }),
          el("td", { text: m.qos }), el("td", { text: m.retain ? "yes" : "" }),
          el("td", { class: "value", text: (m.payload_base64 ? "base64:" : "") + m.payload })));
      }
      while (tb.rows.length > 500) tb.deleteRow(tb.rows.length - 1);
      $("#watch-status").textContent = "watching " + filter + " · " + n + " messages" + (ev.dropped ? " · " + ev.dropped + " dropped (too fast)" : "");
    }, (err) => { $("#watch-status").textContent = err ? "stopped: " + err.message : "stream ended"; });
  });
  $("#watch-stop").addEventListener("click", () => { end(); $("#watch-status").textContent = "stopped"; });
  return { start() {}, stop: end };
})();

$("#token").value = token;
$("#tokenform").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("#token").value.trim();
  if (token) sessionStorage.setItem("mqttd-admin-token", token); else sessionStorage.removeItem("mqttd-admin-token");
  route();
});
window.addEventListener("hashchange", route);
route();
