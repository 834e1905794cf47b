/**
 * After each test file (vitest setupFiles): nothing it opened may still be open. Servers, sockets,
 * child processes and timers that keep the event loop alive are counted against what was open
 * before the file ran; what is over after a short grace (closing sockets take a moment) fails the
 * file, naming the kinds. In-process coordinators a file forgot are stopped first, and also fail it.
 */
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, beforeAll } from 'vitest';
import { stopInProcessCoordinators } from './coordinator.js';

/** Resource kinds that mean "left open": a socket, a server, a child process, a pending timer. */
const watched = new Set(['TCPSocketWrap', 'TCPServerWrap', 'PipeServerWrap', 'ProcessWrap', 'UDPWrap', 'Timeout']);
const graceMs = 5_000;
const pollMs = 100;

function counts(): Map<string, number> {
  const byKind = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) if (watched.has(kind)) byKind.set(kind, (byKind.get(kind) ?? 0) + 1);
  return byKind;
}

function excess(baseline: Map<string, number>): string[] {
  return [...counts()].flatMap(([kind, n]) => (n > (baseline.get(kind) ?? 0) ? [`${n - (baseline.get(kind) ?? 0)} ${kind}`] : []));
}

let baseline = new Map<string, number>();
beforeAll(() => {
  baseline = counts();
});

afterAll(async () => {
  const forgotten = await stopInProcessCoordinators();
  // Polled until nothing is over, for up to the grace. Not vi.waitFor: its own timers would count
  // as open ones; these waits are unref'd, so they do not.
  const deadline = Date.now() + graceMs;
  let left = excess(baseline);
  while (left.length > 0 && Date.now() < deadline) {
    await delay(pollMs, undefined, { ref: false });
    left = excess(baseline);
  }
  const problems = [
    ...(forgotten > 0 ? [`${forgotten} in-process coordinator(s) never stopped`] : []),
    ...(left.length > 0 ? [`still open ${graceMs / 1000} s after the file's tests: ${left.join(', ')}`] : []),
  ];
  if (problems.length > 0) throw new Error(`leak check: ${problems.join('; ')}`);
});
