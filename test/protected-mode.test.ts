/**
 * Protected mode and tokens (docs/security.md): real coordinator processes, DTM's own Go and
 * Python clients through the secret path prefix, the SDK with a bearer token.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { networkInterfaces } from 'node:os';
import { promisify } from 'node:util';
import Fastify from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../schemas/config.js';
import { isConcordError, Msg } from '../sdk/index.js';
import { buildGoClient, pythonWithDtmcli, PYTHON_CLIENT_SCRIPT, runClient } from './compat/setup.js';
import { startBankService, type BankService } from './helpers/bank-service.js';
import { cliPath, startCoordinator, type RunningCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, query, waitForStatus } from './helpers/poll.js';

const apiToken = 'api-token-one-0123456789';
const rotatedToken = 'api-token-two-abcdefghij';
const operatorToken = 'operator-token-0123456789';
const tokens = { CONCORD_API_TOKENS: `${apiToken},${rotatedToken}`, CONCORD_OPERATOR_TOKENS: operatorToken };

interface Reply {
  status: number;
  headers: Headers;
  body: Record<string, unknown>;
  text: string;
}

async function call(
  url: string,
  init: { method?: string; token?: string; json?: unknown; body?: string; type?: string } = {},
): Promise<Reply> {
  const headers: Record<string, string> = {};
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  if (init.json !== undefined) headers['content-type'] = 'application/json';
  if (init.type) headers['content-type'] = init.type;
  const res = await fetch(url, {
    method: init.method ?? (init.json === undefined && init.body === undefined ? 'GET' : 'POST'),
    headers,
    body: init.json === undefined ? init.body : JSON.stringify(init.json),
  });
  const text = await res.text();
  let body: Record<string, unknown> = {};
  try {
    body = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // Prometheus text
  }
  return { status: res.status, headers: res.headers, body, text };
}

/** A message prepared and left so (long timeout), with a payload and a header that must not leak. */
function preparedMsg(gid: string) {
  return {
    gid,
    trans_type: 'msg',
    steps: [{ action: 'http://127.0.0.1:9/TransIn' }],
    payloads: ['{"card":"4111-1111-1111-1111"}'],
    query_prepared: 'http://127.0.0.1:9/QueryPrepared',
    timeout_to_fail: 600,
    branch_headers: { authorization: 'Bearer downstream-secret' },
  };
}

describe('with tokens configured', () => {
  let coordinator: RunningCoordinator;
  let api: string; // the DTM API without a token in the URL
  let withToken: string; // the DTM API with the API token as path prefix, as DTM's clients carry it

  beforeAll(async () => {
    // Logs at debug: no token may show up in them.
    coordinator = await startCoordinator({
      store: await freshDatabase(),
      env: { ...fastCoordinator, ...tokens, CONCORD_LOG_LEVEL: 'debug' },
    });
    api = coordinator.dtm;
    withToken = `${coordinator.url}/t/${apiToken}/api/dtmsvr`;
  });
  afterAll(async () => {
    expect(await coordinator?.stop()).toBe(0);
    for (const t of [apiToken, rotatedToken, operatorToken]) expect(coordinator.output()).not.toContain(t);
  });

  it('answers 401 without a token and with a wrong one, naming no token', async () => {
    const wrong = 'wrong-token-0123456789';
    const refused = [
      await call(`${api}/newGid`),
      await call(`${api}/all`),
      await call(`${api}/query?gid=x`),
      await call(`${api}/prepare`, { json: preparedMsg(`pm-${randomUUID()}`) }),
      await call(`${coordinator.url}/api/metrics`),
      await call(`${api}/no-such-route`),
      await call(`${api}/newGid`, { token: wrong }),
      await call(`${coordinator.url}/t/${wrong}/api/dtmsvr/newGid`),
      await call(`${coordinator.url}/t/${apiToken.slice(0, -1)}/api/dtmsvr/newGid`),
    ];
    for (const r of refused) {
      expect(r.status).toBe(401);
      expect(r.body.code).toBe('UNAUTHORIZED');
      expect(r.headers.get('www-authenticate')).toMatch(/^Bearer/);
      for (const t of [apiToken, rotatedToken, operatorToken]) expect(r.text).not.toContain(t);
    }
    expect(refused[0]?.body.message).toMatch(/\/t\/<token>\/api\/dtmsvr.*Authorization: Bearer/);
    expect(refused[6]?.body.message).toBe('the token presented is not valid');
  });

  it('takes every configured token, in the path or as a bearer, and keeps liveness and readiness open', async () => {
    expect((await call(`${withToken}/newGid`)).status).toBe(200);
    expect((await call(`${coordinator.url}/t/${rotatedToken}/api/dtmsvr/newGid`)).status).toBe(200);
    expect((await call(`${api}/newGid`, { token: rotatedToken })).status).toBe(200);
    expect((await call(`${api}/newGid`, { token: operatorToken })).status).toBe(200); // operator passes where API is asked
    const metrics = await call(`${coordinator.url}/t/${apiToken}/api/metrics`);
    expect(metrics.status).toBe(200);
    expect(metrics.text).toContain('concord_http_requests_total');
    expect(metrics.text).not.toContain(apiToken); // route labels come from the route, not the raw URL
    expect((await call(`${coordinator.url}/api/health`)).status).toBe(200);
    expect((await call(`${coordinator.url}/api/ping`)).status).toBe(200);
  });

  it('the SDK carries its token as a bearer; without it the coordinator refuses', async () => {
    const bank = await startBankService(await freshDatabase());
    try {
      const gid = `pm-sdk-${randomUUID()}`;
      await new Msg(api, gid, { token: apiToken }).add(`${bank.url}/TransIn`, { amount: 30 }).submit();
      await waitForStatus(withToken, gid, 'succeed');
      expect(bank.received(gid, '/TransIn')).toBe(1);
      const refused = await new Msg(api, `pm-sdk-${randomUUID()}`)
        .add(`${bank.url}/TransIn`, { amount: 30 })
        .submit()
        .catch((e: unknown) => e);
      expect(isConcordError(refused) && refused.code).toBe('UNAUTHORIZED');

      // After a local error the SDK asks the check-back URL itself: the token stays with the coordinator.
      const seen: (string | undefined)[] = [];
      const checkBack = Fastify();
      checkBack.get('/QueryPrepared', async (request, reply) => {
        seen.push(request.headers.authorization);
        return reply.status(409).send({ dtm_result: 'FAILURE' });
      });
      const checkBackUrl = await checkBack.listen({ port: 0, host: '127.0.0.1' });
      try {
        const failed = `pm-sdk-${randomUUID()}`;
        const local = new Msg(api, failed, { token: apiToken, timeoutToFail: 600 }).add(`${bank.url}/TransIn`, { amount: 30 });
        await expect(
          local.doAndSubmit(`${checkBackUrl}/QueryPrepared`, bank.pool, () => Promise.reject(new Error('local'))),
        ).rejects.toThrow('local');
        expect(seen).toEqual([undefined]);
        expect((await query(withToken, failed)).transaction?.status).toBe('failed'); // aborted, with the token
      } finally {
        await checkBack.close();
      }
    } finally {
      await bank.close();
    }
  });

  it('operator actions refuse an API token and take an operator token', async () => {
    const topic = `pm-topic-${randomUUID().slice(0, 8)}`;
    const subscription = { topic, url: 'http://127.0.0.1:9/subscriber' };
    const actions = [
      { url: `${api}/subscribe`, json: subscription },
      { url: `${api}/unsubscribe`, json: subscription },
      { url: `${api}/redrive`, json: { gid: 'no-such-gid' } },
    ];
    for (const a of actions) {
      const r = await call(a.url, { token: apiToken, json: a.json });
      expect(r.status, a.url).toBe(403);
      expect(r.body.message).toMatch(/operator token/);
    }
    expect((await call(`${api}/topic/${topic}`, { method: 'DELETE', token: apiToken })).status).toBe(403);
    expect((await call(`${withToken}/subscribe`, { json: subscription })).status).toBe(403); // the path token is no different

    expect((await call(`${api}/subscribe`, { token: operatorToken, json: subscription })).body).toEqual({ dtm_result: 'SUCCESS' });
    expect((await call(`${api}/unsubscribe`, { token: operatorToken, json: subscription })).body).toEqual({ dtm_result: 'SUCCESS' });
    expect((await call(`${api}/subscribe`, { token: operatorToken, json: subscription })).status).toBe(200);
    expect((await call(`${api}/topic/${topic}`, { method: 'DELETE', token: operatorToken })).body).toEqual({ dtm_result: 'SUCCESS' });
    expect((await call(`${api}/redrive`, { token: operatorToken, json: { gid: 'no-such-gid' } })).status).toBe(404);
  });

  it('records the actions of a bare operator token (configured without a name) as "operator"', async () => {
    const gid = `pm-retry-${randomUUID().slice(0, 8)}`;
    expect((await call(`${api}/prepare`, { token: apiToken, json: preparedMsg(gid) })).status).toBe(200);
    const admin = `${coordinator.url}/api/concord/admin`;
    expect((await call(`${admin}/retry`, { token: operatorToken, json: { gid } })).status).toBe(200);
    const history = await call(`${admin}/actions?kind=transaction&subject=${gid}`, { token: operatorToken });
    expect(history.body.actions).toEqual([{ action: 'retry-now', operator: 'operator', detail: '', at: expect.any(String) }]);
    expect((await call(`${admin}/actions?kind=transaction&subject=${gid}`, { token: apiToken })).status).toBe(403);
    const bad = await call(`${admin}/actions?kind=saga&subject=${gid}`, { token: operatorToken });
    expect(bad.status).toBe(400);
    expect(bad.body.message).toMatch(/kind/);
  });

  it('redacts payloads and header values in /query and /all unless an operator token is presented', async () => {
    const gid = `pm-redact-${randomUUID()}`;
    expect((await call(`${withToken}/prepare`, { json: preparedMsg(gid) })).status).toBe(200);

    const seen = async (token: string) => {
      const one = (await call(`${api}/query?gid=${gid}`, { token })).body as {
        transaction: { options: string };
        branches: { bin_data: string }[];
      };
      const all = (await call(`${api}/all?gid=${gid}`, { token })).body as { transactions: { options: string }[] };
      return {
        payload: one.branches[0]?.bin_data,
        headers: (JSON.parse(one.transaction.options) as { branch_headers: unknown }).branch_headers,
        listed: (JSON.parse(all.transactions[0]!.options) as { branch_headers: unknown }).branch_headers,
      };
    };
    expect(await seen(apiToken)).toEqual({
      payload: '',
      headers: { authorization: '[redacted]' },
      listed: { authorization: '[redacted]' },
    });
    expect(await seen(operatorToken)).toEqual({
      payload: Buffer.from('{"card":"4111-1111-1111-1111"}').toString('base64'),
      headers: { authorization: 'Bearer downstream-secret' },
      listed: { authorization: 'Bearer downstream-secret' },
    });
  });

  it('changes state only by POST with a JSON body: GET /subscribe is 405, a form-encoded abort 415', async () => {
    const topic = `pm-get-${randomUUID().slice(0, 8)}`;
    const get = await call(`${api}/subscribe?topic=${topic}&url=http://127.0.0.1:9/x`, { token: operatorToken });
    expect(get.status).toBe(405);
    expect(get.body.code).toBe('METHOD_NOT_ALLOWED');
    expect(get.headers.get('allow')).toBe('POST');
    expect((await call(`${api}/unsubscribe?topic=${topic}&url=http://127.0.0.1:9/x`, { token: operatorToken })).status).toBe(405);
    // Nothing was subscribed: a POST subscription of the same URL is the first.
    expect((await call(`${api}/subscribe`, { token: operatorToken, json: { topic, url: 'http://127.0.0.1:9/x' } })).status).toBe(200);

    const gid = `pm-abort-${randomUUID()}`;
    expect((await call(`${withToken}/prepare`, { json: preparedMsg(gid) })).status).toBe(200);
    for (const [type, body] of [
      ['application/x-www-form-urlencoded', `gid=${gid}&trans_type=msg`],
      ['text/plain', JSON.stringify({ gid, trans_type: 'msg' })],
      ['multipart/form-data; boundary=x', `--x\r\nContent-Disposition: form-data; name="gid"\r\n\r\n${gid}\r\n--x--\r\n`],
    ] as const) {
      const r = await call(`${withToken}/abort`, { body, type });
      expect(r.status, type).toBe(415);
      expect(r.body.code).toBe('UNSUPPORTED_MEDIA_TYPE');
    }
    expect((await query(withToken, gid)).transaction?.status).toBe('prepared');
    expect((await call(`${withToken}/abort`, { json: { gid, trans_type: 'msg' } })).status).toBe(200);
    expect((await query(withToken, gid)).transaction?.status).toBe('failed');
  });

  describe.each([
    ['Go', async () => [await buildGoClient()]],
    ['Python', async () => [await pythonWithDtmcli(), PYTHON_CLIENT_SCRIPT]],
  ] as const)("DTM's %s client, unchanged, through the token in the server URL", (name, prepare) => {
    let bin: string[];
    let bank: BankService;
    beforeAll(async () => {
      [bin, bank] = await Promise.all([prepare(), freshDatabase().then(startBankService)]);
    }, 300_000); // a cold Go build takes 1-2 min
    afterAll(async () => {
      await bank?.close();
    });
    const drive = (dtm: string, mode: string, gid: string) =>
      runClient(bin, ['-dtm', dtm, '-busi', bank.url, '-mode', mode, '-gid', gid, '-timeout-to-fail', '60']);

    it('prepare-submit delivers, prepare-abort aborts, DoAndSubmit works; without the token it is refused', async () => {
      const delivered = `pm-${name}-${randomUUID()}`;
      const r = await drive(withToken, 'prepare-submit', delivered);
      expect(r.ok, `${r.error}\n${r.stderr}`).toBe(true);
      await waitForStatus(withToken, delivered, 'succeed');
      expect(bank.received(delivered, '/TransOut')).toBe(1);
      expect(bank.received(delivered, '/TransIn')).toBe(1);

      const aborted = `pm-${name}-${randomUUID()}`;
      expect((await drive(withToken, 'prepare-abort', aborted)).ok).toBe(true);
      expect((await query(withToken, aborted)).transaction?.status).toBe('failed');

      const done = `pm-${name}-${randomUUID()}`;
      expect((await drive(withToken, 'do-and-submit', done)).ok).toBe(true);
      await waitForStatus(withToken, done, 'succeed');

      const refused = `pm-${name}-${randomUUID()}`;
      const plain = await drive(api, 'prepare-submit', refused);
      expect(plain.ok).toBe(false);
      expect((await query(withToken, refused)).transaction).toBeNull();
    });
  });
});

const run = promisify(execFile);

/** Runs `concord start` expecting it to refuse: exit code and stderr. */
async function refusedStart(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stderr: string }> {
  try {
    await run(process.execPath, [cliPath(), 'start', '--store', '/nonexistent/never-opened', ...args], {
      env: { ...process.env, ...env },
      timeout: 30_000,
    });
    return { code: 0, stderr: '' };
  } catch (err) {
    const e = err as { code: number; stderr: string };
    return { code: e.code, stderr: e.stderr };
  }
}

/** An address of this machine that is not loopback. */
function externalAddress(): string | undefined {
  return Object.values(networkInterfaces())
    .flat()
    .find((a) => a?.family === 'IPv4' && !a.internal)?.address;
}

describe('protected mode', () => {
  it('refuses to listen beyond loopback without a token or --insecure (exit code 2)', async () => {
    for (const [args, env] of [
      [['--host', '0.0.0.0'], {}],
      [[], { CONCORD_HOST: '0.0.0.0' }],
      [['--host', '::'], {}],
    ] as const) {
      const r = await refusedStart([...args], env);
      expect(r.code).toBe(2);
      expect(r.stderr).toMatch(/without a token.*--api-tokens.*--insecure/);
    }
    const short = await refusedStart(['--api-tokens', 'too-short']);
    expect(short.code).toBe(2);
    expect(short.stderr).toMatch(/apiTokens.*16 to 256 characters/);
    expect(short.stderr).not.toContain('too-short');
  });

  it('listens on loopback only by default, and says so', async () => {
    const external = externalAddress();
    expect(external, 'this machine needs a non-loopback IPv4 address for the test').toBeDefined();
    const coordinator = await startCoordinator({ store: await freshDatabase(), host: null, env: { CONCORD_LOG_LEVEL: 'info' } });
    try {
      expect(coordinator.output()).toContain('protected mode: no token configured');
      expect((await fetch(`${coordinator.url}/api/dtmsvr/newGid`)).status).toBe(200); // no token asked on loopback
      const reached = await fetch(`http://${external}:${coordinator.port}/api/ping`).then(
        () => true,
        () => false,
      );
      expect(reached).toBe(false);
    } finally {
      expect(await coordinator.stop()).toBe(0);
    }
  });

  it('binds every interface with --insecure (and warns), or with a token', async () => {
    const external = externalAddress()!;
    const insecure = await startCoordinator({ store: await freshDatabase(), host: '0.0.0.0', args: ['--insecure'] });
    try {
      expect(insecure.output()).toContain('insecure: no token configured');
      expect((await fetch(`http://${external}:${insecure.port}/api/dtmsvr/newGid`)).status).toBe(200);
    } finally {
      expect(await insecure.stop()).toBe(0);
    }
    const tokened = await startCoordinator({ store: await freshDatabase(), host: '0.0.0.0', env: tokens });
    try {
      expect((await fetch(`http://${external}:${tokened.port}/api/dtmsvr/newGid`)).status).toBe(401);
      expect((await fetch(`http://${external}:${tokened.port}/t/${apiToken}/api/dtmsvr/newGid`)).status).toBe(200);
    } finally {
      expect(await tokened.stop()).toBe(0);
    }
  });
});

describe('protected-mode configuration', () => {
  it("reads the image's and docker-compose.yml's variables as documented", () => {
    const image = { CONCORD_HOST: '0.0.0.0' };
    expect(() => loadConfig({ env: image })).toThrow(/host \(--host, CONCORD_HOST\): listening on 0.0.0.0 without a token/);
    expect(() => loadConfig({ env: { ...image, CONCORD_INSECURE: 'false' } })).toThrow(/without a token/);
    // docker-compose.yml's defaults: empty token variables count as unset, insecure accepted.
    expect(loadConfig({ env: { ...image, CONCORD_API_TOKENS: '', CONCORD_OPERATOR_TOKENS: '', CONCORD_INSECURE: 'true' } })).toMatchObject({
      insecure: true,
      apiTokens: [],
    });
    expect(loadConfig({ env: { ...image, CONCORD_API_TOKENS: `["${apiToken}", "${rotatedToken}"]` } }).apiTokens).toEqual([
      apiToken,
      rotatedToken,
    ]);
    // A bare operator token (the form before names) is recorded as "operator".
    expect(loadConfig({ env: { ...image, CONCORD_OPERATOR_TOKENS: ` ${operatorToken} , ` } }).operatorTokens).toEqual([
      { name: 'operator', token: operatorToken },
    ]);
    expect(loadConfig({}).host).toBe('127.0.0.1');
  });

  it('names operator tokens as name:token pairs, or in a JSON array of strings or {name, token}', () => {
    const alice = { name: 'alice', token: 'alice-token-0123456789' };
    const bob = { name: 'bob.smith@ops', token: 'bob-token-0123456789ab' };
    const named = (value: string) => loadConfig({ env: { CONCORD_OPERATOR_TOKENS: value } }).operatorTokens;
    expect(named(`alice:${alice.token}, bob.smith@ops:${bob.token}`)).toEqual([alice, bob]);
    expect(named(JSON.stringify([alice, `bob.smith@ops:${bob.token}`, operatorToken]))).toEqual([
      alice,
      bob,
      { name: 'operator', token: operatorToken },
    ]);
    expect(() => named(`al ice:${alice.token}`)).toThrow(
      /operatorTokens \(--operator-tokens, CONCORD_OPERATOR_TOKENS\): 1 to 64 characters/,
    );
    expect(() => named(`alice:short`)).toThrow(/operatorTokens.*16 to 256 characters/);
    expect(() => named(JSON.stringify([{ name: 'alice', token: alice.token, role: 'x' }]))).toThrow(/role/);
  });
});
