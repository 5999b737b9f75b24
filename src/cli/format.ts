/** Plain-text tables for CLI output, crictl-style: columns padded, three spaces apart. */
export function table(head: string[], rows: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [head, ...rows].map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('   ').trimEnd()).join('\n');
}

/**
 * Bytes as crictl prints them (docker's go-units HumanSize): powers of 1000, four
 * significant digits, trailing zeros dropped: 0B, 999B, 4.096kB, 12.35MB.
 */
export function decimalSize(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB', 'PB', 'EB', 'ZB', 'YB'];
  let v = bytes;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${Number(v.toPrecision(4))}${units[i]}`;
}

/** "N seconds/minutes/hours ago" from a CRI timestamp (nanoseconds since the epoch, as a decimal string). */
export function ago(createdAtNs: string, nowMs = Date.now()): string {
  const secs = Math.max(0, Math.round((nowMs - Number(BigInt(createdAtNs) / 1_000_000n)) / 1000));
  if (secs < 60) return `${secs} seconds ago`;
  if (secs < 3600) return `${Math.round(secs / 60)} minutes ago`;
  if (secs < 48 * 3600) return `${Math.round(secs / 3600)} hours ago`;
  return `${Math.round(secs / 86400)} days ago`;
}
