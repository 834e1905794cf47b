/**
 * DTM's Go gRPC client (dtmgrpc, github.com/dtm-labs/client v1.17.3, unchanged) driving transactions
 * whose branches are gRPC methods: of a Go service written with DTM's client library (barrier,
 * XaLocalTransaction, workflow.InitGrpc; mode grpcb-busi of test/compat/go/busi_grpc.go) and of a
 * TypeScript service written with the SDK's gRPC adapter. Real coordinator, real gRPC, real Postgres.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { buildGoClient, runClient, type ClientResult } from './compat/setup.js';
import { freePort, inProcessCoordinator, type TestCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { BusiDb, startGoBusi, type GoBusi } from './helpers/grpc-busi.js';
import { fastCoordinator, query, waitForStatus } from './helpers/poll.js';

/** The payload of every step: google.protobuf.BytesValue {"amount":30}, as the busi decodes it. */
const amount = Buffer.from('{"amount":30}');

let go: string;
let coordinator: TestCoordinator;
let grpc: string;
let db: BusiDb;
let busi: GoBusi;

beforeAll(async () => {
  const [bin, store, busiUrl, grpcPort] = await Promise.all([buildGoClient(), freshDatabase(), freshDatabase(), freePort()]);
  go = bin;
  coordinator = await inProcessCoordinator({ store, env: { ...fastCoordinator, CONCORD_GRPC_PORT: String(grpcPort) } });
  grpc = `127.0.0.1:${grpcPort}`;
  db = await new BusiDb(busiUrl).init();
  busi = await startGoBusi(go, grpc, busiUrl);
}, 300_000); // a cold Go build takes 1-2 min
afterAll(async () => {
  busi?.kill();
  await db?.close();
  expect(await coordinator?.stop()).toBe(0);
});

const newGid = () => `cg-${randomUUID()}`;

/** Runs the driver in `mode` against the coordinator's gRPC API and the Go busi (or `target`). */
async function drive(mode: string, gid: string, extra: string[] = [], target = busi.address): Promise<ClientResult> {
  const args = ['-dtm', grpc, '-busi', target, '-mode', mode, '-gid', gid, ...extra];
  const r = await runClient([go], args);
  onTestFailed(() => {
    console.error(
      [
        `--- Go driver: ${args.join(' ')} (exit ${r.code}) ---`,
        `stdout:\n${r.stdout}`,
        `stderr:\n${r.stderr.slice(-4000)}`,
        `--- busi stderr (tail) ---\n${busi.stderr().slice(-3000)}`,
        `--- coordinator output (tail) ---\n${coordinator.output().slice(-4000)}`,
      ].join('\n'),
    );
  });
  return r;
}

const expectOk = (r: ClientResult) => expect(r.ok, `${r.error}\n--- client stderr ---\n${r.stderr.slice(-4000)}`).toBe(true);

/** The calls of `gid` as "method op answer". */
const callLog = async (gid: string) => (await db.calls(gid)).map((c) => `${c.method} ${c.op} ${c.answer}`);

describe('msg with gRPC branches', () => {
  /** A long check-back timeout: a prepare followed at once by submit is never checked back in between. */
  const noCheckBack = ['-timeout-to-fail', '60'];

  it('Submit: both gRPC steps called once with the bytes and DTM metadata, each in effect once', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-msg', gid));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(await db.effects(gid)).toEqual(['01 action TransOut', '02 action TransIn']);
    const calls = await db.calls(gid);
    expect(calls.map((c) => `${c.branch_id} ${c.op} ${c.method} ${c.answer}`)).toEqual(['01 action TransOut OK', '02 action TransIn OK']);
    expect(calls.map((c) => c.payload)).toEqual([amount, amount]);
    expect(JSON.parse(calls[0]!.metadata)).toMatchObject({
      'dtm-gid': [gid],
      'dtm-trans_type': ['msg'],
      'dtm-branch_id': ['01'],
      'dtm-op': ['action'],
    });
    expect((await query(coordinator.dtm, gid)).transaction).toMatchObject({ protocol: 'grpc' });
  });

  it('Prepare with a gRPC QueryPrepared, then Submit', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-msg-prepare', gid, noCheckBack));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(await db.effects(gid)).toEqual(['01 action TransOut', '02 action TransIn']);
    expect((await query(coordinator.dtm, gid)).transaction).toMatchObject({ query_prepared: `${busi.address}/busi.Busi/QueryPrepared` });
  });

  it('a gRPC step answering Aborted or FailedPrecondition is retried until it succeeds (a msg never rolls back)', async () => {
    const gid = newGid();
    await db.plan(gid, 'TransIn', 'failure', 1);
    await db.plan(gid, 'TransOut', 'ongoing', 1);
    expectOk(await drive('grpcb-msg', gid));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(await db.effects(gid)).toEqual(['01 action TransOut', '02 action TransIn']);
    expect((await callLog(gid)).sort()).toEqual([
      'TransIn action Aborted',
      'TransIn action OK',
      'TransOut action FailedPrecondition',
      'TransOut action OK',
    ]);
  });

  it('DoAndSubmitDB: the local transaction commits with the barrier, then both steps run', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-do-and-submit', gid, ['-db', db.url, ...noCheckBack]));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(await db.effects(gid)).toEqual(['00 msg local', '01 action TransOut', '02 action TransIn']);
    expect(await callLog(gid)).not.toContain('QueryPrepared msg OK');
  });

  it('DoAndSubmitDB whose local transaction fails (ErrFailure): aborted, nothing in effect, no step called', async () => {
    const gid = newGid();
    const r = await drive('grpcb-do-and-submit-failure', gid, ['-db', db.url, ...noCheckBack]);
    expect(r.ok).toBe(false);
    expect(r.error).toContain('local transaction refused');
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(await db.effects(gid)).toEqual([]);
    expect(await callLog(gid)).toEqual([]);
  });

  it('DoAndSubmitDB whose local transaction errs: the client asks the gRPC QueryPrepared (Aborted) and aborts', async () => {
    const gid = newGid();
    const r = await drive('grpcb-do-and-submit-error', gid, ['-db', db.url, ...noCheckBack]);
    expect(r.ok).toBe(false);
    expect(r.error).toContain('simulated local transaction error');
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(await db.effects(gid)).toEqual([]);
    expect(await callLog(gid)).toEqual(['QueryPrepared msg Aborted']);
  });

  it('a prepared msg whose client died before committing: the coordinator calls the gRPC QueryPrepared and fails it', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-msg-prepare-only', gid, ['-timeout-to-fail', '1', '-retry-interval', '1']));
    await waitForStatus(coordinator.dtm, gid, 'failed');
    const calls = await db.calls(gid);
    expect(calls.map((c) => `${c.branch_id} ${c.op} ${c.method} ${c.answer}`)).toEqual(['00 msg QueryPrepared Aborted']);
    expect(JSON.parse(calls[0]!.metadata)).toMatchObject({ 'dtm-gid': [gid], 'dtm-trans_type': ['msg'] });
    expect(await db.effects(gid)).toEqual([]);
  });

  it('a prepared msg whose client died after committing: the gRPC QueryPrepared says OK and the steps are delivered', async () => {
    const gid = newGid();
    await db.plan(gid, 'QueryPrepared', 'ongoing', 1); // asked again after FailedPrecondition
    const r = await drive('grpcb-do-and-crash', gid, ['-db', db.url, '-timeout-to-fail', '1', '-retry-interval', '1']);
    expect(r.code).not.toBe(0); // SIGKILLed itself between the local commit and Submit
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(await db.effects(gid)).toEqual(['00 msg local', '01 action TransOut', '02 action TransIn']);
    expect((await callLog(gid)).slice(0, 2)).toEqual(['QueryPrepared msg FailedPrecondition', 'QueryPrepared msg OK']);
  });
});
