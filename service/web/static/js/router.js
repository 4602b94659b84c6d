// Hash routing: "#/runs/12?tab=logs" -> {path: "/runs/12", query: URLSearchParams}. Each view module
// exports render(ctx); a ViewContext lets it fetch, poll and stream until the user navigates away.
// Views build their links with navigation.js: the router loads the views, never the other way.

export const ROUTES = [
  { pattern: /^\/runs$/, nav: "runs", load: () => import("./views/runs.js") },
  { pattern: /^\/runs\/(\d+)$/, nav: "runs", load: () => import("./views/run.js") },
  { pattern: /^\/sweeps$/, nav: "sweeps", load: () => import("./views/sweeps.js") },
  { pattern: /^\/sweeps\/(\d+)$/, nav: "sweeps", load: () => import("./views/sweep.js") },
  { pattern: /^\/compare$/, nav: "compare", load: () => import("./views/compare.js") },
  { pattern: /^\/submit$/, nav: "submit", load: () => import("./views/submit.js") },
  { pattern: /^\/cluster$/, nav: "cluster", load: () => import("./views/cluster.js") },
];

export function currentLocation() {
  const raw = window.location.hash.replace(/^#/, "");
  const [path, qs = ""] = raw.split("?");
  return { path: path || "/runs", query: new URLSearchParams(qs) };
}

export function matchRoute(path) {
  for (const route of ROUTES) {
    const match = route.pattern.exec(path);
    if (match) return { route, params: match.slice(1) };
  }
  return null;
}

/** What a view gets: its root element, route params, query, session, and cleanup-aware helpers. */
export class ViewContext {
  constructor({ root, path, params, query, session }) {
    this.root = root;
    this.path = path;
    this.params = params;
    this.query = query;
    this.session = session;
    this.controller = new AbortController();
    this.cleanups = [];
  }

  /** Aborted when the user leaves the view: pass it to api() so stale responses are dropped. */
  get signal() {
    return this.controller.signal;
  }

  get disposed() {
    return this.controller.signal.aborted;
  }

  onCleanup(fn) {
    this.cleanups.push(fn);
  }

  /** Run fn every `ms` (after the previous run finished) until the view is left; skipped while hidden. */
  poll(ms, fn) {
    let timer = null;
    const tick = async () => {
      if (this.disposed) return;
      if (!document.hidden) {
        try {
          await fn();
        } catch (error) {
          if (error?.name !== "AbortError") console.warn("poll failed", error);
        }
      }
      if (!this.disposed) timer = setTimeout(tick, ms);
    };
    timer = setTimeout(tick, ms);
    this.onCleanup(() => clearTimeout(timer));
  }

  dispose() {
    this.controller.abort();
    for (const fn of this.cleanups.splice(0)) {
      try {
        fn();
      } catch (error) {
        console.warn("cleanup failed", error);
      }
    }
  }
}
