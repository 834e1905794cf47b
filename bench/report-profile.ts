/** The profile tables: where a message's time goes, Postgres activity, the coordinator's group commit. */
import type { DatabaseActivity } from './postgres-activity.js';
import { fixed, table } from './markdown.js';
import type { Row } from './report.js';

/** The load of a row as its tables print it: the closed loop's workers, or the open loop's rate. */
export function loadOf(r: Pick<Row, 'concurrency' | 'openLoop'>): string {
  return r.openLoop ? `open loop, ${fixed(r.openLoop.targetPerSecond, 0)}/s` : String(r.concurrency);
}

/** The coordinator's group commit: requests per store transaction, how many per second, how long. */
export function batchTable(rows: Row[]): string {
  const batch = (r: Row, kind: string) => {
    const b = r.coordinator.batches.find((x) => x.kind === kind);
    return b === undefined
      ? '–'
      : `${fixed(b.meanSize, 1)} (p90 ≤ ${fixed(b.p90SizeAtMost, 0)}), ${fixed(b.perSecond, 0)}/s, ${fixed(b.meanMs, 1)} ms`;
  };
  return table(
    ['store', 'concurrency', 'prepare batches: size (p90), rate, time', 'submit batches', 'settle batches'],
    rows.map((r) => [r.store, loadOf(r), batch(r, 'prepare'), batch(r, 'submit'), batch(r, 'settle')]),
  );
}

/** Where a message's time goes: the client's view of each step beside the coordinator's own timings. */
export function latencyTable(rows: Row[]): string {
  return table(
    [
      'store',
      'concurrency',
      'client: prepare ms',
      'client: local tx + submit ms',
      'client: submit → branch ms',
      'coordinator: HTTP prepare / submit ms',
      'coordinator: branch call ms',
      'coordinator: event-loop delay p99 / max ms',
    ],
    rows.map((r) => [
      r.store,
      loadOf(r),
      fixed(r.phasesMs.prepare, 1),
      fixed(r.phasesMs.localTxSubmit, 1),
      fixed(r.phasesMs.branchWait, 1),
      `${fixed(r.coordinator.routesMs.prepare, 1)} / ${fixed(r.coordinator.routesMs.submit, 1)}`,
      fixed(r.coordinator.branchCallMs, 1),
      `${fixed(r.coordinator.loopDelayMs.p99, 0)} / ${fixed(r.coordinator.loopDelayMs.max, 0)}`,
    ]),
  );
}

/** Commits per message and what Postgres sessions waited for, per database. */
export function postgresTable(rows: Row[]): string {
  const perMsg = (r: Row, a: DatabaseActivity | undefined) => (a === undefined ? '–' : fixed(a.commits / r.completed, 2));
  const sessions = (a: DatabaseActivity | undefined) =>
    a === undefined
      ? '–'
      : [a.sessions.running, a.sessions.io, a.sessions.lock, a.sessions.idleInTransaction].map((v) => fixed(v, 1)).join(' / ');
  return table(
    [
      'store',
      'concurrency',
      'commits per msg: service DB',
      'store DB',
      'service DB sessions: running / IO / lock / idle in tx',
      'store DB sessions: running / IO / lock / idle in tx',
    ],
    rows.map((r) => [
      r.store,
      loadOf(r),
      perMsg(r, r.postgres.service),
      perMsg(r, r.postgres.store),
      sessions(r.postgres.service),
      sessions(r.postgres.store),
    ]),
  );
}
