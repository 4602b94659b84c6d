// Building DOM nodes. Text always goes in as text nodes, never as HTML, so API data cannot inject markup.

/**
 * Create an element: h("a", {href: "#/runs", class: "link"}, "Runs").
 * Props: "class", "dataset" (object), "on<event>" (listener), booleans (true sets, false/null omits),
 * anything else becomes an attribute. Children: nodes, strings, numbers, arrays, null (skipped).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/** Append children (nested arrays, strings, numbers, nodes; null/undefined/false are skipped). */
export function append(parent, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replace all children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

let idCounter = 0;

/** A page-unique id for label/input and aria-describedby pairs. */
export function uid(prefix = "id") {
  idCounter += 1;
  return `${prefix}-${idCounter}`;
}

/** Say something to screen readers through the page's polite live region. */
export function announce(message) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  // A fresh text node after a tick makes repeated identical messages be read again.
  setTimeout(() => {
    region.textContent = message;
  }, 50);
}

/** Replace the children of `el`; focus follows to the new element with the focused one's data-key. */
export function replaceKeepingFocus(el, ...children) {
  const focused = el.contains(document.activeElement) ? document.activeElement : null;
  const key = focused?.dataset?.key;
  replace(el, ...children);
  if (key) el.querySelector(`[data-key="${CSS.escape(key)}"]`)?.focus({ preventScroll: true });
  return el;
}
