#!/usr/bin/env node
/** `concord start` runs a coordinator; `concord barrier-sql` prints the barrier table's DDL; `concord outbox` adopts an outbox table. */
import { Command, Option } from 'commander';
import { createLogger } from './logger.js';
import { configKeys, configSchema, envName, flagName, loadConfig, type ConfigKey } from '../schemas/config.js';
import { barrierDdlMysql, barrierDdlPostgres } from '../schemas/db/barrier.js';
import { isConcordError } from '../schemas/errors.js';
import { version } from './version.js';

const program = new Command('concord').version(version).description('Distributed-transaction coordinator (DTM-compatible).');

const start = program
  .command('start')
  .description('Run a coordinator. Every option can also be set as a CONCORD_* environment variable or in a JSON --config file.')
  .option('--config <file>', 'JSON file with any of the options below (env: CONCORD_CONFIG)');
// Options whose default is a boolean are switches (--insecure), the rest take a value.
const defaults = configSchema.parse({}) as Record<ConfigKey, unknown>;
for (const key of configKeys) {
  const described = configSchema.shape[key].description ?? '';
  const flag = typeof defaults[key] === 'boolean' ? flagName(key) : `${flagName(key)} <value>`;
  start.addOption(new Option(flag, `${described} (env: ${envName(key)})`));
}

start.action(async (flags: Record<string, string | undefined>) => {
  let config;
  try {
    const overrides = Object.fromEntries(configKeys.map((key: ConfigKey) => [key, flags[key]]));
    config = loadConfig({ env: process.env, overrides, file: flags.config });
  } catch (err) {
    console.error(isConcordError(err) ? err.message : err);
    process.exit(2);
  }
  const logger = await createLogger(config);
  // Handlers first: a SIGTERM that arrives while the coordinator is still starting (it answers
  // /api/health as soon as it listens) waits for the start to finish, then stops it gracefully.
  let stop: (() => Promise<void>) | undefined;
  let requested = false;
  const shutdown = () => {
    if (!stop) return;
    stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.on(signal, () => {
      // A second signal does not wait for the graceful stop.
      if (requested) process.exit(1);
      logger.info({ signal }, 'shutdown requested');
      requested = true;
      shutdown();
    });
  }
  try {
    // Loaded here: the other commands (outbox drain, barrier-sql) do without the coordinator's modules.
    const { startCoordinator } = await import('./app.js');
    const coordinator = await startCoordinator(config, logger);
    stop = () => coordinator.stop();
  } catch (err) {
    // A refusal we explain (store in use, newer store, unreachable) gets its message alone; anything else its stack.
    if (isConcordError(err)) logger.fatal({ code: err.code, field: err.field }, `coordinator failed to start: ${err.message}`);
    else logger.fatal({ err }, 'coordinator failed to start');
    process.exit(1);
  }
  if (requested) shutdown();
});

program
  .command('barrier-sql')
  .description("Print the SQL that creates the barrier table in a service's Postgres (or MySQL/MariaDB) database.")
  .option('--mysql', 'the MySQL/MariaDB table instead')
  .action((options: { mysql?: boolean }) => {
    process.stdout.write(options.mysql ? barrierDdlMysql : barrierDdlPostgres);
  });

// The outbox tools bring database and broker clients a running coordinator does without: `start`,
// which runs for days, does not load them.
if (process.argv.slice(2).find((arg) => !arg.startsWith('-')) !== 'start') {
  program.addCommand((await import('./outbox-command.js')).outboxCommand());
}

await program.parseAsync();
