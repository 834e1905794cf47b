/** sendTogether (sdk/send-together.ts): what the participant's replies go out with. */
import { describe, expect, it } from 'vitest';
import { sendTogether } from '../sdk/send-together.js';

describe('sendTogether', () => {
  it('sends alone what comes alone, and together what comes while a send is in flight', async () => {
    const sent: number[][] = [];
    let release: () => void = () => undefined;
    const send = sendTogether<number>(async (items) => {
      sent.push(items);
      if (items[0] === 1) await new Promise<void>((resolve) => (release = resolve));
    });
    const first = send(1);
    await expect.poll(() => sent).toEqual([[1]]);
    const later = [send(2), send(3), send(4)];
    release();
    await Promise.all([first, ...later]);
    expect(sent).toEqual([[1], [2, 3, 4]]);
  });

  it("rejects the callers of a failed send's items, and only those", async () => {
    const send = sendTogether<string>(async (items) => {
      if (items.includes('bad')) throw new Error('broker said no');
    });
    const together = [send('bad'), send('good')];
    await expect(Promise.all(together)).rejects.toThrow('broker said no');
    await expect(together[1]).rejects.toThrow('broker said no');
    await expect(send('next')).resolves.toBeUndefined();
  });

  it('caps a send at maxBatch items', async () => {
    const sent: number[][] = [];
    const send = sendTogether<number>(async (items) => void sent.push(items), 2);
    await Promise.all([1, 2, 3, 4, 5].map((n) => send(n)));
    expect(sent).toEqual([[1, 2], [3, 4], [5]]);
  });
});
