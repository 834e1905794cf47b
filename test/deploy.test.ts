/**
 * The Prometheus alert rules and the Grafana dashboard in deploy/ name only metrics a coordinator
 * really exports: every metric name in their PromQL is looked up in a live /api/metrics.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { startCoordinator, type RunningCoordinator } from './helpers/coordinator.js';

let coordinator: RunningCoordinator;
/** Sample names the coordinator exports, histograms with their _bucket, _sum and _count series. */
let exported: Set<string>;

beforeAll(async () => {
  coordinator = await startCoordinator({ store: mkdtempSync(join(tmpdir(), 'concord-deploy-')) });
  const text = await (await fetch(`${coordinator.url}/api/metrics`)).text();
  exported = new Set();
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    exported.add(name!);
    if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) exported.add(`${name}${suffix}`);
  }
});
afterAll(async () => {
  expect(await coordinator?.stop()).toBe(0);
});

/** PromQL words that are not metric names. */
const promqlWords = new Set(
  [
    'sum min max avg count stddev stdvar topk bottomk quantile count_values group',
    'rate irate increase delta idelta deriv predict_linear histogram_quantile absent absent_over_time',
    'avg_over_time min_over_time max_over_time sum_over_time count_over_time last_over_time',
    'abs ceil floor round clamp clamp_min clamp_max scalar vector time timestamp label_replace label_join sort sort_desc',
    'by without on ignoring group_left group_right and or unless bool offset inf nan',
  ]
    .join(' ')
    .split(' '),
);

/** The metric names an expression selects: what is left once strings, label matchers, groupings, ranges and numbers are taken out. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ');
  const words = bare.match(/[A-Za-z_:][A-Za-z0-9_:]*/g) ?? [];
  return [...new Set(words.filter((w) => !promqlWords.has(w.toLowerCase())))];
}

function ruleExpressions(): string[] {
  const file = parse(readFileSync(new URL('../deploy/prometheus/alerts.yml', import.meta.url), 'utf8')) as {
    groups: { rules: { alert?: string; expr: string }[] }[];
  };
  return file.groups.flatMap((g) => g.rules.map((r) => r.expr));
}

function dashboardExpressions(): string[] {
  const dashboard = JSON.parse(readFileSync(new URL('../deploy/grafana/concord.json', import.meta.url), 'utf8')) as {
    panels: { targets?: { expr: string }[] }[];
  };
  return dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
}

describe('deploy/', () => {
  it('reads metric names out of PromQL', () => {
    expect(
      metricNames('histogram_quantile(0.99, sum by (le) (rate(concord_store_batch_seconds_bucket{kind="settle"}[5m]))) > 0.5'),
    ).toEqual(['concord_store_batch_seconds_bucket']);
    expect(metricNames('sum(rate(a_total{x=~"5.."}[5m])) / sum(rate(b_total[5m])) > 0.1')).toEqual(['a_total', 'b_total']);
  });

  it('alert rules use only metrics the coordinator exports', () => {
    const expressions = ruleExpressions();
    expect(expressions.length).toBeGreaterThanOrEqual(8);
    for (const expr of expressions) {
      const names = metricNames(expr);
      expect(names.length, expr).toBeGreaterThan(0);
      for (const name of names) expect(exported, `${name} in ${expr}`).toContain(name);
    }
  });

  it('the Grafana dashboard uses only metrics the coordinator exports', () => {
    const expressions = dashboardExpressions();
    expect(expressions.length).toBeGreaterThanOrEqual(10);
    for (const expr of expressions) {
      const names = metricNames(expr);
      expect(names.length, expr).toBeGreaterThan(0);
      for (const name of names) expect(exported, `${name} in ${expr}`).toContain(name);
    }
  });
});
