/**
 * The benchmark's knobs, read from BENCH_* environment variables once and validated with zod.
 * docs/benchmarks.md lists them; this is the only bench file that reads process.env.
 */
import { z } from 'zod';

export const storeKinds = ['postgres', 'pglite'] as const;
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
    .default(['postgres', 'pglite'])
    .describe("BENCH_STORES: the coordinator's store kinds, comma-separated (postgres, pglite)."),
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
};

export function loadBenchOptions(env: NodeJS.ProcessEnv): BenchOptions {
  const raw: Record<string, string> = {};
  for (const [key, name] of Object.entries(envNames)) {
    const value = env[name];
    if (value !== undefined && value !== '') raw[key] = value;
  }
  const parsed = benchOptionsSchema.safeParse(raw);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${envNames[issue.path[0] as keyof BenchOptions] ?? '?'}: ${issue.message}`);
    throw new Error(`invalid benchmark settings: ${problems.join('; ')}`);
  }
  return Object.freeze(parsed.data);
}
