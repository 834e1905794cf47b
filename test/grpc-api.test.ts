/**
 * DTM's gRPC API (docs/grpc.md) driven by DTM's own gRPC client, dtmgrpc (github.com/dtm-labs/client
 * v1.17.3), through the Go driver's grpc-* modes (test/compat/go/grpc.go). A real coordinator
 * process with its gRPC port on, real HTTP branch services (the bank and the saga service, with the
 * SDK's barrier), real Postgres.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import {
  credentials,
  loadPackageDefinition,
  Metadata,
  type GrpcObject,
  type ServiceClientConstructor,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { buildGoClient, runClient, type ClientResult } from './compat/setup.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { freePort, startCoordinator, type RunningCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, query, waitForStatus } from './helpers/poll.js';
import { startSagaService, type SagaService } from './helpers/saga-service.js';

/** A branch that records the raw bytes of each call's body, and its headers, by gid. */
interface RawRecorder {
  url: string;
  bodies: Map<string, Buffer[]>;
  headers: Map<string, Record<string, string | string[] | undefined>>;
  server: Server;
}

async function startRawRecorder(): Promise<RawRecorder> {
  const bodies = new Map<string, Buffer[]>();
  const headers = new Map<string, Record<string, string | string[] | undefined>>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const gid = new URL(req.url ?? '/', 'http://x').searchParams.get('gid') ?? '';
      bodies.set(gid, [...(bodies.get(gid) ?? []), Buffer.concat(chunks)]);
      headers.set(gid, req.headers);
      res.end('{"dtm_result":"SUCCESS"}');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return { url: `http://127.0.0.1:${address.port}`, bodies, headers, server };
}

interface GrpcDriver {
  grpc: string;
  coordinator: RunningCoordinator;
  drive(mode: string, gid: string | undefined, busi: string, extra?: string[]): Promise<ClientResult>;
}

/** A coordinator with its gRPC API on a free port, and the Go driver pointed at it. */
async function grpcCoordinator(env: Record<string, string> = {}): Promise<GrpcDriver> {
  const [bin, store, grpcPort] = await Promise.all([buildGoClient(), freshDatabase(), freePort()]);
  const coordinator = await startCoordinator({ store, env: { ...fastCoordinator, CONCORD_GRPC_PORT: String(grpcPort), ...env } });
  const grpc = `127.0.0.1:${grpcPort}`;
  return {
    grpc,
    coordinator,
    async drive(mode, gid, busi, extra = []) {
      const args = ['-dtm', grpc, '-busi', busi, '-mode', mode, ...(gid ? ['-gid', gid] : []), ...extra];
      const r = await runClient([bin], args);
      onTestFailed(() => {
        console.error(
          [
            `--- Go driver: ${args.join(' ')} (exit ${r.code}) ---`,
            `stdout:\n${r.stdout}`,
            `stderr:\n${r.stderr.slice(-4000)}`,
            `--- coordinator output (tail) ---\n${coordinator.output().slice(-4000)}`,
          ].join('\n'),
        );
      });
      return r;
    },
  };
}

/** The driver must have reported success; the message names its error and stderr. */
const expectOk = (r: ClientResult) => expect(r.ok, `${r.error}\n--- client stderr ---\n${r.stderr.slice(-4000)}`).toBe(true);

type Query = Awaited<ReturnType<typeof query>>;
const view = async (dtm: string, gid: string) =>
  (await query(dtm, gid)) as {
    transaction: (NonNullable<Query['transaction']> & { protocol: string; query_prepared?: string; rollback_reason?: string }) | null;
    branches: (Query['branches'][number] & { url: string; bin_data: string })[];
  };

/** A plain gRPC client of dtmgimp.Dtm (@grpc/grpc-js), for requests DTM's Go client never sends. */
function nodeClient(address: string) {
  const proto = fileURLToPath(new URL('../schemas/grpc/dtmgimp.proto', import.meta.url));
  const definition = loadSync(proto, { keepCase: true, longs: Number, defaults: true });
  const Dtm = (loadPackageDefinition(definition).dtmgimp as GrpcObject).Dtm as ServiceClientConstructor;
  const client = new Dtm(address, credentials.createInsecure());
  type Unary = (request: object, metadata: Metadata, callback: (err: ServiceError | null) => void) => void;
  /** Calls `method`; resolves with the error (a status) or undefined. */
  const call = (method: string, request: object, token?: string, extra: Record<string, string> = {}) =>
    new Promise<ServiceError | undefined>((resolve) => {
      const metadata = new Metadata();
      if (token) metadata.set('authorization', `Bearer ${token}`);
      for (const [key, value] of Object.entries(extra)) metadata.set(key, value);
      (client[method] as Unary).call(client, request, metadata, (err) => resolve(err ?? undefined));
    });
  /** Calls `method` for its reply. */
  const unary = (method: string, request: object, callback: (err: ServiceError | null, reply?: unknown) => void) =>
    (client[method] as (r: object, cb: typeof callback) => void).call(client, request, callback);
  return { call, unary, close: () => client.close() };
}

/** A long check-back timeout, so a prepare followed at once by submit or abort is never checked back in between. */
const noCheckBack = ['-timeout-to-fail', '60'];

describe('DTM gRPC client (dtmgrpc): two-phase messages with HTTP branches', () => {
  let api: GrpcDriver;
  let bank: BankService;
  let raw: RawRecorder;

  beforeAll(async () => {
    [api, bank, raw] = await Promise.all([grpcCoordinator(), freshDatabase().then(startBankService), startRawRecorder()]);
  }, 300_000); // a cold Go build takes 1-2 min
  afterAll(async () => {
    await bank?.close();
    raw?.server.close();
    expect(await api?.coordinator.stop()).toBe(0);
  });

  const newGid = () => `grpc-msg-${randomUUID()}`;

  /** Both steps delivered once, with the bytes the client sent, and the transaction recorded as a gRPC one. */
  async function expectDelivered(gid: string): Promise<void> {
    await waitForStatus(api.coordinator.dtm, gid, 'succeed');
    expect(bank.received(gid, '/TransOut')).toBe(1);
    expect(bank.received(gid, '/TransIn')).toBe(1);
    expect(await bank.effects(gid)).toBe(2);
    const { transaction, branches } = await view(api.coordinator.dtm, gid);
    expect(transaction?.protocol).toBe('grpc');
    // bin_data is the base64 of the payload's bytes, as for a transaction made over HTTP.
    expect(branches.map((b) => ({ url: b.url, status: b.status, payload: Buffer.from(b.bin_data, 'base64').toString() }))).toEqual([
      { url: `${bank.url}/TransOut`, status: 'succeed', payload: '{"amount":30}' },
      { url: `${bank.url}/TransIn`, status: 'succeed', payload: '{"amount":30}' },
    ]);
  }

  it('grpc-new-gid: NewGid answers a fresh gid and makes no transaction', async () => {
    const first = await api.drive('grpc-new-gid', undefined, '');
    const second = await api.drive('grpc-new-gid', undefined, '');
    expectOk(first);
    expectOk(second);
    expect(first.gid).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(second.gid).not.toBe(first.gid);
    expect((await query(api.coordinator.dtm, first.gid!)).transaction).toBeNull();
  });

  it('grpc-submit: both steps are delivered once with the payload the client sent', async () => {
    const gid = newGid();
    expectOk(await api.drive('grpc-submit', gid, bank.url));
    await expectDelivered(gid);
  });

  it('grpc-submit without a gid: the client asks NewGid over gRPC first', async () => {
    const r = await api.drive('grpc-submit', undefined, bank.url);
    expectOk(r);
    // The gid is in the client's debug log of the Submit request.
    const gid = /"Gid":"([A-Za-z0-9_-]{22})"/.exec(r.stderr.replaceAll('\\"', '"'))?.[1];
    expect(gid, r.stderr).toBeDefined();
    await expectDelivered(gid!);
  });

  it('grpc-prepare-submit: prepared with its HTTP check-back URL, then delivered', async () => {
    const gid = newGid();
    expectOk(await api.drive('grpc-prepare-submit', gid, bank.url, noCheckBack));
    await expectDelivered(gid);
    expect((await view(api.coordinator.dtm, gid)).transaction?.query_prepared).toBe(`${bank.url}/QueryPrepared`);
  });

  it('grpc-prepare-abort: the message fails and nothing is delivered', async () => {
    const gid = newGid();
    expectOk(await api.drive('grpc-prepare-abort', gid, bank.url, noCheckBack));
    expect((await view(api.coordinator.dtm, gid)).transaction).toMatchObject({ status: 'failed', protocol: 'grpc' });
    expect(bank.received(gid, '/TransOut') + bank.received(gid, '/TransIn')).toBe(0);
    expect(await bank.effects(gid)).toBe(0);
  });

  it('grpc-msg-bytes: a payload with NUL that is not UTF-8 reaches the HTTP branch byte for byte', async () => {
    const gid = newGid();
    const sent = Buffer.from([0x0a, 0x04, 0x00, 0xff, 0x10, 0x00]); // wrapperspb.Bytes{00 ff 10 00}, marshalled
    expectOk(await api.drive('grpc-msg-bytes', gid, raw.url));
    await waitForStatus(api.coordinator.dtm, gid, 'succeed');
    expect(raw.bodies.get(gid)).toEqual([sent]);
    const { branches } = await view(api.coordinator.dtm, gid);
    expect(branches.map((b) => b.bin_data)).toEqual([sent.toString('base64')]);
  });

  it('a traceparent in the Submit metadata reaches the branch call, as the HTTP header does', async () => {
    const gid = newGid();
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const client = nodeClient(api.grpc);
    try {
      const steps = JSON.stringify([{ action: `${raw.url}/traced` }]);
      expect(
        await client.call('Submit', { Gid: gid, TransType: 'msg', Steps: steps, BinPayloads: [Buffer.from('x')] }, undefined, {
          traceparent,
        }),
      ).toBeUndefined();
    } finally {
      client.close();
    }
    await waitForStatus(api.coordinator.dtm, gid, 'succeed');
    expect(raw.headers.get(gid)).toMatchObject({ traceparent });
  });
});

describe('DTM gRPC client (dtmgrpc): sagas with HTTP branches', () => {
  let api: GrpcDriver;
  let service: SagaService;

  beforeAll(async () => {
    [api, service] = await Promise.all([grpcCoordinator(), freshDatabase().then(startSagaService)]);
  }, 300_000);
  afterAll(async () => {
    await service?.close();
    expect(await api?.coordinator.stop()).toBe(0);
  });

  const newGid = () => `grpc-saga-${randomUUID()}`;
  const names = (rows: { step: string; op: string }[]) => rows.map((r) => `${r.step}/${r.op}`);

  it('grpc-saga: both actions run once, in order, with the JSON payload the client sent', async () => {
    const gid = newGid();
    expectOk(await api.drive('grpc-saga', gid, service.url));
    await waitForStatus(api.coordinator.dtm, gid, 'succeed');
    const calls = service.calls(gid);
    expect(calls.map((c) => [`${c.step}/${c.op}`, c.branchId, c.body, c.status])).toEqual([
      ['s1/action', '01', { amount: 30 }, 200],
      ['s2/action', '02', { amount: 30 }, 200],
    ]);
    expect(calls[1]!.arrivedAt).toBeGreaterThanOrEqual(calls[0]!.endedAt!);
    expect(names(await service.effects(gid))).toEqual(['s1/action', 's2/action']);
    expect((await view(api.coordinator.dtm, gid)).transaction).toMatchObject({ trans_type: 'saga', protocol: 'grpc' });
  });

  it('grpc-saga, step 2 answers FAILURE: rolled back, step 2 then step 1 compensated with the payload', async () => {
    const gid = newGid();
    service.failNext('s2', 'action', 1, 'failure');
    expectOk(await api.drive('grpc-saga', gid, service.url));
    await waitForStatus(api.coordinator.dtm, gid, 'failed');
    const calls = service.calls(gid);
    expect(names(calls)).toEqual(['s1/action', 's2/action', 's2/compensate', 's1/compensate']);
    expect(calls.map((c) => c.body)).toEqual(Array(4).fill({ amount: 30 }));
    expect(names(await service.effects(gid))).toEqual(['s1/action', 's1/compensate']);
    expect((await view(api.coordinator.dtm, gid)).transaction?.rollback_reason).toContain('FAILURE');
  });

  it('grpc-saga-concurrent with orders: s1 and s2 at once, s3 only after both', async () => {
    const gid = newGid();
    service.setLatency('s1', 400);
    service.setLatency('s2', 200);
    try {
      expectOk(await api.drive('grpc-saga-concurrent', gid, service.url));
      await waitForStatus(api.coordinator.dtm, gid, 'succeed');
    } finally {
      service.setLatency('s1', 0);
      service.setLatency('s2', 0);
    }
    const actions = service.calls(gid).filter((c) => c.op === 'action');
    const [s1, s2, s3] = ['s1', 's2', 's3'].map((step) => actions.find((c) => c.step === step)!);
    expect(actions).toHaveLength(3);
    expect(s2!.arrivedAt).toBeLessThan(s1!.endedAt!);
    expect(s3!.arrivedAt).toBeGreaterThanOrEqual(Math.max(s1!.endedAt!, s2!.endedAt!));
  });

  it('grpc-saga-wait: Submit answers once the saga succeeded', async () => {
    const gid = newGid();
    expectOk(await api.drive('grpc-saga-wait', gid, service.url));
    expect((await view(api.coordinator.dtm, gid)).transaction?.status).toBe('succeed'); // no polling
    expect(names(service.calls(gid))).toEqual(['s1/action', 's2/action']);
  });

  it('grpc-saga-wait, the saga fails: Submit answers the status Aborted (DTM FAILURE)', async () => {
    const gid = newGid();
    service.failNext('s2', 'action', 1, 'failure');
    const r = await api.drive('grpc-saga-wait', gid, service.url);
    expect(r.ok, r.stderr).toBe(false);
    expect(r.error).toContain('code = Aborted desc = ');
    expect((await view(api.coordinator.dtm, gid)).transaction?.status).toBe('failed');
  });

  it('grpc-saga-headers: the branch headers reach every action and compensation', async () => {
    const gid = newGid();
    service.failNext('s2', 'action', 1, 'failure');
    expectOk(await api.drive('grpc-saga-headers', gid, service.url));
    await waitForStatus(api.coordinator.dtm, gid, 'failed');
    const calls = service.calls(gid);
    expect(calls).toHaveLength(4);
    for (const c of calls) expect(c.headers, `${c.step}/${c.op}`).toMatchObject({ test_header: 'x' });
  });
});

describe('DTM gRPC client (dtmgrpc): TCC with HTTP branches', () => {
  let api: GrpcDriver;
  let bank: BankService;

  beforeAll(async () => {
    [api, bank] = await Promise.all([grpcCoordinator(), freshDatabase().then(startBankService)]);
  }, 300_000);
  afterAll(async () => {
    await bank?.close();
    expect(await api?.coordinator.stop()).toBe(0);
  });

  it('grpc-tcc: both Trys succeed, the client submits over gRPC, the coordinator confirms both with the registered payload', async () => {
    const gid = `grpc-tcc-${randomUUID()}`;
    expectOk(await api.drive('grpc-tcc', gid, bank.url, noCheckBack));
    await waitForStatus(api.coordinator.dtm, gid, 'succeed');
    // Confirm's effect row holds the amount of the payload: the base64 went back to the bytes {"amount":30}.
    expect(await bank.effectKinds(gid)).toEqual(['in-confirm', 'in-try', 'out-confirm', 'out-try']);
    const { rows } = await bank.pool.query<{ amount: number }>('select amount from transfers where gid = $1', [gid]);
    expect(rows.map((r) => r.amount)).toEqual([30, 30, 30, 30]);
    expect((await view(api.coordinator.dtm, gid)).transaction).toMatchObject({ trans_type: 'tcc', protocol: 'grpc' });
  });

  it('grpc-tcc, a Try fails: the client aborts over gRPC and the coordinator cancels both branches', async () => {
    const gid = `grpc-tcc-${randomUUID()}`;
    bank.failNext('/TransInTry', 1, 'failure');
    const r = await api.drive('grpc-tcc', gid, bank.url, noCheckBack);
    expect(r.ok).toBe(false);
    await waitForStatus(api.coordinator.dtm, gid, 'failed');
    expect(bank.received(gid, '/TransInCancel')).toBe(1);
    expect(await bank.effectKinds(gid)).toEqual(['out-cancel', 'out-try']);
    expect((await view(api.coordinator.dtm, gid)).transaction?.rollback_reason).toContain('FAILURE');
  });
});

describe('gRPC API (plain gRPC client): bad input, states, workflow records', () => {
  let api: GrpcDriver;
  let client: ReturnType<typeof nodeClient>;

  beforeAll(async () => {
    api = await grpcCoordinator();
    client = nodeClient(api.grpc);
  }, 300_000);
  afterAll(async () => {
    client?.close();
    expect(await api?.coordinator.stop()).toBe(0);
  });

  it('dtmgrpc: a gid with a space is refused with InvalidArgument naming Gid, and nothing is stored', async () => {
    const r = await api.drive('grpc-submit', 'bad gid', 'http://127.0.0.1:9');
    expect(r.ok).toBe(false);
    expect(r.error).toMatch(/code = InvalidArgument desc = Gid: gid must not contain whitespace/);
    const all = (await (await fetch(`${api.coordinator.dtm}/all`)).json()) as { transactions: unknown[] | null };
    expect(all.transactions ?? []).toEqual([]);
  });

  it('dtmgrpc: a negative retry interval is refused naming TransOptions.RetryInterval', async () => {
    const r = await api.drive('grpc-saga', `grpc-bad-${randomUUID()}`, 'http://127.0.0.1:9', ['-retry-interval', '-1']);
    expect(r.ok).toBe(false);
    expect(r.error).toMatch(/code = InvalidArgument desc = TransOptions\.RetryInterval: /);
  });

  it('Steps that are not JSON, payloads that do not match the steps, NUL in a field: InvalidArgument with the field in metadata', async () => {
    const gid = `grpc-bad-${randomUUID()}`;
    const notJson = await client.call('Submit', { Gid: gid, TransType: 'saga', Steps: '[{"action":' });
    expect(notJson).toMatchObject({ code: 3, details: expect.stringMatching(/^Steps: must be JSON text/) });
    expect(notJson?.metadata.get('concord-field')).toEqual(['Steps']);

    const steps = JSON.stringify([{ action: 'http://127.0.0.1:9/a', compensate: 'http://127.0.0.1:9/c' }]);
    const mismatch = await client.call('Submit', {
      Gid: gid,
      TransType: 'saga',
      Steps: steps,
      BinPayloads: [Buffer.from('a'), Buffer.from('b')],
    });
    expect(mismatch).toMatchObject({ code: 3, details: expect.stringMatching(/^BinPayloads: payloads has 2 entries but steps has 1/) });

    const nul = await client.call('Prepare', { Gid: gid, TransType: 'msg', CustomedData: 'a\u0000b' });
    expect(nul).toMatchObject({ code: 3, details: expect.stringContaining('CustomedData') });
    expect(nul?.metadata.get('concord-code')).toEqual(['INVALID_REQUEST']);

    const type = await client.call('Prepare', { Gid: gid, TransType: 'saga' });
    expect(type).toMatchObject({ code: 3, details: expect.stringContaining('TransType') });
    expect((await query(api.coordinator.dtm, gid)).transaction).toBeNull();
    // Counted with the HTTP API's requests, by method and status.
    const metrics = await (await fetch(`${api.coordinator.url}/api/metrics`)).text();
    expect(metrics).toMatch(/concord_http_requests_total\{route="\/dtmgimp\.Dtm\/Submit",status="grpc INVALID_ARGUMENT"\} [1-9]/);
  });

  it('Submit of an aborted message answers Aborted, as DTM does for FAILURE', async () => {
    const gid = `grpc-state-${randomUUID()}`;
    const step = JSON.stringify([{ action: 'http://127.0.0.1:9/a' }]);
    expect(await client.call('Prepare', { Gid: gid, TransType: 'msg', Steps: step, BinPayloads: [Buffer.from('x')] })).toBeUndefined();
    expect(await client.call('Abort', { Gid: gid, TransType: 'msg' })).toBeUndefined();
    // FAILURE is Aborted (code 10) for DTM's gRPC clients.
    expect(await client.call('Submit', { Gid: gid, TransType: 'msg', Steps: step, BinPayloads: [Buffer.from('x')] })).toMatchObject({
      code: 10,
    });
  });

  it('PrepareWorkflow and RegisterBranch: a step recorded as bytes comes back as the same bytes', async () => {
    const gid = `grpc-wf-${randomUUID()}`;
    const request = {
      Gid: gid,
      TransType: 'workflow',
      CustomedData: '{"name":"wf","data":null}',
      QueryPrepared: 'http://127.0.0.1:9/resume',
    };
    const prepare = () =>
      new Promise<{ Transaction: { Status: string }; Progresses: { BranchID: string; Op: string; Status: string; BinData: Buffer }[] }>(
        (resolve, reject) => client.unary('PrepareWorkflow', request, (err, reply) => (err ? reject(err) : resolve(reply as never))),
      );
    expect(await prepare()).toMatchObject({ Transaction: { Status: 'prepared' }, Progresses: [] });
    const bytes = Buffer.from([0x0a, 0x02, 0x00, 0xfe]);
    const register = { Gid: gid, TransType: 'workflow', BranchID: '01', Data: { op: 'action', status: 'succeed' }, BusiPayload: bytes };
    expect(await client.call('RegisterBranch', register)).toBeUndefined();
    expect((await prepare()).Progresses).toEqual([{ BranchID: '01', Op: 'action', Status: 'succeed', BinData: bytes }]);
  });
});

describe('gRPC API: tokens (protected mode)', () => {
  let api: GrpcDriver;
  let bank: BankService;
  let client: ReturnType<typeof nodeClient>;

  beforeAll(async () => {
    [api, bank] = await Promise.all([
      grpcCoordinator({ CONCORD_API_TOKENS: 'api-secret-0123456789', CONCORD_OPERATOR_TOKENS: 'op-secret-0123456789' }),
      freshDatabase().then(startBankService),
    ]);
    client = nodeClient(api.grpc);
  }, 300_000);
  afterAll(async () => {
    client?.close();
    await bank?.close();
    expect(await api?.coordinator.stop()).toBe(0);
  });

  const dtm = () => api.coordinator.dtm.replace('/api/dtmsvr', '/t/op-secret-0123456789/api/dtmsvr');

  it('without the token metadata, dtmgrpc is refused with Unauthenticated and nothing is stored', async () => {
    const gid = `grpc-token-${randomUUID()}`;
    const r = await api.drive('grpc-submit', gid, bank.url);
    expect(r.ok).toBe(false);
    expect(r.error).toMatch(/code = Unauthenticated desc = this coordinator requires a token/);
    expect((await query(dtm(), gid)).transaction).toBeNull();
  });

  it('with a wrong token, Unauthenticated; with the API token, the message is delivered', async () => {
    const gid = `grpc-token-${randomUUID()}`;
    const wrong = await api.drive('grpc-submit', gid, bank.url, ['-token', 'not-it-0123456789abc']);
    expect(wrong.error).toMatch(/code = Unauthenticated desc = the token presented is not valid/);
    expectOk(await api.drive('grpc-submit', gid, bank.url, ['-token', 'api-secret-0123456789']));
    await waitForStatus(dtm(), gid, 'succeed');
    expect(bank.received(gid, '/TransIn')).toBe(1);
  });

  it('topics are operator actions: PermissionDenied with the API token, done with the operator token', async () => {
    const request = { Topic: `t-${randomUUID()}`, URL: 'http://127.0.0.1:9/sub', Remark: '' };
    expect(await client.call('Subscribe', request)).toMatchObject({ code: 16 });
    expect(await client.call('Subscribe', request, 'api-secret-0123456789')).toMatchObject({
      code: 7,
      details: expect.stringContaining('operator'),
    });
    expect(await client.call('Subscribe', request, 'op-secret-0123456789')).toBeUndefined();
    expect(await client.call('Unsubscribe', request, 'api-secret-0123456789')).toMatchObject({ code: 7 });
    expect(await client.call('Unsubscribe', request, 'op-secret-0123456789')).toBeUndefined();
    expect(await client.call('DeleteTopic', request, 'op-secret-0123456789')).toBeUndefined();
    expect(await client.call('DeleteTopic', { ...request, Topic: 'a b' }, 'op-secret-0123456789')).toMatchObject({
      code: 3,
      details: expect.stringMatching(/^Topic: /),
    });
  });
});

describe('gRPC API: graceful shutdown', () => {
  let api: GrpcDriver;
  let service: SagaService;

  beforeAll(async () => {
    [api, service] = await Promise.all([grpcCoordinator(), freshDatabase().then(startSagaService)]);
  }, 300_000);
  afterAll(async () => {
    await service?.close();
    await api?.coordinator.stop();
  });

  it('SIGTERM during a Submit with WaitResult: the call is answered, new calls are refused, the coordinator exits 0', async () => {
    const gid = `grpc-stop-${randomUUID()}`;
    service.setLatency('s1', 1500);
    const running = api.drive('grpc-saga-wait', gid, service.url);
    await expect.poll(() => service.calls(gid).length, { timeout: 20_000 }).toBe(1); // s1 is being called
    const stopped = api.coordinator.stop();
    const client = nodeClient(api.grpc);
    try {
      // Draining (or, later, gone): either way UNAVAILABLE, which DTM's clients retry elsewhere.
      expect(await client.call('Submit', { Gid: `${gid}-late`, TransType: 'saga' })).toMatchObject({ code: 14 });
    } finally {
      client.close();
    }
    expectOk(await running);
    expect(await stopped).toBe(0);
    expect(service.calls(gid).map((c) => `${c.step}/${c.op} ${c.status}`)).toEqual(['s1/action 200', 's2/action 200']);
  });
});
