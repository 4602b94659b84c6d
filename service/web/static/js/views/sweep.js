// Sweep page: the cell table (GET /api/sweeps/{id}/table), the swept parameter against final metrics
// (one point per finished cell: the paper's mu ablation, Table 2, and temperature vs MI, Fig. 3),
// overlaid curves of every cell for a chosen metric, "retry failed cells", and a link to the sweep's
// reproduction report (GET /api/sweeps/{id}/report: one self-contained HTML page).

import { api, errorMessage, isAbort } from "../api.js";
import { Chart, chartCard, seriesColor } from "../charts.js";
import {
  countBadges,
  definitionList,
  errorBox,
  formatParameterSpecs,
  isActive,
  pageHeader,
  pageSection,
  progressBar,
  scrollTable,
  statusBadge,
  tagList,
} from "../components.js";
import { announce, h, replace, replaceKeepingFocus, uid } from "../dom.js";
import { MISSING, formatMetric, formatNumber, formatTime } from "../format.js";
import {
  HEADLINE_METRICS,
  SWEEP_FINAL_METRICS,
  SWEEP_TABLE_METRICS,
  isAccuracy,
  metricLabel,
} from "../metrics.js";
import { hashFor, replaceQuery } from "../navigation.js";

const MAX_GROUPS = 8; // more series than this are drawn as one cloud of points
const CURVE_POINTS = 400; // per cell, for the overlaid curves

export async function render(ctx) {
  const id = Number(ctx.params[0]);
  const data = await fetchSweep(id, ctx.signal);
  document.title = `Sweep #${id} ${data.sweep.name} · mmae`;
  const state = {
    x: ctx.query.get("x") ?? data.table.parameters[0] ?? "",
    curve: ctx.query.get("curve") ?? "",
  };
  const saveQuery = () => replaceQuery(`/sweeps/${id}`, { x: state.x, curve: state.curve });
  const retryButton = h(
    "button",
    { type: "button", class: "button", "data-action": "retry-failed" },
    "Retry failed cells",
  );
  retryButton.addEventListener("click", retryFailed);
  const message = h("div", { class: "alerts" });
  const facts = h("div", { class: "card facts-card" });
  const cells = h("div");
  const params = new ParamCharts(data, state, saveQuery);
  const curves = new CellCurves(data, state, saveQuery, ctx.signal);
  ctx.onCleanup(() => {
    curves.destroy();
    params.destroy();
  });

  replace(
    ctx.root,
    h(
      "section",
      { class: "sweep-page", "data-sweep-id": id },
      pageHeader(`Sweep #${id} · ${data.sweep.name}`, ...sweepActions(id, data.sweep, retryButton)),
      message,
      facts,
      pageSection("param-h", "Swept parameter vs final metrics", params.controls, params.grid),
      pageSection("cells-h", "Cells", cells),
      pageSection("curves-h", "Curves of all cells", curves.controls, curves.figure),
    ),
  );

  function draw() {
    replace(facts, sweepFacts(data.sweep));
    retryButton.disabled = !(data.sweep.counts?.failed > 0);
    retryButton.title = retryButton.disabled ? "No failed cells" : "";
    replaceKeepingFocus(cells, cellTable(data.table));
    params.draw();
  }

  async function retryFailed() {
    retryButton.disabled = true;
    try {
      const result = await api(`/sweeps/${id}/retry-failed`, { method: "POST", signal: ctx.signal });
      const text = retriedText(result.retried);
      replace(message, h("div", { class: "notice success" }, text));
      announce(text);
      await reload();
    } catch (error) {
      if (!isAbort(error)) replace(message, errorBox(errorMessage(error)));
    } finally {
      retryButton.disabled = !(data.sweep.counts?.failed > 0);
    }
  }

  async function reload() {
    Object.assign(data, await fetchSweep(id, ctx.signal));
    draw();
  }

  draw();
  await curves.draw();
  let ticks = 0;
  ctx.poll(3000, async () => {
    if (!data.table.rows.some((row) => isActive(row.status))) return;
    await reload();
    ticks += 1;
    if (ticks % 3 === 0) await curves.draw();
  });
}

/** The sweep and its cell table, as {sweep, table}. */
async function fetchSweep(id, signal) {
  const [sweep, table] = await Promise.all([
    api(`/sweeps/${id}`, { signal }),
    api(`/sweeps/${id}/table`, { signal }),
  ]);
  return { sweep, table };
}

/** The header's buttons: retry failed cells, the sweep's runs, its report, its MLflow experiment. */
function sweepActions(id, sweep, retryButton) {
  return [
    retryButton,
    h("a", { class: "button secondary", href: hashFor("/runs", { sweep_id: id }) }, "Runs"),
    h(
      "a",
      {
        class: "button secondary",
        href: `/api/sweeps/${id}/report`,
        target: "_blank",
        rel: "noopener",
        "data-action": "report",
        title: "Reproduction report: results table, information curves and the paper's numbers (one HTML page)",
      },
      "Report ↗",
    ),
    sweep.mlflow_url
      ? h(
          "a",
          { class: "button secondary", href: sweep.mlflow_url, target: "_blank", rel: "noopener" },
          "MLflow ↗",
        )
      : null,
  ].filter(Boolean);
}

/** What "Retry failed cells" did, from the job ids it retried. */
function retriedText(retried) {
  const n = retried?.length ?? 0;
  return n
    ? `Retried ${n} failed cell${n === 1 ? "" : "s"}: ${retried.map((j) => `#${j}`).join(", ")}.`
    : "No failed cells to retry.";
}

/** "Swept parameter vs final metrics": one chart per final metric, against the parameter chosen above. */
class ParamCharts {
  constructor(data, state, saveQuery) {
    this.data = data;
    this.state = state;
    this.saveQuery = saveQuery;
    this.controls = h("div", { class: "controls" });
    this.grid = h("div", { class: "chart-grid" });
    this.charts = new Map();
  }

  draw() {
    const { sweep, table } = this.data;
    if (!table.parameters.length) {
      replace(this.grid, h("p", { class: "muted" }, "This sweep has no swept parameters."));
      return;
    }
    if (!this.controls.childElementCount && table.parameters.length > 1) {
      this.controls.append(
        selectField("Parameter on the x axis", table.parameters, this.state.x, (value) => this.setX(value)),
      );
    }
    const metrics = finalMetricsOf(table);
    if (!metrics.length) {
      replace(this.grid, h("p", { class: "muted" }, "No final metrics yet: points appear as cells finish."));
      return;
    }
    this.grid.querySelector(":scope > p")?.remove();
    for (const metric of metrics) {
      const plot = paramPlot(table, this.state.x, metric, sweep.parameters?.[this.state.x]);
      const chart = this.chartFor(metric);
      chart.configure({ lines: plot.lines, xLog: plot.xLog, xCategories: plot.categories });
      chart.setSeries(plot.series);
    }
  }

  /** Another parameter on the x axis: every chart is drawn anew. */
  setX(value) {
    this.state.x = value;
    this.saveQuery();
    this.destroy();
    this.charts.clear();
    this.grid.replaceChildren();
    this.draw();
  }

  chartFor(metric) {
    if (!this.charts.has(metric)) {
      const x = this.state.x;
      const { card, chart } = chartCard(
        `${metricLabel(metric)} vs ${x}`,
        { "data-chart": `param-${metric}`, "data-metric": metric },
        {
          title: `${metricLabel(metric)} against ${x}`,
          xLabel: x,
          percent: isAccuracy(metric),
          points: true,
          emptyText: "No finished cells yet.",
        },
      );
      this.grid.append(card);
      this.charts.set(metric, chart);
    }
    return this.charts.get(metric);
  }

  destroy() {
    for (const chart of this.charts.values()) chart.destroy();
  }
}

/** "Curves of all cells": every cell's curve of one chosen metric, overlaid on one chart. */
class CellCurves {
  constructor(data, state, saveQuery, signal) {
    this.data = data;
    this.state = state;
    this.saveQuery = saveQuery;
    this.signal = signal;
    this.controls = h("div", { class: "controls" });
    const box = h("div", { class: "chart-box", "data-chart": "sweep-curves" });
    this.chart = new Chart(box, { title: "Curves of all cells", emptyText: "No curves yet." });
    this.figure = h("figure", { class: "card chart-card wide" }, box);
  }

  async draw() {
    const available = HEADLINE_METRICS;
    if (!this.controls.childElementCount) {
      this.controls.append(
        selectField(
          "Metric",
          available,
          this.state.curve || available[0],
          (value) => this.setMetric(value),
          metricLabel,
        ),
      );
    }
    const metric = this.state.curve || available[0];
    const { table } = this.data;
    const results = await mapLimit(table.rows, 4, (row) => cellSeries(row.job_id, metric, this.signal));
    const series = table.rows
      .map((row, i) => ({ row, s: results[i] }))
      .filter(({ s }) => s && s.steps.length)
      .map(({ row, s }, i) => ({
        label: cellLabel(row, table.parameters),
        xs: s.steps,
        ys: s.values,
        color: seriesColor(i),
      }));
    this.chart.configure({
      percent: isAccuracy(metric),
      legend: series.length <= 12,
      title: `${metricLabel(metric)} of every cell`,
    });
    this.chart.setSeries(series);
  }

  setMetric(value) {
    this.state.curve = value;
    this.saveQuery();
    this.draw();
  }

  destroy() {
    this.chart.destroy();
  }
}

/** One cell's downsampled series of `metric`, or null when it cannot be read. */
function cellSeries(jobId, metric, signal) {
  return api(`/jobs/${jobId}/metrics`, { query: { names: metric, max_points: CURVE_POINTS }, signal })
    .then((data) => data.series?.[metric])
    .catch((error) => {
      if (isAbort(error)) throw error;
      return null;
    });
}

function sweepFacts(sweep) {
  return definitionList([
    ["Cells", countBadges(sweep.counts)],
    ["Strategy", sweep.strategy + (sweep.num_samples ? ` (${sweep.num_samples} samples)` : "")],
    ["Parameters", formatParameterSpecs(sweep.parameters)],
    ["Max concurrency", sweep.max_concurrency ?? "unlimited"],
    ["Created", formatTime(sweep.created_at)],
    (sweep.tags ?? []).length ? ["Tags", tagList(sweep.tags)] : null,
  ]);
}

function cellTable(table) {
  if (!table.rows.length) return h("p", { class: "muted" }, "No cells.");
  const preferred = SWEEP_TABLE_METRICS.filter((m) => table.metrics.includes(m));
  const metrics = preferred.length ? preferred : table.metrics;
  const head = h(
    "tr",
    {},
    h("th", { scope: "col" }, "Run"),
    table.parameters.map((p) => h("th", { scope: "col", class: "num" }, p)),
    h("th", { scope: "col" }, "Status"),
    h("th", { scope: "col" }, "Progress"),
    metrics.map((m) => h("th", { scope: "col", class: "num", title: m }, metricLabel(m))),
  );
  const rows = table.rows.map((row) =>
    h(
      "tr",
      { "data-job-id": row.job_id },
      h(
        "td",
        {},
        h("a", { href: hashFor(`/runs/${row.job_id}`), "data-key": `cell-${row.job_id}` }, `#${row.job_id}`),
      ),
      table.parameters.map((p) => h("td", { class: "num" }, formatNumber(row.params?.[p]))),
      h("td", {}, statusBadge(row.status)),
      h("td", {}, progressBar(row.progress, row.status)),
      metrics.map((m) => h("td", { class: "num" }, formatMetric(m, row.metrics?.[m]))),
    ),
  );
  return scrollTable(
    h("table", { class: "data cells-table" }, h("thead", {}, head), h("tbody", {}, rows)),
    "Cells",
  );
}

/** Final metrics worth a plot: the headline ones the table has, else its first few. */
function finalMetricsOf(table) {
  const withValues = table.metrics.filter((m) =>
    table.rows.some((row) => typeof row.metrics?.[m] === "number"),
  );
  const preferred = SWEEP_FINAL_METRICS.filter((m) => withValues.includes(m));
  return preferred.length ? preferred : withValues.slice(0, 4);
}

/**
 * Series for "x parameter vs metric": one point per cell that has the metric. Cells that share the other
 * swept parameters form one line (an ablation curve per setting); too many settings become one cloud.
 */
export function paramPlot(table, xParam, metric, spec) {
  const others = table.parameters.filter((p) => p !== xParam);
  const cells = table.rows.filter(
    (row) => typeof row.metrics?.[metric] === "number" && row.params?.[xParam] !== undefined,
  );
  const numeric = cells.every((row) => typeof row.params[xParam] === "number");
  const categories = numeric ? null : [...new Set(cells.map((row) => String(row.params[xParam])))];
  const xOf = (row) => (numeric ? row.params[xParam] : categories.indexOf(String(row.params[xParam])));
  const xs = [...new Set(cells.map(xOf))].sort((a, b) => a - b);
  const positive = numeric && xs.length > 1 && xs[0] > 0;
  const xLog = positive && (spec?.distribution === "log_uniform" || xs[xs.length - 1] / xs[0] >= 50);

  const groups = new Map();
  for (const row of cells) {
    const key = others.map((p) => `${p.split(".").pop()}=${formatNumber(row.params[p])}`).join(", ");
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(row);
  }
  const duplicateX = [...groups.values()].some((rows) => new Set(rows.map(xOf)).size !== rows.length);
  if (groups.size > MAX_GROUPS || duplicateX) {
    const sorted = [...cells].sort((a, b) => xOf(a) - xOf(b));
    return {
      lines: false,
      xLog,
      categories,
      series: [
        {
          label: metricLabel(metric),
          xs: sorted.map(xOf),
          ys: sorted.map((row) => row.metrics[metric]),
          color: seriesColor(0),
        },
      ],
    };
  }
  const series = [...groups.entries()].map(([key, rows], i) => {
    const byX = new Map(rows.map((row) => [xOf(row), row.metrics[metric]]));
    return {
      label: key || metricLabel(metric),
      xs,
      ys: xs.map((x) => byX.get(x) ?? null),
      color: seriesColor(i),
    };
  });
  return { lines: true, xLog, categories, series };
}

function cellLabel(row, parameters) {
  const params = parameters.map((p) => `${p.split(".").pop()}=${formatNumber(row.params?.[p])}`).join(", ");
  return `#${row.job_id} ${params || MISSING}`;
}

function selectField(label, values, current, onChange, format = (v) => v) {
  const id = uid("select");
  const select = h(
    "select",
    { id, onchange: (event) => onChange(event.target.value) },
    values.map((v) => h("option", { value: v, selected: v === current }, format(v))),
  );
  return h("div", { class: "field inline" }, h("label", { for: id }, label), select);
}

/** Map with at most `limit` calls in flight; results in input order. */
async function mapLimit(items, limit, fn) {
  const results = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next;
      next += 1;
      results[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
