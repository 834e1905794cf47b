/**
 * Property-based fuzzing with schemathesis (PyPI, installed into .cache/venv-schemathesis) against
 * the OpenAPI document the coordinator serves: no input may get a 5xx, and every answer must match
 * the document (status code, content type, body schema; 405 with Allow for undeclared methods).
 * The seed is random and printed; CONCORD_FUZZ_SEED replays one.
 */
import { randomInt } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { exec, pythonVenv, REPO_ROOT } from './compat/setup.js';
import { startCoordinator, type RunningCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator } from './helpers/poll.js';

/** Generated cases per operation and phase; about 2,000 cases in all, 40-60 s on two cores. */
const maxExamples = 100;
const checks = [
  'not_a_server_error',
  'status_code_conformance',
  'content_type_conformance',
  'response_schema_conformance',
  'unsupported_method',
  'allow_header_conformance',
];

interface Report {
  seed: number;
  running_time: number;
  operations: { tested: number };
  test_cases: { generated: number; with_failures: number };
  failures: { code: string; title: string; operations: string[] }[];
  errors: { title: string; count: number }[];
  /** Per operation and phase, the generated requests the coordinator accepted (2xx) or rejected. */
  valid_rates: Record<string, Record<string, { accepted: number; rejected: number }>>;
}

let coordinator: RunningCoordinator;
let python: string;

beforeAll(async () => {
  let store: string;
  [python, store] = await Promise.all([
    pythonVenv('venv-schemathesis', join(REPO_ROOT, 'test', 'fuzz', 'requirements.txt')),
    freshDatabase(),
  ]);
  coordinator = await startCoordinator({ store, env: fastCoordinator });
}, 600_000);
afterAll(async () => {
  expect(await coordinator?.stop()).toBe(0);
});

it('answers every generated request without a 5xx and as its OpenAPI document says', async () => {
  const seed = process.env.CONCORD_FUZZ_SEED ?? String(randomInt(1, 2 ** 31));
  // Run in a scratch directory: schemathesis writes its .schemathesis/ cache into the working directory.
  const scratch = await mkdtemp(join(tmpdir(), 'concord-fuzz-'));
  const reportPath = join(scratch, 'report.json');
  // Through python -m: the venv's console scripts name the private path the venv was made under.
  const args = [
    '-m',
    'schemathesis.cli',
    'run',
    `${coordinator.url}/api/openapi.json`,
    '--checks',
    checks.join(','),
    '--max-examples',
    String(maxExamples),
    '--seed',
    seed,
    // One worker: Python 3.11's ast module is not thread-safe, and hypothesis parses lambdas with it.
    '--workers',
    '1',
    // The seed alone replays a run; nothing is kept between runs.
    '--generation-database',
    'none',
    '--request-timeout',
    '10',
    '--report',
    'json',
    '--report-json-path',
    reportPath,
  ];
  const run = await exec(python, args, { cwd: scratch, timeoutMs: 150_000, env: { ...process.env, NO_COLOR: '1' } });
  const report = JSON.parse(await readFile(reportPath, 'utf8')) as Report;
  await rm(scratch, { recursive: true, force: true });
  const output = `seed ${seed} (CONCORD_FUZZ_SEED=${seed} replays it)\n${run.stdout}\n${run.stderr}`;
  const accepted = Object.values(report.valid_rates ?? {})
    .flatMap((phases) => Object.values(phases))
    .reduce((sum, rate) => sum + rate.accepted, 0);
  console.log(
    `fuzz: seed ${seed}, ${report.operations.tested} operations, ${report.test_cases.generated} cases ` +
      `(${accepted} accepted by validation), ${report.test_cases.with_failures} failing, ${report.running_time.toFixed(1)} s`,
  );
  expect(report.failures, output).toEqual([]);
  expect(report.errors, output).toEqual([]);
  expect(run.code, output).toBe(0);
  expect(report.operations.tested).toBeGreaterThanOrEqual(20);
  expect(report.test_cases.generated).toBeGreaterThan(1000);
  // Nothing the fuzzer sent took the coordinator down or made it log an internal error.
  expect(coordinator.output()).not.toContain('"level":50');
}, 200_000);
