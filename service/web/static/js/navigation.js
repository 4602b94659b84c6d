// Links and moves between pages: views build hash URLs here, so none of them imports the router (which
// loads the views).

/** "#/runs?status=failed" from a path and a plain object (empty values are dropped). */
export function hashFor(path, query = {}) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== "") params.set(key, String(value));
  }
  const qs = params.toString();
  return `#${path}${qs ? `?${qs}` : ""}`;
}

export function navigate(path, query = {}) {
  window.location.hash = hashFor(path, query);
}

/** Rewrite the current URL's query in place (no re-render, no history entry): for filters and tabs. */
export function replaceQuery(path, query = {}) {
  window.history.replaceState(null, "", hashFor(path, query));
}
