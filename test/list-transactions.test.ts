/** GET /all: filters by status, type, gid prefix, destination and create time, newest first, page by page; counts per status. */
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';

let store: pg.Pool;
let node: TestCoordinator;

beforeAll(async () => {
  const url = await freshDatabase();
  node = await inProcessCoordinator({ store: url, env: { CONCORD_RETENTION: '0' } });
  store = new pg.Pool({ connectionString: url });
  // 60 rows: every third a saga, every fourth failed, created one minute apart (row 60 is now).
  await store.query(`
    insert into trans_global (gid, trans_type, status, content_hash, next_cron_interval, create_time)
    select 'list-' || i, case when i % 3 = 0 then 'saga' else 'msg' end, case when i % 4 = 0 then 'failed' else 'succeed' end,
      '', 1, now() - interval '1 minute' * (60 - i)
    from generate_series(1, 60) i`);
  // Branches of three of them, for the destination filter.
  await store.query(`
    insert into trans_branch_op (gid, url, branch_id, op, status) values
      ('list-5', 'http://billing/pay', '01', 'action', 'succeed'),
      ('list-7', 'kafka://main/orders', '01', 'action', 'succeed'),
      ('list-8', 'kafka://main/orders', '01', 'action', 'succeed'),
      ('list-8', 'http://billing/refund', '02', 'action', 'succeed')`);
});
afterAll(async () => {
  await node?.stop();
  await store?.end();
});

async function all(query: string): Promise<{ gids: string[]; next: string }> {
  const res = await fetch(`${node.dtm}/all?${query}`);
  expect(res.status).toBe(200);
  const body = (await res.json()) as { transactions: { gid: string }[] | null; next_position: string };
  return { gids: (body.transactions ?? []).map((t) => t.gid), next: body.next_position };
}

const expected = (keep: (i: number) => boolean) =>
  Array.from({ length: 60 }, (_, k) => 60 - k)
    .filter(keep)
    .map((i) => `list-${i}`);

it.each([
  ['transType=saga', (i: number) => i % 3 === 0],
  ['status=failed', (i: number) => i % 4 === 0],
  ['transType=msg&status=failed', (i: number) => i % 3 !== 0 && i % 4 === 0],
  ['status=succeed&transType=saga', (i: number) => i % 3 === 0 && i % 4 !== 0],
  ['transType=tcc', () => false],
  ['gidPrefix=list-1', (i: number) => String(i).startsWith('1')],
  // LIKE's wildcards in a prefix are plain characters.
  ['gidPrefix=list_', () => false],
  ['gidPrefix=%25', () => false],
  ['destination=http://billing/', (i: number) => i === 5 || i === 8],
  ['destination=kafka://main/orders&status=failed', (i: number) => i === 8],
  ['destination=http://billing_', () => false],
])('%s: the matching rows, newest first, in pages of 4', async (filter, keep) => {
  const gids: string[] = [];
  let page = await all(`${filter}&limit=4`);
  for (;;) {
    gids.push(...page.gids);
    if (page.next === '') break;
    page = await all(`${filter}&limit=4&position=${page.next}`);
  }
  expect(gids).toEqual(expected(keep));
});

it('filters by create time', async () => {
  const now = Date.now();
  const { gids } = await all(`createTimeStart=${now - 10.5 * 60_000}&createTimeEnd=${now - 4.5 * 60_000}&transType=saga&limit=100`);
  expect(gids).toEqual(['list-54', 'list-51']);
});

it('counts transactions per status, each count stopping at its cap', async () => {
  const counts = async () => {
    const res = await fetch(`${node.url}/api/concord/admin/counts`);
    expect(res.status).toBe(200);
    return (await res.json()) as { counts: Record<string, number>; cap: number };
  };
  expect(await counts()).toEqual({
    counts: { prepared: 0, submitted: 0, aborting: 0, succeed: 45, failed: 15, needs_attention: 0 },
    cap: 10_000,
  });
  await store.query(`
    insert into trans_global (gid, trans_type, status, content_hash, next_cron_interval)
    select 'count-' || i, 'msg', 'submitted', '', 1 from generate_series(1, 10005) i`);
  expect((await counts()).counts.submitted).toBe(10_000);
  await store.query(`delete from trans_global where gid like 'count-%'`);
});
