/** CRI timestamps: nanoseconds since the Unix epoch, as decimal strings (int64 in the proto). */

/** A time in milliseconds (Date.now(), a file's mtimeMs) in CRI nanoseconds. */
export function msToNs(ms: number): string {
  return (BigInt(Math.round(ms)) * 1_000_000n).toString();
}

/** Now, in CRI nanoseconds. */
export function nowNs(): string {
  return msToNs(Date.now());
}
