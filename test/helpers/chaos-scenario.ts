/**
 * The chaos run, shared by test/chaos.test.ts and `npm run chaos` (bench/chaos.ts): two
 * coordinator processes on one Postgres, SIGKILLed at random moments and restarted, one crash and
 * restart of that Postgres in the middle, and a mix of two-phase messages and sagas sent through
 * both nodes to a real service (test/helpers/chaos-service.ts). When everything settled, the
 * verdict (test/helpers/chaos-verdict.ts) counts what was lost, wrongly delivered, duplicated,
 * left uncompensated or left unfinished.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { Agent } from 'undici';
import type { LocalCluster } from '../services/postgres-cluster.js';
import { startChaosService, type ChaosService } from './chaos-service.js';
import { chaosKinds, chaosVerdict, type ChaosKind, type ChaosVerdict, type ClientRecord } from './chaos-verdict.js';
import { Client } from './chaos-client.js';
import { Nodes, settle } from './chaos-nodes.js';

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

/** A 'slow' saga action takes this long, then answers ONGOING; its saga times out after sagaTimeout. */
const slowMs = 1_000;
const sagaTimeoutSeconds = 3;
/** Prepared-only messages are checked back this soon; messages that are submitted get longer. */
const checkBackSeconds = 2;
const msgTimeoutSeconds = 30;
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
