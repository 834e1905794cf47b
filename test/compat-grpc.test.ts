/**
 * DTM's Go gRPC client (dtmgrpc, github.com/dtm-labs/client v1.17.3, unchanged) driving transactions
 * whose branches are gRPC methods: of a Go service written with DTM's client library (barrier,
 * XaLocalTransaction, workflow.InitGrpc; mode grpcb-busi of test/compat/go/busi_grpc.go) and of a
 * TypeScript service written with the SDK's gRPC adapter. Real coordinator, real gRPC, real Postgres.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, onTestFailed, vi } from 'vitest';
import { buildGoClient, runClient, type ClientResult } from './compat/setup.js';
import { freePort, inProcessCoordinator, startCoordinator, type TestCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshStore } from './helpers/db.js';
import { BusiDb, startGoBusi, startTsBusi, type GoBusi, type TsBusi } from './helpers/grpc-busi.js';
import { startSagaService, type SagaService } from './helpers/saga-service.js';
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
async function drive(mode: string, gid: string, extra: string[] = [], target = busi.address, dtm = grpc): Promise<ClientResult> {
  const args = ['-dtm', dtm, '-busi', target, '-mode', mode, '-gid', gid, ...extra];
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

  it('WithBranchHeaders arrive as metadata of every step', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-msg', gid, ['-headers']));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    const calls = await db.calls(gid);
    expect(calls).toHaveLength(2);
    for (const c of calls) expect(JSON.parse(c.metadata)).toMatchObject({ test_header: ['x'], 'dtm-trans_type': ['msg'] });
  });

  it('a msg to a topic (AddTopic) whose subscribers, registered with Subscribe, are gRPC methods', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-topic', gid));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    const effects = await db.effects(gid);
    expect(effects.map((e) => e.split(' ').slice(1).join(' ')).sort()).toEqual(['action TransIn', 'action TransOut']);
    expect(new Set(effects.map((e) => e.split(' ')[0])).size).toBe(2);
    expect((await db.calls(gid)).map((c) => c.payload)).toEqual([amount, amount]);
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

  it('the coordinator retries a gRPC QueryPrepared answering Unavailable, then fails the msg on Aborted', async () => {
    const gid = newGid();
    await db.plan(gid, 'QueryPrepared', 'error', 1);
    expectOk(await drive('grpcb-msg-prepare-only', gid, ['-timeout-to-fail', '1', '-retry-interval', '1']));
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(await callLog(gid)).toEqual(['QueryPrepared msg Unavailable', 'QueryPrepared msg Aborted']);
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

describe('saga with gRPC branches', () => {
  it('succeeds: each action called once with the bytes, in effect once', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-saga', gid));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(await db.effects(gid)).toEqual(['01 action TransOut', '02 action TransIn']);
    expect((await db.calls(gid)).map((c) => c.payload)).toEqual([amount, amount]);
  });

  it('rolls back when an action answers Aborted: compensations in reverse, the failed one a null compensation', async () => {
    const gid = newGid();
    await db.plan(gid, 'TransIn', 'failure');
    expectOk(await drive('grpcb-saga', gid));
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(await db.effects(gid)).toEqual(['01 action TransOut', '01 compensate TransOutRevert']);
    expect(await callLog(gid)).toEqual([
      'TransOut action OK',
      'TransIn action Aborted',
      'TransInRevert compensate OK',
      'TransOutRevert compensate OK',
    ]);
  });

  it('a malformed gRPC branch URL is refused at Submit with InvalidArgument naming the field, and nothing is stored', async () => {
    const gid = newGid();
    const r = await drive('grpcb-saga', gid, [], 'localhost'); // localhost/busi.Busi/TransOut: no port
    expect(r.ok).toBe(false);
    expect(r.error).toMatch(/InvalidArgument desc = Steps\.0\.action: .*needs a host and a port/);
    expect((await query(coordinator.dtm, gid)).transaction).toBeNull();
  });

  it('concurrent with branch orders: TransFee starts only after TransOut and TransIn ended', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-saga-concurrent', gid));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect((await db.effects(gid)).sort()).toEqual(['01 action TransOut', '02 action TransIn', '03 action TransFee']);
    const calls = await db.calls(gid);
    const fee = calls.find((c) => c.method === 'TransFee')!;
    for (const c of calls.filter((c) => c.method !== 'TransFee')) expect(c.ended!.getTime()).toBeLessThanOrEqual(fee.started.getTime());
  });

  it('WaitResult: Submit answers once the saga ended, an error when it failed', async () => {
    const ok = newGid();
    expectOk(await drive('grpcb-saga-wait', ok));
    expect((await query(coordinator.dtm, ok)).transaction?.status).toBe('succeed');
    const failed = newGid();
    await db.plan(failed, 'TransIn', 'failure');
    const r = await drive('grpcb-saga-wait', failed);
    expect(r.ok).toBe(false);
    expect(r.error).toContain('Aborted');
    expect((await query(coordinator.dtm, failed)).transaction?.status).toBe('failed');
    expect(await db.effects(failed)).toEqual(['01 action TransOut', '01 compensate TransOutRevert']);
  });

  it('WithBranchHeaders arrive as metadata of every branch call', async () => {
    const gid = newGid();
    await db.plan(gid, 'TransIn', 'failure');
    expectOk(await drive('grpcb-saga-headers', gid));
    await waitForStatus(coordinator.dtm, gid, 'failed');
    const calls = await db.calls(gid);
    expect(calls).toHaveLength(4);
    for (const c of calls) expect(JSON.parse(c.metadata)).toMatchObject({ test_header: ['x'], 'dtm-gid': [gid] });
  });
});

describe('TCC over gRPC (dtmgrpc.TccGlobalTransaction, CallBranch to gRPC Try/Confirm/Cancel)', () => {
  it('calls both Trys, then the coordinator both Confirms', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-tcc', gid));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect((await db.effects(gid)).sort()).toEqual([
      '01 confirm TransOutConfirm',
      '01 try TransOutTry',
      '02 confirm TransInConfirm',
      '02 try TransInTry',
    ]);
  });

  it('a Try answering Aborted makes the client abort, and the coordinator cancels (a null cancel for the failed Try)', async () => {
    const gid = newGid();
    await db.plan(gid, 'TransInTry', 'failure');
    const r = await drive('grpcb-tcc', gid);
    expect(r.ok).toBe(false);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect((await db.effects(gid)).sort()).toEqual(['01 cancel TransOutCancel', '01 try TransOutTry']);
    expect((await callLog(gid)).filter((c) => c.startsWith('TransInCancel'))).toEqual(['TransInCancel cancel OK']);
  });

  it('WithBranchHeaders arrive as metadata of the Trys (the client) and the Confirms (the coordinator)', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-tcc', gid, ['-headers']));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    const calls = await db.calls(gid);
    expect(calls.map((c) => c.method).sort()).toEqual(['TransInConfirm', 'TransInTry', 'TransOutConfirm', 'TransOutTry']);
    for (const c of calls) expect(JSON.parse(c.metadata)).toMatchObject({ test_header: ['x'] });
  });

  it('nested: a Try continuing the TCC with TccFromGrpc registers sub-branch 0201, confirmed with the rest', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-tcc-nested', gid));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect((await db.effects(gid)).sort()).toEqual([
      '01 confirm TransOutConfirm',
      '01 try TransOutTry',
      '02 confirm TransInNestedConfirm',
      '0201 confirm TransInConfirm',
      '0201 try TransInTry',
    ]);
  });

  it('nested: the inner Try answering Aborted fails the outer one, and every branch is cancelled', async () => {
    const gid = newGid();
    await db.plan(gid, 'TransInTry', 'failure');
    const r = await drive('grpcb-tcc-nested', gid);
    expect(r.ok).toBe(false);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect((await db.effects(gid)).sort()).toEqual(['01 cancel TransOutCancel', '01 try TransOutTry']);
    expect((await callLog(gid)).filter((c) => c.includes('Cancel')).sort()).toEqual([
      'TransInCancel cancel OK',
      'TransInNestedCancel cancel OK',
      'TransOutCancel cancel OK',
    ]);
  });
});

describe('XA over gRPC (dtmgrpc.XaGlobalTransaction, XaLocalTransaction on Postgres)', () => {
  const prepared = async (gid: string) =>
    (await db.pool.query<{ gid: string }>('select gid from pg_prepared_xacts where gid like $1', [`${gid}%`])).rows;

  it('prepares both local transactions, and the coordinator commits both over gRPC', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-xa', gid, ['-timeout-to-fail', '60']));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(await db.effects(gid)).toEqual(['01 action XaTransOut', '02 action XaTransIn']);
    expect(await prepared(gid)).toEqual([]);
    expect(await callLog(gid)).toEqual(['XaTransOut action OK', 'XaTransIn action OK', 'XaTransOut commit OK', 'XaTransIn commit OK']);
  });

  it('WithBranchHeaders arrive as metadata of phase one (the client) and phase two (the coordinator)', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-xa', gid, ['-headers', '-timeout-to-fail', '60']));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    const calls = await db.calls(gid);
    expect(calls.map((c) => c.op)).toEqual(['action', 'action', 'commit', 'commit']);
    for (const c of calls) expect(JSON.parse(c.metadata)).toMatchObject({ test_header: ['x'] });
  });

  it('a branch answering Aborted: the client aborts, the coordinator rolls the first back', async () => {
    const gid = newGid();
    await db.plan(gid, 'XaTransIn', 'failure');
    const r = await drive('grpcb-xa', gid, ['-timeout-to-fail', '60']);
    expect(r.ok).toBe(false);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(await db.effects(gid)).toEqual([]);
    expect(await prepared(gid)).toEqual([]);
    expect(await callLog(gid)).toContain('XaTransOut rollback OK');
  });
});

describe('workflow over gRPC (workflow.InitGrpc, branches through workflow.Interceptor)', () => {
  it('a saga-style workflow succeeds; executed again, it answers from the record without calling anything', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-workflow', gid));
    expect((await query(coordinator.dtm, gid)).transaction?.status).toBe('succeed');
    expect(await db.effects(gid)).toEqual(['01 action TransOut', '02 action TransIn']);
    expectOk(await drive('grpcb-workflow', gid));
    expect(await callLog(gid)).toEqual(['TransOut action OK', 'TransIn action OK']);
  });

  it('rolls back when a branch answers Aborted', async () => {
    const gid = newGid();
    await db.plan(gid, 'TransIn', 'failure');
    const r = await drive('grpcb-workflow', gid);
    expect(r.ok).toBe(false);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(await db.effects(gid)).toEqual(['01 action TransOut', '01 rollback TransOutRevert']);
    const calls = (await callLog(gid)).length;
    const again = await drive('grpcb-workflow', gid); // the failed workflow's outcome, from the record
    expect(again.ok).toBe(false);
    expect(again.error).toContain('FAILURE');
    expect(await callLog(gid)).toHaveLength(calls);
  });

  it('a client dying mid-workflow: the coordinator resumes it over gRPC at the busi, which finishes it', async () => {
    const gid = newGid();
    const r = await drive('grpcb-workflow', gid, ['-retry-interval', '1', '-crash-after', '1']);
    expect(r.code).toBeNull(); // SIGKILLed after branch 1
    await waitForStatus(coordinator.dtm, gid, 'succeed', 30_000);
    expect(await db.effects(gid)).toEqual(['01 action TransOut', '02 action TransIn']);
    expect((await db.calls(gid)).map((c) => c.method)).toEqual(['TransOut', 'TransIn']); // TransOut replayed from the record
  });

  it('resumed after the client died, the run meets an Aborted branch and rolls back over gRPC', async () => {
    const gid = newGid();
    await db.plan(gid, 'TransIn', 'failure');
    const r = await drive('grpcb-workflow', gid, ['-retry-interval', '1', '-crash-after', '1']);
    expect(r.code).toBeNull();
    await waitForStatus(coordinator.dtm, gid, 'failed', 30_000);
    expect(await db.effects(gid)).toEqual(['01 action TransOut', '01 rollback TransOutRevert']);
    expect((await callLog(gid)).filter((c) => c.startsWith('TransIn '))).toEqual(['TransIn action Aborted']);
  });

  it('TCC-style branches (OnCommit Confirm, OnRollback Cancel): confirmed on success', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-workflow', gid, ['-tcc']));
    expect((await query(coordinator.dtm, gid)).transaction?.status).toBe('succeed');
    expect((await db.effects(gid)).sort()).toEqual([
      '01 action TransOutTry',
      '01 commit TransOutConfirm',
      '02 action TransInTry',
      '02 commit TransInConfirm',
    ]);
  });

  it('TCC-style branches: cancelled when a Try answers Aborted', async () => {
    const gid = newGid();
    await db.plan(gid, 'TransInTry', 'failure');
    const r = await drive('grpcb-workflow', gid, ['-tcc']);
    expect(r.ok).toBe(false);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(await db.effects(gid)).toEqual(['01 action TransOutTry', '01 rollback TransOutCancel']);
  });
});

describe('a saga mixing an HTTP and a gRPC branch, driven by dtmgrpc', () => {
  let http: SagaService;
  beforeAll(async () => {
    http = await startSagaService(await freshDatabase());
  });
  afterAll(() => http?.close());

  it('succeeds: the HTTP step gets its JSON bytes as the body, the gRPC step its protobuf bytes', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-mixed-saga', gid, ['-busi2', http.url]));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(http.calls(gid).map((c) => `${c.step} ${c.op} ${JSON.stringify(c.body)}`)).toEqual(['s1 action {"amount":30}']);
    expect(await db.effects(gid)).toEqual(['02 action TransIn']);
  });

  it('rolls back across both protocols when the gRPC step answers Aborted', async () => {
    const gid = newGid();
    await db.plan(gid, 'TransIn', 'failure');
    expectOk(await drive('grpcb-mixed-saga', gid, ['-busi2', http.url]));
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect((await http.effects(gid)).map((e) => `${e.step} ${e.op}`)).toEqual(['s1 action', 's1 compensate']);
    expect(await db.effects(gid)).toEqual([]);
    expect(await callLog(gid)).toEqual(['TransIn action Aborted', 'TransInRevert compensate OK']);
  });
});

describe('the coordinator killed mid-flow', () => {
  const cases = [
    { what: 'a gRPC saga', mode: 'grpcb-saga', stuck: 'TransIn', effects: ['01 action TransOut', '02 action TransIn'] },
    { what: 'a gRPC msg', mode: 'grpcb-msg', stuck: 'TransIn', effects: ['01 action TransOut', '02 action TransIn'] },
    {
      what: 'the Confirm phase of a gRPC TCC',
      mode: 'grpcb-tcc',
      stuck: 'TransInConfirm',
      effects: ['01 confirm TransOutConfirm', '01 try TransOutTry', '02 confirm TransInConfirm', '02 try TransInTry'],
    },
  ];
  it.each(cases)(
    'SIGKILLed during $what while a gRPC step answers FailedPrecondition, restarted on the same ports: it finishes, each step in effect once',
    async ({ mode, stuck, effects }) => {
      const [store, port, grpcPort] = await Promise.all([freshStore(), freePort(), freePort()]);
      const start = () => startCoordinator({ store, port, env: { ...fastCoordinator, CONCORD_GRPC_PORT: String(grpcPort) } });
      const first = await start();
      const dtm = `127.0.0.1:${grpcPort}`;
      const gid = newGid();
      try {
        await db.plan(gid, stuck, 'ongoing');
        expectOk(await drive(mode, gid, [], busi.address, dtm));
        const stuckCalls = async () => (await db.calls(gid)).filter((c) => c.method === stuck && c.answer === 'FailedPrecondition').length;
        await vi.waitFor(async () => expect(await stuckCalls()).toBeGreaterThan(1), { timeout: 20_000 });
      } finally {
        expect(await first.stop('SIGKILL')).toBeNull();
      }
      await db.heal(gid);
      const second = await start();
      try {
        await waitForStatus(second.dtm, gid, 'succeed', 30_000);
        expect((await db.effects(gid)).sort()).toEqual(effects);
        const ok = (await db.calls(gid)).filter((c) => c.answer === 'OK').map((c) => c.method);
        expect(ok.sort()).toEqual(effects.map((e) => e.split(' ')[2]).sort()); // each method answered OK once
      } finally {
        expect(await second.stop()).toBe(0);
      }
    },
  );
});

describe("a TypeScript gRPC branch service (the SDK's grpcBranchService, grpcBranch, barrier) under dtmgrpc", () => {
  let ts: TsBusi;
  beforeAll(async () => {
    ts = await startTsBusi(db);
  });
  afterAll(() => ts?.close());

  /** What dtmgrpc's Add sends: the protobuf encoding of BytesValue {"amount":30}, field 1, length 13. */
  const encoded = Buffer.concat([Buffer.from([0x0a, amount.length]), amount]);

  it('a saga succeeds: each method gets the exact protobuf bytes and DTM metadata', async () => {
    const gid = newGid();
    expectOk(await drive('grpcb-saga-headers', gid, [], ts.address));
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(await db.effects(gid)).toEqual(['01 action TransOut', '02 action TransIn']);
    const calls = await db.calls(gid);
    expect(calls.map((c) => c.payload)).toEqual([encoded, encoded]);
    expect(JSON.parse(calls[1]!.metadata)).toMatchObject({ 'dtm-gid': gid, 'dtm-op': 'action', 'dtm-branch_id': '02', test_header: 'x' });
  });

  it('WaitResult and a rollback: an Aborted action is compensated by the barrier as a null compensation', async () => {
    const gid = newGid();
    await db.plan(gid, 'TransIn', 'failure');
    const r = await drive('grpcb-saga-wait', gid, [], ts.address);
    expect(r.ok).toBe(false);
    expect((await query(coordinator.dtm, gid)).transaction?.status).toBe('failed');
    expect(await db.effects(gid)).toEqual(['01 action TransOut', '01 compensate TransOutRevert']);
    expect(await callLog(gid)).toEqual([
      'TransOut action OK',
      'TransIn action Aborted',
      'TransInRevert compensate OK',
      'TransOutRevert compensate OK',
    ]);
    expect((await db.calls(gid)).map((c) => c.payload)).toEqual([encoded, encoded, encoded, encoded]);
  });
});
