// Line and point charts on uPlot (vendored under /static/vendor/uplot; loaded before this module as the
// global `uPlot`). uPlot draws many thousands of points per series on a canvas without lag.
//
// A Chart owns one uPlot instance in a container and takes series as {label, xs, ys}. The container
// gets data-points (the number of drawn points) and an aria-label summary, because a canvas is
// otherwise invisible to tests and to screen readers.

import { formatNumber, formatPercent } from "./format.js";
import { h } from "./dom.js";

const PALETTE = [
  "#1f6fd1",
  "#d1431f",
  "#2a9d3a",
  "#8e44ad",
  "#e08e0b",
  "#0e9aa7",
  "#8c564b",
  "#d63384",
  "#5f6b7a",
  "#9aa50f",
];

export function seriesColor(index) {
  return PALETTE[index % PALETTE.length];
}

function themeColors() {
  const style = getComputedStyle(document.documentElement);
  const read = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  return { axis: read("--chart-axis", "#4a5565"), grid: read("--chart-grid", "#e3e7ee") };
}

function chartHeight() {
  return window.matchMedia("(max-width: 640px)").matches ? 190 : 230;
}

export class Chart {
  /**
   * @param {HTMLElement} container  where the chart goes (emptied)
   * @param {object} options  title (aria label), xLabel, yLabel, percent (y is a fraction in [0, 1]),
   *   xLog (log-scaled x), xCategories (x values are indices into these labels), points (draw markers),
   *   lines (false: markers only), legend (false: no legend, for many series),
   *   emptyText (shown while no series has a point)
   */
  constructor(container, options = {}) {
    this.container = container;
    this.options = { xLabel: "step", yLabel: "", emptyText: "No points yet.", ...options };
    this.plot = null;
    this.seriesKey = "";
    this.series = [];
    this.container.classList.add("chart");
    this.canvasHost = h("div", { class: "chart-canvas" });
    this.empty = h("p", { class: "chart-empty muted" }, this.options.emptyText);
    this.container.replaceChildren(this.canvasHost, this.empty);
    this.container.setAttribute("role", "img");
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(this.container);
  }

  /** Show these series ([{label, xs, ys, color?}]); rebuilds the plot only when the labels change. */
  setSeries(series) {
    this.series = series;
    const data = alignSeries(series);
    const points = countPoints(data);
    this.container.dataset.points = String(points);
    this.container.dataset.series = String(series.length);
    this.container.setAttribute("aria-label", this.describe());
    this.empty.hidden = points > 0;
    this.canvasHost.hidden = points === 0;
    if (points === 0) return;
    const key = series.map((s) => `${s.label}|${s.color ?? ""}`).join("\n");
    if (!this.plot || key !== this.seriesKey) {
      this.plot?.destroy();
      this.seriesKey = key;
      this.plot = new uPlot(this.plotOptions(series), data, this.canvasHost);
      this.container._uplot = this.plot;
    } else {
      this.plot.setData(data);
    }
  }

  /** Change options (scales, percent, legend...); the plot is rebuilt on the next setSeries. */
  configure(options) {
    const before = JSON.stringify(this.options);
    Object.assign(this.options, options);
    if (JSON.stringify(this.options) !== before) this.seriesKey = "";
  }

  resize() {
    if (!this.plot) return;
    const width = this.width();
    if (width && (width !== this.plot.width || chartHeight() !== this.plot.height)) {
      this.plot.setSize({ width, height: chartHeight() });
    }
  }

  destroy() {
    this.resizeObserver.disconnect();
    this.plot?.destroy();
    this.plot = null;
  }

  width() {
    return Math.max(200, Math.floor(this.container.clientWidth));
  }

  describe() {
    const parts = this.series.map((s) => {
      const last = lastPoint(s);
      if (!last) return `${s.label}: no points`;
      const value = this.options.percent ? formatPercent(last[1]) : formatNumber(last[1]);
      return `${s.label}: ${s.xs.length} points, last ${value} at ${this.options.xLabel} ${formatX(this.options, last[0])}`;
    });
    return `${this.options.title ?? "Chart"}. ${parts.join("; ")}`;
  }

  plotOptions(series) {
    const { axis, grid } = themeColors();
    const opts = this.options;
    const yValues = opts.percent
      ? (_u, splits) => splits.map((v) => `${Math.round(v * 1000) / 10}%`)
      : (_u, splits) => splits.map((v) => formatNumber(v, 3));
    const xValues = (_u, splits) => splits.map((v) => formatX(opts, v));
    const axisStyle = { stroke: axis, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
    return {
      width: this.width(),
      height: chartHeight(),
      legend: { show: opts.legend !== false, live: true },
      cursor: { drag: { x: true, y: false }, points: { size: 7 } },
      scales: { x: xScale(opts) },
      axes: [
        { ...axisStyle, label: opts.xLabel, labelSize: 20, values: xValues, ...categorySplits(opts) },
        { ...axisStyle, label: opts.yLabel, labelSize: opts.yLabel ? 20 : 0, values: yValues, size: 56 },
      ],
      series: [
        { label: opts.xLabel, value: (_u, v) => (v === null || v === undefined ? "—" : formatX(opts, v)) },
        ...series.map((s, i) => ({
          label: s.label,
          stroke: s.color ?? seriesColor(i),
          width: 1.75,
          spanGaps: true,
          ...(s.dash ? { dash: s.dash } : {}),
          ...(opts.lines === false ? { paths: () => null } : {}),
          points: opts.points ? { show: true, size: 9, fill: s.color ?? seriesColor(i) } : { show: false },
          value: (_u, v) => {
            if (v === null || v === undefined) return "—";
            return opts.percent ? formatPercent(v) : formatNumber(v);
          },
        })),
      ],
    };
  }
}

/**
 * A chart in a captioned card, for a grid of charts.
 * @param {string} caption  the card's caption
 * @param {object} boxAttributes  attributes of the chart's container (data-chart, data-metric...)
 * @param {object} options  the Chart's options
 * @returns {{card: HTMLElement, chart: Chart}}  the card to place, and its chart
 */
export function chartCard(caption, boxAttributes, options) {
  const box = h("div", { class: "chart-box", ...boxAttributes });
  const card = h("figure", { class: "card chart-card" }, h("figcaption", {}, caption), box);
  return { card, chart: new Chart(box, options) };
}

/** uPlot wants one shared ascending x array; series with their own steps are joined (gaps = undefined). */
function alignSeries(series) {
  if (series.length === 0) return [[]];
  const first = series[0].xs;
  const shared = series.every((s) => s.xs === first || sameArray(s.xs, first));
  if (shared) return [first, ...series.map((s) => s.ys)];
  return uPlot.join(series.map((s) => [s.xs, s.ys]));
}

function sameArray(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return false;
  return true;
}

function countPoints(data) {
  let count = 0;
  for (let s = 1; s < data.length; s += 1) {
    for (const v of data[s]) if (v !== null && v !== undefined && Number.isFinite(v)) count += 1;
  }
  return count;
}

function lastPoint(s) {
  for (let i = s.ys.length - 1; i >= 0; i -= 1) {
    if (s.ys[i] !== null && s.ys[i] !== undefined) return [s.xs[i], s.ys[i]];
  }
  return null;
}

function formatX(opts, v) {
  if (opts.xCategories) return opts.xCategories[Math.round(v)] ?? "";
  return formatNumber(v, 3);
}

function xScale(opts) {
  if (opts.xCategories) return { time: false, range: [-0.5, opts.xCategories.length - 0.5] };
  if (opts.xLog) return { time: false, distr: 3 };
  if (!opts.points) return { time: false };
  // Markers at the edges would be cut in half: pad the x range by a few percent.
  return {
    time: false,
    range: (_u, min, max) => {
      const pad = (max - min) * 0.05 || Math.abs(min) * 0.1 || 1;
      return [min - pad, max + pad];
    },
  };
}

/** Categorical x: one tick per category, at its index. */
function categorySplits(opts) {
  if (!opts.xCategories) return {};
  return { splits: () => opts.xCategories.map((_c, i) => i) };
}
