/** Operations endpoints: DTM's ping, a health check that tests the store, metrics, OpenAPI. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorReplySchema } from '../../schemas/dtm.js';
import { ConcordError } from '../../schemas/errors.js';
import type { Metrics } from '../metrics.js';

/** What the health check asks of the store. */
export interface StoreProbe {
  readonly kind: 'pglite' | 'postgres';
  ping(): Promise<void>;
}

export interface OpsRoutesOptions {
  database: StoreProbe;
  metrics: Metrics;
  /** Reasons readiness fails besides the store (health-watch.ts); none: ready. */
  notReady?: () => Promise<string[]>;
}

const healthTimeoutMs = 2_000;

export const opsRoutes: FastifyPluginAsyncZod<OpsRoutesOptions> = async (app, { database, metrics, notReady }) => {
  // Liveness and readiness stay open (orchestrators probe without secrets); metrics and the rest ask for a token.
  const open = { access: 'open' } as const;
  app.all(
    '/ping',
    {
      config: open,
      schema: {
        summary: 'Liveness, as DTM answers it, to any method.',
        // 400: a method that carries a body (QUERY) without a Content-Type.
        response: { 200: z.object({ msg: z.literal('pong') }), 400: errorReplySchema },
      },
    },
    async () => ({
      msg: 'pong' as const,
    }),
  );

  app.get(
    '/health',
    {
      config: open,
      schema: {
        summary:
          'Readiness: 200 when the store answers, no due work is stalled past stalledAfter, every broker connection in use is up and no outbox drain lags past its lagThreshold; 503 with every reason otherwise.',
        response: { 200: z.object({ status: z.literal('ok'), store: z.string() }), 503: errorReplySchema },
      },
    },
    async () => {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error('store ping timed out')), healthTimeoutMs);
      });
      try {
        await Promise.race([database.ping(), timeout]);
      } catch (cause) {
        throw new ConcordError('STORE_UNAVAILABLE', `store unreachable: ${(cause as Error).message}`, { cause });
      } finally {
        clearTimeout(timer);
      }
      const problems = (await notReady?.()) ?? [];
      if (problems.length > 0) throw new ConcordError('NOT_READY', problems.join('; '));
      return { status: 'ok' as const, store: database.kind };
    },
  );

  app.get('/metrics', { schema: { summary: 'Prometheus metrics.' } }, async (_request, reply) => {
    // The readiness checks set the gauges of stalled work and broker connections: a scrape sees them current.
    await notReady?.().catch(() => undefined);
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  app.get('/openapi.json', { config: open, schema: { hide: true } }, async () => app.swagger());
};
