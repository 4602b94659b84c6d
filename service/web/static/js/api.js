// The REST client: JSON in and out of /api, cookie auth, one error type. A 401 anywhere signals the app
// (event "mmae:unauthorized"), which shows the login form; nothing is shown without a valid token.

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : `request failed (${status})`);
    this.status = status;
    this.detail = detail;
  }

  /** FastAPI validation errors: [{loc: [...], msg, type}], or [] when this is another kind of error. */
  get fieldErrors() {
    return Array.isArray(this.detail) ? this.detail : [];
  }
}

/**
 * Call the API: api("/jobs", {query: {limit: 50}}), api("/jobs", {method: "POST", body: {...}}).
 * Resolves to the parsed JSON body (null for an empty body); rejects with ApiError.
 */
export async function api(
  path,
  { method = "GET", body, query, headers = {}, signal, quiet401 = false } = {},
) {
  const init = {
    method,
    credentials: "same-origin",
    signal,
    headers: { Accept: "application/json", ...headers },
  };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(apiUrl(path, query), init);
  const text = await response.text();
  const data = text ? parseJson(text) : null;
  if (response.status === 401 && !quiet401) window.dispatchEvent(new CustomEvent("mmae:unauthorized"));
  if (!response.ok) throw new ApiError(response.status, data?.detail ?? (text || response.statusText));
  return data;
}

/** "/api" + path + query string (empty and null query values are left out). */
export function apiUrl(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value !== null && value !== undefined && value !== "") params.set(key, String(value));
  }
  const qs = params.toString();
  return `/api${path}${qs ? `?${qs}` : ""}`;
}

/** A one-line message for any error a view catches. */
export function errorMessage(error) {
  if (error instanceof ApiError) {
    if (error.fieldErrors.length)
      return error.fieldErrors.map((e) => `${e.loc.join(".")}: ${e.msg}`).join("; ");
    return error.message;
  }
  return error?.message ?? String(error);
}

/** True for the error fetch raises when a view is left and its requests are aborted. */
export function isAbort(error) {
  return error?.name === "AbortError";
}

function parseJson(text) {
  try {
    return JSON.parse(text);
  } catch {
    return { detail: text };
  }
}
