// The page's views. Each takes (run number, route arguments, app) and returns {el, refresh, destroy}:
// `refresh` is called when the archive changed, `destroy` when the view is left.
"use strict";

const PAGE = 50;

function go(hash) {
  if (location.hash !== hash) location.hash = hash;
}

function programLink(run, id, text) {
  return h("a", {href: `#/r/${run}/p/${id}`, class: "pid"}, text || short(id));
}

function scoreText(correct, score) {
  if (correct === null || correct === undefined) return "not evaluated";
  return correct ? fmt(score) : "incorrect";
}

function kv(rows) {
  return h("table", {class: "kv"}, rows.filter(Boolean).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, v))));
}

// ---- program table ----------------------------------------------------------------------------------------
const FILTERS = [
  ["score_min", "score ≥", "number"], ["score_max", "score ≤", "number"],
  ["runtime_min", "runtime ≥", "number"], ["runtime_max", "runtime ≤", "number"],
  ["island", "island", "select"], ["generation_min", "generation ≥", "number"],
  ["generation_max", "generation ≤", "number"], ["proposer", "proposer", "select"], ["model", "model", "select"],
  ["correct", "correct", "select"], ["error", "error contains", "text"], ["text", "id or patch name", "text"],
];

function tableView(run, params, app) {
  const state = Object.assign({sort: "score", descending: "1", offset: "0"}, params);
  const seen = new Set();
  let first = true;
  const form = h("form", {class: "filters", id: "filters"});
  const inputs = {};
  for (const [key, label, kind] of FILTERS) {
    let input;
    if (kind === "select") {
      input = h("select", {name: key}, h("option", {value: ""}, "any"));
      if (key === "correct") {
        input.appendChild(h("option", {value: "1"}, "correct"));
        input.appendChild(h("option", {value: "0"}, "incorrect"));
      }
    } else {
      input = h("input", {name: key, type: kind === "number" ? "number" : "text", step: "any",
        placeholder: kind === "number" ? "" : "..."});
    }
    input.value = state[key] || "";
    inputs[key] = input;
    input.addEventListener("change", () => apply());
    if (kind === "text") input.addEventListener("input", debounce(apply, 350));
    form.appendChild(h("label", {}, label, input));
  }
  form.appendChild(h("button", {type: "button", onclick: () => {
    for (const k of Object.keys(inputs)) inputs[k].value = "";
    apply();
  }}, "clear"));
  form.addEventListener("submit", e => { e.preventDefault(); apply(); });
  const info = h("p", {class: "note", id: "table-info"}, "loading...");
  const table = h("table", {class: "programs", id: "programs"});
  const pager = h("div", {class: "pager"});
  const el = h("section", {}, form, info, table, pager);

  api(`run/${run}/choices`).then(ch => {
    for (const key of ["island", "proposer", "model"]) {
      for (const v of ch[key]) inputs[key].appendChild(h("option", {value: String(v)}, v === "" ? "(none)" : String(v)));
      inputs[key].value = state[key] || "";
    }
  }).catch(app.showError);

  function debounce(fn, ms) {
    let t = null;
    return () => { clearTimeout(t); t = setTimeout(fn, ms); };
  }

  function apply() {
    for (const [k, input] of Object.entries(inputs)) state[k] = input.value;
    state.offset = "0";
    go(`#/r/${run}/programs?` + query());
  }

  function query() {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(state)) if (v !== "" && v !== undefined) q.set(k, v);
    return q.toString();
  }

  const columns = [
    ["n", "#"], [null, "program"], ["island", "island"], ["generation", "gen"], ["patch", "patch"],
    ["proposer", "proposer"], ["model", "model"], ["score", "score"], ["runtime", "runtime"],
    ["balance", "balance"], ["correct", "ok"], [null, "error"],
  ];

  function header(data) {
    const tr = h("tr");
    for (const [key, label] of columns) {
      let text = label;
      if (key === "runtime" && data.runtime_key) text = data.runtime_key;
      if (key === "balance" && data.balance_key) text = data.balance_key;
      if (key && state.sort === key) text += state.descending === "1" ? " ▼" : " ▲";
      const th = h("th", {"data-sort": key || null, class: key ? "sortable" : null}, text);
      if (key) th.addEventListener("click", () => {
        state.descending = state.sort === key && state.descending === "1" ? "0" : "1";
        state.sort = key;
        state.offset = "0";
        go(`#/r/${run}/programs?` + query());
      });
      tr.appendChild(th);
    }
    return h("thead", {}, tr);
  }

  async function refresh() {
    const data = await api(`run/${run}/programs?` + query() + `&limit=${PAGE}`);
    clear(table).appendChild(header(data));
    const body = h("tbody");
    for (const r of data.rows) {
      const fresh = !first && !seen.has(r.id);
      seen.add(r.id);
      body.appendChild(h("tr", {class: (fresh ? "new " : "") + (r.correct ? "" : "bad"), "data-id": r.id},
        h("td", {class: "num"}, r.n), h("td", {}, programLink(run, r.id)),
        h("td", {class: "num"}, h("span", {class: `dot island-${r.island % 10}`}), " ", r.island),
        h("td", {class: "num"}, r.generation), h("td", {class: "patch"}, r.patch_name || (r.parent_id ? "" : "seed")),
        h("td", {}, r.proposer), h("td", {}, r.model), h("td", {class: "num"}, scoreText(r.correct, r.score)),
        h("td", {class: "num"}, fmt(r.runtime)), h("td", {class: "num"}, fmt(r.balance)),
        h("td", {}, r.correct ? "✓" : "✗"), h("td", {class: "error-cell", title: r.error || ""}, r.error || "")));
    }
    first = false;
    table.appendChild(body);
    const off = data.offset;
    info.textContent = data.total ? `programs ${off + 1}-${off + data.rows.length} of ${data.total}` : "no program matches";
    clear(pager);
    const prev = h("button", {type: "button", disabled: off === 0}, "◀ previous");
    prev.addEventListener("click", () => { state.offset = String(Math.max(0, off - PAGE)); go(`#/r/${run}/programs?` + query()); });
    const next = h("button", {type: "button", disabled: off + PAGE >= data.total}, "next ▶");
    next.addEventListener("click", () => { state.offset = String(off + PAGE); go(`#/r/${run}/programs?` + query()); });
    pager.append(prev, next);
  }
  return {el, refresh};
}

// ---- diff ------------------------------------------------------------------------------------------------
function diffView(d, mode) {
  if (d.identical) return h("p", {class: "note"}, "identical code");
  const stats = h("p", {class: "note"}, `+${d.added} −${d.removed} lines`);
  if (mode === "split") {
    const table = h("table", {class: "diff split"},
      h("colgroup", {}, h("col", {class: "ln"}), h("col"), h("col", {class: "ln"}), h("col")));
    for (const hunk of d.hunks) {
      const a0 = hunk[0].a_start, b0 = hunk[0].b_start;
      table.appendChild(h("tr", {class: "hunk"}, h("td", {colspan: 4}, `@@ -${a0} +${b0} @@`)));
      for (const op of hunk) {
        const n = Math.max(op.a.length, op.b.length);
        for (let i = 0; i < n; i++) {
          const left = i < op.a.length, right = i < op.b.length;
          const lc = op.tag === "equal" ? "" : left ? "del" : "empty";
          const rc = op.tag === "equal" ? "" : right ? "add" : "empty";
          table.appendChild(h("tr", {},
            h("td", {class: "ln"}, left ? op.a_start + i : ""), h("td", {class: "code " + lc}, left ? op.a[i] : ""),
            h("td", {class: "ln"}, right ? op.b_start + i : ""), h("td", {class: "code " + rc}, right ? op.b[i] : "")));
        }
      }
    }
    return h("div", {class: "diff-wrap"}, stats, table);
  }
  const pre = h("pre", {class: "diff unified"});
  for (const hunk of d.hunks) {
    const a0 = hunk[0].a_start, b0 = hunk[0].b_start;
    pre.appendChild(h("span", {class: "hunk"}, `@@ -${a0} +${b0} @@`));
    for (const op of hunk) {
      if (op.tag === "equal") {
        for (const line of op.a) pre.appendChild(h("span", {class: "ctx"}, " " + line));
      } else {
        for (const line of op.a) pre.appendChild(h("span", {class: "del"}, "-" + line));
        for (const line of op.b) pre.appendChild(h("span", {class: "add"}, "+" + line));
      }
    }
  }
  return h("div", {class: "diff-wrap"}, stats, pre);
}

// ---- one program -----------------------------------------------------------------------------------------
function programView(run, args, app) {
  const pid = args[0];
  const el = h("section", {class: "program"}, h("p", {class: "note"}, "loading..."));
  let loadedFor = null;
  const diffState = {against: "parent", other: "", arun: String(run), mode: "unified"};

  async function refresh() {
    const p = await api(`run/${run}/program/${encodeURIComponent(pid)}`);
    const key = JSON.stringify([p.children.length, p.versions.length, p.members.length]);
    if (loadedFor === key) return;  // nothing about this program changed
    loadedFor = key;
    const summary = app.summary(run);
    const r = p.result || {};
    const title = h("h2", {}, "program ", h("code", {id: "program-id"}, p.id.slice(0, 16)), " ",
      h("span", {class: "patch-name"}, p.patch_name || (p.parent_id ? "(unnamed patch)" : "seed")));
    const badges = h("p", {class: "badges"},
      h("span", {class: r.correct ? "badge ok" : "badge bad"}, p.result ? (r.correct ? "correct" : "incorrect") : "no result"),
      summary && summary.best && summary.best.id === p.id ? h("span", {class: "badge best"}, "best") : null,
      p.versions.map(v => h("span", {class: "badge"}, `v${v.version}`)),
      h("span", {class: "badge"}, `island ${p.island}`), h("span", {class: "badge"}, `generation ${p.generation}`));
    const lineage = h("p", {class: "lineage"}, "lineage: ",
      p.ancestors.map(a => [programLink(run, a.id, (a.patch_name || "seed").slice(0, 40)), " → "]),
      h("b", {}, (p.patch_name || "seed").slice(0, 40)));
    const facts = kv([
      ["score", scoreText(p.result ? r.correct : null, r.score)],
      ["error", r.error ? h("pre", {class: "error-text", id: "program-error"}, r.error) : null],
      ["parent", p.parent_id ? programLink(run, p.parent_id) : "none (seed)"],
      ["inspirations", p.inspirations.length ? p.inspirations.map(i => [programLink(run, i), " "]) : "none"],
      ["proposer", `${p.proposer || "-"} ${p.model ? "(" + p.model + ")" : ""}`],
      ["tokens, cost", `${p.tokens_in} in, ${p.tokens_out} out, $${fmt(p.cost)}`],
      ["created", time(p.created_at)],
      ["islands", p.members.map(m => `${m.island} (${m.via}, step ${m.idx})`).join(", ") || "none"],
      ["steps", p.steps.map(st => `${st.idx} ${st.kind}`).join(", ") || "none"],
      ["evaluator", r.evaluator_version ? `${r.evaluator_version}; scorer ${r.scorer}` : "-"],
    ].filter(row => row[1] !== null));
    const metrics = h("table", {class: "kv metrics"},
      Object.entries(r.scores || {}).map(([k, v]) => h("tr", {}, h("th", {}, "score: " + k), h("td", {class: "num"}, fmt(v)))),
      Object.entries(r.metrics || {}).map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", {class: "num"}, fmt(v)))));

    const diffBox = h("div", {id: "diff"});
    const againstSel = h("select", {id: "diff-against"},
      h("option", {value: "parent"}, "its parent"), h("option", {value: "seed"}, "the seed"),
      h("option", {value: "best"}, "the best program"), h("option", {value: "other"}, "program id..."));
    againstSel.value = diffState.against;
    const otherInput = h("input", {type: "text", id: "diff-other", placeholder: "id prefix", value: diffState.other});
    const runSel = h("select", {id: "diff-run"}, app.runs.map((rn, i) => h("option", {value: String(i)}, rn.name)));
    runSel.value = diffState.arun;
    const modeSel = h("select", {id: "diff-mode"}, h("option", {value: "unified"}, "unified"),
      h("option", {value: "split"}, "side by side"));
    modeSel.value = diffState.mode;
    const drawDiff = async () => {
      Object.assign(diffState, {against: againstSel.value, other: otherInput.value.trim(), arun: runSel.value,
        mode: modeSel.value});
      const q = new URLSearchParams({b: p.id});
      const target = app.summary(Number(diffState.arun)) || {};
      if (diffState.against === "seed") q.set("a", target.seed || "");
      if (diffState.against === "best") q.set("a", target.best ? target.best.id : target.seed || "");
      if (diffState.against === "other") q.set("a", diffState.other);
      if (diffState.against !== "parent") q.set("arun", diffState.arun);
      try {
        if (diffState.against === "other" && !diffState.other) throw new Error("type a program id");
        const d = await api(`run/${run}/diff?` + q.toString());
        fill(diffBox, h("p", {class: "note"}, d.note || `against ${short(d.a)}`), diffView(d, diffState.mode));
      } catch (e) {
        clear(diffBox).appendChild(h("p", {class: "error-inline"}, e.message));
      }
    };
    for (const c of [againstSel, runSel, modeSel]) c.addEventListener("change", drawDiff);
    otherInput.addEventListener("change", drawDiff);

    const windowBox = h("div", {id: "per-window"});
    const children = h("ul", {class: "children", id: "children"},
      p.children.length ? p.children.map(c => h("li", {}, programLink(run, c.id), " ",
        (c.patch_name || "").slice(0, 80), ` (island ${c.island}, ${scoreText(c.correct, c.score)})`))
        : h("li", {class: "note"}, "no children yet"));
    const talk = h("div", {id: "transcript"}, h("p", {class: "note"}, "loading the transcript..."));
    const texts = ["feedback", "stdout", "stderr"].filter(k => r[k]).map(k =>
      h("details", {}, h("summary", {}, k), h("pre", {class: "output"}, r[k])));

    fill(el, title, badges, lineage,
      h("div", {class: "cols"}, h("div", {}, h("h3", {}, "facts"), facts), h("div", {}, h("h3", {}, "metrics"), metrics)),
      h("h3", {}, "diff"), h("div", {class: "diff-controls"}, "against ", againstSel, otherInput, " in run ", runSel, " ", modeSel),
      diffBox,
      h("h3", {}, "per window"), windowBox,
      h("h3", {}, "code"), h("pre", {class: "code", id: "program-code"}, p.code),
      p.patch_diff ? h("details", {}, h("summary", {}, "the patch as proposed"), h("pre", {class: "code"}, p.patch_diff)) : null,
      texts,
      h("h3", {}, `children (${p.children.length})`), children,
      h("h3", {}, "prompt and reply"), talk);
    drawDiff();
    drawWindows(run, p, windowBox, app);
    api(`run/${run}/transcript/${p.id}`).then(t => showTranscript(t.conversation, talk)).catch(e => {
      clear(talk).appendChild(h("p", {class: "error-inline"}, e.message));
    });
  }
  return {el, refresh};
}

async function drawWindows(run, p, box, app) {
  const rows = (p.result && p.result.per_window) || [];
  if (!rows.length || typeof rows[0] !== "object") {
    box.appendChild(h("p", {class: "note"}, "no per-window detail stored"));
    return;
  }
  const keys = Object.keys(rows[0]).filter(k => k !== "window" && typeof rows[0][k] === "number");
  if (!keys.length) return;
  const sel = h("select", {}, keys.map(k => h("option", {value: k}, k)));
  const plot = h("div");
  const others = [];
  const summary = app.summary(run);
  for (const [label, id] of [["parent", p.parent_id], ["seed", summary && summary.seed]]) {
    if (id && id !== p.id && !others.some(o => o.id === id)) {
      try {
        const o = await api(`run/${run}/program/${id}`);
        if (o.result && o.result.per_window && o.result.per_window.length) others.push({label, id, rows: o.result.per_window});
      } catch (e) { /* that program's detail is optional */ }
    }
  }
  const draw = () => {
    const k = sel.value;
    const series = [...others.map((o, i) => ({label: o.label, rows: o.rows, color: ["#1f77b4", "#d62728"][i]})),
      {label: "this program", rows, color: "#2ca02c"}];  // drawn last: on top where the lines coincide
    clear(plot).appendChild(chart({
      xlabel: "window", ylabel: k, height: 280,
      series: series.map(se => ({name: se.label, color: se.color, mode: "line", markers: true, size: 2.5,
        points: se.rows.map((w, i) => [w.window !== undefined ? w.window : i, typeof w[k] === "number" ? w[k] : null])})),
    }));
  };
  sel.addEventListener("change", draw);
  box.append(h("label", {}, "metric ", sel), plot);
  draw();
}

function showTranscript(conv, box) {
  clear(box);
  if (!conv) {
    box.appendChild(h("p", {class: "note"}, "no transcript record for this program (the offline mutator keeps none)"));
    return;
  }
  box.appendChild(kv([["model", conv.model], ["attempts", conv.attempts],
    ["tokens", `${conv.tokens_in} in, ${conv.tokens_out} out`], ["cost", "$" + fmt(conv.cost)],
    conv.error ? ["error", conv.error] : null]));
  conv.calls.forEach((call, i) => {
    const d = h("details", {class: "call", open: i === conv.calls.length - 1},
      h("summary", {}, `call ${i + 1}: attempt ${call.attempt}, try ${call.try}, ${call.model || ""}` +
        (call.error ? ` (error: ${call.error})` : "")));
    for (const m of call.messages) d.appendChild(h("div", {class: "message"}, h("b", {}, m.role || "?"),
      h("pre", {class: "output"}, m.content || "")));
    d.appendChild(h("div", {class: "message reply"}, h("b", {}, "reply"), h("pre", {class: "output reply-text"},
      call.reply === null ? "(no reply)" : call.reply)));
    box.appendChild(d);
  });
}

// Cytoscape.js is large: fetched (from this server) the first time a genealogy is shown, not with the page.
let graphLibrary = null;
function loadGraphLibrary() {
  if (!graphLibrary) {
    graphLibrary = new Promise((resolve, reject) => {
      const tag = h("script", {});
      tag.addEventListener("load", resolve);
      tag.addEventListener("error", () => { graphLibrary = null; reject(new Error("could not load the graph library")); });
      tag.src = "/static/vendor/cytoscape.min.js";
      document.head.appendChild(tag);
    });
  }
  return graphLibrary;
}

// ---- genealogy -------------------------------------------------------------------------------------------
function treeView(run, params, app) {
  const limit = params.limit || "1500";
  const holder = h("div", {id: "tree", class: "tree"});
  const hover = h("div", {class: "tree-hover note", id: "tree-hover"}, "click a node to open its program");
  const info = h("p", {class: "note", id: "tree-info"});
  const limitSel = h("select", {}, ["300", "1500", "5000"].map(v => h("option", {value: v}, `${v} nodes at most`)));
  limitSel.value = limit;
  limitSel.addEventListener("change", () => go(`#/r/${run}/tree?limit=${limitSel.value}`));
  const fit = h("button", {type: "button"}, "fit");
  const legend = h("div", {class: "legend-row"});
  const el = h("section", {}, h("div", {class: "tree-bar"}, limitSel, fit, info), legend, holder, hover);
  let cy = null;

  function layout(nodes) {
    // leaves in order of birth get consecutive rows; a parent sits at the mean of its children; x = depth
    const kids = new Map(), roots = [];
    for (const n of nodes) {
      if (n.parent) { if (!kids.has(n.parent)) kids.set(n.parent, []); kids.get(n.parent).push(n.id); }
      else roots.push(n.id);
    }
    const pos = new Map();
    let row = 0;
    const stack = roots.slice().reverse().map(id => [id, 0, false]);
    while (stack.length) {
      const [id, depth, done] = stack.pop();
      const cs = kids.get(id) || [];
      if (!cs.length) { pos.set(id, {x: depth * 70, y: row++ * 22}); continue; }
      if (done) {
        const ys = cs.map(c => pos.get(c).y);
        pos.set(id, {x: depth * 70, y: (Math.min(...ys) + Math.max(...ys)) / 2});
        continue;
      }
      stack.push([id, depth, true]);
      for (const c of cs.slice().reverse()) stack.push([c, depth + 1, false]);
    }
    return pos;
  }

  // a busy campaign changes the archive every poll: redraw the tree at most every few seconds
  let lastDraw = 0, pending = null, gone = false;
  async function refresh() {
    const wait = lastDraw + 5000 - Date.now();
    if (cy && wait > 0) {
      if (!pending) pending = setTimeout(() => { pending = null; refresh().catch(app.showError); }, wait);
      return;
    }
    lastDraw = Date.now();
    const [t] = await Promise.all([api(`run/${run}/tree?limit=${limit}`), loadGraphLibrary()]);
    if (gone) return;
    const onPath = new Set(t.best_path);
    const byId = new Map(t.nodes.map(n => [n.id, n]));
    const pos = layout(t.nodes);
    const islands = [...new Set(t.nodes.map(n => n.island))].sort((a, b) => a - b);
    fill(legend, islands.map(i => h("span", {class: "legend-item"}, h("span", {class: `dot island-${i % 10}`}), ` island ${i}`)),
      h("span", {class: "legend-item"}, h("span", {class: "swatch best-path"}), " best path"),
      h("span", {class: "legend-item"}, h("span", {class: "swatch migration"}), " child on another island than its parent"),
      h("span", {class: "legend-item"}, h("span", {class: "swatch hollow"}), " incorrect"),
      h("span", {class: "legend-item"}, h("span", {class: "swatch migrated"}), " migrated to other islands"));
    info.textContent = `${t.nodes.length} of ${t.total} programs` + (t.truncated ?
      ` (showing the best path, the top and the newest programs with their ancestors; ${t.truncated} hidden)` : "");
    const elements = [];
    for (const n of t.nodes) {
      const p = pos.get(n.id) || {x: 0, y: 0};
      const classes = [n.correct ? "ok" : "bad", onPath.has(n.id) ? "path" : "", n.id === t.best ? "best" : "",
        n.migrated_to.length ? "migrated" : ""].join(" ");
      elements.push({group: "nodes", data: {id: n.id, label: (n.name || (n.parent ? "" : "seed")).slice(0, 28),
        color: islandColor(n.island)}, position: p, classes});
      if (n.parent) {
        const parent = byId.get(n.parent);
        const cross = parent && parent.island !== n.island;
        elements.push({group: "edges", data: {id: "e" + n.id, source: n.parent, target: n.id},
          classes: (onPath.has(n.id) && onPath.has(n.parent) ? "path" : "") + (cross ? " cross" : "")});
      }
    }
    const view = cy ? {zoom: cy.zoom(), pan: cy.pan()} : null;
    if (cy) cy.destroy();
    cy = cytoscape({
      container: holder, elements, layout: {name: "preset"}, minZoom: 0.02, maxZoom: 4,
      boxSelectionEnabled: false, autoungrabify: true,
      style: [
        {selector: "node", style: {"background-color": "data(color)", width: 10, height: 10, label: "data(label)",
          "font-size": 8, "text-valign": "center", "text-halign": "right", "text-margin-x": 4, color: "#333",
          "min-zoomed-font-size": 7, "border-width": 1, "border-color": "#fff"}},
        {selector: "node.bad", style: {"background-color": "#fff", "border-color": "data(color)", "border-width": 2}},
        {selector: "node.migrated", style: {"border-style": "double", "border-width": 4, "border-color": "#555"}},
        {selector: "node.path", style: {width: 16, height: 16, "border-color": "#e6a800", "border-width": 3,
          "font-weight": "bold", "min-zoomed-font-size": 3}},
        {selector: "node.best", style: {shape: "star", width: 24, height: 24}},
        {selector: "edge", style: {width: 1, "line-color": "#bbb", "curve-style": "taxi", "taxi-direction": "horizontal"}},
        {selector: "edge.cross", style: {"line-style": "dashed", "line-color": "#9467bd", width: 1.5}},
        {selector: "edge.path", style: {width: 4, "line-color": "#e6a800"}},
      ],
    });
    window.eplbTree = cy;  // for scripting from the console, and for the browser test
    if (view) { cy.zoom(view.zoom); cy.pan(view.pan); } else cy.fit(undefined, 30);
    cy.on("tap", "node", e => go(`#/r/${run}/p/${e.target.id()}`));
    cy.on("mouseover", "node", e => {
      const n = byId.get(e.target.id());
      hover.textContent = `${short(n.id)}  ${n.name || "seed"}  island ${n.island}, generation ${n.generation}, ` +
        `${scoreText(n.correct, n.score)}` + (n.hidden ? `, ${n.hidden} children not shown` : "") +
        (n.migrated_to.length ? `, migrated to island ${n.migrated_to.join(", ")}` : "");
    });
  }
  fit.addEventListener("click", () => cy && cy.fit(undefined, 30));
  return {el, refresh, destroy: () => { gone = true; clearTimeout(pending); if (cy) cy.destroy(); window.eplbTree = null; }};
}

// ---- islands over time ----------------------------------------------------------------------------------------
function islandsView(run, params, app) {
  const plot = h("div", {id: "islands-plot"});
  const note = h("p", {class: "note"});
  const el = h("section", {}, h("h2", {}, "score over time, per island"), note, plot);
  async function refresh() {
    const d = await api(`run/${run}/islands`);
    const series = [];
    for (const [island, se] of Object.entries(d.islands)) {
      series.push({name: `island ${island}`, color: islandColor(island), mode: "points", size: 2.5, points: se.points});
      series.push({name: null, color: islandColor(island), mode: "step", width: 1.5, points: se.best, extendTo: d.last_step});
    }
    series.push({name: "best overall", color: "#222", mode: "step", width: 2.5, points: d.best, extendTo: d.last_step});
    note.textContent = "dots: correct programs by the step that proposed them (click one to open it); lines: best so far" +
      (d.sampled ? "; dots are sampled, every improvement is kept" : "");
    clear(plot).appendChild(chart({series, xlabel: "step", ylabel: "score", height: 420, width: 960,
      onClick: id => go(`#/r/${run}/p/${id}`)}));
  }
  return {el, refresh};
}

// ---- balance against runtime ---------------------------------------------------------------------------------
function paretoView(run, params, app) {
  const summary = app.summary(run) || {};
  const keys = summary.metric_keys || [];
  const xs = h("select", {id: "pareto-x"}, keys.map(k => h("option", {value: k}, k)));
  const ys = h("select", {id: "pareto-y"}, keys.map(k => h("option", {value: k}, k)));
  xs.value = params.runtime || summary.runtime_key || keys[0] || "";
  ys.value = params.balance || summary.balance_key || keys[0] || "";
  const logx = h("input", {type: "checkbox", checked: params.logx !== "0"});
  const plot = h("div", {id: "pareto-plot"});
  const note = h("p", {class: "note"});
  const change = () => go(`#/r/${run}/pareto?runtime=${encodeURIComponent(xs.value)}&balance=${encodeURIComponent(ys.value)}&logx=${logx.checked ? 1 : 0}`);
  for (const c of [xs, ys, logx]) c.addEventListener("change", change);
  const el = h("section", {}, h("h2", {}, "balance against runtime"),
    h("p", {class: "controls"}, h("label", {}, "x ", xs), h("label", {}, " y ", ys), h("label", {}, logx, " log x")),
    note, plot);
  async function refresh() {
    if (!xs.value || !ys.value) { note.textContent = "no numeric metrics stored in this run"; return; }
    const d = await api(`run/${run}/pareto?runtime=${encodeURIComponent(xs.value)}&balance=${encodeURIComponent(ys.value)}`);
    const s = app.summary(run) || {};
    const mark = (id) => d.points.concat(d.front).filter(p => p[2] === id).slice(0, 1);
    note.textContent = `${d.total} correct programs` + (d.sampled ? " (sampled; the front is complete)" : "") +
      "; up and to the left is better when y is a balance to maximise and x a time to minimise";
    clear(plot).appendChild(chart({
      xlabel: d.runtime_key + (logx.checked ? " (log scale)" : ""), ylabel: d.balance_key, logx: logx.checked,
      width: 960, height: 460, onClick: id => go(`#/r/${run}/p/${id}`),
      series: [
        {name: "programs", color: "#aaa", mode: "points", size: 2.5, points: d.points},
        {name: "front", color: "#1f77b4", mode: "line", markers: true, size: 3.5, points: d.front},
        {name: "seed", color: "#d62728", mode: "points", size: 7, points: mark(s.seed)},
        {name: "best", color: "#2ca02c", mode: "points", size: 7, points: s.best ? mark(s.best.id) : []},
      ],
    }));
  }
  return {el, refresh};
}

// ---- two runs side by side --------------------------------------------------------------------------------------
function compareView(args, app) {
  const a = Number(args[0] || 0), b = Number(args[1] !== undefined ? args[1] : Math.min(1, app.runs.length - 1));
  const pick = (value) => {
    const sel = h("select", {}, app.runs.map((r, i) => h("option", {value: String(i)}, r.name)));
    sel.value = String(value);
    sel.addEventListener("change", () => go(`#/compare/${selA.value}/${selB.value}`));
    return sel;
  };
  const selA = pick(a), selB = pick(b);
  const cols = h("div", {class: "cols"});
  const plot = h("div", {id: "compare-plot"});
  const diffBox = h("div", {id: "compare-diff"});
  const el = h("section", {}, h("h2", {}, "two runs side by side"),
    h("p", {class: "controls"}, "run ", selA, " against ", selB),
    cols, h("h3", {}, "best score against evaluations"), plot, h("h3", {}, "best program of the second run against the first's"), diffBox);
  async function refresh() {
    const [sa, sb, ca, cb] = await Promise.all([api(`run/${a}/summary`), api(`run/${b}/summary`),
      api(`run/${a}/curve`), api(`run/${b}/curve`)]);
    const col = (sm, i) => h("div", {}, h("h3", {}, sm.name), kv([
      ["status", sm.status], ["programs", sm.programs],
      ["steps", Object.entries(sm.steps).map(([k, v]) => `${k} ${v}`).join(", ")],
      ["best", sm.best ? [programLink(i, sm.best.id), " ", fmt(sm.best.score)] : "-"],
      ["seed", sm.seed ? programLink(i, sm.seed) : "-"], ["task", `${sm.task || "-"}, scorer ${sm.scorer || "-"}`],
      ["proposer", sm.proposer || "-"]]));
    fill(cols, col(sa, a), col(sb, b));
    clear(plot).appendChild(chart({xlabel: "evaluations", ylabel: "best score so far", width: 960, height: 340, series: [
      {name: sa.name, color: "#1f77b4", mode: "step", points: ca},
      {name: sb.name + (a === b ? " (same run)" : ""), color: "#ff7f0e", mode: "step", points: cb}]}));
    clear(diffBox);
    const bestA = sa.best ? sa.best.id : sa.seed, bestB = sb.best ? sb.best.id : sb.seed;
    if (bestA && bestB) {
      const d = await api(`run/${b}/diff?b=${bestB}&a=${bestA}&arun=${a}`);
      diffBox.appendChild(diffView(d, "split"));
    }
  }
  return {el, refresh};
}
