// Forms for request bodies: fields built from the TrainConfig JSON schema (GET /api/config/schema), values
// read back into JSON, and the server's 422 errors (detail[].loc) shown next to the field they name.
//
// Every field carries data-loc, the JSON of its location without "body" (e.g. ["config","loss","mu"]);
// an error is shown at the deepest element whose data-loc is a prefix of the error's loc.

import { h } from "./dom.js";

const TOP_FIELDS_TITLE = "Run";

/** Fieldsets for a TrainConfig at `prefix` (["config"] or ["base_config"]) filled from `values`. */
export function configFieldsets(schema, prefix, values) {
  const top = [];
  const sections = [];
  for (const [key, prop] of Object.entries(schema.properties ?? {})) {
    const ref = refOf(prop);
    if (ref) {
      const section = schema.$defs?.[ref] ?? {};
      const defaults = prop.default ?? {};
      const fields = Object.entries(section.properties ?? {}).map(([name, sub]) =>
        field([...prefix, key, name], sub, pick(values?.[key], name, defaults[name])),
      );
      sections.push(sectionBox([...prefix, key], key, fields, hasAny(values?.[key])));
    } else {
      top.push(field([...prefix, key], prop, pick(values, key, prop.default)));
    }
  }
  return [sectionBox(prefix, TOP_FIELDS_TITLE, top, true), ...sections];
}

function pick(values, key, fallback) {
  return values && Object.hasOwn(values, key) ? values[key] : fallback;
}

function hasAny(values) {
  return Boolean(values && Object.keys(values).length);
}

function refOf(prop) {
  const ref = prop.$ref ?? prop.allOf?.[0]?.$ref;
  return ref ? ref.split("/").pop() : null;
}

function sectionBox(loc, title, fields, open) {
  return h(
    "details",
    { class: "config-section", open, "data-loc": JSON.stringify(loc) },
    h("summary", {}, title),
    h("p", { class: "field-error section-error", id: `${locId(loc)}-error`, hidden: true }),
    h("div", { class: "form-grid" }, fields),
  );
}

/** One labelled control for a schema property; the control keeps the schema type for reading back. */
export function field(loc, prop, value) {
  const { type, nullable, options } = describe(prop);
  const id = locId(loc);
  const name = loc[loc.length - 1];
  const errorId = `${id}-error`;
  const hintId = `${id}-hint`;
  const common = {
    id,
    name: loc.join("."),
    "data-type": type,
    "data-nullable": nullable,
    "aria-describedby": `${hintId} ${errorId}`,
  };
  let control;
  if (type === "boolean") {
    control = h("input", { ...common, type: "checkbox", checked: value === true });
  } else if (options) {
    control = h(
      "select",
      common,
      nullable ? h("option", { value: "", selected: value === null }, "(none)") : null,
      options.map((o) => h("option", { value: o, selected: o === value }, o)),
    );
  } else {
    const numeric = type === "integer" || type === "number";
    control = h("input", {
      ...common,
      type: "text",
      inputmode: numeric ? (type === "integer" ? "numeric" : "decimal") : null,
      value: value === null || value === undefined ? "" : String(value),
      placeholder: nullable ? "none" : null,
      autocomplete: "off",
      spellcheck: "false",
    });
  }
  return h(
    "div",
    { class: `field${type === "boolean" ? " check" : ""}`, "data-loc": JSON.stringify(loc) },
    type === "boolean" ? [control, h("label", { for: id }, name)] : [h("label", { for: id }, name), control],
    h("p", { class: "hint", id: hintId }, hint(prop, type, nullable)),
    h("p", { class: "field-error", id: errorId, hidden: true }),
  );
}

/** Schema property -> {type, nullable, options}, for anyOf [{...}, {type: "null"}] too. */
function describe(prop) {
  const variants = prop.anyOf ?? [prop];
  const nullable = variants.some((v) => v.type === "null");
  const main = variants.find((v) => v.type !== "null") ?? {};
  const options = main.enum ?? (main.const !== undefined ? [main.const] : null);
  return { type: main.type ?? "string", nullable, options, bounds: main };
}

function hint(prop, type, nullable) {
  const { bounds } = describe(prop);
  const parts = [type];
  if (bounds.minimum !== undefined) parts.push(`≥ ${bounds.minimum}`);
  if (bounds.exclusiveMinimum !== undefined) parts.push(`> ${bounds.exclusiveMinimum}`);
  if (bounds.maximum !== undefined) parts.push(`≤ ${bounds.maximum}`);
  if (bounds.exclusiveMaximum !== undefined) parts.push(`< ${bounds.exclusiveMaximum}`);
  if (nullable) parts.push("or empty");
  if (prop.default !== undefined) parts.push(`default ${prop.default === null ? "none" : prop.default}`);
  return parts.join(", ");
}

/** Read every field under `root` whose loc starts with `prefix` into a nested object. */
export function readFields(root, prefix) {
  const out = {};
  for (const box of root.querySelectorAll(".field[data-loc]")) {
    const loc = JSON.parse(box.dataset.loc);
    if (!startsWith(loc, prefix)) continue;
    const control = box.querySelector("input, select");
    if (!control?.dataset.type) continue;
    const value = readControl(control);
    if (value === undefined) continue;
    let node = out;
    for (const part of loc.slice(prefix.length, -1)) node = node[part] ??= {};
    node[loc[loc.length - 1]] = value;
  }
  return out;
}

/** A control's value in its schema type; text that does not parse is sent as typed so the server names it. */
export function readControl(control) {
  const { type } = control.dataset;
  const nullable = control.dataset.nullable !== undefined;
  if (type === "boolean") return control.checked;
  const raw = control.value.trim();
  if (raw === "") return nullable ? null : undefined;
  if (type === "integer" || type === "number") {
    const n = Number(raw);
    if (!Number.isFinite(n) || (type === "integer" && !Number.isInteger(n))) return raw;
    return n;
  }
  return raw;
}

function startsWith(loc, prefix) {
  return prefix.every((part, i) => loc[i] === part);
}

export function locId(loc) {
  return `f-${loc.join("-").replace(/[^A-Za-z0-9_-]/g, "_")}`;
}

/** Remove all error messages and invalid marks under root. */
export function clearErrors(root) {
  for (const el of root.querySelectorAll(".field-error")) {
    el.textContent = "";
    el.hidden = true;
  }
  for (const el of root.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  root.querySelector(".error-summary")?.remove();
}

/**
 * Show FastAPI validation errors next to their fields, plus a summary at the top of the form that links
 * to each. Returns the number of errors shown.
 */
export function showErrors(form, detail) {
  clearErrors(form);
  const items = [];
  for (const error of detail) {
    const loc = (error.loc ?? []).filter((part, i) => !(i === 0 && part === "body"));
    const target = findTarget(form, loc);
    const message = error.msg ?? String(error);
    const where = loc.join(".") || "request";
    if (target) {
      const slot = target.querySelector(":scope > .field-error") ?? target.querySelector(".field-error");
      slot.textContent = slot.textContent ? `${slot.textContent} ${message}` : message;
      slot.hidden = false;
      const control = target.matches(".field") ? target.querySelector("input, select, textarea") : null;
      control?.setAttribute("aria-invalid", "true");
      for (let el = target; el && el !== form; el = el.parentElement)
        if (el.tagName === "DETAILS") el.open = true;
      items.push({ where, message, focus: control ?? target.querySelector("summary") ?? target });
    } else {
      items.push({ where, message, focus: null });
    }
  }
  const summary = h(
    "div",
    { class: "notice error error-summary", role: "alert", tabindex: "-1" },
    h(
      "p",
      {},
      h("strong", {}, items.length === 1 ? "There is a problem:" : `There are ${items.length} problems:`),
    ),
    h(
      "ul",
      {},
      items.map(({ where, message, focus }) =>
        h(
          "li",
          {},
          focus
            ? h(
                "button",
                { type: "button", class: "link-button", onclick: () => focus.focus() },
                h("code", {}, where),
              )
            : h("code", {}, where),
          ` ${message}`,
        ),
      ),
    ),
  );
  form.prepend(summary);
  summary.focus();
  return items.length;
}

function findTarget(form, loc) {
  for (let n = loc.length; n > 0; n -= 1) {
    const key = JSON.stringify(loc.slice(0, n));
    const el = [...form.querySelectorAll("[data-loc]")].find((node) => node.dataset.loc === key);
    if (el) return el;
  }
  return null;
}

/** A labelled plain input outside the schema (name, priority, tags...), with its error slot. */
export function plainField(loc, label, value, { type = "string", nullable = false, help = "" } = {}) {
  const id = locId(loc);
  const control = h("input", {
    id,
    name: loc.join("."),
    type: "text",
    inputmode: type === "integer" ? "numeric" : type === "number" ? "decimal" : null,
    "data-type": type,
    "data-nullable": nullable,
    value: value === null || value === undefined ? "" : String(value),
    autocomplete: "off",
    "aria-describedby": `${id}-hint ${id}-error`,
  });
  return h(
    "div",
    { class: "field", "data-loc": JSON.stringify(loc) },
    h("label", { for: id }, label),
    control,
    h("p", { class: "hint", id: `${id}-hint` }, help),
    h("p", { class: "field-error", id: `${id}-error`, hidden: true }),
  );
}

/** A labelled select outside the schema. */
export function selectField(loc, label, options, value) {
  const id = locId(loc);
  return h(
    "div",
    { class: "field", "data-loc": JSON.stringify(loc) },
    h("label", { for: id }, label),
    h(
      "select",
      { id, name: loc.join("."), "data-type": "string", "aria-describedby": `${id}-error` },
      options.map((o) => h("option", { value: o, selected: o === value }, o)),
    ),
    h("p", { class: "field-error", id: `${id}-error`, hidden: true }),
  );
}

/** A random Idempotency-Key (works outside secure contexts, unlike crypto.randomUUID). */
export function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}
