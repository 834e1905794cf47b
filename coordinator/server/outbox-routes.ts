/** Operator routes of the outbox drains a coordinator runs (config outboxes): status, parked rows, redrive. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorReplySchema } from '../../schemas/dtm.js';
import { ConcordError } from '../../schemas/errors.js';
import type { OperatorActions } from '../engine/operator.js';
import type { OutboxDrains } from '../outbox-drains.js';

export interface OutboxRoutesOptions {
  outboxes: OutboxDrains;
  /** Records each redrive with its operator. */
  actions: OperatorActions;
}

const operator = { access: 'operator' } as const;
const nameParams = z.object({ name: z.string().min(1).max(200).describe('The outbox name (mapping name, or its table).') });

const statusSchema = z.object({
  name: z.string(),
  table: z.string(),
  partitions: z.number(),
  held: z.array(z.number()),
  members: z.number(),
  published: z.number(),
  parked: z.number(),
  lagSeconds: z.number().nullable(),
  lagThreshold: z.number().nullable(),
  problem: z.string().nullable(),
  slot: z
    .object({
      slot: z.string(),
      active: z.boolean(),
      lagBytes: z.number(),
      retainedBytes: z.number(),
      confirmedLsn: z.string().nullable(),
    })
    .nullable()
    .describe('Its replication slot (read=logical, or one left behind by it: it holds WAL until dropped), if one exists.'),
});

const parkedSchema = z.object({
  rowId: z.string(),
  messageId: z.string(),
  error: z.string(),
  attempts: z.number(),
  parkedAt: z.string(),
  row: z.unknown().describe('The parked copy of the table row (to_jsonb).'),
});

export const outboxRoutes: FastifyPluginAsyncZod<OutboxRoutesOptions> = async (app, { outboxes, actions }) => {
  const known = (name: string) => {
    if (!outboxes.has(name)) throw new ConcordError('OUTBOX_NOT_FOUND', `no outbox named "${name}" is configured`, { field: 'name' });
  };

  app.get(
    '/',
    {
      config: operator,
      schema: {
        summary: 'The outboxes this coordinator drains: parts held here, rows published and parked by this node, lag.',
        response: { 200: z.object({ outboxes: z.array(statusSchema) }) },
      },
    },
    async () => ({ outboxes: outboxes.list() }),
  );

  app.get(
    '/:name/parked',
    {
      config: operator,
      schema: {
        summary: 'Parked rows of an outbox, oldest first, with their error.',
        params: nameParams,
        querystring: z.object({ limit: z.coerce.number().int().min(1).max(1000).default(100) }),
        response: { 200: z.object({ parked: z.array(parkedSchema) }), 404: errorReplySchema },
      },
    },
    async (request) => {
      known(request.params.name);
      return { parked: await outboxes.parked(request.params.name, request.query.limit) };
    },
  );

  app.post(
    '/:name/redrive',
    {
      config: operator,
      schema: {
        summary: 'Publishes parked rows again (all, or those of rowIds); delivered ones leave the parked table.',
        params: nameParams,
        body: z.object({ rowIds: z.array(z.string().min(1).max(200)).min(1).max(10_000).optional() }).strict(),
        response: {
          200: z.object({ delivered: z.array(z.string()), failed: z.array(z.object({ id: z.string(), error: z.string() })) }),
          404: errorReplySchema,
        },
      },
    },
    async (request) => {
      const { name } = request.params;
      known(name);
      const result = await outboxes.redrive(name, request.body.rowIds);
      await actions.record(
        {
          subjectKind: 'outbox',
          subject: name,
          action: 'outbox-redrive',
          operator: request.operatorName,
          detail: `${result.delivered.length} delivered, ${result.failed.length} still failing`,
        },
        { outbox: name },
        'outbox parked rows redriven by an operator',
      );
      return result;
    },
  );
};
