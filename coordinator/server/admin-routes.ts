/** Operator API behind the admin UI (docs/admin-ui.md): counts per status, brokers and topics, retry now, force-stop, who did what. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { dtmResultSchema, errorReplySchema, gidBodySchema, gidSchema, globalStatuses } from '../../schemas/dtm.js';
import { operatorSubjects } from '../../schemas/db/tables.js';
import { countCap, type OperatorActions } from '../engine/operator.js';

export interface AdminRoutesOptions {
  actions: OperatorActions;
}

const stopBodySchema = z.object({
  gid: gidSchema,
  reason: z.string().trim().min(1, 'reason must not be empty').max(1000, 'reason is longer than 1000 characters'),
});
const historyQuerySchema = z.object({
  kind: z.enum(operatorSubjects).describe('What was acted on: a transaction, an outbox or a parked consumer message.'),
  subject: z.string().min(1).max(1024).describe('Its gid, outbox name, or consumer/message id.'),
});
const actionSchema = z.object({
  action: z.string(),
  operator: z.string().describe('The name of the operator token presented (config operatorTokens).'),
  detail: z.string().describe('The reason given, or what came of it.'),
  at: z.string(),
});
const errors = { 400: errorReplySchema, 401: errorReplySchema, 403: errorReplySchema, 404: errorReplySchema, 409: errorReplySchema };
const success = { dtm_result: 'SUCCESS' as const };

export const adminRoutes: FastifyPluginAsyncZod<AdminRoutesOptions> = async (app, { actions }) => {
  const operator = { access: 'operator' } as const;
  app.get(
    '/counts',
    {
      config: operator,
      schema: {
        summary: 'Concord: transactions per status, each count capped at `cap` (the admin UI shows cap as "cap+").',
        response: {
          200: z.object({ counts: z.record(z.enum(globalStatuses), z.number()), cap: z.number() }),
          401: errorReplySchema,
          403: errorReplySchema,
        },
      },
    },
    async () => ({ counts: await actions.counts(), cap: countCap }),
  );

  app.get(
    '/brokers',
    {
      config: operator,
      schema: {
        summary: 'Concord: the configured broker connections with their state (up, down, unused), and the topics with their subscribers.',
        response: {
          200: z.object({
            connections: z.array(
              z.object({
                kind: z.enum(['kafka', 'rabbitmq']),
                name: z.string(),
                state: z.enum(['up', 'down', 'unused']),
                error: z.string().optional(),
              }),
            ),
            topics: z.array(z.object({ name: z.string(), subscribers: z.array(z.object({ url: z.string(), remark: z.string() })) })),
          }),
          401: errorReplySchema,
          403: errorReplySchema,
        },
      },
    },
    async () => actions.brokers(),
  );

  app.post(
    '/retry',
    {
      config: operator,
      schema: {
        summary: 'Concord: make an unfinished transaction (prepared, submitted, aborting) due now, its branch backoffs too.',
        body: gidBodySchema,
        response: { 200: dtmResultSchema, ...errors },
      },
    },
    async (request) => {
      await actions.retryNow(request.body.gid, request.operatorName);
      return success;
    },
  );

  app.post(
    '/stop',
    {
      config: operator,
      schema: {
        summary:
          'Concord: end an unfinished or needs_attention transaction as failed, without compensating; rollback_reason records who, when and why.',
        body: stopBodySchema,
        response: { 200: dtmResultSchema, ...errors },
      },
    },
    async (request) => {
      await actions.forceStop(request.body.gid, request.body.reason, request.operatorName);
      return success;
    },
  );

  app.get(
    '/actions',
    {
      config: operator,
      schema: {
        summary:
          'Concord: the operator actions recorded on a transaction, an outbox or a parked consumer message, newest first: who, when, what.',
        querystring: historyQuerySchema,
        response: {
          200: z.object({ actions: z.array(actionSchema) }),
          400: errorReplySchema,
          401: errorReplySchema,
          403: errorReplySchema,
        },
      },
    },
    async (request) => ({
      actions: (await actions.history(request.query.kind, request.query.subject)).map((a) => ({
        action: a.action,
        operator: a.operator,
        detail: a.detail,
        at: a.at.toISOString(),
      })),
    }),
  );
};
