/**
 * Pod sandbox benchmark: Corral vs. containerd 1.6 vs. the bare netns + CNI floor.
 *
 *   npm run build && node dist/bench/podbench.js [--pods N] [--concurrency C] [--skip-containerd] [--state-tmpfs]
 *
 * Each side gets N kubelet-shaped pods per round, in four rounds: serial and at
 * concurrency C, each with pid:CONTAINER (Corral pins namespaces, no pause process)
 * and pid:POD (Corral runs a pause container). A round is three phases: RunPodSandbox
 * for all N, StopPodSandbox for all, RemovePodSandbox for all. Rounds of the two sides
 * are interleaved (Corral, containerd, Corral, ...) so slow spells of this shared
 * machine hit both. Prints figures only; it never asserts. Everything it starts
 * (daemons, pods, netns, bridges, containerd state) is removed at the end, also on
 * failure or Ctrl-C. --state-tmpfs puts both daemons' state dirs on a tmpfs each, as /run is
 * on a systemd host (here it is on an ext4 without a journal; see bench/lib.ts mountTmpfs).
 */
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../src/util/paths.js';
import { execFile } from '../src/util/exec.js';
import { BenchCorral, OCI_PAUSE_HANDLERS } from './corral.js';
import { BenchContainerd, buildPauseImage, ensureContainerd } from './containerd.js';
import { Floor, type FloorResult } from './floor.js';
import {
  errMessage,
  fmtMiB,
  fmtMs,
  fmtNum,
  installSignalHandlers,
  isAborted,
  kubeletPodConfig,
  makeBenchDir,
  onCleanup,
  p50,
  p95,
  pool,
  printTable,
  pssKiB,
  ratio,
  rssKiB,
  RssSampler,
  runBench,
  sleep,
  timed,
  type PidMode,
} from './lib.js';

interface Args {
  pods: number;
  concurrency: number;
  skipContainerd: boolean;
  /** Repetitions of the whole interleaved set of rounds; the summary gives medians over them. */
  rounds: number;
  /** Also run pid POD rounds with the pause as an OCI container (runc, crun) instead of Corral's own. */
  pauseOptions: boolean;
  /** Both daemons' state dirs on a tmpfs each, as /run is on a systemd host (bench/lib.ts mountTmpfs). */
  stateTmpfs: boolean;
}

function parseArgs(argv: string[]): Args {
  const a: Args = { pods: 30, concurrency: 4, skipContainerd: false, rounds: 3, pauseOptions: false, stateTmpfs: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const num = () => {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 1) throw new Error(`${k} needs a positive integer`);
      return v;
    };
    if (k === '--pods') a.pods = num();
    else if (k === '--concurrency') a.concurrency = num();
    else if (k === '--skip-containerd') a.skipContainerd = true;
    else if (k === '--rounds') a.rounds = num();
    else if (k === '--pause-options') a.pauseOptions = true;
    else if (k === '--state-tmpfs') a.stateTmpfs = true;
    else if (k === '-h' || k === '--help') {
      console.log('usage: node dist/bench/podbench.js [--pods N] [--concurrency C] [--rounds R] [--pause-options] [--skip-containerd] [--state-tmpfs]');
      process.exit(0);
    } else throw new Error(`unknown argument ${k}`);
  }
  return a;
}

/** One CRI endpoint under test. */
interface Side {
  name: string;
  /** The runtime handler asked for ('' = the default). */
  handler?: string;
  /** Only for these pid modes (default: all). */
  pidModes?: PidMode[];
  rpc: <T = any>(method: any, req: object, deadlineMs?: number) => Promise<T>;
  pid: () => number;
  helpers?: () => number[];
  /** Corral puts per-step timings of Run into PodSandboxStatus verbose info. */
  runTimings: boolean;
  /** Per-step timings of Stop for these sandboxes, where the daemon logs them (Corral does). */
  stopTimings?: (ids: string[]) => Promise<Record<string, number[]>>;
}

interface Round {
  side: string;
  /** Which repetition of the interleaved set (0-based). */
  rep: number;
  pidMode: PidMode;
  concurrency: number;
  n: number;
  run: number[];
  stop: number[];
  remove: number[];
  wall: { run: number; stop: number; remove: number };
  split: Record<string, number[]>;
  stopSplit: Record<string, number[]>;
  /** Right after the Run phase, with all N pods alive: the daemon's RSS and the helpers' (shims') PSS. */
  pss: { daemonRss: number; helpers: number };
  rss: { idleBefore: number; peak: number; after: number; helpersBefore: number; helpersPeak: number; helpersAfter: number; totalPeak: number };
  errors: string[];
}

const SPLIT_KEYS = ['record', 'netns', 'files', 'shm', 'durable', 'cni', 'create', 'start', 'total'];

async function runRound(side: Side, n: number, concurrency: number, pidMode: PidMode, logRoot: string, rep = 0): Promise<Round> {
  const r: Round = {
    side: side.name,
    rep,
    pidMode,
    concurrency,
    n,
    run: [],
    stop: [],
    remove: [],
    wall: { run: 0, stop: 0, remove: 0 },
    split: Object.fromEntries(SPLIT_KEYS.map((k) => [k, [] as number[]])),
    stopSplit: {},
    pss: { daemonRss: 0, helpers: 0 },
    rss: { idleBefore: 0, peak: 0, after: 0, helpersBefore: 0, helpersPeak: 0, helpersAfter: 0, totalPeak: 0 },
    errors: [],
  };
  const configs = Array.from({ length: n }, () => kubeletPodConfig('podbench', logRoot, pidMode));
  // kubelet creates the pod log directory before RunPodSandbox.
  for (const c of configs) await fs.mkdir(c.logDirectory, { recursive: true });
  const helperRss = () => (side.helpers ? side.helpers().reduce((s, p) => s + rssKiB(p), 0) : 0);
  await sleep(1000);
  r.rss.idleBefore = rssKiB(side.pid());
  r.rss.helpersBefore = helperRss();
  const sampler = new RssSampler(side.pid(), side.helpers).start();
  const ids: (string | undefined)[] = new Array(n);
  const phase = async (which: 'run' | 'stop' | 'remove', fn: (i: number) => Promise<void>) => {
    const t0 = performance.now();
    await pool(
      configs.map((_, i) => i),
      concurrency,
      async (i) => {
        if (which !== 'run' && !ids[i]) return;
        try {
          const t = await timed(() => fn(i));
          r[which].push(t.ms);
        } catch (e) {
          r.errors.push(`${which}: ${errMessage(e)}`);
        }
      },
    );
    r.wall[which] = performance.now() - t0;
  };
  await phase('run', async (i) => {
    const res = await side.rpc<any>('RunPodSandbox', { config: configs[i], runtimeHandler: side.handler ?? '' }, 120_000);
    ids[i] = res.podSandboxId;
  });
  r.pss.daemonRss = rssKiB(side.pid());
  r.pss.helpers = side.helpers ? side.helpers().reduce((sum, p) => sum + pssKiB(p), 0) : 0;
  if (side.runTimings) {
    for (const id of ids) {
      if (!id) continue;
      const st = await side.rpc<any>('PodSandboxStatus', { podSandboxId: id, verbose: true }, 10_000).catch(() => undefined);
      let timings: Record<string, number> | undefined;
      try {
        timings = JSON.parse(st?.info?.info ?? '{}').timings;
      } catch {
        timings = undefined;
      }
      if (timings) for (const k of SPLIT_KEYS) r.split[k]!.push(timings[k] ?? 0);
    }
  }
  await phase('stop', async (i) => {
    await side.rpc('StopPodSandbox', { podSandboxId: ids[i] }, 120_000);
  });
  await phase('remove', async (i) => {
    await side.rpc('RemovePodSandbox', { podSandboxId: ids[i] }, 120_000);
  });
  sampler.stop();
  if (side.stopTimings) r.stopSplit = await side.stopTimings(ids.filter((x): x is string => !!x)).catch(() => ({}));
  r.rss.peak = sampler.peakMain;
  r.rss.helpersPeak = sampler.peakHelpers;
  r.rss.totalPeak = sampler.peakTotal;
  await sleep(1000);
  r.rss.after = rssKiB(side.pid());
  r.rss.helpersAfter = helperRss();
  if (isAborted()) r.errors.push('aborted');
  return r;
}

function roundLabel(r: { concurrency: number; pidMode?: PidMode }): string {
  return `${r.concurrency === 1 ? 'serial' : `conc ${r.concurrency}`}${r.pidMode ? `, pid ${r.pidMode}` : ''}`;
}

function printRound(r: Round): void {
  const pps = (wall: number, count: number) => (wall > 0 ? (count / wall) * 1000 : NaN);
  console.log(`\n${r.side} — ${r.n} pods, ${roundLabel(r)}${r.errors.length ? `  (${r.errors.length} errors)` : ''}`);
  printTable([
    ['phase', 'p50 ms', 'p95 ms', 'pods/s', 'ok'],
    ['Run', fmtMs(p50(r.run)), fmtMs(p95(r.run)), fmtNum(pps(r.wall.run, r.run.length)), String(r.run.length)],
    ['Stop', fmtMs(p50(r.stop)), fmtMs(p95(r.stop)), fmtNum(pps(r.wall.stop, r.stop.length)), String(r.stop.length)],
    ['Remove', fmtMs(p50(r.remove)), fmtMs(p95(r.remove)), fmtNum(pps(r.wall.remove, r.remove.length)), String(r.remove.length)],
  ]);
  if (r.split.total!.length > 0) {
    const s = (k: string) => fmtMs(p50(r.split[k]!));
    const other = p50(r.split.total!.map((t, i) => t - ['netns', 'cni', 'create', 'start'].reduce((a, k) => a + (r.split[k]![i] ?? 0), 0)));
    console.log(`  Run split (p50 ms, daemon-side): netns ${s('netns')} | cni ${s('cni')} | create ${s('create')} | start ${s('start')} | total ${s('total')}`);
    console.log(`    rest of total ${fmtMs(other)} (of which record ${s('record')}, files ${s('files')}, shm ${s('shm')}); gRPC + queueing = Run p50 - total p50 = ${fmtMs(p50(r.run) - p50(r.split.total!))}`);
  }
  const stopKeys = Object.keys(r.stopSplit);
  if (stopKeys.length > 0) {
    console.log(`  Stop split (p50 ms, from the daemon log): ${stopKeys.map((k) => `${k} ${fmtMs(p50(r.stopSplit[k]!))}`).join(' | ')}`);
  }
  const helpers = r.rss.helpersPeak > 0 || r.rss.helpersBefore > 0;
  console.log(
    `  RSS: daemon idle ${fmtMiB(r.rss.idleBefore)}, peak ${fmtMiB(r.rss.peak)}, after ${fmtMiB(r.rss.after)}` +
      (helpers ? `; shims idle ${fmtMiB(r.rss.helpersBefore)}, peak ${fmtMiB(r.rss.helpersPeak)}, after ${fmtMiB(r.rss.helpersAfter)}; daemon+shims peak ${fmtMiB(r.rss.totalPeak)}` : ''),
  );
  if (helpers) console.log(`  with all ${r.run.length} pods up: daemon RSS ${fmtMiB(r.pss.daemonRss)} + shims PSS ${fmtMiB(r.pss.helpers)} = ${fmtMiB(r.pss.daemonRss + r.pss.helpers)}`);
  for (const e of [...new Set(r.errors)].slice(0, 5)) console.log(`  error: ${e}`);
}

function printFloor(f: FloorResult): void {
  console.log(`\nfloor (ip netns + CNI chain by hand, no runtime) — ${f.n} pods, ${roundLabel(f)}${f.errors.length ? `  (${f.errors.length} errors)` : ''}`);
  printTable([
    ['step', 'p50 ms', 'p95 ms'],
    ['setup (netns add + lo up + ADD)', fmtMs(p50(f.setup)), fmtMs(p95(f.setup))],
    ['  netns add + lo up + del', fmtMs(p50(f.netns)), fmtMs(p95(f.netns))],
    ['  CNI ADD chain', fmtMs(p50(f.cniAdd)), fmtMs(p95(f.cniAdd))],
    ['teardown (DEL + netns del)', fmtMs(p50(f.teardown)), fmtMs(p95(f.teardown))],
    ['  CNI DEL chain', fmtMs(p50(f.cniDel)), fmtMs(p95(f.cniDel))],
    ['per pod, all of it', fmtMs(p50(f.total)), fmtMs(p95(f.total))],
  ]);
  console.log(`  ${fmtNum((f.total.length / f.wall) * 1000)} pods/s through the whole cycle`);
  for (const e of [...new Set(f.errors)].slice(0, 5)) console.log(`  error: ${e}`);
}

/** Medians over the repetitions of each side's per-round p50 (and pods/s), with the ratios the goals are stated in. */
function printMedians(rounds: Round[], floors: (FloorResult & { rep: number })[], reps: number): void {
  const med = (xs: number[]) => (xs.length ? p50(xs) : NaN);
  const pps = (wall: number, count: number) => (wall > 0 ? (count / wall) * 1000 : NaN);
  const sideNames = [...new Set(rounds.map((r) => r.side))];
  console.log(`\n=== Medians over ${reps} repetitions (each figure: the median of the per-repetition p50) ===`);
  console.log('  vs containerd = Corral / containerd latency (<1: Corral faster); vs floor = Run / floor setup.');
  const rows: string[][] = [['round', 'side', 'Run ms', 'Run pods/s', 'Stop ms', 'Remove ms', 'Run vs containerd', 'Stop vs containerd', 'Run vs floor', 'floor ms']];
  for (const pidMode of ['CONTAINER', 'POD'] as PidMode[]) {
    for (const c of [...new Set(rounds.map((r) => r.concurrency))]) {
      const floorMs = med(floors.filter((f) => f.concurrency === c).map((f) => p50(f.setup)));
      const of = (side: string) => rounds.filter((r) => r.side === side && r.pidMode === pidMode && r.concurrency === c);
      const ctrd = of('containerd');
      const ctrdRun = med(ctrd.map((r) => p50(r.run)));
      const ctrdStop = med(ctrd.map((r) => p50(r.stop)));
      let first = true;
      for (const side of sideNames) {
        const rs = of(side);
        if (rs.length === 0) continue;
        const run = med(rs.map((r) => p50(r.run)));
        const stop = med(rs.map((r) => p50(r.stop)));
        rows.push([
          first ? roundLabel({ concurrency: c, pidMode }) : '',
          side,
          fmtMs(run),
          fmtNum(med(rs.map((r) => pps(r.wall.run, r.run.length)))),
          fmtMs(stop),
          fmtMs(med(rs.map((r) => p50(r.remove)))),
          side === 'containerd' ? '' : ratio(run, ctrdRun),
          side === 'containerd' ? '' : ratio(stop, ctrdStop),
          ratio(run, floorMs),
          first ? fmtMs(floorMs) : '',
        ]);
        first = false;
      }
    }
  }
  printTable(rows, 2);
  const splitRows: string[][] = [['round', 'side', ...SPLIT_KEYS]];
  for (const r0 of rounds.filter((r) => r.rep === 0 && r.split.total!.length > 0)) {
    const same = rounds.filter((r) => r.side === r0.side && r.pidMode === r0.pidMode && r.concurrency === r0.concurrency && r.split.total!.length > 0);
    splitRows.push([roundLabel(r0), r0.side, ...SPLIT_KEYS.map((k) => fmtMs(med(same.map((r) => p50(r.split[k]!)))))]);
  }
  console.log('\n  Run split, daemon-side (median over repetitions of the p50 ms):');
  printTable(splitRows, 2, '    ');
  const stopRows: string[][] = [];
  for (const r0 of rounds.filter((r) => r.rep === 0 && Object.keys(r.stopSplit).length > 0)) {
    const same = rounds.filter((r) => r.side === r0.side && r.pidMode === r0.pidMode && r.concurrency === r0.concurrency);
    const keys = Object.keys(r0.stopSplit);
    stopRows.push([roundLabel(r0), r0.side, keys.map((k) => `${k} ${fmtMs(med(same.map((r) => (r.stopSplit[k]?.length ? p50(r.stopSplit[k]!) : NaN)).filter(Number.isFinite)))}`).join(' | ')]);
  }
  if (stopRows.length) {
    console.log('\n  Stop split, from the daemon log (median over repetitions of the p50 ms):');
    printTable([['round', 'side', 'steps'], ...stopRows], 3, '    ');
  }
}

function printComparison(rounds: Round[], floors: FloorResult[], ctrdVersion: string): void {
  const corral = rounds.filter((r) => r.side === 'Corral');
  const ctrd = rounds.filter((r) => r.side === 'containerd');
  const pps = (wall: number, count: number) => (wall > 0 ? (count / wall) * 1000 : NaN);
  console.log(`\n=== Side by side: latency medians (p50 ms) and throughput (pods/s) ===`);
  console.log('  latency ratio = containerd / Corral, throughput ratio = Corral / containerd: either way >1 means Corral is ahead.');
  const rows: string[][] = [['round', 'phase', 'Corral ms', 'containerd ms', 'ratio', 'Corral pods/s', 'containerd pods/s', 'ratio', 'floor ms']];
  for (const c of corral) {
    const d = ctrd.find((x) => x.pidMode === c.pidMode && x.concurrency === c.concurrency);
    const f = floors.find((x) => x.concurrency === c.concurrency);
    const phases: [string, keyof Round['wall'] | 'stop+remove', number][] = [
      ['Run', 'run', f ? p50(f.setup) : NaN],
      ['Stop', 'stop', NaN],
      ['Remove', 'remove', NaN],
      ['Stop+Remove', 'stop+remove', f ? p50(f.teardown) : NaN],
    ];
    phases.forEach(([name, k, fl], i) => {
      const lat = (r: Round | undefined) => (!r ? NaN : k === 'stop+remove' ? p50(r.stop) + p50(r.remove) : p50(r[k]));
      const thr = (r: Round | undefined) => (!r || k === 'stop+remove' ? NaN : pps(r.wall[k], r[k].length));
      rows.push([
        i === 0 ? roundLabel(c) : '',
        name,
        fmtMs(lat(c)),
        fmtMs(lat(d)),
        ratio(lat(d), lat(c)),
        fmtNum(thr(c)),
        fmtNum(thr(d)),
        ratio(thr(c), thr(d)),
        fmtMs(fl),
      ]);
    });
  }
  printTable(rows, 2);
  console.log('  floor: Run = ip netns add + lo up + CNI ADD chain; Stop+Remove = CNI DEL chain + ip netns del (same N, same concurrency).');

  console.log(`\n=== Memory (ratio = containerd / Corral: >1 means Corral uses less) ===`);
  const first = (xs: Round[]) => xs[0]?.rss.idleBefore ?? NaN;
  const last = (xs: Round[]) => xs[xs.length - 1]?.rss.after ?? NaN;
  const peak = (xs: Round[], k: 'peak' | 'totalPeak') => (xs.length ? Math.max(...xs.map((x) => x.rss[k])) : NaN);
  const pss = (xs: Round[]) => (xs.length ? Math.max(...xs.map((x) => x.pss.daemonRss + x.pss.helpers)) : NaN);
  const mem: string[][] = [['figure', 'Corral', 'containerd', 'ratio']];
  const memRow = (fig: string, a: number, b: number) => mem.push([fig, fmtMiB(a), fmtMiB(b), ratio(b, a)]);
  memRow('daemon RSS idle, before the first round', first(corral), first(ctrd));
  memRow('daemon RSS peak (50 ms samples)', peak(corral, 'peak'), peak(ctrd, 'peak'));
  memRow('daemon RSS after the last round', last(corral), last(ctrd));
  memRow('daemon + shims RSS peak (summed)', peak(corral, 'totalPeak'), peak(ctrd, 'totalPeak'));
  memRow(`daemon RSS + shims PSS, ${corral[0]?.n ?? '?'} pods up`, pss(corral), pss(ctrd));
  printTable(mem);
  console.log('  Corral has no per-pod process besides the pause (pid POD only); containerd has one containerd-shim-runc-v2 per pod.');
  console.log('  Summed RSS counts the shims\' shared pages once per shim; the PSS row splits them, so it is the fairer total.');
  if (ctrdVersion) console.log(`  containerd: ${ctrdVersion}`);
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  installSignalHandlers();
  const { tag, dir } = await makeBenchDir();
  const octet = parseInt(tag.slice(0, 2), 16);
  const logRoot = path.join(dir, 'pod-logs');

  console.log(`podbench: ${args.pods} pods per round, concurrency 1 and ${args.concurrency}; state dirs on ${args.stateTmpfs ? "a tmpfs each (--state-tmpfs)" : "the bench folder's file system"}; ${new Date().toISOString()}`);
  console.log(`machine: ${os.cpus().length} cores (${os.cpus()[0]?.model ?? '?'}), ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${os.release()}, Node ${process.version}`);
  console.log('note: this machine is shared and noisy; each round runs once per side, and the sides are interleaved round by round.');
  console.log(`load average at start: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);

  // The floor: the same bridge/host-local/portmap chain with no runtime at all (again in every repetition).
  const floor = new Floor(tag, `10.251.${octet}.0/24`);
  onCleanup('floor', () => floor.cleanup());
  const floors: (FloorResult & { rep: number })[] = [];
  const runFloor = async (rep: number) => {
    for (const c of [1, args.concurrency]) {
      if (isAborted()) break;
      floors.push({ ...(await floor.run(args.pods, c)), rep });
      printFloor(floors[floors.length - 1]!);
    }
  };

  const corral = new BenchCorral(path.join(dir, 'corral'), tag, `10.250.${octet}.0/24`);
  onCleanup('Corral daemon', () => corral.cleanup());
  corral.stateOnTmpfs = args.stateTmpfs;
  await corral.start();
  const sides: Side[] = [
    { name: 'Corral', rpc: (m, q, d) => corral.rpc(m, q, d), pid: () => corral.pid, runTimings: true, stopTimings: (ids) => corral.stopTimings(ids) },
  ];
  if (args.pauseOptions) {
    for (const h of OCI_PAUSE_HANDLERS) {
      sides.push({ name: `Corral ${h.binary} pause`, handler: h.name, pidModes: ['POD'], rpc: (m, q, d) => corral.rpc(m, q, d), pid: () => corral.pid, runTimings: true, stopTimings: (ids) => corral.stopTimings(ids) });
    }
  }

  let ctrdVersion = '';
  if (args.skipContainerd) {
    console.log('\ncontainerd: skipped (--skip-containerd)');
  } else {
    try {
      ctrdVersion = await ensureContainerd();
      const prep = await execFile('bash', [path.join(packageRoot(), 'scripts/prepare-cgroups.sh')]);
      if (prep.code !== 0) throw new Error(`scripts/prepare-cgroups.sh failed: ${prep.stderr.trim()}`);
      const ctrd = new BenchContainerd(path.join(dir, 'containerd'), tag, `10.252.${octet}.0/24`);
      onCleanup('containerd', () => ctrd.cleanup());
      ctrd.stateOnTmpfs = args.stateTmpfs;
      await fs.mkdir(ctrd.dir, { recursive: true });
      const tarball = await buildPauseImage(path.join(dir, 'image'));
      await ctrd.start();
      await ctrd.importPauseImage(tarball);
      sides.push({ name: 'containerd', rpc: (m, q, d) => ctrd.rpc(m, q, d), pid: () => ctrd.pid, helpers: () => ctrd.shimPids(), runTimings: false });
      console.log(`\ncontainerd: ${ctrdVersion}, sandbox image ${'corral.local/pause:builtin'} imported from a tarball built from dist/native/corral-pause`);
    } catch (e) {
      console.log(`\ncontainerd: SKIPPED — it could not be run here: ${errMessage(e).split('\n').slice(0, 8).join('\n    ')}`);
      ctrdVersion = '';
    }
  }

  const rounds: Round[] = [];
  for (let rep = 0; rep < args.rounds; rep++) {
    console.log(`\n##### repetition ${rep + 1} of ${args.rounds}`);
    await runFloor(rep);
    // Alternate which side goes first, so neither always meets the machine in the same state.
    const order = rep % 2 === 0 ? sides : [...sides].reverse();
    for (const pidMode of ['CONTAINER', 'POD'] as PidMode[]) {
      for (const c of [1, args.concurrency]) {
        for (const side of order) {
          if (isAborted() || (side.pidModes && !side.pidModes.includes(pidMode))) continue;
          const r = await runRound(side, args.pods, c, pidMode, logRoot, rep);
          rounds.push(r);
          printRound(r);
        }
      }
    }
  }
  await floor.cleanup();
  if (!isAborted()) {
    printComparison(rounds.filter((r) => r.rep === 0), floors.filter((f) => f.rep === 0), ctrdVersion);
    printMedians(rounds, floors, args.rounds);
  }
  console.log(`load average at end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
}

runBench('podbench', main);
