/**
 * The coordinator's log: JSON lines when its stdout is a pipe, readable lines on a terminal, and
 * every line about a transaction with its gid and trans_type.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync } from 'node:fs';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Msg, Saga } from '../sdk/index.js';
import { cliPath, freePort, startCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, waitForStatus } from './helpers/poll.js';

/** A participant: /flaky fails its first two calls per gid, /refuse answers FAILURE, the rest succeed. */
let participant: { server: Server; url: string };
const calls = new Map<string, number>();

beforeAll(async () => {
  const server = createServer((req, res) => {
    req.resume();
    const url = new URL(req.url ?? '/', 'http://x');
    const key = `${url.searchParams.get('gid')}${url.pathname}`;
    const n = (calls.get(key) ?? 0) + 1;
    calls.set(key, n);
    if (url.pathname === '/refuse') res.writeHead(409).end('{"dtm_result":"FAILURE"}');
    else if (url.pathname === '/flaky' && n <= 2) res.writeHead(503).end('{"dtm_result":"busy"}');
    else res.writeHead(200).end('{"dtm_result":"SUCCESS"}');
  }).listen(0, '127.0.0.1');
  await once(server, 'listening');
  participant = { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
});
afterAll(() => participant?.server.close());

describe('coordinator log', () => {
  it('writes JSON lines to a pipe, each line about a transaction with its gid and trans_type', async () => {
    const coordinator = await startCoordinator({ store: await freshDatabase(), env: { ...fastCoordinator, CONCORD_LOG_LEVEL: 'debug' } });
    const msgGid = `log-msg-${randomUUID()}`;
    const sagaGid = `log-saga-${randomUUID()}`;
    try {
      await new Msg(coordinator.dtm, msgGid).add(`${participant.url}/flaky`, { n: 1 }).submit();
      await new Saga(coordinator.dtm, sagaGid)
        .add(`${participant.url}/ok`, `${participant.url}/undo`, { n: 1 })
        .add(`${participant.url}/refuse`, `${participant.url}/undo`, { n: 2 })
        .submit();
      await waitForStatus(coordinator.dtm, msgGid, 'succeed');
      await waitForStatus(coordinator.dtm, sagaGid, 'failed');
    } finally {
      expect(await coordinator.stop()).toBe(0);
    }
    const lines = coordinator
      .output()
      .split('\n')
      .filter((l) => l.trim() !== '');
    const entries = lines.map((l) => JSON.parse(l) as { msg: string; gid?: string; trans_type?: string; level: number });
    const about = (gid: string) => entries.filter((e) => e.gid === gid);
    expect(about(msgGid).map((e) => e.msg)).toEqual(expect.arrayContaining(['will retry', 'transaction finished']));
    expect(about(sagaGid).map((e) => e.msg)).toEqual(expect.arrayContaining(['saga rolls back', 'saga finished']));
    expect(about(msgGid).every((e) => e.trans_type === 'msg')).toBe(true);
    expect(about(sagaGid).every((e) => e.trans_type === 'saga')).toBe(true);
    // Any line naming a gid names its type.
    expect(entries.filter((e) => e.gid !== undefined && e.trans_type === undefined)).toEqual([]);
  });

  it('writes readable lines on a terminal', async () => {
    const store = mkdtempSync(join(tmpdir(), 'concord-logs-'));
    const port = await freePort();
    // script(1) gives the coordinator a pseudo-terminal as stdout.
    const command = `${process.execPath} ${cliPath()} start --store ${store} --port ${port}`;
    const proc = spawn('script', ['-qec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      await expect.poll(() => out, { timeout: 30_000 }).toContain('coordinator started');
      const started = out.split('\n').find((l) => l.includes('coordinator started'))!;
      expect(started.trimStart().startsWith('{')).toBe(false);
      expect(started).toMatch(/INFO/);
      expect(started).toContain(`127.0.0.1:${port}`);
    } finally {
      // script hangs up its terminal, and the coordinator goes with it.
      proc.kill('SIGTERM');
      await once(proc, 'exit');
      await expect
        .poll(
          () =>
            fetch(`http://127.0.0.1:${port}/api/ping`).then(
              () => 'running',
              () => 'gone',
            ),
          { timeout: 10_000 },
        )
        .toBe('gone');
    }
  });
});
