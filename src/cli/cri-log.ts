/**
 * Reading the CRI log format kubelet and crictl read (`<RFC3339Nano> <stdout|stderr> <P|F>
 * <text>` per record): a long line arrives as P (partial) records ended by an F record of the
 * same stream. Pure: parsing, joining, and choosing where `--tail N` starts.
 */

export type LogStream = 'stdout' | 'stderr';

export interface LogRecord {
  /** The timestamp as written. */
  time: string;
  stream: LogStream;
  /** true: a P record, the line goes on in the next record of the same stream. */
  partial: boolean;
  text: Buffer;
}

const SPACE = 0x20;

/** One record (a line of the file, without its newline); null when it is not in the CRI format. */
export function parseCriRecord(line: Buffer): LogRecord | null {
  const s1 = line.indexOf(SPACE);
  if (s1 <= 0) return null;
  const s2 = line.indexOf(SPACE, s1 + 1);
  if (s2 < 0) return null;
  const stream = line.toString('latin1', s1 + 1, s2);
  if (stream !== 'stdout' && stream !== 'stderr') return null;
  const tag = line.toString('latin1', s2 + 1, s2 + 2);
  if (tag !== 'P' && tag !== 'F') return null;
  // The tag field may grow (`F:...` is reserved for more flags): up to the next space.
  const s3 = line.indexOf(SPACE, s2 + 1);
  const tagField = line.toString('latin1', s2 + 1, s3 < 0 ? line.length : s3);
  if (!/^[PF](:|$)/.test(tagField)) return null;
  const time = line.toString('latin1', 0, s1);
  return { time, stream, partial: tag === 'P', text: s3 < 0 ? Buffer.alloc(0) : line.subarray(s3 + 1) };
}

/** A CRI record's time (RFC 3339 with up to nine fractional digits, any offset) as nanoseconds since the epoch; null if unparseable. */
export function logTimeNs(time: string): bigint | null {
  const m = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(time);
  if (!m) return null;
  const ms = Date.parse(`${m[1]}${m[3]}`);
  if (Number.isNaN(ms)) return null;
  return BigInt(ms) * 1_000_000n + BigInt((m[2] ?? '').padEnd(9, '0'));
}

/**
 * RFC 3339 as written by conmon (`2026-12-02T15:54:23.603252879+00:00`) → crictl's output
 * form (kubelet's `2006-01-02T15:04:05.000000000Z07:00`): UTC, always nine fractional
 * digits. Unparseable input is returned as is.
 */
export function formatLogTime(time: string): string {
  const ns = logTimeNs(time);
  if (ns === null) return time;
  const seconds = ns / 1_000_000_000n;
  return `${new Date(Number(seconds) * 1000).toISOString().slice(0, 19)}.${String(ns - seconds * 1_000_000_000n).padStart(9, '0')}Z`;
}

/**
 * `--since` as crictl takes it: an RFC 3339 time, or a duration back from `nowMs` (Go's
 * form: 30s, 5m, 1h30m, 1.5h, 250ms); as nanoseconds since the epoch. Throws on anything else.
 */
export function parseSince(value: string, nowMs: number): bigint {
  const at = logTimeNs(value);
  if (at !== null) return at;
  const unitMs: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const parts = [...value.matchAll(/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join('') !== value) {
    throw new Error(`--since must be an RFC 3339 time (2026-12-03T10:00:00Z) or a duration back from now (30s, 5m, 1h30m), got "${value}"`);
  }
  const ms = parts.reduce((sum, [, n, unit]) => sum + Number(n) * unitMs[unit!]!, 0);
  return BigInt(Math.round(nowMs)) * 1_000_000n - BigInt(Math.round(ms * 1e6));
}

export interface LogWriter {
  write(stream: LogStream, data: Buffer | string): void | Promise<void>;
}

/**
 * Writes records as the lines they make: the pieces of a partial line go out as they come
 * (nothing is held back, however long the line), each stream to its own output, with one
 * timestamp at the start of each line when asked.
 */
export class LogPrinter {
  private readonly midLine: Record<LogStream, boolean> = { stdout: false, stderr: false };
  private readonly skipping: Record<LogStream, boolean> = { stdout: false, stderr: false };
  /** Bytes still allowed out (--limit-bytes), or undefined for no limit. */
  private left: number | undefined;

  /**
   * since: only records written at or after it (ns since the epoch; --since), as kubelet
   * filters; a record whose time cannot be read is shown. limitBytes: stop after that many
   * bytes of output, timestamps included (--limit-bytes).
   */
  constructor(
    private readonly out: LogWriter,
    private readonly timestamps: boolean,
    private readonly opts: { since?: bigint; limitBytes?: number } = {},
  ) {
    this.left = opts.limitBytes;
  }

  /** True once --limit-bytes is used up: nothing more is printed. */
  get full(): boolean {
    return this.left !== undefined && this.left <= 0;
  }

  /** Skip the rest of a line already begun on `stream` before the records printed next (tail). */
  skipLineInProgress(stream: LogStream): void {
    this.skipping[stream] = true;
  }

  async print(rec: LogRecord): Promise<void> {
    if (this.skipping[rec.stream]) {
      if (!rec.partial) this.skipping[rec.stream] = false;
      return;
    }
    if (this.opts.since !== undefined) {
      const at = logTimeNs(rec.time);
      if (at !== null && at < this.opts.since) return;
    }
    if (this.timestamps && !this.midLine[rec.stream]) await this.emit(rec.stream, Buffer.from(`${formatLogTime(rec.time)} `));
    await this.emit(rec.stream, rec.partial ? rec.text : Buffer.concat([rec.text, Buffer.from('\n')]));
    this.midLine[rec.stream] = rec.partial;
  }

  private async emit(stream: LogStream, data: Buffer): Promise<void> {
    if (this.left === undefined) return this.out.write(stream, data);
    if (this.left <= 0) return;
    const part = data.length > this.left ? data.subarray(0, this.left) : data;
    this.left -= part.length;
    await this.out.write(stream, part);
  }
}

/**
 * Where `--tail N` starts, from the records' offsets in the file: the record that begins the
 * Nth line from the end (a line = P records and the F that ends them, per stream; a line
 * still in progress at the end counts), and which streams are then in the middle of an
 * earlier line whose remaining records must be skipped. Fed record by record.
 */
export class TailFinder {
  private readonly starts: { offset: number; midLine: Record<LogStream, boolean> }[] = [];
  private readonly midLine: Record<LogStream, boolean> = { stdout: false, stderr: false };

  constructor(private readonly lines: number) {}

  add(offset: number, rec: Pick<LogRecord, 'stream' | 'partial'>): void {
    if (!this.midLine[rec.stream] && this.lines > 0) {
      this.starts.push({ offset, midLine: { ...this.midLine } });
      if (this.starts.length > this.lines) this.starts.shift();
    }
    this.midLine[rec.stream] = rec.partial;
  }

  /** The offset to print from (null: nothing to print), and the streams mid-line there. */
  result(): { offset: number; midLine: Record<LogStream, boolean> } | null {
    return this.starts[0] ?? null;
  }
}

/** More than any record conmon writes (8 KiB of text and a header): a longer "line" is not a record. */
export const MAX_RECORD_BYTES = 1024 * 1024;

/**
 * Splits chunks of the file into complete lines; the unfinished end is kept for the next
 * chunk, up to MAX_RECORD_BYTES (beyond, it is cut there, so memory stays bounded).
 */
export class LineSplitter {
  private rest: Buffer = Buffer.alloc(0);
  /** Bytes of the file consumed into lines so far. */
  consumed = 0;

  constructor(private readonly maxLine = MAX_RECORD_BYTES) {}

  /** Lines (without newline) of rest + chunk, each with its offset in the file. */
  push(chunk: Buffer): { line: Buffer; offset: number }[] {
    const buf = this.rest.length > 0 ? Buffer.concat([this.rest, chunk]) : chunk;
    const out: { line: Buffer; offset: number }[] = [];
    let start = 0;
    for (let nl = buf.indexOf(0x0a); nl >= 0; nl = buf.indexOf(0x0a, start)) {
      out.push({ line: buf.subarray(start, nl), offset: this.consumed });
      this.consumed += nl + 1 - start;
      start = nl + 1;
    }
    this.rest = Buffer.from(buf.subarray(start));
    if (this.rest.length > this.maxLine) {
      out.push({ line: this.rest, offset: this.consumed });
      this.consumed += this.rest.length;
      this.rest = Buffer.alloc(0);
    }
    return out;
  }

  /** Bytes held that do not end in a newline yet. */
  get pending(): number {
    return this.rest.length;
  }
}
