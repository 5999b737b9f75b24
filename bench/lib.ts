/**
 * Shared pieces of the benchmarks: statistics, RSS and CPU readings (a daemon with its
 * corral-spawner), a cleanup registry that also runs on Ctrl-C and the bench dir, kubelet-like
 * pod configs, image content, a concurrency pool and table printing.
 * Nothing here asserts: the benchmark only measures and prints.
 */
import { execFile } from 'node:child_process';
import { promises as fs, readFileSync, readdirSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { execChecked } from '../src/util/exec.js';
import type { TarEntry } from '../test/helpers/test-images.js';

// ---------------------------------------------------------------- statistics

/** Nearest-rank percentile (p in 0..100) of the values; NaN when there are none. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1]!;
}

export const p50 = (v: number[]) => percentile(v, 50);
export const p95 = (v: number[]) => percentile(v, 95);

export function fmtMs(v: number): string {
  if (!Number.isFinite(v)) return '-';
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

export function fmtNum(v: number, digits = 1): string {
  return Number.isFinite(v) ? v.toFixed(digits) : '-';
}

export function fmtMiB(kib: number): string {
  return Number.isFinite(kib) ? `${(kib / 1024).toFixed(1)} MiB` : '-';
}

/** a / b as "1.23x", or "-" when either is missing. */
export function ratio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? `${(a / b).toFixed(2)}x` : '-';
}

/** Prints rows as an aligned text table (first row is the header; the first leftCols columns are left-aligned). */
export function printTable(rows: string[][], leftCols = 1, indent = '  '): void {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  rows.forEach((r, n) => {
    console.log(indent + r.map((c, i) => (i < leftCols ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
    if (n === 0) console.log(indent + widths.map((w) => '-'.repeat(w)).join('  '));
  });
}

// ---------------------------------------------------------------- RSS

/** VmRSS of a process in KiB (0 if it is gone). */
export function rssKiB(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Proportional set size of a process in KiB (shared pages split among their users; 0 if it is gone). */
export function pssKiB(pid: number): number {
  try {
    const m = /^Pss:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** PIDs whose command line contains every one of the strings (reads /proc). */
export function pidsWithCmdline(...needles: string[]): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    let cmd: string;
    try {
      cmd = readFileSync(`/proc/${e}/cmdline`, 'utf8').replace(/\0/g, ' ');
    } catch {
      continue;
    }
    if (needles.every((n) => cmd.includes(n))) out.push(Number(e));
  }
  return out;
}

// ---------------------------------------------------------------- CPU

/** Clock ticks per second of /proc/<pid>/stat's times (USER_HZ). */
export const CLK_TCK = 100;

/** CPU of one process from /proc/<pid>/stat, in ms: its own (all threads), and of the children it reaped; its minor faults. Throws if it is gone. */
export function procCpu(pid: number): { self: number; children: number; minflt: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command (which may contain spaces): state is field 3, minflt 10, utime 14 ... cstime 17.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const n = (field: number) => Number(f[field - 3]);
  return { self: ((n(14) + n(15)) * 1000) / CLK_TCK, children: ((n(16) + n(17)) * 1000) / CLK_TCK, minflt: n(10) };
}

/**
 * The whole machine's CPU so far, from /proc/stat's first line, in ms: `busy` is every
 * core's user, nice, system, irq and softirq time (kernel threads, RCU and work queues
 * included, which no process's own figures show); `steal` is time the hypervisor gave to
 * other guests while this one had work, i.e. capacity the machine did not have.
 */
export function machineCpu(): { busy: number; steal: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  return { busy: ((user + nice + system + irq + softirq) * 1000) / CLK_TCK, steal: (steal * 1000) / CLK_TCK };
}

/**
 * The live corral-spawner children of a daemon: the long-lived helper that runs the
 * daemon's programs (CNI plugins, corral-unpack, ...) and reaps them, so the daemon's own
 * cutime misses them.
 */
export function spawnerPids(pid: number): number[] {
  let kids: string[] = [];
  try {
    kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
  } catch {
    return [];
  }
  return kids.map(Number).filter((k) => {
    try {
      return readFileSync(`/proc/${k}/comm`, 'utf8').trim() === 'corral-spawner';
    } catch {
      return false; // it exited
    }
  });
}

/**
 * A reading of a Corral daemon with its corral-spawner added in: `read` of the daemon, plus
 * `read` of each live spawner folded in by `add` (a spawner that exits meanwhile is skipped).
 */
export function withSpawners<T>(pid: number, read: (pid: number) => T, add: (total: T, spawner: T) => void): T {
  const total = read(pid);
  for (const k of spawnerPids(pid)) {
    try {
      add(total, read(k));
    } catch {
      // it exited
    }
  }
  return total;
}

/**
 * A Corral daemon's CPU in ms, counting its corral-spawner as part of it: self is the
 * daemon's and the spawner's own CPU, children what either reaped (the programs they ran).
 */
export function daemonCpu(pid: number): { self: number; children: number; minflt: number } {
  return withSpawners(pid, procCpu, (total, h) => {
    total.self += h.self;
    total.children += h.children;
  });
}

/**
 * Samples the RSS of a main process (and optionally of helper processes, e.g.
 * containerd's shims, re-discovered every 250 ms) every 50 ms and keeps the peaks.
 */
export class RssSampler {
  peakMain = 0;
  peakHelpers = 0;
  peakTotal = 0;
  private timer: NodeJS.Timeout | undefined;
  private helpers: number[] = [];
  private ticks = 0;

  constructor(private readonly mainPid: number, private readonly findHelpers?: () => number[]) {}

  start(): this {
    this.sample();
    this.timer = setInterval(() => this.sample(), 50);
    return this;
  }

  stop(): this {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sample();
    return this;
  }

  private sample(): void {
    if (this.findHelpers && this.ticks++ % 5 === 0) this.helpers = this.findHelpers();
    const main = rssKiB(this.mainPid);
    const helpers = this.helpers.reduce((s, p) => s + rssKiB(p), 0);
    this.peakMain = Math.max(this.peakMain, main);
    this.peakHelpers = Math.max(this.peakHelpers, helpers);
    this.peakTotal = Math.max(this.peakTotal, main + helpers);
  }
}

// ---------------------------------------------------------------- cleanup

type Cleanup = { what: string; fn: () => Promise<void> };
const cleanups: Cleanup[] = [];
let aborted = false;
let cleaningUp: Promise<void> | undefined;
/** Work items of pool() still running: cleanup waits for them, so nothing is created behind its back. */
let inflight = 0;

/** Registers something to undo at the end (run in reverse order of registration). */
export function onCleanup(what: string, fn: () => Promise<void>): void {
  cleanups.push({ what, fn });
}

/**
 * A fresh /run/corral-bench-<tag> for everything a run makes, removed at the end (retried:
 * after Ctrl-C a floor or helper may still be making a file or two in there).
 */
export async function makeBenchDir(): Promise<{ tag: string; dir: string }> {
  const tag = randomBytes(3).toString('hex');
  const dir = `/run/corral-bench-${tag}`;
  await fs.mkdir(dir, { recursive: true });
  onCleanup('bench dir', () => fs.rm(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 }));
  return { tag, dir };
}

/**
 * Mounts a tmpfs on `dir` (made if missing), for a daemon's state dir: on a systemd host
 * /run is a tmpfs, on this VM it is part of the root ext4, which has no journal, so each new
 * inode there skips every inode freed in the last 30 s (ext4's recently_deleted): a cost a
 * daemon's volatile files would not meet on the hosts it runs on. The daemons' cleanups
 * unmount every mount under their folder.
 */
export async function mountTmpfs(dir: string): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  await execChecked('mount', ['-t', 'tmpfs', '-o', 'mode=0711', 'corral-bench-state', dir]);
}

/** True once Ctrl-C (or SIGTERM) arrived: long loops stop starting new work. */
export function isAborted(): boolean {
  return aborted;
}

/** Runs every registered cleanup once, in reverse; failures are printed, never thrown. */
export function runCleanups(): Promise<void> {
  cleaningUp ??= (async () => {
    const deadline = Date.now() + 120_000;
    while (inflight > 0 && Date.now() < deadline) await sleep(100);
    while (cleanups.length > 0) {
      const c = cleanups.pop()!;
      try {
        await c.fn();
      } catch (e) {
        console.error(`cleanup "${c.what}" failed: ${(e as Error).message}`);
      }
    }
  })();
  return cleaningUp;
}

/**
 * On SIGINT/SIGTERM/SIGHUP, or an error nothing caught: stop starting work, clean
 * everything up, exit. A closed stdout (`| head`) must not kill the process before
 * cleanup either, so write errors on stdout/stderr are ignored.
 */
export function installSignalHandlers(): void {
  const abort = (why: string, code: number) => {
    if (aborted) {
      console.error(`\n${why} again: cleanup is still running, please wait`);
      return;
    }
    aborted = true;
    console.error(`\n${why}: cleaning up what the benchmark started ...`);
    void runCleanups().finally(() => process.exit(code));
  };
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => abort(sig, 130));
  process.on('uncaughtException', (e) => abort(`uncaught error: ${e.stack ?? e}`, 1));
  process.on('unhandledRejection', (e) => abort(`unhandled rejection: ${(e as Error)?.stack ?? e}`, 1));
  process.stdout.on('error', () => {});
  process.stderr.on('error', () => {});
}

/**
 * Runs a benchmark's main: a failure is printed and makes the exit code 1, then everything
 * registered is cleaned up (unless Ctrl-C already started that) and the veth interfaces
 * left on the host are counted, so a leak shows in the output.
 */
export function runBench(name: string, main: () => Promise<void>): void {
  main()
    .catch((e) => {
      if (isAborted()) return; // a call cut off by the cleanup after Ctrl-C
      process.exitCode = 1;
      console.error(`${name} failed: ${(e as Error)?.stack ?? errMessage(e)}`);
    })
    .finally(async () => {
      if (isAborted()) return; // the signal handler is cleaning up
      console.log('\ncleaning up ...');
      await runCleanups();
      const links = await new Promise<string>((resolve) => execFile('ip', ['-o', 'link', 'show', 'type', 'veth'], (_e, out) => resolve(String(out ?? ''))));
      console.log(`done; veth interfaces left on the host: ${links.split('\n').filter(Boolean).length}`);
    });
}

// ---------------------------------------------------------------- pods

export type PidMode = 'CONTAINER' | 'POD';

let podCounter = 0;

/** A pod sandbox config shaped like kubelet's (no cgroup parent, no port mappings). */
export function kubeletPodConfig(namespace: string, logRoot: string, pid: PidMode): any {
  const n = ++podCounter;
  const name = `bench-${n}-${randomBytes(3).toString('hex')}`;
  const uid = `${randomBytes(4).toString('hex')}-${randomBytes(2).toString('hex')}-${randomBytes(2).toString('hex')}-${randomBytes(6).toString('hex')}`;
  return {
    metadata: { name, namespace, uid, attempt: 0 },
    hostname: name,
    logDirectory: `${logRoot}/${namespace}_${name}_${uid}`,
    dnsConfig: { servers: ['10.96.0.10'], searches: [`${namespace}.svc.cluster.local`, 'svc.cluster.local', 'cluster.local'], options: ['ndots:5'] },
    portMappings: [],
    labels: { 'io.kubernetes.pod.name': name, 'io.kubernetes.pod.namespace': namespace, 'io.kubernetes.pod.uid': uid, app: 'podbench' },
    annotations: { 'kubernetes.io/config.seen': new Date().toISOString(), 'kubernetes.io/config.source': 'api' },
    linux: {
      securityContext: { namespaceOptions: { network: 'POD', pid, ipc: 'POD' } },
    },
  };
}

/** Runs fn over the items with at most `concurrency` in flight; stops starting new ones once aborted. */
export async function pool<T>(items: T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (!aborted) {
      const i = next++;
      if (i >= items.length) return;
      inflight++;
      try {
        await fn(items[i]!, i);
      } finally {
        inflight--;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
}

/** Times an async call in milliseconds. */
export async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function errMessage(e: unknown): string {
  const err = e as { details?: string; message?: string };
  return err?.details || err?.message || String(e);
}

// ---------------------------------------------------------------- flags

/**
 * The benchmark's flags parsed with `config` (which declares `help`): a bad flag prints the
 * error and `usage` and exits 2, --help prints `usage` and exits 0.
 */
export function parseBenchFlags<T extends ParseArgsConfig>(usage: string, config: T): ReturnType<typeof parseArgs<T>>['values'] {
  let values: ReturnType<typeof parseArgs<T>>['values'];
  try {
    values = parseArgs(config).values;
  } catch (e) {
    console.error(`${(e as Error).message}\n${usage}`);
    process.exit(2);
  }
  if ((values as { help?: boolean }).help) {
    console.log(usage);
    process.exit(0);
  }
  return values;
}

// ---------------------------------------------------------------- image content

/** Deterministic bytes gzip shrinks about 2:1: xorshift noise and a pattern, alternating by 512 bytes. */
export function compressibleBytes(seed: number, n: number): Buffer {
  const out = Buffer.alloc(n);
  let x = ((seed + 1) * 2654435761) >>> 0 || 1;
  for (let block = 0; block * 512 < n; block++) {
    const start = block * 512;
    const end = Math.min(n, start + 512);
    if (block & 1) {
      for (let i = start; i < end; i++) out[i] = (i * 7 + seed) & 0x3f;
      continue;
    }
    for (let i = start; i < end; i += 4) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      for (let k = 0; k < 4 && i + k < end; k++) out[i + k] = (x >>> (8 * k)) & 0xff;
    }
  }
  return out;
}

/** `count` files of 1–8 KiB under `base`, spread over `dirs` directories (every fifth one executable). */
export function smallFileEntries(base: string, seed: number, count: number, dirs: number): TarEntry[] {
  const entries: TarEntry[] = [{ path: `${base}/`, type: 'directory' }];
  for (let d = 0; d < dirs; d++) entries.push({ path: `${base}/d${d}/`, type: 'directory' });
  for (let f = 0; f < count; f++) {
    const size = 1024 + (((f * 2654435761 + seed * 40503) >>> 0) % (7 * 1024));
    entries.push({ path: `${base}/d${f % dirs}/f${f}`, content: compressibleBytes(seed * 100_000 + f, size), mode: f % 5 === 0 ? 0o755 : 0o644 });
  }
  return entries;
}
