/**
 * The bench's ceiling: a "coordinator" that stores nothing. It answers prepare and submit as
 * Concord does and, after answering a submit, calls each step's branch at once with the HTTP client
 * Concord's relay uses (undici's request, keep-alive). A prepared message waits in memory for its
 * submit, which the SDK sends without the steps the prepare carried. What it reaches is what this
 * machine's HTTP path allows at all; every store's row is printed as a ratio of it.
 *
 * node dist/bench/null-coordinator.js <port>   (prints "listening" once it accepts requests)
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { request } from 'undici';

interface MsgBody {
  gid: string;
  trans_type: string;
  steps?: { action?: string }[];
  payloads?: string[];
}

const success = JSON.stringify({ dtm_result: 'SUCCESS' });
/** Prepared messages by gid, until their submit. */
const prepared = new Map<string, MsgBody>();

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

async function callBranches(body: MsgBody): Promise<void> {
  const calls = (body.steps ?? []).map(async (step, i) => {
    if (!step.action) return;
    const query = new URLSearchParams({
      gid: body.gid,
      trans_type: body.trans_type,
      branch_id: String(i + 1).padStart(2, '0'),
      op: 'action',
    });
    const res = await request(`${step.action}${step.action.includes('?') ? '&' : '?'}${query.toString()}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: body.payloads?.[i] ?? '',
    });
    await res.body.dump();
  });
  await Promise.allSettled(calls);
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const path = (req.url ?? '').split('?')[0];
  const text = req.method === 'POST' ? await readBody(req) : '';
  if (path === '/api/dtmsvr/prepare' || path === '/api/dtmsvr/submit') {
    const body = JSON.parse(text) as MsgBody;
    res.writeHead(200, { 'content-type': 'application/json' }).end(success);
    if (path.endsWith('prepare')) {
      prepared.set(body.gid, body);
      return;
    }
    const stored = prepared.get(body.gid);
    prepared.delete(body.gid);
    void callBranches(body.steps ? body : (stored ?? body));
    return;
  }
  if (path === '/api/ping' || path === '/api/health') {
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}');
    return;
  }
  // No metrics: the bench's coordinator figures read as "–" for this row.
  if (path === '/api/metrics') {
    res.writeHead(200, { 'content-type': 'text/plain' }).end('');
    return;
  }
  res.writeHead(404).end();
}

const server = createServer((req, res) => {
  handle(req, res).catch(() => res.writeHead(500).end());
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.argv[2] ?? 0), '127.0.0.1', () => console.log('listening'));
process.once('SIGTERM', () => server.close(() => process.exit(0)));
