"use strict";
// The edgekit fleet dashboard: a hash-routed page over /api/v1, kept live by server-sent events (/api/v1/stream).
// Every element is built with textContent (no HTML from data), styles set through the CSSOM (the CSP forbids
// inline styles and scripts).

const S = {me: null, streams: [], plots: [], devQuery: {sort: "id", order: "asc"}, range: "1h"};
const STATUSES = ["committed", "pending", "failed", "timed_out", "reverted", "replaced"];
const COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04"];

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "style") Object.assign(el.style, v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}
const fmt = (v, d = 1) => (v === null || v === undefined ? "" : Number(v).toFixed(d));
const pct = (v) => (v === null || v === undefined ? "" : (100 * v).toFixed(1) + "%");
function ago(ts) {
  if (!ts) return "never";
  const d = Math.max(0, Date.now() / 1000 - ts);
  if (d >= 86400) return (d / 86400).toFixed(0) + "d ago";
  if (d >= 3600) return (d / 3600).toFixed(0) + "h ago";
  if (d >= 60) return (d / 60).toFixed(0) + "m ago";
  return d.toFixed(0) + "s ago";
}
const clock = (ts) => new Date(ts * 1000).toLocaleTimeString();

function toast(text, bad) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.className = "toast show" + (bad ? " bad" : "");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.className = "toast"; }, 6000);
}

async function api(path, opts = {}) {
  const headers = {"accept": "application/json"};
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  if ((opts.method || "GET") !== "GET" && S.me) headers["x-csrf-token"] = S.me.csrf;
  const r = await fetch("/api/v1/" + path, {method: opts.method || "GET", headers, credentials: "same-origin",
                                            body: opts.body === undefined ? undefined : JSON.stringify(opts.body)});
  if (r.status === 401) { window.location.replace("/login"); throw new Error("not logged in"); }
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw Object.assign(new Error((data.error || "HTTP " + r.status) + (data.hint ? " — " + data.hint : "")),
                                 {status: r.status});
  return data;
}

// live data: one EventSource per view part, closed when the route changes
function live(path, onData) {
  const es = new EventSource("/api/v1/stream?path=" + encodeURIComponent("/api/v1/" + path));
  const dot = document.getElementById("live");
  es.addEventListener("update", (ev) => { dot.className = "live on"; onData(JSON.parse(ev.data)); });
  es.addEventListener("logout", () => window.location.replace("/login"));
  es.onerror = () => { dot.className = "live"; };
  S.streams.push(es);
  return es;
}
function closeAll() {
  S.streams.forEach((es) => es.close());
  S.streams = [];
  S.plots.forEach((p) => p.destroy());
  S.plots = [];
}

// --- plots (uPlot) ---------------------------------------------------------------------------------------------------

function plot(container, title, xs, series, unit, key) {
  const box = h("div", {class: "card plot", "data-plot": key || title}, h("h3", {}, title));
  container.append(box);
  if (!xs.length) { box.append(h("p", {class: "muted"}, "no data in this range")); return; }
  const width = Math.max(320, (box.clientWidth || 560) - 28);
  const opts = {width, height: 200, series: [{}].concat(series.map((s, i) => ({
      label: s.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true,
      value: (u, v) => (v === null || v === undefined ? "–" : Number(v).toFixed(2) + (unit || ""))}))),
    axes: [{}, {size: 60}], scales: {x: {time: true}}, legend: {live: true}};
  const u = new uPlot(opts, [xs].concat(series.map((s) => s.values)), box);
  S.plots.push(u);
}

// align series keyed by label over the union of timestamps
function pivot(points, keyOf, valueOf) {
  const xs = [...new Set(points.map((p) => p.ts))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const by = new Map();
  for (const p of points) {
    const k = keyOf(p);
    if (!by.has(k)) by.set(k, new Array(xs.length).fill(null));
    by.get(k)[index.get(p.ts)] = valueOf(p);
  }
  return {xs, series: [...by.entries()].sort().map(([label, values]) => ({label, values}))};
}

// --- views -----------------------------------------------------------------------------------------------------------

function rangePicker(onChange) {
  const sel = h("select", {id: "range", onchange: (e) => { S.range = e.target.value; onChange(); }},
    ["15m", "1h", "6h", "24h", "7d"].map((r) => h("option", {value: r, selected: r === S.range}, r)));
  return h("label", {class: "muted"}, "range ", sel);
}

function overview(main) {
  const top = h("div", {class: "cards", id: "counts"});
  const charts = h("div", {class: "grid2", id: "charts"});
  const tables = h("div", {class: "grid2"});
  main.append(h("div", {class: "actions"}, h("h1", {}, "Fleet overview"), rangePicker(() => route())),
              top, h("h2", {}, "Latency and errors per model version"), charts, tables);
  live("overview?range=" + S.range, (d) => {
    top.replaceChildren(
      h("div", {class: "card stat"}, h("b", {id: "n-devices"}, d.devices), h("span", {}, "devices")),
      h("div", {class: "card stat"}, h("b", {id: "n-online", class: "yes"}, d.online), h("span", {}, "online")),
      h("div", {class: "card stat"}, h("b", {id: "n-offline"}, d.offline), h("span", {}, "offline")),
      h("div", {class: "card stat"}, h("b", {}, d.active_rollouts.length), h("span", {}, "active rollouts")));
    S.plots.forEach((p) => p.destroy());
    S.plots = [];
    charts.replaceChildren();
    const p95 = pivot(d.series, (p) => p.model_version, (p) => p.p95_ms);
    plot(charts, "p95 latency (ms), fleet-wide", p95.xs, p95.series, " ms");
    const err = pivot(d.series, (p) => p.model_version, (p) => 100 * p.error_rate);
    plot(charts, "error rate (%)", err.xs, err.series, " %");
    const kv = (title, obj, id) => h("div", {class: "card"}, h("h2", {}, title), h("table", {id},
      h("tbody", {}, Object.entries(obj).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {class: "num"}, v))))));
    const active = h("div", {class: "card"}, h("h2", {}, "Active rollouts"),
      d.active_rollouts.length ? h("table", {}, h("tbody", {}, d.active_rollouts.map((r) => h("tr", {},
        h("td", {}, h("a", {href: "#/rollout/" + r.id}, r.id)), h("td", {}, r.bundle.name + " " + r.bundle.version),
        h("td", {class: "state " + r.state}, r.state), h("td", {}, "stage " + (r.stage + 1) + "/" + r.stages.length)))))
        : h("p", {class: "muted"}, "none"));
    tables.replaceChildren(kv("Devices per model version", d.by_version, "by-version"),
                           kv("Devices per update state", d.by_update_state, "by-state"), active);
  });
}

const DEV_COLS = [["id", "device"], ["online", "online"], ["model", "model"], ["version", "version"],
                  ["last_seen", "last seen"], ["p95_ms", "p95 ms"], ["cpu", "cpu %"], ["temp", "temp °C"],
                  ["update_state", "update"]];

function devices(main) {
  const q = S.devQuery;
  const field = (name, label, ph) => h("label", {}, label, h("input", {id: "f-" + name, value: q[name] || "",
    placeholder: ph || "", onchange: (e) => { q[name] = e.target.value; route(); }}));
  const online = h("select", {id: "f-online", onchange: (e) => { q.online = e.target.value; route(); }},
    [["", "any"], ["yes", "online"], ["no", "offline"]].map(([v, t]) => h("option", {value: v, selected: q.online === v}, t)));
  main.append(h("h1", {}, "Devices"),
    h("div", {class: "filters"}, field("q", "id contains"), field("tag", "tag", "site=lab"), field("group", "group"),
      h("label", {}, "online", online), field("model", "model"), field("version", "version")));
  const info = h("p", {class: "muted", id: "dev-count"});
  const table = h("table", {id: "devices"});
  main.append(info, table);
  const params = new URLSearchParams(Object.entries(q).filter(([, v]) => v)).toString();
  live("devices?" + params, (d) => {
    info.textContent = d.total + " device(s)" + (d.total > d.devices.length ? ", first " + d.devices.length + " shown" : "");
    const head = h("tr", {}, DEV_COLS.map(([k, label]) => h("th", {
      class: "sort" + (q.sort === k ? " sorted" + (q.order === "asc" ? " asc" : "") : ""), "data-sort": k,
      onclick: () => { q.order = q.sort === k && q.order === "asc" ? "desc" : "asc"; q.sort = k; route(); }}, label)));
    table.replaceChildren(h("thead", {}, head), h("tbody", {}, d.devices.map((r) => h("tr", {"data-device": r.id},
      h("td", {}, h("a", {href: "#/device/" + encodeURIComponent(r.id)}, r.id)),
      h("td", {class: r.online ? "yes" : "no"}, r.online ? "online" : "offline"), h("td", {}, r.model || ""),
      h("td", {}, r.version || ""), h("td", {}, ago(r.last_seen)), h("td", {class: "num"}, fmt(r.p95_ms, 2)),
      h("td", {class: "num"}, fmt(r.cpu)), h("td", {class: "num"}, fmt(r.temp)), h("td", {}, r.update_state || "")))));
  });
}

function device(main, id) {
  const head = h("div", {id: "device-head"});
  const plots = h("div", {class: "grid2", id: "device-plots"});
  const hist = h("div", {id: "device-history"});
  main.append(h("div", {class: "actions"}, h("h1", {}, "Device " + id), rangePicker(() => route())),
              head, h("h2", {}, "Telemetry"), plots, h("h2", {}, "Update history and events"), hist);
  live("devices/" + encodeURIComponent(id), (d) => {
    if (d.error) { head.replaceChildren(h("p", {class: "error"}, d.error)); return; }
    const caps = d.capabilities || {};
    const l = d.latest || {};
    head.replaceChildren(h("div", {class: "grid2"},
      h("div", {class: "card kv"},
        h("div", {}, "status"), h("div", {class: d.online ? "yes" : "no", id: "dev-online"}, d.online ? "online" : "offline"),
        h("div", {}, "last seen"), h("div", {}, ago(d.last_seen)),
        h("div", {}, "model"), h("div", {id: "dev-model"}, (d.model_name || "-") + " " + (d.model_version || "")),
        h("div", {}, "sha256"), h("div", {}, h("code", {}, (d.model_sha256 || "-").slice(0, 16))),
        h("div", {}, "desired"), h("div", {}, d.desired && d.desired.model ? d.desired.model.version + " (" + (d.desired.rollout_id || "") + ")" : "-"),
        h("div", {}, "update state"), h("div", {}, d.update_state || "-"),
        h("div", {}, "agent"), h("div", {}, d.agent_version || "-"),
        h("div", {}, "tags / groups"), h("div", {}, JSON.stringify(d.tags) + " " + (d.groups || []).join(", ")),
        h("div", {}, "now"), h("div", {}, ["cpu", "mem", "temp"].map((k) => k + " " + (l[k] === null || l[k] === undefined ? "–" : fmt(l[k]) + (k === "temp" ? " °C" : "%"))).join("   "))),
      h("div", {class: "card"}, h("h2", {}, "Birth certificate"),
        h("div", {class: "kv", id: "birth"},
          Object.entries(caps.runtime || {}).concat(Object.entries(caps.hardware || {})).map(([k, v]) =>
            [h("div", {}, k), h("div", {}, typeof v === "object" ? JSON.stringify(v) : String(v))])))));
    hist.replaceChildren(h("table", {id: "events"}, h("thead", {}, h("tr", {}, ["time", "event", "from", "to", "rollout", "reason"].map((c) => h("th", {}, c)))),
      h("tbody", {}, d.history.slice().reverse().map((e) => h("tr", {}, h("td", {}, clock(e.ts)), h("td", {}, e.event),
        h("td", {}, e.from_state || ""), h("td", {}, e.to_state || ""), h("td", {}, e.rollout_id || ""),
        h("td", {class: "wrap"}, e.reason || ""))))));
  });
  live("devices/" + encodeURIComponent(id) + "/telemetry?range=" + S.range, (t) => {
    S.plots.forEach((p) => p.destroy());
    S.plots = [];
    plots.replaceChildren();
    const m = t.metrics || {};
    const one = (k) => pivot((m[k] || {}).points || [], () => k, (p) => p.value);
    for (const [k, title, unit] of [["cpu", "CPU (%)", " %"], ["mem", "memory (%)", " %"], ["temp", "temperature (°C)", " °C"]]) {
      const s = one(k); plot(plots, title, s.xs, s.series, unit, k);
    }
    for (const [k, title] of [["count", "inferences per interval"], ["errors", "errors per interval"]]) {
      const s = pivot((m[k] || {}).points || [], (p) => p.model_version, (p) => p.value);
      plot(plots, title + ", per model version", s.xs, s.series, "", k);
    }
    const lat = [];
    for (const k of ["p50_ms", "p95_ms", "p99_ms"]) for (const p of (m[k] || {}).points || []) lat.push({...p, k});
    const s = pivot(lat, (p) => p.k.replace("_ms", "") + " " + p.model_version, (p) => p.value);
    plot(plots, "latency p50/p95/p99 (ms) per model version", s.xs, s.series, " ms", "latency");
  });
}

function rollouts(main) {
  main.append(h("h1", {}, "Rollouts"));
  if (S.me.can_act) main.append(createForm());
  const table = h("table", {id: "rollouts"});
  main.append(table);
  live("rollouts", (rs) => {
    table.replaceChildren(h("thead", {}, h("tr", {}, ["rollout", "kind", "bundle", "target", "state", "stage", "committed", "failed", "created"].map((c) => h("th", {}, c)))),
      h("tbody", {}, rs.map((r) => h("tr", {"data-rollout": r.id}, h("td", {}, h("a", {href: "#/rollout/" + r.id}, r.id)),
        h("td", {}, r.kind), h("td", {}, r.bundle.name + " " + r.bundle.version), h("td", {}, r.target),
        h("td", {class: "state " + r.state}, r.state), h("td", {}, (r.stage + 1) + "/" + r.stages.length + " (" + r.stage_label + ")"),
        h("td", {class: "num"}, r.counts.committed + "/" + r.devices), h("td", {class: "num"}, r.counts.failed + r.counts.timed_out),
        h("td", {}, ago(r.created_at))))));
  });
}

function createForm() {
  const form = h("form", {class: "card create filters", id: "create-rollout"});
  const bundle = h("select", {id: "c-bundle", required: true});
  api("bundles").then((bs) => bundle.replaceChildren(...bs.map((b) =>
    h("option", {value: b.sha256}, b.name + " " + b.version + " (" + b.sha256.slice(0, 12) + ")"))));
  const inp = (id, label, value) => h("label", {}, label, h("input", {id, value}));
  form.append(h("label", {}, "published bundle", bundle), inp("c-target", "target", "all"),
              inp("c-stages", "stages", "1,10%,50%,100%"), inp("c-soak", "soak", "5m"),
              h("button", {class: "primary", type: "submit"}, "Create rollout"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const r = await api("rollouts", {method: "POST", body: {bundle_sha256: bundle.value,
        target: form.querySelector("#c-target").value, stages: form.querySelector("#c-stages").value,
        soak: form.querySelector("#c-soak").value}});
      toast("rollout " + r.id + " created");
      window.location.hash = "#/rollout/" + r.id;
    } catch (e) { toast(e.message, true); }
  });
  return form;
}

function numbers(n) {
  if (!n || n.success_rate === undefined) return "";
  const parts = ["committed " + n.committed + "/" + n.evaluable + " (" + pct(n.success_rate) + ")",
                 "failed " + n.failed + ", timed out " + n.timed_out];
  if (n.inferences) parts.push(n.errors + " errors in " + n.inferences + " inferences");
  if (n.p95_new_ms !== undefined && n.p95_new_ms !== null)
    parts.push("p95 " + fmt(n.p95_new_ms, 2) + " vs " + fmt(n.p95_previous_ms, 2) + " ms");
  return parts.join("; ");
}

function rollout(main, id) {
  const head = h("div", {id: "rollout-head"});
  const acts = h("div", {class: "actions", id: "rollout-actions"});
  const stages = h("table", {id: "stages"});
  const audit = h("table", {id: "audit"});
  main.append(head, acts, h("h2", {}, "Stages"), stages, h("p", {class: "legend muted"},
    STATUSES.map((s) => [h("span", {class: "c-" + s}), s])), h("h2", {}, "Decisions and audit log"), audit);
  let state = null;
  const doAct = async (action) => {
    try {
      const r = await api("rollouts/" + encodeURIComponent(id) + "/" + action, {method: "POST", body: {}});
      toast("rollout " + r.id + ": " + r.state);
    } catch (e) { toast(e.message, true); }
  };
  live("rollouts/" + encodeURIComponent(id), (r) => {
    if (r.error) { head.replaceChildren(h("p", {class: "error"}, r.error)); return; }
    state = r.state;
    head.replaceChildren(h("h1", {}, "Rollout " + r.id),
      h("p", {}, h("span", {class: "state " + r.state, id: "rollout-state"}, r.state), "  ·  ",
        r.bundle.name + " " + r.bundle.version + " → " + r.target + "  ·  ",
        h("span", {id: "rollout-stage"}, "stage " + (r.stage + 1) + "/" + r.stages.length + " (" + r.stage_label + ")"),
        "  ·  " + r.devices + " devices"));
    const allowed = {pause: ["running", "awaiting_approval"], resume: ["paused"], abort: ["running", "paused", "awaiting_approval"],
                     approve: ["awaiting_approval"]};
    acts.replaceChildren(...Object.keys(allowed).map((a) => h("button", {id: "act-" + a, class: a === "abort" ? "danger" : "",
      disabled: !S.me.can_act || !allowed[a].includes(state), title: S.me.can_act ? "" : "operators only",
      onclick: () => doAct(a)}, a)));
    if (!S.me.can_act) acts.append(h("span", {class: "muted", id: "viewer-note"}, "viewer: read only"));
    stages.replaceChildren(h("thead", {}, h("tr", {}, ["stage", "devices (cumulative)", "progress"].concat(STATUSES).map((c) => h("th", {}, c)))),
      h("tbody", {}, r.stage_counts.map((sc) => {
        const prev = sc.stage ? r.stage_counts[sc.stage - 1].size : 0;
        const n = Math.max(1, sc.size - prev);
        const bar = h("div", {class: "bar"}, STATUSES.map((s) => h("span", {class: "c-" + s, style: {width: (100 * sc[s] / n) + "%"}})));
        return h("tr", {"data-stage": sc.stage + 1, class: sc.stage === r.stage ? "current" : ""},
          h("td", {}, (sc.stage + 1) + " (" + sc.label + ")" + (sc.stage === r.stage ? " ◀" : "")), h("td", {class: "num"}, sc.size),
          h("td", {}, bar), STATUSES.map((s) => h("td", {class: "num", "data-status": s}, sc[s])));
      })));
    audit.replaceChildren(h("thead", {}, h("tr", {}, ["time", "actor", "event", "state", "decision and the numbers behind it"].map((c) => h("th", {}, c)))),
      h("tbody", {}, r.audit.filter((e) => !e.event.startsWith("device_")).reverse().map((e) => h("tr", {"data-event": e.event},
        h("td", {}, clock(e.ts)), h("td", {}, e.actor), h("td", {}, e.event), h("td", {}, e.to_state || ""),
        h("td", {class: "wrap"}, e.message, numbers(e.numbers) ? h("div", {class: "muted"}, numbers(e.numbers)) : null)))));
  });
}

// --- routing ---------------------------------------------------------------------------------------------------------

function route() {
  closeAll();
  const main = document.getElementById("main");
  main.replaceChildren();
  const parts = (window.location.hash || "#/").slice(2).split("/");
  const view = parts[0] || "overview";
  document.querySelectorAll("[data-nav]").forEach((a) =>
    a.classList.toggle("active", a.dataset.nav === view || a.dataset.nav + "s" === view.replace(/s?$/, "s") && view !== "overview"));
  const arg = decodeURIComponent(parts.slice(1).join("/"));
  if (view === "devices") devices(main);
  else if (view === "device") device(main, arg);
  else if (view === "rollouts") rollouts(main);
  else if (view === "rollout") rollout(main, arg);
  else overview(main);
}

async function start() {
  S.me = await api("me");
  document.getElementById("who").textContent = S.me.user + " (" + S.me.role + ")";
  document.getElementById("fleet").textContent = S.me.fleet;
  document.body.dataset.role = S.me.role;
  document.getElementById("logout").addEventListener("click", async () => {
    await api("logout", {method: "POST", body: {}}).catch(() => {});
    window.location.replace("/login");
  });
  window.addEventListener("hashchange", route);
  route();
}
start();
