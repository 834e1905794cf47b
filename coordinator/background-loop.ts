/**
 * The life of a background job (the scheduler, retention, the embedded store's vacuum): start()
 * runs its loop, which rests between rounds in rest(); stop() ends the rest at once and waits for
 * the round in flight.
 */
export class BackgroundLoop {
  /** False once stop() was called: the job checks it between rounds. */
  running = false;
  private loop: Promise<void> | undefined;
  private wakeUp: (() => void) | undefined;

  start(run: () => Promise<void>): void {
    this.running = true;
    this.loop = run();
  }

  async stop(): Promise<void> {
    this.running = false;
    this.wake();
    await this.loop;
  }

  /** Rests up to `ms`, or until wake() (room for more work) or stop() ends it early. */
  rest(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wakeUp = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wakeUp = done;
    });
  }

  wake(): void {
    this.wakeUp?.();
  }
}
