// Run page: live curves (loss, learning rate, MI, joint entropy, effective rank, TCR, JS, probe accuracy),
// fed by GET /api/jobs/{id}/metrics (downsampled) and then the job's event stream (SSE, cookie auth);
// status, progress, collapse alarm, cancel / retry, MLflow link, final metrics, config, attempts, logs.

import { api, errorMessage, isAbort } from "../api.js";
import { chartCard, seriesColor } from "../charts.js";
import {
  TERMINAL,
  collapseFlag,
  collapseRuleText,
  collapseText,
  definitionList,
  errorBox,
  isActive,
  pageHeader,
  pageSection,
  progressBar,
  scrollTable,
  statusBadge,
  tagList,
} from "../components.js";
import { announce, append, h, replace } from "../dom.js";
import { MISSING, formatDuration, formatMetric, formatNumber, formatTime } from "../format.js";
import { CHARTED_METRICS, PANELS, isAccuracy, metricLabel } from "../metrics.js";
import { muText } from "../mu.js";
import { hashFor } from "../navigation.js";
import { SeriesStore } from "../series.js";

const MAX_POINTS = 1000; // per series, as downsampled by the API
const REFETCH_ABOVE = 4000; // live points kept before asking the API for a downsampled view again
const CANCELLABLE = new Set(["queued", "starting", "running"]);

export async function render(ctx) {
  const id = Number(ctx.params[0]);
  let job = await api(`/jobs/${id}`, { signal: ctx.signal });
  const store = new SeriesStore();
  const sections = new RunSections(id, ctx);
  const { charts, logs } = sections;
  replace(ctx.root, sections.root);
  ctx.onCleanup(() => charts.destroy());

  function show(next, { announceStatus = false } = {}) {
    const previous = job?.status;
    job = next;
    sections.show(job, { onCancel: cancel, onRetry: () => act("retry") });
    if (announceStatus && previous !== job.status) announce(`Run ${job.id} is ${job.status}`);
  }

  async function cancel() {
    if (!window.confirm(`Cancel run #${job.id}? It stops after saving a checkpoint.`)) return;
    await act("cancel");
  }

  /** POST the action ("cancel" or "retry"), show the job it answers with and follow it live. */
  async function act(action) {
    try {
      const next = await api(`/jobs/${id}/${action}`, { method: "POST", signal: ctx.signal });
      show(next, { announceStatus: true });
      live.start();
    } catch (error) {
      if (!isAbort(error)) announceError(sections.alerts, error);
    }
  }

  async function loadSeries() {
    store.reset(await fetchSeries(id, ctx.signal));
    charts.update(store);
  }

  const live = new LiveFeed(id, ctx, {
    onJob: (next) => {
      show(next, { announceStatus: true });
      if (TERMINAL.has(next.status)) logs.refresh();
    },
    onMetrics: (series) => {
      store.merge(series);
      if (store.longest() > REFETCH_ABOVE) loadSeries().catch(() => {});
      else charts.update(store);
    },
    onEnd: () => loadSeries().catch(() => {}),
    sinceStep: () => store.lastStep(),
  });

  show(job);
  await loadSeries();
  logs.refresh();
  if (isActive(job.status)) live.start();
  ctx.poll(5000, async () => {
    if (isActive(job.status)) await logs.refresh();
  });
}

/** The charted metrics the run has points of, downsampled by the API: {name: {steps, values}}. */
async function fetchSeries(id, signal) {
  const names = await api(`/jobs/${id}/metrics/names`, { signal });
  const wanted = CHARTED_METRICS.filter((name) => names.includes(name));
  if (!wanted.length) return {};
  const data = await api(`/jobs/${id}/metrics`, {
    query: { names: wanted.join(","), max_points: MAX_POINTS },
    signal,
  });
  return data.series;
}

/** The page's sections, each redrawn from the job: header, alerts, facts, final metrics, config, attempts. */
class RunSections {
  constructor(id, ctx) {
    this.header = h("div");
    this.alerts = h("div", { class: "alerts" });
    this.facts = h("div", { class: "card facts-card" });
    this.charts = new ChartGrid();
    this.finals = h("div");
    this.config = h("div");
    this.attempts = h("div");
    this.logs = new LogPanel(id, ctx);
    this.root = append(h("section", { class: "run-page", "data-job-id": id }), [
      this.header,
      this.alerts,
      this.facts,
      pageSection("charts-h", "Curves", this.charts.root),
      pageSection("final-h", "Final metrics", this.finals),
      pageSection("config-h", "Config", this.config),
      pageSection("attempts-h", "Attempts", this.attempts),
      pageSection("logs-h", "Logs", this.logs.root),
    ]);
  }

  show(job, handlers) {
    document.title = `#${job.id} ${job.name ?? ""} · mmae`;
    this.root.dataset.jobStatus = job.status;
    this.showHeader(runHeader(job, handlers));
    replace(this.alerts, runAlerts(job));
    replace(this.facts, runFacts(job));
    replace(this.finals, finalMetrics(job.summary));
    if (this.config.dataset.hash !== job.config_hash) {
      this.config.dataset.hash = job.config_hash;
      replace(this.config, configTable(job.config));
    }
    replace(this.attempts, attemptsTable(job.attempts ?? []));
    this.charts.setThreshold(job.collapse);
  }

  /** Focus that was in the header moves to the new header's same action, or else to its heading. */
  showHeader(next) {
    const header = this.header;
    const focused = header.contains(document.activeElement) ? document.activeElement : null;
    replace(header, next);
    if (focused) {
      const same =
        focused.dataset.action && header.querySelector(`[data-action="${focused.dataset.action}"]`);
      (same || header.querySelector("h1")).focus({ preventScroll: true });
    }
  }
}

function announceError(container, error) {
  container.prepend(errorBox(errorMessage(error)));
  announce(errorMessage(error));
}

function runHeader(job, { onCancel, onRetry }) {
  const actions = [];
  if (CANCELLABLE.has(job.status)) {
    actions.push(
      h(
        "button",
        { type: "button", class: "button danger", "data-action": "cancel", onclick: onCancel },
        "Cancel",
      ),
    );
  }
  if (job.status === "failed" || job.status === "cancelled") {
    actions.push(
      h("button", { type: "button", class: "button", "data-action": "retry", onclick: onRetry }, "Retry"),
    );
  }
  if (job.mlflow_url) {
    actions.push(
      h(
        "a",
        { class: "button secondary", href: job.mlflow_url, target: "_blank", rel: "noopener" },
        "MLflow run ↗",
      ),
    );
  }
  actions.push(
    h("a", { class: "button secondary", href: hashFor("/submit", { from_job: job.id }) }, "Clone"),
  );
  const head = pageHeader(`Run #${job.id}${job.name ? ` · ${job.name}` : ""}`, ...actions);
  head
    .querySelector("h1")
    .after(h("p", { class: "subtitle" }, statusBadge(job.status), " ", collapseFlag(job.collapse)));
  return head;
}

function runAlerts(job) {
  const items = [];
  if (job.collapse?.collapsed) {
    items.push(
      h(
        "div",
        { class: "notice warning", role: "alert" },
        h("strong", {}, "Representation collapse. "),
        collapseText(job.collapse),
      ),
    );
  }
  if (job.error)
    items.push(
      h(
        "div",
        { class: "notice error" },
        h("strong", {}, "Error. "),
        h("pre", { class: "inline-pre" }, job.error),
      ),
    );
  return items;
}

/** "1 CPU · 0 GPU", or for a data-parallel job "4 workers × (1 CPU · 1 GPU), spread". */
function resourcesText(resources) {
  const each = `${resources.num_cpus ?? MISSING} CPU · ${resources.num_gpus ?? 0} GPU`;
  const workers = resources.workers ?? 1;
  return workers === 1 ? each : `${workers} workers × (${each}), ${resources.placement ?? "pack"}`;
}

function runFacts(job) {
  const resources = job.resources ?? {};
  return definitionList([
    ["Progress", progressBar(job.progress, job.status)],
    ["Method", job.method],
    job.sweep_id ? ["Sweep", h("a", { href: hashFor(`/sweeps/${job.sweep_id}`) }, `#${job.sweep_id}`)] : null,
    job.cell_params
      ? [
          "Cell",
          Object.entries(job.cell_params)
            .map(([k, v]) => `${k}=${formatNumber(v)}`)
            .join(", "),
        ]
      : null,
    ["Priority", job.priority],
    ["Retries", `${job.retries_used ?? 0} of ${job.max_retries ?? 0}`],
    ["Resources", resourcesText(resources)],
    ["Created", formatTime(job.created_at)],
    ["Started", formatTime(job.started_at)],
    ["Finished", formatTime(job.finished_at)],
    ["Duration", job.started_at ? formatDuration(job.started_at, job.finished_at) : MISSING],
    ...informationFacts(job),
    ["Config hash", h("code", {}, job.config_hash ?? MISSING)],
    (job.tags ?? []).length ? ["Tags", tagList(job.tags)] : null,
  ]);
}

/** Effective ranks, the collapse alarm's rule with the run's numbers, for M-MAE mu in both conventions. */
function informationFacts(job) {
  const collapse = job.collapse ?? {};
  const ranks = [
    typeof collapse.erank === "number" ? `${formatNumber(collapse.erank)} (Def. 5.1)` : null,
    typeof collapse.erank_centered === "number" ? `${formatNumber(collapse.erank_centered)} centred` : null,
  ].filter(Boolean);
  return [
    ranks.length ? ["Effective rank", ranks.join(" · ")] : null,
    ["Collapse alarm", h("span", { "data-collapse-rule": "" }, collapseAlarmText(collapse))],
    job.method === "mmae" ? ["TCR mu", muText(job.config?.loss, collapse.feature_dim) ?? MISSING] : null,
  ];
}

function collapseAlarmText(collapse) {
  const rule = collapseRuleText(collapse);
  if (collapse.collapsed === true) return `raised: centred effective rank below ${rule}`;
  if (collapse.collapsed === false) return `not raised; fires if the centred effective rank is below ${rule}`;
  if (typeof collapse.erank === "number" && !collapse.rank_bound)
    return "not judged: this run recorded no batch size (it predates the centred effective rank)";
  return `fires when the centred effective rank falls below ${rule}; judged once it is measured`;
}

function finalMetrics(summary) {
  const entries = Object.entries(summary ?? {}).filter(([, v]) => typeof v === "number");
  if (!entries.length) return h("p", { class: "muted" }, "None yet: final metrics appear when the run ends.");
  entries.sort(([a], [b]) => rank(a) - rank(b) || a.localeCompare(b));
  const table = h(
    "table",
    { class: "data compact" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "Metric"),
        h("th", { scope: "col" }, "Name"),
        h("th", { scope: "col", class: "num" }, "Value"),
      ),
    ),
    h(
      "tbody",
      {},
      entries.map(([name, value]) =>
        h(
          "tr",
          {},
          h("td", {}, metricLabel(name)),
          h("td", {}, h("code", {}, name)),
          h("td", { class: "num" }, formatMetric(name, value)),
        ),
      ),
    ),
  );
  return scrollTable(table, "Final metrics");
}

function rank(name) {
  const order = ["eval/", "probe/", "info/", "train/"];
  const i = order.findIndex((prefix) => name.startsWith(prefix));
  return i === -1 ? order.length : i;
}

function configTable(config) {
  const rows = flatten(config ?? {});
  if (!rows.length) return h("p", { class: "muted" }, "No config.");
  const table = h(
    "table",
    { class: "data compact config" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Value"))),
    h(
      "tbody",
      {},
      rows.map(([key, value]) =>
        h("tr", {}, h("td", {}, h("code", {}, key)), h("td", {}, value === null ? "null" : String(value))),
      ),
    ),
  );
  return h(
    "details",
    { class: "config-details" },
    h("summary", {}, `${rows.length} fields`),
    scrollTable(table, "Config"),
  );
}

function flatten(node, prefix = "") {
  return Object.entries(node).flatMap(([key, value]) =>
    value && typeof value === "object" && !Array.isArray(value)
      ? flatten(value, `${prefix}${key}.`)
      : [[`${prefix}${key}`, value]],
  );
}

function attemptsTable(attempts) {
  if (!attempts.length) return h("p", { class: "muted" }, "Not started yet.");
  const table = h(
    "table",
    { class: "data compact" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["#", "Status", "Ray submission", "Submitted", "Started", "Finished", "Error"].map((t) =>
          h("th", { scope: "col" }, t),
        ),
      ),
    ),
    h(
      "tbody",
      {},
      attempts.map((a) =>
        h(
          "tr",
          {},
          h("td", {}, a.number),
          h("td", {}, a.status),
          h("td", {}, h("code", {}, a.ray_submission_id ?? MISSING)),
          h("td", { class: "nowrap" }, formatTime(a.submitted_at)),
          h("td", { class: "nowrap" }, formatTime(a.started_at)),
          h("td", { class: "nowrap" }, formatTime(a.finished_at)),
          h("td", { class: "error-cell" }, a.error ?? ""),
        ),
      ),
    ),
  );
  return scrollTable(table, "Attempts");
}

/** One uPlot chart per panel that has data; panels appear as their first points arrive. */
class ChartGrid {
  constructor() {
    this.root = h("div", { class: "chart-grid" }, h("p", { class: "muted" }, "No points yet."));
    this.charts = new Map();
    this.threshold = null;
    this.store = null;
    this.pending = false;
  }

  setThreshold(collapse) {
    const next = collapse && typeof collapse.threshold === "number" ? collapse.threshold : null;
    if (next === this.threshold) return;
    this.threshold = next;
    if (this.store) this.update(this.store);
  }

  /** Redraw from the store, at most once per animation frame. */
  update(store) {
    this.store = store;
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.draw();
    });
  }

  draw() {
    const store = this.store;
    for (const panel of PANELS) {
      const present = panel.metrics.filter((name) => store.get(name)?.steps.length);
      if (!present.length) continue;
      const series = present.map((name, i) => ({
        label: metricLabel(name),
        xs: store.get(name).steps,
        ys: store.get(name).values,
        color: seriesColor(i),
      }));
      if (panel.id === "erank" && this.threshold !== null)
        series.push(thresholdSeries(series[0].xs, this.threshold));
      this.chartFor(panel, present).setSeries(series);
    }
  }

  chartFor(panel, present) {
    if (!this.charts.has(panel.id)) {
      this.root.querySelector(":scope > p")?.remove();
      const { card, chart } = chartCard(
        panel.title,
        { "data-chart": panel.id, "data-metrics": present.join(",") },
        { title: panel.title, percent: panel.metrics.every(isAccuracy) },
      );
      const index = PANELS.findIndex((p) => p.id === panel.id);
      const after = [...this.root.children].find(
        (el) => PANELS.findIndex((p) => p.id === el.dataset.panel) > index,
      );
      card.dataset.panel = panel.id;
      this.root.insertBefore(card, after ?? null);
      this.charts.set(panel.id, chart);
    }
    return this.charts.get(panel.id);
  }

  destroy() {
    for (const chart of this.charts.values()) chart.destroy();
  }
}

function thresholdSeries(steps, threshold) {
  const xs = [steps[0], steps[steps.length - 1]];
  const label = "collapse threshold (centred)";
  return { label, xs, ys: [threshold, threshold], color: "#b42318", dash: [6, 4] };
}

/**
 * The job's live feed: an EventSource on /api/jobs/{id}/events ("job" and "metrics" events), closed when
 * the job is terminal. If the stream cannot be opened, it falls back to polling the REST API.
 */
class LiveFeed {
  constructor(id, ctx, handlers) {
    this.id = id;
    this.ctx = ctx;
    this.handlers = handlers;
    this.source = null;
    this.polling = false;
    ctx.onCleanup(() => this.stop());
  }

  start() {
    if (this.source || this.polling || this.ctx.disposed) return;
    const source = new EventSource(`/api/jobs/${this.id}/events`);
    this.source = source;
    source.addEventListener("job", (event) => {
      const job = JSON.parse(event.data);
      this.handlers.onJob(job);
      if (TERMINAL.has(job.status)) this.finish();
    });
    source.addEventListener("metrics", (event) => this.handlers.onMetrics(JSON.parse(event.data).series));
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) this.fallback();
    });
  }

  finish() {
    this.stop();
    this.handlers.onEnd();
  }

  stop() {
    this.source?.close();
    this.source = null;
  }

  /** The stream was refused (401 brings the login form back through api()); poll instead. */
  async fallback() {
    this.stop();
    if (this.polling || this.ctx.disposed) return;
    this.polling = true;
    while (!this.ctx.disposed) {
      try {
        const job = await api(`/jobs/${this.id}`, { signal: this.ctx.signal });
        const since = this.handlers.sinceStep();
        const data = await api(`/jobs/${this.id}/metrics`, {
          query: {
            names: CHARTED_METRICS.join(","),
            max_points: MAX_POINTS,
            since_step: since === null ? "" : since + 1,
          },
          signal: this.ctx.signal,
        });
        this.handlers.onMetrics(data.series);
        this.handlers.onJob(job);
        if (TERMINAL.has(job.status)) {
          this.polling = false;
          this.handlers.onEnd();
          return;
        }
      } catch (error) {
        if (isAbort(error) || error?.status === 401) return;
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }
}

/** The tail of the job's Ray logs, kept scrolled to the end unless the reader scrolled up. */
class LogPanel {
  constructor(id, ctx) {
    this.id = id;
    this.ctx = ctx;
    this.pre = h("pre", { class: "logs", tabindex: "0", "aria-label": "Log lines" }, "Loading…");
    const button = h(
      "button",
      { type: "button", class: "button secondary small", onclick: () => this.refresh() },
      "Refresh logs",
    );
    this.root = h("div", {}, h("div", { class: "logs-bar" }, button), this.pre);
  }

  async refresh() {
    try {
      const data = await api(`/jobs/${this.id}/logs`, { query: { tail: 500 }, signal: this.ctx.signal });
      const atEnd = this.pre.scrollTop + this.pre.clientHeight >= this.pre.scrollHeight - 8;
      this.pre.textContent = data.lines.length ? data.lines.join("\n") : "No log lines yet.";
      if (atEnd) this.pre.scrollTop = this.pre.scrollHeight;
    } catch (error) {
      if (!isAbort(error)) this.pre.textContent = `Logs unavailable: ${errorMessage(error)}`;
    }
  }
}
