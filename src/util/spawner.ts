/**
 * The client of corral-spawner (native/spawner.c): one long-lived helper that runs programs
 * for this process, so that running a CNI plugin or a helper does not fork the daemon.
 * A fork of Node copies the page tables of its whole heap on the main thread and makes the
 * next write to every page a copy-on-write fault: with ~6 programs per pod that was about a
 * quarter of the daemon's CPU per RunPodSandbox + StopPodSandbox (bench/cpubench.ts).
 *
 * Same contract as a direct spawn (util/exec.ts execFile): argv, environment, cwd, stdin
 * input, a new session per program, a timeout that SIGKILLs its process group, the result
 * once it exited and closed its output; a program that cannot be started rejects with an
 * errno-coded Error like Node's ('ENOENT', 'EACCES', 'ETXTBSY', ...). Unlike a bare spawn,
 * each output stream is kept up to 16 MiB (the rest is read and dropped, and a note says
 * so): a runaway program cannot grow the daemon's memory without bound (the direct
 * fallback in util/exec.ts keeps the same cap).
 *
 * start() runs a program whose stdin stays open: the caller writes to it as it goes (each
 * write one frame to the helper, which queues it for the program and writes it as the
 * program reads: a program that does not read blocks neither the helper nor its other jobs;
 * more than 1 MiB waiting kills that program) and can kill it (its process group) at any time.
 *
 * The helper starts on first use and is started again after it died (the calls in flight
 * then fail). It holds the event loop only while a call is in flight, and ends with this
 * process (EOF on its stdin, PR_SET_PDEATHSIG).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants } from 'node:os';
import type { ExecOptions, ExecResult } from './exec.js';

/** A program started with its stdin kept open (Spawner.start, util/exec.ts startProgram). */
export interface RunningProgram {
  /** Settles once it exited and closed its output, as execFile's promise. */
  readonly result: Promise<ExecResult>;
  /** Queued for its stdin; ignored once stdin was ended or the program is gone. */
  write(data: string | Buffer): void;
  /** Closes its stdin (after `data`, if given), once what was written reached it. */
  end(data?: string | Buffer): void;
  /** SIGKILL to its whole process group; `result` still settles when it is gone. */
  kill(): void;
}

const ERRNO_NAMES = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));
const SIGNAL_NAMES = new Map(Object.entries(constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]));

/** The helper itself could not be run (missing, not executable): none of the calls given to it ran. */
export class SpawnerUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SpawnerUnavailableError';
  }
}

interface Pending {
  file: string;
  args: readonly string[];
  resolve: (r: ExecResult) => void;
  reject: (e: Error) => void;
}

/** Node refuses NUL in argv, environment and cwd (ERR_INVALID_ARG_VALUE); so do we, before the helper sees it. */
function refuseNul(what: string, s: string): void {
  if (s.includes('\0')) {
    throw Object.assign(new TypeError(`The argument '${what}' must be a string without null bytes. Received ${JSON.stringify(s)}`), { code: 'ERR_INVALID_ARG_VALUE' });
  }
}

/**
 * The request frame (see native/spawner.c): u32 length of the rest, then u32 id, timeout ms,
 * has-input, argc, argv strings, envc, env strings, cwd, input; a string is its u32 byte
 * length and its UTF-8 bytes. Written into one buffer sized first: with three small
 * Buffers per string and ~30 variables of environment, the pieces were most of the cost.
 */
export function encodeSpawnRequest(id: number, file: string, args: readonly string[], opts: ExecOptions): Buffer {
  const argv = [file, ...args];
  argv.forEach((a, i) => refuseNul(i === 0 ? 'file' : `args[${i - 1}]`, a));
  const env: string[] = [];
  for (const [k, v] of Object.entries(opts.env ?? process.env)) {
    if (v === undefined) continue;
    const entry = `${k}=${v}`;
    refuseNul('options.env', entry);
    env.push(entry);
  }
  const cwd = opts.cwd ?? '';
  refuseNul('options.cwd', cwd);
  const input = opts.input === undefined ? Buffer.alloc(0) : typeof opts.input === 'string' ? Buffer.from(opts.input, 'utf8') : opts.input;
  let size = 4 * 6 + 4 * 2 + Buffer.byteLength(cwd, 'utf8') + input.length;
  for (const a of argv) size += 4 + Buffer.byteLength(a, 'utf8');
  for (const e of env) size += 4 + Buffer.byteLength(e, 'utf8');
  const frame = Buffer.allocUnsafe(size);
  let off = 0;
  const u32 = (n: number) => {
    off = frame.writeUInt32LE(n >>> 0, off);
  };
  const str = (text: string) => {
    const n = frame.write(text, off + 4, 'utf8');
    frame.writeUInt32LE(n, off);
    off += 4 + n;
  };
  u32(size - 4);
  u32(id);
  u32(opts.timeoutMs && opts.timeoutMs > 0 ? Math.min(Math.ceil(opts.timeoutMs), 0xffffffff) : 0);
  u32(opts.input === undefined ? 0 : 1);
  u32(argv.length);
  argv.forEach(str);
  u32(env.length);
  env.forEach(str);
  str(cwd);
  u32(input.length);
  input.copy(frame, off);
  off += input.length;
  if (off !== size) throw new Error(`corral-spawner request: encoded ${off} bytes, sized ${size}`);
  return frame;
}

/** Request flag bits and control operations of native/spawner.c. */
const FLAG_INPUT = 1;
const FLAG_STDIN_STREAM = 2;
const REQUEST_FLAGS_OFFSET = 12; // after the length, id and timeout
export const SpawnerControl = { StdinData: 1, StdinEnd: 2, Kill: 3 } as const;
export type SpawnerControl = (typeof SpawnerControl)[keyof typeof SpawnerControl];

/** A request frame (encodeSpawnRequest's) whose stdin pipe stays open after `opts.input` for stdin frames. */
export function encodeStreamingSpawnRequest(id: number, file: string, args: readonly string[], opts: ExecOptions): Buffer {
  const frame = encodeSpawnRequest(id, file, args, { ...opts, input: opts.input ?? Buffer.alloc(0) });
  frame.writeUInt32LE(FLAG_INPUT | FLAG_STDIN_STREAM, REQUEST_FLAGS_OFFSET);
  return frame;
}

/** A control frame: u32 length, u32 0 (no request has id 0), u32 op, u32 job id, then the stdin bytes of a StdinData frame. */
export function encodeSpawnerControl(op: SpawnerControl, id: number, data?: Buffer): Buffer {
  const n = data?.length ?? 0;
  const frame = Buffer.allocUnsafe(16 + n);
  frame.writeUInt32LE(12 + n, 0);
  frame.writeUInt32LE(0, 4);
  frame.writeUInt32LE(op, 8);
  frame.writeUInt32LE(id, 12);
  data?.copy(frame, 16);
  return frame;
}

export interface SpawnReply {
  id: number;
  spawnErrno: number;
  code: number;
  signal: number;
  stdout: Buffer;
  stderr: Buffer;
  /** The helper kept the first MAX_OUTPUT bytes of that stream only. */
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** Killed by the helper: more stdin was queued for it than it takes (MAX_STDIN_QUEUED). */
  stdinOverflow: boolean;
}

/** What the helper keeps of each output stream (MAX_OUTPUT in native/spawner.c). */
export const SPAWNER_MAX_OUTPUT = 16 << 20;
const TRUNCATED_NOTE = `\n[corral-spawner: output cut at ${SPAWNER_MAX_OUTPUT} bytes]\n`;
/** What the helper queues for a streamed stdin (MAX_STDIN_QUEUED in native/spawner.c). */
export const SPAWNER_MAX_STDIN_QUEUED = 1 << 20;
const OVERFLOW_NOTE = `\n[corral-spawner: killed: more than ${SPAWNER_MAX_STDIN_QUEUED} bytes of stdin waited for it]\n`;

/** Complete replies at the start of buf, and what is left of it (an incomplete one). */
export function decodeSpawnReplies(buf: Buffer): { replies: SpawnReply[]; rest: Buffer } {
  const replies: SpawnReply[] = [];
  let off = 0;
  while (buf.length - off >= 4) {
    const len = buf.readUInt32LE(off);
    if (buf.length - off - 4 < len) break;
    let p = off + 4;
    const id = buf.readUInt32LE(p);
    const spawnErrno = buf.readInt32LE(p + 4);
    const code = buf.readInt32LE(p + 8);
    const signal = buf.readInt32LE(p + 12);
    const flags = buf.readUInt32LE(p + 16);
    p += 20;
    const outLen = buf.readUInt32LE(p);
    const stdout = buf.subarray(p + 4, p + 4 + outLen);
    p += 4 + outLen;
    const errLen = buf.readUInt32LE(p);
    const stderr = buf.subarray(p + 4, p + 4 + errLen);
    replies.push({ id, spawnErrno, code, signal, stdout, stderr, stdoutTruncated: (flags & 1) !== 0, stderrTruncated: (flags & 2) !== 0, stdinOverflow: (flags & 4) !== 0 });
    off += 4 + len;
  }
  return { replies, rest: buf.subarray(off) };
}

export class Spawner {
  private child: ChildProcess | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  /** Reply bytes received and not decoded yet. */
  private chunks: Buffer[] = [];
  private chunkBytes = 0;

  constructor(readonly binary: string) {}

  /** The helper's PID while it runs (tests, benches). */
  get pid(): number | undefined {
    return this.child?.pid;
  }

  run(file: string, args: readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return new Promise((resolve, reject) => {
      const id = this.takeId();
      const frame = encodeSpawnRequest(id, file, args, opts); // throws (rejects) for NUL bytes
      const child = this.ensureStarted();
      this.pending.set(id, { file, args, resolve, reject });
      this.holdLoop(true);
      child.stdin!.write(frame);
    });
  }

  /**
   * Starts a program whose stdin stays open (after `opts.input`, if given) until end().
   * Throws (like run rejects) for NUL bytes; the result rejects with SpawnerUnavailableError
   * if the helper could not be run (then nothing written reached anybody).
   */
  start(file: string, args: readonly string[], opts: ExecOptions = {}): RunningProgram {
    const id = this.takeId();
    const frame = encodeStreamingSpawnRequest(id, file, args, opts);
    const child = this.ensureStarted();
    const result = new Promise<ExecResult>((resolve, reject) => this.pending.set(id, { file, args, resolve, reject }));
    this.holdLoop(true);
    child.stdin!.write(frame);
    let ended = false;
    let settled = false;
    void result.then(() => (settled = true), () => (settled = true));
    // Frames go to the helper that runs it, and only while it may still read them.
    const send = (f: Buffer) => {
      if (!settled && this.child === child) child.stdin!.write(f);
    };
    const toBuffer = (d: string | Buffer) => (typeof d === 'string' ? Buffer.from(d, 'utf8') : d);
    const write = (data: string | Buffer) => {
      if (!ended && data.length > 0) send(encodeSpawnerControl(SpawnerControl.StdinData, id, toBuffer(data)));
    };
    return {
      result,
      write,
      end(data) {
        if (ended) return;
        if (data !== undefined) write(data);
        ended = true;
        send(encodeSpawnerControl(SpawnerControl.StdinEnd, id));
      },
      kill() {
        ended = true;
        send(encodeSpawnerControl(SpawnerControl.Kill, id));
      },
    };
  }

  private takeId(): number {
    const id = this.nextId;
    this.nextId = this.nextId >= 0xfffffff0 ? 1 : this.nextId + 1;
    return id;
  }

  private ensureStarted(): ChildProcess {
    if (this.child) return this.child;
    const child = spawn(this.binary, [], { stdio: ['pipe', 'pipe', 'inherit'] });
    this.child = child;
    this.chunks = [];
    this.chunkBytes = 0;
    child.stdin!.on('error', () => { /* its exit fails the calls in flight */ });
    child.stdout!.on('data', (chunk: Buffer) => this.onData(chunk));
    const gone = (why: string, unavailable = false) => {
      if (this.child !== child) return;
      this.child = undefined;
      const calls = [...this.pending.values()];
      this.pending.clear();
      for (const p of calls) {
        const msg = `running ${p.file}: corral-spawner ${why}`;
        p.reject(unavailable ? new SpawnerUnavailableError(msg) : new Error(msg));
      }
    };
    // 'error' without a process: it never started, so nothing given to it ran.
    child.on('error', (e) => gone(`could not run: ${e.message}`, child.pid === undefined));
    child.on('exit', (code, signal) => gone(signal ? `was killed by ${signal}` : `exited with status ${code}`));
    this.holdLoop(this.pending.size > 0);
    return child;
  }

  private onData(chunk: Buffer): void {
    // Chunks are kept as they come and joined once a whole reply is there: joining on
    // every chunk would copy a large output over and over.
    this.chunks.push(chunk);
    this.chunkBytes += chunk.length;
    if (this.chunkBytes < 4) return;
    if (this.chunks[0]!.length < 4) this.chunks = [Buffer.concat(this.chunks)];
    if (this.chunkBytes < 4 + this.chunks[0]!.readUInt32LE(0)) return;
    const { replies, rest } = decodeSpawnReplies(this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks));
    // Copied: a short remainder must not pin the whole buffer it came in.
    this.chunks = rest.length ? [Buffer.from(rest)] : [];
    this.chunkBytes = rest.length;
    for (const r of replies) {
      const p = this.pending.get(r.id);
      if (!p) continue;
      this.pending.delete(r.id);
      if (r.spawnErrno !== 0) {
        const code = ERRNO_NAMES.get(r.spawnErrno) ?? `errno ${r.spawnErrno}`;
        p.reject(Object.assign(new Error(`spawn ${p.file} ${code}`), { code, errno: -r.spawnErrno, syscall: `spawn ${p.file}`, path: p.file, spawnargs: [...p.args] }));
      } else {
        p.resolve({
          code: r.signal ? null : r.code,
          signal: r.signal ? (SIGNAL_NAMES.get(r.signal) ?? null) : null,
          stdout: r.stdout.toString('utf8') + (r.stdoutTruncated ? TRUNCATED_NOTE : ''),
          stderr: r.stderr.toString('utf8') + (r.stderrTruncated ? TRUNCATED_NOTE : '') + (r.stdinOverflow ? OVERFLOW_NOTE : ''),
        });
      }
    }
    this.holdLoop(this.pending.size > 0);
  }

  /** Keeps this process alive while a call is in flight, and only then. */
  private holdLoop(hold: boolean): void {
    const c = this.child;
    if (!c) return;
    for (const h of [c, c.stdin, c.stdout] as ({ ref?(): void; unref?(): void } | null)[]) {
      if (hold) h?.ref?.();
      else h?.unref?.();
    }
  }
}
