/**
 * The coordinator's configuration: one zod object with defaults. Sources, weakest first: the
 * defaults, a JSON config file, CONCORD_* environment variables, command-line flags. Nothing else
 * in Concord reads process.env. docs/configuration.md is generated from this schema.
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { destinationListSchema } from './destinations.js';
import { maxDurationSeconds } from './durations.js';
import { ConcordError } from './errors.js';
import { outboxDrainConfigSchema } from './outbox.js';

const secondsSchema = (min: number) => z.coerce.number().min(min).max(maxDurationSeconds);

/** A broker connection that destinations name: kafka://<name>/<topic>, rabbitmq://<name>/<exchange>/<key>. */
export const connectionSchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('kafka'), brokers: z.array(z.string().min(1)).min(1) }),
  z.object({ kind: z.literal('rabbitmq'), url: z.string().regex(/^amqps?:\/\//, 'an amqp:// or amqps:// URL') }),
]);

/** Environment variables and flags carry JSON as text. */
const jsonText = (v: unknown) => {
  if (typeof v !== 'string') return v;
  try {
    return JSON.parse(v) as unknown;
  } catch {
    return v; // the schema then reports what it expected
  }
};

/** Tokens travel in URL paths (/t/<token>/api/dtmsvr), so only characters a path carries unescaped. */
const tokenListSchema = z.preprocess(
  (v) =>
    typeof v === 'string' && !v.trim().startsWith('[')
      ? v
          .split(',')
          .map((t) => t.trim())
          .filter(Boolean)
      : jsonText(v),
  z.array(z.string().regex(/^[A-Za-z0-9._~-]{16,256}$/, '16 to 256 characters of A-Z a-z 0-9 . _ ~ -')),
);

/** Whom an operator action is recorded under when its token was configured without a name (and when no token is configured). */
export const defaultOperatorName = 'operator';

/**
 * Operator tokens with the name each one's actions are recorded under: `name:token` or a bare
 * token (named "operator"), comma-separated, or a JSON array of those or of {"name", "token"}.
 * Tokens never hold ":", so the first one splits.
 */
const operatorTokenListSchema = z.preprocess(
  (v) => {
    const list =
      typeof v === 'string' && !v.trim().startsWith('[')
        ? v
            .split(',')
            .map((t) => t.trim())
            .filter(Boolean)
        : jsonText(v);
    if (!Array.isArray(list)) return list;
    return list.map((entry: unknown) => {
      if (typeof entry !== 'string') return entry;
      const colon = entry.indexOf(':');
      return colon < 0 ? { token: entry } : { name: entry.slice(0, colon), token: entry.slice(colon + 1) };
    });
  },
  z.array(
    z
      .object({
        name: z
          .string()
          .regex(/^[A-Za-z0-9._@-]{1,64}$/, '1 to 64 characters of A-Z a-z 0-9 . _ @ -')
          .default(defaultOperatorName),
        token: z.string().regex(/^[A-Za-z0-9._~-]{16,256}$/, '16 to 256 characters of A-Z a-z 0-9 . _ ~ -'),
      })
      .strict(),
  ),
);

/** True for an address only this machine reaches: without a token the coordinator listens on nothing else. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || host === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

export const configSchema = z
  .object({
    store: z
      .string()
      .min(1)
      .default('./concord-data')
      .describe('Where transactions are kept: a directory for the embedded PGlite database, or a postgres:// URL.'),
    port: z.coerce.number().int().min(0).max(65_535).default(36_789).describe('HTTP port (DTM uses 36789).'),
    grpcPort: z.coerce
      .number()
      .int()
      .min(0)
      .max(65_535)
      .default(36_790)
      .describe("gRPC port of DTM's gRPC API, on the same host and with the same tokens (DTM uses 36790); 0 turns it off (docs/grpc.md)."),
    host: z
      .string()
      .min(1)
      .default('127.0.0.1')
      .describe('Address to listen on. Any other than loopback needs apiTokens or insecure (docs/security.md).'),
    apiTokens: tokenListSchema
      .default([])
      .describe(
        'Tokens callers must present, comma-separated or a JSON array (several for rotation): in the server URL, `http://host:36789/t/<token>/api/dtmsvr`, or as `Authorization: Bearer <token>`. None: no token is asked and the coordinator keeps to loopback.',
      ),
    operatorTokens: operatorTokenListSchema
      .default([])
      .describe(
        'Tokens for operator actions (redrive, retry, force-stop, topic administration, payloads and header values in /query and /all); they pass wherever an API token is asked. Each may carry the name its actions are recorded under: `alice:<token>,bob:<token>`, or a JSON array of {"name", "token"}; a bare token is recorded as "operator".',
      ),
    insecure: z
      .union([z.boolean(), z.stringbool()])
      .default(false)
      .describe('Listen on a non-loopback host without any token (anyone who reaches the port may abort, redrive and read payloads).'),
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info').describe('pino log level.'),
    logFormat: z
      .enum(['auto', 'json', 'pretty'])
      .default('auto')
      .describe('Log lines as JSON (one object a line) or pretty (pino-pretty, readable); auto: pretty when stdout is a terminal.'),
    nodeId: z.string().min(1).max(100).optional().describe('Name of this coordinator in row claims; default host-pid-random.'),
    requestTimeout: secondsSchema(0.05).default(3).describe('Seconds a branch or check-back call may take (per message: request_timeout).'),
    answerBytes: z.coerce
      .number()
      .int()
      .min(256)
      .max(16 * 1024 * 1024)
      .default(65_536)
      .describe(
        "Bytes of a branch's or check-back's answer read (ONGOING/FAILURE are looked for in them, last_error shows their start); the rest is read and dropped, or the connection closed.",
      ),
    allowDestinations: destinationListSchema
      .default([])
      .describe(
        'Destinations the HTTP relay may call although denied (by denyDestinations, or link-local and metadata, always denied): addresses, CIDRs, host names, *.domain, or the groups loopback, link-local, metadata, private, any; comma-separated or a JSON array. See docs/outbound-calls.md.',
      ),
    denyDestinations: destinationListSchema
      .default([])
      .describe(
        'Destinations the HTTP relay refuses (branches, check-backs, subscribers, saga steps) besides link-local and cloud metadata, which are always refused; checked on the URL and on every address a name resolves to at each connection; same forms as allowDestinations, e.g. loopback,private.',
      ),
    retryInterval: secondsSchema(0.05)
      .default(10)
      .describe('First retry delay in seconds (per message: retry_interval); doubles per failure.'),
    maxRetryInterval: secondsSchema(0.05).default(300).describe('Cap of the retry delay in seconds; DTM has none.'),
    timeoutToFail: secondsSchema(0.05)
      .default(35)
      .describe('Seconds after which a still-prepared message is checked back (per message: timeout_to_fail).'),
    minLease: secondsSchema(1)
      .default(30)
      .describe("Seconds a node holds a transaction it works on; a dead node's work is taken over after this."),
    pollInterval: secondsSchema(0.01).default(1).describe('Seconds between scans for due work when the last scan found none.'),
    claimBatch: z.coerce.number().int().min(1).max(10_000).default(100).describe('Due transactions claimed per scan.'),
    storePoolSize: z.coerce
      .number()
      .int()
      .min(1)
      .max(200)
      .default(10)
      .describe(
        'Postgres connections per coordinator: half (rounded up) for the hot statements (prepare, submit, settle), the rest (at least one) for everything else.',
      ),
    storeLockTimeout: secondsSchema(0)
      .default(10)
      .describe('Seconds a coordinator waits for another process to let go of the embedded store directory before refusing to start.'),
    retention: z.coerce
      .number()
      .min(0)
      .max(86_400 * 3650)
      .default(604_800)
      .describe(
        'Seconds finished transactions (succeed, failed) are kept after they finish, then deleted with their branches; 0 keeps them forever. needs_attention and unfinished ones are never deleted.',
      ),
    retentionInterval: secondsSchema(0.05).default(60).describe('Seconds between rounds of the retention job.'),
    retentionBatch: z.coerce.number().int().min(1).max(10_000).default(500).describe('Transactions deleted per retention statement.'),
    embeddedVacuumInterval: secondsSchema(0)
      .default(600)
      .describe(
        'Seconds between VACUUM (ANALYZE) runs of the embedded (PGlite) store, which has no autovacuum; 0 turns them off. A Postgres store is left to its server.',
      ),
    shutdownTimeout: secondsSchema(0).default(30).describe('Seconds SIGTERM waits for in-flight work before exiting.'),
    kafkaBrokers: z
      .string()
      .regex(/^[^,\s]+(,[^,\s]+)*$/, 'host:port, comma-separated')
      .optional()
      .describe('Kafka bootstrap servers (host:port, comma-separated) of the connection named "default".'),
    amqpUrl: z
      .string()
      .regex(/^amqps?:\/\//, 'an amqp:// or amqps:// URL')
      .optional()
      .describe('RabbitMQ URL of the connection named "default".'),
    connections: z
      .preprocess(jsonText, z.record(z.string().regex(/^[A-Za-z0-9_-]+$/, 'letters, digits, _ and -'), connectionSchema))
      .default({})
      .describe(
        'Named broker connections, JSON: {"orders": {"kind": "kafka", "brokers": ["h:9092"]}, "jobs": {"kind": "rabbitmq", "url": "amqp://…"}}.',
      ),
    outboxes: z
      .preprocess(jsonText, z.array(outboxDrainConfigSchema))
      .default([])
      .refine((list) => new Set(list.map((o) => o.name ?? o.table)).size === list.length, 'each outbox needs its own name (or table)')
      .describe(
        'Outbox tables this coordinator drains beside its engine (docs/outbox-migration.md), JSON: [{"database": "postgres://…", "table": "outbox", "payloadColumn": "body", "destination": "kafka://default/orders", "published": "delete", "partitions": 4}]; each entry is a mapping plus its database (postgres://, mysql:// or mariadb://).',
      ),
    replyTopic: z
      .string()
      .max(200)
      .regex(/^[A-Za-z0-9._-]*$/, 'letters, digits, ".", "_" and "-"')
      .optional()
      .describe(
        'Kafka topic (on every Kafka connection) and RabbitMQ queue (on every RabbitMQ connection) that saga participants reply on; default concord.saga.replies.<store id>, so coordinators share it exactly when they share a store; "" turns broker saga steps off.',
      ),
    replyTimeout: secondsSchema(0.05)
      .default(30)
      .describe("Seconds a saga broker step waits for its participant's reply (per step: timeout) before the attempt counts as failed."),
    compensateAttempts: z.coerce
      .number()
      .int()
      .min(1)
      .default(10)
      .describe('Runs of a saga compensation before the saga goes to needs_attention (per step: compensate_attempts).'),
    waitResultTimeout: secondsSchema(0)
      .default(30)
      .describe('Seconds a saga submit with wait_result waits for the end before answering 425 (ONGOING).'),
    alertWebhook: z
      .string()
      .url()
      .optional()
      .describe(
        'URL POSTed a JSON alert (docs/operations.md#alerts) when retries pile up, a saga needs attention, delivery stalls, a broker connection is down, an outbox lags or parks rows.',
      ),
    alertRetryLimit: z.coerce.number().int().min(1).default(3).describe('Failed attempts on a branch before the alert webhook is called.'),
    stalledAfter: z.coerce
      .number()
      .min(0)
      .max(maxDurationSeconds)
      .default(60)
      .describe(
        'Seconds after which due work counts as stalled (readiness fails, alert `stalled`): work overdue and unclaimed that long, or an unfinished transaction that old whose last branch call or check-back failed; 0 turns the check off (docs/operations.md).',
      ),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (!isLoopbackHost(c.host) && c.apiTokens.length + c.operatorTokens.length === 0 && !c.insecure) {
      ctx.addIssue({
        code: 'custom',
        path: ['host'],
        message: `listening on ${c.host} without a token lets anyone who reaches the port abort, redrive and read payloads: set apiTokens (--api-tokens, CONCORD_API_TOKENS), or accept it with --insecure (CONCORD_INSECURE=true), or listen on 127.0.0.1`,
      });
    }
  });

export type Config = Readonly<z.infer<typeof configSchema>>;
export type ConfigKey = keyof z.infer<typeof configSchema>;

/** CONCORD_STORE for `store`, CONCORD_REQUEST_TIMEOUT for `requestTimeout`. */
export function envName(key: string): string {
  return `CONCORD_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
}

/** --store for `store`, --request-timeout for `requestTimeout`. */
export function flagName(key: string): string {
  return `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

export const configKeys = Object.keys(configSchema.shape) as ConfigKey[];

export interface LoadConfigOptions {
  /** Environment to read CONCORD_* from (the caller passes process.env). */
  env?: Record<string, string | undefined>;
  /** Values given on the command line; they win over everything else. */
  overrides?: Partial<Record<ConfigKey, unknown>>;
  /** A JSON file; CONCORD_CONFIG in env names one too. */
  file?: string;
}

/** Resolves, validates and freezes the configuration once. Errors name the key and its variable. */
export function loadConfig(options: LoadConfigOptions = {}): Config {
  const env = options.env ?? {};
  const file = options.file ?? env.CONCORD_CONFIG;
  const raw: Record<string, unknown> = file ? readConfigFile(file) : {};
  for (const key of configKeys) {
    const value = env[envName(key)];
    if (value !== undefined && value !== '') raw[key] = value;
  }
  for (const [key, value] of Object.entries(options.overrides ?? {})) {
    if (value !== undefined) raw[key] = value;
  }
  const parsed = configSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? '');
      const where = configKeys.includes(key as ConfigKey) ? ` (${flagName(key)}, ${envName(key)})` : '';
      return issue.code === 'unrecognized_keys' ? `unknown keys ${issue.keys.join(', ')}` : `${key}${where}: ${issue.message}`;
    });
    throw new ConcordError('INVALID_REQUEST', `invalid configuration: ${problems.join('; ')}`, {
      field: String(parsed.error.issues[0]?.path[0] ?? ''),
    });
  }
  return Object.freeze(parsed.data);
}

/**
 * Broker connections by kind and name. kafkaBrokers and amqpUrl are the connections named
 * "default" of their kind; the scheme of a destination says which kind it means.
 */
export function brokerConnections(config: Config): { kafka: Record<string, string[]>; rabbitmq: Record<string, string> } {
  const kafka: Record<string, string[]> = config.kafkaBrokers ? { default: config.kafkaBrokers.split(',') } : {};
  const rabbitmq: Record<string, string> = config.amqpUrl ? { default: config.amqpUrl } : {};
  for (const [name, c] of Object.entries(config.connections)) {
    if (c.kind === 'kafka') kafka[name] = c.brokers;
    else rabbitmq[name] = c.url;
  }
  return { kafka, rabbitmq };
}
function readConfigFile(file: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(readFileSync(file, 'utf8'));
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not a JSON object');
    return { ...(value as Record<string, unknown>) };
  } catch (cause) {
    throw new ConcordError('INVALID_REQUEST', `cannot read config file ${file}: ${(cause as Error).message}`, { cause });
  }
}
