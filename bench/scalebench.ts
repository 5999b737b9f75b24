/**
 * Scale and memory: Corral and containerd 1.6 with hundreds of pods, side by side. It only
 * measures and prints; it asserts nothing.
 *
 *   npm run build && node dist/bench/scalebench.js [--pods 500] [--concurrency 16] [--serial 30]
 *       [--shared-pid-every 10] [--restarts 3] [--images 5] [--containerd-pods N] [--skip-containerd]
 *
 * Per side, in this order:
 *   1. idle: the daemon's RSS (and anon/file split, PSS) 3 s after it answers;
 *   2. pulls: `--images` images (busybox + 2 layers of their own, ~4 MB each) from a local
 *      docker-registry; RSS right after and 5 s later (the goal: ≤ 20 MiB over idle);
 *   3. serial: `--serial` kubelet-shaped pods run one at a time (pid CONTAINER): Run p50;
 *   4. fill: the rest up to `--pods` at `--concurrency` in flight, every `--shared-pid-every`-th
 *      with pid POD (a pause process); Run p50/p95 overall, for the first and the last 100;
 *   5. with all pods up: daemon RSS, helper (shim) and pause PSS, per pod; ListPodSandbox,
 *      ListContainers, PodSandboxStatus and Status p50/p95 over 20 calls each; 10 more pods
 *      run serially (and removed) for a serial p50 at scale;
 *   6. restarts: SIGTERM, wait for the exit, start again, and time until the first List
 *      answers, every pod is listed READY, and Status answers (`--restarts` times);
 *   7. teardown: Stop + Remove of every pod at `--concurrency` in flight.
 * Corral's subnet is 10.254.0.0/17 (bridge cbc<tag>) and containerd's 10.254.128.0/17
 * (bridge cbd<tag>); everything else lives under /run/corral-bench-<tag>/ and is removed at
 * the end, also after a failure or Ctrl-C.
 */
import { promises as fs, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ImageRpcName, RuntimeRpcName } from '../src/cri/proto.js';
import { packageRoot } from '../src/util/paths.js';
import { execFile } from '../src/util/exec.js';
import { pushImage, startRegistry, type TestRegistry } from '../test/helpers/registry.js';
import { buildImage, buildLayer, busyboxEntries, type TarEntry } from '../test/helpers/test-images.js';
import { BenchCorral } from './corral.js';
import { BenchContainerd, buildPauseImage, ensureContainerd } from './containerd.js';
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
  parseBenchFlags,
  pidsWithCmdline,
  pool,
  printTable,
  pssKiB,
  ratio,
  rssKiB,
  runBench,
  sleep,
  timed,
  type PidMode,
} from './lib.js';

const USAGE =
  'usage: node dist/bench/scalebench.js [--pods 500] [--concurrency 16] [--serial 30] [--shared-pid-every 10]\n' +
  '         [--restarts 3] [--images 5] [--containerd-pods N] [--skip-containerd]';
const flags = parseBenchFlags(USAGE, {
  options: {
    pods: { type: 'string', default: '500' },
    concurrency: { type: 'string', default: '16' },
    serial: { type: 'string', default: '30' },
    'shared-pid-every': { type: 'string', default: '10' },
    restarts: { type: 'string', default: '3' },
    images: { type: 'string', default: '5' },
    'containerd-pods': { type: 'string' },
    'skip-containerd': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
const int = (name: string, v: string | undefined, min: number): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    console.error(`--${name} needs an integer ≥ ${min}\n${USAGE}`);
    process.exit(2);
  }
  return n;
};
const PODS = int('pods', flags.pods, 1);
const CONC = int('concurrency', flags.concurrency, 1);
const SERIAL = Math.min(int('serial', flags.serial, 1), PODS);
const SHARED_EVERY = int('shared-pid-every', flags['shared-pid-every'], 0);
const RESTARTS = int('restarts', flags.restarts, 0);
const IMAGES = int('images', flags.images, 0);
const CTRD_PODS = flags['containerd-pods'] === undefined ? PODS : int('containerd-pods', flags['containerd-pods'], 1);

type Rpc = <T = any>(method: RuntimeRpcName, req: object, deadlineMs?: number) => Promise<T>;
type ImageRpc = <T = any>(method: ImageRpcName, req: object, deadlineMs?: number) => Promise<T>;

interface Side {
  name: string;
  rpc: Rpc;
  imageRpc: ImageRpc;
  pid(): number;
  /** Per-pod helper processes of the daemon (containerd's shims). */
  helpers(): number[];
  stop(): Promise<void>;
  launch(): void;
  /** Forget the gRPC channel (the next call makes a fresh one). */
  resetClient(): void;
  /** The daemon's own account of its last start (Corral logs it), for the restart split. */
  lastStart?(): Promise<string>;
}

interface Mem {
  rss: number;
  anon: number;
  file: number;
  pss: number;
}

interface Restart {
  exitMs: number;
  firstAnswerMs: number;
  allReadyMs: number;
  statusMs: number;
  listed: number;
}

interface Result {
  side: string;
  pods: number;
  idle?: Mem;
  afterPulls?: Mem;
  afterPullsSettled?: Mem;
  pullMs: number[];
  serial: number[];
  fill: number[];
  fillWallMs: number;
  serialAtScale: number[];
  beforePods?: Mem;
  up?: Mem;
  helpersPss: number;
  pausePss: number;
  pauseCount: number;
  calls: Record<string, number[]>;
  restarts: Restart[];
  teardownWallMs: number;
  errors: string[];
}

function memOf(pid: number): Mem {
  let status = '';
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    /* gone */
  }
  const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
  return { rss: kib('VmRSS'), anon: kib('RssAnon'), file: kib('RssFile'), pss: pssKiB(pid) };
}

function fmtMem(m: Mem | undefined): string {
  return m ? `${fmtMiB(m.rss)} (anon ${fmtMiB(m.anon)}, file ${fmtMiB(m.file)}; PSS ${fmtMiB(m.pss)})` : '-';
}

/** Pause processes of these sandboxes (their cgroup path names the sandbox ID on both daemons). */
function pausePids(ids: Set<string>): number[] {
  return pidsWithCmdline('/pause').filter((pid) => {
    try {
      const cg = readFileSync(`/proc/${pid}/cgroup`, 'utf8');
      for (const id of ids) if (cg.includes(id)) return true;
    } catch {
      /* gone */
    }
    return false;
  });
}

/** busybox + two layers of its own (2 × 1 MiB random + 200 small files), distinct per image. */
async function scaleImage(i: number) {
  const small: TarEntry[] = [{ path: `data${i}/`, type: 'directory' }];
  for (let f = 0; f < 200; f++) small.push({ path: `data${i}/f${f}`, content: randomBytes(512 + ((f * 997) % 8000)) });
  const large: TarEntry[] = [
    { path: `big${i}/`, type: 'directory' },
    { path: `big${i}/a`, content: randomBytes(1 << 20) },
    { path: `big${i}/b`, content: randomBytes(1 << 20) },
  ];
  return buildImage({ layers: [await buildLayer(busyboxEntries()), await buildLayer(small), await buildLayer(large)] });
}

async function runSide(side: Side, n: number, logRoot: string, refs: string[]): Promise<Result> {
  const r: Result = {
    side: side.name,
    pods: n,
    pullMs: [],
    serial: [],
    fill: [],
    fillWallMs: 0,
    serialAtScale: [],
    helpersPss: 0,
    pausePss: 0,
    pauseCount: 0,
    calls: {},
    restarts: [],
    teardownWallMs: 0,
    errors: [],
  };
  const ids: string[] = [];
  const note = (what: string, e: unknown) => {
    if (r.errors.length < 1000) r.errors.push(`${what}: ${errMessage(e)}`);
  };
  await sleep(3000);
  r.idle = memOf(side.pid());
  console.log(`${side.name}: idle ${fmtMem(r.idle)}`);

  // ---- pulls
  if (refs.length > 0) {
    for (const ref of refs) {
      try {
        r.pullMs.push((await timed(() => side.imageRpc('PullImage', { image: { image: ref } }, 300_000))).ms);
      } catch (e) {
        note('pull', e);
      }
    }
    r.afterPulls = memOf(side.pid());
    await sleep(5000);
    r.afterPullsSettled = memOf(side.pid());
    console.log(`${side.name}: after ${r.pullMs.length} pulls ${fmtMem(r.afterPulls)}; 5 s later ${fmtMem(r.afterPullsSettled)}`);
  }

  const config = (pid: PidMode) => kubeletPodConfig('scalebench', logRoot, pid);
  const runPod = async (pid: PidMode): Promise<{ ms: number; id: string }> => {
    const c = config(pid);
    await fs.mkdir(c.logDirectory, { recursive: true });
    const t = await timed(() => side.rpc<any>('RunPodSandbox', { config: c, runtimeHandler: '' }, 300_000));
    return { ms: t.ms, id: t.value.podSandboxId };
  };

  // ---- serial, then the fill at CONC in flight
  r.beforePods = memOf(side.pid());
  for (let i = 0; i < Math.min(SERIAL, n) && !isAborted(); i++) {
    try {
      const { ms, id } = await runPod('CONTAINER');
      ids.push(id);
      r.serial.push(ms);
    } catch (e) {
      note('serial Run', e);
    }
  }
  const rest = Array.from({ length: n - Math.min(SERIAL, n) }, (_, i) => i);
  const fillTimes: number[] = new Array(rest.length).fill(NaN);
  const t0 = performance.now();
  let done = 0;
  await pool(rest, CONC, async (i) => {
    const pid: PidMode = SHARED_EVERY > 0 && i % SHARED_EVERY === SHARED_EVERY - 1 ? 'POD' : 'CONTAINER';
    try {
      const { ms, id } = await runPod(pid);
      ids.push(id);
      fillTimes[i] = ms;
    } catch (e) {
      note('Run', e);
    }
    if (++done % 100 === 0) console.log(`${side.name}: ${done + Math.min(SERIAL, n)} pods up (${fmtNum((performance.now() - t0) / 1000)} s)`);
  });
  r.fillWallMs = performance.now() - t0;
  r.fill = fillTimes.filter(Number.isFinite);
  const firstLast = (k: 'first' | 'last') => (k === 'first' ? fillTimes.slice(0, 100) : fillTimes.slice(-100)).filter(Number.isFinite);
  (r as any).fillFirst = firstLast('first');
  (r as any).fillLast = firstLast('last');

  // ---- with everything up
  await sleep(3000);
  r.up = memOf(side.pid());
  const helpers = side.helpers();
  r.helpersPss = helpers.reduce((s, p) => s + pssKiB(p), 0);
  const pauses = pausePids(new Set(ids));
  r.pauseCount = pauses.length;
  r.pausePss = pauses.reduce((s, p) => s + pssKiB(p), 0);
  console.log(`${side.name}: ${ids.length} pods up: ${fmtMem(r.up)}; ${helpers.length} helper processes, PSS ${fmtMiB(r.helpersPss)}; ${pauses.length} pause processes, PSS ${fmtMiB(r.pausePss)}`);
  const callOnce: Record<string, () => Promise<unknown>> = {
    ListPodSandbox: () => side.rpc('ListPodSandbox', {}, 60_000),
    ListContainers: () => side.rpc('ListContainers', {}, 60_000),
    PodSandboxStatus: () => side.rpc('PodSandboxStatus', { podSandboxId: ids[Math.floor(ids.length / 2)] }, 60_000),
    Status: () => side.rpc('Status', {}, 60_000),
  };
  for (let round = 0; round < 20; round++) {
    for (const [name, fn] of Object.entries(callOnce)) {
      try {
        (r.calls[name] ??= []).push((await timed(fn)).ms);
      } catch (e) {
        note(name, e);
      }
    }
  }
  for (let i = 0; i < 10 && !isAborted(); i++) {
    try {
      const { ms, id } = await runPod('CONTAINER');
      r.serialAtScale.push(ms);
      await side.rpc('StopPodSandbox', { podSandboxId: id }, 120_000);
      await side.rpc('RemovePodSandbox', { podSandboxId: id }, 120_000);
    } catch (e) {
      note('serial Run at scale', e);
    }
  }

  // ---- restarts
  for (let k = 0; k < RESTARTS && !isAborted(); k++) {
    const tStop = performance.now();
    await side.stop();
    const exitMs = performance.now() - tStop;
    const start = performance.now();
    side.launch();
    let firstAnswerMs = NaN;
    let allReadyMs = NaN;
    let listed = 0;
    while (performance.now() - start < 120_000 && !isAborted()) {
      try {
        const { items } = await side.rpc<any>('ListPodSandbox', {}, 10_000);
        if (!Number.isFinite(firstAnswerMs)) firstAnswerMs = performance.now() - start;
        listed = items.filter((p: any) => p.state === 'SANDBOX_READY' && ids.includes(p.id)).length;
        if (listed >= ids.length) {
          allReadyMs = performance.now() - start;
          break;
        }
      } catch {
        side.resetClient();
      }
      await sleep(10);
    }
    let statusMs = NaN;
    try {
      await side.rpc('Status', {}, 10_000);
      statusMs = performance.now() - start;
    } catch (e) {
      note('Status after restart', e);
    }
    r.restarts.push({ exitMs, firstAnswerMs, allReadyMs, statusMs, listed });
    const own = side.lastStart ? `; the daemon says: ${await side.lastStart()}` : '';
    console.log(`${side.name}: restart ${k + 1}: exit ${fmtMs(exitMs)} ms; first List ${fmtMs(firstAnswerMs)} ms, all ${listed}/${ids.length} READY ${fmtMs(allReadyMs)} ms, Status ${fmtMs(statusMs)} ms${own}`);
    await sleep(2000);
  }

  // ---- teardown
  const t1 = performance.now();
  await pool(ids, CONC, async (id) => {
    try {
      await side.rpc('StopPodSandbox', { podSandboxId: id }, 300_000);
      await side.rpc('RemovePodSandbox', { podSandboxId: id }, 300_000);
    } catch (e) {
      note('Stop/Remove', e);
    }
  });
  r.teardownWallMs = performance.now() - t1;
  return r;
}

function printResults(results: Result[]): void {
  const c = results.find((x) => x.side === 'Corral');
  const d = results.find((x) => x.side === 'containerd');
  const get = (x: Result | undefined, f: (x: Result) => number) => (x ? f(x) : NaN);
  const rows: string[][] = [['figure', 'Corral', 'containerd', 'ratio (>1: Corral ahead)']];
  /** higherIsBetter: the ratio is Corral / containerd, so that above 1 still means Corral is ahead. */
  const row = (label: string, f: (x: Result) => number, fmt: (v: number) => string = fmtMs, higherIsBetter = false) => {
    const a = get(c, f);
    const b = get(d, f);
    rows.push([label, fmt(a), fmt(b), higherIsBetter ? ratio(a, b) : ratio(b, a)]);
  };
  const mib = (v: number) => fmtMiB(v);
  console.log(`\n=== Scale: ${c?.pods ?? d?.pods} pods (containerd: ${d?.pods ?? '-'}), ${CONC} in flight; ms unless said ===`);
  row('Run serial p50 (first pods)', (x) => p50(x.serial));
  row(`Run at ${CONC} in flight p50`, (x) => p50(x.fill));
  row(`Run at ${CONC} in flight p95`, (x) => p95(x.fill));
  row(`  p95 of the first 100`, (x) => p95((x as any).fillFirst));
  row(`  p95 of the last 100`, (x) => p95((x as any).fillLast));
  row(`  pods/s during the fill`, (x) => (x.fill.length / x.fillWallMs) * 1000, (v) => fmtNum(v), true);
  rows.push([`  p95 / serial p50 (the goal: ≤ 2)`, fmtNum(get(c, (x) => p95(x.fill) / p50(x.serial)), 2), fmtNum(get(d, (x) => p95(x.fill) / p50(x.serial)), 2), '']);
  row('Run serial p50 with all pods up', (x) => p50(x.serialAtScale));
  for (const k of ['ListPodSandbox', 'ListContainers', 'PodSandboxStatus', 'Status']) {
    row(`${k} p50 with all pods up`, (x) => p50(x.calls[k] ?? []));
    row(`${k} p95 with all pods up`, (x) => p95(x.calls[k] ?? []));
  }
  row('restart: daemon exit after SIGTERM, p50', (x) => p50(x.restarts.map((r) => r.exitMs)));
  row('restart: first List answered, p50', (x) => p50(x.restarts.map((r) => r.firstAnswerMs)));
  row('restart: every pod listed READY, p50', (x) => p50(x.restarts.map((r) => r.allReadyMs)));
  row('restart: every pod listed READY, worst', (x) => Math.max(...x.restarts.map((r) => r.allReadyMs)));
  row('restart: Status answered, p50', (x) => p50(x.restarts.map((r) => r.statusMs)));
  row('teardown (Stop+Remove all) wall, s', (x) => x.teardownWallMs / 1000, (v) => fmtNum(v));
  printTable(rows);

  const m: string[][] = [['memory', 'Corral', 'containerd', 'ratio (containerd / Corral)']];
  const mrow = (label: string, f: (x: Result) => number, fmt: (kib: number) => string = mib) => {
    const a = get(c, f);
    const b = get(d, f);
    m.push([label, fmt(a), fmt(b), ratio(b, a)]);
  };
  const kib = (v: number) => (Number.isFinite(v) ? `${v.toFixed(0)} KiB` : '-');
  console.log('\n=== Memory (KiB figures from /proc; per pod = growth / pods) ===');
  mrow('daemon RSS idle', (x) => x.idle?.rss ?? NaN);
  mrow('  of which anon', (x) => x.idle?.anon ?? NaN);
  mrow('  PSS', (x) => x.idle?.pss ?? NaN);
  mrow('daemon RSS after the pulls', (x) => x.afterPulls?.rss ?? NaN);
  mrow('  5 s later', (x) => x.afterPullsSettled?.rss ?? NaN);
  mrow('  growth over idle, 5 s later', (x) => (x.afterPullsSettled?.rss ?? NaN) - (x.idle?.rss ?? NaN));
  mrow('daemon RSS with all pods up', (x) => x.up?.rss ?? NaN);
  mrow('helper (shim) PSS, all pods', (x) => x.helpersPss);
  mrow('pause PSS, all pause processes', (x) => x.pausePss);
  mrow('per pod: daemon RSS growth', (x) => ((x.up?.rss ?? NaN) - (x.beforePods?.rss ?? NaN)) / x.pods, kib);
  mrow('per pod: daemon growth + shims PSS + pause PSS', (x) => ((x.up?.rss ?? NaN) - (x.beforePods?.rss ?? NaN) + x.helpersPss + x.pausePss) / x.pods, kib);
  printTable(m);
  for (const x of results) {
    console.log(`${x.side}: ${x.pauseCount} pause processes; ${x.errors.length} errors`);
    for (const e of [...new Set(x.errors)].slice(0, 5)) console.log(`  error: ${e}`);
  }
}

async function main(): Promise<void> {
  installSignalHandlers();
  const { tag, dir } = await makeBenchDir();
  const logRoot = path.join(dir, 'pod-logs');
  console.log(`scalebench (tag ${tag}): ${PODS} pods, ${CONC} in flight, ${SERIAL} serial first, every ${SHARED_EVERY || '-'}th pid POD, ${RESTARTS} restarts, ${IMAGES} images; ${new Date().toISOString()}`);
  console.log(`machine: ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB, Linux ${os.release()}, Node ${process.version}; load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);

  let reg: TestRegistry | undefined;
  const refs: string[] = [];
  if (IMAGES > 0) {
    reg = await startRegistry();
    onCleanup('registry', () => reg!.stop());
    for (let i = 0; i < IMAGES; i++) {
      await pushImage(reg, `scalebench/img${i}`, 'v1', await scaleImage(i));
      refs.push(`${reg.host}/scalebench/img${i}:v1`);
    }
  }

  const results: Result[] = [];
  const corral = new BenchCorral(path.join(dir, 'corral'), tag, '10.254.0.0/17');
  onCleanup('Corral daemon', () => corral.cleanup());
  await corral.start();
  let imageClient: ReturnType<typeof import('../src/cri/client.js').createImageClient> | undefined;
  const { createImageClient, call } = await import('../src/cri/client.js');
  onCleanup('Corral image client', async () => imageClient?.close());
  results.push(
    await runSide(
      {
        name: 'Corral',
        rpc: (m, q, ms) => corral.rpc(m, q, ms),
        imageRpc: (m, q, ms) => call((imageClient ??= createImageClient(corral.socket)), m, q, { deadlineMs: ms ?? 60_000 }),
        pid: () => corral.pid,
        helpers: () => [],
        stop: () => corral.stop(),
        launch: () => corral.launch(),
        resetClient: () => corral.dropClient(),
        async lastStart() {
          const lines = (await fs.readFile(corral.logFile, 'utf8')).split('\n').filter((l) => l.includes('"corral is serving"'));
          const e = JSON.parse(lines[lines.length - 1] ?? '{}');
          return `serving ${e.processMs ?? '?'} ms after its process began, ${e.startupMs ?? '?'} ms of it in startDaemon (recovery included)`;
        },
      },
      PODS,
      path.join(logRoot, 'corral'),
      refs,
    ),
  );

  if (!flags['skip-containerd'] && !isAborted()) {
    try {
      const version = await ensureContainerd();
      const prep = await execFile('bash', [path.join(packageRoot(), 'scripts/prepare-cgroups.sh')]);
      if (prep.code !== 0) throw new Error(`scripts/prepare-cgroups.sh failed: ${prep.stderr.trim()}`);
      const mirror = reg ? `\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."${reg.host}"]\n  endpoint = ["http://${reg.host}"]\n` : '';
      const ctrd = new BenchContainerd(path.join(dir, 'containerd'), tag, '10.254.128.0/17', mirror);
      onCleanup('containerd', () => ctrd.cleanup());
      await fs.mkdir(ctrd.dir, { recursive: true });
      const tarball = await buildPauseImage(path.join(dir, 'image'));
      await ctrd.start();
      await ctrd.importPauseImage(tarball);
      console.log(`containerd: ${version}`);
      results.push(
        await runSide(
          {
            name: 'containerd',
            rpc: (m, q, ms) => ctrd.rpc(m, q, ms),
            imageRpc: (m, q, ms) => ctrd.imageRpc(m, q, ms ?? 60_000),
            pid: () => ctrd.pid,
            helpers: () => ctrd.shimPids(),
            stop: () => ctrd.stop(),
            launch: () => ctrd.launch(),
            resetClient: () => ctrd.dropClient(),
          },
          CTRD_PODS,
          path.join(logRoot, 'containerd'),
          refs,
        ),
      );
    } catch (e) {
      console.log(`containerd: SKIPPED — ${errMessage(e).split('\n').slice(0, 6).join('\n    ')}`);
    }
  }
  printResults(results);
  console.log(`load average at end: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
}

runBench('scalebench', main);
