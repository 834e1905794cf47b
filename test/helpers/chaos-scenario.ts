/**
 * The chaos run, shared by test/chaos.test.ts and `npm run chaos` (bench/chaos.ts): two
 * coordinator processes on one Postgres, SIGKILLed at random moments and restarted, one crash and
 * restart of that Postgres in the middle, and a mix of two-phase messages and sagas sent through
 * both nodes to a real service (test/helpers/chaos-service.ts). When everything settled, the
 * verdict (test/helpers/chaos-verdict.ts) counts what was lost, wrongly delivered, duplicated,
 * left uncompensated or left unfinished.
 */
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { Agent, request } from 'undici';
import type { LocalCluster } from '../services/postgres-cluster.js';
import { startChaosService, type ChaosService } from './chaos-service.js';
import { chaosKinds, chaosVerdict, type ChaosKind, type ChaosVerdict, type ClientRecord } from './chaos-verdict.js';
import { freePort, startCoordinator, type RunningCoordinator } from './coordinator.js';

export interface ChaosOptions {
  transactions: number;
  /** Clients sending at once. */
  concurrency: number;
  /** Transactions started per second at most (undefined: as fast as the clients go). */
  ratePerSecond?: number;
  /** The coordinators' store: a cluster of its own, since it is crashed and restarted. */
  storeCluster: LocalCluster;
  /** A database for the business service, on a server that stays up. */
  serviceDatabaseUrl: string;
  /** A node is killed every min..max seconds while transactions are sent. */
  killEverySeconds: [number, number];
  /** The Postgres crash comes once this fraction of the transactions has started. */
  postgresRestartAt?: number;
  /** Seconds to wait for every transaction to be final once sending ended. */
  settleSeconds: number;
  /** Receives a progress line every few seconds. */
  progress: (line: string) => void;
  progressEverySeconds?: number;
}

export interface ChaosResult extends ChaosVerdict {
  byKind: Record<ChaosKind, number>;
  kills: number;
  postgresRestarts: number;
  /** Client calls that failed (connection refused or reset, timeout, 5xx) and were sent again, to the other node. */
  clientRetries: number;
  /** 409 answers to a retried call whose earlier attempt may have landed (counted as acknowledged). */
  conflictsAfterRetry: number;
  /** Client calls given up after trying both nodes for clientDeadlineMs. */
  gaveUp: number;
  /** 5xx answers by status code. */
  serverErrors: Record<string, number>;
  /** 4xx answers to the clients' valid calls (gid: op, status, body). */
  refused: string[];
  /** Coordinators that exited without being killed (then started again). */
  unexpectedExits: number;
  /** Requests the service received, including those the barrier absorbed. */
  branchCalls: number;
  sendSeconds: number;
  settleSeconds: number;
}

/** Retries, check-backs and lease take-overs in seconds rather than DTM's 10 s and 35 s. */
const coordinatorEnv = {
  CONCORD_LOG_LEVEL: 'error',
  CONCORD_RETRY_INTERVAL: '0.2',
  CONCORD_MAX_RETRY_INTERVAL: '1',
  CONCORD_TIMEOUT_TO_FAIL: '2',
  CONCORD_POLL_INTERVAL: '0.2',
  CONCORD_REQUEST_TIMEOUT: '3',
  CONCORD_MIN_LEASE: '6',
  CONCORD_SHUTDOWN_TIMEOUT: '2',
};

/** A 'slow' saga action takes this long, then answers ONGOING; its saga times out after sagaTimeout. */
const slowMs = 1_000;
const sagaTimeoutSeconds = 3;
/** Prepared-only messages are checked back this soon; messages that are submitted get longer. */
const checkBackSeconds = 2;
const msgTimeoutSeconds = 30;
/** A client gives up on one call after this long (both nodes tried over and over). */
const clientDeadlineMs = 90_000;

/** 100 slots: the share of each kind in the mix, dealt round-robin so that every run has them all. */
const mix: Record<ChaosKind, number> = {
  msg: 30,
  'msg-abort': 5,
  'prepared-success': 10,
  'prepared-failure': 10,
  'saga-ok': 20,
  'saga-fail': 12,
  'saga-timeout': 13,
};
const deck: ChaosKind[] = (() => {
  const slots: ChaosKind[] = [];
  const left = { ...mix };
  while (slots.length < 100)
    for (const kind of chaosKinds)
      if (left[kind] > 0) {
        slots.push(kind);
        left[kind]--;
      }
  return slots;
})();

export async function runChaos(options: ChaosOptions): Promise<ChaosResult> {
  const service = await startChaosService(options.serviceDatabaseUrl, slowMs);
  const nodes = new Nodes(options.storeCluster.url, options.progress);
  const agent = new Agent({ keepAliveTimeout: 10_000, connections: 64 });
  try {
    await Promise.all([nodes.start(0), nodes.start(1)]);
    const clients = new Map<string, ClientRecord>();
    const byKind = Object.fromEntries(chaosKinds.map((k) => [k, 0])) as Record<ChaosKind, number>;
    const stats = {
      started: 0,
      done: 0,
      clientRetries: 0,
      conflictsAfterRetry: 0,
      gaveUp: 0,
      serverErrors: {} as Record<string, number>,
      refused: [] as string[],
      kills: 0,
      postgresRestarts: 0,
    };
    const client = new Client(nodes, agent, stats);
    const runId = Math.random().toString(36).slice(2, 8);
    const began = Date.now();
    let sending = true;

    const progress = setInterval(
      () => {
        const seconds = (Date.now() - began) / 1000;
        options.progress(
          `${stats.done.toLocaleString('en')}/${options.transactions.toLocaleString('en')} sent (${(stats.done / seconds).toFixed(0)} tx/s), ` +
            `kills ${stats.kills}, postgres restarts ${stats.postgresRestarts}, client retries ${stats.clientRetries}`,
        );
      },
      (options.progressEverySeconds ?? 5) * 1000,
    );
    progress.unref();

    const worker = async () => {
      for (;;) {
        const i = stats.started++;
        if (i >= options.transactions) return;
        if (options.ratePerSecond !== undefined) {
          const wait = began + (i / options.ratePerSecond) * 1000 - Date.now();
          if (wait > 0) await delay(wait);
        }
        const kind = deck[i % deck.length]!;
        const gid = `chaos-${runId}-${i}-${kind}`;
        byKind[kind]++;
        const record: ClientRecord = { kind, acknowledged: false };
        clients.set(gid, record);
        record.acknowledged = await send(client, service, gid, kind);
        stats.done++;
      }
    };

    const faults = async () => {
      const restartAt = Math.floor(options.transactions * (options.postgresRestartAt ?? 0.5));
      const [min, max] = options.killEverySeconds;
      let next = Date.now() + (min + Math.random() * (max - min)) * 1000;
      while (sending) {
        await delay(50);
        await nodes.reviveExited();
        if (stats.postgresRestarts === 0 && stats.started >= restartAt) {
          options.progress('crashing Postgres (SIGQUIT), up again in 1 s');
          await options.storeCluster.restart({ crash: true, downMs: 1_000 });
          stats.postgresRestarts++;
          next = Date.now() + min * 1000;
        } else if (Date.now() >= next) {
          await nodes.kill(Math.floor(Math.random() * 2));
          stats.kills++;
          next = Date.now() + (min + Math.random() * (max - min)) * 1000;
        }
      }
      // A run too short to reach the mark still gets its Postgres crash.
      if (stats.postgresRestarts === 0) {
        await options.storeCluster.restart({ crash: true, downMs: 1_000 });
        stats.postgresRestarts++;
      }
    };

    const faulting = faults();
    faulting.catch(() => {}); // awaited below, once the clients are done
    try {
      await Promise.all(Array.from({ length: options.concurrency }, worker));
    } finally {
      sending = false; // also when a client failed: the faults stop before the nodes do
      clearInterval(progress);
      await faulting.catch(() => {});
    }
    await faulting;
    await nodes.reviveExited();
    const sendSeconds = (Date.now() - began) / 1000;
    options.progress(`sent ${stats.done.toLocaleString('en')} in ${sendSeconds.toFixed(0)} s; waiting for every transaction to be final`);

    const settleStarted = Date.now();
    const store = await settle(options.storeCluster.url, options.settleSeconds, options.progress);
    const settleSeconds = (Date.now() - settleStarted) / 1000;
    const verdict = chaosVerdict(clients, store, await service.effects());
    return {
      ...verdict,
      byKind,
      kills: stats.kills,
      postgresRestarts: stats.postgresRestarts,
      clientRetries: stats.clientRetries,
      conflictsAfterRetry: stats.conflictsAfterRetry,
      gaveUp: stats.gaveUp,
      serverErrors: stats.serverErrors,
      refused: stats.refused,
      unexpectedExits: nodes.unexpectedExits,
      branchCalls: service.calls(),
      sendSeconds,
      settleSeconds,
    };
  } finally {
    await nodes.stopAll();
    await agent.close();
    await service.close();
  }
}

/** One transaction as its client sends it; true when the coordinator acknowledged the hand-over. */
async function send(client: Client, service: ChaosService, gid: string, kind: ChaosKind): Promise<boolean> {
  const msg = (timeoutToFail: number) => ({
    gid,
    trans_type: 'msg',
    steps: [{ action: `${service.url}/msg` }, { action: `${service.url}/msg` }],
    payloads: ['{"n":1}', '{"n":2}'],
    query_prepared: `${service.url}/QueryPrepared`,
    timeout_to_fail: timeoutToFail,
  });
  const saga = (modes: string[], timeoutToFail?: number) => ({
    gid,
    trans_type: 'saga',
    steps: modes.map(() => ({ action: `${service.url}/saga/action`, compensate: `${service.url}/saga/compensate` })),
    payloads: modes.map((mode) => JSON.stringify({ mode })),
    timeout_to_fail: timeoutToFail,
  });
  switch (kind) {
    case 'msg': {
      const body = msg(msgTimeoutSeconds);
      if (!(await client.call('prepare', body))) return false;
      if (!(await commit(service, gid))) return (await client.call('abort', body)) && false;
      return client.call('submit', body);
    }
    case 'msg-abort': {
      const body = msg(msgTimeoutSeconds);
      return (await client.call('prepare', body)) && (await client.call('abort', body));
    }
    case 'prepared-success': {
      // Never submitted: the check-back finds the commit and answers SUCCESS.
      const acknowledged = await client.call('prepare', msg(checkBackSeconds));
      if (acknowledged) await commit(service, gid);
      return acknowledged;
    }
    case 'prepared-failure':
      // Never committed nor submitted: the check-back answers FAILURE.
      return client.call('prepare', msg(checkBackSeconds));
    case 'saga-ok':
      return client.call('submit', saga(['ok', 'ok', 'ok']));
    case 'saga-fail':
      return client.call('submit', saga(['ok', 'ok', 'fail']));
    case 'saga-timeout':
      return client.call('submit', saga(['ok', 'ok', 'slow'], sagaTimeoutSeconds));
  }
}

/** The sender's local transaction; false when a check-back came first and decided the message was rolled back. */
async function commit(service: ChaosService, gid: string): Promise<boolean> {
  try {
    await service.commitLocal(gid);
    return true;
  } catch (error) {
    if (/already decided/.test((error as Error).message)) return false;
    throw error;
  }
}

interface ClientStats {
  clientRetries: number;
  conflictsAfterRetry: number;
  gaveUp: number;
  serverErrors: Record<string, number>;
  /** 4xx answers (gid: op, status, body): a coordinator refusing a client's valid call is a finding. */
  refused: string[];
}

/** A client of both nodes: a call that fails or times out goes to the other node, until it is answered. */
class Client {
  constructor(
    private readonly nodes: Nodes,
    private readonly agent: Agent,
    private readonly stats: ClientStats,
  ) {}

  /** True on 200; false on a 4xx (counted as refused) or when the deadline passed. */
  async call(op: 'prepare' | 'submit' | 'abort', body: { gid: string }): Promise<boolean> {
    const deadline = Date.now() + clientDeadlineMs;
    let node = Math.floor(Math.random() * 2);
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await request(`${this.nodes.dtm(node)}/${op}`, {
          dispatcher: this.agent,
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
          signal: AbortSignal.timeout(5_000),
        });
        const text = await res.body.text();
        if (res.statusCode === 200) return true;
        if (res.statusCode === 409 && attempt > 0) {
          // An earlier attempt may have landed and the transaction moved on (a prepare retried
          // after its check-back decided); the verdict judges it from the store.
          this.stats.conflictsAfterRetry++;
          return true;
        }
        if (res.statusCode < 500) {
          this.stats.refused.push(`${body.gid}: ${op} answered ${res.statusCode} ${text.slice(0, 200)}`);
          return false;
        }
        this.stats.serverErrors[res.statusCode] = (this.stats.serverErrors[res.statusCode] ?? 0) + 1;
      } catch {
        // refused, reset or timed out: the node was killed or its store is down
      }
      if (Date.now() > deadline) {
        this.stats.gaveUp++;
        return false;
      }
      this.stats.clientRetries++;
      node = 1 - node;
      await delay(Math.min(50 * 2 ** Math.min(attempt, 5), 1_000));
    }
  }
}

/** The two coordinators, each always on the same port, so that clients keep their URLs across restarts. */
class Nodes {
  private readonly running: (RunningCoordinator | undefined)[] = [undefined, undefined];
  private readonly ports: number[] = [];
  unexpectedExits = 0;

  constructor(
    private readonly store: string,
    private readonly progress: (line: string) => void,
  ) {}

  dtm(i: number): string {
    return `http://127.0.0.1:${this.ports[i]}/api/dtmsvr`;
  }

  async start(i: number): Promise<void> {
    this.ports[i] ??= await freePort();
    for (let attempt = 1; ; attempt++) {
      try {
        this.running[i] = await startCoordinator({ store: this.store, port: this.ports[i], env: coordinatorEnv });
        return;
      } catch (error) {
        // The port of the killed node may linger a moment, or the store be restarting.
        if (attempt >= 10) throw error;
        await delay(500);
      }
    }
  }

  async kill(i: number): Promise<void> {
    await this.running[i]?.stop('SIGKILL');
    await delay(Math.random() * 1_000);
    await this.start(i);
  }

  /** Starts again a node that exited by itself (e.g. when its store went away), and counts it. */
  async reviveExited(): Promise<void> {
    for (const [i, node] of this.running.entries())
      if (node !== undefined && (node.proc.exitCode !== null || node.proc.signalCode !== null)) {
        this.unexpectedExits++;
        this.progress(`node ${i} exited by itself (${node.proc.exitCode ?? node.proc.signalCode}): ${node.output().slice(-500)}`);
        await this.start(i);
      }
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.running.map((node) => node?.stop('SIGKILL') ?? Promise.resolve(null)));
  }
}

/** Waits until no transaction in the store is unfinished (or the time is up); the status of every gid. */
async function settle(storeUrl: string, seconds: number, progress: (line: string) => void): Promise<Map<string, string>> {
  const pool = new pg.Pool({ connectionString: storeUrl, max: 1 });
  try {
    const deadline = Date.now() + seconds * 1000;
    let lastReport = Date.now();
    for (;;) {
      const { rows } = await pool.query<{ n: number }>(
        `select count(*)::int as n from trans_global where status not in ('succeed', 'failed')`,
      );
      const open = rows[0]?.n ?? 0;
      if (open === 0 || Date.now() > deadline) break;
      if (Date.now() - lastReport > 5_000) {
        progress(`${open.toLocaleString('en')} transactions not final yet`);
        lastReport = Date.now();
      }
      await delay(250);
    }
    const { rows } = await pool.query<{ gid: string; status: string }>('select gid, status from trans_global');
    return new Map(rows.map((r) => [r.gid, r.status]));
  } finally {
    await pool.end();
  }
}
