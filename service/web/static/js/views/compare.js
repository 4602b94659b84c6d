// Compare: overlay the curves of any runs (ids in the URL: #/compare?ids=3,7,12), one chart per metric,
// one colour per run, with their final numbers side by side.

import { api, errorMessage, isAbort } from "../api.js";
import { chartCard, seriesColor } from "../charts.js";
import { collapseFlag, errorBox, isActive, pageHeader, scrollTable, statusBadge } from "../components.js";
import { h, replace, uid } from "../dom.js";
import { MISSING, formatNumber, formatParams, formatPercent } from "../format.js";
import { CHARTED_METRICS, HEADLINE_METRICS, isAccuracy, metricLabel } from "../metrics.js";
import { hashFor, replaceQuery } from "../navigation.js";

const MAX_POINTS = 1000;

export async function render(ctx) {
  document.title = "Compare · mmae";
  const ids = parseIds(ctx.query.get("ids") ?? "");
  const chosen = new Set((ctx.query.get("metrics") ?? "").split(",").filter(Boolean));
  const summary = h("div");
  const picker = h("div");
  const charts = new MetricCharts();
  ctx.onCleanup(() => charts.destroy());
  replace(ctx.root, pageHeader("Compare runs"), idsForm(ids, chosen), summary, picker, charts.root);
  if (!ids.length) {
    replace(summary, noRunsChosen());
    return;
  }
  let jobs = [];
  let available = [];

  async function load() {
    jobs = await fetchJobs(ids, ctx.signal);
    const names = await metricNames(jobs, ctx.signal);
    available = CHARTED_METRICS.filter((m) => names.has(m));
    if (!chosen.size) HEADLINE_METRICS.filter((m) => names.has(m)).forEach((m) => chosen.add(m));
    replace(summary, summaryTable(jobs));
    if (!picker.childElementCount) replace(picker, metricPicker(available, chosen, onPick));
    await drawCharts();
  }

  async function drawCharts() {
    const metrics = available.filter((m) => chosen.has(m));
    const good = jobs.filter((j) => !j.error);
    const data = await fetchSeries(good, metrics, ctx.signal);
    charts.show(metrics, (metric) => runCurves(good, data, metric, ids));
  }

  function onPick(metric, on) {
    if (on) chosen.add(metric);
    else chosen.delete(metric);
    replaceQuery("/compare", { ids: ids.join(","), metrics: [...chosen].join(",") });
    drawCharts().catch((error) => {
      if (!isAbort(error)) charts.root.prepend(errorBox(errorMessage(error)));
    });
  }

  await load();
  ctx.poll(5000, async () => {
    if (jobs.some((j) => !j.error && isActive(j.status))) await load();
  });
}

/** The run IDs field; submitting it opens the comparison of those runs with the chosen metrics. */
function idsForm(ids, chosen) {
  const idsInput = h("input", {
    id: "compare-ids",
    name: "ids",
    value: ids.join(", "),
    inputmode: "numeric",
    autocomplete: "off",
    "aria-describedby": "compare-ids-help",
  });
  const form = h(
    "form",
    { class: "filters compare-form" },
    h(
      "div",
      { class: "field grow" },
      h("label", { for: "compare-ids" }, "Run IDs"),
      idsInput,
      h(
        "p",
        { id: "compare-ids-help", class: "hint" },
        "Comma-separated, e.g. 3, 7, 12 — or tick runs in the runs list.",
      ),
    ),
    h("div", { class: "field filter-actions" }, h("button", { type: "submit", class: "button" }, "Compare")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    window.location.hash = hashFor("/compare", {
      ids: parseIds(idsInput.value).join(","),
      metrics: [...chosen].join(","),
    });
  });
  return form;
}

function noRunsChosen() {
  return h(
    "p",
    { class: "empty" },
    "Choose runs to compare: enter their IDs, or select them on the ",
    h("a", { href: "#/runs" }, "runs page"),
    ".",
  );
}

/** Each run, in the order of `ids`; a run that cannot be read is {id, error}. */
function fetchJobs(ids, signal) {
  return Promise.all(
    ids.map((id) =>
      api(`/jobs/${id}`, { signal }).catch((error) => {
        if (isAbort(error)) throw error;
        return { id, error: errorMessage(error) };
      }),
    ),
  );
}

/** The names of the metrics any of the readable runs has points of. */
async function metricNames(jobs, signal) {
  const namesPerRun = await Promise.all(
    jobs.filter((j) => !j.error).map((j) => api(`/jobs/${j.id}/metrics/names`, { signal })),
  );
  return new Set(namesPerRun.flat());
}

/** Each run's downsampled series of these metrics, in the order of `jobs`. */
function fetchSeries(jobs, metrics, signal) {
  return Promise.all(
    jobs.map((j) =>
      api(`/jobs/${j.id}/metrics`, { query: { names: metrics.join(","), max_points: MAX_POINTS }, signal }),
    ),
  );
}

/** One series per run that has points of `metric` (data[i] holds jobs[i]'s); colours follow `ids`. */
function runCurves(jobs, data, metric, ids) {
  return jobs
    .map((job, i) => ({ job, s: data[i].series?.[metric], color: seriesColor(ids.indexOf(job.id)) }))
    .filter(({ s }) => s && s.steps.length)
    .map(({ job, s, color }) => ({
      label: `#${job.id} ${job.name ?? ""}`.trim(),
      xs: s.steps,
      ys: s.values,
      color,
    }));
}

/** One chart per chosen metric, each overlaying the runs' curves; a metric unticked loses its chart. */
class MetricCharts {
  constructor() {
    this.root = h("div", { class: "chart-grid" });
    this.charts = new Map();
  }

  show(metrics, seriesOf) {
    for (const [name, chart] of this.charts) {
      if (!metrics.includes(name)) {
        chart.destroy();
        this.charts.delete(name);
        this.root.querySelector(`[data-panel="${CSS.escape(name)}"]`)?.remove();
      }
    }
    for (const metric of metrics) this.chartFor(metric).setSeries(seriesOf(metric));
  }

  chartFor(metric) {
    if (!this.charts.has(metric)) {
      const { card, chart } = chartCard(
        metricLabel(metric),
        { "data-chart": `compare-${metric}`, "data-metric": metric },
        { title: metricLabel(metric), percent: isAccuracy(metric) },
      );
      card.dataset.panel = metric;
      this.root.append(card);
      this.charts.set(metric, chart);
    }
    return this.charts.get(metric);
  }

  destroy() {
    for (const chart of this.charts.values()) chart.destroy();
  }
}

function parseIds(text) {
  return [
    ...new Set(
      text
        .split(/[\s,]+/)
        .map(Number)
        .filter((n) => Number.isInteger(n) && n > 0),
    ),
  ];
}

function summaryTable(jobs) {
  const head = ["Run", "Status", "Method", "Key parameters", "Linear top-1", "kNN top-1", "Eff. rank"].map(
    (t) => h("th", { scope: "col" }, t),
  );
  const rows = jobs.map((job, i) => {
    if (job.error) return h("tr", {}, h("td", {}, `#${job.id}`), h("td", { colspan: 6 }, job.error));
    const swatch = h("span", {
      class: "swatch",
      style: `background: ${seriesColor(i)}`,
      "aria-hidden": "true",
    });
    return h(
      "tr",
      {},
      h("td", {}, swatch, h("a", { href: hashFor(`/runs/${job.id}`) }, `#${job.id} ${job.name ?? ""}`)),
      h("td", {}, statusBadge(job.status), " ", collapseFlag(job.collapse)),
      h("td", {}, job.method),
      h("td", { class: "params" }, formatParams(job.params) || MISSING),
      h("td", { class: "num" }, formatPercent(job.summary?.["eval/linear_top1"])),
      h("td", { class: "num" }, formatPercent(job.summary?.["eval/knn_top1"])),
      h("td", { class: "num" }, formatNumber(job.collapse?.erank ?? job.summary?.["info/erank"], 3)),
    );
  });
  return scrollTable(
    h("table", { class: "data" }, h("thead", {}, h("tr", {}, head)), h("tbody", {}, rows)),
    "Compared runs",
  );
}

function metricPicker(available, chosen, onPick) {
  if (!available.length) return h("p", { class: "muted" }, "These runs have no points yet.");
  const boxes = available.map((metric) => {
    const id = uid("metric");
    return h(
      "div",
      { class: "check" },
      h("input", {
        type: "checkbox",
        id,
        checked: chosen.has(metric),
        onchange: (event) => onPick(metric, event.target.checked),
      }),
      h("label", { for: id }, metricLabel(metric)),
    );
  });
  return h(
    "details",
    { class: "metric-picker" },
    h("summary", {}, "Choose metrics"),
    h("fieldset", {}, h("legend", { class: "visually-hidden" }, "Metrics to chart"), boxes),
  );
}
