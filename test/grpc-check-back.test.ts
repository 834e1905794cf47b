/**
 * The coordinator's calls of gRPC methods beyond saga and message steps: a two-phase message's
 * check-back (query_prepared of DTM's gRPC form) answered by the SDK's grpcQueryPrepared from a
 * real Postgres barrier table, and a TCC whose Confirm and Cancel are gRPC methods. Real
 * coordinator process, real Postgres, real gRPC servers.
 */
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BranchBarrier, BranchFailure, ensureBarrierTable, grpcQueryPrepared } from '../sdk/index.js';
import { inProcessCoordinator, type TestCoordinator } from './helpers/coordinator.js';
import { freshDatabase, freshStore } from './helpers/db.js';
import { startGrpcServer, startRecordingBusi, type GrpcTestServer, type RecordingBusi } from './helpers/grpc-server.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';

let coordinator: TestCoordinator;
let busi: RecordingBusi;
let sender: GrpcTestServer;
let pool: pg.Pool;
/** The metadata of each check-back the sender's QueryPrepared got. */
const checkBacks: Record<string, string>[] = [];

beforeAll(async () => {
  pool = new pg.Pool({ connectionString: await freshDatabase(), max: 4 });
  await ensureBarrierTable(pool);
  busi = await startRecordingBusi();
  const queryPrepared = grpcQueryPrepared(pool);
  sender = await startGrpcServer('bank.Sender', {
    QueryPrepared: (call, callback) => {
      checkBacks.push(Object.fromEntries(Object.entries(call.metadata.getMap()).map(([k, v]) => [k, v.toString()])));
      queryPrepared(call, callback);
    },
  });
  coordinator = await inProcessCoordinator({ store: await freshStore(), env: fastCoordinator });
}, 120_000);
afterAll(async () => {
  expect(await coordinator?.stop()).toBe(0);
  await busi?.close();
  await sender?.close();
  await pool?.end();
});

describe('a two-phase message checked back over gRPC', () => {
  /** Prepares a message whose sender then "dies": only the check-back can settle it. */
  const prepare = async (gid: string) => {
    const res = await post(`${coordinator.dtm}/prepare`, {
      gid,
      trans_type: 'msg',
      steps: [{ action: busi.server.url('TransIn') }],
      payloads: ['{"amount":30}'],
      query_prepared: sender.url('QueryPrepared'),
    });
    expect(res.status).toBe(200);
  };

  it('committed local transaction: the check-back answers OK and the message is delivered', async () => {
    const gid = `grpc-qp-${randomUUID()}`;
    // The local transaction's barrier row (what doAndSubmit commits), written first so that no
    // check-back can come before it; then the sender "dies" without submitting.
    await new BranchBarrier({ trans_type: 'msg', gid, branch_id: '00', op: 'msg' }).run(pool, async () => undefined);
    await prepare(gid);
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(busi.callsOf(gid, 'TransIn')).toHaveLength(1);
    expect(checkBacks.find((m) => m['dtm-gid'] === gid)).toMatchObject({ 'dtm-trans_type': 'msg', 'dtm-branch_id': '00', 'dtm-op': 'msg' });
  });

  it('rolled-back local transaction: the check-back answers Aborted, the message fails and is never delivered', async () => {
    const gid = `grpc-qp-${randomUUID()}`;
    await prepare(gid);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(busi.callsOf(gid)).toHaveLength(0);
    // The check-back's rollback row blocks a late commit of the local transaction.
    const late = new BranchBarrier({ trans_type: 'msg', gid, branch_id: '00', op: 'msg' }).run(pool, async () => 'committed');
    await expect(late).rejects.toBeInstanceOf(BranchFailure);
  });
});

describe('TCC with gRPC Confirm and Cancel', () => {
  const tcc = async (gid: string) => {
    expect((await post(`${coordinator.dtm}/prepare`, { gid, trans_type: 'tcc', branch_headers: { 'x-request': 'r1' } })).status).toBe(200);
    for (const [branch_id, data] of [
      ['01', '{"from":"alice"}'],
      ['02', '{"to":"bob"}'],
    ] as const) {
      const res = await post(`${coordinator.dtm}/registerBranch`, {
        gid,
        trans_type: 'tcc',
        branch_id,
        data,
        confirm: busi.server.url('Confirm'),
        cancel: busi.server.url('Cancel'),
      });
      expect(res.status).toBe(200);
    }
  };
  const calls = (gid: string) =>
    busi
      .callsOf(gid)
      .map((c) => `${c.method}:${c.metadata['dtm-op']}:${c.metadata['dtm-branch_id']}:${c.body.toString()}`)
      .sort();

  it('submit confirms every branch over gRPC with its data, retrying a Confirm that answers Internal', async () => {
    const gid = `grpc-tcc-${randomUUID()}`;
    busi.script.set(gid, (method, n) => (method === 'Confirm' && n === 1 ? new Error('busy') : undefined));
    await tcc(gid);
    expect((await post(`${coordinator.dtm}/submit`, { gid, trans_type: 'tcc' })).status).toBe(200);
    await waitForStatus(coordinator.dtm, gid, 'succeed');
    expect(new Set(calls(gid))).toEqual(new Set(['Confirm:confirm:01:{"from":"alice"}', 'Confirm:confirm:02:{"to":"bob"}']));
    expect(busi.callsOf(gid, 'Confirm').length).toBeGreaterThanOrEqual(3);
    expect(busi.callsOf(gid)[0]?.metadata).toMatchObject({ 'dtm-trans_type': 'tcc', 'x-request': 'r1' });
  });

  it('abort cancels every branch over gRPC', async () => {
    const gid = `grpc-tcc-${randomUUID()}`;
    await tcc(gid);
    expect((await post(`${coordinator.dtm}/abort`, { gid, trans_type: 'tcc' })).status).toBe(200);
    await waitForStatus(coordinator.dtm, gid, 'failed');
    expect(calls(gid)).toEqual(['Cancel:cancel:01:{"from":"alice"}', 'Cancel:cancel:02:{"to":"bob"}']);
    expect((await query(coordinator.dtm, gid)).branches.filter((b) => b.op === 'cancel').map((b) => b.status)).toEqual([
      'succeed',
      'succeed',
    ]);
  });

  it('a bad gRPC Confirm is refused at registration with 400 naming the field', async () => {
    const gid = `grpc-tcc-${randomUUID()}`;
    await post(`${coordinator.dtm}/prepare`, { gid, trans_type: 'tcc' });
    const res = await post(`${coordinator.dtm}/registerBranch`, {
      gid,
      trans_type: 'tcc',
      branch_id: '01',
      confirm: 'localhost/busi.Busi/Confirm',
      cancel: busi.server.url('Cancel'),
    });
    expect(res.status).toBe(400);
    expect(res.body.field).toBe('confirm');
    expect((await query(coordinator.dtm, gid)).branches).toHaveLength(0);
  });
});
