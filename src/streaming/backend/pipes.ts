/**
 * Moving bytes between a helper process's pipes and a session's streams, with backpressure
 * and without ever letting a stream the server owns crash the daemon.
 */
import type { ChildProcess } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import type { StreamIO } from '../runtime.js';

const noop = () => {};

/** Resolves once `dst` can take more (or is gone). */
function drained(dst: Writable): Promise<void> {
  if (!dst.writableNeedDrain || dst.destroyed) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      dst.off('drain', done);
      dst.off('close', done);
      dst.off('error', done);
      resolve();
    };
    dst.on('drain', done);
    dst.on('close', done);
    dst.on('error', done);
  });
}

/**
 * Copies src to dst until src ends; resolves once everything is handed over and written
 * (dst's write callbacks ran). A destination that has gone away (client left) no longer
 * receives, but src is still read to its end, so the writer never blocks on a full pipe.
 * Never ends dst: the caller (or the server) decides. Never rejects.
 */
export async function copyOut(src: Readable, dst: Writable): Promise<void> {
  let last: Promise<void> = Promise.resolve();
  let onClose = noop;
  const closed = new Promise<void>((resolve) => {
    onClose = () => resolve();
    dst.once('close', onClose);
  });
  dst.on('error', noop);
  try {
    for await (const chunk of src) {
      if (dst.destroyed || dst.writableEnded) continue;
      last = new Promise<void>((resolve) => dst.write(chunk as Buffer, () => resolve()));
      await drained(dst);
    }
  } catch {
    /* src destroyed under us: what it had is what there is */
  } finally {
    await Promise.race([last, closed]);
    dst.off('close', onClose);
    dst.off('error', noop);
  }
}

/** Feeds src into the child's stdin with backpressure; src's end closes the child's stdin. */
export function feedStdin(src: Readable, stdin: Writable): () => void {
  stdin.on('error', noop); // EPIPE once the command exits without reading
  src.pipe(stdin);
  return () => {
    src.unpipe(stdin);
    stdin.destroy();
  };
}

/** The child's exit: resolves with its code (null when signalled) and never rejects. */
export function exited(child: ChildProcess): Promise<{ code: number | null; spawnError?: Error }> {
  return new Promise((resolve) => {
    child.once('error', (e) => resolve({ code: null, spawnError: e }));
    child.once('exit', (code) => resolve({ code }));
  });
}

/** Reads a helper's report pipe (a few lines at most) to its end. */
export function readAll(r: Readable | null | undefined, cap = 4096): Promise<string> {
  if (!r) return Promise.resolve('');
  return new Promise((resolve) => {
    let s = '';
    r.on('data', (b: Buffer) => {
      if (s.length < cap) s += b.toString('utf8');
    });
    r.on('error', noop);
    r.on('close', () => resolve(s.slice(0, cap)));
  });
}

/** SIGKILLs a helper's whole process group (spawned detached); gone already is fine. */
export function killGroup(child: ChildProcess): void {
  try {
    if (child.pid) process.kill(-child.pid, 'SIGKILL');
  } catch {
    /* gone */
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Resolves when the signal aborts (at once if it has); `dispose` drops the listener. */
export function whenAborted(signal: AbortSignal): { promise: Promise<void>; dispose: () => void } {
  let onAbort = noop;
  const promise = new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    onAbort = () => resolve();
    signal.addEventListener('abort', onAbort, { once: true });
  });
  return { promise, dispose: () => signal.removeEventListener('abort', onAbort) };
}

/**
 * Wires a spawned corral-streamhelper to a session: its exit, its report pipe (fd 3), the
 * session's stdin fed in, its stdout (and, without a TTY, its stderr) copied out.
 */
export function connectHelper(child: ChildProcess, io: StreamIO): {
  exit: ReturnType<typeof exited>;
  report: Promise<string>;
  stopStdin: () => void;
  outputDone: Promise<void>;
} {
  const exit = exited(child);
  const report = readAll(child.stdio[3] as Readable);
  const stopStdin = io.stdin && child.stdin ? feedStdin(io.stdin, child.stdin) : noop;
  const copies: Promise<void>[] = [];
  if (io.stdout && child.stdout) copies.push(copyOut(child.stdout, io.stdout));
  if (!io.tty && io.stderr && child.stderr) copies.push(copyOut(child.stderr, io.stderr));
  return { exit, report, stopStdin, outputDone: Promise.all(copies).then(noop) };
}
