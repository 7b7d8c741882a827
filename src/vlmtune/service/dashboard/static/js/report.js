// A finished run's report: what it delivered, its validations, and the evals of its model (base vs fine-tuned).

import { API, card, clock, h, num, pct, q } from "./api.js";

export function reportCard(report, ref) {
  const d = report.delivered || {};
  const facts = [
    ["weights delivered", d.weights ? `${d.weights}/ (step ${d.best_step})` : "–"],
    ["best validation loss", num(d.best_validation_loss)],
    ["final training loss", num(d.final_training_loss)],
    ["optimizer steps", num(d.steps)],
    ["method", d.method || "–"],
    ["stopped early", d.stopped_early ? "yes" : "no"],
    ["training time", clock(report.duration_s)],
  ];
  return card("Report",
    h("div", { class: "report", "data-report": "" },
      h("dl", { class: "facts" }, facts.map(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono" }, v)])),
      report.lossCurve ? h("img", { class: "curve", alt: "loss curve", src: API + "/run/file" + q({ ref, path: report.lossCurve }) }) : null),
    validationTable(report.validation),
    report.generation.length ? generationTable(report.generation) : null,
    evaluations(report.evaluations),
    report.customModel ? h("p", {}, "Custom model ", h("code", {}, report.customModel), " — ",
      h("a", { href: "#/models" }, "deploy it and try it in the playground")) : null);
}

function validationTable(rows) {
  if (!rows.length) return h("p", { class: "muted" }, "No validation data: no validation loss.");
  return h("details", { open: rows.length <= 8 }, h("summary", {}, `Validations (${rows.length})`),
    h("table", { class: "grid compact" }, h("thead", {}, h("tr", {}, ["step", "epoch", "validation loss", "perplexity"].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, [r.step_number, r.epoch_number, num(r.validation_loss), num(r.perplexity, 3)].map((v) => h("td", { class: "mono" }, v)))))));
}

function generationTable(rows) {
  const keys = Object.keys(rows[rows.length - 1]).filter((k) => !["step_number", "epoch_number"].includes(k));
  return h("details", {}, h("summary", {}, "Generated-answer metrics on the validation split"),
    h("table", { class: "grid compact" }, h("thead", {}, h("tr", {}, ["step", ...keys].map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.map((r) => h("tr", {}, [r.step_number, ...keys.map((k) => num(r[k]))].map((v) => h("td", { class: "mono" }, v)))))));
}

function evaluations(found) {
  if (!found.length) {
    return h("p", { class: "muted small" }, "No eval of this model under the home yet: ",
      h("code", {}, "vlmtune eval --model RUN/model --data test.jsonl --task ... --out <home>/evals/NAME"), " adds one here.");
  }
  return h("div", {}, h("h4", {}, "Evaluations of this model"), found.map((e) => {
    const keys = Object.keys(e.overall).filter((k) => typeof e.overall[k] === "number");
    const cols = e.base ? ["base", "fine-tuned", "change"] : ["fine-tuned"];
    return h("div", { class: "eval-block", "data-eval": e.folder },
      h("p", {}, h("b", {}, e.task), ` on ${e.n} test records · `, h("a", { href: "#/predictions" + q({ folder: e.folder }) }, "browse predictions")),
      h("table", { class: "grid compact" },
        h("thead", {}, h("tr", {}, ["metric (%)", ...cols].map((t) => h("th", {}, t)))),
        h("tbody", {}, keys.map((k) => {
          const ft = e.overall[k], b = e.base ? e.base.overall[k] : undefined;
          const cells = e.base ? [pct(b), pct(ft), delta(b, ft)] : [pct(ft)];
          return h("tr", { class: k === e.headline ? "headline" : "" }, h("td", {}, k), cells.map((c) => h("td", { class: "mono" }, c)));
        }))));
  }));
}

export function delta(a, b) {
  if (typeof a !== "number" || typeof b !== "number") return "–";
  const d = (b - a) * 100;
  return h("span", { class: d > 0 ? "up" : d < 0 ? "down" : "" }, `${d > 0 ? "+" : ""}${d.toFixed(1)}`);
}
