/** Operator API behind the admin UI (docs/admin-ui.md): counts per status; the actions live with the engines. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorReplySchema, globalStatuses } from '../../schemas/dtm.js';
import type { Database } from '../store/database.js';
import { countByStatus } from '../store/queries.js';

export interface AdminRoutesOptions {
  database: Database;
}

/** Counts stop here: "10000+" tells an operator enough, and counting further would scan millions of rows. */
export const countCap = 10_000;

export const adminRoutes: FastifyPluginAsyncZod<AdminRoutesOptions> = async (app, { database }) => {
  app.get(
    '/counts',
    {
      config: { access: 'operator' },
      schema: {
        summary: 'Concord: transactions per status, each count capped at `cap` (the admin UI shows cap as "cap+").',
        response: {
          200: z.object({ counts: z.record(z.enum(globalStatuses), z.number()), cap: z.number() }),
          401: errorReplySchema,
          403: errorReplySchema,
        },
      },
    },
    async () => ({ counts: await countByStatus(database, countCap), cap: countCap }),
  );
};
