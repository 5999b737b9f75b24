/**
 * Corral's own pause for pods that share a PID namespace (infra mode 'init'): started by
 * native/podpause.c with a fork instead of an OCI runtime's create + start (~85 ms with
 * runc). It is PID 1 of a new PID namespace, joins the pod's pinned network/IPC/UTS
 * namespaces, lives in the sandbox's cgroup (`<parent>/<id>` in every hierarchy, as runc
 * would place it), has no capabilities, no_new_privs, a seccomp filter and an empty
 * read-only root.
 *
 * What makes it managed: the helper writes `<pid> <starttime>` to the pidfile before the
 * pause may outlive it, and the pause is in cgroups named after the sandbox. Stop kills
 * everything in those cgroups (the pidfile's process too, if its start time still
 * matches), waits until they are empty, removes them and the pidfile. Every step is
 * idempotent, so a Stop after a crash at any point (even mid-launch) leaves nothing.
 */
import { readFileSync, rmSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import { execFile } from '../util/exec.js';
import { isErrno } from '../util/atomic.js';
import { nativeBinary } from '../util/paths.js';
import { processStartTime } from '../util/process.js';
import { parseCgroupMounts, type CgroupMount } from '../oci/exec-cgroup.js';

export const POD_INIT_HELPER = 'corral-podpause';
/** runc's default for the pause container's spec (DEFAULT_SANDBOX_CPU_SHARES). */
const SANDBOX_CPU_SHARES = '2';
const STOP_TIMEOUT_MS = 10_000;

/** What a pod's own pause leaves on the host: recorded as intent before it is started. */
export interface PodInitResources {
  /** `<pid> <starttime>`, written by the helper before the pause may outlive it. */
  pidFile: string;
  /** The sandbox's cgroup in each hierarchy; whatever is in them is the pod's pause. */
  cgroups: string[];
}

export interface PodInitSpec {
  resources: PodInitResources;
  /** An empty folder the pause mounts its empty read-only root on (in its own mount namespace). */
  rootDir: string;
  netnsPath?: string;
  ipcPath?: string;
  utsPath?: string;
  oomScoreAdj: number;
  privileged: boolean;
  uid?: number;
  gid?: number;
}

let mountsCache: CgroupMount[] | undefined;

/** The hierarchies a pause is placed in: one mount per controller set (read once: mounts do not move under a daemon). */
function cgroupMounts(): CgroupMount[] {
  if (!mountsCache) {
    const seen = new Set<string>();
    mountsCache = parseCgroupMounts(readFileSync('/proc/self/mountinfo', 'utf8')).filter((m) => {
      const key = `${m.version}:${[...m.controllers].sort().join(',')}`;
      if (m.root !== '/' || seen.has(key)) return false;
      seen.add(key);
      return true;
    });
  }
  return mountsCache;
}

/** The directories of cgroupsPath (`/<parent>/<id>`) in every hierarchy. */
export function podInitCgroups(cgroupsPath: string): string[] {
  return cgroupMounts().map((m) => path.join(m.mountPoint, cgroupsPath));
}

/** The limits runc would apply from the pause container's spec: cpu shares, and no devices unless privileged. */
function cgroupLimits(dirs: string[], privileged: boolean): string[] {
  const out: string[] = [];
  for (const [i, m] of cgroupMounts().entries()) {
    const dir = dirs[i];
    if (!dir) continue;
    if (m.version === 1 && m.controllers.includes('cpu')) out.push(`${dir}/cpu.shares=${SANDBOX_CPU_SHARES}`);
    if (m.version === 1 && m.controllers.includes('devices') && !privileged) out.push(`${dir}/devices.deny=a`);
    // cpu.weight exists only where the parent delegates the cpu controller; else skipped by the helper.
    if (m.version === 2) out.push(`${dir}/cpu.weight=1`);
  }
  return out;
}

/** Starts the pod's pause; returns its PID and start time. On failure nothing of it is left. */
export async function startPodInit(spec: PodInitSpec): Promise<{ pid: number; startTime: string }> {
  const args = ['run', '--pidfile', spec.resources.pidFile, '--root', spec.rootDir, '--oom-score-adj', String(spec.oomScoreAdj)];
  if (spec.netnsPath) args.push('--net', spec.netnsPath);
  if (spec.ipcPath) args.push('--ipc', spec.ipcPath);
  if (spec.utsPath) args.push('--uts', spec.utsPath);
  for (const dir of spec.resources.cgroups) args.push('--cgroup', dir);
  for (const set of cgroupLimits(spec.resources.cgroups, spec.privileged)) args.push('--cgroup-set', set);
  if (spec.gid !== undefined) args.push('--gid', String(spec.gid));
  if (spec.uid !== undefined) args.push('--uid', String(spec.uid));
  // No environment: the helper reads none (and the pause it leaves running gets none).
  const r = await execFile(nativeBinary(POD_INIT_HELPER), args, { timeoutMs: 30_000, env: {} });
  let reply: { pid?: number; startTime?: string; error?: string; step?: string } | undefined;
  try {
    reply = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as typeof reply;
  } catch {
    reply = undefined;
  }
  if (r.code === 0 && reply && typeof reply.pid === 'number' && reply.pid > 0 && typeof reply.startTime === 'string') {
    return { pid: reply.pid, startTime: reply.startTime };
  }
  const why = reply?.error ?? `${POD_INIT_HELPER} ${r.signal ? `killed by ${r.signal}` : `exit status ${r.code}`}: ${(r.stderr || r.stdout).trim()}`;
  throw new Error(`cannot start the pod's pause${reply?.step ? ` (${reply.step})` : ''}: ${why}`);
}

// Stop reads, kills and removes synchronously: cgroupfs, procfs and the pidfile (in the
// pod's state folder, on tmpfs by default) answer from memory in ~10 µs a call, while each of
// the ~50 thread-pool round trips a Stop made (11 cgroup v1 hierarchies) cost ~0.1 ms of CPU.
function cgroupPids(dir: string): number[] {
  try {
    const text = readFileSync(path.join(dir, 'cgroup.procs'), 'utf8');
    return text.split('\n').filter(Boolean).map(Number).filter((n) => n > 0);
  } catch (e) {
    if (isErrno(e, 'ENOENT', 'ENODEV')) return [];
    throw e;
  }
}

/** The pidfile's process, if it is still the one the helper started (not a reused PID). */
async function recordedPause(pidFile: string): Promise<number | null> {
  let text: string;
  try {
    text = readFileSync(pidFile, 'utf8');
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return null;
    throw e;
  }
  const [pid, started] = text.trim().split(' ');
  const n = Number(pid);
  if (!(n > 0) || !started) return null;
  return (await processStartTime(n)) === started ? n : null;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch (e) {
    if (!isErrno(e, 'ESRCH')) throw e;
  }
}

/**
 * Kills the pod's pause (and with it its PID namespace), waits until it is gone, removes
 * its cgroups and pidfile. Idempotent: nothing left is success.
 */
export async function stopPodInit(res: PodInitResources): Promise<void> {
  const deadline = Date.now() + STOP_TIMEOUT_MS;
  // The pause is in every one of its cgroups: the first tells who is left (the others are
  // read only to find a launcher cut short before it moved the pause into all of them).
  let cgroups = res.cgroups;
  for (let delay = 0.5; ; delay = Math.min(delay * 2, 20)) {
    const recorded = await recordedPause(res.pidFile);
    const members = cgroups.flatMap(cgroupPids);
    if (recorded === null && members.length === 0) break;
    if (recorded !== null) kill(recorded);
    for (const pid of new Set(members)) kill(pid);
    cgroups = res.cgroups.slice(0, 1);
    if (Date.now() > deadline) throw new Error(`the pod's pause (${[recorded, ...members].filter(Boolean).join(', ')}) is still alive ${STOP_TIMEOUT_MS} ms after SIGKILL`);
    await sleep(delay);
  }
  await Promise.all(res.cgroups.map((dir) => removeCgroup(dir, deadline)));
  rmSync(res.pidFile, { force: true });
  rmSync(`${res.pidFile}.tmp`, { force: true });
}

async function removeCgroup(dir: string, deadline: number): Promise<void> {
  for (let delay = 1; ; delay = Math.min(delay * 2, 20)) {
    try {
      rmdirSync(dir);
      return;
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return;
      // A killed task can linger in a v1 cgroup for a moment after it left cgroup.procs.
      if (!isErrno(e, 'EBUSY') || Date.now() > deadline) throw new Error(`cannot remove the pause's cgroup ${dir}: ${(e as Error).message}`);
      await sleep(delay);
    }
  }
}
