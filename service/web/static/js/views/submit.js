// Submit: start a job or a sweep from an example (GET /api/examples) or a clone of a run, editing every
// TrainConfig field in a form built from GET /api/config/schema. The server validates; its 422 errors are
// shown next to the fields they name (detail[].loc), with a summary linking to each.

import { ApiError, api, errorMessage } from "../api.js";
import { errorBox, pageHeader } from "../components.js";
import { announce, h, replace, uid } from "../dom.js";
import {
  clearErrors,
  configFieldsets,
  idempotencyKey,
  locId,
  plainField,
  readControl,
  readFields,
  selectField,
  showErrors,
} from "../form.js";
import { navigate } from "../navigation.js";

const DISTRIBUTIONS = ["values", "uniform", "log_uniform", "int_uniform"];

export async function render(ctx) {
  document.title = "Submit · mmae";
  const [examples, schema] = await Promise.all([
    api("/examples", { signal: ctx.signal }),
    api("/config/schema", { signal: ctx.signal }),
  ]);
  const fromJob = ctx.query.get("from_job");
  const clone = fromJob ? await api(`/jobs/${fromJob}`, { signal: ctx.signal }) : null;
  const state = {
    kind: clone ? "job" : ctx.query.get("kind") === "sweep" ? "sweep" : "job",
    example: ctx.query.get("example") ?? "",
    key: idempotencyKey(),
  };

  const exampleSelect = h("select", {
    id: "submit-example",
    onchange: (event) => setExample(event.target.value),
  });
  const dynamic = h("div", { class: "dynamic" });
  const submitButton = h("button", { type: "submit", class: "button" }, "Start");
  const status = h("div", { class: "form-status" });
  const form = h(
    "form",
    { id: "submit-form", class: "submit-form", novalidate: true },
    h("div", { class: "card form-top" }, kindChoice(state.kind, setKind), exampleField(exampleSelect)),
    dynamic,
    status,
    h("div", { class: "form-actions" }, submitButton),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit(form, state, { status, submitButton }, ctx.signal);
  });
  replace(ctx.root, pageHeader(clone ? `Clone run #${clone.id}` : "Submit"), form);

  function setKind(kind) {
    state.kind = kind;
    state.example = "";
    build();
  }

  function setExample(name) {
    state.example = name;
    build();
  }

  function build() {
    const ofKind = examples.filter((e) => e.kind === state.kind);
    if (!clone && !state.example && ofKind.length) state.example = ofKind[0].name;
    replace(
      exampleSelect,
      clone && state.kind === "job"
        ? h("option", { value: "" }, `Run #${clone.id} (clone)`)
        : h("option", { value: "" }, "Defaults"),
      ofKind.map((e) => h("option", { value: e.name, selected: e.name === state.example }, e.name)),
    );
    const example = ofKind.find((e) => e.name === state.example);
    const body = example
      ? normalise(example, state.kind)
      : clone && state.kind === "job"
        ? cloneBody(clone)
        : {};
    replace(dynamic, state.kind === "job" ? jobFields(body, schema) : sweepFields(body, schema));
    submitButton.textContent = state.kind === "job" ? "Start job" : "Start sweep";
    replace(status);
    state.key = idempotencyKey();
  }

  build();
}

/** "Start a job / a sweep" as two radio buttons. */
function kindChoice(current, onChange) {
  return h(
    "fieldset",
    { class: "kind-choice" },
    h("legend", {}, "Start a"),
    ["job", "sweep"].map((kind) => {
      const id = `kind-${kind}`;
      return h(
        "span",
        { class: "radio" },
        h("input", {
          type: "radio",
          name: "kind",
          id,
          value: kind,
          checked: current === kind,
          onchange: () => onChange(kind),
        }),
        h("label", { for: id }, kind === "job" ? "Job" : "Sweep"),
      );
    }),
  );
}

function exampleField(select) {
  return h("div", { class: "field" }, h("label", { for: select.id }, "Start from"), select);
}

/**
 * POST the form as a job or a sweep under the form's idempotency key; on success open its page, on a 422
 * show each error beside the field it names.
 */
async function submit(form, { kind, key }, { status, submitButton }, signal) {
  clearErrors(form);
  replace(status);
  const isJob = kind === "job";
  const body = isJob ? readJob(form) : readSweep(form);
  submitButton.disabled = true;
  try {
    const created = await api(isJob ? "/jobs" : "/sweeps", {
      method: "POST",
      body,
      headers: { "Idempotency-Key": key },
      signal,
    });
    announce(`${isJob ? "Job" : "Sweep"} #${created.id} started`);
    navigate(isJob ? `/runs/${created.id}` : `/sweeps/${created.id}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 422 && error.fieldErrors.length) {
      const n = showErrors(form, error.fieldErrors);
      announce(`${n} problem${n === 1 ? "" : "s"} to fix`);
    } else if (error?.name !== "AbortError") {
      replace(status, errorBox(errorMessage(error)));
      status.querySelector("[role=alert]")?.focus?.();
    }
  } finally {
    submitButton.disabled = false;
  }
}

/** An example's body as a request body: a job example may be a bare TrainConfig. */
function normalise(example, kind) {
  const body = example.body ?? {};
  if (kind === "job") return body.config ? body : { name: example.name, config: body };
  return {
    name: example.name,
    ...body,
    base_config: typeof body.base_config === "object" ? body.base_config : {},
  };
}

function cloneBody(job) {
  return {
    name: job.name ? `${job.name} (copy)` : "",
    config: job.config,
    priority: job.priority,
    max_retries: job.max_retries,
    resources: job.resources,
    tags: job.tags,
  };
}

function requestFields(body) {
  const resources = body.resources ?? {};
  return [
    plainField(["priority"], "Priority", body.priority ?? 0, { type: "integer", help: "higher runs first" }),
    plainField(["max_retries"], "Max retries", body.max_retries ?? 2, {
      type: "integer",
      help: "after a worker dies",
    }),
    plainField(["resources", "workers"], "Workers", resources.workers ?? 1, {
      type: "integer",
      help: "data-parallel; config.data.batch_size is split over them",
    }),
    plainField(["resources", "num_cpus"], "CPUs", resources.num_cpus ?? "auto", {
      type: "number",
      help: "per worker; auto: a CPU job gets its node's cores, a GPU job 4 per GPU",
    }),
    plainField(["resources", "num_gpus"], "GPUs", resources.num_gpus ?? 0, {
      type: "number",
      help: "per worker",
    }),
    selectField(["resources", "placement"], "Placement", ["pack", "spread"], resources.placement ?? "pack"),
    plainField(["tags"], "Tags", (body.tags ?? []).join(", "), { help: "comma-separated" }),
  ];
}

function jobFields(body, schema) {
  return [
    h(
      "fieldset",
      { class: "card" },
      h("legend", {}, "Job"),
      h(
        "div",
        { class: "form-grid" },
        plainField(["name"], "Name", body.name ?? "", { help: "optional" }),
        requestFields(body),
      ),
    ),
    h(
      "fieldset",
      { class: "card config-fieldset", "data-loc": JSON.stringify(["config"]) },
      h("legend", {}, "Training config"),
      h("p", { class: "field-error section-error", id: `${locId(["config"])}-error`, hidden: true }),
      configFieldsets(schema, ["config"], body.config ?? {}),
    ),
  ];
}

function sweepFields(body, schema) {
  const rows = h("div", { class: "param-rows" });
  const add = (name = "", spec = { values: [] }) => rows.append(parameterRow(name, spec));
  for (const [name, spec] of Object.entries(body.parameters ?? {})) add(name, spec);
  if (!rows.childElementCount) add("loss.mu", { values: [0.5, 1, 3] });
  return [
    h(
      "fieldset",
      { class: "card" },
      h("legend", {}, "Sweep"),
      h(
        "div",
        { class: "form-grid" },
        plainField(["name"], "Name", body.name ?? ""),
        selectField(["strategy"], "Strategy", ["grid", "random"], body.strategy ?? "grid"),
        plainField(["num_samples"], "Samples", body.num_samples ?? "", {
          type: "integer",
          nullable: true,
          help: "random strategy only",
        }),
        plainField(["max_concurrency"], "Max concurrency", body.max_concurrency ?? "", {
          type: "integer",
          nullable: true,
          help: "empty: no limit",
        }),
        requestFields(body),
      ),
    ),
    h(
      "fieldset",
      { class: "card", "data-loc": JSON.stringify(["parameters"]) },
      h("legend", {}, "Swept parameters"),
      h("p", { class: "field-error section-error", id: `${locId(["parameters"])}-error`, hidden: true }),
      rows,
      h("button", { type: "button", class: "button secondary small", onclick: () => add() }, "Add parameter"),
      configDatalist(schema),
    ),
    h(
      "fieldset",
      { class: "card config-fieldset", "data-loc": JSON.stringify(["base_config"]) },
      h("legend", {}, "Base config"),
      h("p", { class: "field-error section-error", id: `${locId(["base_config"])}-error`, hidden: true }),
      configFieldsets(schema, ["base_config"], body.base_config ?? {}),
    ),
  ];
}

/** One swept parameter: dotted name, values or a distribution. Its data-loc follows the name typed. */
function parameterRow(name, spec) {
  const ids = {
    name: uid("pname"),
    kind: uid("pkind"),
    values: uid("pvalues"),
    low: uid("plow"),
    high: uid("phigh"),
    error: uid("perr"),
  };
  const kind = Array.isArray(spec.values) ? "values" : (spec.distribution ?? "values");
  const nameInput = h("input", {
    id: ids.name,
    class: "param-name",
    value: name,
    list: "config-fields",
    autocomplete: "off",
    spellcheck: "false",
    "aria-describedby": ids.error,
  });
  const kindSelect = h(
    "select",
    { id: ids.kind, class: "param-kind" },
    DISTRIBUTIONS.map((d) => h("option", { value: d, selected: d === kind }, d)),
  );
  const values = subField(
    ids.values,
    "Values",
    "param-values",
    (spec.values ?? []).join(", "),
    "comma-separated",
  );
  const low = subField(ids.low, "Low", "param-low", spec.low ?? "", "");
  const high = subField(ids.high, "High", "param-high", spec.high ?? "", "");
  const row = h(
    "div",
    { class: "param-row" },
    h("p", { class: "field-error", id: ids.error, hidden: true }),
    h(
      "div",
      { class: "form-grid" },
      h("div", { class: "field" }, h("label", { for: ids.name }, "Parameter"), nameInput),
      h("div", { class: "field" }, h("label", { for: ids.kind }, "Kind"), kindSelect),
      values,
      low,
      high,
      h(
        "div",
        { class: "field param-remove" },
        h(
          "button",
          { type: "button", class: "button secondary small", onclick: () => row.remove() },
          "Remove",
        ),
      ),
    ),
  );
  const sync = () => {
    const loc = ["parameters", nameInput.value.trim()];
    row.dataset.loc = JSON.stringify(loc);
    values.dataset.loc = JSON.stringify([...loc, "values"]);
    low.dataset.loc = JSON.stringify([...loc, "low"]);
    high.dataset.loc = JSON.stringify([...loc, "high"]);
    const isValues = kindSelect.value === "values";
    values.hidden = !isValues;
    low.hidden = isValues;
    high.hidden = isValues;
  };
  nameInput.addEventListener("input", sync);
  kindSelect.addEventListener("change", sync);
  sync();
  return row;
}

function subField(id, label, cls, value, help) {
  return h(
    "div",
    { class: `field ${cls}` },
    h("label", { for: id }, label),
    h("input", {
      id,
      value: String(value),
      autocomplete: "off",
      "aria-describedby": `${id}-hint ${id}-error`,
    }),
    h("p", { class: "hint", id: `${id}-hint` }, help),
    h("p", { class: "field-error", id: `${id}-error`, hidden: true }),
  );
}

/** Suggestions for parameter names: every dotted TrainConfig field. */
function configDatalist(schema) {
  const names = [];
  for (const [key, prop] of Object.entries(schema.properties ?? {})) {
    const ref = (prop.$ref ?? prop.allOf?.[0]?.$ref ?? "").split("/").pop();
    const section = ref ? schema.$defs?.[ref] : null;
    if (section) for (const sub of Object.keys(section.properties ?? {})) names.push(`${key}.${sub}`);
    else names.push(key);
  }
  return h(
    "datalist",
    { id: "config-fields" },
    names.map((n) => h("option", { value: n })),
  );
}

function readCommon(form) {
  const value = (loc) => {
    const control = form.querySelector(`#${locId(loc)}`);
    return control ? readControl(control) : undefined;
  };
  const tags = (form.querySelector(`#${locId(["tags"])}`)?.value ?? "")
    .split(",")
    .map((t) => t.trim())
    .filter(Boolean);
  return {
    value,
    common: {
      priority: value(["priority"]),
      max_retries: value(["max_retries"]),
      resources: {
        workers: value(["resources", "workers"]),
        num_cpus: value(["resources", "num_cpus"]),
        num_gpus: value(["resources", "num_gpus"]),
        placement: value(["resources", "placement"]),
      },
      tags,
    },
  };
}

function readJob(form) {
  const { value, common } = readCommon(form);
  const name = value(["name"]);
  return withoutUndefined({ ...(name ? { name } : {}), ...common, config: readFields(form, ["config"]) });
}

function readSweep(form) {
  const { value, common } = readCommon(form);
  const parameters = {};
  for (const row of form.querySelectorAll(".param-row")) {
    const name = row.querySelector(".param-name").value.trim();
    const kind = row.querySelector(".param-kind").value;
    if (!name) continue;
    parameters[name] =
      kind === "values"
        ? { values: parseList(row.querySelector(".param-values input").value) }
        : {
            distribution: kind,
            low: parseScalar(row.querySelector(".param-low input").value),
            high: parseScalar(row.querySelector(".param-high input").value),
          };
  }
  return withoutUndefined({
    name: value(["name"]) ?? "",
    strategy: value(["strategy"]),
    num_samples: value(["num_samples"]),
    max_concurrency: value(["max_concurrency"]),
    ...common,
    parameters,
    base_config: readFields(form, ["base_config"]),
  });
}

/** "0.5, 1, 3" -> [0.5, 1, 3]; words stay strings, true/false become booleans. */
function parseList(text) {
  return text
    .split(",")
    .map((t) => t.trim())
    .filter((t) => t !== "")
    .map(parseScalar);
}

function parseScalar(text) {
  const t = String(text).trim();
  if (t === "") return null;
  if (t === "true" || t === "false") return t === "true";
  const n = Number(t);
  return Number.isFinite(n) ? n : t;
}

function withoutUndefined(object) {
  return JSON.parse(JSON.stringify(object));
}
