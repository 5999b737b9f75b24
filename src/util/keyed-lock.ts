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
}
