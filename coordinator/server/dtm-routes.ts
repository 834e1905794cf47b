/** DTM's coordinator API under /api/dtmsvr for two-phase messages, sagas, TCC and XA, and Concord's redrive. */
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  allQuerySchema,
  allReplySchema,
  dtmResultSchema,
  errorReplySchema,
  gidBodySchema,
  gidQuerySchema,
  newGidReplySchema,
  queryReplySchema,
  subscribeQuerySchema,
  topicParamsSchema,
  transRequestSchema,
  unsubscribeQuerySchema,
  workflowBodySchema,
} from '../../schemas/dtm.js';
import { ConcordError } from '../../schemas/errors.js';
import { registerBranchSchema } from '../../schemas/register-branch.js';
import type { MsgEngine } from '../engine/msg.js';
import type { SagaEngine } from '../engine/saga.js';
import type { PhaseTwoEngine } from '../engine/phase-two.js';
import type { WorkflowEngine } from '../engine/workflow.js';
import { workflowRefusalSchema, workflowReplySchema } from '../../schemas/workflow.js';
import { workflowRefusal } from './workflow-refusal.js';
import type { TransactionQueries } from '../engine/queries.js';
import type { Topics } from '../engine/topics.js';
import { branchView, redacted, transactionView } from './views.js';
import { keepTraceContext } from './trace-headers.js';
import { dtmOperations, newGid } from './dtm-operations.js';

export interface DtmRoutesOptions {
  queries: TransactionQueries;
  topics: Topics;
  msg: MsgEngine;
  saga: SagaEngine;
  tcc: PhaseTwoEngine;
  xa: PhaseTwoEngine;
  workflow: WorkflowEngine;
  version: string;
}

const errors = { 400: errorReplySchema, 404: errorReplySchema, 409: errorReplySchema, 425: errorReplySchema, 503: errorReplySchema };
const success = { dtm_result: 'SUCCESS' } as const;
/** Operator actions (access.ts): an API token is not enough once tokens are configured. */
const operator = { access: 'operator' } as const;
const redactionNote =
  'With tokens configured, payloads (bin_data) and branch_headers values are redacted unless an operator token is presented.';
type SubscribeQuery = z.infer<typeof subscribeQuerySchema>;
type UnsubscribeQuery = z.infer<typeof unsubscribeQuerySchema>;

export const dtmRoutes: FastifyPluginAsyncZod<DtmRoutesOptions> = async (
  app,
  { queries, topics, msg, saga, tcc, xa, workflow, version },
) => {
  const dtm = dtmOperations({ msg, saga, tcc, xa, workflow });
  const transRoute = { body: transRequestSchema, response: { 200: dtmResultSchema, ...errors } };

  app.get('/newGid', { schema: { summary: 'A new unique gid.', response: { 200: newGidReplySchema } } }, async () => ({
    gid: newGid(),
    dtm_result: 'SUCCESS' as const,
  }));

  app.post(
    '/prepare',
    { schema: { summary: 'Prepare a two-phase message, a TCC or an XA transaction.', ...transRoute } },
    async (request) => {
      keepTraceContext(request.headers, request.body);
      await dtm.prepare(request.body);
      return success;
    },
  );

  app.post(
    '/submit',
    {
      schema: {
        summary:
          "Submit a message (prepared or not), a saga, a TCC or XA transaction (every Confirm or XA commit), or a workflow's end (req_extra).",
        ...transRoute,
      },
    },
    async (request) => {
      keepTraceContext(request.headers, request.body);
      await dtm.submit(request.body);
      return success;
    },
  );

  app.post(
    '/abort',
    { schema: { summary: 'Abort a prepared message, or a prepared TCC or XA transaction (every Cancel or XA rollback).', ...transRoute } },
    async (request) => {
      await dtm.abort(request.body);
      return success;
    },
  );

  // DTM's Go and Python clients use registerBranch, its Node client the older registerTccBranch.
  for (const path of ['/registerBranch', '/registerTccBranch']) {
    app.post(
      path,
      {
        schema: {
          summary:
            "TCC: record a branch's Confirm and Cancel URLs; XA: a branch's phase-two URL (op commit or rollback); workflow: a step's outcome (while prepared).",
          body: registerBranchSchema,
          response: { 200: dtmResultSchema, ...errors },
        },
      },
      async (request) => {
        await dtm.registerBranch(request.body);
        return success;
      },
    );
  }

  app.post(
    '/prepareWorkflow',
    {
      schema: {
        summary: 'DTM workflow: create the workflow, or return it with the steps it recorded (a resumed run replays them).',
        description: "Errors have the reply's shape too (a failed transaction), so DTM's workflow client returns them as errors.",
        body: workflowBodySchema,
        response: {
          200: workflowReplySchema,
          400: z.union([workflowRefusalSchema, errorReplySchema]),
          404: workflowRefusalSchema,
          409: workflowRefusalSchema,
          503: z.union([workflowRefusalSchema, errorReplySchema]),
        },
      },
    },
    async (request, reply) => {
      try {
        const parsed = transRequestSchema.safeParse(request.body);
        if (!parsed.success) {
          const issue = parsed.error.issues[0];
          const field = issue?.path.join('.') ?? '';
          throw new ConcordError('INVALID_REQUEST', `${field || 'body'}: ${issue?.message ?? 'invalid'}`, { field });
        }
        return await dtm.prepareWorkflow(parsed.data);
      } catch (err) {
        const refusal = workflowRefusal(err, request.body.gid);
        if (!refusal) throw err;
        return reply.status(refusal.status).send(refusal.body);
      }
    },
  );

  app.post(
    '/redrive',
    {
      config: operator,
      schema: {
        summary: 'Concord: compensate a saga in needs_attention again (after its cause was fixed).',
        body: gidBodySchema,
        response: { 200: dtmResultSchema, ...errors },
      },
    },
    async (request) => {
      await saga.redrive(request.body.gid, request.operatorName);
      return success;
    },
  );

  app.get(
    '/query',
    {
      schema: {
        summary: 'One transaction and its branches.',
        description: redactionNote,
        querystring: gidQuerySchema,
        response: { 200: queryReplySchema, ...errors },
      },
    },
    async (request) => {
      const { trans, branches } = await queries.transaction(request.query.gid);
      const shown = { ...(request.operator ? {} : redacted), base64Data: trans?.protocol === 'grpc' };
      return { transaction: trans ? transactionView(trans, shown) : null, branches: branches.map((b) => branchView(b, shown)) };
    },
  );

  app.get(
    '/all',
    {
      schema: {
        summary: 'Transactions, newest first, paged by id.',
        description: redactionNote,
        querystring: allQuerySchema,
        response: { 200: allReplySchema, ...errors },
      },
    },
    async (request) => {
      const { transactions, nextPosition } = await queries.page(request.query);
      const shown = request.operator ? {} : redacted;
      return { transactions: transactions?.map((t) => transactionView(t, shown)) ?? null, next_position: nextPosition };
    },
  );

  // DTM changes topics over GET with a query string; POST with a JSON body does the same, and once
  // tokens are configured only the POST form is taken (access.ts), so a link or an <img> cannot do it.
  const subscribeRoute = async ({ topic, url, remark }: SubscribeQuery) => {
    await topics.subscribe(topic, url, remark ?? '');
    return success;
  };
  const unsubscribeRoute = async ({ topic, url }: UnsubscribeQuery) => {
    await topics.unsubscribe(topic, url);
    return success;
  };
  const topicReply = { response: { 200: dtmResultSchema, ...errors } };
  const subscribeSummary = 'Add a subscriber (a destination URL) to a topic.';
  const unsubscribeSummary = 'Remove a subscriber from a topic.';
  const byGet = { access: 'operator', changesStateByGet: true } as const;

  app.get('/subscribe', { config: byGet, schema: { summary: subscribeSummary, querystring: subscribeQuerySchema, ...topicReply } }, (r) =>
    subscribeRoute(r.query),
  );
  app.post('/subscribe', { config: operator, schema: { summary: subscribeSummary, body: subscribeQuerySchema, ...topicReply } }, (r) =>
    subscribeRoute(r.body),
  );
  app.get(
    '/unsubscribe',
    { config: byGet, schema: { summary: unsubscribeSummary, querystring: unsubscribeQuerySchema, ...topicReply } },
    (r) => unsubscribeRoute(r.query),
  );
  app.post(
    '/unsubscribe',
    { config: operator, schema: { summary: unsubscribeSummary, body: unsubscribeQuerySchema, ...topicReply } },
    (r) => unsubscribeRoute(r.body),
  );

  app.delete(
    '/topic/:topicName',
    {
      config: operator,
      schema: { summary: 'Delete a topic and its subscribers.', params: topicParamsSchema, response: { 200: dtmResultSchema, ...errors } },
    },
    async (request) => {
      await topics.delete(request.params.topicName);
      return success;
    },
  );

  app.get('/version', { schema: { summary: 'Coordinator version.' } }, async () => ({ version }));
};
