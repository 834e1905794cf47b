/**
 * Items handed over while a send is in flight go together in the next one: under load, the replies
 * of commands handled side by side share one produce request (one broker round trip, one
 * `acks=all` wait) instead of queueing one by one behind a producer that allows one request in
 * flight. Alone, an item waits only for the end of the current turn of the event loop. A failed
 * send rejects the callers of its items, and only those.
 */
export function sendTogether<T>(send: (items: T[]) => Promise<void>, maxBatch = 500): (item: T) => Promise<void> {
  let queue: { item: T; resolve: () => void; reject: (err: unknown) => void }[] = [];
  let flushing = false;
  const flush = async () => {
    while (queue.length > 0) {
      const batch = queue.slice(0, maxBatch);
      queue = queue.slice(batch.length);
      try {
        await send(batch.map((p) => p.item));
        for (const p of batch) p.resolve();
      } catch (err) {
        for (const p of batch) p.reject(err);
      }
    }
    flushing = false;
  };
  return (item) =>
    new Promise<void>((resolve, reject) => {
      queue.push({ item, resolve, reject });
      if (flushing) return;
      flushing = true;
      setImmediate(() => void flush());
    });
}
