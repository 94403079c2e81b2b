// The dashboard's script: reads the gateway's admin API every few seconds and draws it;
// changes the rollout through the same API, with the admin token kept in sessionStorage.
// Text from requests and answers is only ever set with textContent (the page's CSP allows
// no inline script, and nothing here parses HTML).
"use strict";

(() => {
  // Every 3 s, or every `?refresh=<seconds>` (0.5 to 300).
  const REFRESH_MS = (() => {
    const given = Number(new URLSearchParams(window.location.search).get("refresh"));
    return Number.isFinite(given) && given > 0 ? Math.min(300, Math.max(0.5, given)) * 1000 : 3000;
  })();
  // The fleet's stats over the last `?minutes=` (default 5), in points of `?step=` seconds
  // (default: the gateway's, one per `minutes` seconds).
  const STATS_QUERY = (() => {
    const page = new URLSearchParams(window.location.search);
    const query = new URLSearchParams({ minutes: page.get("minutes") || "5" });
    if (page.get("step")) query.set("step", page.get("step"));
    return `stats?${query}`;
  })();
  const TOKEN_KEY = "dualstack.adminToken";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const OUTCOMES = ["match", "additive", "breaking", "error", "dropped"];
  const STACKS = ["flask", "fastapi"];
  const SEVERITIES = ["breaking", "additive", "noise", "expected", "ignored"];
  const RUNNING = new Set(["progressing", "waiting"]);
  const FINISHED = new Set(["promoted", "rolled_back", "aborted"]);
  const SHADOW_SAMPLES_KEPT = 120;

  const state = {
    token: sessionStorage.getItem(TOKEN_KEY),
    rollout: null,
    plan: null,
    planDeadline: null,
    shadowSamples: [], // [{t, counts}] of this worker's summary, when the fleet's stats are not served
    diffs: [],
    diffsKey: "",
    selected: null,
    historyKey: "",
    timer: null,
    running: false,
    again: false,
  };

  const $ = (id) => document.getElementById(id);

  // ---- small helpers ---------------------------------------------------------------

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null) continue;
      if (key === "className") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }

  function setText(id, text) {
    const node = $(id);
    if (node && node.textContent !== text) node.textContent = text;
  }

  function show(node, visible) {
    node.classList.toggle("hidden", !visible);
  }

  function showError(id, message) {
    const node = $(id);
    node.textContent = message || "";
    show(node, Boolean(message));
  }

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);

  function trimNum(value, digits) {
    return String(Number(value.toFixed(digits)));
  }

  const fmt = {
    count: (v) => (isNum(v) ? Math.round(v).toLocaleString("en-US") : "—"),
    share: (v) => (isNum(v) ? `${trimNum(v, 2)} %` : "—"),
    rate: (v) => (isNum(v) ? `${trimNum(v * 100, 2)} %` : "—"),
    rps: (v) => (isNum(v) ? `${v < 10 ? v.toFixed(2) : v.toFixed(1)} req/s` : "—"),
    ms: (v) =>
      isNum(v) ? `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : Math.round(v)} ms` : "—",
    threads: (v) => (isNum(v) ? `${trimNum(v, 1)}` : "—"),
  };

  function clock(epochSeconds) {
    const d = new Date(epochSeconds * 1000);
    return d.toTimeString().slice(0, 8);
  }

  function when(iso) {
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return `${d.toLocaleDateString("en-CA")} ${d.toTimeString().slice(0, 8)}`;
  }

  function duration(seconds) {
    const s = Math.max(0, Math.ceil(seconds));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    return `${m} min ${String(s % 60).padStart(2, "0")} s`;
  }

  function shown(value) {
    if (value === undefined) return "(absent)";
    return typeof value === "string" ? value : JSON.stringify(value);
  }

  // ---- the API -----------------------------------------------------------------------

  // Relative to the page (/_gateway/ui): "rollout" is /_gateway/rollout, wherever the
  // gateway is mounted.
  async function api(method, path, { body, auth } = {}) {
    const headers = { Accept: "application/json" };
    if (auth) headers.Authorization = `Bearer ${state.token}`;
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      return { ok: false, status: 0, data: null, error: `gateway unreachable (${err.message})` };
    }
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    let error = null;
    if (!response.ok) {
      const said = data && typeof data.error === "string" ? data.error : response.statusText;
      error = `${response.status}: ${said}`;
    }
    return { ok: response.ok, status: response.status, data, error };
  }

  // ---- charts (inline SVG) ----------------------------------------------------------

  const W = 360;
  const H = 130;
  const PAD = { left: 52, right: 8, top: 8, bottom: 20 };

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const power = 10 ** Math.floor(Math.log10(value));
    for (const step of [1, 2, 2.5, 5, 10]) {
      if (value <= step * power) return step * power;
    }
    return 10 * power;
  }

  // A chart of `series` ([{name, cls, values}]) over `times` (epoch seconds) in `figure`:
  // lines, or stacked bars when `stacked`. The figure's data attributes say what it shows
  // (points, the sum of every value, the last values), for people and tests alike.
  function drawChart(figure, times, series, { format, stacked = false, empty = "no data" }) {
    const n = times.length;
    const values = series.map((s) => times.map((_, i) => (isNum(s.values?.[i]) ? s.values[i] : null)));
    let sum = 0;
    let top = 0;
    for (let i = 0; i < n; i += 1) {
      let column = 0;
      for (const row of values) {
        if (row[i] === null) continue;
        sum += row[i];
        column = stacked ? column + row[i] : Math.max(column, row[i]);
      }
      top = Math.max(top, column);
    }
    figure.dataset.points = String(n);
    figure.dataset.sum = String(Math.round(sum * 1000) / 1000);
    figure.dataset.last = JSON.stringify(
      Object.fromEntries(series.map((s, k) => [s.name, n ? values[k][n - 1] : null])),
    );
    figure.querySelector("svg")?.remove();
    const chart = svg("svg", {
      viewBox: `0 0 ${W} ${H}`,
      role: "img",
      "aria-label": figure.querySelector("figcaption")?.textContent || "chart",
    });
    const x0 = PAD.left;
    const x1 = W - PAD.right;
    const y0 = H - PAD.bottom;
    const y1 = PAD.top;
    const max = niceMax(top);
    const y = (v) => y0 - (v / max) * (y0 - y1);
    for (const tick of [0, max / 2, max]) {
      chart.append(svg("line", { x1: x0, x2: x1, y1: y(tick), y2: y(tick), class: "gridline" }));
      const label = svg("text", { x: x0 - 4, y: y(tick) + 3, class: "axis", "text-anchor": "end" });
      label.textContent = format(tick);
      chart.append(label);
    }
    if (n === 0 || values.every((row) => row.every((v) => v === null))) {
      const note = svg("text", { x: (x0 + x1) / 2, y: (y0 + y1) / 2, class: "empty", "text-anchor": "middle" });
      note.textContent = empty;
      chart.append(note);
      figure.append(chart);
      return;
    }
    const span = Math.max(1, times[n - 1] - times[0]);
    const x = (i) => (n === 1 ? (x0 + x1) / 2 : x0 + ((times[i] - times[0]) / span) * (x1 - x0));
    for (const [i, anchor] of [[0, "start"], [n - 1, "end"]]) {
      const label = svg("text", { x: x(i), y: H - 5, class: "axis", "text-anchor": anchor });
      label.textContent = clock(times[i]);
      chart.append(label);
    }
    if (stacked) {
      const width = Math.max(1, ((x1 - x0) / n) * 0.8);
      for (let i = 0; i < n; i += 1) {
        let base = 0;
        series.forEach((s, k) => {
          const v = values[k][i];
          if (!v) return;
          const left = Math.min(Math.max(x0, x(i) - width / 2), x1 - width);
          const rect = svg("rect", {
            x: left, y: y(base + v), width, height: Math.max(0.5, y(base) - y(base + v)),
            class: `bar ${s.cls}`,
          });
          const tip = svg("title");
          tip.textContent = `${clock(times[i])} ${s.name}: ${format(v)}`;
          rect.append(tip);
          chart.append(rect);
          base += v;
        });
      }
    } else {
      series.forEach((s, k) => {
        let d = "";
        let pen = false;
        let last = null;
        values[k].forEach((v, i) => {
          if (v === null) {
            pen = false;
            return;
          }
          d += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
          const next = values[k][i + 1];
          if (!pen && (next === null || next === undefined) && i !== n - 1) {
            // A point between gaps makes no line: a dot shows it.
            chart.append(svg("circle", { cx: x(i), cy: y(v), r: 1.8, class: `point ${s.cls}` }));
          }
          pen = true;
          last = i;
        });
        if (!d) return;
        chart.append(svg("path", { d, class: `line ${s.cls}` }));
        if (last !== null) {
          const dot = svg("circle", { cx: x(last), cy: y(values[k][last]), r: 2.5, class: `point ${s.cls}` });
          const tip = svg("title");
          tip.textContent = `${s.name}: ${format(values[k][last])}`;
          dot.append(tip);
          chart.append(dot);
        }
      });
    }
    figure.append(chart);
  }

  // ---- the rollout -------------------------------------------------------------------

  function syncInput(name, value) {
    const range = $(`${name}-range`);
    const input = $(`${name}-input`);
    if (input.dataset.dirty === "1" || document.activeElement === input || document.activeElement === range) return;
    input.value = String(value);
    range.value = String(value);
  }

  function renderRollout(res) {
    if (!res.ok || !res.data) {
      setText("rollout-version", res.error || "unavailable");
      return;
    }
    const r = res.data;
    state.rollout = r;
    setText("fastapi-percent", fmt.share(r.fastapi_percent));
    setText("flask-percent", fmt.share(100 - r.fastapi_percent));
    setText("shadow-percent", fmt.share(r.shadow_percent));
    setText("rollout-version", String(r.version));
    $("split-bar-fastapi").style.width = `${Math.max(0, Math.min(100, r.fastapi_percent))}%`;
    syncInput("fastapi", r.fastapi_percent);
    syncInput("shadow", r.shadow_percent);
    const body = $("routes-body");
    const rows = [el("tr", { className: "default-route" },
      el("td", { text: "(default)" }), el("td", { className: "r", text: fmt.share(r.fastapi_percent) }),
      el("td", {}, miniBar(r.fastapi_percent)))];
    for (const [prefix, percent] of Object.entries(r.routes || {}).sort()) {
      rows.push(el("tr", { dataset: { prefix } },
        el("td", { className: "mono", text: prefix }), el("td", { className: "r", text: fmt.share(percent) }),
        el("td", {}, miniBar(percent))));
    }
    body.replaceChildren(...rows);
  }

  function miniBar(percent) {
    const fill = el("div", { className: "bar-fastapi" });
    fill.style.width = `${Math.max(0, Math.min(100, percent))}%`;
    return el("div", { className: "bar mini" }, fill);
  }

  // ---- the fleet's stats -------------------------------------------------------------

  function renderStats(res) {
    const data = res.ok && res.data && Array.isArray(res.data.times) ? res.data : null;
    show($("stats-unavailable"), !data);
    $("stats-card").dataset.available = data ? "true" : "false";
    if (!data) {
      setText("stats-unavailable", `stats unavailable${res.status ? ` (${res.error})` : ""}`);
      setText("stats-window", "");
    } else {
      const minutes = data.times.length && data.step_seconds ? Math.round((data.times.length * data.step_seconds) / 60) : 0;
      setText("stats-window", `${data.source || "fleet"} · last ${minutes || "few"} min · every ${data.step_seconds ?? "?"} s`);
    }
    const times = data ? data.times : [];
    const stacks = (data && data.stacks) || {};
    const totals = (data && data.totals) || {};
    for (const stack of STACKS) {
      const t = totals[stack] || {};
      setText(`${stack}-requests`, fmt.count(t.requests));
      setText(`${stack}-rps`, fmt.rps(t.rps));
      setText(`${stack}-errors`, fmt.count(t.errors));
      setText(`${stack}-error-rate`, fmt.rate(t.error_rate));
      setText(`${stack}-p50`, fmt.ms(t.p50_ms));
      setText(`${stack}-p99`, fmt.ms(t.p99_ms));
      setText(`${stack}-shed`, fmt.count(t.shed));
      $(`${stack}-requests`).dataset.value = isNum(t.requests) ? String(t.requests) : "";
    }
    const per = (field) => STACKS.map((stack) => ({
      name: stack === "flask" ? "Flask" : "FastAPI", cls: stack, values: (stacks[stack] || {})[field] || [],
    }));
    const empty = data ? "no data" : "stats unavailable";
    drawChart($("chart-rps"), times, per("rps"), { format: (v) => `${trimNum(v, 1)}/s`, empty });
    drawChart($("chart-error-rate"), times, per("error_rate"), { format: (v) => `${trimNum(v * 100, 1)} %`, empty });
    drawChart($("chart-p50"), times, per("p50_ms"), { format: (v) => `${trimNum(v, 1)} ms`, empty });
    drawChart($("chart-p99"), times, per("p99_ms"), { format: (v) => `${trimNum(v, 1)} ms`, empty });
    drawChart($("chart-shed"), times, per("shed"), { format: (v) => trimNum(v, 1), stacked: true, empty });
    const wsgi = (data && data.wsgi) || {};
    drawChart($("chart-wsgi"), times, [
      { name: "busy", cls: "flask", values: wsgi.busy || [] },
      { name: "threads", cls: "capacity", values: wsgi.threads || [] },
    ], { format: fmt.threads, empty });
    return data;
  }

  // ---- shadow ------------------------------------------------------------------------

  function renderShadow(res, stats) {
    const routes = (res.ok && res.data && res.data.routes) || {};
    const totals = Object.fromEntries(OUTCOMES.map((o) => [o, 0]));
    const rows = [];
    for (const [route, counts] of Object.entries(routes).sort()) {
      for (const o of OUTCOMES) totals[o] += counts[o] || 0;
      rows.push(el("tr", { dataset: { route } }, el("td", { className: "mono", text: route }),
        ...OUTCOMES.map((o) => el("td", { className: `r ${o}`, text: fmt.count(counts[o] || 0) }))));
    }
    $("shadow-routes-body").replaceChildren(...rows);
    for (const o of OUTCOMES) setText(`shadow-${o}`, res.ok ? fmt.count(totals[o]) : "—");
    const compared = OUTCOMES.reduce((n, o) => n + totals[o], 0);
    setText("shadow-total", res.ok ? fmt.count(compared) : res.error || "—");
    $("shadow-total").dataset.value = String(compared);
    setText("shadow-in-flight", res.ok ? fmt.count(res.data.in_flight) : "—");

    let times;
    let series;
    if (stats && stats.shadow) {
      setText("shadow-chart-source", "· fleet, per step");
      times = stats.times;
      series = OUTCOMES.map((o) => ({ name: o, cls: o, values: stats.shadow[o] || [] }));
    } else {
      // The fleet's series are not served: what this worker judged between two refreshes.
      setText("shadow-chart-source", "· this worker, per refresh");
      if (res.ok) {
        state.shadowSamples.push({ t: Date.now() / 1000, counts: totals });
        if (state.shadowSamples.length > SHADOW_SAMPLES_KEPT) state.shadowSamples.shift();
      }
      const samples = state.shadowSamples;
      times = samples.slice(1).map((s) => s.t);
      series = OUTCOMES.map((o) => ({
        name: o, cls: o, values: samples.slice(1).map((s, i) => Math.max(0, s.counts[o] - samples[i].counts[o])),
      }));
    }
    drawChart($("chart-shadow"), times, series, { format: (v) => trimNum(v, 1), stacked: true });
  }

  // ---- the plan ----------------------------------------------------------------------

  function renderPlan(res) {
    const plan = res.ok ? res.data : null;
    state.plan = plan;
    show($("plan-view"), Boolean(plan));
    show($("plan-none"), !plan);
    if (!plan) {
      setText("plan-none", res.status === 404 ? "No plan has been started." : `plan unavailable (${res.error})`);
      state.planDeadline = null;
    } else {
      const phase = $("plan-phase");
      phase.textContent = plan.phase;
      phase.className = `badge phase-${plan.phase}`;
      setText("plan-step", `${plan.step} / ${plan.steps_total}`);
      setText("plan-step-percent", fmt.share(plan.step_percent));
      setText("plan-current-percent", fmt.share(plan.current_percent));
      setText("plan-reason", plan.reason || "");
      setText("plan-failed", `${plan.failed_checks} of ${plan.max_failed_checks}`);
      setText("plan-checks-made", String(plan.checks_made));
      setText("plan-prefix", plan.prefix || "(default share)");
      setText("plan-next-at", plan.next_check_at ? `at ${when(plan.next_check_at).slice(11)}` : "");
      state.planDeadline = isNum(plan.next_check_in_seconds) ? Date.now() + plan.next_check_in_seconds * 1000 : null;
      $("plan-steps").replaceChildren(...(plan.steps || []).map((p, i) => {
        const cls = i + 1 < plan.step ? "done" : i + 1 === plan.step ? "current" : "";
        return el("li", { className: cls, text: fmt.share(p) });
      }));
      renderChecks(plan.checks || []);
    }
    tickCountdown();
    planButtons();
  }

  function planButtons() {
    const plan = state.plan;
    const running = plan && RUNNING.has(plan.phase);
    setEnabled($("plan-pause"), Boolean(running));
    setEnabled($("plan-resume"), Boolean(plan && plan.phase === "paused"));
    setEnabled($("plan-abort"), Boolean(plan && !FINISHED.has(plan.phase)));
    setEnabled($("plan-rollback"), Boolean(plan && !FINISHED.has(plan.phase)));
  }

  // A cell of `name value` lines, one a pair.
  function pairs(object, extra) {
    const entries = Object.entries(object || {});
    if (extra) entries.push(extra);
    return el("td", { className: "mono pairs" }, ...entries.map(([k, v]) =>
      el("span", { text: `${k} ${v === null ? "—" : typeof v === "number" ? trimNum(v, 4) : shown(v)}` })));
  }

  function renderChecks(checks) {
    const rows = [];
    for (const check of checks) {
      const requests = check.requests || {};
      const served = `Flask ${fmt.count(requests.flask)} · FastAPI ${fmt.count(requests.fastapi)}`;
      const gates = check.gates || [];
      const head = [
        el("td", { text: String(check.number ?? "") , title: check.at || "" }),
        el("td", {}, el("span", { className: `badge verdict-${check.verdict}`, text: check.verdict || "" })),
        el("td", { text: served }),
      ];
      if (!gates.length) {
        rows.push(el("tr", { className: "check-first" }, ...head,
          el("td", { colspan: "4", className: "muted", text: `fewer than ${check.min_requests ?? "?"} requests on a stack: no verdict` })));
        continue;
      }
      gates.forEach((gate, i) => {
        const cells = i === 0 ? head : [el("td"), el("td"), el("td")];
        rows.push(el("tr", { className: `${i === 0 ? "check-first " : ""}${gate.passed ? "pass" : "fail"}` }, ...cells,
          el("td", {}, el("span", { className: gate.passed ? "ok" : "bad", text: gate.passed ? "✓ " : "✗ " }), gate.name || ""),
          pairs(gate.measured, isNum(gate.p_value) ? ["p_value", gate.p_value] : null),
          pairs(gate.thresholds),
          el("td", { text: gate.reason || "" })));
      });
    }
    $("plan-checks-body").replaceChildren(...rows);
    show($("plan-checks"), rows.length > 0);
    show($("plan-no-checks"), rows.length === 0);
  }

  function tickCountdown() {
    const plan = state.plan;
    if (!plan || state.planDeadline === null) {
      setText("plan-countdown", plan && RUNNING.has(plan.phase) ? "now" : "—");
      return;
    }
    setText("plan-countdown", duration((state.planDeadline - Date.now()) / 1000));
  }

  // ---- history -----------------------------------------------------------------------

  function describeChange(change) {
    const parts = [];
    const { old = {}, new: now = {} } = change;
    if (old.fastapi_percent !== now.fastapi_percent) {
      parts.push(`FastAPI ${fmt.share(old.fastapi_percent)} → ${fmt.share(now.fastapi_percent)}`);
    }
    if (old.shadow_percent !== now.shadow_percent) {
      parts.push(`shadow ${fmt.share(old.shadow_percent)} → ${fmt.share(now.shadow_percent)}`);
    }
    const before = old.routes || {};
    const after = now.routes || {};
    for (const prefix of [...new Set([...Object.keys(before), ...Object.keys(after)])].sort()) {
      if (before[prefix] !== after[prefix]) {
        const a = prefix in before ? fmt.share(before[prefix]) : "default";
        const b = prefix in after ? fmt.share(after[prefix]) : "default";
        parts.push(`${prefix} ${a} → ${b}`);
      }
    }
    return parts.join(" · ");
  }

  function renderHistory(res) {
    const list = $("history-list");
    if (!state.token) {
      list.replaceChildren();
      state.historyKey = "";
      return;
    }
    if (!res.ok) {
      list.replaceChildren(el("li", { className: "alert", text: `history unavailable (${res.error})` }));
      state.historyKey = "";
      return;
    }
    const changes = res.data.changes || [];
    const key = changes.map((c) => c.new && c.new.version).join(",");
    if (key === state.historyKey) return;
    state.historyKey = key;
    list.replaceChildren(...changes.map((change) => {
      const event = change.event;
      const item = el("li", { className: `entry actor-${change.actor}`, dataset: { actor: change.actor, version: String(change.new?.version) } },
        el("div", { className: "when muted small", text: `${when(change.at)} · v${change.new?.version}` }),
        el("div", { className: "who" }, el("span", { className: "badge", text: change.actor }), " ",
          el("span", { className: "what", text: describeChange(change) })));
      if (event) {
        const detail = [`plan ${event.action}`];
        if (event.step) detail.push(`step ${event.step}/${(event.steps || []).length}`);
        if (event.phase) detail.push(event.phase);
        item.append(el("div", { className: "event" }, el("span", { className: `badge phase-${event.phase}`, text: detail.join(" · ") }),
          " ", el("span", { className: "reason", text: event.reason || "" })));
        if (event.check && event.check.verdict) {
          item.append(el("div", { className: "muted small", text: `check ${event.check.number}: ${event.check.verdict}` }));
        }
      }
      return item;
    }));
  }

  // ---- differing exchanges -----------------------------------------------------------

  // A small JSON reader that keeps the text's key order and number spelling, so a body
  // is shown as sent, line by line, each line with the diff engine's path of its value.
  function parseJson(text) {
    let at = 0;
    const ws = () => { while (at < text.length && " \t\r\n".includes(text[at])) at += 1; };
    const fail = () => { throw new SyntaxError(`unexpected input at ${at}`); };
    function string() {
      const start = at;
      at += 1;
      while (at < text.length && text[at] !== '"') at += text[at] === "\\" ? 2 : 1;
      if (at >= text.length) fail();
      at += 1;
      return JSON.parse(text.slice(start, at));
    }
    function value() {
      ws();
      const c = text[at];
      if (c === "{") {
        at += 1;
        const entries = [];
        ws();
        if (text[at] === "}") { at += 1; return { type: "object", entries }; }
        for (;;) {
          ws();
          if (text[at] !== '"') fail();
          const key = string();
          ws();
          if (text[at] !== ":") fail();
          at += 1;
          entries.push([key, value()]);
          ws();
          if (text[at] === ",") { at += 1; continue; }
          if (text[at] === "}") { at += 1; return { type: "object", entries }; }
          fail();
        }
      }
      if (c === "[") {
        at += 1;
        const items = [];
        ws();
        if (text[at] === "]") { at += 1; return { type: "array", items }; }
        for (;;) {
          items.push(value());
          ws();
          if (text[at] === ",") { at += 1; continue; }
          if (text[at] === "]") { at += 1; return { type: "array", items }; }
          fail();
        }
      }
      if (c === '"') return { type: "scalar", raw: JSON.stringify(string()) };
      const m = /^(-?\d+(\.\d+)?([eE][+-]?\d+)?|true|false|null)/.exec(text.slice(at, at + 400));
      if (!m) fail();
      at += m[0].length;
      return { type: "scalar", raw: m[0] };
    }
    const tree = value();
    ws();
    if (at !== text.length) fail();
    return tree;
  }

  function keySegment(key) {
    return key === "" || /[.[\]"\\*\s]/.test(key) ? `[${JSON.stringify(key)}]` : `.${key}`;
  }

  // [{text, path}] for a JSON tree, two spaces an indent level.
  function jsonLines(node, path = "$", indent = "", prefix = "", suffix = "") {
    if (node.type === "scalar") return [{ text: `${indent}${prefix}${node.raw}${suffix}`, path }];
    const [open, close, children] = node.type === "object"
      ? ["{", "}", node.entries.map(([k, v]) => [path + keySegment(k), v, `${JSON.stringify(k)}: `])]
      : ["[", "]", node.items.map((v, i) => [`${path}[${i}]`, v, ""])];
    if (!children.length) return [{ text: `${indent}${prefix}${open}${close}${suffix}`, path }];
    const lines = [{ text: `${indent}${prefix}${open}`, path }];
    children.forEach(([childPath, child, childPrefix], i) => {
      lines.push(...jsonLines(child, childPath, `${indent}  `, childPrefix, i < children.length - 1 ? "," : ""));
    });
    lines.push({ text: `${indent}${close}${suffix}`, path });
    return lines;
  }

  function bodyLines(text) {
    if (!text) return [{ text: "(empty body)", path: "$", muted: true }];
    try {
      return jsonLines(parseJson(text));
    } catch {
      return text.split("\n").map((line) => ({ text: line, path: "$" }));
    }
  }

  function covers(diffPath, linePath) {
    if (diffPath === linePath) return true;
    if (!diffPath.startsWith("$")) return false;
    return linePath.startsWith(diffPath) && ".[".includes(linePath[diffPath.length]);
  }

  function answerColumn(title, answer, differences) {
    const lines = [];
    if (!answer) return el("div", { className: "answer" }, el("h3", { text: title }), el("p", { className: "muted", text: "no answer" }));
    lines.push({ text: `status ${answer.status ?? "(none)"}`, path: "status" });
    for (const [name, value] of answer.headers || []) lines.push({ text: `${name}: ${value}`, path: `header:${name}` });
    lines.push({ text: "", path: "" });
    const first = lines.length;
    lines.push(...bodyLines(answer.body || ""));
    const pre = el("pre", { className: "code" });
    lines.forEach((line, i) => {
      // The gravest difference at or above the line's path names its highlight.
      let severity = null;
      for (const d of differences) {
        if (line.path === "" || !covers(d.path, line.path)) continue;
        if (severity === null || SEVERITIES.indexOf(d.severity) < SEVERITIES.indexOf(severity)) severity = d.severity;
      }
      const changed = severity === null ? "" : ` changed sev-${severity}`;
      const row = el("span", {
        className: `line${changed}${i < first ? " head" : ""}${line.muted ? " muted" : ""}`,
        dataset: { path: line.path },
        text: line.text || " ",
      });
      pre.append(row, "\n");
    });
    const meta = [`${answer.backend}`, isNum(answer.ms) ? fmt.ms(answer.ms) : null,
      answer.body_truncated ? "body truncated" : null, answer.failure ? `failed: ${answer.failure}` : null].filter(Boolean);
    return el("div", { className: `answer ${answer.backend}`, dataset: { testid: `answer-${title}` } },
      el("h3", {}, el("span", { className: `dot ${answer.backend}` }), `${title} · ${meta.join(" · ")}`), pre);
  }

  function renderDiffDetail(sample) {
    const detail = $("diff-detail");
    if (!sample) {
      detail.replaceChildren(el("p", { className: "muted", text: "No differing exchange yet." }));
      return;
    }
    const req = sample.request || {};
    const target = `${req.method} ${req.path}${req.query ? `?${req.query}` : ""}`;
    const differences = sample.differences || [];
    const requestBody = el("pre", { className: "code request-body", dataset: { testid: "diff-request-body" } });
    for (const line of bodyLines(req.body || "")) requestBody.append(el("span", { className: "line", text: line.text || " " }), "\n");
    const table = el("table", { className: "table differences", dataset: { testid: "diff-differences" } },
      el("thead", {}, el("tr", {}, ...["Path", "Kind", "Severity", "Flask (legacy)", "FastAPI (candidate)", "Reason"].map((h) => el("th", { text: h })))),
      el("tbody", {}, ...differences.map((d) => el("tr", { className: `sev-${d.severity}` },
        el("td", { className: "mono", text: d.path }), el("td", { text: d.kind }),
        el("td", {}, el("span", { className: `badge ${d.severity}`, text: d.severity })),
        el("td", { className: "mono", text: shown(d.legacy) }), el("td", { className: "mono", text: shown(d.candidate) }),
        el("td", { text: d.reason || "" })))));
    detail.replaceChildren(
      el("div", { className: "diff-request" },
        el("span", { className: `badge ${sample.outcome}`, text: sample.outcome }), " ",
        el("span", { className: "mono", dataset: { testid: "diff-target" }, text: target }),
        el("span", { className: "muted small", text: ` · ${when(sample.at)} · ${sample.request_id}` })),
      el("details", { className: "request-headers" },
        el("summary", { text: `Request headers (${(req.headers || []).length})` }),
        el("pre", { className: "code" }, ...(req.headers || []).flatMap(([name, value]) => [
          el("span", { className: "line", text: `${name}: ${value}` }), "\n"]))),
      el("h3", { text: "Request body" }), requestBody,
      el("div", { className: "columns" },
        answerColumn("primary", sample.primary, differences),
        answerColumn("shadow", sample.shadow, differences)),
      el("h3", { text: `Differences (${differences.length})` }), table);
  }

  function sampleId(sample) {
    return `${sample.request_id}@${sample.at}`;
  }

  function renderDiffs(res) {
    const list = $("diffs-list");
    if (!state.token) {
      state.diffs = [];
      state.diffsKey = "";
      list.replaceChildren();
      setText("diffs-count", "");
      renderDiffDetail(null);
      return;
    }
    if (!res.ok) {
      setText("diffs-count", res.status === 404 ? "(this gateway does not shadow)" : `(${res.error})`);
      return;
    }
    const diffs = res.data.diffs || [];
    const key = diffs.map(sampleId).join("|");
    setText("diffs-count", `(${diffs.length} newest)`);
    if (key === state.diffsKey) return;
    state.diffs = diffs;
    state.diffsKey = key;
    if (!diffs.some((d) => sampleId(d) === state.selected)) state.selected = diffs.length ? sampleId(diffs[0]) : null;
    list.replaceChildren(...diffs.map((d) => {
      const id = sampleId(d);
      const button = el("button", { type: "button", className: `diff-item${id === state.selected ? " selected" : ""}`, dataset: { id } },
        el("span", { className: `badge ${d.outcome}`, text: d.outcome }), " ",
        el("span", { className: "mono", text: `${d.request?.method} ${d.request?.path}` }),
        el("span", { className: "muted small", text: ` ${d.primary?.status ?? "—"} / ${d.shadow?.status ?? "—"} · ${when(d.at).slice(11)}` }));
      button.addEventListener("click", () => {
        state.selected = id;
        for (const other of list.querySelectorAll(".diff-item")) other.classList.toggle("selected", other.dataset.id === id);
        renderDiffDetail(d);
      });
      return el("li", {}, button);
    }));
    renderDiffDetail(diffs.find((d) => sampleId(d) === state.selected) || null);
  }

  // ---- the token and the controls ------------------------------------------------------

  function setEnabled(node, enabled) {
    node.disabled = !state.token || !enabled;
  }

  function renderMode() {
    const admin = Boolean(state.token);
    document.body.classList.toggle("has-token", admin);
    show($("readonly-notice"), !admin);
    show($("token-form"), !admin);
    show($("token-held"), admin);
    for (const node of document.querySelectorAll(".admin-only input, .admin-only button, .admin-only select")) {
      node.disabled = !admin;
    }
    planButtons();
  }

  async function useToken(event) {
    event.preventDefault();
    const input = $("token-input");
    const given = input.value.trim();
    if (!given) {
      showError("token-error", "Enter the admin token first.");
      return;
    }
    const previous = state.token;
    state.token = given;
    const res = await api("GET", "rollout/history?limit=1", { auth: true });
    if (res.status === 401 || res.status === 403) {
      state.token = previous;
      showError("token-error", `Token refused: ${res.error}`);
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, given);
    input.value = "";
    showError("token-error", "");
    renderMode();
    refreshNow();
  }

  function forgetToken() {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    for (const id of ["rollout-error", "plan-error", "token-error"]) showError(id, "");
    renderMode();
    renderDiffs({ ok: false });
    renderHistory({ ok: false });
  }

  async function control(errorId, method, path, body) {
    const res = await api(method, path, { body, auth: true });
    showError(errorId, res.ok ? "" : res.error);
    refreshNow();
    return res;
  }

  function shareControl(name, field) {
    const range = $(`${name}-range`);
    const input = $(`${name}-input`);
    range.addEventListener("input", () => {
      input.value = range.value;
      input.dataset.dirty = "1";
    });
    input.addEventListener("input", () => {
      range.value = input.value;
      input.dataset.dirty = "1";
    });
    $(`${name}-form`).addEventListener("submit", async (event) => {
      event.preventDefault();
      const value = Number(input.value);
      if (input.value.trim() === "" || !Number.isFinite(value)) {
        showError("rollout-error", `${field} must be a number from 0 to 100`);
        return;
      }
      const body = { [field]: value };
      if (state.rollout) body.version = state.rollout.version;
      const res = await control("rollout-error", "PUT", "rollout", body);
      if (res.ok) delete input.dataset.dirty;
    });
  }

  function optionalNumber(id, name, body) {
    const raw = $(id).value.trim();
    if (raw === "") return;
    if (["off", "none", "null"].includes(raw.toLowerCase())) {
      body[name] = null;
      return;
    }
    const value = Number(raw);
    if (!Number.isFinite(value)) throw new Error(`${name} must be a number, or "off"`);
    body[name] = value;
  }

  async function startPlan(event) {
    event.preventDefault();
    let body;
    try {
      const steps = $("plan-steps-input").value.split(/[\s,;]+/).filter(Boolean).map(Number);
      if (!steps.length || steps.some((s) => !Number.isFinite(s))) throw new Error("steps must be numbers, e.g. 5, 25, 50, 100");
      body = {
        steps,
        interval_seconds: Number($("plan-interval").value),
        min_requests: Number($("plan-min-requests").value),
        max_failed_checks: Number($("plan-max-failed").value),
      };
      const prefix = $("plan-prefix-input").value.trim();
      if (prefix) body.prefix = prefix;
      const gates = {};
      optionalNumber("gate-error-rate", "max_error_rate_increase", gates);
      optionalNumber("gate-p99-ratio", "max_p99_ratio", gates);
      optionalNumber("gate-breaking", "max_breaking_shadow_rate", gates);
      const floor = $("gate-p99-floor").value.trim();
      if (floor) {
        if (!Number.isFinite(Number(floor))) throw new Error("p99_floor_ms must be a number");
        gates.p99_floor_ms = Number(floor);
      }
      if (Object.keys(gates).length) body.gates = gates;
    } catch (err) {
      showError("plan-error", err.message);
      return;
    }
    const res = await control("plan-error", "PUT", "rollout/plan", body);
    if (res.ok) $("plan-start").open = false;
  }

  function planAction(action) {
    return () => {
      const body = action === "abort" && $("plan-rollback").checked ? { rollback: true } : undefined;
      control("plan-error", "POST", `rollout/plan/${action}`, body);
    };
  }

  // ---- the refresh loop --------------------------------------------------------------

  async function refresh() {
    if (state.running) {
      state.again = true;
      return;
    }
    state.running = true;
    clearTimeout(state.timer);
    try {
      const auth = Boolean(state.token);
      const [rollout, stats, shadow, plan, diffs, history] = await Promise.all([
        api("GET", "rollout"),
        api("GET", STATS_QUERY),
        api("GET", "shadow"),
        api("GET", "rollout/plan"),
        auth ? api("GET", "shadow/diffs?limit=20", { auth }) : null,
        auth ? api("GET", "rollout/history?limit=50", { auth }) : null,
      ]);
      const steps = [
        () => renderRollout(rollout),
        () => renderShadow(shadow, renderStats(stats)),
        () => renderPlan(plan),
        () => renderDiffs(diffs || { ok: false }),
        () => renderHistory(history || { ok: false }),
      ];
      for (const step of steps) {
        try {
          step();
        } catch (err) {
          console.error("dashboard: rendering failed", err);
        }
      }
      if (auth && ((history && history.status === 401) || (diffs && diffs.status === 401))) {
        showError("token-error", `The admin token was refused: ${(history || diffs).error}. Forget it and enter the current one.`);
      }
      const reachable = rollout.status !== 0;
      setText("refresh-status", reachable ? `updated ${new Date().toTimeString().slice(0, 8)}` : rollout.error);
      $("refresh-status").classList.toggle("bad", !reachable);
      document.body.dataset.refreshes = String(Number(document.body.dataset.refreshes || 0) + 1);
    } finally {
      state.running = false;
      if (state.again) {
        state.again = false;
        refresh();
      } else {
        state.timer = setTimeout(refresh, REFRESH_MS);
      }
    }
  }

  function refreshNow() {
    refresh();
  }

  function start() {
    $("token-form").addEventListener("submit", useToken);
    $("token-forget").addEventListener("click", forgetToken);
    shareControl("fastapi", "fastapi_percent");
    shareControl("shadow", "shadow_percent");
    $("plan-form").addEventListener("submit", startPlan);
    for (const action of ["pause", "resume", "abort"]) $(`plan-${action}`).addEventListener("click", planAction(action));
    renderMode();
    setInterval(tickCountdown, 500);
    refresh();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
