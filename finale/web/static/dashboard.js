// The dashboard page: one server-sent event per change carries the whole picture (the JSON of
// finale/web/state.py's snapshot); this script redraws the chart and the tables from it.
//
// Every string of a snapshot comes from log lines, which anyone can write: it is set with
// textContent (or drawn on the chart's canvas), never parsed as HTML. The page's
// Content-Security-Policy forbids inline scripts on top of that.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  let chart = null;
  let latest = null;

  function clock(iso) {
    // '2026-11-28T09:14:03.123Z' -> '09:14:03'
    return typeof iso === "string" && iso.length >= 19 ? iso.slice(11, 19) : "-";
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "-" : String(text);
    if (className) td.className = className;
    if (className === "text") td.title = td.textContent;  // the whole string on hover, as text
    return td;
  }

  function fillTable(id, rows, makeRow) {
    const body = $(id).tBodies[0];
    body.replaceChildren(...rows.map(makeRow));
  }

  function alertRow(alert) {
    const tr = document.createElement("tr");
    const severity = alert.severity === "critical" ? "critical" : "warning";
    tr.className = severity;
    tr.dataset.alertId = String(alert.alert_id);
    tr.append(
      cell(clock(alert.emitted_at)),
      cell(alert.severity, "severity"),
      cell(alert.rule),
      cell(alert.entity_type),
      cell(alert.entity, "text"),
      cell(clock(alert.window_start) + "-" + clock(alert.window_end)),
      cell(alert.measure, "text"),
      cell(alert.cause, "text"),
    );
    return tr;
  }

  function offenderRow(entry) {
    const tr = document.createElement("tr");
    tr.append(cell(entry.entity, "text"), cell(entry.errors, "num"), cell(entry.requests, "num"));
    return tr;
  }

  // The alert windows, shaded behind the series: drawn on the canvas, no DOM element per alert.
  function shadeAlerts(u) {
    if (!latest) return;
    const ctx = u.ctx;
    const top = u.bbox.top;
    const height = u.bbox.height;
    const left = u.bbox.left;
    const right = u.bbox.left + u.bbox.width;
    ctx.save();
    for (const alert of latest.alerts) {
      const [start, end] = alert.window || [];
      if (typeof start !== "number" || typeof end !== "number") continue;
      const x0 = Math.max(left, u.valToPos(start, "x", true));
      const x1 = Math.min(right, u.valToPos(end, "x", true));
      if (x1 <= x0) continue;
      ctx.fillStyle = alert.severity === "critical" ? "rgba(248,81,73,0.18)"
                                                    : "rgba(210,153,34,0.15)";
      ctx.fillRect(x0, top, x1 - x0, height);
    }
    ctx.restore();
  }

  function chartWidth() {
    return Math.max(300, $("chart").clientWidth);
  }

  function makeChart(data) {
    const opts = {
      width: chartWidth(),
      height: 260,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: { x: { time: true } },
      legend: { live: false },
      axes: [
        { stroke: "#8b949e", grid: { stroke: "#30363d" }, ticks: { stroke: "#30363d" },
          // HH:MM (UTC), as everywhere on the page.
          values: (u, splits) => splits.map((s) => new Date(s * 1000).toISOString().slice(11, 16)) },
        { stroke: "#8b949e", grid: { stroke: "#30363d" }, ticks: { stroke: "#30363d" } },
      ],
      series: [
        { label: "window end (UTC)" },
        { label: "requests/s", stroke: "#58a6ff", width: 2, points: { show: false } },
        { label: "errors/s", stroke: "#f85149", width: 2, points: { show: false } },
      ],
      hooks: { drawClear: [shadeAlerts] },
    };
    return new uPlot(opts, data, $("chart"));
  }

  function renderChart(snapshot) {
    const c = snapshot.chart;
    const data = [c.x, c.requests_per_s, c.errors_per_s];
    $("chart").dataset.points = String(c.x.length);
    $("chart-empty").hidden = c.x.length > 0;
    if (chart === null) {
      chart = makeChart(data);
    } else {
      chart.setData(data);
    }
    if (snapshot.end !== null) {
      // The span's full width even while it fills up.
      chart.setScale("x", { min: snapshot.end - snapshot.span_s, max: snapshot.end });
    }
  }

  function ageText(iso) {
    const then = Date.parse(iso);
    if (Number.isNaN(then)) return "-";
    const seconds = Math.max(0, Math.round((Date.now() - then) / 1000));
    return clock(iso) + " UTC (" + seconds + " s ago)";
  }

  function renderHealth(snapshot) {
    const health = snapshot.health;
    $("health-batch").textContent = health ? String(health.batch_id) : "-";
    $("health-age").textContent = health ? ageText(health.emitted_at) : "-";
    $("health-backlog").textContent =
      health && health.backlog !== null && health.backlog !== undefined
        ? String(health.backlog) + " records" : "unknown";
    $("health-dead").textContent =
      health && health.dead_letters_total !== null && health.dead_letters_total !== undefined
        ? String(health.dead_letters_total) + " since the analyzer started" : "unknown";
    const feed = snapshot.feed || {};
    $("health-feed").textContent = feed.connected ? "connected" : (feed.error || "connecting");
  }

  function render(snapshot) {
    latest = snapshot;
    $("span").textContent = "last " + Math.round(snapshot.span_s / 60) + " min of log time" +
      (snapshot.end !== null ? ", up to " + clock(new Date(snapshot.end * 1000).toISOString()) +
       " UTC" : "");
    renderChart(snapshot);
    fillTable("alerts", snapshot.alerts, alertRow);
    $("alert-count").textContent = "(" + snapshot.alerts.length + ")";
    fillTable("top-ips", snapshot.offenders.ips, offenderRow);
    fillTable("top-urls", snapshot.offenders.urls, offenderRow);
    renderHealth(snapshot);
  }

  function setConnection(ok, text) {
    const el = $("connection");
    el.textContent = text;
    el.className = "state " + (ok ? "ok" : "bad");
  }

  function connect() {
    // EventSource reconnects by itself after a dropped connection.
    const source = new EventSource("/events");
    source.onopen = () => setConnection(true, "live");
    source.onerror = () => setConnection(false, "reconnecting…");
    source.onmessage = (event) => render(JSON.parse(event.data));
  }

  window.addEventListener("resize", () => {
    if (chart !== null) chart.setSize({ width: chartWidth(), height: 260 });
  });
  // The "N s ago" of the health panel keeps counting between events.
  setInterval(() => { if (latest) renderHealth(latest); }, 1000);
  connect();
})();
