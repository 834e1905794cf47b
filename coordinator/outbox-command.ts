/**
 * `concord outbox …`: inspect an outbox table through a mapping, drain it to the brokers, print
 * the native outbox's SQL. Broker connections come from the coordinator's own configuration
 * (--config, CONCORD_KAFKA_BROKERS, CONCORD_AMQP_URL, CONCORD_CONNECTIONS).
 */
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Command, Option } from 'commander';
import pg from 'pg';
import { pino, type Logger } from 'pino';
import { DestinationPolicy } from '../relay/destination-policy.js';
import { createGrpcPublisher } from '../relay/grpc.js';
import { createHttpPublisher } from '../relay/http.js';
import { createKafkaPublisher } from '../relay/kafka.js';
import { cutoverReport } from '../relay/outbox/cutover.js';
import { OutboxDrain } from '../relay/outbox/drain.js';
import { inspectOutbox } from '../relay/outbox/inspect.js';
import { redriveParked } from '../relay/outbox/redrive.js';
import { checkMapping, parseMapping, type CheckedMapping } from '../relay/outbox/mapping-check.js';
import { isMysqlPool, openOutboxPool, outboxDb, type OutboxPool } from '../relay/outbox/outbox-db.js';
import { Relay } from '../relay/publisher.js';
import { createRabbitPublisher } from '../relay/rabbitmq.js';
import type { OutboxMapping } from '../schemas/outbox.js';
import { brokerConnections, loadConfig, type Config } from '../schemas/config.js';
import {
  nativeOutboxChannel,
  nativeOutboxDdlPostgres,
  nativeOutboxMapping,
  nativeOutboxNotifyDdlPostgres,
  outboxStateDdlPostgres,
} from '../schemas/db/outbox.js';
import { isConcordError } from '../schemas/errors.js';
import { dropLogical, logicalDdl, logicalNames, logicalNamesIn } from '../relay/outbox/logical-slot.js';

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** Mapping keys settable as flags (--table, --payload-column, …), over those of --mapping <file>. */
const mappingFlags = [
  ['table', 'the outbox table, optionally schema-qualified'],
  ['name', 'names the drain (cursor, parked rows, lock); default: the table'],
  ['idColumn', 'id column (default id)'],
  ['destinationColumn', 'column holding each row’s destination'],
  ['destination', 'one fixed destination URL for every row'],
  ['destinationTemplate', 'e.g. kafka://default/{destination}'],
  ['keyColumn', 'message key column'],
  ['payloadColumn', 'payload column'],
  ['payloadEncoding', 'text, json, bytea or base64 (default text)'],
  ['headersColumn', 'JSON object of extra headers'],
  ['createdAtColumn', 'timestamp of each row, for the oldest pending age'],
  ['published', 'flag, delete or none (Concord keeps a cursor)'],
  ['publishedColumn', 'with published=flag: the boolean, integer or timestamp column set once published'],
  ['messageId', 'message-id header template (default outbox:{table}:{id})'],
  ['notifyChannel', 'LISTEN channel a trigger notifies on insert'],
  ['read', 'table (default) or logical: stream inserts from a replication slot (wal_level=logical)'],
] as const;

const kebab = (key: string) => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

function withMappingOptions(command: Command): Command {
  command
    .requiredOption('--database <url>', 'postgres:// or mysql:// URL of the database holding the outbox (env: CONCORD_OUTBOX_DATABASE)')
    .option('--mapping <file>', 'JSON file with the mapping; flags below override its keys')
    .option('--native', "the SDK's native outbox table (concord_outbox); flags below override its mapping")
    .option('--config <file>', "the coordinator's JSON config file, for broker connections (env: CONCORD_CONFIG)")
    .addOption(new Option('--kafka-brokers <list>', 'Kafka brokers of the connection "default" (env: CONCORD_KAFKA_BROKERS)'))
    .addOption(new Option('--amqp-url <url>', 'RabbitMQ URL of the connection "default" (env: CONCORD_AMQP_URL)'));
  const database = command.options.find((o) => o.long === '--database')!;
  database.env('CONCORD_OUTBOX_DATABASE');
  for (const [key, what] of mappingFlags) command.option(`--${kebab(key)} <value>`, what);
  return command;
}

function mappingFrom(flags: Record<string, string | undefined>): unknown {
  let mapping: Record<string, unknown> = flags.native !== undefined ? { ...nativeOutboxMapping } : {};
  if (flags.mapping) {
    try {
      mapping = JSON.parse(readFileSync(flags.mapping, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new Error(`cannot read mapping file ${flags.mapping}: ${(err as Error).message}`, { cause: err });
    }
  }
  for (const [key] of mappingFlags) if (flags[key] !== undefined) mapping[key] = flags[key];
  return mapping;
}

function relayFor(config: Config, logger: Logger): Relay {
  const brokers = brokerConnections(config);
  const destinations = new DestinationPolicy({ allow: config.allowDestinations, deny: config.denyDestinations });
  return new Relay([
    createHttpPublisher({ answerBytes: config.answerBytes, destinations }),
    createGrpcPublisher({ destinations }),
    createKafkaPublisher(brokers.kafka, logger.child({ component: 'relay.kafka' })),
    createRabbitPublisher(brokers.rabbitmq, logger.child({ component: 'relay.rabbitmq' })),
  ]);
}

/** Opens the database and the relay, checks the mapping, runs `fn`, closes everything; exits 2 on a bad mapping. */
async function withOutbox(
  flags: Record<string, string | undefined>,
  fn: (ctx: { pool: OutboxPool; checked: CheckedMapping; relay: Relay; logger: Logger }) => Promise<void>,
): Promise<void> {
  let config: Config;
  let mapping: OutboxMapping;
  try {
    config = loadConfig({ env: process.env, file: flags.config, overrides: { kafkaBrokers: flags.kafkaBrokers, amqpUrl: flags.amqpUrl } });
    mapping = parseMapping(mappingFrom(flags));
  } catch (err) {
    console.error(isConcordError(err) || err instanceof Error ? err.message : err);
    process.exit(2);
  }
  const logger = pino({ level: config.logLevel }, pino.destination(2));
  const pool = openOutboxPool(flags.database!, 6);
  if (!isMysqlPool(pool)) pool.on('error', (err) => logger.warn({ err }, 'idle outbox connection lost'));
  const relay = relayFor(config, logger);
  try {
    let checked: CheckedMapping;
    try {
      if (flags.native !== undefined && mapping.notifyChannel === undefined && !isMysqlPool(pool)) {
        // The trigger of ensureOutboxTable({ notify: true }): listen instead of polling.
        const { rows } = await outboxDb(pool).query(`select 1 from pg_trigger where tgname = 'concord_outbox_notify'`);
        if (rows.length > 0) mapping = { ...mapping, notifyChannel: nativeOutboxChannel };
      }
      checked = await checkMapping(pool, mapping);
    } catch (err) {
      if (!isConcordError(err)) throw err;
      console.error(err.message);
      process.exitCode = 2;
      return;
    }
    await fn({ pool, checked, relay, logger });
  } finally {
    await relay.close();
    await pool.end();
  }
}

export function outboxCommand(): Command {
  const outbox = new Command('outbox').description('Adopt an outbox table: inspect it, drain it to Kafka, RabbitMQ or HTTP.');

  withMappingOptions(outbox.command('inspect'))
    .description('Pending rows, the oldest one’s age, and a dry run of the mapping on the first pending rows.')
    .option('--sample <n>', 'rows to dry-run (default 20)', '20')
    .action(async (flags: Record<string, string | undefined>) => {
      await withOutbox(flags, async ({ pool, checked, relay }) => {
        const report = await inspectOutbox(pool, checked, relay, Number(flags.sample));
        const m = checked.mapping;
        console.log(
          `outbox ${m.table} (drain "${checked.name}", published=${m.published}${m.publishedColumn ? ` via ${m.publishedColumn}` : ''})`,
        );
        if (report.cursor !== undefined) console.log(`cursor: ${report.cursor}`);
        if (report.slot)
          console.log(
            `replication slot ${report.slot.slot}: ${report.slot.active ? 'streaming' : 'not read by any drain'}, lag ${mib(report.slot.lagBytes)}, holds ${mib(report.slot.retainedBytes)} of WAL` +
              (m.read === 'logical' ? '' : ' (left from read=logical: drop it with `concord outbox drop-slot`)'),
          );
        else if (m.read === 'logical') console.log('replication slot: not created yet (the drain creates it)');
        if (m.read === 'logical' && m.published === 'none')
          console.log('pending rows: what the slot has not confirmed (its lag above; with published=none no table cursor moves)');
        else console.log(`pending rows: ${report.pending}`);
        console.log(
          `oldest pending: ${report.oldestAgeSeconds === null ? 'unknown (no createdAtColumn, or none pending)' : `${report.oldestAgeSeconds.toFixed(1)} s`}`,
        );
        console.log(`dry run of ${report.sample.length} pending row(s):`);
        for (const r of report.sample)
          console.log(
            r.error
              ? `  ${r.id}  PARK  ${r.error}`
              : `  ${r.id}  ok    ${r.url}  key=${r.key ?? '-'}  ${r.bytes} bytes  message-id=${r.messageId}`,
          );
        const bad = report.sample.filter((r) => r.error).length;
        console.log(`${report.sample.length - bad} ok, ${bad} would be parked`);
      });
    });

  withMappingOptions(outbox.command('drain'))
    .description('Publish the outbox’s rows, beside or instead of the old poller; prints progress every few seconds.')
    .option('--batch-size <n>', 'rows per read and per produce (default 500)')
    .option('--poll-ms <ms>', 'wait between empty reads (default 10, 1000 with a notify channel)')
    .option('--progress-ms <ms>', 'how often to print progress', '5000')
    .option('--exit-when-idle', 'exit once nothing is pending')
    .action(async (flags: Record<string, string | undefined>) => {
      await withOutbox(flags, async ({ pool, checked, relay, logger }) => {
        const abort = new AbortController();
        for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => abort.abort());
        // mapping.partitions > 1: one drain per part, each behind its own lock (the same locks as
        // the coordinators' drains of this mapping), all in this process.
        const count = checked.mapping.partitions;
        const newDrain = (index: number) =>
          new OutboxDrain({
            pool,
            mapping: checked,
            relay,
            logger,
            ...(flags.batchSize ? { batchSize: Number(flags.batchSize) } : {}),
            ...(flags.pollMs ? { pollMs: Number(flags.pollMs) } : {}),
            ...(count > 1 ? { partition: { index, count } } : {}),
            stopWhenIdle: flags.exitWhenIdle !== undefined,
            signal: abort.signal,
          });
        const drains = Array.from({ length: count }, (_, index) => newDrain(index));
        // Counts of drains that ended (a lost database session ends one; the next takes over).
        const before = { published: 0, parked: 0, retries: 0 };
        const stats = () =>
          drains.reduce(
            (sum, d) => ({
              published: sum.published + d.stats.published,
              parked: sum.parked + d.stats.parked,
              retries: sum.retries + d.stats.retries,
            }),
            before,
          );
        const started = Date.now();
        let last = { at: started, published: 0 };
        const progress = () => {
          const now = Date.now();
          const { published, parked, retries } = stats();
          const rate = ((published - last.published) * 1000) / Math.max(1, now - last.at);
          const { rss, heapUsed } = process.memoryUsage();
          console.log(
            `outbox ${checked.name}: published ${published} (${Math.round(rate)}/s), parked ${parked}, retries ${retries}, RSS ${Math.round(rss / 2 ** 20)} MiB (heap ${Math.round(heapUsed / 2 ** 20)})`,
          );
          last = { at: now, published };
        };
        const timer = setInterval(progress, Number(flags.progressMs));
        const runPart = async (index: number) => {
          for (;;) {
            try {
              await drains[index]!.run();
              break;
            } catch (err) {
              if (abort.signal.aborted) break;
              // The database went away (a restart, a failover): what was not marked is published again.
              logger.warn({ err, drain: checked.name }, 'outbox drain stopped; starting again in 1 s');
              console.log(`outbox ${checked.name}: ${(err as Error).message}; starting again`);
              await sleep(1_000, undefined, { signal: abort.signal }).catch(() => undefined);
              if (abort.signal.aborted) break;
              const ended = drains[index]!.stats;
              before.published += ended.published;
              before.parked += ended.parked;
              before.retries += ended.retries;
              drains[index] = newDrain(index);
            }
          }
        };
        try {
          await Promise.all(drains.map((_, index) => runPart(index)));
        } finally {
          clearInterval(timer);
          const { published, parked } = stats();
          const seconds = (Date.now() - started) / 1000;
          const usage = process.resourceUsage();
          const cpu = (usage.userCPUTime + usage.systemCPUTime) / 1e6;
          console.log(
            `outbox ${checked.name}: done, published ${published}, parked ${parked} in ${seconds.toFixed(1)} s, peak RSS ${Math.round(usage.maxRSS / 1024)} MiB, CPU ${cpu.toFixed(2)} s`,
          );
        }
      });
    });

  withMappingOptions(outbox.command('cutover'))
    .description('Whether the old poller can be switched off: published by Concord, duplicates, parked, still pending, lag.')
    .option('--inbox-database <url>', "a consumer's database (the SDK's inbox), to count the rows it applied")
    .option('--consumer <name>', 'with --inbox-database: the consumer name given to consume()')
    .option('--max-lag <seconds>', 'ready only while the oldest pending row is younger than this', '5')
    .option('--json', 'print the report as JSON')
    .action(async (flags: Record<string, string | undefined>) => {
      if ((flags.inboxDatabase === undefined) !== (flags.consumer === undefined)) {
        console.error('--inbox-database and --consumer go together');
        process.exit(2);
      }
      await withOutbox(flags, async ({ pool, checked }) => {
        const inboxDb = flags.inboxDatabase ? new pg.Pool({ connectionString: flags.inboxDatabase, max: 1 }) : undefined;
        try {
          const r = await cutoverReport(pool, checked, {
            maxLagSeconds: Number(flags.maxLag),
            ...(inboxDb ? { inbox: { db: inboxDb, consumer: flags.consumer! } } : {}),
          });
          if (flags.json !== undefined) return console.log(JSON.stringify(r, null, 2));
          const since = r.firstAt ? ` since ${r.firstAt.toISOString()} (last ${r.lastAt!.toISOString()})` : '';
          console.log(`outbox ${checked.mapping.table} (drain "${r.drain}", published=${checked.mapping.published})`);
          console.log(`published by Concord: ${r.published}${since}`);
          console.log(
            r.duplicates === null
              ? 'duplicates: not known with published=none (Concord does not touch the table); see the inbox'
              : `duplicates: ${r.duplicates} (published by the old poller too; an inbox applies each once)`,
          );
          console.log(`parked: ${r.parked}`);
          console.log(`still pending: ${r.pending}`);
          console.log(
            `lag: ${r.oldestPendingSeconds === null ? 'unknown (no createdAtColumn, or none pending)' : `${r.oldestPendingSeconds.toFixed(1)} s`}`,
          );
          if (r.inbox) console.log(`inbox of ${r.inbox.consumer}: ${r.inbox.applied} message(s) of this outbox applied`);
          console.log(r.verdict);
        } finally {
          await inboxDb?.end();
        }
      });
    });

  withMappingOptions(outbox.command('redrive'))
    .description('Publish parked rows again (all of this drain’s, or those of --row); delivered ones leave the parked table.')
    .option('--row <id...>', 'only these row ids')
    .action(async (flags: Record<string, string | undefined>) => {
      await withOutbox(flags, async ({ pool, checked, relay }) => {
        const ids = flags.row as unknown as string[] | undefined;
        const result = await redriveParked(pool, checked, relay, ids ? { ids } : {});
        for (const id of result.delivered) console.log(`  ${id}  delivered`);
        for (const f of result.failed) console.log(`  ${f.id}  still parked: ${f.error}`);
        console.log(`outbox ${checked.name}: redrive delivered ${result.delivered.length}, ${result.failed.length} still parked`);
        if (result.failed.length > 0) process.exitCode = 1;
      });
    });

  withMappingOptions(outbox.command('drop-slot'))
    .description('Leave read=logical: drop the drain’s replication slot (a slot nobody reads holds WAL for ever) and its publication.')
    .action(async (flags: Record<string, string | undefined>) => {
      await withOutbox(flags, async ({ pool, checked }) => {
        if (isMysqlPool(pool)) throw new Error('MySQL/MariaDB outboxes have no replication slot');
        const names = await logicalNamesIn(outboxDb(pool), checked.name);
        const dropped = await dropLogical(outboxDb(pool), names);
        console.log(
          `outbox ${checked.name}: slot ${names.slot} ${dropped.slot ? 'dropped' : 'did not exist'}, publication ${names.publication} ${dropped.publication ? 'dropped' : 'did not exist'}`,
        );
      });
    });

  outbox
    .command('sql')
    .description(
      'Print the SQL of the native outbox table (SDK outbox.publish) and of Concord’s cursor and parked tables; with --logical, the publication and slot of read=logical.',
    )
    .option('--notify', 'also the trigger that wakes the drain on insert')
    .option('--logical', 'the publication and replication slot of read=logical for --table (and --name), in --database')
    .option('--database <url>', 'with --logical: the database (slot names carry a hash of its name)')
    .option('--table <table>', 'with --logical: the outbox table')
    .option('--name <name>', 'with --logical: the drain name (default: the table)')
    .action(async (flags: { notify?: boolean; logical?: boolean; database?: string; table?: string; name?: string }) => {
      if (!flags.logical) {
        process.stdout.write(nativeOutboxDdlPostgres + outboxStateDdlPostgres + (flags.notify ? nativeOutboxNotifyDdlPostgres : ''));
        return;
      }
      if (!flags.table || !flags.database) {
        console.error('--logical needs --table and --database');
        process.exit(2);
      }
      const database = decodeURIComponent(new URL(flags.database).pathname.slice(1));
      process.stdout.write(logicalDdl(logicalNames(database, flags.name ?? flags.table), flags.table));
    });
  return outbox;
}
