/**
 * DTM's own Go client (github.com/dtm-labs/client v1.17.3, dtmcli), unchanged, drives Concord's XA:
 * XaGlobalTransaction2 as the global side, against the SDK's xaLocal banks and against branch
 * servers whose handler is DTM's XaLocalTransaction on a real Postgres and a real MariaDB
 * database. (Python dtmcli 1.7.7.0 has no XA.)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { randomUUID } from 'node:crypto';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureBarrierTable, xa } from '../sdk/index.js';
import { buildGoClient, runClient } from './compat/setup.js';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshMysqlDatabase } from './helpers/db.js';
import { fastCoordinator, query, waitForStatus } from './helpers/poll.js';
import { startXaBank, type XaBank } from './helpers/xa-bank.js';

/** DTM's barrier table as its MySQL DDL makes it, in the branch's own database. */
const mysqlBarrierDdl = `create table barrier (
  id bigint primary key auto_increment, trans_type varchar(45) default '', gid varchar(128) default '',
  branch_id varchar(128) default '', op varchar(45) default '', barrier_id varchar(45) default '',
  reason varchar(45) default '', create_time datetime default now(), update_time datetime default now(),
  unique key (gid, branch_id, op, barrier_id))`;

let go: string;
let coordinator: TestCoordinator;
const run = `cx-${randomUUID().slice(0, 8)}-`;
const newGid = () => `${run}${randomUUID()}`;
const banks: XaBank[] = [];
const servers: ChildProcess[] = [];

beforeAll(async () => {
  const [bin, store] = await Promise.all([buildGoClient(), freshDatabase()]);
  go = bin;
  coordinator = await inProcessCoordinator({ store, env: fastCoordinator });
}, 300_000); // a cold Go build takes 1-2 min
afterAll(async () => {
  for (const server of servers) server.kill('SIGKILL');
  for (const bank of banks) await bank.rollbackPrepared(run);
  for (const bank of banks) await bank.close();
  expect(await coordinator?.stop()).toBe(0);
});

const bank = async (kind: 'postgres' | 'mysql', account: string) => {
  const url = kind === 'postgres' ? await freshDatabase() : await freshMysqlDatabase();
  const b = await startXaBank(kind, url, { [account]: 1_000 });
  banks.push(b);
  return { bank: b, url };
};

/** A branch server of the Go driver (XaLocalTransaction) on `dbUrl`; its base URL. */
async function goBusi(dbUrl: string, barrierTable?: string): Promise<string> {
  const args = ['-mode', 'xa-busi', '-dtm', coordinator.dtm, '-db', dbUrl, ...(barrierTable ? ['-barrier-table', barrierTable] : [])];
  const child = spawn(go, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'warn' } });
  servers.push(child);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const lines = createInterface({ input: child.stdout });
  const first = await Promise.race([once(lines, 'line'), once(child, 'exit').then(() => [undefined])]);
  const url = first[0] as string | undefined;
  if (!url?.startsWith('http://')) throw new Error(`xa-busi did not start: ${url ?? ''}\n${stderr}`);
  return url;
}

const xaRun = (gid: string, busi: string, busi2: string, amount = 30) =>
  runClient(
    [go],
    [
      '-dtm',
      coordinator.dtm,
      '-busi',
      busi,
      '-busi2',
      busi2,
      '-mode',
      'xa',
      '-gid',
      gid,
      '-amount',
      String(amount),
      '-timeout-to-fail',
      '60',
    ],
  );

describe('DTM Go client XaGlobalTransaction against the SDK xaLocal banks', () => {
  let alice: XaBank;
  let bob: XaBank;
  beforeAll(async () => {
    [{ bank: alice }, { bank: bob }] = await Promise.all([bank('postgres', 'alice'), bank('mysql', 'bob')]);
  });

  it('calls both branches, submits, and the coordinator commits both', async () => {
    const gid = newGid();
    const r = await xaRun(gid, alice.url, bob.url);
    expect(r.ok, r.stderr + r.error).toBe(true);
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect([await alice.balance('alice'), await bob.balance('bob')]).toEqual([970, 1_030]);
    expect([...(await alice.preparedXids(gid)), ...(await bob.preparedXids(gid))]).toEqual([]);
  });

  it('aborts when the second branch fails, and the coordinator rolls back the first', async () => {
    const gid = newGid();
    bob.failNext(1, 'failure');
    const r = await xaRun(gid, alice.url, bob.url);
    expect(r.ok).toBe(false);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(alice.received(gid, 'rollback')).toBe(1);
    expect([await alice.balance('alice'), await bob.balance('bob')]).toEqual([970, 1_030]);
    expect([...(await alice.preparedXids(gid)), ...(await bob.preparedXids(gid))]).toEqual([]);
  });
});

describe("DTM Go client's XaLocalTransaction branches on Postgres and MariaDB", () => {
  let alice: XaBank;
  let bob: XaBank;
  let aliceBusi: string;
  let bobBusi: string;
  beforeAll(async () => {
    const [a, b] = await Promise.all([bank('postgres', 'alice'), bank('mysql', 'bob')]);
    [alice, bob] = [a.bank, b.bank];
    const pool = new pg.Pool({ connectionString: a.url });
    await ensureBarrierTable(pool);
    await pool.end();
    const conn = await mysql.createConnection({ uri: b.url });
    await conn.query(mysqlBarrierDdl);
    await conn.end();
    [aliceBusi, bobBusi] = await Promise.all([goBusi(a.url), goBusi(b.url, 'barrier')]);
  });

  it('prepares both local XA transactions, and the coordinator commits both', async () => {
    const gid = newGid();
    const r = await xaRun(gid, aliceBusi, bobBusi);
    expect(r.ok, r.stderr + r.error).toBe(true);
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect([await alice.balance('alice'), await bob.balance('bob')]).toEqual([970, 1_030]);
    expect([...(await alice.preparedXids(gid)), ...(await bob.preparedXids(gid))]).toEqual([]);
    expect((await query(coordinator.dtm, gid)).branches.map((b) => `${b.branch_id} ${b.op} ${b.status}`)).toEqual([
      '01 rollback prepared',
      '01 commit succeed',
      '02 rollback prepared',
      '02 commit succeed',
    ]);
  });

  it("serves the SDK's xa() as initiator too (dtm and phase2_url in the query, as DTM's client sends them)", async () => {
    const gid = newGid();
    await xa(
      coordinator.dtm,
      gid,
      async (x) => {
        await x.callBranch({ account: 'alice', amount: -5 }, `${aliceBusi}/Trans`);
        await x.callBranch({ account: 'bob', amount: 5 }, `${bobBusi}/Trans`);
      },
      { timeoutToFail: 60, waitResult: true },
    );
    expect((await query(coordinator.dtm, gid)).transaction?.status).toBe('succeed');
    expect([await alice.balance('alice'), await bob.balance('bob')]).toEqual([965, 1_035]);
    expect([...(await alice.preparedXids(gid)), ...(await bob.preparedXids(gid))]).toEqual([]);
  });

  it('rolls back the first branch when the second refuses (ErrFailure)', async () => {
    const gid = newGid();
    // Alice receives 5000, Bob would go negative: his branch answers FAILURE, the client aborts.
    const r = await xaRun(gid, aliceBusi, bobBusi, -5_000);
    expect(r.ok).toBe(false);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect([await alice.balance('alice'), await bob.balance('bob')]).toEqual([965, 1_035]);
    expect([...(await alice.preparedXids(gid)), ...(await bob.preparedXids(gid))]).toEqual([]);
  });
});
