/**
 * What the test process does when it exits (kill a service, remove its files), in the order it was
 * registered, on one 'exit' listener: a listener each made node warn of a leak once eleven
 * services ran.
 */
const work = new Set<() => void>();
let listening = false;

/** Runs `fn` when the process exits; the answer takes it back. */
export function onExit(fn: () => void): () => void {
  if (!listening) {
    listening = true;
    process.on('exit', runAll);
  }
  work.add(fn);
  return () => work.delete(fn);
}

function runAll(): void {
  for (const fn of work) {
    try {
      fn();
    } catch {
      // the next service still goes
    }
  }
}
