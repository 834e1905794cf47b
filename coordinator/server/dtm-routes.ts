/** DTM's coordinator API under /api/dtmsvr: the part the two-phase message needs. */
import { randomBytes } from 'node:crypto';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import {
  allQuerySchema,
  allReplySchema,
  dtmResultSchema,
  errorReplySchema,
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
import type { Database } from '../store/database.js';
import { getTransaction, listTransactions } from '../store/queries.js';
import { branchView, transactionView } from './views.js';

export interface DtmRoutesOptions {
  database: Database;
  msg: MsgEngine;
  relay: Relay;
  version: string;
}

const errors = { 400: errorReplySchema, 404: errorReplySchema, 409: errorReplySchema, 425: errorReplySchema, 503: errorReplySchema };
const success = { dtm_result: 'SUCCESS' } as const;

export const dtmRoutes: FastifyPluginAsyncZod<DtmRoutesOptions> = async (app, { database, msg, relay, version }) => {
  /** Only the two-phase message is served so far; other types get a clear 400, not a half-made transaction. */
  const msgOnly = (req: TransRequest): MsgEngine => {
    if (req.trans_type !== 'msg') {
      throw new ConcordError('UNSUPPORTED', `trans_type "${req.trans_type}" is not served yet; use msg`, { field: 'trans_type' });
    }
    return msg;
  };
  const transRoute = { body: transRequestSchema, response: { 200: dtmResultSchema, ...errors } };

  app.get('/newGid', { schema: { summary: 'A new unique gid.', response: { 200: newGidReplySchema } } }, async () => ({
    gid: randomBytes(16).toString('base64url'),
    dtm_result: 'SUCCESS' as const,
  }));

  app.post('/prepare', { schema: { summary: 'Prepare a two-phase message.', ...transRoute } }, async (request) => {
    await msgOnly(request.body).prepare(request.body);
    return success;
  });

  app.post('/submit', { schema: { summary: 'Submit a message (prepared or not).', ...transRoute } }, async (request) => {
    await msgOnly(request.body).submit(request.body);
    return success;
  });

  app.post('/abort', { schema: { summary: 'Abort a prepared message.', ...transRoute } }, async (request) => {
    await msgOnly(request.body).abort(request.body);
    return success;
  });

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
