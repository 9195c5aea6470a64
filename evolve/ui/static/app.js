// The page: routes (#/r/RUN/programs, /tree, /islands, /pareto, /p/ID, #/compare/A/B), the run picker,
// and the poll that refreshes the open view when the archive changes.
"use strict";

const POLL_MS = 2000;

const app = {
  runs: [],
  current: null,     // the open view
  route: null,
  tokens: {},
  lastChange: null,
  summary(run) { return this.runs[run] || null; },
  showError(e) {
    const box = document.getElementById("error");
    box.textContent = e && e.message ? e.message : String(e);
    box.hidden = false;
  },
  clearError() { document.getElementById("error").hidden = true; },
};

const TABS = [["programs", "programs"], ["tree", "genealogy"], ["islands", "islands"], ["pareto", "balance vs runtime"]];

function parseRoute() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query] = hash.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = Object.fromEntries(new URLSearchParams(query || ""));
  if (parts[0] === "compare") return {kind: "compare", args: parts.slice(1), params};
  if (parts[0] === "r" && parts.length >= 3) {
    const run = Math.max(0, Math.min(app.runs.length - 1, Number(parts[1]) || 0));
    if (parts[2] === "p" && parts[3]) return {kind: "program", run, args: [parts[3]], params};
    return {kind: parts[2], run, args: parts.slice(3), params};
  }
  return {kind: "programs", run: 0, args: [], params};
}

function drawTabs(route) {
  const nav = clear(document.getElementById("tabs"));
  const run = route.run === undefined ? 0 : route.run;
  for (const [kind, label] of TABS) {
    nav.appendChild(h("a", {href: `#/r/${run}/${kind}`, class: route.kind === kind ? "tab active" : "tab"}, label));
  }
  if (app.runs.length > 1) {
    nav.appendChild(h("a", {href: `#/compare/${run}/${run === 0 ? 1 : 0}`, class: route.kind === "compare" ? "tab active" : "tab"},
      "compare runs"));
  }
  const sel = document.getElementById("run-select");
  sel.value = String(run);
}

async function show() {
  const route = parseRoute();
  app.route = route;
  app.clearError();
  if (app.current && app.current.destroy) app.current.destroy();
  const makers = {
    programs: () => tableView(route.run, route.params, app),
    tree: () => treeView(route.run, route.params, app),
    islands: () => islandsView(route.run, route.params, app),
    pareto: () => paretoView(route.run, route.params, app),
    program: () => programView(route.run, route.args, app),
    compare: () => compareView(route.args, app),
  };
  const view = (makers[route.kind] || makers.programs)();
  app.current = view;
  drawTabs(route);
  const s = app.summary(route.run || 0);
  document.title = `eplb-evolve: ${s ? s.name : "runs"}`;
  fill(document.getElementById("view"), runHeader(route), view.el);
  try {
    await view.refresh();
  } catch (e) {
    app.showError(e);
  }
}

function runHeader(route) {
  if (route.kind === "compare") return null;
  const s = app.summary(route.run);
  if (!s) return null;
  const steps = Object.entries(s.steps).map(([k, v]) => `${k} ${v}`).join(", ");
  return h("div", {class: "run-header"},
    h("b", {}, s.name), ` ${s.task || ""} · scorer ${s.scorer || "-"} · proposer ${s.proposer || "-"} · `,
    h("span", {id: "program-count"}, `${s.programs} programs`), ` · steps: ${steps || "none"} · best `,
    s.best ? h("a", {href: `#/r/${route.run}/p/${s.best.id}`}, fmt(s.best.score)) : "-",
    ` · ${s.status}`);
}

async function loadRuns() {
  app.runs = await api("runs");
  for (const [i, r] of app.runs.entries()) app.tokens[i] = r.token;
  const sel = clear(document.getElementById("run-select"));
  app.runs.forEach((r, i) => sel.appendChild(h("option", {value: String(i)}, r.name)));
  sel.addEventListener("change", () => {
    const route = parseRoute();
    const kind = route.kind === "program" || route.kind === "compare" ? "programs" : route.kind;
    location.hash = `#/r/${sel.value}/${kind}`;
  });
}

// Ask for each shown run's change token; on a change, reload its summary and refresh the open view.
async function poll() {
  if (document.hidden || !app.route) return;
  const route = app.route;
  const runs = route.kind === "compare" ? [...new Set(route.args.map(Number).filter(n => n < app.runs.length))]
    : [route.run || 0];
  let changed = false;
  for (const run of runs) {
    const {token} = await api(`run/${run}/changes`);
    if (token !== app.tokens[run]) {
      app.tokens[run] = token;
      app.runs[run] = await api(`run/${run}/summary`);
      changed = true;
    }
  }
  const live = document.getElementById("live");
  if (changed) {
    app.lastChange = new Date();
    if (app.route === route && app.current && app.current.refresh) {
      const header = document.querySelector(".run-header");
      const fresh = runHeader(route);
      if (header && fresh) header.replaceWith(fresh);
      await app.current.refresh();
    }
  }
  live.textContent = app.lastChange ? `live · last change ${app.lastChange.toLocaleTimeString()}` : "live · no change yet";
}

async function start() {
  try {
    await loadRuns();
  } catch (e) {
    app.showError(e);
    return;
  }
  window.addEventListener("hashchange", show);
  await show();
  const tick = async () => {
    try {
      await poll();
    } catch (e) {
      document.getElementById("live").textContent = "not reachable: " + e.message;
    }
    setTimeout(tick, POLL_MS);
  };
  setTimeout(tick, POLL_MS);
}

document.addEventListener("DOMContentLoaded", start);
