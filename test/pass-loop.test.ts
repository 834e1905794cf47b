/** The executor's one pass loop (Executor.run), driven by plans without I/O: no store, no HTTP. */
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { Executor, type PassPlan } from '../coordinator/engine/executor.js';
import type { EngineContext } from '../coordinator/engine/context.js';
import { createMetrics } from '../coordinator/metrics.js';
import type { TransRow } from '../coordinator/store/transactions.js';
import { loadConfig } from '../schemas/config.js';

// The loop touches neither the store nor the relay unless a performer does: these plans don't.
const config = loadConfig({ overrides: { retryInterval: 7, requestTimeout: 3 } });
const ctx = { config, metrics: createMetrics(), logger: pino({ level: 'silent' }), nodeId: 'n1' } as unknown as EngineContext;
const trans = { gid: 'g1', trans_type: 'msg', status: 'submitted', options: { request_timeout: 2 }, age_ms: 5_000 } as unknown as TransRow;

type Step = { kind: 'again'; n: number } | { kind: 'stop'; why: string };

describe('Executor.run', () => {
  it('hands each decision to the performer of its kind and decides again until one ends the pass', async () => {
    const seen: string[] = [];
    const ages: number[] = [];
    let n = 0;
    const result = await new Executor(ctx).run('test', trans, performance.now(), 60, (pass): PassPlan<Step> => {
      expect(pass.timeout).toBe(2); // the transaction's request_timeout wins over the configured one
      expect(pass.policy).toEqual({ base: 7, cap: config.maxRetryInterval });
      return {
        decide: (ageMs): Step => {
          ages.push(ageMs);
          return n < 3 ? { kind: 'again', n: n++ } : { kind: 'stop', why: 'done' };
        },
        perform: {
          again: (d) => {
            seen.push(`again ${d.n}`);
            return Promise.resolve(undefined);
          },
          stop: (d) => Promise.resolve({ status: 'succeed' as const, reason: d.why }),
        },
        giveBack: () => Promise.resolve({ status: 'submitted' as const, reason: 'given back' }),
      };
    });
    expect(result).toEqual({ status: 'succeed', reason: 'done' });
    expect(seen).toEqual(['again 0', 'again 1', 'again 2']);
    // The store's age at the claim, plus the time the pass has run.
    expect(ages.every((a, i) => a >= 5_000 && (i === 0 || a >= ages[i - 1]!))).toBe(true);
  });

  it('gives the transaction back after 10,000 decisions that never end the pass', async () => {
    let decisions = 0;
    const result = await new Executor(ctx).run('test', trans, performance.now(), 60, (): PassPlan<Step> => ({
      decide: (): Step => ({ kind: 'again', n: decisions++ }),
      perform: { again: () => Promise.resolve(undefined), stop: () => Promise.resolve({ status: 'succeed' as const }) },
      giveBack: () => Promise.resolve({ status: 'submitted' as const, reason: 'given back' }),
    }));
    expect(decisions).toBe(10_000);
    expect(result).toEqual({ status: 'submitted', reason: 'given back' });
  });

  it('ends a pass whose performer throws with the row as claimed and the error as reason', async () => {
    const result = await new Executor(ctx).run('test', trans, performance.now(), 60, (): PassPlan<Step> => ({
      decide: (): Step => ({ kind: 'stop', why: '' }),
      perform: { again: () => Promise.resolve(undefined), stop: () => Promise.reject(new Error('store down')) },
      giveBack: () => Promise.resolve({ status: 'submitted' as const }),
    }));
    expect(result).toEqual({ status: 'submitted', reason: 'store down' });
  });
});
