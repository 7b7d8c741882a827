// The machine: GPUs (NVML), CPU, memory and disk, and the job queue.

import { bytes, card, every, get, h, pill, q, replace, when } from "./api.js";

export async function machineView(main, params, cleanups) {
  const top = h("div", { class: "machine" });
  const queueHost = h("div", {});
  main.append(h("div", { class: "page-head" }, h("div", {}, h("h1", {}, "Machine"),
    h("p", { class: "muted" }, "What the service's jobs and deployments run on, and the queue they wait in."))), top, queueHost);
  every(2000, async () => {
    const m = await get("/machine");
    replace(top, ...(m.gpus.length ? m.gpus.map(gpuCard) : [card("GPU", h("p", { class: "muted", "data-gpu": "none" }, m.noGpu))]),
      hostCard(m.host), serviceCard(m));
    replace(queueHost, queueCard(m.queue));
  }, cleanups);
}

function meter(label, used, total, text) {
  const fraction = total ? Math.min(used / total, 1) : 0;
  return h("div", { class: "meter" }, h("div", { class: "meter-head" }, h("span", {}, label), h("span", { class: "mono" }, text)),
    h("div", { class: "track" }, h("div", { class: `fill ${fraction > 0.9 ? "hot" : fraction > 0.7 ? "warm" : ""}`, style: { width: `${fraction * 100}%` } })));
}

function gpuCard(g) {
  return card(`GPU ${g.index} · ${g.name}`, h("div", { "data-gpu": String(g.index) },
    meter("utilisation", g.utilization ?? 0, 100, g.utilization === null ? "–" : `${g.utilization}%`),
    meter("memory", g.memoryUsed, g.memoryTotal, `${bytes(g.memoryUsed)} / ${bytes(g.memoryTotal)}`),
    h("div", { class: "facts-row small muted" }, g.temperature !== null ? `${g.temperature} °C` : null,
      g.powerWatts !== null ? ` · ${g.powerWatts.toFixed(0)} W` : null, g.processes !== null ? ` · ${g.processes} processes` : null)));
}

function hostCard(m) {
  return card(`CPU & memory · ${m.cpus} cores`, h("div", { "data-host": "" },
    meter("CPU", m.cpuPercent, 100, `${m.cpuPercent.toFixed(0)}%`),
    h("div", { class: "cores" }, m.perCpu.map((p) => h("div", { class: "core", title: `${p.toFixed(0)}%` }, h("div", { style: { height: `${p}%` } })))),
    meter("memory", m.memoryUsed, m.memoryTotal, `${bytes(m.memoryUsed)} / ${bytes(m.memoryTotal)}`),
    meter("disk (home)", m.diskUsed, m.diskTotal, `${bytes(m.diskUsed)} / ${bytes(m.diskTotal)}`),
    h("div", { class: "small muted" }, `load ${m.load.map((l) => l.toFixed(2)).join(" · ")}`)));
}

function serviceCard(m) {
  const qd = m.queue;
  return card("Service", h("dl", { class: "facts" },
    h("dt", {}, "job slots"), h("dd", {}, `${qd.running} of ${qd.slots} busy (${qd.executor} executor)`),
    h("dt", {}, "waiting"), h("dd", {}, String(qd.waiting)),
    h("dt", {}, "deployments loaded"), h("dd", {}, String(m.deployments.loaded)),
    h("dt", {}, "requests queued"), h("dd", {}, String(m.deployments.queueDepth))));
}

function queueCard(queue) {
  if (!queue.items.length) return card("Queue", h("p", { class: "muted" }, "Empty: no job is running or waiting."));
  return card("Queue", h("table", { class: "grid compact", "data-table": "queue" },
    h("thead", {}, h("tr", {}, ["", "job", "kind", "status", "slot", "submitted"].map((t) => h("th", {}, t)))),
    h("tbody", {}, queue.items.map((i) => h("tr", { "data-job": i.name },
      h("td", { class: "mono" }, i.running ? "▶" : `#${i.position}`),
      h("td", {}, i.ref ? h("a", { href: "#/run" + q({ ref: i.ref }) }, i.name) : i.name),
      h("td", { class: "small" }, i.kind), h("td", {}, pill(i.running ? (i.status === "Stopping" ? "Stopping" : "Running") : "Queued")),
      h("td", { class: "mono" }, i.slot ?? "–"), h("td", { class: "small muted" }, when(i.created)))))));
}
