/** The passes this node runs right now, so that shutdown can wait for them. */
export class InFlight {
  private readonly passes = new Set<Promise<unknown>>();

  /** Keeps a pass in the set until it ends. */
  track<T>(pass: Promise<T>): Promise<T> {
    this.passes.add(pass);
    void pass.finally(() => this.passes.delete(pass)).catch(() => undefined);
    return pass;
  }

  get busy(): number {
    return this.passes.size;
  }

  /** Waits for the passes in flight, at most `timeoutMs`; true when all ended. */
  async drain(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    const done = Promise.allSettled([...this.passes]).then(() => true);
    const ended = await Promise.race([done, timeout]);
    clearTimeout(timer);
    return ended;
  }
}
