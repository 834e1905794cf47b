/** The coordinator's HTTP server: Fastify with zod validation, one error handler, metrics per route. */
import swagger from '@fastify/swagger';
import Fastify, { LogController } from 'fastify';
import { jsonSchemaTransform, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import { errorReplySchema } from '../../schemas/dtm.js';
import { ConcordError } from '../../schemas/errors.js';
import { findTextProblem } from '../../schemas/text.js';
import type { MsgEngine } from '../engine/msg.js';
import type { SagaEngine } from '../engine/saga.js';
import type { PhaseTwoEngine } from '../engine/phase-two.js';
import type { WorkflowEngine } from '../engine/workflow.js';
import type { Metrics } from '../metrics.js';
import type { TransactionQueries } from '../engine/queries.js';
import type { Topics } from '../engine/topics.js';
import type { OperatorActions } from '../engine/operator.js';
import type { ConsumerParked } from '../engine/consumer-parked.js';
import { adminRoutes } from './admin-routes.js';
import { adminUi } from './admin-ui.js';
import { accessHook, stripTokenPrefix, type AccessOptions } from './access.js';
import { batchRoutes } from './batch-routes.js';
import { consumerRoutes } from './consumer-routes.js';
import { dtmRoutes } from './dtm-routes.js';
import { handleError } from './error-handler.js';
import { methodNotAllowed } from './method-not-allowed.js';
import { opsRoutes, type StoreProbe } from './ops-routes.js';
import { outboxRoutes } from './outbox-routes.js';
import type { OutboxDrains } from '../outbox-drains.js';

export interface ServerDeps {
  logger: Logger;
  database: StoreProbe;
  metrics: Metrics;
  queries: TransactionQueries;
  topics: Topics;
  msg: MsgEngine;
  saga: SagaEngine;
  tcc: PhaseTwoEngine;
  xa: PhaseTwoEngine;
  workflow: WorkflowEngine;
  version: string;
  /** True once shutdown began: new work is refused so it can go to another node. */
  draining: () => boolean;
  /** API and operator tokens (access.ts); none: every route open. */
  access?: AccessOptions;
  /** The admin UI's counts and operator actions (docs/admin-ui.md). */
  operator: OperatorActions;
  /** Parked consumer messages as the consumers report them. */
  consumerParked: ConsumerParked;
  /** The outbox drains this coordinator runs (config outboxes). */
  outboxes?: OutboxDrains;
  /** Why readiness fails besides the store (health-watch.ts). */
  notReady?: () => Promise<string[]>;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * JSON text from which no string can parse to a NUL or a lone surrogate: a raw NUL is no valid
 * JSON and the fatal decoder refuses encoded surrogates, so either can only come as an escape
 * (\u0000, \uD800-\uDFFF). Text without one needs no walk of the parsed body (a batch's bodies
 * are large); text with one (or with an escaped backslash before "u") is walked as before.
 */
const escapedUnstorable = /\\u(?:0000|[dD][89a-fA-F])/;

export async function buildServer(deps: ServerDeps) {
  const app = Fastify({
    loggerInstance: deps.logger.child({ component: 'api' }),
    // One line per request would dominate the log at thousands of messages a second.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 4 * 1024 * 1024,
    forceCloseConnections: 'idle',
    rewriteUrl: stripTokenPrefix,
    // A bad URL or an over-long path parameter gets the same { code, message } 400 as any bad input.
    frameworkErrors: (error, request, reply) => {
      handleError(error, request, reply);
    },
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(handleError);
  // Tokens first: without one, even an unknown path answers 401 and tells nothing about the routes.
  app.decorateRequest('operator', false);
  app.decorateRequest('operatorName', '');
  app.addHook('onRequest', accessHook(deps.access ?? { apiTokens: [], operatorTokens: [] }));
  const wrongMethod = methodNotAllowed();
  app.addHook('onRoute', (route) => wrongMethod.onRoute(route));
  // Any route taking a body can answer 413 (bodyLimit): documented once here, not per route.
  app.addHook('onRoute', (route) => {
    const response = route.schema?.response as Record<string, unknown> | undefined;
    if (route.schema?.body && response && !response[413]) route.schema.response = { ...response, 413: errorReplySchema };
  });
  app.setNotFoundHandler((request, reply) => wrongMethod.notFound(request, reply));
  // Answered before the body is read: a method with a body (QUERY) would otherwise get a 400 for its Content-Type first.
  app.addHook('onRequest', async (request, reply) => {
    if (request.is404) await wrongMethod.notFound(request, reply);
  });
  // DTM reads bodies as JSON whatever the Content-Type says; so do we (text/plain too, fetch's default).
  // Bodies must be UTF-8: a decoder that replaced bad bytes with U+FFFD would change payloads silently.
  app.removeAllContentTypeParsers();
  // Parsed bodies known to hold only storable text (escapedUnstorable): preValidation skips them.
  const storableBodies = new WeakSet<object>();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => {
    let text: string;
    try {
      text = utf8.decode(body as Buffer);
    } catch {
      return done(new ConcordError('INVALID_REQUEST', 'the body is not valid UTF-8'), undefined);
    }
    try {
      const parsed: unknown = text === '' ? {} : JSON.parse(text);
      if (typeof parsed === 'object' && parsed !== null && !escapedUnstorable.test(text)) storableBodies.add(parsed);
      done(null, parsed);
    } catch {
      done(new ConcordError('INVALID_REQUEST', 'the body is not valid JSON'), undefined);
    }
  });
  // Postgres text holds no NUL and UTF-8 no lone surrogate: refused in any field, so nothing is stored changed.
  app.addHook('preValidation', async (request) => {
    for (const part of [request.params, request.query, request.body]) {
      if (part === request.body && storableBodies.has(part as object)) continue;
      const found = findTextProblem(part);
      if (found) throw new ConcordError('INVALID_REQUEST', `${found.field || 'the request'} ${found.problem}`, { field: found.field });
    }
  });
  app.addHook('onRequest', async (request) => {
    if (deps.draining() && request.method === 'POST') {
      throw new ConcordError('SHUTTING_DOWN', 'this coordinator is shutting down; retry on another node');
    }
  });
  app.addHook('onSend', async (_request, reply) => {
    if (deps.draining()) reply.header('connection', 'close');
  });
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unknown';
    deps.metrics.requests.inc({ route, status: String(reply.statusCode) });
    deps.metrics.requestSeconds.observe({ route }, reply.elapsedTime / 1000);
  });
  await app.register(swagger, {
    openapi: {
      info: {
        title: 'Concord coordinator API',
        version: deps.version,
        description: "DTM-compatible HTTP API. Errors answer { code, message, field? }; 409 and 425 keep DTM's FAILURE and ONGOING.",
      },
    },
    transform: jsonSchemaTransform,
  });
  await app.register(dtmRoutes, {
    prefix: '/api/dtmsvr',
    queries: deps.queries,
    topics: deps.topics,
    msg: deps.msg,
    saga: deps.saga,
    tcc: deps.tcc,
    xa: deps.xa,
    workflow: deps.workflow,
    version: deps.version,
  });
  await app.register(batchRoutes, { prefix: '/api/concord', msg: deps.msg });
  await app.register(opsRoutes, {
    prefix: '/api',
    database: deps.database,
    metrics: deps.metrics,
    ...(deps.notReady ? { notReady: deps.notReady } : {}),
  });
  await app.register(adminRoutes, { prefix: '/api/concord/admin', actions: deps.operator });
  await app.register(consumerRoutes, { prefix: '/api/concord', parked: deps.consumerParked });
  await app.register(adminUi);
  if (deps.outboxes) await app.register(outboxRoutes, { prefix: '/api/outboxes', outboxes: deps.outboxes, actions: deps.operator });
  return app;
}
