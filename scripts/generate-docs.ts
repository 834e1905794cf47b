/**
 * Writes the generated docs from their single sources: docs/configuration.md from
 * schemas/config.ts, docs/errors.md from schemas/errors.ts, docs/openapi.json from the routes.
 * `--check` fails (exit 1) when a committed file differs, as CI runs it.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { configKeys, configSchema, envName, flagName } from '../schemas/config.js';
import { errorCodes } from '../schemas/errors.js';
import { createMetrics } from '../coordinator/metrics.js';
import { buildServer } from '../coordinator/server/build-server.js';
import type { StoreProbe } from '../coordinator/server/ops-routes.js';
import type { TransactionQueries } from '../coordinator/engine/queries.js';
import type { Topics } from '../coordinator/engine/topics.js';
import type { MsgEngine } from '../coordinator/engine/msg.js';
import type { SagaEngine } from '../coordinator/engine/saga.js';
import type { PhaseTwoEngine } from '../coordinator/engine/phase-two.js';
import type { WorkflowEngine } from '../coordinator/engine/workflow.js';
import { version } from '../coordinator/app.js';
import type { ConsumerParked } from '../coordinator/engine/consumer-parked.js';
import type { OperatorActions } from '../coordinator/engine/operator.js';

export function renderConfigurationDoc(): string {
  const rows = configKeys.map((key) => {
    const field = configSchema.shape[key];
    const def = defaultOf(key);
    return `| \`${key}\` | \`${flagName(key)}\` | \`${envName(key)}\` | ${def === undefined ? '—' : `\`${JSON.stringify(def)}\``} | ${field.description ?? ''} |`;
  });
  return `# Configuration

Generated from \`schemas/config.ts\` by \`npm run generate\`; do not edit by hand.

Sources, weakest first: defaults, a JSON file (\`--config\` or \`CONCORD_CONFIG\`), \`CONCORD_*\`
environment variables, command-line flags. Durations are in seconds and may be fractions.
A bad value stops the coordinator at start with a message naming the key, its flag and its variable.

| key | flag | environment | default | meaning |
| --- | --- | --- | --- | --- |
${rows.join('\n')}
`;
}

function defaultOf(key: (typeof configKeys)[number]): unknown {
  const all = configSchema.safeParse({});
  return all.success ? (all.data as Record<string, unknown>)[key] : undefined;
}

export function renderErrorsDoc(): string {
  const rows = Object.entries(errorCodes).map(([code, e]) => `| \`${code}\` | ${e.status} | ${e.meaning} |`);
  return `# Errors

Generated from \`schemas/errors.ts\` by \`npm run generate\`; do not edit by hand. A test fails when
this page and the table in the code differ.

Every error reply has the body \`{ "code", "message", "field"? }\`. \`field\` names the request field
at fault (a dotted path such as \`steps.0.action\`), and the message names it too. Replies with
status 409 add \`"dtm_result": "FAILURE"\` and replies with 425 add \`"dtm_result": "ONGOING"\`, so
DTM's clients read them as DTM's own answers. Codes are stable and never renamed.

| code | HTTP status | meaning |
| --- | --- | --- |
${rows.join('\n')}
`;
}

export async function renderOpenApi(): Promise<string> {
  // The routes only need their dependencies when a request comes; the document needs none.
  const app = await buildServer({
    logger: pino({ level: 'silent' }),
    database: {} as StoreProbe,
    queries: {} as TransactionQueries,
    topics: {} as Topics,
    operator: {} as OperatorActions,
    consumerParked: {} as ConsumerParked,
    metrics: createMetrics(),
    msg: {} as MsgEngine,
    saga: {} as SagaEngine,
    tcc: {} as PhaseTwoEngine,
    xa: {} as PhaseTwoEngine,
    workflow: {} as WorkflowEngine,
    version,
    draining: () => false,
  });
  await app.ready();
  const doc = JSON.stringify(app.swagger(), null, 2) + '\n';
  await app.close();
  return doc;
}

const root = new URL('../', import.meta.url).pathname.replace(/\/dist\/$/, '/');

async function main(): Promise<void> {
  const check = process.argv.includes('--check');
  const files: [string, string][] = [
    ['docs/configuration.md', renderConfigurationDoc()],
    ['docs/errors.md', renderErrorsDoc()],
    ['docs/openapi.json', await renderOpenApi()],
  ];
  let stale = 0;
  for (const [path, content] of files) {
    const current = await readFile(root + path, 'utf8').catch(() => '');
    if (current === content) continue;
    if (check) {
      console.error(`${path} is out of date: run npm run generate`);
      stale++;
    } else {
      await writeFile(root + path, content);
      console.log(`wrote ${path}`);
    }
  }
  process.exit(stale > 0 ? 1 : 0);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
