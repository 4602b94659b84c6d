// Small pieces several views share: status badges, progress bars, the collapse flag, messages, a sweep's
// parameters and cell counts.

import { h } from "./dom.js";
import { formatNumber } from "./format.js";

export const STATUSES = ["queued", "starting", "running", "cancelling", "succeeded", "failed", "cancelled"];
export const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
export const METHODS = ["mae", "umae", "mmae", "simclr", "spectral", "barlow_twins", "byol"];

export function isActive(status) {
  return !TERMINAL.has(status);
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, status);
}

/** A progress bar from {step, total_steps, phase}; the text says the numbers, the bar only shows them. */
export function progressBar(progress, status) {
  const step = progress?.step ?? 0;
  const total = progress?.total_steps ?? 0;
  const done = status === "succeeded";
  const fraction = done ? 1 : total > 0 ? Math.min(1, step / total) : 0;
  const phase = progress?.phase && isActive(status) ? ` · ${progress.phase}` : "";
  const text = total > 0 ? `${step}/${total}${phase}` : status === "queued" ? "queued" : `${step}${phase}`;
  return h(
    "div",
    { class: "progress-cell" },
    h(
      "div",
      {
        class: `progress${isActive(status) ? " active" : ""}`,
        role: "progressbar",
        "aria-valuemin": 0,
        "aria-valuemax": total || 1,
        "aria-valuenow": total ? Math.min(step, total) : 0,
        "aria-valuetext": total ? `${step} of ${total} steps${phase}` : text,
      },
      h("div", { class: "progress-fill", style: `width: ${(fraction * 100).toFixed(1)}%` }),
    ),
    h("span", { class: "progress-text" }, text),
  );
}

/** The collapse alarm flag, or null when the run is not collapsed (or not yet measured). */
export function collapseFlag(collapse) {
  if (!collapse?.collapsed) return null;
  return h(
    "span",
    { class: "badge collapse", title: collapseText(collapse) },
    h("span", { "aria-hidden": "true" }, "⚠ "),
    "collapse",
  );
}

/** Why the alarm is raised: the centred effective rank against the rule's threshold. */
export function collapseText(collapse) {
  return (
    `Centred effective rank ${formatNumber(collapse.erank_centered)} is below ` +
    `${collapseRuleText(collapse)}: the features vary in only a handful of the directions open to them.`
  );
}

/**
 * The alarm's rule with this run's numbers: "7.68 = 4% of min(B − 1, d) = min(255, 192)". The centred
 * effective rank is Def. 5.1's of the l2-normalised features [B, d] less their batch mean; B centred rows
 * of width d span at most min(B − 1, d) directions.
 */
export function collapseRuleText(collapse) {
  const percent = `${Math.round((collapse.fraction ?? 0) * 1000) / 10}%`;
  if (typeof collapse.threshold !== "number") return `${percent} of min(B − 1, d)`;
  return (
    `${formatNumber(collapse.threshold)} = ${percent} of min(B − 1, d) = ` +
    `min(${collapse.batch_size - 1}, ${collapse.feature_dim})`
  );
}

/** {"loss.mu": {"values": [0.5, 1, 3]}} -> "loss.mu ∈ {0.5, 1, 3}"; distributions as "~ log_uniform[a, b]". */
export function formatParameterSpecs(parameters) {
  return Object.entries(parameters ?? {})
    .map(([name, spec]) => {
      if (Array.isArray(spec?.values))
        return `${name} ∈ {${spec.values.map((v) => formatNumber(v)).join(", ")}}`;
      if (spec?.distribution)
        return `${name} ~ ${spec.distribution}[${formatNumber(spec.low)}, ${formatNumber(spec.high)}]`;
      return `${name}: ${JSON.stringify(spec)}`;
    })
    .join("; ");
}

/** Cell counts by status as small badges, in state-machine order. */
export function countBadges(counts) {
  const entries = STATUSES.filter((s) => counts?.[s]).map((s) => [s, counts[s]]);
  if (!entries.length) return h("span", { class: "muted" }, "no cells");
  return h(
    "span",
    { class: "counts" },
    entries.map(([status, n]) => h("span", { class: `badge status-${status}` }, `${n} ${status}`)),
  );
}

export function errorBox(message) {
  return h("div", { class: "notice error", role: "alert" }, message);
}

export function loading(text = "Loading…") {
  return h("p", { class: "muted loading" }, text);
}

/** A page heading that receives focus after navigation, with optional actions beside it. */
export function pageHeader(title, ...actions) {
  return h(
    "div",
    { class: "page-header" },
    h("h1", { tabindex: "-1" }, title),
    actions.length ? h("div", { class: "actions" }, actions) : null,
  );
}

/** Tags as small labels, or null when there are none. */
export function tagList(tags) {
  if (!tags?.length) return null;
  return h("span", { class: "tags" }, tags.map((t) => h("span", { class: "tag" }, t)));
}

/** A page section under an <h2> heading (id `headingId`) that labels it. */
export function pageSection(headingId, title, ...children) {
  return h(
    "section",
    { class: "section", "aria-labelledby": headingId },
    h("h2", { id: headingId }, title),
    ...children,
  );
}

/** A <dl> of [label, value] pairs; values may be nodes. */
export function definitionList(pairs, className = "facts") {
  return h(
    "dl",
    { class: className },
    pairs.filter(Boolean).map(([term, value]) => h("div", {}, h("dt", {}, term), h("dd", {}, value))),
  );
}

/** A table wrapper that scrolls sideways on narrow screens instead of squeezing columns. */
export function scrollTable(table, label) {
  return h("div", { class: "table-scroll", role: "region", "aria-label": label, tabindex: "0" }, table);
}

/** Page controls for a server-side paginated list: state is {limit, offset}; onPage(offset, limit). */
export function pager(total, state, onPage, pageSizes = [25, 50, 100, 200]) {
  const pages = Math.max(1, Math.ceil(total / state.limit));
  const page = Math.floor(state.offset / state.limit) + 1;
  const first = total ? state.offset + 1 : 0;
  const last = Math.min(total, state.offset + state.limit);
  const goto = (p) => onPage((Math.min(Math.max(p, 1), pages) - 1) * state.limit, state.limit);
  const button = (label, target, disabled, aria) =>
    h(
      "button",
      {
        type: "button",
        class: "button secondary small",
        disabled,
        "aria-label": aria,
        "data-key": `page-${aria}`,
        onclick: () => goto(target),
      },
      label,
    );
  const size = h(
    "select",
    { id: "page-size", "data-key": "page-size", onchange: (event) => onPage(0, Number(event.target.value)) },
    pageSizes.map((n) => h("option", { value: n, selected: n === state.limit }, n)),
  );
  return h(
    "nav",
    { class: "pager", "aria-label": "Pages" },
    h("span", { class: "pager-count" }, `${first}–${last} of ${total.toLocaleString()}`),
    h(
      "span",
      { class: "pager-buttons" },
      button("«", 1, page <= 1, "First page"),
      button("‹ Prev", page - 1, page <= 1, "Previous page"),
      h("span", { class: "pager-page" }, `Page ${page} of ${pages.toLocaleString()}`),
      button("Next ›", page + 1, page >= pages, "Next page"),
      button("»", pages, page >= pages, "Last page"),
    ),
    h("span", { class: "field inline" }, h("label", { for: "page-size" }, "Per page"), size),
  );
}
