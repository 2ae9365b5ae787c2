/* The glue of `landscape report` (landscape/viz/report.py writes the page around it): decode the
   values report.py embedded, build Plotly traces for the selected split, metric and scale, and
   redraw every plot when a selector changes. All drawing is Plotly's.
   The per-point maps (Hessian λmax/λmin, trace, top-k) and the spectra are drawn once: they do not
   follow the selectors. A direction ensemble's views (1D band, 2D mean / σ / member maps, the
   histograms of basin widths and curvatures) follow the split, metric and scale selectors.
   For tests and scripts: window.landscapeReport = {data, state, draw, ready (a Promise)}. */
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("landscape-data").textContent);
  const state = {split: DATA.splits[0], metric: DATA.metrics[0], scale: "linear"};
  const CONFIG = {displaylogo: false, responsive: true};
  const LABELS = {loss: "loss", acc: "accuracy (%)", ratio: "max(0, −λmin) / λmax", lambda_max: "λmax", lambda_min: "λmin",
                  residual_max: "residual λmax", residual_min: "residual λmin", n_hvp: "Hessian-vector products",
                  trace: "trace"};
  const label = (m) => LABELS[m] || (/^lambda_\d+$/.test(m) ? "λ" + m.slice(7) : m);
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
    for (const m of [f.hessian, f.trace, f.topk]) {
      if (!m) continue;
      m.computed = bytes(m.mask);
      for (const k of Object.keys(m.values)) m.values[k] = f64(m.values[k]);
    }
    for (const s of f.spectra) s.grid = f64(s.grid), s.density = f64(s.density);
    const e = f.ensemble;
    if (e) {
      for (const sp of Object.keys(e.values)) for (const m of Object.keys(e.values[sp])) e.values[sp][m] = f64(e.values[sp][m]);
      for (const sp of Object.keys(e.stats)) {
        for (const m of Object.keys(e.stats[sp])) for (const k of Object.keys(e.stats[sp][m])) e.stats[sp][m][k] = f64(e.stats[sp][m][k]);
      }
      e.cache = {};
      e.member = 0;
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

  /** Hover lines [label, value shown] of point k of a map: the Hessian map's values, the trace with
      its interval, the top-k eigenvalues with their residuals; then the products. */
  function mapLines(kind, v, k) {
    const has = (n) => n in v, lines = [];
    if (kind === "hessian") {
      for (const n of ["ratio", "lambda_max", "lambda_min", "residual_max", "residual_min"]) if (has(n)) lines.push([label(n), fmt(v[n][k])]);
    } else if (kind === "trace") {
      lines.push(["trace", fmt(v.trace[k])], ["95% interval", `[${fmt(v.ci_low[k])}, ${fmt(v.ci_high[k])}]`]);
    } else {
      for (let i = 1; has(`lambda_${i}`); i++) {
        lines.push([`λ${i}`, `${fmt(v[`lambda_${i}`][k])} ± ${fmt(has(`residual_${i}`) ? v[`residual_${i}`][k] : null)}`]);
      }
    }
    if (has("n_hvp")) lines.push([label("n_hvp"), fmt(v.n_hvp[k])]);
    return lines;
  }

  // Colour scales of the curvature maps; none reaches the grey (#d9d9d9) of the points not computed.
  const WARM = [[0, "rgb(255,255,204)"], [0.25, "rgb(254,217,118)"], [0.5, "rgb(253,141,60)"], [0.75, "rgb(227,26,28)"],
                [1, "rgb(128,0,38)"]];
  const DIVERGING = [[0, "rgb(33,102,172)"], [0.25, "rgb(103,169,207)"], [0.5, "rgb(247,247,247)"],
                     [0.75, "rgb(239,138,98)"], [1, "rgb(178,24,43)"]];
  const BLUES = [[0, "rgb(33,102,172)"], [0.5, "rgb(103,169,207)"], [1, "rgb(247,247,247)"]];
  const REDS = [[0, "rgb(247,247,247)"], [0.5, "rgb(239,138,98)"], [1, "rgb(178,24,43)"]];
  const TITLES = {ratio: "Hessian max(0, −λmin) / λmax", lambda_max: "Hessian λmax", lambda_min: "Hessian λmin"};

  /** A heat map (contour lines over it) of value `view` of file f's map `kind` on the surface's axes;
      a curve (the trace with its interval as a band) for a 1D map. Missing points: gaps, grey. */
  function mapView(kind, view) {
    return function (f, el) {
      if (el.dataset.drawn) return Promise.resolve();
      el.dataset.drawn = "1";
      const h = f[kind], v = h.values, nx = h.x.length;
      const cd = rows(nx, v[view], (_, k) => (h.computed[k] ? ["computed", ...mapLines(kind, v, k).map((l) => l[1])]
        : ["not computed", ...mapLines(kind, v, k).map(() => "–")]));
      const hover = axesText(f) + mapLines(kind, v, 0).map((l, k) => `<br>${esc(l[0])} %{customdata[${k + 1}]}`).join("")
        + `<br>%{customdata[0]}<extra>${esc(f.title)}</extra>`;
      const z = rows(nx, v[view], (x, k) => (h.computed[k] && Number.isFinite(x) ? x : null));
      const r = (DATA.map_ranges[kind] || {})[view], step = nx > 1 ? (h.x[1] - h.x[0]) / 2 : 0.5;
      const xaxis = {title: {text: f.labels[0]}, range: [h.x_range[0] - step, h.x_range[1] + step]};
      const ggn = h.settings.curvature === "ggn";
      const name = kind === "hessian" ? TITLES[view] : kind === "trace"
        ? `tr ${ggn ? "G" : "H"} (${h.settings.estimator}, ${h.settings.samples} products)` : `${label(view)}${ggn ? " of G" : ""}`;
      const title = {text: name, font: {size: 13}};
      if (!h.y) {
        const traces = [];
        if (kind === "trace") {  // the 95% interval as a band
          const lo = rows(nx, v.ci_low, (x, k) => (h.computed[k] && Number.isFinite(x) ? x : null))[0];
          const hi = rows(nx, v.ci_high, (x, k) => (h.computed[k] && Number.isFinite(x) ? x : null))[0];
          traces.push({type: "scatter", mode: "lines", x: h.x, y: lo, line: {width: 0}, hoverinfo: "skip", showlegend: false},
            {type: "scatter", mode: "lines", x: h.x, y: hi, fill: "tonexty", fillcolor: "rgba(31,119,180,0.25)",
              line: {width: 0}, hoverinfo: "skip", name: "95% interval"});
        }
        traces.push({type: "scatter", mode: "lines+markers", x: h.x, y: z[0], customdata: cd[0], hovertemplate: hover,
          connectgaps: false, name: label(view), line: {color: "#1f77b4"}});
        return Plotly.react(el, traces, {title, margin: {l: 60, r: 10, t: 30, b: 50}, xaxis, showlegend: false,
          hovermode: "closest", yaxis: {title: {text: label(view)}}}, CONFIG);
      }
      const trace = {type: "heatmap", x: h.x, y: h.y, z, customdata: cd, hovertemplate: hover, hoverongaps: true,
        colorscale: view === "ratio" ? "Viridis" : WARM, colorbar: {title: {text: label(view)}}};
      if (r) Object.assign(trace, {zmin: r[0], zmax: r[1]});
      if (view !== "ratio" && r) {  // curvature: λ = 0 white, blue below, red above (λmin one-sided: from 0)
        if (r[0] < 0 && r[1] > 0) Object.assign(trace, {colorscale: DIVERGING, zmid: 0});
        else if (r[1] <= 0) Object.assign(trace, {colorscale: BLUES, zmax: 0});
        else if (view === "lambda_min") Object.assign(trace, {colorscale: REDS, zmin: 0});
      }
      const traces = [trace];
      if (kind !== "hessian" && nx > 2 && h.y.length > 2 && z.every((row) => row.every((x) => x !== null))) {
        // contour lines over a complete heat map (no hover of their own; a partial map's gaps would cut them)
        traces.push({type: "contour", x: h.x, y: h.y, z, showscale: false, hoverinfo: "skip", ncontours: 10,
          contours: {coloring: "none"}, line: {color: "rgba(0,0,0,0.3)", width: 1}});
      }
      const ystep = h.y.length > 1 ? (h.y[1] - h.y[0]) / 2 : 0.5;
      return Plotly.react(el, traces, {title, margin: {l: 60, r: 10, t: 30, b: 50}, plot_bgcolor: "#d9d9d9", xaxis,
        hovermode: "closest", yaxis: {title: {text: f.labels[1]}, range: [h.y_range[0] - ystep, h.y_range[1] + ystep]}}, CONFIG);
    };
  }

  /** Symmetric log: t ↦ sign(t)·log10(1 + |t|/lin), linear near 0 (|t| ≪ lin), logarithmic beyond. */
  const symlog = (t, lin) => Math.sign(t) * Math.log10(1 + Math.abs(t) / lin);

  /** The density of spectrum data-index of file f on a symmetric-log eigenvalue axis (ticks at 0 and
      ±(1, 2, 5)·10^k labelled with the real values), a log density axis; the top-k eigenvalues marked (dashed lines, and
      markers whose hover gives λ and its residual). */
  function spectrum(f, el) {
    if (el.dataset.drawn) return Promise.resolve();
    el.dataset.drawn = "1";
    const s = f.spectra[Number(el.dataset.index)], lin = s.lin, n = s.grid.length;
    const x = new Array(n), y = new Array(n), cd = new Array(n);
    let top = 0, lo = Infinity, hi = -Infinity;
    for (let i = 0; i < n; i++) {
      const t = s.grid[i], d = s.density[i];
      x[i] = Number.isFinite(t) ? symlog(t, lin) : null;
      y[i] = Number.isFinite(d) && d > 0 ? d : null;
      cd[i] = [fmt(t), fmt(d)];
      if (y[i] !== null) top = Math.max(top, d);
      if (Number.isFinite(t)) lo = Math.min(lo, t), hi = Math.max(hi, t);
    }
    const floor = top > 0 ? 1e-6 * top : 1e-12;
    const eig = s.eigenvalues.map((v, i) => [v, s.residuals[i], i + 1]).filter((e) => e[0] !== null);
    const at = (t) => {  // the density at t (linear interpolation on the grid), for the markers' height
      let j = 1;
      while (j < n - 1 && s.grid[j] < t) j++;
      const a = s.grid[j - 1], b = s.grid[j], w = b > a ? Math.min(1, Math.max(0, (t - a) / (b - a))) : 0;
      const d = (1 - w) * s.density[j - 1] + w * s.density[j];
      return Number.isFinite(d) && d > floor ? d : floor;
    };
    const curv = s.settings.curvature === "ggn" ? "G" : "H";
    const traces = [
      {type: "scatter", mode: "lines", x, y, customdata: cd, name: "SLQ density", line: {color: "#1f77b4", width: 1.5},
        hovertemplate: "t %{customdata[0]}<br>φ(t) %{customdata[1]}<extra>density</extra>"},
      {type: "scatter", mode: "markers", x: eig.map((e) => symlog(e[0], lin)), y: eig.map((e) => at(e[0])), name: "top-k eigenvalues",
        marker: {color: "#c00", size: 9, symbol: "diamond"}, customdata: eig.map((e) => [`λ${e[2]}`, fmt(e[0]), fmt(e[1])]),
        hovertemplate: "%{customdata[0]} %{customdata[1]} ± %{customdata[2]}<extra>top-k</extra>"}];
    const shapes = eig.map((e) => ({type: "line", xref: "x", yref: "paper", x0: symlog(e[0], lin), x1: symlog(e[0], lin), y0: 0, y1: 1,
      line: {color: "#c00", width: 1, dash: "dash"}}));
    shapes.push({type: "line", xref: "x", yref: "paper", x0: 0, x1: 0, y0: 0, y1: 1, line: {color: "#999", width: 1}});
    const ticks = [0];  // 0 and ±(1, 2, 5)·10^k at or above the linear range, within the grid
    if (Number.isFinite(lo)) {
      for (let k = Math.floor(Math.log10(lin)); k <= Math.ceil(Math.log10(Math.max(Math.abs(lo), Math.abs(hi), lin))); k++) {
        for (const m of [1, 2, 5]) {
          const d = Number((m * 10 ** k).toPrecision(1));
          if (d < lin) continue;
          if (d <= hi) ticks.push(d);
          if (-d >= lo) ticks.unshift(-d);
        }
      }
    }
    const ci = s.trace_ci;
    const title = {text: `${esc(f.title)}: tr ${curv} = ${fmt(s.trace)} [${fmt(ci[0])}, ${fmt(ci[1])}]`, font: {size: 13}};
    return Plotly.react(el, traces, {title, margin: {l: 70, r: 10, t: 30, b: 50}, hovermode: "closest", shapes,
      legend: {x: 0.01, y: 0.99}, xaxis: {title: {text: "eigenvalue t (symmetric log)"}, tickmode: "array",
        tickvals: ticks.map((t) => symlog(t, lin)), ticktext: ticks.map((t) => fmt(t)), zeroline: false},
      yaxis: {title: {text: "density φ(t)"}, type: "log", dtick: 1, exponentformat: "power", range: [Math.log10(floor), Math.log10(top > 0 ? top : 1) + 0.2]}}, CONFIG);
  }

  // ---- direction ensembles: statistics over the members per coordinate (the file's, or from the points done so far)

  const QUANTILES = [["q05", "5%"], ["q25", "25%"], ["q50", "median"], ["q75", "75%"], ["q95", "95%"]];

  /** Per coordinate of ensemble file f, the selected split and metric: the hover values as shown
      [mean, σ, q05, q25, q50, q75, q95, min, max, "n/N"]; cached per split and metric. */
  function ensembleCustom(f, s) {
    const e = f.ensemble, key = state.split + "\u0000" + state.metric;
    if (!e.cache[key]) {
      e.cache[key] = Array.from(s.mean, (v, k) => [fmt(v), fmt(s.std[k]), ...QUANTILES.map((q) => fmt(s[q[0]][k])),
        fmt(s.min[k]), fmt(s.max[k]), `${s.count[k]}/${e.members}`]);
    }
    return e.cache[key];
  }

  function ensembleHover(f) {
    const name = `${esc(state.split)} ${esc(label(state.metric))}`;
    return axesText(f) + `<br>${name} mean %{customdata[0]}<br>σ %{customdata[1]}<br>`
      + QUANTILES.map((q, k) => `${q[1]} %{customdata[${k + 2}]}`).join(" · ")
      + "<br>min %{customdata[7]} · max %{customdata[8]}<br>members computed here %{customdata[9]}"
      + `<extra>${esc(f.title)}</extra>`;
  }

  const ensembleStats = (f) => (f.ensemble.stats[state.split] || {})[state.metric];
  const shownValue = (v, log) => (Number.isFinite(v) && (!log || v > 0) ? v : null);

  /** 1D ensemble: thin member lines, the 5–95% band, the mean ± σ band and the mean curve (hover). */
  function band(f, el) {
    const s = ensembleStats(f), e = f.ensemble;
    if (!s) return empty(el, absent(f));
    const log = state.scale === "log", n = f.x.length, name = `${state.split} ${label(state.metric)}`;
    const line = (a) => Array.from(a, (v) => shownValue(v, log));
    const traces = [], values = e.values[state.split][state.metric];
    for (let m = 0; m < e.shown; m++) {
      const row = values.subarray(m * n, (m + 1) * n);
      traces.push({type: "scatter", mode: "lines", x: f.x, y: line(row), name: m === 0 ? "members" : `member ${m}`,
        legendgroup: "members", showlegend: m === 0, line: {color: "rgba(110,110,110,0.45)", width: 0.8},
        connectgaps: false, customdata: Array.from(row, fmt),
        hovertemplate: `member ${m}<br>${axesText(f)}<br>${esc(name)} %{customdata}<extra>${esc(f.title)}</extra>`});
    }
    const lo = Array.from(s.mean, (v, k) => v - s.std[k]), hi = Array.from(s.mean, (v, k) => v + s.std[k]);
    const fill = (y0, y1, colour, title) => [
      {type: "scatter", mode: "lines", x: f.x, y: line(y0), line: {width: 0}, hoverinfo: "skip", showlegend: false},
      {type: "scatter", mode: "lines", x: f.x, y: line(y1), line: {width: 0}, fill: "tonexty", fillcolor: colour,
        hoverinfo: "skip", name: title}];
    traces.push(...fill(s.q05, s.q95, "rgba(31,119,180,0.15)", "5–95% quantiles"),
      ...fill(lo, hi, "rgba(31,119,180,0.35)", "mean ± σ"));
    traces.push({type: "scatter", mode: "lines+markers", x: f.x, y: line(s.mean), name: "mean", connectgaps: false,
      line: {color: "#1f77b4", width: 2.5}, marker: {size: 5}, customdata: ensembleCustom(f, s), hovertemplate: ensembleHover(f)});
    const r = ((DATA.ensemble_ranges[state.split] || {})[state.metric] || {}).band;
    const yaxis = {title: {text: label(state.metric)}, type: log ? "log" : "linear"};
    const span = r && r[state.scale];
    if (span) {
      const pad = 0.04 * (span[2] - span[0] || 1);
      yaxis.range = [span[0] - pad, span[2] + pad];
    }
    return Plotly.react(el, traces, {margin: {l: 60, r: 10, t: 10, b: 50}, uirevision: "keep", hovermode: "closest",
      legend: {orientation: "h", y: -0.2}, xaxis: {title: {text: f.labels[0]}}, yaxis}, CONFIG);
  }

  /** 2D ensemble: a heat map of the mean or σ over the members (hover: every statistic there). */
  function ensembleMap(stat) {
    return function (f, el) {
      const s = ensembleStats(f);
      if (!s) return empty(el, absent(f));
      const log = state.scale === "log", nx = f.x.length;
      const r = (((DATA.ensemble_ranges[state.split] || {})[state.metric] || {})[stat === "std" ? "std" : "values"] || {})[state.scale];
      const z = rows(nx, s[stat], (v) => zvalue(v, log)), cd = rows(nx, ensembleCustom(f, s), (v) => v);
      const title = (log ? "log10 " : "") + (stat === "std" ? "σ of " : "mean ") + label(state.metric);
      const trace = {type: "heatmap", x: f.x, y: f.y, z, customdata: cd, hovertemplate: ensembleHover(f), hoverongaps: true,
        colorscale: "Viridis", colorbar: {title: {text: title}}};
      if (r) Object.assign(trace, {zmin: r[0], zmax: r[1]});
      return Plotly.react(el, [trace], planeLayout(f, {plot_bgcolor: "#d9d9d9"}), CONFIG);
    };
  }

  /** 2D ensemble: the member chosen in the cell's selector, on the mean map's colour scale. */
  function ensembleMember(f, el) {
    const e = f.ensemble, d = e.values[state.split];
    if (!d || !(state.metric in d)) return empty(el, absent(f));
    const log = state.scale === "log", nx = f.x.length, size = nx * f.y.length, m = e.member;
    const v = d[state.metric].subarray(m * size, (m + 1) * size);
    const r = (((DATA.ensemble_ranges[state.split] || {})[state.metric] || {}).values || {})[state.scale];
    const trace = {type: "heatmap", x: f.x, y: f.y, z: rows(nx, v, (x) => zvalue(x, log)), hoverongaps: true,
      customdata: rows(nx, v, (x) => [Number.isFinite(x) ? "computed" : "not computed", fmt(Number.isFinite(x) ? x : null)]),
      hovertemplate: `member ${m}<br>${axesText(f)}<br>${esc(state.split)} ${esc(label(state.metric))} %{customdata[1]}`
        + `<br>%{customdata[0]}<extra>${esc(f.title)}</extra>`,
      colorscale: "Viridis", colorbar: {title: {text: (log ? "log10 " : "") + label(state.metric)}}};
    if (r) Object.assign(trace, {zmin: r[0], zmax: r[1]});
    return Plotly.react(el, [trace], planeLayout(f, {plot_bgcolor: "#d9d9d9"}), CONFIG);
  }

  const HISTOGRAM_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

  /** Histograms of the basin widths (a trace per ε and axis, both sides pooled) or of the curvature
      at the centre (a trace per axis) of the selected split, on bins shared by the files. */
  function histogram(kind) {
    return function (f, el) {
      const rowsOf = (f.ensemble.distributions[state.split] || []).filter((d) => d.kind === kind);
      const traces = rowsOf.map((d, k) => ({type: "histogram", x: d.samples.filter((v) => v !== null), name: d.what,
        opacity: 0.6, marker: {color: HISTOGRAM_COLOURS[k % HISTOGRAM_COLOURS.length]},
        hovertemplate: `${esc(d.what)}<br>%{x}: %{y}<extra>${esc(f.title)}</extra>`})).filter((t) => t.x.length);
      if (!traces.length) {
        return empty(el, rowsOf.length ? `no ${state.split} ${kind === "widths" ? "basin width within the grid" : "curvature"}`
          + ` in ${f.title}` : `no ${state.split} loss in ${f.title}`);
      }
      const bins = (DATA.histogram_bins[state.split] || {})[kind];
      if (bins) for (const t of traces) t.xbins = bins, t.autobinx = false;
      const xaxis = {title: {text: kind === "widths" ? "basin width |α| (both sides)" : "d²L/dα² at the centre"}};
      if (bins) xaxis.range = [bins.start, bins.end];
      return Plotly.react(el, traces, {barmode: "overlay", margin: {l: 60, r: 10, t: 10, b: 50}, hovermode: "closest",
        legend: {orientation: "h", y: -0.3}, xaxis, yaxis: {title: {text: kind === "widths" ? "member sides" : "members"}}},
      CONFIG);
    };
  }

  const VIEWS = {surface, contour, heat, curve, honesty, spectrum, trace: mapView("trace", "trace"),
                 band, "ens-mean": ensembleMap("mean"), "ens-std": ensembleMap("std"), "ens-member": ensembleMember,
                 "ens-widths": histogram("widths"), "ens-curvature": histogram("curvature"),
                 "hessian-ratio": mapView("hessian", "ratio"), "hessian-lambda_max": mapView("hessian", "lambda_max"),
                 "hessian-lambda_min": mapView("hessian", "lambda_min")};
  const view = (name) => VIEWS[name] || (name.startsWith("topk-") ? mapView("topk", name.slice(5)) : null);

  function draw() {
    document.body.dataset.ready = "false";
    const plots = Array.from(document.querySelectorAll(".plot"));
    return Promise.all(plots.map((el) => view(el.dataset.view)(DATA.files[Number(el.dataset.file)], el)))
      .then(() => { document.body.dataset.ready = "true"; });
  }

  const report = {data: DATA, state, draw, ready: null};
  for (const id of ["split", "metric", "scale"]) {
    const select = document.getElementById(id);
    select.value = state[id];
    select.addEventListener("change", () => { state[id] = select.value; report.ready = draw(); });
  }
  for (const select of document.querySelectorAll("select.member")) {  // a 2D ensemble's member map
    select.addEventListener("change", () => {
      const f = DATA.files[Number(select.dataset.file)], el = document.getElementById(`f${select.dataset.file}-ens-member`);
      f.ensemble.member = Number(select.value);
      document.body.dataset.ready = "false";
      report.ready = ensembleMember(f, el).then(() => { document.body.dataset.ready = "true"; });
    });
  }
  report.ready = draw();
  window.landscapeReport = report;
})();
