// Runs list: filters (status, method, sweep, tag, name), server-side sort and pagination (GET /api/jobs),
// progress, final linear-probe accuracy, effective rank and the collapse flag; select runs to compare.

import { api, errorMessage, isAbort } from "../api.js";
import {
  METHODS,
  STATUSES,
  collapseFlag,
  errorBox,
  pageHeader,
  pager,
  progressBar,
  scrollTable,
  statusBadge,
  tagList,
} from "../components.js";
import { announce, h, replace, replaceKeepingFocus } from "../dom.js";
import { MISSING, formatNumber, formatPercent, formatTime, paramTexts } from "../format.js";
import { hashFor, navigate, replaceQuery } from "../navigation.js";

const PAGE_SIZES = [25, 50, 100, 200];
const COLUMNS = [
  { key: "name", label: "Run", sort: "name" },
  { key: "status", label: "Status and progress", sort: "status" },
  { key: "method", label: "Method", sort: "method" },
  { key: "params", label: "Key parameters" },
  { key: "linear_top1", label: "Linear top-1", sort: "linear_top1", numeric: true },
  { key: "erank", label: "Eff. rank", numeric: true },
  { key: "priority", label: "Priority", sort: "priority", numeric: true, optional: true },
  { key: "created_at", label: "Created", sort: "created_at" },
];
const FILTER_KEYS = ["status", "method", "sweep_id", "tag", "q"];

export async function render(ctx) {
  document.title = "Runs · mmae";
  const state = readState(ctx.query);
  const selected = new Set();
  let seq = 0;
  let lastSnapshot = "";

  const compareButton = h(
    "button",
    { type: "button", class: "button secondary", disabled: true },
    "Compare selected",
  );
  compareButton.addEventListener("click", () => navigate("/compare", { ids: [...selected].join(",") }));
  const body = h("div", { class: "runs-body" });
  const filters = filterForm(state, ctx, (next) => {
    Object.assign(state, next, { offset: 0 });
    refresh();
  });
  const legend = collapseLegend(ctx.session.ui?.collapse_fraction);

  replace(
    ctx.root,
    pageHeader("Runs", compareButton, h("a", { class: "button", href: "#/submit" }, "New job")),
    filters,
    legend,
    body,
  );

  async function refresh({ quiet = false } = {}) {
    const mine = ++seq;
    replaceQuery("/runs", stateQuery(state));
    filters.querySelector("#f-sort").value = state.sort;
    if (!quiet) body.setAttribute("aria-busy", "true");
    try {
      const page = await api("/jobs", { query: apiQuery(state), signal: ctx.signal });
      if (mine !== seq) return;
      if (page.items.length === 0 && state.offset > 0 && page.total > 0) {
        state.offset = Math.max(0, Math.floor((page.total - 1) / state.limit) * state.limit);
        refresh();
        return;
      }
      const snapshot = JSON.stringify(page);
      if (quiet && snapshot === lastSnapshot) return;
      lastSnapshot = snapshot;
      replaceKeepingFocus(
        body,
        runsTable(page.items, state, selected, onSort, onSelect),
        pager(page.total, state, onPage, PAGE_SIZES),
      );
      if (!quiet) announce(`${page.total} runs`);
    } catch (error) {
      if (!isAbort(error) && mine === seq) replace(body, errorBox(errorMessage(error)));
    } finally {
      body.removeAttribute("aria-busy");
    }
  }

  function onSort(key) {
    state.sort = state.sort === `-${key}` ? key : `-${key}`;
    state.offset = 0;
    refresh();
  }

  function onPage(offset, limit) {
    state.offset = offset;
    state.limit = limit;
    refresh().then(() => ctx.root.querySelector("table")?.scrollIntoView?.({ block: "nearest" }));
  }

  function onSelect(id, checked) {
    if (checked) selected.add(id);
    else selected.delete(id);
    compareButton.disabled = selected.size < 1;
    compareButton.textContent = selected.size ? `Compare selected (${selected.size})` : "Compare selected";
  }

  await refresh();
  ctx.poll(4000, () => refresh({ quiet: true }));
}

function readState(query) {
  const limit = Number(query.get("limit"));
  return {
    status: query.get("status") ?? "",
    method: query.get("method") ?? "",
    sweep_id: query.get("sweep_id") ?? "",
    tag: query.get("tag") ?? "",
    q: query.get("q") ?? "",
    sort: SORTS.some(([value]) => value === query.get("sort")) ? query.get("sort") : "-created_at",
    limit: PAGE_SIZES.includes(limit) ? limit : 50,
    offset: Math.max(0, Number(query.get("offset")) || 0),
  };
}

function stateQuery(state) {
  return {
    ...Object.fromEntries(FILTER_KEYS.map((k) => [k, state[k]])),
    sort: state.sort === "-created_at" ? "" : state.sort,
    limit: state.limit === 50 ? "" : state.limit,
    offset: state.offset || "",
  };
}

function apiQuery(state) {
  return {
    ...Object.fromEntries(FILTER_KEYS.map((k) => [k, state[k]])),
    sort: state.sort,
    limit: state.limit,
    offset: state.offset,
  };
}

function filterForm(state, ctx, apply) {
  const status = select("f-status", "Status", ["", ...STATUSES], state.status, "Any status");
  const method = select("f-method", "Method", ["", ...METHODS], state.method, "Any method");
  const sweep = select("f-sweep", "Sweep", [""], state.sweep_id, "Any sweep");
  const tag = textInput("f-tag", "Tag", state.tag);
  const q = textInput("f-q", "Name contains", state.q, "search");
  const sort = sortSelect(state.sort);
  const clear = h("button", { type: "button", class: "button secondary" }, "Clear filters");
  const form = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter runs" },
    status.field,
    method.field,
    sweep.field,
    tag.field,
    q.field,
    sort.field,
    h(
      "div",
      { class: "field filter-actions" },
      h("button", { type: "submit", class: "button" }, "Apply"),
      clear,
    ),
  );
  const values = () => ({
    status: status.input.value,
    method: method.input.value,
    sweep_id: sweep.input.value,
    tag: tag.input.value.trim(),
    q: q.input.value.trim(),
    sort: sort.input.value,
  });
  for (const control of [status.input, method.input, sweep.input, sort.input]) {
    control.addEventListener("change", () => apply(values()));
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apply(values());
  });
  clear.addEventListener("click", () => {
    for (const control of [status.input, method.input, sweep.input, tag.input, q.input]) control.value = "";
    apply(values());
  });
  loadSweepOptions(sweep.input, state.sweep_id, ctx);
  return form;
}

async function loadSweepOptions(selectEl, current, ctx) {
  try {
    const page = await api("/sweeps", { query: { limit: 200, offset: 0 }, signal: ctx.signal });
    const options = page.items.map((s) => [String(s.id), `#${s.id} ${s.name}`]);
    if (current && !options.some(([id]) => id === current)) options.unshift([current, `#${current}`]);
    for (const [value, label] of options)
      selectEl.append(h("option", { value, selected: value === current }, label));
  } catch (error) {
    if (!isAbort(error)) console.warn("sweeps unavailable", error);
  }
}

function select(id, label, values, current, emptyLabel) {
  const input = h(
    "select",
    { id, name: id },
    values.map((v) => h("option", { value: v, selected: v === current }, v || emptyLabel)),
  );
  if (current && !values.includes(current))
    input.append(h("option", { value: current, selected: true }, current));
  return { input, field: h("div", { class: "field" }, h("label", { for: id }, label), input) };
}

const SORTS = [
  ["-created_at", "Newest first"],
  ["created_at", "Oldest first"],
  ...COLUMNS.filter((col) => col.sort && col.sort !== "created_at").flatMap((col) => [
    [`-${col.sort}`, `${col.label}, descending`],
    [col.sort, `${col.label}, ascending`],
  ]),
];

/** Sorting for narrow screens, where the sortable column headers give way to cards. */
function sortSelect(current) {
  const input = h(
    "select",
    { id: "f-sort", name: "sort" },
    SORTS.map(([value, label]) => h("option", { value, selected: value === current }, label)),
  );
  return {
    input,
    field: h("div", { class: "field phone-only" }, h("label", { for: "f-sort" }, "Sort"), input),
  };
}

function textInput(id, label, value, type = "text") {
  const input = h("input", { id, name: id, type, value, autocomplete: "off" });
  return { input, field: h("div", { class: "field" }, h("label", { for: id }, label), input) };
}

function collapseLegend(fraction) {
  if (typeof fraction !== "number") return null;
  return h(
    "p",
    { class: "muted legend" },
    h("span", { class: "badge collapse" }, h("span", { "aria-hidden": "true" }, "⚠ "), "collapse"),
    ` marks a run whose features vary in fewer than ${Math.round(fraction * 1000) / 10}% of the directions` +
      " open to them (centred effective rank below that share of min(B − 1, d)).",
  );
}

function runsTable(items, state, selected, onSort, onSelect) {
  if (items.length === 0) {
    return h("p", { class: "empty" }, "No runs match. ", h("a", { href: "#/submit" }, "Submit a job."));
  }
  const head = h(
    "tr",
    {},
    h("th", { scope: "col", class: "select-col" }, h("span", { class: "visually-hidden" }, "Select")),
    COLUMNS.map((col) => headerCell(col, state.sort, onSort)),
  );
  const rows = items.map((job) => runRow(job, selected, onSelect));
  const table = h("table", { class: "data runs-table" }, h("thead", {}, head), h("tbody", {}, rows));
  return scrollTable(table, "Runs");
}

function headerCell(col, sort, onSort) {
  const classes = [col.numeric ? "num" : "", col.optional ? "optional" : ""].join(" ").trim() || null;
  if (!col.sort) return h("th", { scope: "col", class: classes }, col.label);
  const direction = sort === col.sort ? "ascending" : sort === `-${col.sort}` ? "descending" : null;
  const arrow = direction === "ascending" ? "▲" : direction === "descending" ? "▼" : "↕";
  return h(
    "th",
    { scope: "col", class: classes, "aria-sort": direction, "data-sort": col.sort },
    h(
      "button",
      { type: "button", class: "sort", "data-key": `sort-${col.sort}`, onclick: () => onSort(col.sort) },
      col.label,
      h("span", { class: "sort-arrow", "aria-hidden": "true" }, arrow),
    ),
  );
}

function runRow(job, selected, onSelect) {
  const checkbox = h("input", {
    type: "checkbox",
    "aria-label": `Select run ${job.id}`,
    "data-key": `select-${job.id}`,
    checked: selected.has(job.id),
    onchange: (event) => onSelect(job.id, event.target.checked),
  });
  const erank = job.collapse?.erank ?? job.summary?.["info/erank"];
  const link = (key, text) =>
    h("a", { href: hashFor(`/runs/${job.id}`), "data-key": `${key}-${job.id}` }, text);
  const tags = tagList(job.tags);
  const cells = {
    name: [
      h("span", { class: "run-id" }, `#${job.id}`),
      " ",
      link("name", breakable(job.name || `job ${job.id}`)),
      tags,
    ],
    status: [
      h("div", { class: "badges" }, statusBadge(job.status), collapseFlag(job.collapse)),
      progressBar(job.progress, job.status),
    ],
    method: job.method,
    params: paramChips(job.params),
    linear_top1: formatPercent(job.summary?.["eval/linear_top1"]),
    erank: formatNumber(erank, 3),
    priority: job.priority,
    created_at: formatTime(job.created_at, { short: true }),
  };
  return h(
    "tr",
    { "data-job-id": job.id, class: job.collapse?.collapsed ? "collapsed" : null },
    h("td", { class: "select-col" }, checkbox),
    COLUMNS.map((col) =>
      h("td", { class: cellClass(col), "data-label": col.label, "data-col": col.key }, cells[col.key]),
    ),
  );
}

function cellClass(col) {
  return (
    [
      col.numeric ? "num" : "",
      col.optional ? "optional" : "",
      col.key === "name" ? "name" : "",
      col.key === "params" ? "params" : "",
    ]
      .filter(Boolean)
      .join(" ") || null
  );
}

/** Key parameters as chips that wrap between, never inside, a parameter. */
function paramChips(params) {
  const texts = paramTexts(params);
  if (!texts.length) return MISSING;
  return h(
    "span",
    { class: "chips" },
    texts.map((text) => h("span", { class: "chip" }, text)),
  );
}

/** A sweep cell's name ("sweep/mu=1") may break after each slash. */
function breakable(name) {
  return name.split("/").flatMap((part, i) => (i ? ["/", h("wbr"), part] : [part]));
}
