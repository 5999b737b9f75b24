/**
 * conmon (Debian's container monitor, 2.1.x) runs the OCI runtime's `create` for an
 * application container and then stays as its monitor, outside the daemon: it holds the
 * container's stdio and writes it to the CRI log file (kubelet's k8s-file format), and
 * writes the exit code to `<exit dir>/<id>` when the container exits, so a daemon restart
 * loses nothing.
 *
 * How conmon 2.1.6 behaves (worked out by experiment):
 * - The process we spawn forks and exits at once; the fork calls setsid() (a session of
 *   its own, so signals to the daemon's group never reach it), points its own stdio at
 *   /dev/null, writes the conmon pid file and then runs `<runtime> create`.
 * - It reports over the "sync pipe" (the fd named by _OCI_SYNCPIPE) one JSON line:
 *   `{"data": <init pid>}` after a successful create, or `{"data": -1, "message": "..."}`
 *   carrying the runtime's stderr. After a success it keeps the fd open until the
 *   container exits, so we must read one line and close our end, never wait for EOF.
 *   It ignores SIGPIPE, so closing our end early is safe.
 * - After a failed create the monitor exits by itself, but leaves its attach symlink
 *   (`<socket dir>/<id>` → bundle) behind; we remove it.
 * - The container's init gets a session of its own from the runtime, so killing
 *   conmon's process group (create timeout) leaves it to `<runtime> delete --force`.
 */
import { spawn } from 'node:child_process';
import { constants, promises as fs, readFileSync, watch, type FSWatcher } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import { findExecutable } from '../util/paths.js';
import { execFile } from '../util/exec.js';
import { exists } from '../util/fs.js';
import { isErrno } from '../util/atomic.js';
import { KeyedLock } from '../util/keyed-lock.js';
import { failedPrecondition, internalError, unavailable } from '../errors.js';
import { parseRuntimeLog } from './runtime.js';

export interface ConmonCreateOptions {
  /** Container ID (64 hex). */
  id: string;
  /** conmon's -n (defaults to the id). */
  name?: string;
  /** Holds config.json, whose root.path is absolute. */
  bundleDir: string;
  /** The OCI runtime, e.g. /usr/bin/runc; a bare name is looked up in PATH. */
  runtimePath: string;
  /** Passed to the runtime as --root (through conmon's --runtime-arg). */
  runtimeRoot: string;
  /** CRI log file (k8s-file format). */
  logPath: string;
  /** conmon writes `<exitDir>/<id>` holding the exit code. */
  exitDir: string;
  /** conmon --persist-dir: conmon writes `exit` (and `oom`) there too. */
  persistDir?: string;
  /** Attach symlinks go under here (`<socketDir>/<id>` → bundle; sockets live in the bundle). */
  socketDir: string;
  /** The container's init pid (conmon -p). */
  pidFile: string;
  /** conmon's own pid (conmon -P). */
  conmonPidFile: string;
  /** --log-size-max in bytes. */
  logSizeMax?: number;
  /** Bound on the whole create (default 60 s); conmon and the runtime are killed after it. */
  timeoutMs?: number;
  /** Default: conmon in PATH, else /usr/bin/conmon. */
  conmonPath?: string;
  /** conmon --log-level (default "error"; conmon's messages only reach us before it forks). */
  logLevel?: 'error' | 'warn' | 'info' | 'debug';
  /** conmon --full-attach: the attach socket at `<bundle>/attach`, no symlink in socketDir. */
  fullAttach?: boolean;
  /** ContainerConfig.stdin: conmon holds a pipe to the container's stdin, fed by attach clients. */
  stdin?: boolean;
  /** ContainerConfig.stdin_once: the first attach client's stdin EOF closes the container's stdin. */
  stdinOnce?: boolean;
  /** ContainerConfig.tty (with process.terminal in the spec): conmon takes the pty master. */
  terminal?: boolean;
}

/** conmon or the runtime it ran could not create the container. */
export class ConmonError extends Error {
  constructor(
    readonly id: string,
    readonly detail: string,
    /** The runtime's own words when it was the runtime that failed. */
    readonly runtimeDetail?: string,
    readonly timedOut = false,
  ) {
    super(`conmon for container ${id}: ${detail}`);
    this.name = 'ConmonError';
  }
}

interface SyncMessage {
  data: number;
  message?: string;
}

const DEFAULT_TIMEOUT_MS = 60_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs conmon, which runs `<runtime> create`; resolves once the container is created (not
 * started) with its init PID and conmon's PID. Rejects with the runtime's own error text
 * (conmon relays it over its sync pipe) when create fails, leaving no conmon process behind.
 */
export async function conmonCreate(o: ConmonCreateOptions): Promise<{ pid: number; conmonPid: number }> {
  const started = Date.now();
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(o.id)) throw new ConmonError(o.id, 'invalid container id');
  const conmonPath = (await findExecutable(o.conmonPath ?? 'conmon')) ?? (o.conmonPath ? undefined : await findExecutable('/usr/bin/conmon'));
  if (!conmonPath) throw new ConmonError(o.id, `cannot find ${o.conmonPath ?? 'conmon'} (apt-get install conmon)`);
  // conmon execs the runtime by path, without a PATH lookup.
  const runtimePath = await findExecutable(o.runtimePath);
  if (!runtimePath) throw new ConmonError(o.id, `cannot find the OCI runtime ${o.runtimePath}`);
  // Reported here in plain words; conmon itself would only say the runtime failed.
  try {
    await fs.access(path.join(o.bundleDir, 'config.json'), fs.constants.R_OK);
  } catch (e) {
    throw new ConmonError(o.id, `bundle ${o.bundleDir} has no readable config.json: ${(e as Error).message}`);
  }
  // An existing container keeps its exit file and attach symlink: leave it to the runtime
  // to refuse, before we touch anything of it.
  if (await exists(path.join(o.runtimeRoot, o.id))) {
    throw new ConmonError(o.id, `the runtime already has a container with this id (under ${o.runtimeRoot})`);
  }
  // conmon creates none of its directories.
  await Promise.all([
    ...[o.exitDir, o.socketDir, o.runtimeRoot, o.persistDir, path.dirname(o.pidFile), path.dirname(o.conmonPidFile)]
      .filter((d): d is string => Boolean(d))
      .map((d) => fs.mkdir(d, { recursive: true, mode: 0o700 })),
    fs.mkdir(path.dirname(o.logPath), { recursive: true, mode: 0o755 }),
  ]);
  // Stale files from an earlier attempt would lie: an exit file reads as "already exited",
  // and an old conmon pid file could make us kill an unrelated process.
  await Promise.all([
    fs.rm(path.join(o.exitDir, o.id), { force: true }),
    fs.rm(o.pidFile, { force: true }),
    fs.rm(o.conmonPidFile, { force: true }),
    o.fullAttach ? Promise.resolve() : fs.rm(path.join(o.socketDir, o.id), { force: true }),
  ]);

  const args = [
    '--api-version', '1',
    '-c', o.id,
    '-u', o.id,
    '-n', o.name || o.id,
    '-r', runtimePath,
    '--runtime-arg', `--root=${o.runtimeRoot}`,
    // JSON lines on the runtime's stderr, which conmon relays: parseRuntimeLog picks the errors.
    '--runtime-arg', '--log-format=json',
    '-b', o.bundleDir,
    '-p', o.pidFile,
    '-P', o.conmonPidFile,
    '-l', `k8s-file:${o.logPath}`,
    '--exit-dir', o.exitDir,
    '--socket-dir-path', o.socketDir,
    '--log-level', o.logLevel ?? 'error',
  ];
  if (o.fullAttach) args.push('--full-attach');
  if (o.terminal) args.push('--terminal');
  if (o.stdin) args.push('--stdin', ...(o.stdinOnce ? [] : ['--leave-stdin-open']));
  if (o.persistDir) args.push('--persist-dir', o.persistDir);
  if (o.logSizeMax && o.logSizeMax > 0) args.push('--log-size-max', String(Math.floor(o.logSizeMax)));

  // conmon's complaints before it forks go to a file, not a pipe: nothing can block on it.
  const errFile = path.join(os.tmpdir(), `corral-conmon-${process.pid}-${randomBytes(6).toString('hex')}.err`);
  const errFh = await fs.open(errFile, 'w+', 0o600);
  let parentExit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnedPid: number | undefined;
  let parentGone: Promise<void> = Promise.resolve();
  try {
    let message: SyncMessage;
    try {
      message = await new Promise<SyncMessage>((resolve, reject) => {
        const child = spawn(conmonPath, args, {
          stdio: ['ignore', 'ignore', errFh.fd, 'pipe'],
          // Only PATH: the daemon's environment (NOTIFY_SOCKET, LISTEN_FDS, ...) would change
          // how the runtime behaves.
          env: { PATH: process.env.PATH || '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', _OCI_SYNCPIPE: '3' },
          // conmon writes an `oom` file into its working directory (as cri-o, the bundle), not the daemon's.
          cwd: o.bundleDir,
          detached: true,
        });
        spawnedPid = child.pid;
        parentGone = new Promise<void>((r) => child.once('close', () => r()));
        const sync = child.stdio[3] as Readable;
        let buf = '';
        let settled = false;
        const finish = (f: () => void) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          // Our end only: the monitor keeps its end until the container exits.
          sync.destroy();
          f();
        };
        const timer = setTimeout(
          () => finish(() => reject(new ConmonError(o.id, `no answer from conmon within ${timeoutMs} ms`, undefined, true))),
          Math.max(1, timeoutMs - (Date.now() - started)),
        );
        sync.on('data', (chunk: Buffer) => {
          buf += chunk.toString('utf8');
          const nl = buf.indexOf('\n');
          if (nl < 0) return;
          const line = buf.slice(0, nl);
          try {
            const parsed = JSON.parse(line) as SyncMessage;
            if (typeof parsed.data !== 'number') throw new Error('no data');
            finish(() => resolve(parsed));
          } catch {
            finish(() => reject(new ConmonError(o.id, `unreadable message from conmon: ${line.slice(0, 300)}`)));
          }
        });
        sync.on('error', () => { /* reported through 'close' */ });
        sync.on('close', () => finish(() => reject(new ConmonError(o.id, 'conmon exited without reporting the container'))));
        child.on('error', (e) => finish(() => reject(new ConmonError(o.id, `cannot run ${conmonPath}: ${e.message}`))));
        child.on('exit', (code, signal) => {
          parentExit = { code, signal };
        });
      });
    } catch (e) {
      const err = e instanceof ConmonError ? e : new ConmonError(o.id, String(e));
      // Its exit status explains an early failure; it normally exits within milliseconds.
      await Promise.race([parentGone, sleep(err.timedOut ? 0 : 500)]);
      await cleanUpFailed(o, runtimePath, parentExit ? undefined : spawnedPid, err.timedOut);
      const stderr = (await fs.readFile(errFile, 'utf8').catch(() => '')).trim();
      const how = parentExit && parentExit.code !== 0 ? ` (conmon ${parentExit.signal ? `killed by ${parentExit.signal}` : `exit status ${parentExit.code}`})` : '';
      throw new ConmonError(o.id, `${err.detail}${how}${stderr ? `: ${stderr}` : ''}`, undefined, err.timedOut);
    }

    if (!(message.data > 0)) {
      await cleanUpFailed(o, runtimePath, parentExit ? undefined : spawnedPid, false);
      const reason = parseRuntimeLog(message.message ?? '');
      const rt = path.basename(runtimePath);
      const detail = reason ? (reason.startsWith(`${rt} create`) ? reason : `${rt} create failed: ${reason}`) : `${rt} create failed and gave no reason`;
      throw new ConmonError(o.id, detail, reason || undefined);
    }
    // The monitor writes its pid file before it runs the runtime; a short wait covers a slow disk.
    let conmonPid = 0;
    for (let i = 0; i < 40 && conmonPid <= 0; i++) {
      conmonPid = await readPidFile(o.conmonPidFile);
      if (conmonPid <= 0) await sleep(25);
    }
    return { pid: message.data, conmonPid };
  } finally {
    await errFh.close();
    await fs.rm(errFile, { force: true });
  }
}

/**
 * After a failed create: the monitor gone (it normally exits by itself), the runtime's
 * half-made container deleted after a timeout, and conmon's attach symlink removed.
 */
async function cleanUpFailed(o: ConmonCreateOptions, runtimePath: string, spawnedPid: number | undefined, timedOut: boolean): Promise<void> {
  // The spawned parent, still there (stuck before it forked), leads a process group of its own.
  if (spawnedPid) signal(-spawnedPid, 'SIGKILL');
  const pid = await readPidFile(o.conmonPidFile);
  if (pid > 0 && (await conmonAlive(pid, o.id))) {
    if (!timedOut) {
      // A failed create: conmon is on its way out; give it a moment.
      for (let i = 0; i < 40 && (await conmonAlive(pid, o.id)); i++) await sleep(25);
    }
    // conmon leads its own session; its group holds the runtime's create (not the container's
    // init, which has a session of its own).
    if (await conmonAlive(pid, o.id)) {
      signal(-pid, 'SIGKILL');
      signal(pid, 'SIGKILL');
      for (let i = 0; i < 40 && (await conmonAlive(pid, o.id)); i++) await sleep(25);
    }
  }
  if (timedOut) {
    // The runtime may have got as far as a created container.
    await execFile(runtimePath, [`--root=${o.runtimeRoot}`, 'delete', '--force', o.id], { timeoutMs: 10_000 }).catch(() => undefined);
  }
  await Promise.all([
    o.fullAttach ? Promise.resolve() : removeSymlink(path.join(o.socketDir, o.id)),
    fs.rm(o.conmonPidFile, { force: true }),
  ]);
}

/**
 * Removes what conmon leaves behind for a container once it is deleted: its exit file and
 * its attach symlink `<socketDir>/<id>` (conmon removes neither).
 */
export async function removeConmonFiles(o: { id: string; exitDir?: string; socketDir?: string }): Promise<void> {
  if (!o.id || o.id.includes('/') || o.id === '.' || o.id === '..') return;
  await Promise.all([
    o.exitDir ? fs.rm(path.join(o.exitDir, o.id), { force: true }) : Promise.resolve(),
    o.socketDir ? removeSymlink(path.join(o.socketDir, o.id)) : Promise.resolve(),
  ]);
}

/**
 * Whether `pid` is a live (not zombie) conmon monitoring container `id`; a recycled pid
 * or an exited conmon (even one not yet reaped) is not.
 */
export async function conmonAlive(pid: number, id: string): Promise<boolean> {
  if (!(pid > 0)) return false;
  try {
    // A zombie's cmdline reads empty.
    const argv = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    return path.basename(argv[0] ?? '') === 'conmon' && argv.includes(id);
  } catch {
    return false;
  }
}

/** The container's exit code once conmon recorded it; null while it runs. */
export async function readExitCode(exitDir: string, id: string): Promise<number | null> {
  let text: string;
  try {
    // Synchronous: a small file under the state dir (tmpfs), read for every running
    // container on each ListContainers; a thread-pool round trip each cost more than the read.
    text = readFileSync(path.join(exitDir, id), 'utf8');
  } catch {
    return null;
  }
  // conmon creates the file and then writes it: an empty read races that write, so "running".
  const t = text.trim();
  return /^-?\d+$/.test(t) ? Number.parseInt(t, 10) : null;
}

/** Waits until conmon records the exit (or timeoutMs passes); the code, or null. */
export async function waitForExit(exitDir: string, id: string, timeoutMs: number): Promise<number | null> {
  const first = await readExitCode(exitDir, id);
  if (first !== null || timeoutMs <= 0) return first;
  return new Promise<number | null>((resolve) => {
    let settled = false;
    let watcher: FSWatcher | undefined;
    const finish = (code: number | null) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      clearInterval(poll);
      watcher?.close();
      resolve(code);
    };
    const check = () => {
      void readExitCode(exitDir, id).then((code) => {
        if (code !== null) finish(code);
      });
    };
    try {
      // inotify on the directory: the file appears (rename) and is then written (change).
      watcher = watch(exitDir, { persistent: false }, (_event, name) => {
        if (!name || name.toString() === id) check();
      });
      watcher.on('error', () => { /* the poll below still runs */ });
    } catch {
      watcher = undefined; // no such directory yet: polling alone
    }
    // A slow poll as a safety net under the watch (a fast one without it).
    const poll = setInterval(check, watcher ? 250 : 25);
    const timer = setTimeout(() => {
      void readExitCode(exitDir, id).then(finish, () => finish(null));
    }, timeoutMs);
    check(); // the file may have appeared between the first read and the watch
  });
}

/** conmon's control FIFO, which it makes in the bundle dir: lines "<type> <height> <width>\n". */
export function conmonCtlPath(bundleDir: string): string {
  return path.join(bundleDir, 'ctl');
}

/** conmon's control message "reopen the log files" (type 2; height and width unused), as cri-o sends it. */
const CTL_REOPEN_LOGS = '2 0 0\n';
const DEFAULT_REOPEN_TIMEOUT_MS = 10_000;

/**
 * ReopenContainerLog through conmon: it closes the log file it writes (kubelet has renamed
 * it) and makes a new one at logPath (as `<logPath>.tmp`, renamed into place). Resolves once
 * the new file is there: callers look for it right after (critest does). The FIFO is opened
 * without blocking, so a gone conmon (no reader: ENXIO) is an error, not a hung daemon.
 */
export function reopenConmonLog(o: { id: string; bundleDir: string; logPath: string; conmonPidFile: string; timeoutMs?: number }): Promise<void> {
  // One at a time per container: a second reopen would replace the file the first just made.
  return reopenQueue.run(o.bundleDir, () => reopenConmonLogNow(o));
}

const reopenQueue = new KeyedLock();

async function reopenConmonLogNow(o: { id: string; bundleDir: string; logPath: string; conmonPidFile: string; timeoutMs?: number }): Promise<void> {
  // conmon exits when it cannot create the new file, leaving the container unmonitored:
  // refuse before asking it.
  const dir = path.dirname(o.logPath);
  const dirStat = await fs.stat(dir).catch(() => undefined);
  if (!dirStat?.isDirectory()) {
    throw failedPrecondition(`the log directory ${dir} of container ${o.id} does not exist: create it (kubelet's pod log directory) and reopen the log again`);
  }
  // Not rotated (a retry, a second caller): conmon would start the file over, losing its lines.
  if (await conmonWritesTo(o.conmonPidFile, o.id, o.logPath)) return;
  const before = await fileIdentity(o.logPath);
  const ctl = conmonCtlPath(o.bundleDir);
  let fh: fs.FileHandle;
  try {
    fh = await fs.open(ctl, constants.O_WRONLY | constants.O_NONBLOCK);
  } catch (e) {
    // ENXIO: a FIFO without a reader; ENOENT: the bundle is gone.
    if (isErrno(e, 'ENXIO', 'ENOENT')) throw failedPrecondition(`container ${o.id} is not running: its monitor (conmon) is gone`);
    throw internalError(`opening conmon's control FIFO ${ctl} of container ${o.id}: ${(e as Error).message}`);
  }
  try {
    // Shorter than PIPE_BUF: written whole or not at all.
    await fh.write(CTL_REOPEN_LOGS);
  } catch (e) {
    if (isErrno(e, 'EPIPE')) throw failedPrecondition(`container ${o.id} is not running: its monitor (conmon) is gone`);
    if (isErrno(e, 'EAGAIN')) throw unavailable(`conmon of container ${o.id} is not reading its control FIFO (full); try again`);
    throw internalError(`writing to conmon's control FIFO ${ctl} of container ${o.id}: ${(e as Error).message}`);
  } finally {
    await fh.close();
  }
  const deadline = Date.now() + (o.timeoutMs ?? DEFAULT_REOPEN_TIMEOUT_MS);
  for (;;) {
    const now = await fileIdentity(o.logPath);
    // A new file: none was there (kubelet renamed it), or another one than before.
    if (now && now !== before) return;
    // conmon exits when it cannot make the new file (or the container exited): no reader left on its FIFO.
    if (!(await fifoHasReader(ctl))) {
      throw failedPrecondition(`the monitor (conmon) of container ${o.id} exited while reopening its log: the container exited, or conmon could not create ${o.logPath}`);
    }
    if (Date.now() >= deadline) {
      throw internalError(`conmon of container ${o.id} did not reopen its log ${o.logPath} within ${o.timeoutMs ?? DEFAULT_REOPEN_TIMEOUT_MS} ms`);
    }
    await sleep(10);
  }
}

/** Whether a process has the FIFO open for reading (opening it to write, without blocking, fails with ENXIO otherwise). */
async function fifoHasReader(fifo: string): Promise<boolean> {
  try {
    await (await fs.open(fifo, constants.O_WRONLY | constants.O_NONBLOCK)).close();
    return true;
  } catch (e) {
    if (isErrno(e, 'ENXIO', 'ENOENT')) return false;
    throw e;
  }
}

/** Whether the live conmon of container id has the file at logPath open (false when unsure). */
async function conmonWritesTo(conmonPidFile: string, id: string, logPath: string): Promise<boolean> {
  const pid = await readPidFile(conmonPidFile);
  const log = await fs.stat(logPath).catch(() => undefined);
  if (!log || !(await conmonAlive(pid, id))) return false;
  const fds = await fs.readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
  for (const fd of fds) {
    const st = await fs.stat(`/proc/${pid}/fd/${fd}`).catch(() => undefined);
    if (st && st.dev === log.dev && st.ino === log.ino) return true;
  }
  return false;
}

/** Which file is at p (device, inode, birth time), or undefined when nothing is. */
async function fileIdentity(p: string): Promise<string | undefined> {
  const st = await fs.stat(p, { bigint: true }).catch(() => undefined);
  return st ? `${st.dev}:${st.ino}:${st.birthtimeNs}` : undefined;
}

async function readPidFile(file: string): Promise<number> {
  const n = Number.parseInt((await fs.readFile(file, 'utf8').catch(() => '')).trim(), 10);
  return Number.isInteger(n) && n > 0 ? n : 0;
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    /* already gone */
  }
}

async function removeSymlink(p: string): Promise<void> {
  try {
    if ((await fs.lstat(p)).isSymbolicLink()) await fs.unlink(p);
  } catch {
    /* not there */
  }
}
