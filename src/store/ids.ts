import { randomBytes } from 'node:crypto';
import { invalidArgument, notFound } from '../errors.js';

/** 32 random bytes as 64 lowercase hex characters, like containerd's IDs. */
export function generateId(): string {
  return randomBytes(32).toString('hex');
}

/**
 * Resolves full IDs from any unique prefix. Sorted array + binary search keeps lookups
 * O(log n) without a trie; inserts are rare compared with lookups.
 */
export class IdIndex {
  private ids: string[] = [];

  constructor(private readonly kind = 'pod sandbox') {}

  add(id: string): void {
    const i = this.lowerBound(id);
    if (this.ids[i] !== id) this.ids.splice(i, 0, id);
  }

  delete(id: string): void {
    const i = this.lowerBound(id);
    if (this.ids[i] === id) this.ids.splice(i, 1);
  }

  has(id: string): boolean {
    return this.ids[this.lowerBound(id)] === id;
  }

  all(): readonly string[] {
    return this.ids;
  }

  /** Full ID for a prefix; NOT_FOUND when none matches, INVALID_ARGUMENT when several do. */
  resolve(prefix: string): string {
    const id = this.tryResolve(prefix);
    if (id === undefined) throw notFound(`${this.kind} "${prefix}" not found`);
    return id;
  }

  /** Like resolve, but undefined instead of NOT_FOUND (for idempotent Stop/Remove). */
  tryResolve(prefix: string): string | undefined {
    if (prefix === '') throw invalidArgument(`${this.kind} ID must not be empty`);
    const i = this.lowerBound(prefix);
    const first = this.ids[i];
    if (first === undefined || !first.startsWith(prefix)) return undefined;
    const second = this.ids[i + 1];
    if (second !== undefined && second.startsWith(prefix) && first !== prefix) {
      let n = 2;
      while (this.ids[i + n]?.startsWith(prefix)) n++;
      throw invalidArgument(`${this.kind} ID prefix "${prefix}" is ambiguous: it matches ${n} IDs; give more characters`);
    }
    return first;
  }

  private lowerBound(key: string): number {
    let lo = 0;
    let hi = this.ids.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.ids[mid]! < key) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
