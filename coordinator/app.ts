/**
 * Wires one coordinator together (store, relay, engine, scheduler, HTTP server) and takes it apart
 * again in the right order on shutdown.
 */
import { hostname } from 'node:os';
import v8 from 'node:v8';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { brokerConnections, isLoopbackHost, type Config } from '../schemas/config.js';
import { createGrpcPublisher } from '../relay/grpc.js';
import { createHttpPublisher } from '../relay/http.js';
import { DestinationPolicy } from '../relay/destination-policy.js';
import { createKafkaPublisher } from '../relay/kafka.js';
import { createRabbitPublisher } from '../relay/rabbitmq.js';
import { Relay } from '../relay/publisher.js';
import type { EngineContext } from './engine/context.js';
import { MsgEngine } from './engine/msg.js';
import { Executor } from './engine/executor.js';
import { MsgProcessor } from './engine/msg-process.js';
import { InFlight } from './engine/in-flight.js';
import { SagaEngine } from './engine/saga.js';
import { PhaseTwoEngine } from './engine/phase-two.js';
import { WorkflowEngine } from './engine/workflow.js';
import { TransactionQueries } from './engine/queries.js';
import { Topics } from './engine/topics.js';
import { WorkflowProcessor } from './engine/workflow-process.js';
import { SagaProcessor } from './engine/saga-process.js';
import { listenForSagaReplies, type ReplyListener } from './engine/saga-replies.js';
import { createMetrics } from './metrics.js';
import { HealthWatch } from './health-watch.js';
import type { OutboxDrains } from './outbox-drains.js';
import { version } from './version.js';
import { RetentionJob } from './retention-job.js';
import { VacuumJob } from './vacuum-job.js';
import { Scheduler } from './scheduler.js';
import { buildServer } from './server/build-server.js';
import { dtmOperations } from './server/dtm-operations.js';
import type { GrpcApi } from './server/grpc-server.js';
import { openDatabase } from './store/database.js';
import { releaseLeases } from './store/transactions.js';
import { storeId } from './store/store-id.js';
import { pendingSagaBrokerUrls } from './store/sagas.js';
import { OperatorActions } from './engine/operator.js';
import { ConsumerParked } from './engine/consumer-parked.js';

export interface Coordinator {
  /** e.g. http://127.0.0.1:36789 */
  readonly url: string;
  readonly nodeId: string;
  /** Stops taking work, lets in-flight work finish (up to shutdownTimeout), releases the rest. */
  stop(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

export { version };

export async function startCoordinator(config: Config, logger: Logger): Promise<Coordinator> {
  // A full collection once the old generation grows 20 % past what the last one kept, not V8's 60 %
  // or more: requests' objects reach the old generation under load, and it grew to twice its live
  // size before V8 collected it. Peak RSS under load: 118-133 MiB with it, 132-206 without
  // (docs/benchmarks.md). V8 reads this flag at each collection, so it applies when set here.
  v8.setFlagsFromString('--heap-growing-percent=20');
  const nodeId = config.nodeId ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
  const database = await openDatabase(config.store, { poolSize: config.storePoolSize, logger, lockTimeout: config.storeLockTimeout });
  const brokers = brokerConnections(config);
  const destinations = new DestinationPolicy({ allow: config.allowDestinations, deny: config.denyDestinations });
  const relay = new Relay([
    createHttpPublisher({ answerBytes: config.answerBytes, destinations }),
    createGrpcPublisher({ destinations }),
    createKafkaPublisher(brokers.kafka, logger.child({ component: 'relay.kafka' })),
    createRabbitPublisher(brokers.rabbitmq, logger.child({ component: 'relay.rabbitmq' })),
  ]);
  const metrics = createMetrics();
  const inFlight = new InFlight();
  // Named after the store by default: coordinators of one store share it, and no other coordinator reads it.
  const replyTopic = config.replyTopic ?? `concord.saga.replies.${await storeId(database)}`;
  const replies: ReplyListener =
    replyTopic === ''
      ? { listen: () => undefined, close: async () => undefined }
      : listenForSagaReplies(brokers, replyTopic, (reply) => saga.onReply(reply), logger.child({ component: 'relay.replies' }));
  const ctx: EngineContext = {
    config,
    database,
    relay,
    logger: logger.child({ component: 'engine' }),
    metrics,
    nodeId,
    inFlight,
    replyTopic,
    replies,
  };
  const executor = new Executor(ctx);
  const processor = new MsgProcessor(executor);
  const msg = new MsgEngine(ctx, processor);
  const tcc = new PhaseTwoEngine(ctx, processor, 'tcc');
  const xa = new PhaseTwoEngine(ctx, processor, 'xa');
  const sagaProcessor = new SagaProcessor(executor);
  const saga = new SagaEngine(ctx, sagaProcessor);
  const workflow = new WorkflowEngine(ctx);
  const scheduler = new Scheduler(ctx, { msg: processor, saga: sagaProcessor, workflow: new WorkflowProcessor(executor) });
  const retention = new RetentionJob(ctx);
  const vacuum = new VacuumJob(ctx);
  let draining = false;
  const access = { apiTokens: config.apiTokens, operatorTokens: config.operatorTokens };
  // Loaded only when configured: the drains bring the Postgres and MySQL clients.
  const outboxes: OutboxDrains | undefined =
    config.outboxes.length > 0
      ? new (await import('./outbox-drains.js')).OutboxDrains(config.outboxes, { relay, logger, metrics })
      : undefined;
  const health = new HealthWatch({ config, database, relay, metrics, logger: logger.child({ component: 'health' }), nodeId, outboxes });
  const topics = new Topics(ctx);
  const server = await buildServer({
    logger,
    database,
    metrics,
    queries: new TransactionQueries(ctx),
    topics,
    operator: new OperatorActions({ database, relay, config, logger: logger.child({ component: 'operator' }) }),
    consumerParked: new ConsumerParked({ ...ctx, logger: logger.child({ component: 'operator' }) }),
    msg,
    saga,
    tcc,
    xa,
    workflow,
    version,
    draining: () => draining,
    access,
    outboxes,
    notReady: () => health.problems(),
  });
  // gRPC listens first: once /api/health answers (HTTP), both APIs take calls.
  const grpc: GrpcApi | undefined =
    config.grpcPort === 0
      ? undefined
      : // Loaded only when served: gRPC's client and protobuf loader cost a coordinator without it memory.
        await (
          await import('./server/grpc-server.js')
        ).startGrpcApi(config.host, config.grpcPort, {
          logger,
          metrics,
          dtm: dtmOperations({ msg, saga, tcc, xa, workflow }),
          topics,
          access,
          draining: () => draining,
        });
  const address = await server.listen({ port: config.port, host: config.host }).catch(async (err: unknown) => {
    await grpc?.close(0);
    throw err;
  });
  logExposure(config, logger);
  scheduler.start();
  retention.start();
  vacuum.start();
  outboxes?.start();
  health.start();
  // Replies to unfinished sagas may wait in the brokers (sent while no coordinator ran): read them now.
  for (const url of await pendingSagaBrokerUrls(database)) replies.listen(url);
  logger.info({ address, grpc: grpc?.address, store: database.kind, nodeId, version, replyTopic }, 'coordinator started');

  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      draining = true;
      health.stop();
      logger.info({ inFlight: inFlight.busy }, 'coordinator stopping');
      await replies.close();
      await scheduler.stop();
      await retention.stop();
      await vacuum.stop();
      // Keep-alive clients may hold connections for a long time: answer with "Connection: close"
      // while draining (build-server.ts), and cut what is still open when the timeout is over.
      const deadline = Date.now() + config.shutdownTimeout * 1000;
      let timer: NodeJS.Timeout | undefined;
      await Promise.all([
        Promise.race([server.close(), new Promise((resolve) => (timer = setTimeout(resolve, config.shutdownTimeout * 1000)))]),
        grpc?.close(config.shutdownTimeout * 1000),
      ]);
      clearTimeout(timer);
      server.server.closeAllConnections();
      const drained = await inFlight.drain(Math.max(0, deadline - Date.now()));
      const released = await releaseLeases(database, nodeId).catch(() => 0);
      await outboxes?.stop();
      await relay.close();
      await database.close();
      logger.info({ drained, released }, 'coordinator stopped');
    })());
  return { url: address, nodeId, stop, [Symbol.asyncDispose]: stop };
}

/** Says at start how the coordinator is exposed, as Redis does in protected mode. */
function logExposure(config: Config, logger: Logger): void {
  const tokens = { apiTokens: config.apiTokens.length, operatorTokens: config.operatorTokens.length };
  if (tokens.apiTokens + tokens.operatorTokens > 0)
    logger.info({ host: config.host, ...tokens }, 'tokens required on every route but ping and health');
  else if (isLoopbackHost(config.host))
    logger.info({ host: config.host }, 'protected mode: no token configured, so only this machine can connect (docs/security.md)');
  else
    logger.warn(
      { host: config.host },
      'insecure: no token configured and listening beyond loopback; anyone who reaches the port can abort, redrive and read payloads',
    );
}
