// The predictions browser: each test record of an eval or a compare with its image, the expected answer,
// each model's answer and (extraction) every field's verdict; filter to the wrong ones.

import { API, card, get, h, num, pct, q, replace, short } from "./api.js";

const LABELS = { model: "model", base: "base", fineTuned: "fine-tuned" };
const FILTER_WORDS = { all: "All", wrong: "Wrong", fixed: "Fixed by fine-tuning", broken: "Broken by fine-tuning" };
const PAGE = 24;

export async function predictionsView(main, params) {
  const folder = params.get("folder");
  if (!folder) return folderList(main);
  const show = params.get("show") || "all", offset = Number(params.get("offset") || 0);
  const page = await get("/predictions" + q({ folder, show, offset, limit: PAGE }));
  const link = (changes) => "#/predictions" + q({ folder, show, offset: 0, ...changes });
  const names = Object.keys(page.models);
  main.append(h("div", { class: "page-head" }, h("div", {},
    h("a", { href: "#/predictions", class: "muted small" }, "← Eval folders"),
    h("h1", {}, page.kind === "compare" ? "Base vs fine-tuned" : "Predictions", h("span", { class: "muted" }, ` · ${page.task}`)),
    h("p", { class: "muted mono small" }, page.folder))),
  h("div", { class: "stats" }, names.map((n) => {
    const m = page.metrics[n];
    return h("div", { class: "stat" }, h("div", { class: "label" }, `${LABELS[n]} · ${m.headline}`),
      h("div", { class: "value" }, `${pct(m.overall[m.headline])}%`), h("div", { class: "extra mono small" }, short(page.models[n], 44)));
  })),
  h("div", { class: "filters", role: "group" }, Object.entries(page.counts).map(([key, count]) =>
    h("a", { class: `filter ${key === show ? "active" : ""}`, href: link({ show: key }), "data-filter": key }, `${FILTER_WORDS[key]} `, h("span", { class: "count" }, count)))));
  const grid = h("div", { class: "examples", "data-total": page.total });
  main.append(grid);
  if (!page.rows.length) grid.append(h("div", { class: "empty" }, "No records match this filter."));
  for (const row of page.rows) grid.append(example(row, names, folder));
  if (page.total > PAGE) {
    main.append(h("div", { class: "pager" },
      offset > 0 ? h("a", { class: "button ghost", href: link({ show, offset: Math.max(0, offset - PAGE) }) }, "← Previous") : null,
      h("span", { class: "muted" }, `${offset + 1}–${Math.min(offset + PAGE, page.total)} of ${page.total}`),
      offset + PAGE < page.total ? h("a", { class: "button ghost", href: link({ show, offset: offset + PAGE }) }, "Next →") : null));
  }
}

async function folderList(main) {
  const { folders } = await get("/evals");
  const path = h("input", { placeholder: "/path/to/an/eval/or/compare/folder", class: "wide" });
  main.append(h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Predictions"),
    h("p", { class: "muted" }, "Eval folders (", h("code", {}, "vlmtune eval"), ") and compare folders (", h("code", {}, "vlmtune compare"),
      ") under the home; open any other by its path."))),
  card(null, h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); location.hash = "#/predictions" + q({ folder: path.value }); } },
    path, h("button", { class: "primary" }, "Open"))));
  if (!folders.length) return main.append(h("div", { class: "empty" }, "No eval folder under the home yet."));
  main.append(h("div", { class: "folder-grid" }, folders.map((f) => h("a", { class: "card folder", href: "#/predictions" + q({ folder: f.folder }), "data-folder": f.folder },
    h("div", { class: "folder-kind" }, h("span", { class: `pill ${f.kind === "compare" ? "live" : "muted"}` }, f.kind), " ", h("b", {}, f.task), h("span", { class: "muted" }, ` · ${f.n} records`)),
    h("div", { class: "mono small" }, short(f.folder, 70)),
    f.kind === "eval" ? h("div", { class: "small" }, `${f.headline} `, h("b", {}, `${pct(f.value)}%`), h("span", { class: "muted" }, ` · model ${short(f.model, 40)}`))
      : h("div", { class: "small muted" }, `${short(f.base, 30)} vs ${short(f.fineTuned, 30)}`)))));
}

function example(row, names, folder) {
  const last = row.answers[names[names.length - 1]] || {};
  const img = h("img", { loading: "lazy", alt: `image of ${row.id}`, src: API + "/predictions/image" + q({ folder, id: row.id }),
    onerror: (e) => e.target.replaceWith(h("div", { class: "no-image muted small" }, "no image")),
    onclick: (e) => e.target.classList.toggle("zoom") });
  const fields = names.some((n) => row.answers[n] && row.answers[n].fields);
  return h("article", { class: `card example ${last.correct ? "right" : "wrong"}`, "data-id": row.id, "data-correct": String(!!last.correct) },
    h("div", { class: "example-body" },
      h("div", { class: "thumb" }, img),
      h("div", { class: "qa" },
        h("div", { class: "muted small mono" }, row.id),
        h("div", { class: "question", title: "click to show it whole", onclick: (e) => e.currentTarget.classList.toggle("open") }, row.question || "–"),
        fields ? null : h("div", { class: "answer expected" }, h("span", { class: "tag" }, "expected"), h("pre", {}, row.reference)),
        names.map((n) => answer(LABELS[n], row.answers[n], fields)))),
    fields ? fieldTable(row, names) : null);
}

function answer(label, a, compact) {
  if (!a) return h("div", { class: "answer muted" }, `${label}: no answer`);
  return h("div", { class: `answer ${a.correct ? "ok" : "bad"}`, "data-model": label },
    h("span", { class: "tag" }, label, " ", a.correct ? "✓" : "✗", a.score !== undefined && a.score !== null ? h("span", { class: "muted" }, ` ${num(a.score, 2)}`) : null),
    h("pre", { class: compact ? "clip" : "" }, a.prediction || "(empty)"));
}

function fieldTable(row, names) {
  const keys = [];
  for (const n of names) for (const f of (row.answers[n] || {}).fields || []) if (!keys.includes(f.field)) keys.push(f.field);
  const lookup = Object.fromEntries(names.map((n) => [n, Object.fromEntries(((row.answers[n] || {}).fields || []).map((f) => [f.field, f]))]));
  const anyTruth = (k) => names.map((n) => lookup[n][k]).find((f) => f && f.truth !== null && f.truth !== undefined);
  const last = names[names.length - 1];
  const wrong = keys.filter((k) => !(lookup[last][k] && lookup[last][k].correct));
  const onlyWrong = h("input", { type: "checkbox", checked: wrong.length > 0 && wrong.length < keys.length });
  const body = h("tbody", {});
  const draw = () => replace(body, (onlyWrong.checked ? wrong : keys).map((k) => h("tr", { "data-field": k },
    h("td", { class: "mono small" }, k), h("td", { class: "mono small" }, show(anyTruth(k)?.truth)),
    names.map((n) => {
      const f = lookup[n][k];
      return h("td", { class: `mono small verdict ${f ? f.status : "none"}`, title: f ? { tp: "right", fp: "wrong or extra", fn: "missing" }[f.status] : "" },
        f ? (f.status === "fn" ? "missing" : show(f.predicted)) : "–");
    }))));
  onlyWrong.addEventListener("change", draw);
  draw();
  const right = keys.length - wrong.length;
  return h("div", { class: "fields" },
    h("div", { class: "fields-head small" }, h("b", {}, `${right} of ${keys.length} fields right`), ` (${LABELS[last]})`,
      h("label", { class: "toggle" }, onlyWrong, " only the wrong ones")),
    h("table", { class: "grid compact" },
      h("thead", {}, h("tr", {}, h("th", {}, "field"), h("th", {}, "expected"), names.map((n) => h("th", {}, LABELS[n])))), body));
}

const show = (v) => (v === null || v === undefined ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v));
