/**
 * Bad input is refused at request time with a 400 naming the field, and nothing is stored; text
 * from outside (a branch's answer) is stored cleaned; no input makes the coordinator answer 5xx.
 */
import { randomUUID } from 'node:crypto';
import { createServer, request, type Server } from 'node:http';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestCoordinator, inProcessCoordinator } from './helpers/coordinator.js';
import { freshStore } from './helpers/db.js';
import { fastCoordinator, query } from './helpers/poll.js';

let coordinator: TestCoordinator;
/** A branch service: /ok answers 200, /nul answers 500 with a NUL and a lone surrogate's bytes in its body. */
let branch: Server;
let branchUrl: string;
const calls: string[] = [];

beforeAll(async () => {
  coordinator = await inProcessCoordinator({ store: await freshStore(), env: fastCoordinator });
  branch = createServer((req, res) => {
    calls.push(req.url ?? '');
    if (req.url?.startsWith('/nul')) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(Buffer.concat([Buffer.from('broken\0answer '), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from(' end')]));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"dtm_result":"SUCCESS"}');
  });
  branch.listen(0, '127.0.0.1');
  await once(branch, 'listening');
  const address = branch.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  branchUrl = `http://127.0.0.1:${address.port}`;
});
afterAll(async () => {
  branch?.close();
  expect(await coordinator?.stop()).toBe(0);
});

const gid = () => `h-${randomUUID()}`;

async function send(path: string, body: string | object, headers: Record<string, string> = {}) {
  const res = await fetch(`${coordinator.dtm}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' || Buffer.isBuffer(body) ? (body as string) : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : {}) as { code?: string; message?: string; field?: string } };
}

/** Expects a 400 naming `field`, and no stored transaction for the gid. */
async function refused(path: string, body: Record<string, unknown>, field: string): Promise<void> {
  const res = await send(path, body);
  expect(res.status, JSON.stringify(res.body)).toBe(400);
  expect(res.body.field).toBe(field);
  expect(res.body.message).toContain(field);
  if (typeof body.gid === 'string' && !body.gid.includes('\0')) {
    expect((await query(coordinator.dtm, body.gid)).transaction).toBeNull();
  }
}

const msg = (extra: Record<string, unknown> = {}) => ({
  gid: gid(),
  trans_type: 'msg',
  steps: [{ action: `${branchUrl}/ok` }],
  payloads: ['{"amount":1}'],
  ...extra,
});
const saga = (extra: Record<string, unknown> = {}) => ({
  gid: gid(),
  trans_type: 'saga',
  steps: [{ action: `${branchUrl}/ok`, compensate: `${branchUrl}/ok` }],
  payloads: ['{"amount":1}'],
  ...extra,
});

describe('poison input is refused before anything is stored (item 3)', () => {
  const badHeaders: [string, Record<string, string>][] = [
    ['CR/LF in a value', { 'x-a': 'one\r\nx-injected: two' }],
    ['a value outside Latin-1', { 'x-a': 'Grüße ☃' }],
    ['an empty name', { '': 'v' }],
    ['a name with a space', { 'x a': 'v' }],
    ['a name with a colon', { 'x:a': 'v' }],
    ['content-length', { 'Content-Length': '5' }],
    ['transfer-encoding', { 'transfer-encoding': 'chunked' }],
    ['expect', { expect: '100-continue' }],
    ['upgrade', { upgrade: 'websocket' }],
    ['connection', { connection: 'close' }],
    ['host', { host: 'example.com' }],
  ];
  for (const [what, headers] of badHeaders) {
    it(`refuses branch_headers with ${what}, for msg prepare, msg submit and saga`, async () => {
      await refused('/prepare', msg({ branch_headers: headers, query_prepared: `${branchUrl}/ok` }), 'branch_headers');
      await refused('/submit', msg({ branch_headers: headers }), 'branch_headers');
      await refused('/submit', saga({ branch_headers: headers }), 'branch_headers');
    });
  }

  it('refuses a step\'s "headers" that HTTP would refuse, for msg and saga', async () => {
    const headers = JSON.stringify({ 'x-a': 'one\ntwo' });
    await refused('/submit', msg({ steps: [{ action: `${branchUrl}/ok`, headers }] }), 'steps.0.headers');
    await refused(
      '/submit',
      saga({ steps: [{ action: `${branchUrl}/ok`, compensate: `${branchUrl}/ok`, headers: JSON.stringify({ Host: 'x' }) }] }),
      'steps.0.headers',
    );
  });

  it('accepts ordinary headers and delivers with them', async () => {
    const body = msg({ branch_headers: { 'X-Tenant': 'acme', authorization: 'Bearer abc' } });
    expect((await send('/submit', body)).status).toBe(200);
    await expect.poll(async () => (await query(coordinator.dtm, body.gid)).transaction?.status).toBe('succeed');
  });

  it('refuses durations a timer cannot hold (2,147,484 s and more), for every duration field', async () => {
    const tooLong = 2_147_484;
    for (const field of ['request_timeout', 'timeout_to_fail', 'retry_interval']) {
      await refused('/submit', msg({ [field]: tooLong }), field);
      await refused('/submit', saga({ [field]: tooLong }), field);
    }
    await refused('/submit', msg({ custom_data: JSON.stringify({ delay: tooLong }) }), 'custom_data');
    await refused(
      '/submit',
      saga({ steps: [{ action: `${branchUrl}/ok`, compensate: `${branchUrl}/ok`, timeout: String(tooLong) }] }),
      'steps.0.timeout',
    );
    await refused(
      '/submit',
      saga({ steps: [{ action: `${branchUrl}/ok`, compensate: `${branchUrl}/ok`, backoff: String(tooLong) }] }),
      'steps.0.backoff',
    );
  });

  it('refuses a query_prepared that is not an http(s) URL', async () => {
    for (const url of ['not a url', 'ftp://example.com/q', 'kafka://default/topic', 'file:///etc/passwd']) {
      await refused('/prepare', msg({ query_prepared: url }), 'query_prepared');
      await refused('/submit', msg({ query_prepared: url }), 'query_prepared');
    }
  });

  it('refuses a step without an action (the typo "acton"), for msg and saga, and calls nothing', async () => {
    const before = calls.length;
    await refused('/submit', msg({ steps: [{ acton: `${branchUrl}/typo` }] }), 'steps.0.action');
    await refused('/prepare', msg({ steps: [{ acton: `${branchUrl}/typo` }], query_prepared: `${branchUrl}/ok` }), 'steps.0.action');
    await refused('/submit', saga({ steps: [{ acton: `${branchUrl}/typo`, compensate: `${branchUrl}/ok` }] }), 'steps.0.action');
    await refused('/submit', msg({ steps: [{ action: '' }] }), 'steps.0.action');
    expect(calls.slice(before).filter((c) => c.startsWith('/typo'))).toEqual([]);
  });
});

describe('NUL bytes and broken text (item 4)', () => {
  it('refuses NUL in identifiers, URLs, headers and payloads with a 400 naming the field', async () => {
    await refused('/submit', msg({ gid: 'a\0b' }), 'gid');
    await refused('/submit', msg({ steps: [{ action: `${branchUrl}/ok\0` }] }), 'steps.0.action');
    await refused('/submit', msg({ branch_headers: { 'x-a': 'v\0' } }), 'branch_headers.x-a');
    await refused('/prepare', msg({ query_prepared: `${branchUrl}/ok\0` }), 'query_prepared');
    await refused('/submit', msg({ payloads: ['{"a":"\0"}'] }), 'payloads.0');
    await refused('/abort', { gid: gid(), trans_type: 'msg', rollback_reason: 'why\0' }, 'rollback_reason');
    const res = await fetch(`${coordinator.dtm}/query?gid=a%00b`);
    expect(res.status).toBe(400);
  });

  it('refuses a lone surrogate in a payload instead of storing it changed', async () => {
    // JSON.stringify escapes a lone surrogate as \ud800, which JSON.parse turns back into one.
    await refused('/submit', msg({ payloads: ['{"a":"\ud800"}'] }), 'payloads.0');
  });

  it('refuses a body that is not UTF-8 instead of storing U+FFFD', async () => {
    const g = gid();
    const body = Buffer.concat([
      Buffer.from(`{"gid":"${g}","trans_type":"msg","steps":[{"action":"${branchUrl}/ok"}],"payloads":["`),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('"]}'),
    ]);
    const res = await fetch(`${coordinator.dtm}/submit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { message: string }).message).toMatch(/UTF-8/);
    expect((await query(coordinator.dtm, g)).transaction).toBeNull();
  });

  it('round-trips a payload with every other character exactly', async () => {
    const payload = '{"text":"é ☃ 𝄞 \\u0000 escaped, \t tab, \u00ff"}';
    const body = msg({ payloads: [payload] });
    expect((await send('/submit', body)).status).toBe(200);
    const res = await fetch(`${coordinator.dtm}/query?gid=${body.gid}`);
    const view = (await res.json()) as { branches: { bin_data: string }[] };
    expect(Buffer.from(view.branches[0]!.bin_data, 'base64').toString('utf8')).toBe(payload);
  });

  it('records a branch error whose body holds NUL and broken UTF-8, cleaned, and keeps retrying', async () => {
    const body = msg({ steps: [{ action: `${branchUrl}/nul` }] });
    expect((await send('/submit', body)).status).toBe(200);
    await expect
      .poll(async () => (await query(coordinator.dtm, body.gid)).branches[0]?.attempts ?? 0, { timeout: 15_000 })
      .toBeGreaterThanOrEqual(2);
    const view = await query(coordinator.dtm, body.gid);
    expect(view.transaction?.status).toBe('submitted');
    const error = view.branches[0]?.last_error ?? '';
    expect(error).toContain('HTTP 500 broken');
    expect(error).toContain('answer');
    expect(error).not.toContain('\0');
    expect(error).not.toMatch(/[\uD800-\uDFFF]/);
  });
});

describe('NUL in a saga branch answer (item 4)', () => {
  it('records the failed action with its cleaned error and compensates', async () => {
    const body = saga({ steps: [{ action: `${branchUrl}/nul`, compensate: `${branchUrl}/ok`, attempts: '1' }] });
    expect((await send('/submit', body)).status).toBe(200);
    await expect.poll(async () => (await query(coordinator.dtm, body.gid)).transaction?.status, { timeout: 15_000 }).toBe('failed');
    const view = await query(coordinator.dtm, body.gid);
    const action = view.branches.find((b) => b.op === 'action');
    expect(action).toMatchObject({ status: 'failed', attempts: 1 });
    expect(action?.last_error).toContain('HTTP 500 broken');
    expect(action?.last_error).not.toContain('\0');
    expect(view.transaction?.rollback_reason ?? '').not.toContain('\0');
    expect(view.branches.find((b) => b.op === 'compensate')).toMatchObject({ status: 'succeed' });
  });
});

describe('status codes (item 5)', () => {
  it('answers 400, not 500, for a deeply nested body', async () => {
    const depth = 200_000;
    const res = await send('/submit', `{"gid":"${gid()}","trans_type":"msg","x":${'['.repeat(depth)}${']'.repeat(depth)}}`);
    expect(res.status).toBe(400);
  });

  it('answers 400, not 500, for a createTimeStart beyond what a date holds', async () => {
    for (const q of ['createTimeStart=9000000000000000', 'createTimeEnd=8640000000000000', 'createTimeStart=1e300', 'position=1e300']) {
      const res = await fetch(`${coordinator.dtm}/all?${q}`);
      expect(res.status, q).toBe(400);
    }
    expect((await fetch(`${coordinator.dtm}/all?createTimeStart=0&createTimeEnd=253402300799999`)).status).toBe(200);
  });

  it('answers 413 for a body over the limit', async () => {
    // Only the headers are sent: the coordinator answers from Content-Length alone, and a body still
    // being written when it closes the connection could lose the answer to a reset.
    const res = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(`${coordinator.dtm}/submit`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'content-length': String(5 * 1024 * 1024) },
      });
      req.on('response', (r) => {
        let text = '';
        r.on('data', (d: Buffer) => (text += d.toString()));
        r.on('end', () => {
          resolve({ status: r.statusCode ?? 0, body: text });
          req.destroy();
        });
      });
      req.on('error', reject);
      req.flushHeaders();
    });
    expect(res.status).toBe(413);
    expect(JSON.parse(res.body)).toMatchObject({ code: 'BODY_TOO_LARGE' });
  });

  it('answers 405 with Allow for a known path with another method, 404 for an unknown path', async () => {
    const wrong = await fetch(`${coordinator.dtm}/submit`);
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get('allow')).toContain('POST');
    expect(((await wrong.json()) as { code: string }).code).toBe('METHOD_NOT_ALLOWED');
    const del = await fetch(`${coordinator.dtm}/query?gid=x`, { method: 'DELETE' });
    expect(del.status).toBe(405);
    const topic = await fetch(`${coordinator.dtm}/topic/abc`, { method: 'POST' });
    expect(topic.status).toBe(405);
    expect(topic.headers.get('allow')).toContain('DELETE');
    const missing = await fetch(`${coordinator.dtm}/nowhere`);
    expect(missing.status).toBe(404);
  });
});
