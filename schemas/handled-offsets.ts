/**
 * Which Kafka offsets may be committed when messages are handled side by side and end in any
 * order: per partition, the messages in the order they came, and the last of those whose
 * handling ended together with every one before it. Committing only that one (at least once)
 * means a message whose handling has not ended comes again after a restart, however many after
 * it ended.
 */
export interface Received {
  partition: number;
  done: boolean;
}

export class HandledOffsets<M extends { partition: number; offset: bigint }> {
  private readonly waiting = new Map<number, { message: M; entry: Received }[]>();
  private readonly ready = new Map<number, M>();

  /** A message as it came; hand the answer to `handled` once its handling ended. */
  received(message: M): Received {
    const entry: Received = { partition: message.partition, done: false };
    const queue = this.waiting.get(message.partition) ?? [];
    queue.push({ message, entry });
    this.waiting.set(message.partition, queue);
    return entry;
  }

  /** The handling of `entry` ended; answers whether a partition has a new offset to commit. */
  handled(entry: Received): boolean {
    entry.done = true;
    const queue = this.waiting.get(entry.partition) ?? [];
    let last: M | undefined;
    while (queue[0]?.entry.done) last = queue.shift()!.message;
    if (last) this.ready.set(entry.partition, last);
    return last !== undefined;
  }

  /** Per partition, the last message whose handling ended with all before it, since the last call. */
  take(): M[] {
    const messages = [...this.ready.values()];
    this.ready.clear();
    return messages;
  }
}

/** An offset to commit, as Kafka clients take it: the next offset to read. */
export interface CommitOffset {
  topic: string;
  partition: number;
  offset: bigint;
  leaderEpoch: number;
}

/**
 * Commits what HandledOffsets frees, in one request at most every `intervalMs`: each commit is a
 * write to the broker's offsets topic, and committing per message cost the broker more than the
 * messages did. A consumer that dies loses at most that much of commits: those messages come
 * again, and their handlers absorb a repeat. An offset is never moved back (a message fetched
 * again after a rebalance ends after later ones were committed).
 */
export class OffsetCommits<M extends { topic: string; partition: number; offset: bigint }> {
  private readonly offsets = new HandledOffsets<M>();
  private readonly committed = new Map<string, bigint>();
  private timer: ReturnType<typeof setTimeout> | undefined;

  /** `send` commits the offsets given (one request); it must not reject. */
  constructor(
    private readonly send: (offsets: CommitOffset[]) => Promise<void>,
    private readonly intervalMs = 100,
  ) {}

  /** A message as it came; hand the answer to `handled` once it is handled. */
  received(message: M): Received {
    return this.offsets.received(message);
  }

  /** The message of `entry` is handled: a new committable offset goes with the next commit. */
  handled(entry: Received): void {
    if (this.offsets.handled(entry) && !this.timer) this.timer = setTimeout(() => void this.commit(), this.intervalMs);
  }

  /** Commits what is committable now (a closing consumer's last commit). */
  async commit(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    const offsets: CommitOffset[] = [];
    for (const m of this.offsets.take()) {
      const key = `${m.topic}/${m.partition}`;
      if (m.offset < (this.committed.get(key) ?? 0n)) continue;
      this.committed.set(key, m.offset + 1n);
      offsets.push({ topic: m.topic, partition: m.partition, offset: m.offset + 1n, leaderEpoch: -1 });
    }
    if (offsets.length > 0) await this.send(offsets);
  }
}
