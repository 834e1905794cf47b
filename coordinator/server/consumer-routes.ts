/**
 * Parked consumer messages (docs/consumers.md#parked-messages-in-the-admin-ui): the consumer SDK's
 * report (an API token), the admin UI's list and redrive (an operator token).
 */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  consumerNameMaxLength,
  parkedIdMaxLength,
  parkedMessageStates,
  parkedMessageViewSchema,
  parkedReportReplySchema,
  parkedReportSchema,
} from '../../schemas/consumer-parked.js';
import { dtmResultSchema, errorReplySchema } from '../../schemas/dtm.js';
import type { ConsumerParked } from '../engine/consumer-parked.js';

export interface ConsumerRoutesOptions {
  parked: ConsumerParked;
}

const errors = { 400: errorReplySchema, 401: errorReplySchema, 403: errorReplySchema };
const consumerSchema = z.string().min(1).max(consumerNameMaxLength);

export const consumerRoutes: FastifyPluginAsyncZod<ConsumerRoutesOptions> = async (app, { parked }) => {
  app.post(
    '/consumers/parked',
    {
      schema: {
        summary:
          "Concord: a consumer's report of the messages it parked (its whole parked store, idempotent); answers the redrives operators asked for.",
        body: parkedReportSchema,
        response: { 200: parkedReportReplySchema, ...errors },
      },
    },
    async (request) => parked.report(request.body),
  );

  const operator = { access: 'operator' } as const;
  app.get(
    '/admin/consumers/parked',
    {
      config: operator,
      schema: {
        summary: 'Concord: parked consumer messages as their consumers reported them, newest first.',
        querystring: z.object({
          consumer: consumerSchema.optional(),
          state: z.enum(parkedMessageStates).optional(),
          limit: z.coerce.number().int().min(1).max(1000).default(100),
        }),
        response: { 200: z.object({ parked: z.array(parkedMessageViewSchema) }), ...errors },
      },
    },
    async (request) => ({ parked: await parked.list(request.query) }),
  );

  app.post(
    '/admin/consumers/redrive',
    {
      config: operator,
      schema: {
        summary:
          'Concord: asks a consumer to run a parked message again (after its cause was fixed); it takes the request with its next report.',
        body: z.object({ consumer: consumerSchema, messageId: z.string().min(1).max(parkedIdMaxLength) }).strict(),
        response: { 200: dtmResultSchema, ...errors, 404: errorReplySchema, 409: errorReplySchema },
      },
    },
    async (request) => {
      await parked.redrive(request.body.consumer, request.body.messageId, request.operatorName);
      return { dtm_result: 'SUCCESS' as const };
    },
  );
};
