// A small SVG chart: scatter points, lines and step lines on linear or log axes, with a legend.
// Points may carry a program id; clicking one calls onClick(id). Labels are SVG text nodes.
"use strict";

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) { hi = lo + 1; lo = lo - 1; }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(st => st >= raw) || 10 * mag;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return ticks;
}

function logTicks(lo, hi) {
  const ticks = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * Math.pow(10, e);
      if (v >= lo && v <= hi) ticks.push(v);
    }
  }
  return ticks.length >= 2 ? ticks : [lo, hi];
}

// spec: {series: [{name, color, points: [[x, y, id?]], mode: "points"|"line"|"step", size}], xlabel, ylabel,
//        logx, width, height, onClick, title}
function chart(spec) {
  const W = spec.width || 760, H = spec.height || 360;
  const named = spec.series.filter(se => se.name).length;
  const M = {l: 70, r: named ? 150 : 16, t: spec.title ? 26 : 10, b: 44};  // the legend sits in the right margin
  const all = spec.series.flatMap(se => se.points).filter(p => p[0] !== null && p[1] !== null &&
    (!spec.logx || p[0] > 0));
  const svg = s("svg", {viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", width: W, height: H});
  if (spec.title) svg.appendChild(s("text", {x: M.l, y: 16, class: "chart-title"}, spec.title));
  if (!all.length) {
    svg.appendChild(s("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis-label"}, "no data yet"));
    return svg;
  }
  let x0 = Math.min(...all.map(p => p[0])), x1 = Math.max(...all.map(p => p[0]));
  let y0 = Math.min(...all.map(p => p[1])), y1 = Math.max(...all.map(p => p[1]));
  if (x0 === x1) { x0 -= spec.logx ? x0 / 2 : 1; x1 += spec.logx ? x1 : 1; }
  if (y0 === y1) { const d = Math.abs(y0) * 0.05 || 1; y0 -= d; y1 += d; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  if (spec.logx) { const f = Math.pow(x1 / x0, 0.03); x0 /= f; x1 *= f; }
  else { const px = (x1 - x0) * 0.02; x0 -= px; x1 += px; }
  const fx = spec.logx
    ? v => M.l + (Math.log10(v) - Math.log10(x0)) / (Math.log10(x1) - Math.log10(x0)) * (W - M.l - M.r)
    : v => M.l + (v - x0) / (x1 - x0) * (W - M.l - M.r);
  const fy = v => H - M.b - (v - y0) / (y1 - y0) * (H - M.t - M.b);
  const axes = s("g", {class: "axes"});
  for (const t of spec.logx ? logTicks(x0, x1) : niceTicks(x0, x1, 8)) {
    const x = fx(t);
    axes.appendChild(s("line", {x1: x, x2: x, y1: M.t, y2: H - M.b, class: "grid"}));
    axes.appendChild(s("text", {x: x, y: H - M.b + 14, "text-anchor": "middle", class: "tick"}, fmt(t, 3)));
  }
  for (const t of niceTicks(y0, y1, 6)) {
    const y = fy(t);
    axes.appendChild(s("line", {x1: M.l, x2: W - M.r, y1: y, y2: y, class: "grid"}));
    axes.appendChild(s("text", {x: M.l - 6, y: y + 4, "text-anchor": "end", class: "tick"}, fmt(t, 4)));
  }
  axes.appendChild(s("rect", {x: M.l, y: M.t, width: W - M.l - M.r, height: H - M.t - M.b, class: "frame"}));
  axes.appendChild(s("text", {x: (M.l + W - M.r) / 2, y: H - 8, "text-anchor": "middle", class: "axis-label"},
    spec.xlabel || ""));
  axes.appendChild(s("text", {x: 14, y: (M.t + H - M.b) / 2, "text-anchor": "middle", class: "axis-label",
    transform: `rotate(-90 14 ${(M.t + H - M.b) / 2})`}, spec.ylabel || ""));
  svg.appendChild(axes);
  const legend = s("g", {class: "legend"});
  let ly = M.t + 12;
  for (const se of spec.series) {
    const pts = se.points.filter(p => p[0] !== null && p[1] !== null && (!spec.logx || p[0] > 0));
    const g = s("g", {class: "series"});
    if (se.mode === "line" || se.mode === "step") {
      let d = "";
      pts.forEach((p, i) => {
        const x = fx(p[0]), y = fy(p[1]);
        if (i === 0) d += `M${x},${y}`;
        else if (se.mode === "step") d += `H${x}V${y}`;
        else d += `L${x},${y}`;
      });
      if (se.extendTo !== undefined && pts.length) d += `H${fx(Math.min(x1, se.extendTo))}`;
      g.appendChild(s("path", {d: d, fill: "none", stroke: se.color, "stroke-width": se.width || 2}));
    }
    if (se.mode === "points" || se.markers) {
      for (const p of pts) {
        const c = s("circle", {cx: fx(p[0]), cy: fy(p[1]), r: se.size || 3, fill: se.color,
          class: p[2] ? "point link" : "point", "data-id": p[2] || null});
        c.appendChild(s("title", {}, `${se.name}: ${fmt(p[0])}, ${fmt(p[1])}${p[2] ? " (" + short(p[2]) + ")" : ""}`));
        if (p[2] && spec.onClick) c.addEventListener("click", () => spec.onClick(p[2]));
        g.appendChild(c);
      }
    }
    svg.appendChild(g);
    if (se.name) {
      legend.appendChild(s("rect", {x: W - M.r + 12, y: ly - 8, width: 10, height: 10, fill: se.color}));
      legend.appendChild(s("text", {x: W - M.r + 26, y: ly + 1, class: "tick"}, String(se.name).slice(0, 22)));
      ly += 15;
    }
  }
  svg.appendChild(legend);
  return svg;
}
