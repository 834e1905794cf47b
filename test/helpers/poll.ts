import { expect } from 'vitest';

/** The coordinator's view of one transaction (GET /query). */
export async function query(
  dtm: string,
  gid: string,
): Promise<{
  transaction: { status: string; rollback_reason?: string; retry_count: number; finish_time?: string; create_time: string } | null;
  branches: { branch_id: string; op: string; status: string; attempts: number; last_error?: string }[];
}> {
  const res = await fetch(`${dtm}/query?gid=${encodeURIComponent(gid)}`);
  expect(res.status).toBe(200);
  return (await res.json()) as never;
}

/** Waits until the transaction reaches `status` (or fails the test after `timeout` ms). */
export async function waitForStatus(dtm: string, gid: string, status: string, timeout = 20_000): Promise<void> {
  await expect.poll(async () => (await query(dtm, gid)).transaction?.status, { timeout, interval: 50 }).toBe(status);
}

export async function post(url: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** Settings that make retries and check-backs take moments instead of DTM's 10 s and 35 s. */
export const fastCoordinator = {
  CONCORD_RETRY_INTERVAL: '0.2',
  CONCORD_MAX_RETRY_INTERVAL: '1',
  CONCORD_TIMEOUT_TO_FAIL: '1',
  CONCORD_POLL_INTERVAL: '0.1',
  // Generous: a loaded 2-core CI machine can be slow to answer, and a timeout means a redelivery.
  CONCORD_REQUEST_TIMEOUT: '5',
  CONCORD_MIN_LEASE: '3',
};
