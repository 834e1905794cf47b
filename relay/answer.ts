/**
 * Reads a branch's answer without trusting its size: the first `limit` bytes are kept (DTM's
 * rules look for ONGOING or FAILURE in the body, and last_error shows its start), the rest is read
 * and thrown away chunk by chunk, and when the rest is large the connection is closed instead.
 * The caller's signal bounds the whole read, so a body that trickles forever is cut off too: one
 * that neither ends nor fills the prefix in time is a timeout.
 */
import type { Dispatcher } from 'undici';

/** What is drained beyond the kept prefix to reuse the keep-alive connection; past it, closing is cheaper. */
const drainBytes = 64 * 1024;

export async function readAnswerPrefix(body: Dispatcher.ResponseData['body'], limit: number, signal: AbortSignal): Promise<string> {
  const prefix = await new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = () => {
      body.off('data', onData).off('end', finish).off('error', reject);
      body.pause();
      resolve(Buffer.concat(chunks, size));
    };
    const onData = (chunk: Buffer) => {
      const take = Math.min(chunk.length, limit - size);
      // A copy: a slice would keep the whole (up to 64 KiB) socket chunk alive.
      if (take > 0) chunks.push(Buffer.from(chunk.subarray(0, take)));
      size += take;
      if (size >= limit) finish();
    };
    body.on('data', onData).once('end', finish).once('error', reject);
  });
  // undici's dump counts every byte read so far: it drains up to the limit, then destroys the socket.
  // The answer is judged on the prefix; a rest that trickles until the deadline changes nothing.
  await body.dump({ limit: limit + drainBytes, signal }).catch(() => undefined);
  return prefix.toString('utf8');
}
