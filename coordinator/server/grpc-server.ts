/**
 * DTM's gRPC API (service dtmgimp.Dtm, schemas/grpc/dtmgimp.proto, docs/grpc.md) beside the HTTP
 * one: each method converts its request to the HTTP shape, validates it with the same schema
 * (grpc-requests.ts) and calls the same operation (dtm-operations.ts). Tokens ride in the
 * `authorization: Bearer <token>` metadata, with the same roles as over HTTP (access.ts).
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  Server,
  ServerCredentials,
  status,
  type Metadata,
  type sendUnaryData,
  type ServerUnaryCall,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import type { Logger } from 'pino';
import { ConcordError } from '../../schemas/errors.js';
import type { Topics } from '../engine/topics.js';
import type { Metrics } from '../metrics.js';
import { bearer, tokenRoles, type AccessOptions } from './access.js';
import type { DtmOperations } from './dtm-operations.js';
import { newGid } from './dtm-operations.js';
import {
  progressesReplyOf,
  registrationOf,
  subscriptionOf,
  topicOf,
  transRequestOf,
  unsubscriptionOf,
  type GrpcBranchRequest,
  type GrpcDtmRequest,
  type GrpcTopicRequest,
} from './grpc-requests.js';
import { grpcStatusOf } from './grpc-status.js';
import { keepTraceContext } from './trace-headers.js';

export interface GrpcServerDeps {
  logger: Logger;
  metrics: Metrics;
  dtm: DtmOperations;
  topics: Topics;
  access: AccessOptions;
  /** True once shutdown began: new work goes to another node. */
  draining: () => boolean;
}

export interface GrpcApi {
  /** host:port it listens on. */
  readonly address: string;
  /** Stops taking calls and waits for those in progress, for up to `timeoutMs`; then cuts the rest. */
  close(timeoutMs: number): Promise<void>;
}

const service = 'dtmgimp.Dtm';
const empty = {};

/** The .proto, found from source (coordinator/server) and from the build (dist/coordinator/server) alike. */
function protoPath(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    const candidate = join(dir, 'schemas', 'grpc', 'dtmgimp.proto');
    if (existsSync(candidate)) return candidate;
    if (dirname(dir) === dir) throw new Error('schemas/grpc/dtmgimp.proto not found above ' + fileURLToPath(import.meta.url));
  }
}

/** Metadata as the string headers keepTraceContext reads (traceparent, tracestate). */
function headersOf(metadata: Metadata): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const [key, value] of Object.entries(metadata.getMap())) if (typeof value === 'string') headers[key] = value;
  return headers;
}

export async function startGrpcApi(host: string, port: number, deps: GrpcServerDeps): Promise<GrpcApi> {
  const { logger, metrics, dtm, topics } = deps;
  const log = logger.child({ component: 'grpc' });
  const tokens = tokenRoles(deps.access);

  /** The same refusals as the HTTP API's access hook: no or unknown token, or an API token on an operator action. */
  const authorize = (metadata: Metadata, level: 'api' | 'operator', name: string): void => {
    if (!tokens.enabled) return;
    const presented = metadata
      .get('authorization')
      .map((v) => bearer(String(v)))
      .filter((t) => t !== undefined);
    const roles = presented.map(tokens.roleOf);
    const role = roles.some((r) => r?.role === 'operator') ? 'operator' : roles.some((r) => r?.role === 'api') ? 'api' : undefined;
    if (role === undefined) {
      throw new ConcordError(
        'UNAUTHORIZED',
        presented.length === 0
          ? 'this coordinator requires a token: send the metadata "authorization: Bearer <token>"'
          : 'the token presented is not valid',
      );
    }
    if (level === 'operator' && role !== 'operator')
      throw new ConcordError('FORBIDDEN', `${name} is an operator action: present an operator token`);
  };

  /** One unary method: authorize, refuse while draining, run, answer; errors become statuses (grpc-status.ts). */
  const method =
    <Req, Res>(name: string, level: 'api' | 'operator', run: (request: Req, metadata: Metadata) => Promise<Res>) =>
    (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
      const route = `/${service}/${name}`;
      const started = performance.now();
      const done = (code: status) => {
        metrics.requests.inc({ route, status: `grpc ${status[code]}` });
        metrics.requestSeconds.observe({ route }, (performance.now() - started) / 1000);
      };
      void (async () => {
        try {
          authorize(call.metadata, level, name);
          // As over HTTP, where only POSTs are refused: NewGid changes nothing.
          if (deps.draining() && name !== 'NewGid')
            throw new ConcordError('SHUTTING_DOWN', 'this coordinator is shutting down; retry on another node');
          const reply = await run(call.request, call.metadata);
          done(status.OK);
          callback(null, reply);
        } catch (err) {
          const { Gid, TransType } = (call.request ?? {}) as { Gid?: unknown; TransType?: unknown };
          const failure = grpcStatusOf(err, log, {
            ...(typeof Gid === 'string' ? { gid: Gid } : {}),
            ...(typeof TransType === 'string' ? { trans_type: TransType } : {}),
          });
          done(failure.code);
          callback(failure);
        }
      })();
    };

  const transaction = (name: 'prepare' | 'submit' | 'abort', traced: boolean) =>
    method<GrpcDtmRequest, object>(name[0]!.toUpperCase() + name.slice(1), 'api', async (request, metadata) => {
      const req = transRequestOf(request);
      if (traced) keepTraceContext(headersOf(metadata), req);
      await dtm[name](req);
      return empty;
    });

  const handlers: UntypedServiceImplementation = {
    NewGid: method('NewGid', 'api', async () => ({ Gid: newGid() })),
    Prepare: transaction('prepare', true),
    Submit: transaction('submit', true),
    Abort: transaction('abort', false),
    RegisterBranch: method<GrpcBranchRequest, object>('RegisterBranch', 'api', async (request) => {
      await dtm.registerBranch(registrationOf(request));
      return empty;
    }),
    PrepareWorkflow: method<GrpcDtmRequest, object>('PrepareWorkflow', 'api', async (request) =>
      progressesReplyOf(await dtm.prepareWorkflow(transRequestOf(request))),
    ),
    Subscribe: method<GrpcTopicRequest, object>('Subscribe', 'operator', async (request) => {
      const { topic, url, remark } = subscriptionOf(request);
      await topics.subscribe(topic, url, remark ?? '');
      return empty;
    }),
    Unsubscribe: method<GrpcTopicRequest, object>('Unsubscribe', 'operator', async (request) => {
      const { topic, url } = unsubscriptionOf(request);
      await topics.unsubscribe(topic, url);
      return empty;
    }),
    DeleteTopic: method<GrpcTopicRequest, object>('DeleteTopic', 'operator', async (request) => {
      await topics.delete(topicOf(request));
      return empty;
    }),
  };

  const definition = loadSync(protoPath(), { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
  // The same 4 MiB as the HTTP API's body limit.
  const server = new Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 });
  server.addService(definition[service] as ServiceDefinition, handlers);
  const bindHost = host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
  const bound = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${bindHost}:${port}`, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const address = `${bindHost}:${bound}`;
  return {
    address,
    async close(timeoutMs) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
        new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs))),
      ]);
      clearTimeout(timer);
      server.forceShutdown();
    },
  };
}
