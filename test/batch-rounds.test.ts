/** A batch item whose row other requests changed between two statements runs again, and a lost race has a defined answer. */
import { describe, expect, it } from 'vitest';
import { again, inRounds, raceRounds } from '../coordinator/engine/batches.js';

describe('inRounds', () => {
  it('runs again only the items answered again, keeping every answer in its place', async () => {
    const seen: string[][] = [];
    let first = true;
    const answers = await inRounds(
      ['a', 'b', 'c'],
      async (items) => {
        seen.push(items);
        const out = items.map((i) => (first && i === 'b' ? again : `${i}!`));
        first = false;
        return out;
      },
      (i) => `lost ${i}`,
    );
    expect(answers).toEqual(['a!', 'b!', 'c!']);
    expect(seen).toEqual([['a', 'b', 'c'], ['b']]);
  });

  it('gives an item that loses every round the defined answer, not an exception', async () => {
    let rounds = 0;
    const answers = await inRounds(
      ['a', 'b'],
      async (items) => {
        rounds++;
        return items.map((i) => (i === 'a' ? again : 'ok'));
      },
      (i) => `lost ${i}`,
    );
    expect(answers).toEqual(['lost a', 'ok']);
    expect(rounds).toBe(raceRounds);
  });
});
