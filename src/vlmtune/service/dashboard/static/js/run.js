// A run's page: live curves (server-sent events, resumed by the browser with Last-Event-ID), status, report,
// config, log and artifacts.

import { API, bytes, card, clock, get, h, num, pill, q, replace, short } from "./api.js";
import { column, lineChart } from "./charts.js";
import { stopButton } from "./jobs.js";
import { reportCard } from "./report.js";

const FINAL = new Set(["Completed", "Failed", "Stopped", "Interrupted"]);
const MAX_LOG_LINES = 3000;

export async function runView(main, params, cleanups) {
  const ref = params.get("ref");
  const detail = await get("/run" + q({ ref }));
  const data = { train: [], val: [], gen: [], speed: [] };
  const head = h("div", { class: "page-head" });
  const stats = h("div", { class: "stats" });
  const charts = h("div", { class: "charts" });
  const lower = h("div", { class: "columns" });
  main.append(head, stats, charts, lower);
  main.dataset.ref = ref;

  const loss = lineChart(charts, { title: "Loss", name: "loss", series: [
    { label: "training", color: "#4263eb" }, { label: "validation", color: "#e8590c", points: true, pointSize: 8, width: 2.5 }] });
  const lr = lineChart(charts, { title: "Learning rate", name: "lr", series: [{ label: "learning rate", color: "#2f9e44" }] });
  const grad = lineChart(charts, { title: "Gradient norm (before clipping)", name: "grad", series: [{ label: "grad norm", color: "#ae3ec9" }] });
  const speed = lineChart(charts, { title: "Throughput (tokens/s)", name: "speed", series: [{ label: "tokens/s", color: "#1098ad", points: true }] });
  cleanups.push(() => [loss, lr, grad, speed].forEach((c) => c.destroy()));

  const left = h("div", { class: "col" }), right = h("div", { class: "col" });
  const reportHost = h("div", {}), statusHost = h("div", {}), logBox = h("pre", { class: "log", "data-log": "" });
  const configHost = h("div", {}), artifactsHost = h("div", {});
  left.append(reportHost, statusHost, card("Log", logBox));
  right.append(configHost, artifactsHost);
  lower.append(left, right);

  let current = detail;
  const draw = () => {
    loss.set([column(data.train, "training_loss"), column(data.val, "validation_loss")]);
    lr.set([column(data.train, "learning_rate")]);
    grad.set([column(data.train, "grad_norm")]);
    speed.set([column(data.speed, "tokens_per_s")]);
  };
  const showStatus = (s) => {
    current = { ...current, ...s };
    drawHead(head, current);
    drawStats(stats, current);
  };
  const showDetail = async () => {
    current = await get("/run" + q({ ref }));
    showStatus(current);
    drawStatusDetails(statusHost, current);
    drawConfig(configHost, current.config);
    drawArtifacts(artifactsHost, ref, current.artifacts);
    if (current.state === "Completed") replace(reportHost, reportCard(await get("/run/report" + q({ ref })), ref));
  };
  showStatus(detail);
  await showDetail();

  const source = new EventSource(API + "/run/stream" + q({ ref }));
  let events = 0;
  source.addEventListener("update", (event) => {
    const u = JSON.parse(event.data);
    for (const key of u.reset || []) data[key] = [];
    for (const key of Object.keys(data)) if (u[key]) data[key].push(...u[key]);
    if (u.train || u.val || u.speed || u.reset) draw();
    if (u.log) appendLog(logBox, u.log);
    if (u.status) {
      const before = current.state;
      showStatus(u.status);
      // A new phase brings what the page shows besides the curves: phase times, the config, artifacts, the report.
      if (u.status.state !== before) showDetail();
    }
    main.dataset.events = String(++events);
  });
  source.addEventListener("end", () => source.close());
  cleanups.push(() => source.close());
}

function drawHead(head, r) {
  replace(head,
    h("div", {}, h("a", { href: "#/jobs", class: "muted small" }, "← Jobs"),
      h("h1", {}, r.name, " ", pill(r.state)),
      h("p", { class: "muted" }, r.type, " · base ", h("code", {}, r.baseModel || "–"), " · data ",
        h("code", { title: r.data }, short(r.data, 60)), r.outputModel ? [" · model ", h("code", {}, r.outputModel)] : null)),
    h("div", { class: "actions" },
      h("a", { class: "button ghost", href: "#/compare" + q({ runs: r.ref }) }, "Compare…"),
      r.source === "service" && r.status === "InProgress" ? stopButton(r, () => {}) : null));
}

function drawStats(stats, r) {
  const p = r.progress || {};
  const fraction = p.total ? Math.min(p.step / p.total, 1) : r.state === "Completed" ? 1 : 0;
  const stat = (label, value, extra, name) => h("div", { class: "stat", "data-stat": name }, h("div", { class: "label" }, label),
    h("div", { class: "value" }, value), extra ? h("div", { class: "extra" }, extra) : null);
  replace(stats,
    stat("Progress", p.total ? `${p.step} / ${p.total}` : `${p.step || 0} steps`,
      h("div", { class: "track" }, h("div", { class: "fill", style: { width: `${fraction * 100}%` } })), "progress"),
    stat("ETA", FINAL.has(r.state) ? "done" : clock(p.eta_s), null, "eta"),
    stat("Training loss", num(p.training_loss), null, "loss"),
    stat("Best validation loss", num(p.best_validation_loss), null, "best"),
    stat("Tokens / s", num(p.tokens_per_s, 0), null, "speed"));
}

function appendLog(box, text) {
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
  box.textContent += text;
  const lines = box.textContent.split("\n");
  if (lines.length > MAX_LOG_LINES) box.textContent = lines.slice(-MAX_LOG_LINES).join("\n");
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function drawStatusDetails(host, r) {
  if (r.source !== "service") {
    replace(host, card("Status", h("p", { class: "muted" }, r.state === "Interrupted"
      ? "No process holds this run folder and it has not finished: re-run the same `vlmtune train` command to resume it."
      : r.state === "Running" ? "A `vlmtune train` process is writing this run folder." : "Finished.")));
    return;
  }
  const phases = Object.entries(r.statusDetails || {});
  replace(host, card("Status details",
    r.failureMessage ? h("div", { class: "error" }, r.failureMessage) : null,
    h("table", { class: "grid compact" }, h("tbody", {}, phases.map(([name, v]) => h("tr", {},
      h("td", {}, name.replace("Details", "").replace(/([A-Z])/g, " $1").toLowerCase()), h("td", {}, pill(v.status)),
      h("td", { class: "muted small" }, v.lastModifiedTime ? new Date(v.lastModifiedTime).toLocaleTimeString() : ""))))),
    h("p", { class: "muted small" }, "output: ", h("code", {}, r.outputLocation || "–"))));
}

function drawConfig(host, config) {
  const keys = Object.keys(config || {}).sort();
  replace(host, card("Resolved config", keys.length ? h("div", { class: "config-scroll" }, h("table", { class: "grid compact kv" }, h("tbody", {},
    keys.map((k) => h("tr", {}, h("td", { class: "mono small" }, k), h("td", { class: "mono small" }, fmt(config[k])))))))
    : h("p", { class: "muted" }, "written when the training starts")));
}

const fmt = (v) => (v === null || v === undefined ? "–" : typeof v === "object" ? JSON.stringify(v) : String(v));

function drawArtifacts(host, ref, files) {
  replace(host, card("Artifacts", files.length ? h("ul", { class: "files" }, files.map((f) => h("li", {},
    h("a", { href: API + "/run/file" + q({ ref, path: f.path }), target: "_blank" }, f.path), h("span", { class: "muted small" }, bytes(f.bytes)))))
    : h("p", { class: "muted" }, "none yet")));
}
