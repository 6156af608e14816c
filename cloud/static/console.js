// Fogline console: local times, the live alert list (SSE) and charts (uPlot). No build step.
"use strict";
(function () {
  const fmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;

  // Times arrive as UTC text; show them in the viewer's zone, UTC in the tooltip.
  function localTimes(root) {
    for (const el of root.querySelectorAll("time[datetime]")) {
      const d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) continue;
      if (!el.title) el.title = el.textContent;
      el.textContent = fmt.format(d);
    }
  }

  function selectAll(root) {
    const all = root.querySelector("#select-all");
    if (!all) return;
    all.addEventListener("change", () => {
      for (const box of root.querySelectorAll("input[name=ids]")) box.checked = all.checked;
    });
  }

  // The live list: the stream carries the list as the server renders it for this view
  // (same filters, same counts) after every change, whole or as a patch against the
  // last one; we swap it in, keeping what was ticked and focused, and mark new rows.
  function live() {
    const status = document.getElementById("live-status");
    const results = document.getElementById("alert-results");
    if (!status || !results || !window.EventSource) return;
    const paged = status.hasAttribute("data-paged");
    let missed = 0;

    function swap(html) {
      const seen = new Set([...results.querySelectorAll("tr[data-id]")].map(r => r.dataset.id));
      const ticked = new Set([...results.querySelectorAll("input[name=ids]:checked")].map(b => b.value));
      const active = document.activeElement;
      const focused = active && results.contains(active) ? [active.name, active.value] : null;
      results.innerHTML = html;
      for (const row of results.querySelectorAll("tr[data-id]")) {
        if (seen.size && !seen.has(row.dataset.id)) row.classList.add("fresh");
      }
      for (const box of results.querySelectorAll("input[name=ids]")) box.checked = ticked.has(box.value);
      if (focused) {
        const el = [...results.querySelectorAll("[name]")].find(e => e.name === focused[0] && e.value === focused[1]);
        if (el) el.focus();
      }
      localTimes(results);
      selectAll(results);
      window.foglineRefreshed = (window.foglineRefreshed || 0) + 1;
    }

    const url = status.dataset.live + (paged ? "" : "?rows=" + encodeURIComponent(status.dataset.view || ""));
    const source = new EventSource(url);
    source.onopen = () => { status.textContent = "Live: the list updates as alerts change (" + zone + " time)."; };
    source.onerror = () => { status.textContent = "Live updates: reconnecting… (reload the page if this stays)"; };
    // The list as text: the whole of it ("rows"), or what changed since the last one
    // ("patch": [a, b] keeps lines a..b of the last text, a string is a new line).
    let last = null;
    source.addEventListener("rows", (event) => { last = event.data; swap(last); });
    source.addEventListener("patch", (event) => {
      if (last === null) return; // the server sends a patch only after a whole list
      const old = last.split("\n");
      const lines = [];
      for (const op of JSON.parse(event.data)) {
        if (typeof op === "string") lines.push(op);
        else for (let i = op[0]; i < op[1]; i++) lines.push(old[i]);
      }
      last = lines.join("\n");
      swap(last);
    });
    source.addEventListener("alert", (event) => {
      const data = JSON.parse(event.data);
      if (paged) {
        missed += 1;
        status.textContent = "";
        const a = document.createElement("a");
        a.href = "/alerts"; a.textContent = missed + " change(s) since this page was loaded: show the newest";
        status.appendChild(a);
      } else if (data.action === "raised" && data.severity === "critical") {
        status.textContent = "New critical alert: " + (data.rule || "") + " on " + (data.device || data.gateway || "");
      }
    });
  }

  // Charts: a JSON block {x: [...epoch s], series: {name: [...]}, marks?: [...]} per figure.
  function charts() {
    if (!window.uPlot) return;
    const palette = ["#0b4f8a", "#a3001b", "#27632a", "#6b4700", "#5b2a86", "#00707a", "#444", "#b35c00"];
    for (const fig of document.querySelectorAll("figure[data-chart]")) {
      const data = JSON.parse(document.getElementById(fig.dataset.chart).textContent);
      let marks = (data.marks || []).filter(m => m !== null).map(m => ({ at: m }));
      if (fig.dataset.marks) marks = JSON.parse(document.getElementById(fig.dataset.marks).textContent);
      const names = Object.keys(data.series);
      const width = Math.max(280, Math.min(fig.clientWidth || 800, 1100));
      const markPlugin = {
        hooks: {
          draw: [u => {
            const ctx = u.ctx;
            ctx.save();
            ctx.setLineDash([6, 4]);
            ctx.strokeStyle = "#a3001b";
            ctx.lineWidth = 2;
            for (const m of marks) {
              const x = u.valToPos(m.at, "x", true);
              if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
              ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
            }
            ctx.restore();
          }],
        },
      };
      // A series named "... (%)" gets its own scale, on a right-hand axis.
      const pct = names.some(n => n.endsWith("(%)"));
      const opts = {
        width, height: 220,
        series: [{}].concat(names.map((n, i) => ({ label: n, stroke: palette[i % palette.length], width: 1.5, spanGaps: true, scale: n.endsWith("(%)") ? "%" : "y" }))),
        scales: Object.assign(pct ? { "%": { range: [0, 100] } } : {},
          // One point alone would get an axis of years around it: show its hour and one each side.
          data.x.length === 1 ? { x: { time: true, range: [data.x[0] - 3600, data.x[0] + 7200] } } : {}),
        axes: pct ? [{}, { scale: "y" }, { scale: "%", side: 1, grid: { show: false } }] : [{}, {}],
        cursor: { drag: { x: true, y: false } },
        plugins: [markPlugin],
      };
      new uPlot(opts, [data.x].concat(names.map(n => data.series[n])), fig);
      fig.insertBefore(fig.querySelector(".uplot"), fig.querySelector("figcaption"));
    }
  }

  // Time filters: typed in the viewer's zone, sent as UTC (ISO 8601 with Z), shown back local.
  function timeFilters() {
    for (const form of document.querySelectorAll(".filter-form")) timeInputs(form);
  }

  function timeInputs(form) {
    const pad = n => String(n).padStart(2, "0");
    for (const input of form.querySelectorAll("input[type=datetime-local]")) {
      const label = input.closest("label");
      if (label && label.firstChild) label.firstChild.textContent = label.firstChild.textContent.replace("(UTC)", "(" + zone + ")");
      const given = new URLSearchParams(location.search).get(input.name);
      const d = given ? new Date(given) : null;
      if (d && !isNaN(d)) input.value = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
      else if (given) input.value = "";
    }
    form.addEventListener("submit", () => {
      for (const input of form.querySelectorAll("input[type=datetime-local]")) {
        if (!input.value) { input.removeAttribute("name"); continue; }
        const hidden = document.createElement("input");
        hidden.type = "hidden"; hidden.name = input.name; hidden.value = new Date(input.value).toISOString();
        input.removeAttribute("name");
        form.appendChild(hidden);
      }
    });
  }

  timeFilters();
  localTimes(document);
  selectAll(document);
  live();
  charts();
})();
