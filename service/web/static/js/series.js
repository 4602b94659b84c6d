// Metric series held by a page: {name: {steps: number[], values: number[]}}, kept sorted by step.
// Live points from the event stream are merged in; a step seen again (a resumed attempt) is overwritten.

export class SeriesStore {
  constructor() {
    this.series = new Map();
  }

  /** Replace everything with a (downsampled) API response's {series}. */
  reset(series) {
    this.series = new Map(
      Object.entries(series ?? {}).map(([name, s]) => [name, { steps: [...s.steps], values: [...s.values] }]),
    );
  }

  /** Merge new points ({series} from an SSE "metrics" event or a since_step fetch). */
  merge(series) {
    for (const [name, incoming] of Object.entries(series ?? {})) {
      const target = this.series.get(name) ?? { steps: [], values: [] };
      this.series.set(name, target);
      for (let i = 0; i < incoming.steps.length; i += 1)
        insertPoint(target, incoming.steps[i], incoming.values[i]);
    }
  }

  get(name) {
    return this.series.get(name);
  }

  names() {
    return [...this.series.keys()];
  }

  /** Largest step of any series (for since_step polling), or null when empty. */
  lastStep() {
    let last = null;
    for (const s of this.series.values()) {
      if (s.steps.length) last = Math.max(last ?? -Infinity, s.steps[s.steps.length - 1]);
    }
    return last;
  }

  longest() {
    let n = 0;
    for (const s of this.series.values()) n = Math.max(n, s.steps.length);
    return n;
  }
}

function insertPoint(target, step, value) {
  const { steps, values } = target;
  const n = steps.length;
  if (n === 0 || step > steps[n - 1]) {
    steps.push(step);
    values.push(value);
    return;
  }
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (steps[mid] < step) lo = mid + 1;
    else hi = mid;
  }
  if (steps[lo] === step) values[lo] = value;
  else {
    steps.splice(lo, 0, step);
    values.splice(lo, 0, value);
  }
}
