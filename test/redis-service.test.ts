/** The Redis the test setup starts when neither CONCORD_TEST_REDIS_URL nor Docker gives one. */
import { createClient } from 'redis';
import { expect, it } from 'vitest';
import { startLocalRedis } from './services/redis.js';

it('runs a throwaway Debian redis-server on a free loopback port, gone after stop()', async () => {
  const service = await startLocalRedis();
  const client = createClient({ url: service.url });
  try {
    await client.connect();
    await client.set('concord-test:greeting', 'hello');
    expect(await client.get('concord-test:greeting')).toBe('hello');
  } finally {
    client.destroy();
    await service.stop();
  }
  const after = createClient({ url: service.url, socket: { reconnectStrategy: false } });
  after.on('error', () => {});
  await expect(after.connect()).rejects.toThrow();
});
