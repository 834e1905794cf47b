/** Concord's SDK: everything a service imports, as `@concord/sdk`. */
export { Msg, type MsgOptions, type DestinationOptions } from './msg.js';
export { MsgBatch } from './msg-batch.js';
export { MsgCoalescer, type MsgCoalescerOptions } from './msg-coalescer.js';
export type { BatchItem } from '../schemas/batch.js';
export { CoordinatorClient, type ClientOptions } from './coordinator-client.js';
export { BranchBarrier, ensureBarrierTable, type BarrierSource, type SqlBarrierSource } from './barrier.js';
export { type RedisLike, type RedisAdjustment } from './barrier-redis.js';
export { inMysqlTransaction, mysqlExecutor, type MysqlSource } from './mysql-executor.js';
export { BranchFailure, BranchOngoing, isBranchFailure, isBranchOngoing, dtmAnswer } from './errors.js';
export { inTransaction, pgExecutor, drizzleExecutor, type SqlExecutor, type TransactionSource, type DrizzleLike } from './sql-executor.js';
export { fastifyBranch, fastifyQueryPrepared, fastifyWorkflow, type BranchHandler } from './adapters/fastify.js';
export { expressBranch, expressQueryPrepared, expressWorkflow } from './adapters/express.js';
export { ConcordError, isConcordError, type ErrorCode } from '../schemas/errors.js';
export { barrierDdlPostgres, barrierDdlMysql } from '../schemas/db/barrier.js';
export type { BranchCallQuery } from '../schemas/dtm.js';
export {
  consume,
  type Consumer,
  type ConsumeOptions,
  type ParkedReportOptions,
  type ConsumeSource,
  type ConsumeHandler,
  type ConsumedMessage,
  type KafkaSource,
  type RabbitSource,
} from './consume.js';
export { ensureInboxTables, type ParkedMessage, type InboxMessage } from './inbox.js';
export { inboxDdlPostgres } from '../schemas/db/inbox.js';
export { Saga, type SagaOptions, type StepOptions } from './saga.js';
export { tcc, Tcc, type TccOptions } from './tcc.js';
export { xa, Xa, type XaOptions } from './xa.js';
export {
  xaLocal,
  xaPhase2,
  xaRecover,
  type XaLocalOptions,
  type XaRecoverOptions,
  type XaRecovery,
  type XaConnection,
  type XaConnectionOf,
  type XaDatabase,
} from './xa-local.js';
export { Workflows, Workflow, type WorkflowsOptions, type WorkflowFunction, type StepDefinition, type StepContext } from './workflow.js';
export {
  participant,
  type Participant,
  type ParticipantOptions,
  type ParticipantKafkaSource,
  type ParticipantRabbitSource,
  type SagaCommand,
  type CommandHandler,
} from './participant.js';
export { commandHeaders, type SagaReply } from '../schemas/saga.js';
export { outbox, ensureOutboxTable, type OutboxPublishOptions } from './outbox.js';
export { nativeOutboxDdlPostgres, nativeOutboxNotifyDdlPostgres, nativeOutboxMapping } from '../schemas/db/outbox.js';
export {
  grpcBranch,
  grpcQueryPrepared,
  grpcBranchService,
  barrierFromGrpc,
  dtmQueryFromGrpc,
  type GrpcBranchHandler,
  type GrpcUnaryHandler,
  type GrpcUnaryCallLike,
  type GrpcMetadataLike,
  type GrpcStatusError,
} from './adapters/grpc.js';
