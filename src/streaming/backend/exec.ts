/**
 * Streaming exec: the OCI runtime's `exec --detach` under corral-streamhelper (see
 * native/streamhelper.c), in an exec cgroup of its own (src/oci/exec-cgroup.ts).
 *
 * - Without a TTY the command gets the helper's stdio, which are the daemon's pipes: the
 *   kernel's pipe buffers give backpressure both ways, the session's stdin end closes the
 *   command's stdin, and nothing sits in between. The helper is the command's subreaper and
 *   reports its exit status; output still arriving after that is read for EXEC_DRAIN_MS
 *   (a background descendant may hold the pipes), as ExecSync does.
 * - With a TTY the runtime passes the pty master to the helper over a console socket; the
 *   helper copies between it and its stdio and applies resize events (a control pipe).
 * - The client going away (io.signal) kills everything in the exec cgroup (setsid-ed or
 *   re-parented descendants included) and then the helper and runtime.
 * - gVisor (runsc): the command runs inside the sandbox's kernel, so there is no host cgroup
 *   to put it in. It runs through the handler's wrapper (corral-runsc) with `--process`
 *   (the container's user, groups, env, cwd; `terminal` for a TTY, as runsc has no --tty)
 *   and `--internal-pid-file`; the client going away stops and then kills its process tree
 *   inside the sandbox (src/streaming/backend/runsc-exec.ts).
 * Exit codes are the command's, 128+n when it died of signal n (137 for SIGKILL).
 */
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Writable } from 'node:stream';
import { ExecCgroup } from '../../oci/exec-cgroup.js';
import { EXEC_DRAIN_MS, parseRuntimeLog } from '../../oci/runtime.js';
import { nativeBinary } from '../../util/paths.js';
import type { Logger } from '../../util/log.js';
import type { StreamIO } from '../runtime.js';
import { runscExecProcess } from '../../oci/runsc.js';
import { connectHelper, killGroup, readAll, sleep, whenAborted } from './pipes.js';
import { killExecTreeInSandbox } from './runsc-exec.js';

export interface RuntimeBinary {
  name: string;
  binary: string;
  /** The runtime's --root. */
  root: string;
  /** gVisor's runsc (through its wrapper): no exec cgroup, a --process file, kills inside the sandbox. */
  runsc?: boolean;
}

export interface ExecTarget {
  id: string;
  /** Host PID of the container's init: the exec cgroup goes under its cgroups. */
  pid: number;
  runtime: RuntimeBinary;
  /** The container's OCI bundle config.json (its process env, for a TTY exec's TERM). */
  bundleConfig: string;
}

/** How long the helper may take to report after the exec cgroup was emptied on abort. */
const ABORT_GRACE_MS = 2_000;
const KILL_WAIT_MS = 5_000;

/** Why a streaming exec could not run the command at all (not an exit code). */
export class StreamExecError extends Error {
  constructor(containerId: string, runtime: string, detail: string) {
    super(`${runtime} exec in container ${containerId}: ${detail}`);
    this.name = 'StreamExecError';
  }
}

/** Pure: the helper's report line → the exit code, or the reason there is none. */
export function exitCodeFromReport(report: string): { code: number } | { failure: string } {
  const m = /^(exited|signaled|runtime-failed|lost) (-?\d+)$/m.exec(report);
  if (!m) return { failure: report.trim() ? `unexpected helper report: ${report.trim().slice(0, 200)}` : 'the helper ended without a report' };
  const value = Number(m[2]);
  if (m[1] === 'exited') return { code: value & 0xff };
  if (m[1] === 'signaled') return { code: 128 + value };
  if (m[1] === 'runtime-failed') return { failure: `the runtime failed (exit status ${value})` };
  return { failure: `the command's exit status was lost (errno ${value})` };
}

/** Pure: the container's env with TERM=xterm (as containerd sets it for a TTY exec) unless it has a TERM. */
export function withTerm(env: readonly string[]): string[] {
  return env.some((e) => e.startsWith('TERM=')) ? [...env] : [...env, 'TERM=xterm'];
}

async function ttyEnv(bundleConfig: string): Promise<string[]> {
  let env: unknown;
  try {
    env = (JSON.parse(await fs.readFile(bundleConfig, 'utf8')) as { process?: { env?: unknown } }).process?.env;
  } catch (e) {
    throw new Error(`reading the container's process env from ${bundleConfig}: ${(e as Error).message}`);
  }
  return withTerm(Array.isArray(env) ? env.filter((e): e is string => typeof e === 'string') : []);
}

export async function execInContainer(t: ExecTarget, cmd: string[], io: StreamIO, logger?: Logger): Promise<number> {
  if (io.signal.aborted) throw new StreamExecError(t.id, t.runtime.name, 'the client went away before the command started');
  if (t.runtime.runsc) return execInRunsc(t, cmd, io);
  let cg: ExecCgroup;
  try {
    cg = await ExecCgroup.create(t.pid, t.id);
  } catch (e) {
    throw new StreamExecError(t.id, t.runtime.name, (e as Error).message);
  }
  let tmp: string | undefined;
  try {
    // Inside the try: a failing mkdtemp must not leave the exec cgroup behind.
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-stream-'));
    return await runHelper(t, cg, tmp, cmd, io);
  } finally {
    if (!(await cg.remove())) logger?.debug({ id: t.id, cgroup: cg.name }, 'exec left processes running; its cgroup is removed once they end');
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  }
}

/** gVisor: no host cgroup; the command as a process file, killed inside the sandbox on abort. */
async function execInRunsc(t: ExecTarget, cmd: string[], io: StreamIO): Promise<number> {
  const proc = await runscExecProcess(t.runtime.root, t.id, cmd);
  if (!proc) throw new StreamExecError(t.id, t.runtime.name, `runsc has no state for the container under ${t.runtime.root}`);
  if (io.tty) {
    proc.terminal = true;
    proc.env = withTerm(Array.isArray(proc.env) ? proc.env.filter((e): e is string => typeof e === 'string') : []);
  }
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-stream-'));
  try {
    const processFile = path.join(tmp, 'process.json');
    const internalPidFile = path.join(tmp, 'internal-pid');
    await fs.writeFile(processFile, JSON.stringify(proc), { mode: 0o600 });
    const placement = ['--internal-pid-file', internalPidFile];
    const onAbort = async (helperExited: Promise<unknown>) => {
      // A client that leaves while runsc is still starting the command: wait for its sandbox
      // PID (or for runsc to give up), as killing runsc on the host would not end it in there.
      let over = false;
      void helperExited.then(() => (over = true));
      const deadline = Date.now() + KILL_WAIT_MS;
      for (;;) {
        const pid = Number((await fs.readFile(internalPidFile, 'utf8').catch(() => '')).trim());
        if (pid > 0) return killExecTreeInSandbox(t.runtime, t.id, pid, KILL_WAIT_MS);
        if (over || Date.now() >= deadline) return;
        await sleep(50);
      }
    };
    return await runExecHelper(t, tmp, placement, ['--process', processFile, t.id], io, onAbort);
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
}

/** runc/crun: the command in the exec cgroup, which is emptied when the client goes away. */
async function runHelper(t: ExecTarget, cg: ExecCgroup, tmp: string, cmd: string[], io: StreamIO): Promise<number> {
  let command = [t.id, ...cmd];
  if (io.tty) {
    // crun's --env replaces the process env (runc's adds to it): give the whole env, with TERM.
    const env = await ttyEnv(t.bundleConfig).catch((e: Error) => {
      throw new StreamExecError(t.id, t.runtime.name, e.message);
    });
    command = ['--tty', ...env.flatMap((e) => ['--env', e]), ...command];
  }
  return runExecHelper(t, tmp, ['--cgroup', cg.name], command, io, () => cg.killAll(KILL_WAIT_MS));
}

/**
 * placement: where the command's processes go (runc/crun: --cgroup; runsc: --internal-pid-file);
 * command: the rest of `exec`'s arguments (the container ID and command, or --process and the ID);
 * killTree: kills everything the command started, when the client goes away.
 */
async function runExecHelper(t: ExecTarget, tmp: string, placement: string[], command: string[], io: StreamIO, killTree: (helperExited: Promise<unknown>) => Promise<unknown>): Promise<number> {
  const pidFile = path.join(tmp, 'pid');
  const logFile = path.join(tmp, 'runtime.log');
  const consoleSocket = path.join(tmp, 'console');
  const runtimeArgs = ['--root', t.runtime.root, '--log', logFile, '--log-format', 'json', 'exec', '--detach', '--pid-file', pidFile, ...placement];
  if (io.tty) runtimeArgs.push('--console-socket', consoleSocket);
  runtimeArgs.push(...command);
  const child = spawn(nativeBinary('corral-streamhelper'), ['exec', pidFile, io.tty ? consoleSocket : '-', t.runtime.binary, ...runtimeArgs], {
    stdio: [
      io.stdin ? 'pipe' : 'ignore',
      io.stdout ? 'pipe' : 'ignore',
      // With a TTY all output is on stdout; stderr then carries the helper's own complaints.
      io.tty || io.stderr ? 'pipe' : 'ignore',
      'pipe',
      io.tty ? 'pipe' : 'ignore',
    ],
    detached: true,
  });
  const { exit, report, stopStdin, outputDone } = connectHelper(child, io);
  // With a TTY the helper's stderr is not the command's: it says why the helper failed.
  const helperErr: Promise<string> = io.tty ? readAll(child.stderr) : Promise.resolve('');

  let sessionOver = false;
  if (io.tty && io.resize) {
    const control = child.stdio[4] as Writable;
    control.on('error', () => {});
    void (async () => {
      try {
        for await (const size of io.resize!) {
          if (sessionOver) break;
          // uint16 on the wire; 0 means "unknown" to the kernel, so it is skipped as containerd does.
          if (!(size.width >= 1 && size.height >= 1 && size.width <= 65535 && size.height <= 65535)) continue;
          control.write(`${Math.floor(size.height)} ${Math.floor(size.width)}\n`);
        }
      } catch {
        /* the resize stream failed: the session goes on at its last size */
      }
    })();
  }

  const abort = whenAborted(io.signal);
  try {
    const first = await Promise.race([exit.then(() => 'exit' as const), abort.promise.then(() => 'abort' as const)]);
    if (first === 'abort') {
      // The tree first; the helper then reports the command's SIGKILL and exits.
      stopStdin();
      await killTree(exit);
      if (!(await Promise.race([exit.then(() => true), sleep(ABORT_GRACE_MS).then(() => false)]))) killGroup(child);
      await exit;
    }
    const { spawnError } = await exit;
    if (spawnError) throw new StreamExecError(t.id, t.runtime.name, `cannot run corral-streamhelper: ${spawnError.message}`);
    // Output a background descendant still writes is read for a bounded time, then cut.
    const drained = await Promise.race([outputDone.then(() => true), sleep(EXEC_DRAIN_MS).then(() => false)]);
    if (!drained) {
      child.stdout?.destroy();
      child.stderr?.destroy();
      await outputDone;
    }
    const verdict = exitCodeFromReport(await report);
    if ('code' in verdict) return verdict.code;
    if (io.signal.aborted) return 137;
    const detail = parseRuntimeLog(await fs.readFile(logFile, 'utf8').catch(() => '')) || (await helperErr).trim() || verdict.failure;
    throw new StreamExecError(t.id, t.runtime.name, detail);
  } finally {
    sessionOver = true;
    abort.dispose();
    stopStdin();
    (child.stdio[4] as Writable | null)?.destroy();
    if (child.exitCode === null && child.signalCode === null) killGroup(child);
  }
}
