/**
 * DTM's own clients, unchanged, drive Concord's two-phase message: the Go client
 * (github.com/dtm-labs/client v1.17.3) and the Python one (PyPI dtmcli 1.7.7.0), through the
 * drivers in test/compat (see its README). A real coordinator process, a real bank service with
 * the SDK's barrier, real Postgres.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { BranchBarrier } from '../sdk/index.js';
import { buildGoClient, pythonWithDtmcli, PYTHON_CLIENT_SCRIPT, runClient, type ClientResult } from './compat/setup.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, query, waitForStatus } from './helpers/poll.js';

type Mode =
  | 'submit'
  | 'prepare-submit'
  | 'prepare-only'
  | 'prepare-abort'
  | 'new-gid'
  | 'do-and-submit'
  | 'do-and-submit-failure'
  | 'do-and-submit-error';

interface DtmClient {
  name: string;
  /** The command that runs the driver. */
  prepare: () => Promise<string[]>;
  /** The payload of each step as this client serialises {amount: 30}; the coordinator must keep it verbatim. */
  payload: string;
}

const clients: DtmClient[] = [
  { name: 'Go', prepare: async () => [await buildGoClient()], payload: '{"amount":30}' },
  { name: 'Python', prepare: async () => [await pythonWithDtmcli(), PYTHON_CLIENT_SCRIPT], payload: '{"amount": 30}' },
];

/** A long check-back timeout for flows that prepare and then submit or abort at once, so the 1 s default of
 * `fastCoordinator` can never check back between the two calls on a slow machine. */
const noCheckBack = ['-timeout-to-fail', '60'];

describe.each(clients.map((c) => [c.name, c] as const))('DTM %s client', (_name, client) => {
  let bin: string[];
  let coordinator: TestCoordinator;
  let bank: BankService;

  beforeAll(async () => {
    const [command, store, bankDb] = await Promise.all([client.prepare(), freshDatabase(), freshDatabase()]);
    bin = command;
    coordinator = await inProcessCoordinator({ store, env: fastCoordinator });
    bank = await startBankService(bankDb);
  }, 300_000); // a cold Go build takes 1-2 min
  afterAll(async () => {
    await bank?.close();
    expect(await coordinator?.stop()).toBe(0);
  });

  const newGid = () => `compat-${client.name.toLowerCase()}-${randomUUID()}`;

  /** Runs the driver once; when the test then fails, prints what the client sent and got, and the coordinator's log. */
  async function drive(mode: Mode, gid?: string, extra: string[] = []): Promise<ClientResult> {
    const args = ['-dtm', coordinator.dtm, '-busi', bank.url, '-mode', mode, ...(gid ? ['-gid', gid] : []), ...extra];
    const started = performance.now();
    const r = await runClient(bin, args);
    const ms = Math.round(performance.now() - started);
    onTestFailed(() => {
      console.error(
        [
          `--- ${client.name} driver: ${args.join(' ')} (exit ${r.code}, ${ms} ms) ---`,
          `stdout:\n${r.stdout}`,
          `stderr:\n${r.stderr}`,
          `--- coordinator output (tail) ---\n${coordinator.output().slice(-4000)}`,
        ].join('\n'),
      );
    });
    return r;
  }

  /** The driver must have reported success; the message names its error and stderr. */
  const expectOk = (r: ClientResult) => expect(r.ok, `${r.error}\n--- client stderr ---\n${r.stderr}`).toBe(true);

  /** The transaction as GET /query shows it, including fields the shared helper does not type. */
  type Query = Awaited<ReturnType<typeof query>>;
  const view = async (gid: string) =>
    (await query(coordinator.dtm, gid)) as {
      transaction: (NonNullable<Query['transaction']> & { query_prepared?: string }) | null;
      branches: (Query['branches'][number] & { url: string; bin_data: string })[];
    };

  /** Both steps delivered once each, in the order the client added them, with the client's payload verbatim. */
  async function expectDelivered(gid: string, localEffects = 0): Promise<void> {
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(bank.received(gid, '/TransOut')).toBe(1);
    expect(bank.received(gid, '/TransIn')).toBe(1);
    expect(await bank.effects(gid)).toBe(2 + localEffects);
    const { branches } = await view(gid);
    expect(branches.map((b) => ({ ...b, payload: Buffer.from(b.bin_data, 'base64').toString() }))).toMatchObject([
      { branch_id: '01', op: 'action', status: 'succeed', attempts: 1, url: `${bank.url}/TransOut`, payload: client.payload },
      { branch_id: '02', op: 'action', status: 'succeed', attempts: 1, url: `${bank.url}/TransIn`, payload: client.payload },
    ]);
  }

  async function expectNothingDelivered(gid: string): Promise<void> {
    expect(bank.received(gid, '/TransOut')).toBe(0);
    expect(bank.received(gid, '/TransIn')).toBe(0);
    expect(await bank.effects(gid)).toBe(0);
  }

  /** The barrier row of the message's local transaction in the bank (written by the commit or by a check-back). */
  const barrierReason = async (gid: string): Promise<string | undefined> =>
    (await bank.pool.query(`select reason from dtm_barrier.barrier where gid = $1 and branch_id = '00' and op = 'msg'`, [gid])).rows[0]
      ?.reason;

  it('new-gid: gets a gid the coordinator made', async () => {
    const r = await drive('new-gid');
    expectOk(r);
    expect(r.gid).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(r.stdout.split('\n')).toContain(r.gid); // the driver printed what the client returned
    const again = await drive('new-gid');
    expectOk(again);
    expect(again.gid).toHaveLength(22);
    expect(again.gid).not.toBe(r.gid);
    expect((await query(coordinator.dtm, r.gid!)).transaction).toBeNull(); // newGid makes no transaction
  });

  it('submit: delivers both steps exactly once', async () => {
    const gid = newGid();
    expectOk(await drive('submit', gid));
    await expectDelivered(gid);
    expect((await view(gid)).transaction?.query_prepared).toBeUndefined();
  });

  it('submit without -gid: asks newGid first, then delivers', async () => {
    const r = await drive('submit');
    expectOk(r);
    // The gid is only in the client's request log: find the submit body on stderr (Go's log escapes its quotes).
    const gid = /\\?"gid\\?":\s*\\?"([A-Za-z0-9_-]+)/.exec(r.stderr)?.[1];
    expect(gid, r.stderr).toMatch(/^[A-Za-z0-9_-]{22}$/);
    await expectDelivered(gid!);
  });

  it('prepare-submit: delivers both steps exactly once and records query_prepared', async () => {
    const gid = newGid();
    expectOk(await drive('prepare-submit', gid, noCheckBack));
    await expectDelivered(gid);
    expect((await view(gid)).transaction).toMatchObject({ status: 'succeed', query_prepared: `${bank.url}/QueryPrepared` });
    expect(await barrierReason(gid)).toBeUndefined(); // no check-back was needed
  });

  it('prepare-abort: fails the message and delivers nothing', async () => {
    const gid = newGid();
    expectOk(await drive('prepare-abort', gid, noCheckBack));
    expect((await view(gid)).transaction).toMatchObject({ status: 'failed', query_prepared: `${bank.url}/QueryPrepared` });
    await expectNothingDelivered(gid);
  });

  it('prepare-only, local transaction never committed: the check-back answers FAILURE, the message fails', async () => {
    const gid = newGid();
    // The coordinator's default check-back timeout (1 s in fastCoordinator): the client sends none (Python: 0).
    expectOk(await drive('prepare-only', gid));
    await waitForStatus(coordinator.dtm, gid, 'failed');
    // The check-back reached the bank's barrier with DTM's query parameters and left the row that blocks a late commit.
    expect(await barrierReason(gid)).toBe('rollback');
    expect((await view(gid)).transaction?.rollback_reason).toMatch(/FAILURE/);
    await expectNothingDelivered(gid);
  });

  it('prepare-only, local transaction committed: the check-back answers SUCCESS, the message is delivered once', async () => {
    const gid = newGid();
    // What DoAndSubmit's local transaction leaves behind: the barrier row (gid, 00, msg) with the business change.
    await new BranchBarrier({ trans_type: 'msg', gid, branch_id: '00', op: 'msg' }).run<void, pg.PoolClient>(bank.pool, async (tx) => {
      await tx.query('insert into transfers (gid, kind, amount) values ($1, $2, $3)', [gid, 'local', 30]);
    });
    expectOk(await drive('prepare-only', gid, ['-timeout-to-fail', '1']));
    await expectDelivered(gid, 1);
    expect(await barrierReason(gid)).toBe('msg'); // the check-back found the commit and did not overwrite it
  });

  it('do-and-submit: local transaction succeeds, the message is delivered once', async () => {
    const gid = newGid();
    expectOk(await drive('do-and-submit', gid, noCheckBack));
    await expectDelivered(gid);
  });

  it('do-and-submit-failure: local transaction fails, the client aborts, nothing is delivered', async () => {
    const gid = newGid();
    const r = await drive('do-and-submit-failure', gid, noCheckBack);
    expect(r.ok, r.stderr).toBe(false);
    expect(r.error, r.stderr).toContain('simulated business failure'); // the local error, not an abort error
    expect((await view(gid)).transaction, r.stderr).toMatchObject({ status: 'failed' });
    await expectNothingDelivered(gid);
  });

  it('do-and-submit-error: the client asks the bank QueryPrepared itself, gets FAILURE and aborts', async () => {
    const gid = newGid();
    const r = await drive('do-and-submit-error', gid, noCheckBack);
    expect(r.ok, r.stderr).toBe(false);
    expect(r.error, r.stderr).toContain('simulated local transaction error');
    expect((await view(gid)).transaction, r.stderr).toMatchObject({ status: 'failed' });
    expect(await barrierReason(gid)).toBe('rollback'); // the bank's barrier answered the client's GET
    await expectNothingDelivered(gid);
  });
});
