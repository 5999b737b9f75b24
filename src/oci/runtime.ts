/**
 * Drives an OCI runtime binary (runc or crun; they share the CLI) for sandbox containers.
 *
 * Every invocation gets `--root <handler.root> --log <tmpfile> --log-format json`, so the
 * runtime's own diagnostics land in a file we read back, whatever it prints on stderr.
 * `create` runs with all stdio on /dev/null: the container process inherits the runtime's
 * stdio, and a pipe held open by the pause would keep us waiting forever.
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { RuntimeHandlerConfig } from '../config/config.js';
import { nativeBinary } from '../util/paths.js';
import type { Logger } from '../util/log.js';
import { capabilitiesFromMask } from './capabilities.js';
import { ExecCgroup } from './exec-cgroup.js';
import type { OciResources } from './oci-types.js';
import { TailBuffer } from '../util/tail-buffer.js';
import type { RuntimeObserver } from '../observer.js';
import { killRunscProcesses, parseRunscStats, runscExecProcess, runscKnows, runscStdioRecord, type RunscUsage } from './runsc.js';

export type OciStatus = 'creating' | 'created' | 'running' | 'stopped' | 'paused';

export interface OciState {
  status: OciStatus;
  pid: number;
}

/** An OCI runtime command failed; the message carries the runtime's own words. */
export class OciRuntimeError extends Error {
  constructor(
    readonly runtime: string,
    readonly subcommand: string,
    readonly containerId: string | undefined,
    readonly exitCode: number | null,
    readonly detail: string,
  ) {
    super(`${runtime} ${subcommand}${containerId ? ` ${containerId}` : ''} failed${exitCode !== null ? ` (exit status ${exitCode})` : ''}${detail ? `: ${detail}` : ''}`);
    this.name = 'OciRuntimeError';
  }
}

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  /** The runtime's diagnostics: error-level messages from its JSON log, else its stderr. */
  detail: string;
}

const CAP_SYS_RESOURCE = 24n;

/**
 * Pure: the lowest oom_score_adj this process may give its children. Lowering the
 * value below one's own needs CAP_SYS_RESOURCE; without it the own value is the floor.
 */
export function oomScoreAdjFloorFrom(procStatus: string, ownOomScoreAdj: string): number {
  const m = /^CapEff:\s*([0-9a-fA-F]+)\s*$/m.exec(procStatus);
  const own = Number.parseInt(ownOomScoreAdj.trim(), 10);
  if (!Number.isInteger(own)) throw new Error(`cannot parse oom_score_adj "${ownOomScoreAdj.trim()}"`);
  if (m && (BigInt('0x' + m[1]) >> CAP_SYS_RESOURCE) & 1n) return -1000;
  return own;
}

/** The lowest oom_score_adj the runtime can set for a container started by this daemon. */
export async function oomScoreAdjFloor(): Promise<number> {
  const [status, adj] = await Promise.all([
    fs.readFile('/proc/self/status', 'utf8'),
    fs.readFile('/proc/self/oom_score_adj', 'utf8'),
  ]);
  return oomScoreAdjFloorFrom(status, adj);
}

/**
 * The capabilities this process can pass on to a container (its bounding set); give
 * them to buildSandboxSpec as availableCapabilities, or runc/crun fail with EPERM when a
 * privileged sandbox asks for one the daemon lacks (e.g. CAP_SYS_RESOURCE on these hosts).
 */
export async function currentCapabilities(): Promise<string[]> {
  const status = await fs.readFile('/proc/self/status', 'utf8');
  const m = /^CapBnd:\s*([0-9a-fA-F]+)\s*$/m.exec(status);
  if (!m) throw new Error('cannot find CapBnd in /proc/self/status');
  return capabilitiesFromMask(m[1]);
}

/** Pulls the messages out of a runtime log: JSON lines (`msg`, by level) or plain text. */
export function parseRuntimeLog(text: string): string {
  const errors: string[] = [];
  const plain: string[] = [];
  for (const line of text.split('\n')) {
    const l = line.trim();
    if (!l) continue;
    if (l.startsWith('{')) {
      try {
        const rec = JSON.parse(l) as { msg?: unknown; level?: unknown };
        if (typeof rec.msg === 'string') {
          const level = String(rec.level ?? 'error');
          if (level === 'error' || level === 'fatal' || level === 'panic') errors.push(rec.msg.trim());
          continue;
        }
      } catch {
        /* not JSON after all */
      }
    }
    plain.push(l);
  }
  return [...new Set(errors.length ? errors : plain)].join('; ');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The most of each of stdout and stderr an exec keeps (its tail): 1 MiB. That is a hundred
 * times what kubelet reads of a probe's output (10 KiB), both streams full make a response
 * far inside the 16 MiB gRPC message limit of kubelet and Corral (containerd keeps the first
 * 16 MiB of each, so its full responses are refused), and many concurrent probes flooding
 * their output cost the daemon a few MiB each, not the size of the flood.
 */
export const EXEC_OUTPUT_CAP_BYTES = 1024 * 1024;
/** How long output may still arrive after the exec'd command exits (descendants may hold its pipes). */
export const EXEC_DRAIN_MS = 2_000;
/** Bound on waiting for SIGKILLed exec processes to disappear. */
const EXEC_KILL_WAIT_MS = 5_000;

export interface ExecOptions {
  /** 0: no deadline. */
  timeoutMs: number;
  /** Host PID of the container's init: the exec cgroup goes under its cgroups. */
  initPid: number;
  /** Default EXEC_OUTPUT_CAP_BYTES. */
  maxOutputBytes?: number;
  /** Default EXEC_DRAIN_MS. */
  drainMs?: number;
  /** Aborting (the client went away) kills the command's tree as the deadline does. */
  signal?: AbortSignal;
}

export interface ExecResult {
  exitCode: number;
  /** The last maxOutputBytes of each stream. */
  stdout: Buffer;
  stderr: Buffer;
  /** The deadline passed; the command and everything it started were killed. */
  timedOut: boolean;
}

export interface OciRuntimeOptions {
  /** Upper bound for any single runtime command (default 60 s); the command is killed after it. */
  commandTimeoutMs?: number;
  /** Told of every failed command (metrics). */
  observer?: RuntimeObserver;
  /** The executable to run instead of handler.path (gVisor: the wrapper from writeRunscWrapper). */
  binary?: string;
  /**
   * The runtime is gVisor's runsc: exec gets no host cgroup (the command runs inside the
   * sandbox's kernel, not on the host), and a delete also kills the sandbox and gofer
   * processes runsc can leave behind (see runsc.ts).
   */
  runsc?: boolean;
}

export class OciRuntime {
  readonly name: string;
  readonly binary: string;
  readonly root: string;
  readonly runsc: boolean;
  private readonly commandTimeoutMs: number;
  private readonly observer: RuntimeObserver | undefined;

  constructor(handler: RuntimeHandlerConfig, private readonly logger?: Logger, opts: OciRuntimeOptions = {}) {
    this.name = handler.name;
    this.binary = opts.binary ?? handler.path;
    this.root = handler.root;
    this.runsc = opts.runsc ?? false;
    this.commandTimeoutMs = opts.commandTimeoutMs ?? 60_000;
    this.observer = opts.observer;
  }

  /** Creates the container (process waiting before exec) from a bundle. */
  async create(id: string, bundleDir: string, opts: { pidFile?: string } = {}): Promise<void> {
    const args = ['create', '--bundle', bundleDir];
    if (opts.pidFile) args.push('--pid-file', opts.pidFile);
    args.push(id);
    // Some runtimes report bundle problems before their log is open, and create's stderr
    // must be /dev/null (the container inherits it), so check the bundle here first.
    try {
      await fs.access(path.join(bundleDir, 'config.json'), fs.constants.R_OK);
    } catch (e) {
      throw this.failure('create', id, null, `bundle ${bundleDir} has no readable config.json: ${(e as Error).message}`);
    }
    await fs.mkdir(this.root, { recursive: true, mode: 0o700 });
    const r = await this.run(args, { quiet: true });
    if (r.code !== 0) throw this.error('create', id, r);
  }

  async start(id: string): Promise<void> {
    // runsc starts a pod container's gofer at `start`; it would hold pipes open for its life.
    const r = await this.run(['start', id], { quiet: this.runsc });
    if (r.code !== 0) throw this.error('start', id, r);
  }

  /**
   * Applies new cgroup limits to a created or running container (`update --resources`, an
   * OCI LinuxResources file). Limits left out stay as they are.
   */
  async update(id: string, resources: OciResources): Promise<void> {
    const file = path.join(os.tmpdir(), `corral-update-${process.pid}-${randomBytes(6).toString('hex')}.json`);
    try {
      // Inside the try: a write that fails half-way (ENOSPC) still leaves no file behind.
      await fs.writeFile(file, JSON.stringify(resources), { mode: 0o600 });
      const r = await this.run(['update', '--resources', file, id]);
      if (r.code !== 0) throw this.error('update', id, r);
    } finally {
      await fs.rm(file, { force: true });
    }
  }

  /** The runtime's view of a container; null when it has no such container. */
  async state(id: string): Promise<OciState | null> {
    const r = await this.run(['state', id]);
    if (r.code !== 0) {
      if (!(await this.knows(id)) || /does not exist|not found/i.test(r.detail)) return null;
      throw this.error('state', id, r);
    }
    let parsed: { status?: unknown; pid?: unknown };
    try {
      parsed = JSON.parse(r.stdout) as typeof parsed;
    } catch {
      throw this.failure('state', id, r.code, `unreadable state output: ${r.stdout.slice(0, 200)}`);
    }
    const status = String(parsed.status ?? '') as OciStatus;
    if (!['creating', 'created', 'running', 'stopped', 'paused'].includes(status)) {
      throw this.failure('state', id, r.code, `unknown status "${status}"`);
    }
    const pid = typeof parsed.pid === 'number' && status !== 'stopped' ? parsed.pid : 0;
    return { status, pid };
  }

  /**
   * Signals the container's init (or, with `all`, every process in it). A container that
   * has already stopped, or that the runtime no longer knows, is not an error.
   */
  async kill(id: string, signal: string = 'KILL', all = false): Promise<void> {
    const args = ['kill'];
    if (all) args.push('--all');
    args.push(id, signal);
    const r = await this.run(args);
    if (r.code === 0) return;
    const st = await this.state(id).catch(() => undefined);
    if (st === null || st?.status === 'stopped') return;
    // runsc cannot signal a container that was never started ("in state created"): nothing of
    // it runs yet, so killing it is deleting it (its waiter then reports the exit to conmon).
    if (this.runsc && st?.status === 'created' && signal.replace(/^SIG/, '') === 'KILL') return this.delete(id, true);
    throw this.error('kill', id, r);
  }

  /** Deletes the container (with `force`, killing it first). Unknown ids are fine. */
  async delete(id: string, force = true): Promise<void> {
    const args = ['delete'];
    if (force) args.push('--force');
    args.push(id);
    const r = await this.run(args);
    if (r.code !== 0 && (await this.knows(id))) {
      const st = await this.state(id).catch(() => undefined);
      if (st !== null) throw this.error('delete', id, r);
    }
    await this.reapLeftovers(id);
  }

  /**
   * runsc: once the container is deleted, no process of it may remain. Its `delete --force`
   * can leave the sandbox and gofer running (they are found by ID and root, and killed).
   */
  private async reapLeftovers(id: string): Promise<void> {
    if (!this.runsc) return;
    const alive = await killRunscProcesses(this.root, id);
    await fs.rm(runscStdioRecord(this.root, id), { force: true });
    if (alive.length > 0) {
      throw this.failure('delete', id, null, `runsc processes ${alive.join(', ')} of the container are still alive after SIGKILL`);
    }
  }

  /**
   * Runs a command in a running container (`exec`, with the container's own process
   * settings) in an exec cgroup of its own (see exec-cgroup.ts), collecting the last
   * EXEC_OUTPUT_CAP_BYTES of stdout and of stderr. Bounded in time and memory:
   * - at the deadline (timeoutMs > 0) every process the command started, setsid-ed or
   *   reparented ones included, is SIGKILLed and gone before this resolves (timedOut set);
   * - once the command exits, output still arriving is read for up to EXEC_DRAIN_MS; then
   *   the pipes are closed and the call answers with the command's exit code, even if a
   *   background descendant still holds them (it keeps running, as with cri-o, and gets
   *   EPIPE when it next writes); only a deadline kills what a command leaves behind;
   * - output beyond the cap is read and discarded (by the reaper, outside the daemon), so
   *   a chatty command never blocks on a full pipe and the daemon never holds more.
   * A runtime that cannot run the command at all is an OciRuntimeError, not an exit code.
   */
  async exec(id: string, args: string[], opts: ExecOptions): Promise<ExecResult> {
    // gVisor: the command runs in the sandbox's own kernel; no host process of it to group.
    if (this.runsc) return this.execIn(null, id, args, opts);
    let cg: ExecCgroup;
    try {
      cg = await ExecCgroup.create(opts.initPid, id);
    } catch (e) {
      throw this.failure('exec', id, null, (e as Error).message);
    }
    try {
      return await this.execIn(cg, id, args, opts);
    } finally {
      if (!(await cg.remove())) this.logger?.debug({ id, cgroup: cg.name }, 'exec left processes running; its cgroup is removed once they end');
    }
  }

  private async execIn(cg: ExecCgroup | null, id: string, args: string[], opts: ExecOptions): Promise<ExecResult> {
    const base = path.join(os.tmpdir(), `corral-exec-${process.pid}-${randomBytes(6).toString('hex')}`);
    const pidFile = `${base}.pid`;
    const internalPidFile = `${base}.ipid`;
    const processFile = `${base}.process.json`;
    try {
      // runsc's CLI exec runs as root with none of the container's settings (runc takes them from the container).
      const process = this.runsc ? await runscExecProcess(this.root, id, args) : undefined;
      if (process) await fs.writeFile(processFile, JSON.stringify(process), { mode: 0o600 });
      return await this.execReaped(cg, { pidFile, internalPidFile, processFile: process ? processFile : undefined }, id, args, opts);
    } finally {
      await Promise.all([fs.rm(pidFile, { force: true }), fs.rm(internalPidFile, { force: true }), fs.rm(processFile, { force: true })]);
    }
  }

  /**
   * runsc: SIGKILLs an exec'd command inside the sandbox (by its PID there) and every process
   * of its process group; its waiter on the host then exits by itself.
   */
  private async killInSandbox(id: string, internalPidFile: string): Promise<void> {
    const pid = Number((await fs.readFile(internalPidFile, 'utf8').catch(() => '')).trim());
    if (!(pid > 0)) return;
    const r = await this.run(['kill', '--pid', String(pid), id, 'KILL']);
    if (r.code !== 0) this.logger?.warn({ id, pid, err: r.detail }, 'runsc: killing a timed-out exec failed');
  }

  /**
   * The runtime runs detached under corral-execreaper (native/execreaper.c): a non-detached
   * `runc exec` relays output through pipes of its own and exits only at their EOF, so a
   * descendant holding them would hold the call. The reaper gives the command its own pipes,
   * keeps their tails (so a flood never reaches the daemon), exits once the command has
   * exited and the pipes are drained (or the drain time is over), and reports on fd 3.
   */
  private execReaped(cg: ExecCgroup | null, files: { pidFile: string; internalPidFile: string; processFile?: string }, id: string, args: string[], opts: ExecOptions): Promise<ExecResult> {
    const cap = opts.maxOutputBytes ?? EXEC_OUTPUT_CAP_BYTES;
    const drainMs = opts.drainMs ?? EXEC_DRAIN_MS;
    const { pidFile } = files;
    const placement = cg ? ['--cgroup', cg.name] : ['--internal-pid-file', files.internalPidFile];
    // runsc: the command as a process file (the container's user, groups, env, cwd, capabilities).
    const command = files.processFile ? ['--process', files.processFile, id] : [id, ...args];
    const runtimeArgs = ['--root', this.root, 'exec', '--detach', '--pid-file', pidFile, ...placement, ...command];
    const child = spawn(nativeBinary('corral-execreaper'), [String(cap), String(drainMs), pidFile, this.binary, ...runtimeArgs], {
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
      detached: true,
    });
    // The reaper sends at most `cap` bytes a stream; the daemon holds no more even if it did not.
    const out = new TailBuffer(cap);
    const err = new TailBuffer(cap);
    const report = new TailBuffer(256);
    const streams = [child.stdout!, child.stderr!, child.stdio[3] as Readable];
    streams[0]!.on('data', (b: Buffer) => out.push(b));
    streams[1]!.on('data', (b: Buffer) => err.push(b));
    streams[2]!.on('data', (b: Buffer) => report.push(b));
    let spawnError: Error | undefined;
    const exited = new Promise<void>((res) => {
      child.on('exit', () => res());
      child.on('error', (e) => {
        spawnError = e;
        res();
      });
    });
    const allClosed = Promise.all(streams.map((s) => new Promise((r) => s.on('close', r))));
    const within = (p: Promise<unknown>, ms: number) => Promise.race([p.then(() => true), sleep(ms).then(() => false)]);
    const killReaper = () => {
      try {
        if (child.pid) process.kill(-child.pid, 'SIGKILL');
      } catch {
        /* gone already */
      }
    };

    return (async (): Promise<ExecResult> => {
      let timer: NodeJS.Timeout | undefined;
      // setTimeout fires at once beyond 2^31-1 ms; a timeout of ~25 days or more is that long.
      const timeoutMs = Math.min(opts.timeoutMs, 2 ** 31 - 1);
      const deadline = timeoutMs > 0 ? new Promise<'deadline'>((res) => (timer = setTimeout(() => res('deadline'), timeoutMs))) : new Promise<never>(() => {});
      const signal = opts.signal;
      const aborted = signal
        ? new Promise<'deadline'>((res) => (signal.aborted ? res('deadline') : signal.addEventListener('abort', () => res('deadline'), { once: true })))
        : new Promise<never>(() => {});
      const first = await Promise.race([exited.then(() => 'exit' as const), deadline, aborted]);
      clearTimeout(timer);
      if (spawnError) throw this.failure('exec', id, null, `cannot run corral-execreaper: ${spawnError.message}`);
      // A command that finished in time is not killed for a drain running past the deadline.
      const finished = /^done /m.test(report.toBuffer().toString('utf8'));
      if (first === 'deadline' && finished && !signal?.aborted) {
        try {
          if (child.pid) process.kill(child.pid, 'SIGUSR1');
        } catch {
          /* exited meanwhile */
        }
        if (!(await within(exited, EXEC_KILL_WAIT_MS))) killReaper();
      }
      const timedOut = first === 'deadline' && !(finished && !signal?.aborted);
      if (timedOut) {
        // The tree first, then the reaper and the runtime (which may still be setting the
        // command up); once they are gone nothing new can join, so kill again and wait it out.
        if (cg) await cg.killAll(EXEC_KILL_WAIT_MS);
        else await this.killInSandbox(id, files.internalPidFile);
        killReaper();
        await within(exited, EXEC_KILL_WAIT_MS);
        if (cg && !(await cg.killAll(EXEC_KILL_WAIT_MS))) {
          this.logger?.warn({ id, pids: await cg.pids() }, 'timed-out exec: processes still alive after SIGKILL');
        }
      }
      // Only the reaper holds these pipes, and it has exited.
      if (!(await within(allClosed, 1000))) streams.forEach((s) => s.destroy());
      const result = { stdout: out.toBuffer(), stderr: err.toBuffer(), timedOut };
      if (timedOut) return { ...result, exitCode: 137 };
      const reported = report.toBuffer().toString('utf8');
      const m = /^(exited|signaled|runtime-failed|lost) (-?\d+) (\d+) (\d+)$/m.exec(reported) ?? /^done (exited|signaled|runtime-failed|lost) (-?\d+)()()$/m.exec(reported);
      if (m?.[3] && (m[3] !== '0' || m[4] !== '0')) this.logger?.warn({ id, stdoutDropped: Number(m[3]), stderrDropped: Number(m[4]), keptBytes: cap }, 'exec output over the cap: only its tail is kept');
      if (m?.[1] === 'exited') return { ...result, exitCode: Number(m[2]) };
      if (m?.[1] === 'signaled') return { ...result, exitCode: 128 + Number(m[2]) };
      const why =
        m?.[1] === 'lost'
          ? `the command's exit status was lost (errno ${m[2]})`
          : parseRuntimeLog(result.stderr.subarray(-4096).toString('utf8')) || `exit status ${m?.[2] ?? child.exitCode}`;
      throw this.failure('exec', id, null, why);
    })();
  }

  /** runsc: a container's CPU and memory use as the sandbox accounts it; null if runsc gives none. */
  async runscUsage(id: string): Promise<RunscUsage | null> {
    const r = await this.run(['events', '--stats', id]);
    return r.code === 0 ? parseRunscStats(r.stdout) : null;
  }

  /** The ids of every container under this runtime's root. */
  async list(): Promise<string[]> {
    try {
      await fs.access(this.root);
    } catch {
      return [];
    }
    const r = await this.run(['list', '--quiet']);
    if (r.code !== 0) throw this.error('list', undefined, r);
    return r.stdout.split('\n').map((s) => s.trim()).filter((s) => s && s !== 'ID');
  }

  /**
   * SIGTERM, up to `timeoutMs` for the container to stop, then SIGKILL, then delete.
   * Safe to call again, or for a container that is already gone.
   */
  async stopAndDelete(id: string, timeoutMs: number): Promise<void> {
    let st = await this.state(id);
    if (st === null) return this.reapLeftovers(id);
    if (st.status === 'running' || st.status === 'created' || st.status === 'creating') {
      await this.kill(id, 'TERM');
      st = await this.waitStopped(id, timeoutMs);
      if (st !== null && st.status !== 'stopped') {
        this.logger?.debug({ id, runtime: this.name }, 'sandbox container ignored SIGTERM; killing');
        await this.kill(id, 'KILL', false);
        await this.waitStopped(id, 5_000);
      }
    }
    await this.delete(id, true);
    const after = await this.state(id);
    if (after !== null) {
      throw this.failure('delete', id, null, `container is still known after delete (status ${after.status})`);
    }
  }

  /**
   * SIGKILL and delete in one runtime call (`delete --force`), for processes with nothing
   * to flush, like the pause. Unknown ids are fine; an id still known afterwards is an error.
   */
  async forceDelete(id: string): Promise<void> {
    if (!(await this.knows(id))) return this.reapLeftovers(id);
    await this.delete(id, true);
    if (await this.knows(id)) {
      throw this.failure('delete', id, null, 'container is still known after delete --force');
    }
  }

  private async waitStopped(id: string, timeoutMs: number): Promise<OciState | null> {
    const deadline = Date.now() + Math.max(0, timeoutMs);
    for (;;) {
      const st = await this.state(id);
      if (st === null || st.status === 'stopped') return st;
      if (Date.now() >= deadline) return st;
      await sleep(Math.min(50, Math.max(1, deadline - Date.now())));
    }
  }

  /**
   * Whether the runtime keeps state for this id: runc and crun a dir `<root>/<id>`, runsc a
   * file `<root>/<id>_sandbox:<sandbox id>.state`.
   */
  private async knows(id: string): Promise<boolean> {
    if (id.includes('/') || id === '.' || id === '..') return false;
    if (this.runsc) return runscKnows(this.root, id);
    try {
      return (await fs.stat(path.join(this.root, id))).isDirectory();
    } catch {
      return false;
    }
  }

  private error(sub: string, id: string | undefined, r: RunResult): OciRuntimeError {
    const how = r.signal ? `killed by ${r.signal}` : '';
    return this.failure(sub, id, r.code, [how, r.detail].filter(Boolean).join(': '));
  }

  /** Every failure of this runtime is made here, so each one is reported to the observer. */
  private failure(sub: string, id: string | undefined, exitCode: number | null, detail: string): OciRuntimeError {
    this.observer?.runtimeFailed(this.name, sub);
    return new OciRuntimeError(this.name, sub, id, exitCode, detail);
  }

  /**
   * Runs `<bin> --root R --log L --log-format json <args>`. quiet: stdin and stdout on
   * /dev/null and stderr to a file, never a pipe: the container process inherits them,
   * and a pipe it holds open would keep us waiting. The file still catches a runtime
   * (or wrapper) that explains a failure on stderr only.
   */
  private async run(args: string[], opts: { quiet?: boolean } = {}): Promise<RunResult> {
    const base = path.join(os.tmpdir(), `corral-oci-${process.pid}-${randomBytes(6).toString('hex')}`);
    const logFile = `${base}.log`;
    const errFile = `${base}.err`;
    const errFh = opts.quiet ? await fs.open(errFile, 'w+', 0o600) : undefined;
    const full = ['--root', this.root, '--log', logFile, '--log-format', 'json', ...args];
    this.logger?.debug({ runtime: this.name, args: full }, 'oci runtime command');
    try {
      const res = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>(
        (resolve, reject) => {
          const child = spawn(this.binary, full, {
            stdio: errFh ? ['ignore', 'ignore', errFh.fd] : ['ignore', 'pipe', 'pipe'],
            detached: true,
          });
          const out: Buffer[] = [];
          const err: Buffer[] = [];
          child.stdout?.on('data', (b: Buffer) => out.push(b));
          child.stderr?.on('data', (b: Buffer) => err.push(b));
          const timer = setTimeout(() => child.kill('SIGKILL'), this.commandTimeoutMs);
          child.on('error', (e) => {
            clearTimeout(timer);
            reject(this.failure(args[0], undefined, null, `cannot run ${this.binary}: ${e.message}`));
          });
          child.on('close', (code, signal) => {
            clearTimeout(timer);
            resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8') });
          });
        },
      );
      let detail = '';
      if (res.code !== 0) {
        const logText = await fs.readFile(logFile, 'utf8').catch(() => '');
        const stderr = errFh ? await fs.readFile(errFile, 'utf8').catch(() => '') : res.stderr;
        detail = parseRuntimeLog(logText) || parseRuntimeLog(stderr) || 'the runtime gave no reason';
      }
      return { code: res.code, signal: res.signal, stdout: res.stdout, detail };
    } finally {
      await errFh?.close();
      await Promise.all([fs.rm(logFile, { force: true }), fs.rm(errFile, { force: true })]);
    }
  }
}
