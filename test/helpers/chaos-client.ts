/** The chaos run's clients: plain DTM calls to either coordinator, sent again to the other one until answered. */
import { setTimeout as delay } from 'node:timers/promises';
import { request, type Agent } from 'undici';
import type { Nodes } from './chaos-nodes.js';

/** A client gives up on one call after this long (both nodes tried over and over). */
const clientDeadlineMs = 90_000;

export interface ClientStats {
  clientRetries: number;
  conflictsAfterRetry: number;
  gaveUp: number;
  serverErrors: Record<string, number>;
  /** 4xx answers (gid: op, status, body): a coordinator refusing a client's valid call is a finding. */
  refused: string[];
}

/** A client of both nodes: a call that fails or times out goes to the other node, until it is answered. */
export class Client {
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
