// Jobs: every service job and command-line run, a form for a new job, stop, pick runs to compare.

import { clock, every, get, h, num, pill, post, q, replace, short, when } from "./api.js";
import { jobForm } from "./jobform.js";

const LIVE = new Set(["Training", "Validating data", "Processing data", "Starting", "Running"]);

export async function jobsView(main, params, cleanups) {
  const selected = new Set();
  const compareButton = h("button", { class: "ghost", disabled: true, onclick: () => {
    location.hash = "#/compare" + q({ runs: [...selected].join(",") });
  } }, "Compare selected");
  const formHost = h("div", { class: "form-host" });
  const newButton = h("button", { class: "primary", onclick: () => toggleForm() }, "New job");
  const counts = h("span", { class: "muted" });
  main.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", {}, "Jobs"), h("p", { class: "muted" }, "Fine-tuning jobs of this service and ", h("code", {}, "vlmtune train"),
        " runs found under its home, newest first. ", counts)),
      h("div", { class: "actions" }, compareButton, newButton)),
    formHost);
  const tableHost = h("div", { class: "card flush" });
  main.append(tableHost);

  async function toggleForm(force) {
    const open = force ?? !formHost.childElementCount;
    replace(formHost);
    newButton.textContent = open ? "Close form" : "New job";
    if (open) formHost.append(await jobForm((arn, ref) => { location.hash = "#/run" + q({ ref }); }));
  }
  if (params.get("new")) toggleForm(true);

  const refresh = async () => {
    const { runs } = await get("/runs");
    const live = runs.filter((r) => LIVE.has(r.state)).length, queued = runs.filter((r) => r.state === "Queued").length;
    counts.textContent = `${runs.length} runs · ${live} running · ${queued} queued`;
    replace(tableHost, runs.length ? table(runs, selected, () => {
      compareButton.disabled = selected.size < 2;
      compareButton.textContent = selected.size ? `Compare ${selected.size} selected` : "Compare selected";
    }, refresh) : h("div", { class: "empty" }, "No runs yet. Create a job with ", h("b", {}, "New job"),
      ", or run ", h("code", {}, "vlmtune train --out <home>/runs/NAME"), " from a shell."));
  };
  every(2000, refresh, cleanups);
}

function table(runs, selected, onSelect, refresh) {
  const head = ["", "Name", "Status", "Type", "Base model", "Data", "Progress", "ETA", "Best val. loss", "Created", ""];
  return h("table", { class: "grid jobs" },
    h("thead", {}, h("tr", {}, head.map((t) => h("th", {}, t)))),
    h("tbody", {}, runs.map((r) => row(r, selected, onSelect, refresh))));
}

function row(r, selected, onSelect, refresh) {
  const p = r.progress || {};
  const box = h("input", { type: "checkbox", checked: selected.has(r.ref), "aria-label": `select ${r.name}`, onchange: (e) => {
    e.target.checked ? selected.add(r.ref) : selected.delete(r.ref);
    onSelect();
  } });
  const fraction = p.total ? Math.min(p.step / p.total, 1) : r.status === "Completed" ? 1 : 0;
  const progress = h("div", { class: "progress" },
    h("div", { class: "track" }, h("div", { class: `fill ${r.status === "Completed" ? "done" : ""}`, style: { width: `${fraction * 100}%` } })),
    h("span", { class: "mono small" }, p.total ? `${p.step}/${p.total}` : p.step ? `${p.step} steps` : "–"));
  return h("tr", { "data-ref": r.ref, "data-name": r.name },
    h("td", {}, box),
    h("td", {}, h("a", { href: "#/run" + q({ ref: r.ref }), class: "strong" }, r.name),
      h("div", { class: "muted small" }, r.source === "cli" ? "command line" : r.outputModel ? `→ ${r.outputModel}` : "")),
    h("td", {}, pill(r.state)),
    h("td", { class: "small" }, r.type),
    h("td", { class: "mono small", title: r.baseModel }, short(r.baseModel, 28)),
    h("td", { class: "mono small", title: r.data }, short(r.data, 30)),
    h("td", {}, progress),
    h("td", { class: "mono small" }, LIVE.has(r.state) ? clock(p.eta_s) : "–"),
    h("td", { class: "mono" }, num(p.best_validation_loss)),
    h("td", { class: "small muted", title: r.created }, when(r.created)),
    h("td", {}, r.source === "service" && r.status === "InProgress" ? stopButton(r, refresh) : null));
}

export function stopButton(r, done) {
  let armed = false;
  const button = h("button", { class: "ghost small danger-text", "data-action": "stop", onclick: async () => {
    if (!armed) {
      armed = true;
      button.textContent = "Stop? click again";
      button.classList.add("armed");
      setTimeout(() => { armed = false; button.textContent = "Stop"; button.classList.remove("armed"); }, 4000);
      return;
    }
    button.disabled = true;
    try { await post("/jobs/stop", { ref: r.ref }); } catch (e) { alert(e.message); }
    done && done();
  } }, "Stop");
  return button;
}
