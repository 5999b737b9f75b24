/**
 * Gives memory back after a burst of work (a pull streams megabytes through Buffers).
 * V8 collects the old generation when it grows, not when the process goes quiet, so the
 * garbage of the last pull, and the ArrayBuffer memory behind it, would otherwise stay in
 * the daemon's RSS until the next burst. One full collection once the work has settled
 * (a few ms for the daemon's heap) returns it. `gc` is V8's, exposed by --expose-gc
 * (src/cli/node-flags.ts); without it this does nothing.
 */
export class IdleCollector {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly gc: (() => void) | undefined = (globalThis as { gc?: () => void }).gc,
    private readonly settleMs = 2000,
  ) {}

  /** Work ended: collect once `settleMs` after the last call (a later call restarts the wait). */
  settled(): void {
    if (!this.gc) return;
    if (this.timer) {
      this.timer.refresh();
      return;
    }
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.gc!();
    }, this.settleMs);
    this.timer.unref();
  }

  /** Work started again: no collection in the middle of it. */
  busy(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
