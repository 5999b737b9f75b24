/**
 * gVisor: ending a streaming exec whose client went away. The command runs inside the
 * sandbox's kernel, so no host cgroup holds it; its process tree is found with `runsc ps`
 * (its table: sandbox PIDs and PPIDs) and ended with `runsc kill --pid`. The tree is stopped first
 * (SIGSTOP, top-down, until no new member appears), so that no process forks or is
 * re-parented away from the tree while it is being killed; then every member gets SIGKILL.
 * A process the command had already detached (double fork, its parent gone) before the
 * client left belongs to the container's init and is not found here.
 */
import { execFile } from '../../util/exec.js';
import { sleep } from './pipes.js';
import type { RuntimeBinary } from './exec.js';

export interface SandboxProcess {
  pid: number;
  ppid: number;
  cmd: string;
}

/**
 * Pure: `runsc ps` table output (UID PID PPID C STIME TIME CMD; this runsc's json format lists
 * PIDs only) → PIDs, PPIDs and command names; null if it is not that table.
 */
export function parseRunscPs(stdout: string): SandboxProcess[] | null {
  const lines = stdout.split('\n').filter((l) => l.trim() !== '');
  if (lines.length === 0) return null;
  const header = lines[0]!.trim().split(/\s+/);
  const pidAt = header.indexOf('PID');
  const ppidAt = header.indexOf('PPID');
  const cmdAt = header.indexOf('CMD');
  if (pidAt < 0 || ppidAt < 0 || cmdAt < 0) return null;
  const out: SandboxProcess[] = [];
  for (const line of lines.slice(1)) {
    const f = line.trim().split(/\s+/);
    const pid = Number(f[pidAt]);
    const ppid = Number(f[ppidAt]);
    if (Number.isInteger(pid) && pid > 0 && Number.isInteger(ppid)) out.push({ pid, ppid, cmd: f.slice(cmdAt).join(' ') });
  }
  return out;
}

/** Pure: `root` and its descendants among `procs`, parents before children. */
export function processTree(procs: readonly Pick<SandboxProcess, 'pid' | 'ppid'>[], root: number): number[] {
  if (!procs.some((p) => p.pid === root)) return [];
  const out = [root];
  for (let i = 0; i < out.length; i++) {
    for (const p of procs) if (p.ppid === out[i] && p.pid !== root && !out.includes(p.pid)) out.push(p.pid);
  }
  return out;
}

async function sandboxProcesses(rt: RuntimeBinary, id: string): Promise<SandboxProcess[] | null> {
  const r = await execFile(rt.binary, ['--root', rt.root, 'ps', id], { timeoutMs: 10_000 });
  return r.code === 0 ? parseRunscPs(r.stdout) : null;
}

async function signal(rt: RuntimeBinary, id: string, pids: readonly number[], sig: string): Promise<void> {
  // One runsc call per process: each is a short round trip to the sandbox.
  for (const pid of pids) await execFile(rt.binary, ['--root', rt.root, 'kill', '--pid', String(pid), id, sig], { timeoutMs: 10_000 });
}

/**
 * SIGKILLs the exec'd command `pid` (a sandbox PID) and its descendants inside container
 * `id`, and waits up to waitMs until none is left. Returns the sandbox PIDs still there.
 */
export async function killExecTreeInSandbox(rt: RuntimeBinary, id: string, pid: number, waitMs: number): Promise<number[]> {
  const deadline = Date.now() + waitMs;
  const stopped = new Set<number>();
  // Stop until the tree stops growing (a stopped process cannot fork).
  for (let round = 0; round < 10; round++) {
    const procs = await sandboxProcesses(rt, id);
    if (!procs) break;
    const fresh = processTree(procs, pid).filter((p) => !stopped.has(p));
    if (fresh.length === 0) break;
    await signal(rt, id, fresh, 'STOP');
    fresh.forEach((p) => stopped.add(p));
  }
  await signal(rt, id, [...stopped], 'KILL');
  for (;;) {
    const procs = (await sandboxProcesses(rt, id)) ?? [];
    const left = [...stopped].filter((p) => procs.some((q) => q.pid === p));
    // Anything the tree still has (one that escaped the stop rounds) is killed too.
    const tree = processTree(procs, pid);
    if (left.length === 0 && tree.length === 0) return [];
    if (Date.now() >= deadline) return [...new Set([...left, ...tree])];
    await signal(rt, id, tree.filter((p) => !stopped.has(p)), 'KILL');
    tree.forEach((p) => stopped.add(p));
    await sleep(100);
  }
}
