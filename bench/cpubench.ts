/**
 * CPU per pod: what the Corral daemon itself spends on RunPodSandbox, StopPodSandbox and
 * RemovePodSandbox of kubelet-shaped pods, in a figure that load on a shared machine does
 * not distort (CPU time, not wall clock).
 *
 *   npm run build && node dist/bench/cpubench.js [--pods 60] [--concurrency 4] [--rounds 2]
 *       [--pid CONTAINER,POD] [--build DIR]... [--node-flags=FLAGS]... [--state-tmpfs]
 *
 * For each phase it reads the daemon's /proc/<pid>/stat before and after and prints, per pod:
 * the daemon's own CPU (utime+stime of all its threads; also from schedstat, in ns) and its
 * reaped children's (cutime+cstime: CNI plugins, helpers, and what they ran). The children's
 * share is mostly the plugins' own work, the same for any runtime; the daemon's is Corral's.
 * Each repetition first runs the floor (bench/floor.ts: ip netns + the CNI chain, run by this
 * process) and reports this process's CPU per pod for its whole cycle the same way.
 *
 * --build DIR (repeatable): a package root holding another build's dist/ (e.g. a copy saved
 * before a change); each build gets its own daemon and the builds are interleaved round by
 * round, so before/after figures meet the machine in the same state. Without it, this build.
 * --node-flags=FLAGS (repeatable; with "=", as the value starts with a dash): one daemon per
 * build and flag set, interleaved the same way, each set replacing the daemon's default flags
 * (src/cli/node-flags.ts), e.g. "--node-flags=--max-semi-space-size=1 --expose-gc" and
 * "--node-flags=--max-semi-space-size=1 --expose-gc --jitless". Without it, the defaults.
 * --state-tmpfs: each daemon's state dir on a tmpfs of its own, as /run is on a systemd host
 * (bench/lib.ts mountTmpfs: here /run is on an ext4 without a journal, whose inode allocator
 * makes every file a daemon creates there cost more the more files were removed in the last
 * 30 s). The floor's netns files stay in /var/run/netns either way, and Corral's pins in its
 * netns dir beside the state dir.
 * CORRAL_CPUBENCH_PHASE_LOG=FILE appends `<build> <pid> c=<n> <phase> <start> <end>` per phase
 * (CLOCK_MONOTONIC ns), to cut a `perf record -a -k CLOCK_MONOTONIC` profile to one phase.
 * CORRAL_BENCH_NODE_FLAGS sets the daemons' Node flags (e.g. add --cpu-prof --cpu-prof-dir=D:
 * the profile is written when the daemon exits at the end).
 */
import { appendFileSync, promises as fs, readFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../src/util/paths.js';
import { BenchCorral } from './corral.js';
import { Floor } from './floor.js';
import { fmtMs, installSignalHandlers, isAborted, kubeletPodConfig, machineCpu, makeBenchDir, onCleanup, p50, parseBenchFlags, pool, printTable, procCpu, runBench, sleep, withSpawners, type PidMode } from './lib.js';

const USAGE = 'usage: node dist/bench/cpubench.js [--pods 60] [--concurrency 4] [--rounds 2] [--pid CONTAINER,POD] [--build DIR]... [--node-flags=FLAGS]... [--state-tmpfs]';
const flags = parseBenchFlags(USAGE, {
  options: {
    pods: { type: 'string', default: '60' },
    concurrency: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '2' },
    pid: { type: 'string', default: 'CONTAINER,POD' },
    build: { type: 'string', multiple: true },
    'node-flags': { type: 'string', multiple: true },
    'state-tmpfs': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
const PODS = Number(flags.pods);
const CONCURRENCY = Number(flags.concurrency);
const ROUNDS = Number(flags.rounds);
const PID_MODES = flags.pid.split(',').map((m) => (m.trim().toUpperCase() === 'POD' ? 'POD' : 'CONTAINER')) as PidMode[];
const BUILDS = flags.build?.length ? flags.build.map((b) => path.resolve(b)) : [packageRoot()];
/** Node flag sets to compare (undefined: the daemon's defaults, as BenchCorral has them). */
const FLAG_SETS: (string[] | undefined)[] = flags['node-flags']?.length ? flags['node-flags'].map((f) => f.split(' ').filter(Boolean)) : [undefined];

/** CORRAL_CPUBENCH_PHASE_LOG=FILE: each phase's start and end (CLOCK_MONOTONIC ns) appended, to cut a `perf record -a -k CLOCK_MONOTONIC` profile by phase. */
const PHASE_LOG = process.env.CORRAL_CPUBENCH_PHASE_LOG;

interface CpuSample {
  /** utime+stime of the process (all threads), ms. */
  self: number;
  /** cutime+cstime: children it has waited for, ms. */
  children: number;
  /** Sum of the threads' schedstat run time, ms (ns precision; threads that exited are not counted). */
  selfNs: number;
}

function cpuOfProcess(pid: number): CpuSample {
  const { self, children } = procCpu(pid);
  let selfNs = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try {
      selfNs += Number(readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread exited
    }
  }
  return { self, children, selfNs: selfNs / 1e6 };
}

/**
 * The daemon's CPU, with its corral-spawner's (a long-lived child that runs the daemon's
 * programs: its own CPU is Corral's, like the daemon's, and the programs it reaped are
 * children, as if the daemon had reaped them).
 */
function cpuOf(pid: number): CpuSample {
  return withSpawners(pid, cpuOfProcess, (total, h) => {
    total.self += h.self;
    total.selfNs += h.selfNs;
    total.children += h.children;
  });
}

type Phase = 'run' | 'stop' | 'remove';
interface Result {
  build: string;
  pidMode: PidMode;
  concurrency: number;
  /** Per phase: CPU ms per pod (daemon, daemon by schedstat, children; the whole machine's busy and stolen time), and the phase's latencies. */
  cpu: Record<Phase, { self: number; selfNs: number; children: number; machine: number; steal: number }>;
  latency: Record<Phase, number[]>;
  errors: string[];
}

async function round(corral: BenchCorral, build: string, pidMode: PidMode, concurrency: number, logRoot: string): Promise<Result> {
  const configs = Array.from({ length: PODS }, () => kubeletPodConfig('cpubench', logRoot, pidMode));
  for (const c of configs) await fs.mkdir(c.logDirectory, { recursive: true });
  const ids: string[] = [];
  const r: Result = { build, pidMode, concurrency, cpu: {} as Result['cpu'], latency: { run: [], stop: [], remove: [] }, errors: [] };
  await sleep(300); // let the previous round's stragglers (timers, GC) settle
  const phase = async (name: Phase, fn: (i: number) => Promise<void>) => {
    const before = cpuOf(corral.pid);
    const m0 = machineCpu();
    const phaseStart = process.hrtime.bigint();
    await pool(configs, concurrency, async (_c, i) => {
      const t0 = performance.now();
      try {
        await fn(i);
        r.latency[name].push(performance.now() - t0);
      } catch (e) {
        r.errors.push(`${name}: ${(e as Error).message}`);
      }
    });
    const after = cpuOf(corral.pid);
    const m1 = machineCpu();
    // CLOCK_MONOTONIC ns, as `perf record -k CLOCK_MONOTONIC` stamps samples: a profile of the whole machine can be cut to one phase.
    if (PHASE_LOG) appendFileSync(PHASE_LOG, `${build} ${pidMode} c=${concurrency} ${name} ${phaseStart} ${process.hrtime.bigint()}\n`);
    r.cpu[name] = {
      self: (after.self - before.self) / PODS,
      selfNs: (after.selfNs - before.selfNs) / PODS,
      children: (after.children - before.children) / PODS,
      machine: (m1.busy - m0.busy) / PODS,
      steal: (m1.steal - m0.steal) / PODS,
    };
  };
  await phase('run', async (i) => {
    ids[i] = (await corral.rpc<{ podSandboxId: string }>('RunPodSandbox', { config: configs[i] })).podSandboxId;
  });
  await phase('stop', async (i) => {
    if (ids[i]) await corral.rpc('StopPodSandbox', { podSandboxId: ids[i] });
  });
  await phase('remove', async (i) => {
    if (ids[i]) await corral.rpc('RemovePodSandbox', { podSandboxId: ids[i] });
  });
  return r;
}

async function main(): Promise<void> {
  installSignalHandlers();
  const { tag, dir } = await makeBenchDir();
  const logRoot = path.join(dir, 'pod-logs');
  console.log(`cpubench: ${PODS} pods per round, pid ${PID_MODES.join(', ')}, serial and ${CONCURRENCY} in flight, ${ROUNDS} rounds; ${new Date().toISOString()}`);
  console.log(`load average at start: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}; daemon node flags: ${process.env.CORRAL_BENCH_NODE_FLAGS ?? '(default)'}; state dir on ${flags['state-tmpfs'] ? 'a tmpfs (--state-tmpfs)' : `${dir}'s file system`}`);

  // One daemon per build and flag set; `build` is the label results are grouped by.
  const daemons: { build: string; name: string; corral: BenchCorral }[] = [];
  const variants = BUILDS.flatMap((build) => FLAG_SETS.map((nodeFlags) => ({ build, nodeFlags })));
  for (const [i, { build, nodeFlags }] of variants.entries()) {
    const octet = (parseInt(tag.slice(0, 2), 16) + i) % 256;
    const corral = new BenchCorral(path.join(dir, `corral${i}`), `${tag.slice(0, 5)}${i}`, `10.250.${octet}.0/24`);
    corral.packageDir = build;
    if (nodeFlags) corral.nodeFlags = nodeFlags;
    corral.stateOnTmpfs = flags['state-tmpfs'];
    const name = nodeFlags ? `${path.basename(build)} ${nodeFlags.join(' ') || '(no flags)'}` : path.basename(build);
    const label = `${i} ${name}`;
    onCleanup(`Corral daemon ${label}`, () => corral.cleanup());
    await corral.start();
    console.log(`daemon ${i}: pid ${corral.pid}, build ${build}, node flags ${corral.nodeFlags.join(' ') || '(none)'}`);
    daemons.push({ build: label, name, corral });
  }
  // One warm-up round per daemon: the first Runs load code and the CNI config.
  for (const d of daemons) await round(d.corral, d.build, 'CONTAINER', 1, logRoot).catch(() => undefined);
  // CORRAL_CPUBENCH_PAUSE_FILE: wait until that file exists (to attach strace or perf to the daemon first).
  const pauseFile = process.env.CORRAL_CPUBENCH_PAUSE_FILE;
  if (pauseFile) {
    console.log(`waiting for ${pauseFile} to exist ...`);
    while (!isAborted() && !(await fs.stat(pauseFile).then(() => true, () => false))) await sleep(200);
  }

  // The floor (ip netns + the CNI chain run by this process): its CPU is this process's own
  // and its reaped children's, for the whole cycle (setup and teardown) of each pod.
  const floor = new Floor(tag, `10.251.${parseInt(tag.slice(0, 2), 16)}.0/24`);
  onCleanup('floor', () => floor.cleanup());
  const floorCpu: Record<number, { self: number; children: number; setup: number; setupMachine: number; setupSteal: number }[]> = {};
  const results: Result[] = [];
  for (let rep = 0; rep < ROUNDS && !isAborted(); rep++) {
    for (const c of [1, CONCURRENCY]) {
      const before = cpuOf(process.pid);
      const f = await floor.run(PODS, c);
      const after = cpuOf(process.pid);
      (floorCpu[c] ??= []).push({ self: (after.selfNs - before.selfNs) / PODS, children: (after.children - before.children) / PODS, setup: p50(f.setup), setupMachine: f.setupMachine.busy, setupSteal: f.setupMachine.steal });
      console.log(`rep ${rep + 1} floor c=${c}: whole cycle self ${floorCpu[c]!.at(-1)!.self.toFixed(2)} kids ${floorCpu[c]!.at(-1)!.children.toFixed(2)} setup p50 ${fmtMs(p50(f.setup))} machine ${f.setupMachine.busy.toFixed(2)} steal ${f.setupMachine.steal.toFixed(2)}${f.errors.length ? `  ERRORS: ${f.errors[0]}` : ''}`);
    }
    for (const pidMode of PID_MODES) {
      for (const c of [1, CONCURRENCY]) {
        const order = rep % 2 === 0 ? daemons : [...daemons].reverse();
        for (const d of order) {
          if (isAborted()) break;
          const r = await round(d.corral, d.build, pidMode, c, logRoot);
          results.push(r);
          const e = r.errors.length ? `  ERRORS ${r.errors.length}: ${r.errors[0]}` : '';
          console.log(
            `rep ${rep + 1} ${d.name.padEnd(12)} pid ${pidMode.padEnd(9)} c=${c}: ` +
              (['run', 'stop', 'remove'] as Phase[]).map((p) => `${p} self ${r.cpu[p].selfNs.toFixed(2)} kids ${r.cpu[p].children.toFixed(2)} p50 ${fmtMs(p50(r.latency[p]))}`).join(' | ') +
              ` | run machine ${r.cpu.run.machine.toFixed(2)} steal ${r.cpu.run.steal.toFixed(2)}` +
              e,
          );
        }
      }
    }
  }

  console.log(`\n=== CPU ms per pod, median over ${ROUNDS} rounds (self = the daemon and its corral-spawner, from schedstat; [ticks] from stat; kids = reaped plugins/helpers; Run machine = the whole machine's busy CPU during the Run phase per pod, [steal]) ===`);
  const rows: string[][] = [['build', 'pid', 'in flight', 'Run self', 'Run kids', 'Run p50 ms', 'Run machine', 'Stop self', 'Stop kids', 'Remove self', 'Remove kids', 'all self', 'all kids']];
  const med = (xs: number[]) => p50(xs);
  for (const d of daemons) {
    for (const pidMode of PID_MODES) {
      for (const c of [1, CONCURRENCY]) {
        const rs = results.filter((r) => r.build === d.build && r.pidMode === pidMode && r.concurrency === c);
        if (!rs.length) continue;
        const m = (p: Phase, k: 'self' | 'selfNs' | 'children' | 'machine' | 'steal') => med(rs.map((r) => r.cpu[p][k]));
        const all = (k: 'selfNs' | 'children') => med(rs.map((r) => r.cpu.run[k] + r.cpu.stop[k] + r.cpu.remove[k]));
        rows.push([
          d.name,
          pidMode,
          String(c),
          `${m('run', 'selfNs').toFixed(2)} [${m('run', 'self').toFixed(1)}]`,
          m('run', 'children').toFixed(2),
          fmtMs(med(rs.map((r) => p50(r.latency.run)))),
          `${m('run', 'machine').toFixed(2)} [${m('run', 'steal').toFixed(1)}]`,
          `${m('stop', 'selfNs').toFixed(2)} [${m('stop', 'self').toFixed(1)}]`,
          m('stop', 'children').toFixed(2),
          `${m('remove', 'selfNs').toFixed(2)} [${m('remove', 'self').toFixed(1)}]`,
          m('remove', 'children').toFixed(2),
          all('selfNs').toFixed(2),
          all('children').toFixed(2),
        ]);
      }
    }
  }
  printTable(rows, 3);
  for (const [c, xs] of Object.entries(floorCpu)) {
    console.log(`floor, ${c} in flight (netns add + lo up + ADD chain + DEL chain + netns del, run by the bench process): self ${p50(xs.map((x) => x.self)).toFixed(2)} kids ${p50(xs.map((x) => x.children)).toFixed(2)} ms per pod; setup p50 ${fmtMs(p50(xs.map((x) => x.setup)))} ms, machine during setup ${p50(xs.map((x) => x.setupMachine)).toFixed(2)} [${p50(xs.map((x) => x.setupSteal)).toFixed(1)}] ms per pod`);
  }
  console.log(`load average at end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
}

runBench('cpubench', main);
