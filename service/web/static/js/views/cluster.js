// Cluster: Ray's resources (total, available, used), GPUs busy and free, the queue length and the nodes
// (GET /api/cluster), refreshed every few seconds.

import { api, errorMessage, isAbort } from "../api.js";
import { errorBox, pageHeader, scrollTable } from "../components.js";
import { h, replace } from "../dom.js";
import { MISSING, formatNumber } from "../format.js";

const BYTE_RESOURCES = new Set(["memory", "object_store_memory"]);

export async function render(ctx) {
  document.title = "Cluster · mmae";
  const body = h("div", { "aria-live": "off" });
  const updated = h("p", { class: "muted small" });
  replace(ctx.root, pageHeader("Cluster"), updated, body);

  async function refresh() {
    try {
      const cluster = await api("/cluster", { signal: ctx.signal });
      replace(body, stats(cluster), resourcesTable(cluster), nodesTable(cluster.nodes ?? []));
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      if (!isAbort(error)) replace(body, errorBox(errorMessage(error)));
    }
  }

  await refresh();
  ctx.poll(3000, refresh);
}

function stats(cluster) {
  const gpuTotal = cluster.resources?.GPU ?? 0;
  const card = (label, value, extra = null, key = label) =>
    h(
      "div",
      { class: "stat card", "data-stat": key },
      h("span", { class: "stat-label" }, label),
      h("span", { class: "stat-value" }, value),
      extra,
    );
  const rayOk = cluster.ray === "ok";
  return h(
    "div",
    { class: "stats" },
    card(
      "Ray",
      h("span", { class: `badge ${rayOk ? "status-succeeded" : "status-failed"}` }, cluster.ray ?? "unknown"),
      null,
      "ray",
    ),
    card(
      "GPUs busy",
      `${formatNumber(cluster.gpus_busy ?? 0)} / ${formatNumber(gpuTotal)}`,
      null,
      "gpus_busy",
    ),
    card("GPUs free", formatNumber(cluster.gpus_free ?? 0), null, "gpus_free"),
    card(
      "Queue length",
      formatNumber(cluster.queue_length ?? 0),
      h("a", { class: "small", href: "#/runs?status=queued" }, "queued runs"),
      "queue_length",
    ),
    card(
      "Running",
      formatNumber(cluster.running ?? 0),
      h("a", { class: "small", href: "#/runs?status=running" }, "running runs"),
      "running",
    ),
  );
}

function resourcesTable(cluster) {
  const total = cluster.resources ?? {};
  const available = cluster.available ?? {};
  const names = Object.keys(total)
    .filter((name) => !name.startsWith("node:") && !name.startsWith("accelerator_type:"))
    .sort(resourceOrder);
  if (!names.length) return h("p", { class: "muted" }, "Ray reports no resources.");
  const rows = names.map((name) => {
    const t = total[name] ?? 0;
    const a = available[name] ?? 0;
    const used = Math.max(0, t - a);
    const fraction = t > 0 ? used / t : 0;
    return h(
      "tr",
      { "data-resource": name },
      h("th", { scope: "row" }, name),
      h("td", { class: "num" }, amount(name, t)),
      h("td", { class: "num" }, amount(name, a)),
      h(
        "td",
        {},
        h(
          "div",
          { class: "progress-cell" },
          h(
            "div",
            {
              class: "progress",
              role: "progressbar",
              "aria-valuemin": 0,
              "aria-valuemax": 100,
              "aria-valuenow": Math.round(fraction * 100),
              "aria-label": `${name} used`,
            },
            h("div", { class: "progress-fill", style: `width: ${(fraction * 100).toFixed(1)}%` }),
          ),
          h("span", { class: "progress-text" }, `${amount(name, used)} used`),
        ),
      ),
    );
  });
  return h(
    "section",
    { class: "section" },
    h("h2", {}, "Resources"),
    scrollTable(
      h(
        "table",
        { class: "data" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            [
              ["Resource", null],
              ["Total", "num"],
              ["Available", "num"],
              ["Used", null],
            ].map(([t, cls]) => h("th", { scope: "col", class: cls }, t)),
          ),
        ),
        h("tbody", {}, rows),
      ),
      "Resources",
    ),
  );
}

function resourceOrder(a, b) {
  const order = ["CPU", "GPU", "memory", "object_store_memory"];
  const ia = order.indexOf(a) === -1 ? order.length : order.indexOf(a);
  const ib = order.indexOf(b) === -1 ? order.length : order.indexOf(b);
  return ia - ib || a.localeCompare(b);
}

function amount(name, value) {
  if (!BYTE_RESOURCES.has(name)) return formatNumber(value);
  return `${(value / 2 ** 30).toFixed(1)} GiB`;
}

function nodesTable(nodes) {
  if (!nodes.length)
    return h(
      "section",
      { class: "section" },
      h("h2", {}, "Nodes"),
      h("p", { class: "muted" }, "No nodes reported."),
    );
  const keys = [...new Set(nodes.flatMap((node) => Object.keys(node)))];
  const cell = (value) => {
    if (value === null || value === undefined) return MISSING;
    if (typeof value === "object") {
      return Object.entries(value)
        .filter(([k]) => !k.startsWith("node:"))
        .map(([k, v]) => `${k}: ${BYTE_RESOURCES.has(k) ? amount(k, v) : formatNumber(v)}`)
        .join(", ");
    }
    return typeof value === "number" ? formatNumber(value) : String(value);
  };
  return h(
    "section",
    { class: "section" },
    h("h2", {}, "Nodes"),
    scrollTable(
      h(
        "table",
        { class: "data" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            keys.map((k) => h("th", { scope: "col" }, k)),
          ),
        ),
        h(
          "tbody",
          {},
          nodes.map((node) =>
            h(
              "tr",
              {},
              keys.map((k) => h("td", {}, cell(node[k]))),
            ),
          ),
        ),
      ),
      "Nodes",
    ),
  );
}
