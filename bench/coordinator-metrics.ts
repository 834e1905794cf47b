/**
 * Reads the coordinator's Prometheus metrics (/api/metrics) before and after the measurement
 * window and turns the difference into what explains the throughput: how many requests each
 * group-commit store transaction carried, how long those took, and the API and branch latencies.
 */

/** Sample values by series, e.g. `concord_store_batch_size_sum{kind="prepare"}` → 1234. */
export type Samples = Map<string, number>;

export async function scrapeMetrics(baseUrl: string): Promise<Samples> {
  const res = await fetch(`${baseUrl}/api/metrics`, { signal: AbortSignal.timeout(5_000) });
  if (res.status !== 200) throw new Error(`GET /api/metrics answered ${res.status}`);
  const samples: Samples = new Map();
  for (const line of (await res.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    samples.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return samples;
}

export interface HistogramDelta {
  count: number;
  sum: number;
  /** Cumulative counts by upper bound ("+Inf" last), as Prometheus buckets are. */
  buckets: { le: number; count: number }[];
}

/** The change of one histogram series between two scrapes; `labels` as `kind="prepare"`. */
export function histogramDelta(before: Samples, after: Samples, name: string, labels: string): HistogramDelta {
  const value = (samples: Samples, key: string) => samples.get(key) ?? 0;
  const diff = (key: string) => value(after, key) - value(before, key);
  const buckets: { le: number; count: number }[] = [];
  const prefix = `${name}_bucket{le="`;
  const suffix = `",${labels}}`;
  for (const key of after.keys()) {
    if (!key.startsWith(prefix) || !key.endsWith(suffix)) continue;
    const le = key.slice(prefix.length, key.length - suffix.length);
    buckets.push({ le: le === '+Inf' ? Infinity : Number(le), count: diff(key) });
  }
  buckets.sort((a, b) => a.le - b.le);
  return { count: diff(`${name}_count{${labels}}`), sum: diff(`${name}_sum{${labels}}`), buckets };
}

/** The smallest bucket bound below which at least `q` of the observations fall. */
export function bucketQuantile(h: HistogramDelta, q: number): number {
  const target = q * h.count;
  for (const bucket of h.buckets) if (bucket.count >= target) return bucket.le;
  return Infinity;
}

export interface BatchFigures {
  kind: string;
  /** Store transactions per second. */
  perSecond: number;
  /** Requests per store transaction: mean, and the bucket bound of the 90th percentile. */
  meanSize: number;
  p90SizeAtMost: number;
  /** Mean duration of one store transaction, milliseconds. */
  meanMs: number;
}

export interface CoordinatorFigures {
  batches: BatchFigures[];
  /** Mean server-side duration per API route, milliseconds. */
  routesMs: Record<string, number>;
  /** Mean duration of the coordinator's branch call (as it measured it), milliseconds. */
  branchCallMs: number;
  /**
   * The coordinator's event-loop delay over the window (prom-client resets it at each scrape),
   * milliseconds. Sampled with a 10 ms timer, so an idle loop reads about 10.
   */
  loopDelayMs: { p99: number; max: number };
}

export function coordinatorFigures(before: Samples, after: Samples, seconds: number): CoordinatorFigures {
  const batches = ['prepare', 'submit', 'settle'].map((kind): BatchFigures => {
    const size = histogramDelta(before, after, 'concord_store_batch_size', `kind="${kind}"`);
    const time = histogramDelta(before, after, 'concord_store_batch_seconds', `kind="${kind}"`);
    return {
      kind,
      perSecond: size.count / seconds,
      meanSize: size.count === 0 ? NaN : size.sum / size.count,
      p90SizeAtMost: bucketQuantile(size, 0.9),
      meanMs: time.count === 0 ? NaN : (1000 * time.sum) / time.count,
    };
  });
  const routesMs: Record<string, number> = {};
  for (const route of ['prepare', 'submit']) {
    const h = histogramDelta(before, after, 'concord_http_request_seconds', `route="/api/dtmsvr/${route}"`);
    routesMs[route] = h.count === 0 ? NaN : (1000 * h.sum) / h.count;
  }
  const branch = histogramDelta(before, after, 'concord_branch_call_seconds', 'op="action"');
  const loopDelayMs = {
    p99: 1000 * (after.get('concord_nodejs_eventloop_lag_p99_seconds') ?? NaN),
    max: 1000 * (after.get('concord_nodejs_eventloop_lag_max_seconds') ?? NaN),
  };
  return { batches, routesMs, branchCallMs: branch.count === 0 ? NaN : (1000 * branch.sum) / branch.count, loopDelayMs };
}
