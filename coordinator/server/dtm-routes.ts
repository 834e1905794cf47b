/** DTM's coordinator API under /api/dtmsvr for two-phase messages and sagas, and Concord's redrive. */
import { randomBytes } from 'node:crypto';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
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
  type TransRequest,
} from '../../schemas/dtm.js';
import type { Relay } from '../../relay/publisher.js';
import { deleteTopic, subscribe, unsubscribe } from '../store/topics.js';
import { ConcordError } from '../../schemas/errors.js';
import type { MsgEngine } from '../engine/msg.js';
import type { SagaEngine } from '../engine/saga.js';
import type { Database } from '../store/database.js';
import { getTransaction, listTransactions } from '../store/queries.js';
import { branchView, transactionView } from './views.js';

export interface DtmRoutesOptions {
  database: Database;
  msg: MsgEngine;
  saga: SagaEngine;
  relay: Relay;
  version: string;
}

const errors = { 400: errorReplySchema, 404: errorReplySchema, 409: errorReplySchema, 425: errorReplySchema, 503: errorReplySchema };
const success = { dtm_result: 'SUCCESS' } as const;

export const dtmRoutes: FastifyPluginAsyncZod<DtmRoutesOptions> = async (app, { database, msg, saga, relay, version }) => {
  /** Types not served (yet) get a clear 400, not a half-made transaction. */
  const served = (req: TransRequest, types: string[], what: string): void => {
    if (!types.includes(req.trans_type)) {
      throw new ConcordError('UNSUPPORTED', `${what} serves trans_type ${types.join(' or ')}, not "${req.trans_type}"`, {
        field: 'trans_type',
      });
    }
  };
  const transRoute = { body: transRequestSchema, response: { 200: dtmResultSchema, ...errors } };

  app.get('/newGid', { schema: { summary: 'A new unique gid.', response: { 200: newGidReplySchema } } }, async () => ({
    gid: randomBytes(16).toString('base64url'),
    dtm_result: 'SUCCESS' as const,
  }));

  app.post('/prepare', { schema: { summary: 'Prepare a two-phase message.', ...transRoute } }, async (request) => {
    served(request.body, ['msg'], 'prepare');
    await msg.prepare(request.body);
    return success;
  });

  app.post('/submit', { schema: { summary: 'Submit a message (prepared or not) or a saga.', ...transRoute } }, async (request) => {
    served(request.body, ['msg', 'saga'], 'submit');
    await (request.body.trans_type === 'saga' ? saga.submit(request.body) : msg.submit(request.body));
    return success;
  });

  app.post('/abort', { schema: { summary: 'Abort a prepared message.', ...transRoute } }, async (request) => {
    served(request.body, ['msg'], 'abort');
    await msg.abort(request.body);
    return success;
  });

  app.post(
    '/redrive',
    {
      schema: {
        summary: 'Concord: compensate a saga in needs_attention again (after its cause was fixed).',
        body: gidBodySchema,
        response: { 200: dtmResultSchema, ...errors },
      },
    },
    async (request) => {
      await saga.redrive(request.body.gid);
      return success;
    },
  );

  app.get(
    '/query',
    {
      schema: { summary: 'One transaction and its branches.', querystring: gidQuerySchema, response: { 200: queryReplySchema, ...errors } },
    },
    async (request) => {
      const { trans, branches } = await getTransaction(database, request.query.gid);
      return { transaction: trans ? transactionView(trans) : null, branches: branches.map(branchView) };
    },
  );

  app.get(
    '/all',
    {
      schema: {
        summary: 'Transactions, newest first, paged by id.',
        querystring: allQuerySchema,
        response: { 200: allReplySchema, ...errors },
      },
    },
    async (request) => {
      const rows = await listTransactions(database, request.query);
      if (request.query.gid !== undefined && rows.length === 0) return { transactions: null, next_position: '' };
      const last = rows.at(-1);
      const next = rows.length === request.query.limit && last ? String(last.id) : '';
      return { transactions: rows.map(transactionView), next_position: next };
    },
  );

  app.get(
    '/subscribe',
    {
      schema: {
        summary: 'Add a subscriber (a destination URL) to a topic.',
        querystring: subscribeQuerySchema,
        response: { 200: dtmResultSchema, ...errors },
      },
    },
    async (request) => {
      const { topic, url, remark } = request.query;
      const problem = relay.problem(url);
      if (problem) throw new ConcordError('INVALID_REQUEST', problem, { field: 'url' });
      if (!(await subscribe(database, topic, { url, remark: remark ?? '' }))) {
        throw new ConcordError('INVALID_STATE', `${url} already subscribes topic ${topic}`, { field: 'url' });
      }
      return success;
    },
  );

  app.get(
    '/unsubscribe',
    {
      schema: {
        summary: 'Remove a subscriber from a topic.',
        querystring: unsubscribeQuerySchema,
        response: { 200: dtmResultSchema, ...errors },
      },
    },
    async (request) => {
      if (!(await unsubscribe(database, request.query.topic, request.query.url))) {
        throw new ConcordError('NOT_FOUND', `${request.query.url} does not subscribe topic ${request.query.topic}`, { field: 'url' });
      }
      return success;
    },
  );

  app.delete(
    '/topic/:topicName',
    {
      schema: { summary: 'Delete a topic and its subscribers.', params: topicParamsSchema, response: { 200: dtmResultSchema, ...errors } },
    },
    async (request) => {
      if (!(await deleteTopic(database, request.params.topicName))) {
        throw new ConcordError('NOT_FOUND', `no topic ${request.params.topicName}`, { field: 'topicName' });
      }
      return success;
    },
  );

  app.get('/version', { schema: { summary: 'Coordinator version.' } }, async () => ({ version }));
};
