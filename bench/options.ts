/**
 * The benchmark's knobs, read from BENCH_* environment variables once and validated with zod.
 * docs/benchmarks.md lists them; this is the only bench file that reads process.env.
 */
import { z } from 'zod';

/** none: bench/null-coordinator.ts, which stores nothing (the machine's HTTP ceiling). */
export const storeKinds = ['none', 'postgres', 'pglite'] as const;
export type StoreKind = (typeof storeKinds)[number];

/** "1, 16,64" → ['1', '16', '64'] */
const commaList = z.string().transform((s) =>
  s
    .split(',')
    .map((part) => part.trim())
    .filter((part) => part !== ''),
);

export const benchOptionsSchema = z.object({
  seconds: z.coerce
    .number()
    .positive()
    .max(3_600)
    .default(10)
    .describe('BENCH_SECONDS: measured seconds per configuration (and per pgbench run).'),
  warmupSeconds: z.coerce.number().min(0).max(600).default(2).describe('BENCH_WARMUP_SECONDS: unmeasured seconds before each measurement.'),
  concurrency: commaList
    .pipe(z.array(z.string().regex(/^\d+$/, 'expected whole numbers').transform(Number).pipe(z.number().int().min(1).max(1_000))).min(1))
    .default([1, 16, 64])
    .describe('BENCH_CONCURRENCY: closed-loop workers per configuration, comma-separated.'),
  stores: commaList
    .pipe(z.array(z.enum(storeKinds)).min(1))
    .default(['none', 'postgres', 'pglite'])
    .describe("BENCH_STORES: the coordinator's store kinds, comma-separated (none = the null coordinator, postgres, pglite)."),
  idleWaitSeconds: z.coerce
    .number()
    .min(0)
    .max(3_600)
    .default(120)
    .describe(
      'BENCH_IDLE_WAIT_SECONDS: before each run, wait up to this long for other processes to leave the machine idle (0: do not wait).',
    ),
  busyRetries: z.coerce
    .number()
    .int()
    .min(0)
    .max(10)
    .default(2)
    .describe('BENCH_BUSY_RETRIES: how many times a row is measured again when other processes used over 15 % of a core during it.'),
  pgbench: z
    .enum(['0', '1'])
    .default('1')
    .transform((v) => v === '1')
    .describe('BENCH_PGBENCH: 0 skips the pgbench ceiling.'),
  openLoopSeconds: z.coerce
    .number()
    .min(0)
    .max(3_600)
    .default(5)
    .describe(
      "BENCH_OPEN_LOOP_SECONDS: measured seconds of each store's open-loop row, run after its closed-loop rows at a fixed rate (0: no open-loop row).",
    ),
  openLoopFraction: z.coerce
    .number()
    .positive()
    .max(1)
    .default(0.5)
    .describe("BENCH_OPEN_LOOP_FRACTION: the open loop's rate, as a fraction of the store's best closed-loop msgs/s."),
  openLoopRate: z.coerce
    .number()
    .positive()
    .max(100_000)
    .optional()
    .describe('BENCH_OPEN_LOOP_RATE: a fixed open-loop rate in msgs/s instead of the fraction (to compare two codes at one load).'),
});

export type BenchOptions = Readonly<z.infer<typeof benchOptionsSchema>>;

const envNames: Record<keyof BenchOptions, string> = {
  seconds: 'BENCH_SECONDS',
  warmupSeconds: 'BENCH_WARMUP_SECONDS',
  concurrency: 'BENCH_CONCURRENCY',
  stores: 'BENCH_STORES',
  idleWaitSeconds: 'BENCH_IDLE_WAIT_SECONDS',
  busyRetries: 'BENCH_BUSY_RETRIES',
  pgbench: 'BENCH_PGBENCH',
  openLoopSeconds: 'BENCH_OPEN_LOOP_SECONDS',
  openLoopFraction: 'BENCH_OPEN_LOOP_FRACTION',
  openLoopRate: 'BENCH_OPEN_LOOP_RATE',
};

export function loadBenchOptions(env: NodeJS.ProcessEnv): BenchOptions {
  return loadOptions(benchOptionsSchema, env);
}

export const sagaStepKinds = ['http', 'kafka'] as const;
export type SagaStepKind = (typeof sagaStepKinds)[number];

/** bench/sagas.ts: the shared knobs, a shorter default window (it starts Kafka too), and the step kinds. */
export const sagaBenchOptionsSchema = benchOptionsSchema
  .pick({ warmupSeconds: true, concurrency: true, idleWaitSeconds: true, busyRetries: true })
  .extend({
    seconds: z.coerce
      .number()
      .positive()
      .max(3_600)
      .default(5)
      .describe('BENCH_SECONDS: measured seconds per configuration (the saga bench defaults to 5).'),
    kindWarmupSeconds: z.coerce
      .number()
      .min(0)
      .max(600)
      .default(20)
      .describe(
        "BENCH_SAGA_WARMUP_SECONDS: unmeasured sagas at the highest concurrency before each step kind's first row (Kafka's JVM compiles its hot paths under load).",
      ),
    steps: commaList
      .pipe(z.array(z.enum(sagaStepKinds)).min(1))
      .default(['http', 'kafka'])
      .describe("BENCH_SAGA_STEPS: the saga steps' kinds, comma-separated (http, kafka)."),
  });

export type SagaBenchOptions = Readonly<z.infer<typeof sagaBenchOptionsSchema>>;

export function loadSagaBenchOptions(env: NodeJS.ProcessEnv): SagaBenchOptions {
  return loadOptions(sagaBenchOptionsSchema, env, { kindWarmupSeconds: 'BENCH_SAGA_WARMUP_SECONDS', steps: 'BENCH_SAGA_STEPS' });
}

/** Parses the variables named in `names` once; an error names each bad variable. */
function loadOptions<S extends z.ZodObject>(schema: S, env: NodeJS.ProcessEnv, own: Record<string, string> = {}): Readonly<z.infer<S>> {
  // A setting shared with the message bench keeps its variable (envNames); a bench's own are in `own`.
  const names: Record<string, string> = {};
  for (const key of Object.keys(schema.shape)) {
    const name = own[key] ?? (envNames as Record<string, string>)[key];
    if (name === undefined) throw new Error(`bench option ${key} has no environment variable`);
    names[key] = name;
  }
  const raw: Record<string, string> = {};
  for (const [key, name] of Object.entries(names)) {
    const value = env[name];
    if (value !== undefined && value !== '') raw[key] = value;
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${names[String(issue.path[0])] ?? '?'}: ${issue.message}`);
    throw new Error(`invalid benchmark settings: ${problems.join('; ')}`);
  }
  return Object.freeze(parsed.data);
}

export const transferKinds = ['tcc', 'xa-pg', 'xa-mysql'] as const;
export type TransferKind = (typeof transferKinds)[number];

export const transferBenchOptionsSchema = sagaBenchOptionsSchema.pick({ seconds: true, warmupSeconds: true, concurrency: true }).extend({
  kinds: commaList
    .pipe(z.array(z.enum(transferKinds)).min(1))
    .default(['tcc', 'xa-pg', 'xa-mysql'])
    .describe(
      'BENCH_TRANSFER_KINDS: tcc (two branches on Postgres with the barrier), xa-pg (two Postgres databases), xa-mysql (Postgres and MariaDB).',
    ),
});
export type TransferBenchOptions = Readonly<z.infer<typeof transferBenchOptionsSchema>>;

export function loadTransferBenchOptions(env: NodeJS.ProcessEnv): TransferBenchOptions {
  return loadOptions(transferBenchOptionsSchema, env, { kinds: 'BENCH_TRANSFER_KINDS' });
}

/** bench/scale-out.ts: several coordinators on one Postgres store, short rows. */
export const scaleOutBenchOptionsSchema = benchOptionsSchema.pick({ warmupSeconds: true, idleWaitSeconds: true }).extend({
  seconds: z.coerce
    .number()
    .positive()
    .max(3_600)
    .default(5)
    .describe('BENCH_SECONDS: measured seconds per row (the scale-out bench defaults to 5).'),
  concurrency: benchOptionsSchema.shape.concurrency.default([16, 64]),
  coordinators: commaList
    .pipe(z.array(z.string().regex(/^\d+$/, 'expected whole numbers').transform(Number).pipe(z.number().int().min(1).max(8))).min(1))
    .default([1, 2, 3])
    .describe('BENCH_COORDINATORS: how many coordinators share the store, per row, comma-separated.'),
});
export type ScaleOutBenchOptions = Readonly<z.infer<typeof scaleOutBenchOptionsSchema>>;

export function loadScaleOutBenchOptions(env: NodeJS.ProcessEnv): ScaleOutBenchOptions {
  return loadOptions(scaleOutBenchOptionsSchema, env, { coordinators: 'BENCH_COORDINATORS' });
}

/** bench/flat-cost.ts: the message workload on an empty store and on one holding `rows` finished transactions. */
export const flatCostBenchOptionsSchema = scaleOutBenchOptionsSchema
  .pick({ seconds: true, warmupSeconds: true, concurrency: true })
  .extend({
    idleWaitSeconds: benchOptionsSchema.shape.idleWaitSeconds.default(10),
    rows: z.coerce
      .number()
      .int()
      .min(1_000)
      .max(100_000_000)
      .default(1_000_000)
      .describe('BENCH_FLAT_ROWS: finished transactions in the full store.'),
    rounds: z.coerce
      .number()
      .int()
      .min(1)
      .max(20)
      .default(2)
      .describe('BENCH_FLAT_ROUNDS: how many times each pair of rows (empty store, full store) is measured, alternately.'),
  });
export type FlatCostBenchOptions = Readonly<z.infer<typeof flatCostBenchOptionsSchema>>;

export function loadFlatCostBenchOptions(env: NodeJS.ProcessEnv): FlatCostBenchOptions {
  return loadOptions(flatCostBenchOptionsSchema, env, { rows: 'BENCH_FLAT_ROWS', rounds: 'BENCH_FLAT_ROUNDS' });
}
