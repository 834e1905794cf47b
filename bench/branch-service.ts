/**
 * The service side of the benchmark, inside the bench process: a Fastify app with the message's
 * branch (POST /TransIn) and the SDK's query-prepared route. The branch does no work: it notes
 * when the call for a gid arrived and answers SUCCESS, so the figures are the coordinator's.
 */
import Fastify from 'fastify';
import type pg from 'pg';
import { fastifyQueryPrepared } from '../sdk/index.js';

export interface BranchService {
  /** e.g. http://127.0.0.1:40123 */
  url: string;
  /** Resolves with performance.now() at the first branch call for `gid` (call before preparing it). */
  arrival(gid: string, timeoutMs: number): Promise<number>;
  /** Branch calls that came for a gid nobody waited for (duplicates, late arrivals). */
  readonly unexpected: number;
  close(): Promise<void>;
}

interface Waiter {
  resolve: (at: number) => void;
  timer: NodeJS.Timeout;
}

export async function startBranchService(pool: pg.Pool): Promise<BranchService> {
  const waiters = new Map<string, Waiter>();
  let unexpected = 0;
  const app = Fastify({ logger: false });
  app.post<{ Querystring: { gid?: string } }>('/TransIn', async (request, reply) => {
    const at = performance.now();
    const waiter = waiters.get(request.query.gid ?? '');
    if (waiter) {
      waiters.delete(request.query.gid ?? '');
      clearTimeout(waiter.timer);
      waiter.resolve(at);
    } else {
      unexpected++;
    }
    return reply.status(200).send({ dtm_result: 'SUCCESS' });
  });
  app.get('/QueryPrepared', fastifyQueryPrepared(pool));
  const url = await app.listen({ port: 0, host: '127.0.0.1' });

  return {
    url,
    arrival(gid, timeoutMs) {
      return new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(gid);
          reject(new Error(`no branch call for ${gid} within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.set(gid, { resolve, timer });
      });
    },
    get unexpected() {
      return unexpected;
    },
    async close() {
      for (const waiter of waiters.values()) clearTimeout(waiter.timer);
      waiters.clear();
      await app.close();
    },
  };
}
