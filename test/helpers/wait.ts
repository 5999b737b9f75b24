/**
 * Polling in tests: wait for a condition instead of sleeping for a guessed time, so a fast
 * machine does not wait and a slow one does not fail. A timeout names what was awaited.
 */

export interface WaitOptions {
  /** Give up after this long (default 10 s). */
  timeoutMs?: number;
  /** Pause between attempts (default 20 ms). */
  intervalMs?: number;
  /** What is awaited, for the timeout message ("the daemon to drop the socket"). */
  what?: string;
}

/** A plain pause: only for sleeps that ARE the test (a process that must run for a while). */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `predicate` until it returns true (sync or async) and returns after it did.
 * A predicate that throws is a failed attempt; its last error is quoted on timeout.
 */
export async function waitFor(predicate: () => boolean | Promise<boolean>, opts: WaitOptions = {}): Promise<void> {
  const { timeoutMs = 10_000, intervalMs = 20, what = 'a condition' } = opts;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      if (await predicate()) return;
      lastError = undefined;
    } catch (e) {
      lastError = e;
    }
    if (Date.now() >= deadline) {
      const why = lastError === undefined ? '' : ` (last attempt threw: ${(lastError as Error)?.message ?? String(lastError)})`;
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await sleep(intervalMs);
  }
}

/**
 * Retries `assertion` until it passes and returns its result; on timeout rethrows the last
 * assertion error, prefixed with what was awaited, so the failure shows the actual values.
 */
export async function eventually<T>(assertion: () => T | Promise<T>, opts: WaitOptions = {}): Promise<T> {
  const { timeoutMs = 10_000, intervalMs = 20, what = 'an assertion to hold' } = opts;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await assertion();
    } catch (e) {
      if (Date.now() >= deadline) {
        const err = e instanceof Error ? e : new Error(String(e));
        err.message = `still failing after ${timeoutMs} ms waiting for ${what}: ${err.message}`;
        throw err;
      }
    }
    await sleep(intervalMs);
  }
}
