// Compare: runs' curves overlaid, their training metrics and evals in one table, their configs side by side.

import { card, clock, get, h, num, pct, q, replace } from "./api.js";
import { COLORS, column, lineChart } from "./charts.js";
import { delta } from "./report.js";

export async function compareView(main, params, cleanups) {
  const chosen = (params.get("runs") || "").split(",").filter(Boolean);
  const { runs } = await get("/runs");
  const picked = new Set(chosen);
  const go = h("button", { class: "primary", onclick: () => { location.hash = "#/compare" + q({ runs: [...picked].join(",") }); } }, "Compare");
  main.append(h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Compare runs"),
    h("p", { class: "muted" }, "Pick runs: their curves overlaid, their settings side by side with the differences marked."))),
  card(null, h("div", { class: "chips" }, runs.map((r) => h("label", { class: "chip" },
    h("input", { type: "checkbox", value: r.ref, checked: picked.has(r.ref), onchange: (e) => (e.target.checked ? picked.add(r.ref) : picked.delete(r.ref)) }),
    r.name, h("span", { class: "muted small" }, ` ${r.state}`)))), h("div", { class: "form-foot" }, go)));
  if (!chosen.length) return;

  const [result, ...curves] = await Promise.all([get("/compare" + q({ runs: chosen.join(",") })), ...chosen.map((ref) => get("/run/curves" + q({ ref })))]);
  const names = result.runs.map((r) => r.name);
  const charts = h("div", { class: "charts" });
  main.append(h("div", { class: "legend-row" }, names.map((n, i) => h("span", { class: "swatch-label" },
    h("span", { class: "swatch", style: { background: COLORS[i % COLORS.length] } }), n))), charts);
  const overlay = (title, name, rows, key, points) => {
    const chart = lineChart(charts, { title, name, series: names.map((n, i) => ({ label: n, color: COLORS[i % COLORS.length], points })) });
    chart.set(curves.map((c) => column(c[rows], key)));
    cleanups.push(() => chart.destroy());
  };
  overlay("Training loss", "train", "train", "training_loss");
  overlay("Validation loss", "val", "val", "validation_loss", true);
  overlay("Learning rate", "lr", "train", "learning_rate");
  overlay("Gradient norm", "grad", "train", "grad_norm");

  const columns = h("div", { class: "columns" });
  const left = h("div", { class: "col" }), right = h("div", { class: "col" });
  columns.append(left, right);
  main.append(columns);
  left.append(metricsTable(result.metrics, names));
  if (result.evaluation) left.append(evaluationTables(result.evaluation));
  right.append(configTable(result.config, names));
}

function metricsTable(metrics, names) {
  return card("Training metrics", h("table", { class: "grid compact", "data-table": "metrics" },
    h("thead", {}, h("tr", {}, h("th", {}, "metric"), names.map((n) => h("th", {}, n)))),
    h("tbody", {}, metrics.rows.map((r) => h("tr", {}, h("td", {}, r.metric),
      r.values.map((v, i) => h("td", { class: `mono ${r.best === i ? "best" : ""}` }, shown(r.kind, v))))))));
}

function shown(kind, v) {
  if (v === null || v === undefined) return "–";
  return { flag: v ? "yes" : "no", seconds: clock(v), rate: num(Math.round(v)), count: num(v) }[kind] ?? num(v);
}

function evaluationTables(e) {
  const cols = e.columns.map((c) => c.name);
  const base = e.hasBase ? 0 : -1;
  const cell = (values, i) => h("td", { class: "mono" }, pct(values[i]),
    base >= 0 && i > base && typeof values[i] === "number" ? [" ", delta(values[base], values[i])] : null);
  const overall = h("table", { class: "grid compact", "data-table": "evaluation" },
    h("thead", {}, h("tr", {}, h("th", {}, "metric (%)"), cols.map((n) => h("th", {}, n)))),
    h("tbody", {}, e.overall.map((r) => h("tr", {}, h("td", {}, r.metric), r.values.map((_, i) => cell(r.values, i))))));
  const parts = [h("p", { class: "muted small" }, `${e.task}, ${e.n} test records; change in points against the base model`), overall];
  if (e.categories) {
    parts.push(h("h4", {}, "By category (as the published W-2 table)"), h("table", { class: "grid compact", "data-table": "categories" },
      h("thead", {}, h("tr", {}, h("th", {}, "category"), h("th", {}, "metric (%)"), cols.map((n) => h("th", {}, n)))),
      h("tbody", {}, e.categories.map((r, k) => h("tr", { class: r.metric === "accuracy" && k ? "group" : "" },
        h("td", {}, r.metric === "accuracy" ? r.category : ""), h("td", {}, r.metric), r.values.map((_, i) => cell(r.values, i)))))));
  }
  return card("Evaluations of the runs' models", parts);
}

function configTable(config, names) {
  const onlyDiff = h("input", { type: "checkbox", checked: config.differing > 0 });
  const body = h("tbody", {});
  const draw = () => replace(body, config.rows.filter((r) => !onlyDiff.checked || r.differs).map((r) => h("tr", { class: r.differs ? "diff" : "", "data-key": r.key },
    h("td", { class: "mono small" }, r.key), r.values.map((v) => h("td", { class: "mono small" }, v === null || v === undefined ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v))))));
  onlyDiff.addEventListener("change", draw);
  draw();
  return card("Config", h("label", { class: "toggle small" }, onlyDiff, ` only the ${config.differing} settings that differ`),
    h("table", { class: "grid compact config", "data-table": "config" },
      h("thead", {}, h("tr", {}, h("th", {}, "setting"), names.map((n) => h("th", {}, n)))), body));
}
