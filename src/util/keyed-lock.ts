/**
 * Runs operations on one key (a sandbox or container ID) one after another, while
 * different keys proceed in parallel. A failed operation does not block the next one.
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => {});
    this.tails.set(key, tail);
    return next.finally(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
  }

  /** Whether an operation on key runs or waits (a hint: it may change at the next await). */
  busy(key: string): boolean {
    return this.tails.has(key);
  }
}

type Mode = 'shared' | 'exclusive';

interface KeyState {
  readers: number;
  writer: boolean;
  /** Waiters in arrival order: a waiting exclusive holder blocks later shared ones (no starvation). */
  queue: { mode: Mode; grant: () => void }[];
}

/**
 * A shared/exclusive (readers/writer) lock per key, granted strictly in arrival order:
 * any number of shared holders together, or one exclusive holder alone. A shared request
 * arriving while an exclusive one waits queues behind it, so a stream of shared work
 * cannot starve the exclusive one. A failed operation releases like a successful one.
 */
export class SharedExclusiveLock {
  private readonly keys = new Map<string, KeyState>();

  shared<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.acquire(key, 'shared', fn);
  }

  exclusive<T>(key: string, fn: () => Promise<T>): Promise<T> {
    return this.acquire(key, 'exclusive', fn);
  }

  /** Whether anything holds or waits for key (for tests and diagnostics). */
  busy(key: string): boolean {
    return this.keys.has(key);
  }

  private async acquire<T>(key: string, mode: Mode, fn: () => Promise<T>): Promise<T> {
    let st = this.keys.get(key);
    if (!st) this.keys.set(key, (st = { readers: 0, writer: false, queue: [] }));
    const state = st;
    await new Promise<void>((grant) => {
      state.queue.push({ mode, grant });
      this.pump(key, state);
    });
    try {
      return await fn();
    } finally {
      if (mode === 'shared') state.readers--;
      else state.writer = false;
      this.pump(key, state);
    }
  }

  /** Grants what the head of the queue allows; forgets the key once nothing holds or waits. */
  private pump(key: string, st: KeyState): void {
    while (st.queue.length > 0 && !st.writer) {
      const head = st.queue[0]!;
      if (head.mode === 'exclusive') {
        if (st.readers > 0) break;
        st.writer = true;
      } else {
        st.readers++;
      }
      st.queue.shift();
      head.grant();
    }
    if (!st.writer && st.readers === 0 && st.queue.length === 0 && this.keys.get(key) === st) this.keys.delete(key);
  }
}
