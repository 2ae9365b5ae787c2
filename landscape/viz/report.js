/* The glue of `landscape report` (landscape/viz/report.py writes the page around it): decode the
   values report.py embedded, build Plotly traces for the selected split, metric and scale, and
   redraw every plot when a selector changes. All drawing is Plotly's.
   For tests and scripts: window.landscapeReport = {data, state, draw, ready (a Promise)}. */
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("landscape-data").textContent);
  const state = {split: DATA.splits[0], metric: DATA.metrics[0], scale: "linear"};
  const CONFIG = {displaylogo: false, responsive: true};
  const LABELS = {loss: "loss", acc: "accuracy (%)", ratio: "max(0, −λmin) / λmax", lambda_max: "λmax", lambda_min: "λmin",
                  residual_max: "residual λmax", residual_min: "residual λmin", n_hvp: "Hessian-vector products"};
  const label = (m) => LABELS[m] || m;
  const esc = (s) => String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

  function bytes(b64) {
    const s = atob(b64), out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  const f64 = (b64) => new Float64Array(bytes(b64).buffer);

  /** A value as shown on hover: 6 significant digits; NaN, Infinity as such; – for none. */
  function fmt(v) {
    if (v === null || v === undefined) return "–";
    return Number.isFinite(v) ? String(Number(v.toPrecision(6))) : String(v);
  }

  for (const f of DATA.files) {
    f.computed = bytes(f.mask);
    for (const sp of Object.keys(f.splits)) for (const m of Object.keys(f.splits[sp])) f.splits[sp][m] = f64(f.splits[sp][m]);
    f.cache = {};
    if (f.hessian) {
      f.hessian.computed = bytes(f.hessian.mask);
      for (const k of Object.keys(f.hessian.values)) f.hessian.values[k] = f64(f.hessian.values[k]);
    }
  }

  /** (ny, nx) rows of fn(value, flat index) for a 2D grid; one row for a 1D one. */
  function rows(nx, flat, fn) {
    const out = [];
    for (let i = 0; i < flat.length; i += nx) {
      const row = new Array(nx);
      for (let j = 0; j < nx; j++) row[j] = fn(flat[i + j], i + j);
      out.push(row);
    }
    return out;
  }

  function zvalue(v, log) {
    if (!Number.isFinite(v)) return null;
    return log ? (v > 0 ? Math.log10(v) : null) : v;
  }

  /** Per point: ["computed" or "not computed", each metric of the split as shown]; cached per split. */
  function customdata(f, split) {
    if (!f.cache[split]) {
      const d = f.splits[split], names = Object.keys(d);
      f.cache[split] = rows(f.x.length, d[names[0]], (v, k) => f.computed[k]
        ? ["computed", ...names.map((m) => fmt(d[m][k]))] : ["not computed", ...names.map(() => "–")]);
    }
    return f.cache[split];
  }

  function axesText(f) {
    const short = f.labels.map((s) => s.split(" ")[0]);
    return f.y ? `${short[0]} %{x:.4g}<br>${short[1]} %{y:.4g}` : `${short[0]} %{x:.4g}`;
  }

  /** Every s-th row and column of a 2D grid (of rows), every s-th item of a list. */
  function every(a, s) {
    if (s === 1) return a;
    const pick = (row) => row.filter((_, i) => i % s === 0);
    return Array.isArray(a[0]) ? pick(a).map(pick) : pick(a);
  }

  /** The selected split and metric of file f (its every s-th point: a partial file's coarse sub-grid):
      x, y, z (null where missing), hover data and the shared range. */
  function current(f, s = 1) {
    const d = f.splits[state.split];
    if (!d || !(state.metric in d)) return null;
    const log = state.scale === "log", names = Object.keys(d);
    const r = DATA.ranges[state.split][state.metric][state.scale];
    return {
      x: every(f.x, s), y: f.y && every(f.y, s),
      z: every(rows(f.x.length, d[state.metric], (v, k) => (f.computed[k] ? zvalue(v, log) : null)), s),
      customdata: every(customdata(f, state.split), s),
      hovertemplate: axesText(f) + names.map((m, k) => `<br>${esc(state.split)} ${esc(label(m))} %{customdata[${k + 1}]}`).join("")
        + `<br>%{customdata[0]}<extra>${esc(f.title)}</extra>`,
      range: r, title: (log ? "log10 " : "") + label(state.metric),
    };
  }

  function empty(el, text) {
    return Plotly.react(el, [], {xaxis: {visible: false}, yaxis: {visible: false}, margin: {t: 10, b: 10},
      annotations: [{text, showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5}]}, CONFIG);
  }
  const absent = (f) => `no ${state.split}/${state.metric} in ${f.title}`;

  function planeLayout(f, extra) {
    return Object.assign({margin: {l: 60, r: 10, t: 10, b: 50}, uirevision: "keep", hovermode: "closest",
      xaxis: {title: {text: f.labels[0]}}, yaxis: {title: {text: f.labels[1]}}}, extra || {});
  }

  function surface(f, el) {
    const c = current(f, f.stride);
    if (!c) return empty(el, absent(f));
    const trace = {type: "surface", x: c.x, y: c.y, z: c.z, customdata: c.customdata, hovertemplate: c.hovertemplate,
      colorscale: "Viridis", colorbar: {title: {text: c.title}}};
    const zaxis = {title: {text: c.title}};
    if (c.range) Object.assign(trace, {cmin: c.range[0], cmax: c.range[1]}), zaxis.range = [c.range[0], c.range[2]];
    return Plotly.react(el, [trace], {margin: {l: 0, r: 0, t: 0, b: 0}, uirevision: "keep",
      scene: {xaxis: {title: {text: f.labels[0]}}, yaxis: {title: {text: f.labels[1]}}, zaxis}}, CONFIG);
  }

  function trajectoryTrace(f) {
    const t = f.trajectory, losses = t.losses[state.split] || {};
    const m = state.metric in losses ? state.metric : "loss";
    const line = losses[m] || [], proj = losses[m + "_projected"] || [];
    return {type: "scatter", mode: "lines+markers+text", x: t.coords.map((p) => p[0]), y: t.coords.map((p) => p[1]),
      text: t.files.map((_, i) => String(i)), textposition: "top center", textfont: {size: 9, color: "#c00"},
      marker: {color: "#c00", size: 6}, line: {color: "#c00", width: 1.5}, name: "trajectory",
      customdata: t.files.map((name, i) => [name, fmt(line[i]), fmt(proj[i]), fmt(t.off_plane[i])]),
      hovertemplate: `checkpoint %{customdata[0]}<br>${axesText(f)}<br>${esc(state.split)} ${esc(label(m))} (true) %{customdata[1]}`
        + `<br>${esc(label(m))} at the projection %{customdata[2]}<br>off-plane distance %{customdata[3]}<extra></extra>`};
  }

  function contour(f, el) {
    const c = current(f, f.stride);
    if (!c) return empty(el, absent(f));
    const trace = {type: "contour", x: c.x, y: c.y, z: c.z, customdata: c.customdata, hovertemplate: c.hovertemplate,
      colorscale: "Viridis", line: {width: 1.2}, colorbar: {title: {text: c.title}}};
    if (c.range) Object.assign(trace, {autocontour: false, zmin: c.range[0], zmax: c.range[1],
      contours: {coloring: "lines", showlabels: true, start: c.range[0], end: c.range[1], size: (c.range[1] - c.range[0]) / 15}});
    const traces = [trace];
    if (f.trajectory) traces.push(trajectoryTrace(f));
    return Plotly.react(el, traces, planeLayout(f, {showlegend: false}), CONFIG);
  }

  function heat(f, el) {
    const c = current(f);
    if (!c) return empty(el, absent(f));
    const trace = {type: "heatmap", x: f.x, y: f.y, z: c.z, customdata: c.customdata, hovertemplate: c.hovertemplate,
      colorscale: "Viridis", hoverongaps: true, colorbar: {title: {text: c.title}}};
    if (c.range) Object.assign(trace, {zmin: c.range[0], zmax: c.range[1]});
    return Plotly.react(el, [trace], planeLayout(f, {plot_bgcolor: "#d9d9d9"}), CONFIG);
  }

  function curve(f, el) {
    const c = current(f);
    if (!c) return empty(el, absent(f));
    const trace = {type: "scatter", mode: "lines+markers", x: f.x, y: c.z[0], customdata: c.customdata[0],
      hovertemplate: c.hovertemplate, connectgaps: false, marker: {size: 4}, name: c.title};
    const yaxis = {title: {text: c.title}};
    if (c.range) {
      const pad = 0.04 * (c.range[2] - c.range[0]);
      yaxis.range = [c.range[0] - pad, c.range[2] + pad];
    }
    return Plotly.react(el, [trace], {margin: {l: 60, r: 10, t: 10, b: 50}, uirevision: "keep", hovermode: "closest",
      xaxis: {title: {text: f.labels[0]}}, yaxis}, CONFIG);
  }

  function honesty(f, el) {
    const t = f.trajectory, losses = t.losses[state.split];
    if (!losses) return empty(el, `no ${state.split} losses of the checkpoints in ${f.title}`);
    const m = state.metric in losses ? state.metric : "loss", idx = t.files.map((_, i) => i);
    const cd = t.files.map((name, i) => [name, fmt(losses[m][i]), fmt((losses[m + "_projected"] || [])[i]), fmt(t.off_plane[i])]);
    const hover = `checkpoint %{customdata[0]}<br>${esc(label(m))} (true) %{customdata[1]}<br>${esc(label(m))} at the projection `
      + "%{customdata[2]}<br>off-plane distance %{customdata[3]}<extra></extra>";
    const traces = [
      {type: "scatter", mode: "lines+markers", x: idx, y: losses[m], name: `${state.split} ${label(m)} (true)`, customdata: cd, hovertemplate: hover},
      {type: "scatter", mode: "lines+markers", x: idx, y: losses[m + "_projected"] || [], name: `${label(m)} at the projection`,
        marker: {symbol: "square"}, customdata: cd, hovertemplate: hover},
      {type: "bar", x: idx, y: t.off_plane, yaxis: "y2", name: "off-plane distance", marker: {color: "rgba(120,120,120,0.35)"},
        customdata: cd, hovertemplate: hover}];
    return Plotly.react(el, traces, {margin: {l: 60, r: 60, t: 10, b: 50}, uirevision: "keep", hovermode: "closest",
      legend: {orientation: "h", y: -0.25}, xaxis: {title: {text: "checkpoint"}, dtick: 1},
      yaxis: {title: {text: label(m)}, type: m === "loss" ? "log" : "linear"},
      yaxis2: {title: {text: "off-plane distance (relative)"}, overlaying: "y", side: "right", range: [0, 1],
        tickmode: "auto", showgrid: false}}, CONFIG);
  }

  function hessian(view) {
    return function (f, el) {
      if (el.dataset.drawn) return Promise.resolve();  // the Hessian maps do not follow the selectors
      el.dataset.drawn = "1";
      const h = f.hessian, v = h.values, names = ["ratio", "lambda_max", "lambda_min", "residual_max", "residual_min", "n_hvp"]
        .filter((k) => k in v);
      const cd = rows(h.x.length, v[view], (_, k) => [h.computed[k] ? "computed" : "not computed", ...names.map((n) => fmt(v[n][k]))]);
      const hover = axesText(f) + names.map((n, k) => `<br>${esc(label(n))} %{customdata[${k + 1}]}`).join("")
        + `<br>%{customdata[0]}<extra>${esc(f.title)}</extra>`;
      const z = rows(h.x.length, v[view], (x, k) => (h.computed[k] && Number.isFinite(x) ? x : null));
      const r = DATA.hessian_ranges[view], step = h.x.length > 1 ? (h.x[1] - h.x[0]) / 2 : 0.5;
      const xaxis = {title: {text: f.labels[0]}, range: [h.x_range[0] - step, h.x_range[1] + step]};
      const title = {text: `Hessian ${label(view)}`, font: {size: 13}};
      if (!h.y) {
        return Plotly.react(el, [{type: "scatter", mode: "lines+markers", x: h.x, y: z[0], customdata: cd[0], hovertemplate: hover}],
          {title, margin: {l: 60, r: 10, t: 30, b: 50}, xaxis, yaxis: {title: {text: label(view)}}}, CONFIG);
      }
      const trace = {type: "heatmap", x: h.x, y: h.y, z, customdata: cd, hovertemplate: hover, hoverongaps: true,
        colorscale: {ratio: "Viridis", lambda_max: "Magma", lambda_min: "RdBu"}[view], colorbar: {title: {text: label(view)}}};
      if (r) Object.assign(trace, {zmin: r[0], zmax: r[1]});
      if (view === "lambda_min" && r) {  // λ = 0 white-ish: blue below, red above (one-sided: from 0)
        if (r[0] < 0 && r[1] > 0) trace.zmid = 0;
        else if (r[1] <= 0) Object.assign(trace, {colorscale: "Blues", zmax: 0});
        else Object.assign(trace, {colorscale: "Reds", zmin: 0});
      }
      const ystep = h.y.length > 1 ? (h.y[1] - h.y[0]) / 2 : 0.5;
      return Plotly.react(el, [trace], {title, margin: {l: 60, r: 10, t: 30, b: 50}, plot_bgcolor: "#d9d9d9", xaxis,
        yaxis: {title: {text: f.labels[1]}, range: [h.y_range[0] - ystep, h.y_range[1] + ystep]}}, CONFIG);
    };
  }

  const VIEWS = {surface, contour, heat, curve, honesty, "hessian-ratio": hessian("ratio"),
                 "hessian-lambda_max": hessian("lambda_max"), "hessian-lambda_min": hessian("lambda_min")};

  function draw() {
    document.body.dataset.ready = "false";
    const plots = Array.from(document.querySelectorAll(".plot"));
    return Promise.all(plots.map((el) => VIEWS[el.dataset.view](DATA.files[Number(el.dataset.file)], el)))
      .then(() => { document.body.dataset.ready = "true"; });
  }

  const report = {data: DATA, state, draw, ready: null};
  for (const id of ["split", "metric", "scale"]) {
    const select = document.getElementById(id);
    select.value = state[id];
    select.addEventListener("change", () => { state[id] = select.value; report.ready = draw(); });
  }
  report.ready = draw();
  window.landscapeReport = report;
})();
