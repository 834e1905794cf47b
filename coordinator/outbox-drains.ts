/**
 * The outbox drains a coordinator runs beside its engine (config `outboxes`), through its relay.
 *
 * Postgres and MySQL/MariaDB tables alike (outbox-db hides the difference: advisory locks or GET_LOCK).
 * A mapping with `partitions: N` is drained as N parts, each behind its own lock, so at
 * most one node publishes a part at a time. Every node running the mapping also holds a shared
 * "member" lock; counting its holders tells each node its share, ceil(N / members). A node takes
 * free parts up to its share, and one holding more than its share (a node joined) hands its highest
 * part over after the batch in hand is marked, so no row is published twice on the way.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { OutboxDrain } from '../relay/outbox/drain.js';
import { checkMapping, type CheckedMapping } from '../relay/outbox/mapping-check.js';
import { isMysqlPool, openOutboxPool, outboxDb, type OutboxPool, type OutboxSession } from '../relay/outbox/outbox-db.js';
import { outboxSql } from '../relay/outbox/outbox-sql.js';
import { logicalNamesIn, slotStatus, type LogicalNames, type SlotStatus } from '../relay/outbox/logical-slot.js';
import { redriveParked, type RedriveResult } from '../relay/outbox/redrive.js';
import type { Relay } from '../relay/publisher.js';
import { outboxParkedTable } from '../schemas/db/outbox.js';
import { isConcordError } from '../schemas/errors.js';
import type { OutboxDrainConfig } from '../schemas/outbox.js';
import type { Metrics } from './metrics.js';

const tickMs = 1_000;

export interface OutboxStatus {
  name: string;
  table: string;
  partitions: number;
  /** Parts this node drains now. */
  held: number[];
  /** Coordinators draining this outbox (holders of its member lock). */
  members: number;
  published: number;
  parked: number;
  /** Seconds since the oldest pending row was written; null when none is pending or unknown. */
  lagSeconds: number | null;
  lagThreshold: number | null;
  /** Why this outbox is not healthy, if it is not. */
  problem: string | null;
  /** Its replication slot (read=logical, or left behind by it), if one exists. */
  slot: SlotStatus | null;
}

export interface ParkedRow {
  rowId: string;
  messageId: string;
  error: string;
  attempts: number;
  parkedAt: string;
  row: unknown;
}

class OutboxRunner {
  readonly name: string;
  checked: CheckedMapping | undefined;
  readonly held = new Set<number>();
  members = 1;
  published = 0;
  parked = 0;
  lag: number | null = null;
  problem: string | null = null;
  slot: SlotStatus | null = null;
  private readonly drains = new Set<OutboxDrain>();
  private readonly counted = new Map<OutboxDrain, { published: number; parked: number }>();
  private member: OutboxSession | undefined;
  private readonly tasks: Promise<void>[] = [];

  constructor(
    readonly config: OutboxDrainConfig,
    readonly pool: OutboxPool,
    private readonly deps: { relay: Relay; logger: Logger; metrics: Metrics; signal: AbortSignal },
  ) {
    this.name = config.name ?? config.table;
  }

  private get share(): number {
    return Math.ceil(this.config.partitions / Math.max(1, this.members));
  }

  start(): void {
    this.tasks.push(this.run());
  }

  async stopped(): Promise<void> {
    await Promise.all(this.tasks);
  }

  private async run(): Promise<void> {
    const { logger, signal } = this.deps;
    // A bad mapping is reported (health, log) and never retried; an unreachable database is retried.
    while (!signal.aborted && !this.checked) {
      try {
        this.checked = await checkMapping(this.pool, this.config);
        this.problem = null;
      } catch (err) {
        this.problem = `outbox ${this.name}: ${(err as Error).message}`;
        logger.error({ err, outbox: this.name }, 'outbox drain cannot start');
        if (isConcordError(err)) return;
        await sleep(tickMs * 5, undefined, { signal }).catch(() => undefined);
      }
    }
    if (!this.checked) return;
    await this.tick();
    const parts = Array.from({ length: this.config.partitions }, (_, index) => this.drainPart(this.checked!, index));
    const ticking = (async () => {
      while (!signal.aborted) {
        await sleep(tickMs, undefined, { signal }).catch(() => undefined);
        if (!signal.aborted) await this.tick();
      }
    })();
    await Promise.all([...parts, ticking]);
    this.count();
    this.member?.release();
  }

  private async drainPart(checked: CheckedMapping, index: number): Promise<void> {
    const { relay, logger, signal } = this.deps;
    const count = this.config.partitions;
    while (!signal.aborted) {
      const drain = new OutboxDrain({
        pool: this.pool,
        mapping: checked,
        relay,
        logger,
        signal,
        partition: { index, count },
        mayTake: () => this.held.size < this.share,
        onLocked: () => this.held.add(index),
        shouldYield: () => this.held.size > this.share && index === Math.max(...this.held),
      });
      this.drains.add(drain);
      try {
        await drain.run();
      } catch (err) {
        if (!signal.aborted) logger.warn({ err, outbox: this.name, partition: index }, 'outbox drain stopped; starting again');
        await sleep(tickMs, undefined, { signal }).catch(() => undefined);
      } finally {
        this.held.delete(index);
        this.count();
        this.drains.delete(drain);
        this.counted.delete(drain);
      }
    }
  }

  /** Adds what the drains published and parked since the last count to the metrics. */
  private count(): void {
    const labels = { outbox: this.name };
    for (const drain of this.drains) {
      const before = this.counted.get(drain) ?? { published: 0, parked: 0 };
      const { published, parked } = drain.stats;
      this.deps.metrics.outboxPublished.inc(labels, published - before.published);
      this.deps.metrics.outboxParked.inc(labels, parked - before.parked);
      this.published += published - before.published;
      this.parked += parked - before.parked;
      this.counted.set(drain, { published, parked });
    }
    this.deps.metrics.outboxPartitionsHeld.set(labels, this.held.size);
  }

  private async tick(): Promise<void> {
    this.count();
    try {
      await this.join();
      const sql = outboxSql(this.checked!);
      if (sql.oldestAge) {
        const { rows } = await outboxDb(this.pool).query<{ age: number | string | null }>(sql.oldestAge, [this.name]);
        const age = rows[0]?.age; // MySQL: a decimal, as a string
        this.lag = age === undefined || age === null ? null : Number(age);
        this.deps.metrics.outboxLag.set({ outbox: this.name }, Math.max(0, this.lag ?? 0));
      }
      await this.checkSlot();
      const threshold = this.config.lagThreshold;
      this.problem =
        threshold !== undefined && this.lag !== null && this.lag > threshold
          ? `outbox ${this.name}: the oldest pending row is ${this.lag.toFixed(1)} s old, over lagThreshold ${threshold} s`
          : null;
    } catch (err) {
      this.problem = `outbox ${this.name}: ${(err as Error).message}`;
      this.member?.release();
      this.member = undefined;
    }
  }

  /** A slot holds WAL whether or not a drain reads it: shown for every Postgres outbox. */
  private async checkSlot(): Promise<void> {
    const db = outboxDb(this.pool);
    if (db.dialect !== 'postgres') return;
    this.names ??= await logicalNamesIn(db, this.name);
    this.slot = (await slotStatus(db, this.names)) ?? null;
    this.deps.metrics.outboxSlotRetained.set({ outbox: this.name }, this.slot?.retainedBytes ?? 0);
    if (this.slot && !this.slot.active && this.config.read !== 'logical' && !this.warned) {
      this.warned = true;
      this.deps.logger.warn(
        { outbox: this.name, slot: this.slot.slot, retainedBytes: this.slot.retainedBytes },
        'outbox: a replication slot left from read=logical holds WAL; drop it with `concord outbox drop-slot`',
      );
    }
  }

  private names: LogicalNames | undefined;
  private warned = false;

  /** Holds the member lock (again, after a lost session) and counts the members. */
  private async join(): Promise<void> {
    if (this.member?.lost()) {
      this.member.release();
      this.member = undefined;
    }
    this.member ??= await outboxDb(this.pool).session();
    this.members = Math.max(1, await this.member.members(`concord_outbox_member:${this.name}`));
  }

  status(): OutboxStatus {
    return {
      name: this.name,
      table: this.config.table,
      partitions: this.config.partitions,
      held: [...this.held].sort((a, b) => a - b),
      members: this.members,
      published: this.published,
      parked: this.parked,
      lagSeconds: this.lag,
      lagThreshold: this.config.lagThreshold ?? null,
      problem: this.problem,
      slot: this.slot,
    };
  }
}

export class OutboxDrains {
  private readonly runners = new Map<string, OutboxRunner>();
  private readonly abort = new AbortController();

  constructor(
    configs: readonly OutboxDrainConfig[],
    private readonly deps: { relay: Relay; logger: Logger; metrics: Metrics },
  ) {
    const logger = deps.logger.child({ component: 'relay.outbox' });
    for (const config of configs) {
      // Per part: its locked session, a read ahead and a few marks in flight.
      const pool = openOutboxPool(config.database, Math.min(64, 2 + 5 * config.partitions));
      if (!isMysqlPool(pool)) pool.on('error', (err) => logger.warn({ err }, 'idle outbox connection lost'));
      const runner = new OutboxRunner(config, pool, { ...deps, logger, signal: this.abort.signal });
      this.runners.set(runner.name, runner);
    }
  }

  start(): void {
    for (const runner of this.runners.values()) runner.start();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    for (const runner of this.runners.values()) {
      await runner.stopped();
      await runner.pool.end();
    }
  }

  /**
   * Why readiness fails, if it does: an outbox with a lagThreshold that is over it, or whose
   * mapping does not fit or whose database does not answer. Without a threshold those show only in
   * the status (GET /api/outboxes) and the log: an outbox a coordinator merely helps with does not
   * take its API out of service.
   */
  problems(): { outbox: string; message: string }[] {
    return [...this.runners.values()].flatMap((r) =>
      r.problem && r.config.lagThreshold !== undefined ? [{ outbox: r.name, message: r.problem }] : [],
    );
  }

  list(): OutboxStatus[] {
    return [...this.runners.values()].map((r) => r.status());
  }

  has(name: string): boolean {
    return this.runners.has(name);
  }

  async parked(name: string, limit: number): Promise<ParkedRow[]> {
    const runner = this.runners.get(name)!;
    const { rows } = await outboxDb(runner.pool).query<{
      row_id: string;
      message_id: string;
      error: string;
      attempts: number;
      parked_at: Date;
      row_data: unknown;
    }>(
      `select row_id, message_id, error, attempts, parked_at, row_data from ${outboxParkedTable}
       where drain = $1 order by parked_at, row_id limit $2`,
      [name, limit],
    );
    return rows.map((r) => ({
      rowId: r.row_id,
      messageId: r.message_id,
      error: r.error,
      attempts: r.attempts,
      parkedAt: r.parked_at.toISOString(),
      // MariaDB's json is longtext: it comes back as a string.
      row: typeof r.row_data === 'string' ? (JSON.parse(r.row_data) as unknown) : r.row_data,
    }));
  }

  async redrive(name: string, ids: string[] | undefined): Promise<RedriveResult> {
    const runner = this.runners.get(name)!;
    const checked = runner.checked ?? (await checkMapping(runner.pool, runner.config));
    return redriveParked(runner.pool, checked, this.deps.relay, ids ? { ids } : {});
  }
}
