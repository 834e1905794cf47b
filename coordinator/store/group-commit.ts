/**
 * Group commit: requests that arrive in the same event-loop turn, or while a store transaction is
 * in flight, go together in the next one. Under load many prepares or submits share one commit;
 * alone, a request waits only for the end of the current turn, never on a timer.
 *
 * If a batch fails as a whole, each of its items is retried alone, so one bad item cannot fail
 * the others and every caller gets the answer its own item deserves.
 */
export type BatchRunner<I, O> = (items: I[]) => Promise<O[]>;

interface Pending<I, O> {
  item: I;
  resolve: (value: O) => void;
  reject: (reason: unknown) => void;
}

export interface GroupCommitOptions {
  /** Most items in one store transaction. */
  maxBatch: number;
  /** Store transactions of this kind in flight at once. */
  concurrency: number;
  /** Called after each batch, for metrics. */
  onBatch?: (size: number, seconds: number) => void;
}

export class GroupCommit<I, O> {
  private queue: Pending<I, O>[] = [];
  private inFlight = 0;
  private scheduled = false;

  constructor(
    private readonly runBatch: BatchRunner<I, O>,
    private readonly options: GroupCommitOptions,
  ) {}

  run(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      // Requests that arrive in the same turn of the event loop go together, even when a store
      // slot is free (PGlite answers so fast that otherwise every batch would hold one request).
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.pump();
        });
      }
    });
  }

  private pump(): void {
    while (this.inFlight < this.options.concurrency && this.queue.length > 0) {
      const batch = this.queue.splice(0, this.options.maxBatch);
      this.inFlight++;
      void this.flush(batch).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private async flush(batch: Pending<I, O>[]): Promise<void> {
    const started = performance.now();
    try {
      const results = await this.runBatch(batch.map((p) => p.item));
      batch.forEach((p, i) => p.resolve(results[i] as O));
    } catch (err) {
      if (batch.length === 1) {
        batch[0]?.reject(err);
      } else {
        await Promise.all(batch.map((p) => this.runBatch([p.item]).then(([r]) => p.resolve(r as O), p.reject)));
      }
    }
    this.options.onBatch?.(batch.length, (performance.now() - started) / 1000);
  }
}
