// Sweeps list (GET /api/sweeps, paginated): name, strategy, swept parameters, cell counts by status.

import { api, errorMessage, isAbort } from "../api.js";
import {
  countBadges,
  errorBox,
  formatParameterSpecs,
  pageHeader,
  pager,
  scrollTable,
} from "../components.js";
import { h, replace, replaceKeepingFocus } from "../dom.js";
import { formatTime } from "../format.js";
import { hashFor, replaceQuery } from "../navigation.js";

export async function render(ctx) {
  document.title = "Sweeps · mmae";
  const state = { limit: Number(ctx.query.get("limit")) || 50, offset: Number(ctx.query.get("offset")) || 0 };
  const body = h("div");
  replace(
    ctx.root,
    pageHeader(
      "Sweeps",
      h("a", { class: "button", href: hashFor("/submit", { kind: "sweep" }) }, "New sweep"),
    ),
    body,
  );
  let last = "";

  async function refresh({ quiet = false } = {}) {
    replaceQuery("/sweeps", { limit: state.limit === 50 ? "" : state.limit, offset: state.offset || "" });
    try {
      const page = await api("/sweeps", { query: state, signal: ctx.signal });
      const snapshot = JSON.stringify(page);
      if (quiet && snapshot === last) return;
      last = snapshot;
      replaceKeepingFocus(body, sweepsTable(page.items), pager(page.total, state, onPage));
    } catch (error) {
      if (!isAbort(error)) replace(body, errorBox(errorMessage(error)));
    }
  }

  function onPage(offset, limit) {
    Object.assign(state, { offset, limit });
    refresh();
  }

  await refresh();
  ctx.poll(5000, () => refresh({ quiet: true }));
}

function sweepsTable(items) {
  if (!items.length) {
    return h(
      "p",
      { class: "empty" },
      "No sweeps yet. ",
      h("a", { href: hashFor("/submit", { kind: "sweep" }) }, "Start one."),
    );
  }
  const head = ["ID", "Name", "Strategy", "Parameters", "Cells", "Created"].map((t) =>
    h("th", { scope: "col" }, t),
  );
  const rows = items.map((sweep) =>
    h(
      "tr",
      { "data-sweep-id": sweep.id },
      h(
        "td",
        {},
        h("a", { href: hashFor(`/sweeps/${sweep.id}`), "data-key": `id-${sweep.id}` }, `#${sweep.id}`),
      ),
      h(
        "td",
        {},
        h("a", { href: hashFor(`/sweeps/${sweep.id}`), "data-key": `name-${sweep.id}` }, sweep.name),
      ),
      h("td", {}, sweep.strategy),
      h("td", { class: "params" }, formatParameterSpecs(sweep.parameters)),
      h("td", {}, countBadges(sweep.counts)),
      h("td", { class: "nowrap" }, formatTime(sweep.created_at)),
    ),
  );
  return scrollTable(
    h("table", { class: "data" }, h("thead", {}, h("tr", {}, head)), h("tbody", {}, rows)),
    "Sweeps",
  );
}
