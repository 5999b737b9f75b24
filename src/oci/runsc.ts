/**
 * gVisor (runsc) as a runtime handler.
 *
 * Two things set runsc apart from runc/crun here:
 * 1. This runsc (Debian, 2022-12) refuses any pod network on Linux 6.x: after joining the
 *    pod's network namespace it calls it "the root namespace" because
 *    /proc/sys/net/core/rmem_default exists, and since 6.x that sysctl exists in every
 *    network namespace. So every runsc command runs under corral-runsc
 *    (native/runscwrap.c), which hides /proc/sys/net behind an empty tmpfs in a private
 *    (slave) mount namespace for runsc's processes only. Every caller, conmon included,
 *    sees one executable: a two-line wrapper script Corral writes per handler.
 * 2. runsc's `delete --force` removes its state but can leave the sandbox (runsc-sandbox)
 *    and gofer (runsc-gofer) processes running; they are found by their command line
 *    (they carry the container ID and the handler's --root) and killed.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { RuntimeHandlerConfig } from '../config/config.js';
import { findExecutable, nativeBinary } from '../util/paths.js';
import { execFile } from '../util/exec.js';

/** A handler whose binary is runsc (by name: `runsc`, `/usr/bin/runsc`, `runsc-2022`...). */
export function isRunscHandler(handler: Pick<RuntimeHandlerConfig, 'path'>): boolean {
  return /^runsc/.test(path.basename(handler.path));
}

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** Pure: the wrapper script that runs `runscPath` through corral-runsc. */
export function runscWrapperScript(helperPath: string, runscPath: string, handlerName: string): string {
  return [
    '#!/bin/sh',
    `# Written by corral for runtime handler "${handlerName}": runsc with /proc/sys/net hidden (see src/oci/runsc.ts).`,
    `exec ${shellQuote(helperPath)} ${shellQuote(runscPath)} "$@"`,
    '',
  ].join('\n');
}

/**
 * Writes the handler's wrapper into `dir` (replaced atomically) and returns its path. runsc
 * is resolved in PATH now, as conmon looks up nothing; a runsc that is not installed stays
 * a bare name, and every call then fails saying so (corral doctor says it first).
 */
export async function writeRunscWrapper(handler: RuntimeHandlerConfig, dir: string): Promise<string> {
  const runsc = (await findExecutable(handler.path)) ?? handler.path;
  await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  const file = path.join(dir, handler.name);
  const tmp = `${file}.tmp-${process.pid}`;
  await fs.writeFile(tmp, runscWrapperScript(nativeBinary('corral-runsc'), runsc, handler.name), { mode: 0o755 });
  await fs.rename(tmp, file);
  return file;
}

/** Whether runsc has state for container `id` under `root` (a file `<id>_sandbox:<sandbox id>.state`). */
export async function runscKnows(root: string, id: string): Promise<boolean> {
  const names = await fs.readdir(root).catch(() => [] as string[]);
  return names.some((n) => n.startsWith(`${id}_sandbox:`) && n.endsWith('.state'));
}

/** Capabilities newer than this runsc (2022-12): it refuses a spec naming them ("unknown capability"). */
export const RUNSC_UNKNOWN_CAPABILITIES: readonly string[] = ['CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE'];

/** The capabilities a handler's containers may be given: for runsc, without those it does not know. */
export function capabilitiesForHandler(handler: Pick<RuntimeHandlerConfig, 'path'>, available: readonly string[]): readonly string[] {
  return isRunscHandler(handler) ? available.filter((c) => !RUNSC_UNKNOWN_CAPABILITIES.includes(c)) : available;
}

/** What `runsc events --stats` says of a container's use (gVisor accounts it inside the sandbox). */
export interface RunscUsage {
  cpuUsageNs: bigint | null;
  memoryUsageBytes: bigint | null;
}

/** Pure: the CPU and memory use in `runsc events --stats` output (runc's event format); null if unreadable. */
export function parseRunscStats(stdout: string): RunscUsage | null {
  let ev: { type?: string; data?: { cpu?: { usage?: { total?: unknown } }; memory?: { usage?: { usage?: unknown } } } };
  try {
    ev = JSON.parse(stdout.trim().split('\n').pop() ?? '') as typeof ev;
  } catch {
    return null;
  }
  if (ev?.type !== 'stats' || !ev.data) return null;
  const big = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) && v >= 0 ? BigInt(Math.round(v)) : null);
  return { cpuUsageNs: big(ev.data.cpu?.usage?.total), memoryUsageBytes: big(ev.data.memory?.usage?.usage) };
}

/** Where corral-runsc records which process holds a pod container's stdio until its `start`. */
export function runscStdioRecord(root: string, id: string): string {
  return path.join(root, `${id}.corral-stdio`);
}

/**
 * The OCI process for `runsc exec --process` of `args` in container `id`: the container's own
 * user, groups, env, cwd and capabilities (from runsc's state file, which holds its spec),
 * never a terminal. undefined when the state cannot be read (runsc then says why itself).
 */
export async function runscExecProcess(root: string, id: string, args: string[]): Promise<Record<string, unknown> | undefined> {
  const names = await fs.readdir(root).catch(() => [] as string[]);
  const file = names.find((n) => n.startsWith(`${id}_sandbox:`) && n.endsWith('.state'));
  if (!file) return undefined;
  try {
    const state = JSON.parse(await fs.readFile(path.join(root, file), 'utf8')) as { spec?: { process?: Record<string, unknown> } };
    return execProcessFrom(state.spec?.process, args);
  } catch {
    return undefined;
  }
}

/** Pure: an exec's process from the container's spec process (only what an exec inherits). */
export function execProcessFrom(proc: Record<string, unknown> | undefined, args: string[]): Record<string, unknown> | undefined {
  if (!proc) return undefined;
  const out: Record<string, unknown> = { terminal: false, args, cwd: proc.cwd ?? '/', env: proc.env ?? [], user: proc.user ?? { uid: 0, gid: 0 } };
  if (proc.capabilities) out.capabilities = proc.capabilities;
  if (proc.noNewPrivileges !== undefined) out.noNewPrivileges = proc.noNewPrivileges;
  return out;
}

/** Pure: whether a process's argv (NUL-split /proc/PID/cmdline) is runsc's sandbox or gofer for `id` under `root`. */
export function isRunscProcessOf(argv: string[], root: string, id: string): boolean {
  if (argv.length === 0) return false;
  const name = path.basename(argv[0]!);
  if (!name.startsWith('runsc') && name !== 'corral-runsc') return false;
  const hasRoot = argv.some((a, i) => a === `--root=${root}` || a === `-root=${root}` || ((a === '--root' || a === '-root') && argv[i + 1] === root));
  if (!hasRoot) return false;
  // The ID is the last argument of `boot` and `gofer`, or part of the bundle/state path arguments.
  return argv.some((a) => a === id || a.endsWith(`/${id}`) || a.includes(`/${id}/`) || a.endsWith(`=${id}`));
}

/** PIDs of every runsc process (sandbox, gofer, exec waiter) of container `id` under `root`. */
export async function runscProcessesOf(root: string, id: string): Promise<number[]> {
  const out: number[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    const cmdline = await fs.readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (!cmdline) continue;
    if (isRunscProcessOf(cmdline.split('\0').filter((a, i, all) => a !== '' || i < all.length - 1), root, id)) out.push(pid);
  }
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * SIGKILLs every runsc process of `id` under `root` and waits (up to waitMs) until none is
 * left. Returns the PIDs still alive after that (empty: nothing of the container runs).
 */
export async function killRunscProcesses(root: string, id: string, waitMs = 5_000): Promise<number[]> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const pids = await runscProcessesOf(root, id);
    // A zombie has ended; its parent (conmon, or init) reaps it.
    const alive = (await Promise.all(pids.map(async (p) => ((await isZombie(p)) ? undefined : p)))).filter((p): p is number => p !== undefined);
    if (alive.length === 0) return [];
    for (const p of alive) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        /* gone meanwhile */
      }
    }
    if (Date.now() >= deadline) return alive;
    await sleep(50);
  }
}

async function isZombie(pid: number): Promise<boolean> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (!stat) return true;
  return /^\d+ \(.*\) Z /s.test(stat);
}

/**
 * Whether this kernel makes the runsc root-namespace check misfire: true when a fresh
 * network namespace has /proc/sys/net/core/rmem_default (Linux 6.x). Needs `unshare`.
 */
export async function netnsHasRmemDefault(): Promise<boolean> {
  const r = await execFile('unshare', ['--net', 'sh', '-c', 'test -e /proc/sys/net/core/rmem_default'], { timeoutMs: 10_000 });
  if (r.code !== 0 && r.code !== 1) throw new Error(`unshare --net failed: ${(r.stderr || r.stdout).trim() || `exit status ${r.code}`}`);
  return r.code === 0;
}
