/**
 * Readiness beyond "the store answers": stalled delivery (stalledAfter), broker connections that
 * are down, outbox drains past their lagThreshold. It keeps the gauges of each current, and a
 * timer sends an alert when a condition begins and when it ends, so an operator hears of it even
 * if nobody probes /api/health, and tries to reopen broker connections that are down.
 */
import type { Logger } from 'pino';
import type { Config } from '../schemas/config.js';
import type { Relay } from '../relay/publisher.js';
import { sendAlert, type ConditionAlert } from './engine/alert.js';
import type { Metrics } from './metrics.js';
import type { OutboxDrains } from './outbox-drains.js';
import type { Database } from './store/database.js';
import { stalledWork } from './store/stalled-work.js';

/** A check answers from the last one younger than this: probes and scrapes then cost one query a second at most. */
const freshMs = 1_000;

export interface HealthWatchDeps {
  config: Config;
  database: Database;
  relay: Relay;
  metrics: Metrics;
  logger: Logger;
  nodeId: string;
  outboxes?: OutboxDrains | undefined;
}

type Condition = Omit<ConditionAlert, 'resolved'>;

export class HealthWatch {
  private last: { at: number; conditions: Promise<Condition[]> } | undefined;
  /** Conditions alerted and not yet resolved, by kind and subject. */
  private readonly active = new Map<string, Condition>();
  private readonly parked = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;
  /** A round of reconnects is under way: a connect to a broker that is down can outlast a tick. */
  private reconnecting = false;

  constructor(private readonly deps: HealthWatchDeps) {}

  start(): void {
    const every = Math.min(5, this.deps.config.stalledAfter > 0 ? this.deps.config.stalledAfter / 2 : 5);
    this.timer = setInterval(() => void this.tick(), Math.max(0.1, every) * 1000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Why this node is not ready, one reason per problem; none: ready. */
  async problems(): Promise<string[]> {
    const problems = (await this.conditions()).map((c) => c.message);
    this.deps.metrics.ready.set(problems.length === 0 ? 1 : 0);
    return problems;
  }

  private async conditions(): Promise<Condition[]> {
    const { config, relay, metrics, outboxes } = this.deps;
    const found = config.stalledAfter > 0 ? [...(await this.stalled())] : [];
    // Broker states and drain lags are in memory: read each time, so a change shows at once.
    for (const c of relay.connections()) {
      metrics.brokerUp.set({ kind: c.kind, connection: c.name }, c.up ? 1 : 0);
      if (!c.up)
        found.push({ kind: 'broker_down', subject: `${c.kind}/${c.name}`, message: `${c.kind} connection ${c.name} is down: ${c.error}` });
    }
    for (const { outbox, message } of outboxes?.problems() ?? []) found.push({ kind: 'drain_lag', subject: `outbox ${outbox}`, message });
    return found;
  }

  /** Stalled work, from a store query made at most once a second. */
  private stalled(): Promise<Condition[]> {
    if (!this.last || performance.now() - this.last.at > freshMs) {
      const conditions = this.measureStalled();
      conditions.catch(() => undefined);
      this.last = { at: performance.now(), conditions };
    }
    return this.last.conditions;
  }

  private async measureStalled(): Promise<Condition[]> {
    const { config, database, metrics } = this.deps;
    const found: Condition[] = [];
    const work = await stalledWork(database);
    metrics.dueOverdue.set(work.overdueSeconds);
    metrics.oldestFailing.set(work.failingSeconds);
    const limit = config.stalledAfter;
    if (work.overdueSeconds > limit) {
      const message = `delivery stalled: due work has waited ${work.overdueSeconds.toFixed(0)} s unclaimed (gid ${work.overdueGid}), over stalledAfter ${limit} s`;
      found.push({ kind: 'stalled', subject: 'overdue', message });
    }
    if (work.failingSeconds > limit) {
      const message = `delivery stalled: transaction ${work.failingGid} is ${work.failingSeconds.toFixed(0)} s old and its last attempt failed, over stalledAfter ${limit} s`;
      found.push({ kind: 'stalled', subject: 'failing', message });
    }
    return found;
  }

  /** Alerts on conditions that began or ended since the last tick, and on newly parked outbox rows. */
  private async tick(): Promise<void> {
    const { logger, relay } = this.deps;
    if (!this.reconnecting) {
      this.reconnecting = true;
      void relay.reconnectDown().finally(() => (this.reconnecting = false));
    }
    let now: Condition[];
    try {
      now = await this.problemsFresh();
    } catch (err) {
      logger.warn({ err }, 'health check failed');
      return;
    }
    const seen = new Set<string>();
    for (const c of now) {
      const key = `${c.kind} ${c.subject}`;
      seen.add(key);
      if (this.active.has(key)) continue;
      this.active.set(key, c);
      logger.warn({ kind: c.kind, subject: c.subject }, c.message);
      sendAlert(this.deps, { ...c, resolved: false });
    }
    for (const [key, c] of this.active) {
      if (seen.has(key)) continue;
      this.active.delete(key);
      logger.info({ kind: c.kind, subject: c.subject }, 'condition resolved');
      sendAlert(this.deps, { ...c, resolved: true, message: `resolved: ${c.message}` });
    }
    for (const outbox of this.deps.outboxes?.list() ?? []) {
      const before = this.parked.get(outbox.name) ?? 0;
      this.parked.set(outbox.name, outbox.parked);
      if (outbox.parked > before) {
        const message = `outbox ${outbox.name}: ${outbox.parked - before} row(s) parked (undeliverable as they are; see GET /api/outboxes/${outbox.name}/parked)`;
        sendAlert(this.deps, { kind: 'parked', resolved: false, subject: outbox.name, message });
      }
    }
  }

  private async problemsFresh(): Promise<Condition[]> {
    const conditions = await this.conditions();
    this.deps.metrics.ready.set(conditions.length === 0 ? 1 : 0);
    return conditions;
  }
}
