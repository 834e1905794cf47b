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
