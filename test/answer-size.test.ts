/**
 * A branch's answer cannot grow the coordinator's memory: huge bodies (as errors, as 200s, as a
 * check-back's answer) are read up to answerBytes and discarded, and a body that trickles forever is
 * cut off at the request timeout.
 */
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCoordinator, type RunningCoordinator } from './helpers/coordinator.js';
import { freshDatabase } from './helpers/db.js';
import { fastCoordinator, post, query, waitForStatus } from './helpers/poll.js';
import { generatedBody, startStreamingService, streamAnswer, type StreamingService } from './helpers/streaming-service.js';

const MB = 1024 * 1024;
const huge = 400 * MB;

let coordinator: RunningCoordinator;
let service: StreamingService;
let releaseFourth: () => void = () => undefined;
const fourthCall = new Promise<void>((resolve) => (releaseFourth = resolve));

/** The coordinator process's resident memory now and at its peak (VmHWM), in MB. */
function memory(): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${coordinator.proc.pid}/status`, 'utf8');
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1]) / 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

beforeAll(async () => {
  coordinator = await startCoordinator({ store: await freshDatabase(), env: { ...fastCoordinator, CONCORD_ANSWER_BYTES: '4096' } });
  service = await startStreamingService({
    // Three 400 MB error answers (chunked), then a short success once the test has looked.
    '/huge-error': async (_req, res, call) => {
      if (call <= 3) return streamAnswer(res, 500, generatedBody(`huge error #${call} `, huge));
      await fourthCall;
      res.end('ok');
    },
    // 400 MB with a content-length: a success all the same.
    '/huge-ok': (_req, res) => streamAnswer(res, 200, generatedBody('fine ', huge), huge),
    // A check-back whose 300 MB answer says FAILURE at its start.
    '/huge-failure': (_req, res) => streamAnswer(res, 200, generatedBody('{"dtm_result":"FAILURE"} ', 300 * MB)),
    // Headers at once, then a byte every 100 ms, forever.
    '/trickle': (_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      const timer = setInterval(() => res.write('.'), 100);
      res.once('close', () => clearInterval(timer));
    },
  });
});
afterAll(async () => {
  await service?.close();
  expect(await coordinator?.stop()).toBe(0);
});

const gid = () => `answer-${randomUUID()}`;

describe('answers of any size', () => {
  it('keeps memory bounded while three 400 MB error answers and a 400 MB success arrive', async () => {
    const before = memory();
    const failing = gid();
    const big = gid();
    expect(
      (
        await post(`${coordinator.dtm}/submit`, {
          gid: failing,
          trans_type: 'msg',
          steps: [{ action: `${service.url}/huge-error` }],
          payloads: ['{}'],
        })
      ).status,
    ).toBe(200);
    expect(
      (
        await post(`${coordinator.dtm}/submit`, {
          gid: big,
          trans_type: 'msg',
          steps: [{ action: `${service.url}/huge-ok` }],
          payloads: ['{}'],
        })
      ).status,
    ).toBe(200);
    await waitForStatus(coordinator.dtm, big, 'succeed');
    // While the fourth call waits, last_error is the start of the third answer, cut to 500 characters.
    await expect
      .poll(async () => (await query(coordinator.dtm, failing)).branches[0]?.last_error, { timeout: 20_000, interval: 50 })
      .toMatch(/^HTTP 500 huge error #3 x+$/);
    const lastError = (await query(coordinator.dtm, failing)).branches[0]?.last_error ?? '';
    expect(lastError.length).toBeLessThanOrEqual(510);
    releaseFourth();
    await waitForStatus(coordinator.dtm, failing, 'succeed');
    expect((await query(coordinator.dtm, failing)).branches[0]).toMatchObject({ status: 'succeed', attempts: 4 });
    const after = memory();
    console.log(`coordinator RSS before ${before.rss.toFixed(0)} MB, after ${after.rss.toFixed(0)} MB, peak ${after.peak.toFixed(0)} MB`);
    // 1.6 GB went by: held whole, the peak would be at least one 400 MB body above the start.
    expect(after.peak - before.rss).toBeLessThan(100);
    // The coordinator stopped reading each huge body early and hung up.
    expect(service.cutOff).toBeGreaterThanOrEqual(4);
  });

  it("classifies a check-back's huge answer from its start", async () => {
    const g = gid();
    const prepared = {
      gid: g,
      trans_type: 'msg',
      query_prepared: `${service.url}/huge-failure`,
      steps: [{ action: `${service.url}/huge-ok` }],
      payloads: ['{}'],
    };
    expect((await post(`${coordinator.dtm}/prepare`, prepared)).status).toBe(200);
    await waitForStatus(coordinator.dtm, g, 'failed');
    const view = await query(coordinator.dtm, g);
    expect(view.transaction?.rollback_reason).toMatch(/^query_prepared answered FAILURE: HTTP 200 \{"dtm_result":"FAILURE"\} x+$/);
    expect(service.calls('/huge-ok')).toBe(1); // only the first test's message
    expect(memory().peak).toBeLessThan(400);
  });

  it('cuts off an answer that trickles forever at the request timeout', async () => {
    const g = gid();
    const cut = service.cutOff;
    const started = Date.now();
    const body = { gid: g, trans_type: 'msg', request_timeout: 1, steps: [{ action: `${service.url}/trickle` }], payloads: ['{}'] };
    expect((await post(`${coordinator.dtm}/submit`, body)).status).toBe(200);
    await expect
      .poll(async () => (await query(coordinator.dtm, g)).branches[0]?.last_error, { timeout: 10_000, interval: 50 })
      .toMatch(/^timeout/);
    expect(Date.now() - started).toBeLessThan(5_000);
    await expect.poll(() => service.cutOff).toBeGreaterThan(cut);
  });
});
