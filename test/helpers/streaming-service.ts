/** An HTTP branch service whose answers are generated streams: huge, or trickling forever. */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export type Handler = (req: IncomingMessage, res: ServerResponse, call: number) => void | Promise<void>;

export interface StreamingService {
  url: string;
  /** Calls received per path. */
  calls(path: string): number;
  /** Connections the client closed before the answer ended. */
  readonly cutOff: number;
  close(): Promise<void>;
}

/** A body of `size` bytes that starts with `head`, generated chunk by chunk (never held in memory). */
export function generatedBody(head: string, size: number): Readable {
  const filler = Buffer.alloc(64 * 1024, 'x');
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= size) return void this.push(null);
      const chunk = sent === 0 ? Buffer.concat([Buffer.from(head), filler]).subarray(0, filler.length) : filler;
      const part = chunk.subarray(0, Math.min(chunk.length, size - sent));
      sent += part.length;
      this.push(part);
    },
  });
}

/** Answers with `status` and a generated body; `length` sends content-length, otherwise chunked. */
export async function streamAnswer(res: ServerResponse, status: number, body: Readable, length?: number): Promise<void> {
  res.writeHead(status, { 'content-type': 'text/plain', ...(length === undefined ? {} : { 'content-length': String(length) }) });
  await pipeline(body, res).catch(() => undefined); // the client may hang up: that is the point
}

export async function startStreamingService(routes: Record<string, Handler>, host = '127.0.0.1'): Promise<StreamingService> {
  const counts = new Map<string, number>();
  let cutOff = 0;
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const call = (counts.get(path) ?? 0) + 1;
    counts.set(path, call);
    res.once('close', () => {
      if (!res.writableFinished) cutOff += 1;
    });
    const handler = routes[path];
    if (!handler) return void res.writeHead(404).end();
    void Promise.resolve(handler(req, res, call)).catch(() => res.destroy());
  });
  server.listen(0, host);
  await once(server, 'listening');
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no address');
  return {
    url: `http://${host}:${address.port}`,
    calls: (path) => counts.get(path) ?? 0,
    get cutOff() {
      return cutOff;
    },
    async close() {
      server.closeAllConnections();
      server.close();
      await once(server, 'close');
    },
  };
}
