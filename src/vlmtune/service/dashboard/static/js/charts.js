// Line charts on uPlot (vendored, MIT): several series over optimizer steps, each with its own steps.

import { h, num } from "./api.js";

export const COLORS = ["#4263eb", "#e8590c", "#2f9e44", "#ae3ec9", "#1098ad", "#f59f00", "#d6336c", "#495057"];

// A chart in a card: title, uPlot, an empty-state line. `series`: [{label, color, dash}].
export function lineChart(parent, { title, name, series, yLog = false, height = 210 }) {
  const box = h("div", { class: "chart", "data-chart": name, "data-points": "0" });
  const empty = h("div", { class: "chart-empty" }, "waiting for the first points…");
  parent.append(h("section", { class: "card chart-card" }, h("h3", {}, title), box, empty));
  const opts = {
    width: Math.max(box.clientWidth, 280), height,
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: false }, y: { distr: yLog ? 3 : 1 } },
    axes: [
      { stroke: "#667085", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#eef0f3" }, label: "step", labelSize: 18, labelGap: 0, size: 38 },
      { stroke: "#667085", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#eef0f3" }, size: 66, values: (u, vals) => vals.map((v) => num(v, 3)) },
    ],
    legend: { live: true },
    series: [{ label: "step", value: (u, v) => (v === null || v === undefined ? "–" : v) },
      ...series.map((s, i) => ({
        label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: s.width || 2, dash: s.dash, spanGaps: true,
        points: { show: s.points ?? false, size: s.pointSize || 5 }, value: (u, v) => num(v, 4),
      }))],
  };
  let plot = new uPlot(opts, [[], ...series.map(() => [])], box);
  const resize = new ResizeObserver(() => plot && plot.setSize({ width: Math.max(box.clientWidth, 280), height }));
  resize.observe(box);
  return {
    // tables: one [steps, values] pair per series, in the order given.
    set(tables) {
      const usable = tables.map(([xs, ys]) => [xs.slice(), ys.map((v) => (v === null || Number.isFinite(v) ? v : null))]);
      const data = usable.some(([xs]) => xs.length) ? uPlot.join(usable) : [[], ...series.map(() => [])];
      plot.setData(data);
      box.dataset.points = String(usable[0][0].length);
      box.dataset.seriesPoints = usable.map(([xs]) => xs.length).join(",");
      empty.hidden = data[0].length > 0;
    },
    destroy() { resize.disconnect(); plot.destroy(); plot = null; },
  };
}

// Rows -> [steps, values] for one column.
export const column = (rows, key) => [rows.map((r) => r.step_number), rows.map((r) => (r[key] === undefined ? null : r[key]))];
