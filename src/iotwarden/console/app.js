// The iotwarden analyst console: a hash-routed page over the REST API.
// The API token is kept in sessionStorage and sent as a bearer token; live
// updates come from /api/events, read with fetch so the token stays in a header.
"use strict";

const main = () => document.getElementById("main");
const SVG = "http://www.w3.org/2000/svg";
let liveAbort = null;

function token() { return sessionStorage.getItem("iotwarden-token"); }

async function api(path, options = {}) {
  const headers = { Authorization: "Bearer " + token() };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method: options.method || "GET", headers, body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  if (response.status === 401) { logout(); throw new Error("the token is invalid or revoked"); }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.detail || response.statusText);
  return data;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, value);
  }
  for (const child of children.flat()) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = "show";
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.className = ""; }, 4000);
}

function when(iso) { return iso ? iso.replace("T", " ").replace("Z", "") : ""; }
function seconds(iso) { return Date.parse(iso) / 1000; }
function button(label, handler) { return el("button", { type: "button", onclick: async (event) => { event.stopPropagation(); try { await handler(); } catch (error) { toast(error.message); } } }, label); }

// Login and live updates ---------------------------------------------------------------

function logout() {
  sessionStorage.removeItem("iotwarden-token");
  if (liveAbort) liveAbort.abort();
  location.hash = "#/login";
}

function renderLogin() {
  document.getElementById("nav").hidden = true;
  const input = el("input", { type: "password", id: "token", placeholder: "iwt_...", autocomplete: "off" });
  const message = el("p", { class: "error" });
  const form = el("form", { id: "login", onsubmit: async (event) => {
    event.preventDefault();
    sessionStorage.setItem("iotwarden-token", input.value.trim());
    try {
      const me = await api("/api/session");
      document.getElementById("who").textContent = `${me.name} (${me.role})`;
      location.hash = "#/overview";
    }
    catch (error) { sessionStorage.removeItem("iotwarden-token"); message.textContent = error.message; }
  } },
    el("h2", {}, "Log in"),
    el("p", {}, "Paste an API token from ", el("code", {}, "iotwarden token create --role analyst"), "."),
    input, el("p", {}, el("button", { type: "submit" }, "Log in")), message);
  main().replaceChildren(form);
}

async function startLive() {
  if (liveAbort) return;
  liveAbort = new AbortController();
  const dot = document.getElementById("live");
  try {
    const response = await fetch("/api/events", { headers: { Authorization: "Bearer " + token() }, signal: liveAbort.signal });
    if (!response.ok) throw new Error("event stream failed: HTTP " + response.status);
    dot.className = "on";
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const kind = (block.match(/^event: (.*)$/m) || [])[1];
        const data = (block.match(/^data: (.*)$/m) || [])[1];
        if (kind && data) onEvent(kind, JSON.parse(data));
      }
    }
  } catch (error) {
    if (error.name === "AbortError") return;
  } finally {
    dot.className = "";
    liveAbort = null;
  }
  if (token()) setTimeout(startLive, 3000);
}

function onEvent(kind, data) {
  if (kind === "alert") toast(`new ${data.severity} ${data.category} alert on ${data.device}`);
  if (kind === "action") toast(`action ${data.kind} on ${data.device}: ${data.state}`);
  const page = location.hash.split("?")[0].split("/")[1];
  if ((kind === "alert" && (page === "alerts" || page === "overview")) || (kind === "action" && (page === "actions" || page === "overview"))) {
    clearTimeout(onEvent.timer);
    onEvent.timer = setTimeout(route, 300);
  }
}

// Charts ---------------------------------------------------------------------------------

function lineChart(points, markers, options = {}) {
  // points: [time, value, mean, low, high]; markers: alerts with time/end_time.
  const width = options.width || 560, height = options.height || 160, pad = 30;
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  if (!points.length) return chart;
  const times = points.map((p) => p[0]);
  const values = points.flatMap((p) => [p[1], p[3], p[4]]).filter((v) => v !== null && Number.isFinite(v));
  let low = Math.min(...values), high = Math.max(...values);
  if (low === high) { low -= 1; high += 1; }
  const t0 = Math.min(...times), t1 = Math.max(...times) || t0 + 1;
  const x = (t) => pad + ((t - t0) / Math.max(t1 - t0, 1)) * (width - pad - 5);
  const y = (v) => height - 15 - ((v - low) / (high - low)) * (height - 25);
  for (const marker of markers) {
    const start = seconds(marker.time), end = marker.end_time ? seconds(marker.end_time) : t1;
    if (end < t0 || start > t1) continue;
    const left = x(Math.max(start, t0));
    const rect = svg("rect", { class: "marker", x: left, y: 5, width: Math.max(x(Math.min(end, t1)) - left, 2), height: height - 20 });
    rect.append(svg("title")); rect.firstChild.textContent = `${marker.category}: ${marker.explanation || ""}`;
    chart.append(rect);
  }
  const banded = points.filter((p) => p[3] !== null && p[4] !== null);
  if (banded.length) {
    const upper = banded.map((p) => `${x(p[0])},${y(p[4])}`);
    const lower = banded.slice().reverse().map((p) => `${x(p[0])},${y(p[3])}`);
    chart.append(svg("polygon", { class: "band", points: upper.concat(lower).join(" ") }));
    chart.append(svg("polyline", { class: "mean", points: banded.map((p) => `${x(p[0])},${y(p[2])}`).join(" ") }));
  }
  chart.append(svg("polyline", { class: "value", points: points.map((p) => `${x(p[0])},${y(p[1])}`).join(" ") }));
  const labels = [[high, y(high) + 4], [low, y(low)]];
  for (const [value, top] of labels) { const text = svg("text", { x: 2, y: top }); text.textContent = Number(value.toPrecision(3)); chart.append(text); }
  const first = svg("text", { x: pad, y: height - 2 }); first.textContent = when(new Date(t0 * 1000).toISOString()).slice(0, 16);
  const last = svg("text", { x: width - 100, y: height - 2 }); last.textContent = when(new Date(t1 * 1000).toISOString()).slice(0, 16);
  chart.append(first, last);
  return chart;
}

function barChart(labels, series, options = {}) {
  const width = options.width || 560, height = options.height || 120;
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const maximum = Math.max(1, ...series.flatMap((s) => s.values));
  const step = (width - 10) / labels.length;
  series.forEach((s, index) => {
    s.values.forEach((value, i) => {
      const h = (value / maximum) * (height - 20);
      const bar = svg("rect", { x: 5 + i * step + index * step / series.length, y: height - 15 - h, width: Math.max(step / series.length - 1, 1), height: h, fill: s.colour });
      bar.append(svg("title")); bar.firstChild.textContent = `${s.name} ${when(labels[i])}: ${value}`;
      chart.append(bar);
    });
  });
  return chart;
}

function evidenceChart(metrics) {
  // One row per contributing metric: the expected range as a bar, the value as a red tick.
  const width = 560, row = 26;
  const chart = svg("svg", { width, height: row * metrics.length + 10, role: "img", class: "evidence" });
  metrics.forEach((m, i) => {
    const numbers = [m.value, m.low, m.high, m.expected].filter((v) => v !== null && Number.isFinite(v));
    if (!numbers.length) return;
    let low = Math.min(...numbers), high = Math.max(...numbers);
    if (low === high) { low -= 1; high += 1; }
    const x = (v) => 150 + ((v - low) / (high - low)) * (width - 170);
    const top = 5 + i * row;
    const name = svg("text", { x: 0, y: top + 14 }); name.textContent = `${m.metric} (surprise ${m.surprise.toFixed(1)})`;
    chart.append(name);
    if (m.low !== null && m.high !== null) chart.append(svg("rect", { class: "bar-ok", x: x(m.low), y: top + 4, width: Math.max(x(m.high) - x(m.low), 1), height: 12 }));
    if (m.value !== null) chart.append(svg("rect", { class: "bar-value", x: x(m.value) - 1.5, y: top, width: 3, height: 20 }));
  });
  return chart;
}

// Pages --------------------------------------------------------------------------------------

async function renderOverview() {
  const data = await api("/api/overview");
  const ranker = data.ranker;
  const cards = el("div", { class: "cards" },
    el("div", { class: "card" }, el("b", {}, String(data.devices)), "devices"),
    el("div", { class: "card" }, el("b", { id: "open-incidents" }, String(data.open_incidents)), "open incidents"),
    el("div", { class: "card" }, el("b", {}, String(data.new_alerts)), "untriaged alerts"),
    el("div", { class: "card" }, el("b", {}, String(data.awaiting_approval.length)), "actions awaiting approval"),
    el("div", { class: "card" }, el("b", {}, ranker.enabled ? `${Math.round(ranker.precision * 100)} %` : "off"),
      ranker.enabled ? `ranker precision (${ranker.folds}-fold CV, ${ranker.labels} labels)` : `ranker: ${ranker.reason}`));
  const rates = data.rates;
  const chart = barChart(rates.hours, [
    { name: "alerts", values: rates.alerts, colour: "#c22" },
    { name: "observations / 100", values: rates.observations.map((v) => Math.round(v / 100)), colour: "#6b8fc7" },
  ]);
  const devices = el("table", {}, el("tr", {}, el("th", {}, "device"), el("th", {}, "risk"), el("th", {}, "open incidents"), el("th", {}, "containment")),
    data.top_devices.map((d) => el("tr", {}, el("td", {}, el("a", { href: `#/devices/${encodeURIComponent(d.device)}` }, d.device)),
      el("td", {}, d.risk.toFixed(1)), el("td", {}, String(d.open_incidents)), el("td", {}, d.active_actions ? `${d.active_actions} active` : ""))));
  main().replaceChildren(el("h2", {}, "Fleet overview"), cards,
    el("div", { class: "layout" },
      el("div", { class: "panel" }, el("h3", {}, "Devices by risk"), devices),
      el("div", { class: "panel" }, el("h3", {}, "Alerts and observations per hour (event time)"), chart,
        rates.observations_recorded ? "" : el("p", { class: "muted" }, "No observation rate recorded: the detector is not wired to the observation recorder."),
        el("h3", {}, "Actions awaiting approval"), actionsTable(data.awaiting_approval))));
}

function actionsTable(actions) {
  if (!actions.length) return el("p", { class: "muted" }, "none");
  return el("table", { id: "actions-table" }, el("tr", {}, el("th", {}, "device"), el("th", {}, "action"), el("th", {}, "state"), el("th", {}, "policy"), el("th", {}, "")),
    actions.map((a) => el("tr", { "data-action-id": a.id }, el("td", {}, el("a", { href: `#/devices/${encodeURIComponent(a.device)}` }, a.device)),
      el("td", {}, `${a.kind} via ${a.actuator}`), el("td", { class: "state" }, a.state), el("td", {}, a.policy),
      el("td", {}, actionButtons(a)))));
}

function actionButtons(action) {
  const run = (command) => async () => {
    const reason = command === "reject" || command === "release" ? (prompt(`Reason to ${command}?`) || "") : "";
    const result = await api(`/api/actions/${action.id}/${command}`, { method: "POST", body: { reason } });
    toast(`action ${action.id}: ${result.state}`);
    route();
  };
  const buttons = [];
  if (action.state === "awaiting_approval") buttons.push(button("Approve", run("approve")), button("Reject", run("reject")));
  if (action.state === "failed") buttons.push(button("Retry", run("approve")));
  if (["awaiting_approval", "pending", "active", "releasing", "failed"].includes(action.state)) buttons.push(button("Release", run("release")));
  if (action.state === "active") buttons.push(button("Confirm", run("confirm")));
  return buttons;
}

async function renderActions() {
  const data = await api("/api/actions?limit=200");
  main().replaceChildren(el("h2", {}, "Response actions"),
    data.can_execute ? "" : el("p", { class: "muted" }, "No policy file is loaded: approvals change the state, and the running responder applies them."),
    actionsTable(data.items));
}

async function renderAlerts() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const state = params.get("state") ?? "new";
  const order = params.get("order") || "rank";
  const query = new URLSearchParams({ order, limit: "200" });
  if (state) query.set("state", state);
  const [data, ranker] = await Promise.all([api("/api/alerts?" + query), api("/api/ranker")]);
  const filter = (name, value, choices) => el("select", { id: `filter-${name}`, onchange: (event) => {
    params.set(name, event.target.value); location.hash = "#/alerts?" + params;
  } }, choices.map(([v, label]) => { const option = el("option", { value: v }, label); if (v === value) option.selected = true; return option; }));
  const detail = el("div", { class: "panel", id: "alert-detail" }, el("p", { class: "muted" }, "Select an alert."));
  const rows = data.items.map((a) => {
    const row = el("tr", { "data-alert-id": a.id, onclick: () => { document.querySelectorAll("tr.selected").forEach((r) => r.classList.remove("selected")); row.classList.add("selected"); showAlert(a.id, detail); } },
      el("td", {}, when(a.time)), el("td", {}, a.device), el("td", { class: "sev-" + a.severity }, `${a.severity} ${a.category}`),
      el("td", {}, a.score.toFixed(1)), el("td", {}, a.rank === null ? "" : `${Math.round(a.rank * 100)} %`),
      el("td", { class: "label" }, a.triage.label ? a.triage.label.replace("_", " ") : a.triage.state),
      el("td", {}, triageButtons(a, false)));
    return row;
  });
  main().replaceChildren(el("h2", {}, `Alert queue (${data.total})`),
    el("p", {}, "State ", filter("state", state, [["new", "new"], ["acknowledged", "acknowledged"], ["resolved", "resolved"], ["", "any"]]),
      " order ", filter("order", order, [["rank", "rank"], ["score", "score"], ["time", "newest"]]), " ",
      el("span", { class: "muted", id: "ranker-status" }, ranker.enabled
        ? `Ranker on: precision ${Math.round(ranker.precision * 100)} %, recall ${Math.round(ranker.recall * 100)} % (${ranker.folds}-fold cross-validation over ${ranker.labels} labels).`
        : `Ranker off: ${ranker.reason}. Ordered by score.`)),
    el("div", { class: "layout" },
      el("table", { id: "alert-table" }, el("tr", {}, el("th", {}, "time"), el("th", {}, "device"), el("th", {}, "alert"), el("th", {}, "score"), el("th", {}, "rank"), el("th", {}, "triage"), el("th", {}, "")), rows),
      detail));
}

function triageButtons(alert, withNote, noteInput) {
  const note = () => (noteInput ? noteInput.value : "");
  const after = (message) => { toast(message); route(); };
  return [
    button("Acknowledge", async () => { await api(`/api/alerts/${alert.id}/acknowledge`, { method: "POST", body: { note: note() } }); after("acknowledged"); }),
    button("True positive", async () => { await api(`/api/alerts/${alert.id}/label`, { method: "POST", body: { label: "true_positive", note: note() } }); after("labelled true positive"); }),
    button("False positive", async () => {
      const result = await api(`/api/alerts/${alert.id}/label`, { method: "POST", body: { label: "false_positive", note: note() } });
      after(`labelled false positive; suppression ${result.triage.suppression_id || "none"} created`);
    }),
    withNote ? button("Resolve", async () => { await api(`/api/alerts/${alert.id}/resolve`, { method: "POST", body: { note: note() } }); after("resolved"); }) : "",
  ];
}

async function showAlert(id, panel) {
  const alert = await api(`/api/alerts/${encodeURIComponent(id)}`);
  const lead = alert.metrics[0] ? alert.metrics[0].metric : null;
  const note = el("input", { type: "text", id: "note", placeholder: "note (optional)", value: alert.triage.note || "" });
  const series = el("div", {}, el("p", { class: "muted" }, "loading the device's recorded series..."));
  panel.replaceChildren(
    el("h3", {}, `${alert.device}: ${alert.category}`),
    el("p", { id: "explanation" }, alert.explanation),
    el("p", { class: "muted" }, `detector ${alert.detector}, severity ${alert.severity}, score ${alert.score.toFixed(1)}, baseline ${alert.baseline}, cohort ${alert.cohort}, ${alert.open ? "still open" : "closed " + when(alert.end_time)}`),
    el("h4", {}, "Evidence: value (red) against the expected range (blue)"), evidenceChart(alert.metrics),
    series, note, el("div", {}, triageButtons(alert, true, note)),
    alert.suppressions.length ? el("p", {}, "Suppressions from this alert: ", alert.suppressions.map((s) => `${s.id}${s.deleted_at ? " (undone)" : ""} `)) : "",
    el("p", {}, el("a", { href: `#/devices/${encodeURIComponent(alert.device)}` }, "device page")));
  const start = seconds(alert.time) - 6 * 3600, end = (alert.end_time ? seconds(alert.end_time) : seconds(alert.time)) + 3 * 3600;
  const data = await api(`/api/devices/${encodeURIComponent(alert.device)}/series?since=${start}&until=${end}`);
  const points = lead && data.series[lead] ? data.series[lead] : [];
  series.replaceChildren(points.length ? el("div", {}, el("h4", {}, `${lead} around the alert, with the learned band`), lineChart(points, [alert]))
    : el("p", { class: "muted" }, data.note || `no recorded ${lead} values around this alert`));
}

async function renderDevice(device) {
  const [info, data] = await Promise.all([api(`/api/devices/${encodeURIComponent(device)}`), api(`/api/devices/${encodeURIComponent(device)}/series`)]);
  const charts = Object.entries(data.series).map(([metric, points]) => {
    const markers = data.alerts.filter((a) => a.metric === metric);
    const baseline = info.baseline && info.baseline[metric];
    return el("div", { class: "panel metric", "data-metric": metric }, el("h4", {}, metric,
      baseline ? el("span", { class: "muted" }, ` learned mean ${baseline.mean?.toPrecision(4)}, band ${baseline.low?.toPrecision(4)} .. ${baseline.high?.toPrecision(4)} (${baseline.count} observations)`) : ""),
      lineChart(points, markers));
  });
  main().replaceChildren(el("h2", {}, `Device ${device}`),
    el("p", {}, `risk ${info.risk.toFixed(1)}, cohort ${info.cohort ?? "?"}, ${info.alerts} alerts, ${info.open_incidents} open incidents. Baseline: ${info.baseline_source}.`),
    charts.length ? el("div", { class: "layout" }, charts) : el("p", { class: "muted" }, data.note || "no recorded observations"),
    el("h3", {}, "Actions"), actionsTable(info.actions));
}

async function renderSuppressions() {
  const data = await api("/api/suppressions?include_deleted=true");
  const rows = data.items.map((s) => el("tr", { "data-suppression-id": s.id, class: s.deleted_at ? "muted" : "" },
    el("td", {}, s.id), el("td", {}, s.kind), el("td", {}, [s.device, s.cohort, s.metric, s.category].map((v) => v ?? "*").join(" / ")),
    el("td", {}, `${when(s.start) || "always"} .. ${when(s.end) || "never"}`), el("td", {}, s.reason), el("td", {}, s.created_by),
    el("td", {}, s.deleted_at ? `undone by ${s.deleted_by}` : button("Undo", async () => { await api(`/api/suppressions/${s.id}`, { method: "DELETE" }); toast("suppression undone"); route(); }))));
  main().replaceChildren(el("h2", {}, "Suppressions and maintenance windows"),
    el("table", {}, el("tr", {}, el("th", {}, "id"), el("th", {}, "kind"), el("th", {}, "device / cohort / metric / category"), el("th", {}, "window (event time)"), el("th", {}, "reason"), el("th", {}, "by"), el("th", {}, "")), rows));
}

// Router -------------------------------------------------------------------------------------

async function route() {
  const hash = location.hash || "#/overview";
  if (!token()) { if (hash !== "#/login") location.hash = "#/login"; else renderLogin(); return; }
  if (hash === "#/login") { renderLogin(); return; }
  document.getElementById("nav").hidden = false;
  startLive();
  const [, page, argument] = hash.split("?")[0].split("/");
  try {
    if (page === "alerts") await renderAlerts();
    else if (page === "actions") await renderActions();
    else if (page === "suppressions") await renderSuppressions();
    else if (page === "devices" && argument) await renderDevice(decodeURIComponent(argument));
    else await renderOverview();
  } catch (error) {
    main().replaceChildren(el("p", { class: "error" }, error.message));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("logout").addEventListener("click", logout);
  if (token()) {
    try { const me = await api("/api/session"); document.getElementById("who").textContent = `${me.name} (${me.role})`; } catch (error) { /* route() shows the login */ }
  }
  route();
});
