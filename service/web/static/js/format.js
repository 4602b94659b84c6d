// Turning API values into short readable text. Missing values read as an em dash, never as 0.

import { isAccuracy } from "./metrics.js";

export const MISSING = "—";

/** A number to about 4 significant digits (1.234, 0.01234, 1.2e-5, 12345). */
export function formatNumber(value, digits = 4) {
  if (value === null || value === undefined || value === "") return MISSING;
  if (typeof value !== "number") return String(value);
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value) && Math.abs(value) < 1e6) return String(value);
  const magnitude = Math.abs(value);
  if (magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e6)) return value.toExponential(digits - 2);
  return String(Number(value.toPrecision(digits)));
}

/** A fraction in [0, 1] as a percentage with one decimal. */
export function formatPercent(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return MISSING;
  return `${(value * 100).toFixed(1)}%`;
}

/** A metric value: accuracies as percentages, anything else as a number. */
export function formatMetric(name, value) {
  return isAccuracy(name) ? formatPercent(value) : formatNumber(value);
}

/** An ISO timestamp as local date and time ("Nov 25, 2026, 7:35 PM"; short: "Nov 25, 7:35 PM"). */
export function formatTime(iso, { short = false } = {}) {
  if (!iso) return MISSING;
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return String(iso);
  if (short)
    return date.toLocaleString(undefined, {
      month: "short",
      day: "numeric",
      hour: "numeric",
      minute: "2-digit",
    });
  return date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

/** A duration between two ISO timestamps (end defaults to now) as "1h 02m", "3m 05s", "12s". */
export function formatDuration(startIso, endIso) {
  if (!startIso) return MISSING;
  const ms = (endIso ? new Date(endIso) : new Date()) - new Date(startIso);
  if (!Number.isFinite(ms) || ms < 0) return MISSING;
  const seconds = Math.round(ms / 1000);
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h) return `${h}h ${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m ${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}

/** Key parameters as ["mu=1", "temperature=0.5"] (the last dotted part of each name). */
export function paramTexts(params) {
  return Object.entries(params ?? {}).map(([key, value]) => `${key.split(".").pop()}=${formatNumber(value)}`);
}

/** Key parameters as "mu=1 · temperature=0.5". */
export function formatParams(params) {
  return paramTexts(params).join(" · ");
}
