/**
 * Memory after pulls: the Corral daemon's RSS idle, at its peak during, and 15 s after a
 * series of cold pulls, for several allocator settings (glibc tunables given in the daemon's
 * environment), interleaved run by run so every setting meets the machine in the same state.
 * It only measures and prints; it asserts nothing.
 *
 *   npm run build && node dist/bench/heapbench.js [--shapes large-files,thousands] [--pulls 5] [--runs 3]
 *       [--settings shipped,none,mmap32,arena2,...]
 *
 * `shipped` is what the launchers give (DAEMON_ENV, src/cli/node-flags.ts), `none` nothing;
 * the others are in SETTINGS below. The defaults compare the two on the two shapes, 3 runs.
 *
 * Per run, per shape, per setting (a fresh daemon each time, the settings' order rotated from
 * one run to the next): 3 s after the daemon answers, its memory idle; then `--pulls` cold
 * pulls of distinct images one after the other, /proc/<pid>/status sampled every 50 ms for
 * the peak; its memory right after, 5 s and 15 s later. Memory is VmRSS, RssAnon and, from
 * /proc/<pid>/smaps, the resident part of glibc's main heap ([heap]) and of the anonymous
 * mappings (V8's heap, glibc's mmapped chunks and thread arenas). CPU per pull is the
 * daemon's utime+stime with its corral-spawner's (plus the unpack helpers they reaped) over
 * the pulls, divided by their count; the daemon's minor faults per pull too (an allocator
 * that mmaps every big Buffer pays them).
 *
 * Shapes (each busybox plus, distinct per image): large-files, 4 layers of one 24 MiB file;
 * thousands, one layer of 4,200 files of 1–8 KiB; scale, scalebench's (200 small files, 2 × 1 MiB).
 */
import { promises as fs, readFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { DAEMON_ENV } from '../src/cli/node-flags.js';
import { pushImage, startRegistry } from '../test/helpers/registry.js';
import { buildImage, buildLayer, busyboxEntries, type TarEntry, type TestImage } from '../test/helpers/test-images.js';
import { BenchCorral } from './corral.js';
import { compressibleBytes, daemonCpu, fmtNum, installSignalHandlers, isAborted, makeBenchDir, onCleanup, p50, parseBenchFlags, printTable, runBench, sleep, smallFileEntries } from './lib.js';
import { createImageClient, call } from '../src/cri/client.js';

const T = (s: string) => ({ GLIBC_TUNABLES: s });
/** The settings compared: the daemon's extra environment for each. */
const SETTINGS: Record<string, Record<string, string>> = {
  shipped: { ...DAEMON_ENV },
  none: {},
  mmap16: T('glibc.malloc.mmap_threshold=16384'),
  mmap32: T('glibc.malloc.mmap_threshold=32768'),
  mmap64: T('glibc.malloc.mmap_threshold=65536'),
  mmap128: T('glibc.malloc.mmap_threshold=131072'),
  mmap256: T('glibc.malloc.mmap_threshold=262144'),
  mmap1m: T('glibc.malloc.mmap_threshold=1048576'),
  trim1m: T('glibc.malloc.trim_threshold=1048576'),
  arena1: T('glibc.malloc.arena_max=1'),
  arena2: T('glibc.malloc.arena_max=2'),
  arena4: T('glibc.malloc.arena_max=4'),
  'mmap128+arena2': T('glibc.malloc.mmap_threshold=131072:glibc.malloc.arena_max=2'),
  'mmap256+arena2': T('glibc.malloc.mmap_threshold=262144:glibc.malloc.arena_max=2'),
  'mmap128+arena1': T('glibc.malloc.mmap_threshold=131072:glibc.malloc.arena_max=1'),
  'mmap32+arena2': T('glibc.malloc.mmap_threshold=32768:glibc.malloc.arena_max=2'),
  'mmap16+arena2': T('glibc.malloc.mmap_threshold=16384:glibc.malloc.arena_max=2'),
};
const SHAPES = ['large-files', 'thousands', 'scale'] as const;
type Shape = (typeof SHAPES)[number];

const USAGE = `usage: node dist/bench/heapbench.js [--shapes ${SHAPES.join(',')}] [--pulls 5] [--runs 3] [--settings ${Object.keys(SETTINGS).join(',')}]`;
const flags = parseBenchFlags(USAGE, {
  options: {
    shapes: { type: 'string', default: 'large-files,thousands' },
    pulls: { type: 'string', default: '5' },
    runs: { type: 'string', default: '3' },
    settings: { type: 'string', default: 'shipped,none' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
const PULLS = Number(flags.pulls);
const RUNS = Number(flags.runs);
const SHAPES_RUN = flags.shapes.split(',').filter(Boolean) as Shape[];
const SETTINGS_RUN = flags.settings.split(',').filter(Boolean);
if (!(PULLS >= 1 && RUNS >= 1) || SHAPES_RUN.some((s) => !SHAPES.includes(s)) || SETTINGS_RUN.some((s) => !(s in SETTINGS))) {
  console.error(USAGE);
  process.exit(2);
}

function layersOf(shape: Shape, i: number): TarEntry[][] {
  const opt: TarEntry = { path: 'opt/', type: 'directory' };
  if (shape === 'large-files') return [0, 1, 2, 3].map((l) => [opt, { path: `opt/blob${l}`, content: compressibleBytes(i * 1000 + l, 24 << 20) }]);
  if (shape === 'thousands') return [[opt, ...smallFileEntries('opt/many', i, 4200, 40)]];
  const small: TarEntry[] = [{ path: `data${i}/`, type: 'directory' }];
  for (let f = 0; f < 200; f++) small.push({ path: `data${i}/f${f}`, content: randomBytes(512 + ((f * 997) % 8000)) });
  return [small, [{ path: `big${i}/`, type: 'directory' }, { path: `big${i}/a`, content: randomBytes(1 << 20) }, { path: `big${i}/b`, content: randomBytes(1 << 20) }]];
}

async function imageOf(shape: Shape, i: number): Promise<TestImage> {
  const layers = [await buildLayer(busyboxEntries())];
  for (const entries of layersOf(shape, i)) layers.push(await buildLayer(entries, 'gzip'));
  return buildImage({ layers });
}

interface Mem {
  rss: number;
  anon: number;
  /** Resident KiB of glibc's main heap ([heap]) and of anonymous mappings. */
  heap: number;
  anonMaps: number;
}

function memOf(pid: number): Mem {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN);
  let heap = 0;
  let anonMaps = 0;
  let kind: 'heap' | 'anon' | 'other' = 'other';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ (\d+)\s*(.*)$/.exec(line);
    if (head) {
      kind = head[2] === '[heap]' ? 'heap' : head[1] === '0' && head[2] === '' ? 'anon' : 'other';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB/.exec(line);
    if (rss && kind === 'heap') heap += Number(rss[1]);
    if (rss && kind === 'anon') anonMaps += Number(rss[1]);
  }
  return { rss: kib('VmRSS'), anon: kib('RssAnon'), heap, anonMaps };
}


interface Record_ {
  setting: string;
  shape: Shape;
  idle: Mem;
  peakRss: number;
  peakAnon: number;
  after: Mem;
  after5: Mem;
  after15: Mem;
  cpuPerPull: number;
  childCpuPerPull: number;
  faultsPerPull: number;
  pullMs: number;
}

async function oneDaemon(dir: string, tag: string, setting: string, shape: Shape, refs: string[]): Promise<Record_> {
  const corral = new BenchCorral(dir, tag, '10.254.0.0/24');
  corral.daemonEnv = SETTINGS[setting]!;
  let images: ReturnType<typeof createImageClient> | undefined;
  try {
    await corral.start();
    images = createImageClient(corral.socket);
    await sleep(3000);
    const pid = corral.pid;
    const idle = memOf(pid);
    let peakRss = idle.rss;
    let peakAnon = idle.anon;
    const sampler = setInterval(() => {
      try {
        const status = readFileSync(`/proc/${pid}/status`, 'utf8');
        peakRss = Math.max(peakRss, Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0));
        peakAnon = Math.max(peakAnon, Number(/^RssAnon:\s+(\d+)/m.exec(status)?.[1] ?? 0));
      } catch {
        /* gone */
      }
    }, 50);
    const c0 = daemonCpu(pid);
    const t0 = performance.now();
    try {
      for (const ref of refs) await call(images, 'PullImage', { image: { image: ref } }, { deadlineMs: 300_000 });
    } finally {
      clearInterval(sampler);
    }
    const pullMs = (performance.now() - t0) / refs.length;
    const c1 = daemonCpu(pid);
    const after = memOf(pid);
    await sleep(5000);
    const after5 = memOf(pid);
    await sleep(10_000);
    const after15 = memOf(pid);
    return {
      setting,
      shape,
      idle,
      peakRss: Math.max(peakRss, after.rss),
      peakAnon: Math.max(peakAnon, after.anon),
      after,
      after5,
      after15,
      cpuPerPull: (c1.self - c0.self) / refs.length,
      childCpuPerPull: (c1.children - c0.children) / refs.length,
      faultsPerPull: (c1.minflt - c0.minflt) / refs.length,
      pullMs,
    };
  } finally {
    images?.close();
    await corral.cleanup();
    await fs.rm(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 });
  }
}

const mib = (kib: number) => fmtNum(kib / 1024);

async function main(): Promise<void> {
  installSignalHandlers();
  const { tag, dir } = await makeBenchDir();
  console.log(`heapbench ${tag}: ${PULLS} cold pulls per daemon; shapes ${SHAPES_RUN.join(', ')}; settings ${SETTINGS_RUN.join(', ')}; ${RUNS} runs`);
  for (const s of SETTINGS_RUN) console.log(`  ${s}: ${Object.entries(SETTINGS[s]!).map(([k, v]) => `${k}=${v}`).join(' ') || '(nothing added)'}`);

  const reg = await startRegistry();
  onCleanup('registry', () => reg.stop());
  const refs = new Map<Shape, string[]>();
  for (const shape of SHAPES_RUN) {
    console.log(`building and pushing ${PULLS} ${shape} images ...`);
    const list: string[] = [];
    for (let i = 0; i < PULLS; i++) {
      await pushImage(reg, `heap/${shape}`, `v${i}`, await imageOf(shape, i));
      list.push(`${reg.host}/heap/${shape}:v${i}`);
    }
    refs.set(shape, list);
  }

  const records: Record_[] = [];
  let n = 0;
  for (let run = 0; run < RUNS && !isAborted(); run++) {
    const order = SETTINGS_RUN.map((_, k) => SETTINGS_RUN[(k + run) % SETTINGS_RUN.length]!);
    for (const shape of SHAPES_RUN) {
      for (const setting of order) {
        if (isAborted()) break;
        const load = readFileSync('/proc/loadavg', 'utf8').split(' ')[0];
        const r = await oneDaemon(path.join(dir, `d${n}`), `${tag.slice(0, 4)}${n++ % 10}`, setting, shape, refs.get(shape)!);
        records.push(r);
        console.log(
          `run ${run + 1} ${shape.padEnd(11)} ${setting.padEnd(15)} idle ${mib(r.idle.rss)}  peak ${mib(r.peakRss)} (anon ${mib(r.peakAnon)})  ` +
            `+15 s ${mib(r.after15.rss)} (growth ${mib(r.after15.rss - r.idle.rss)}; heap ${mib(r.after15.heap)}, anon maps ${mib(r.after15.anonMaps)})  ` +
            `CPU/pull ${r.cpuPerPull.toFixed(0)} + ${r.childCpuPerPull.toFixed(0)} ms, ${r.faultsPerPull.toFixed(0)} faults, ${r.pullMs.toFixed(0)} ms/pull  load ${load}`,
        );
      }
    }
  }

  console.log(`\nMedians over ${RUNS} runs (MiB; growth = RSS − idle RSS; CPU per pull in ms, daemon and its spawner + the helpers they reaped):\n`);
  const rows: string[][] = [['shape', 'setting', 'idle', 'peak', 'peak anon', 'after', '+5 s', '+15 s', 'growth +15 s (min–max)', 'heap +15 s', 'anon maps +15 s', 'CPU/pull', 'faults/pull', 'ms/pull']];
  for (const shape of SHAPES_RUN) {
    for (const setting of SETTINGS_RUN) {
      const rs = records.filter((r) => r.shape === shape && r.setting === setting);
      if (rs.length === 0) continue;
      const m = (f: (r: Record_) => number) => p50(rs.map(f));
      const growth = rs.map((r) => r.after15.rss - r.idle.rss);
      rows.push([
        shape,
        setting,
        mib(m((r) => r.idle.rss)),
        mib(m((r) => r.peakRss)),
        mib(m((r) => r.peakAnon)),
        mib(m((r) => r.after.rss)),
        mib(m((r) => r.after5.rss)),
        mib(m((r) => r.after15.rss)),
        `${mib(p50(growth))} (${mib(Math.min(...growth))}–${mib(Math.max(...growth))})`,
        mib(m((r) => r.after15.heap)),
        mib(m((r) => r.after15.anonMaps)),
        `${m((r) => r.cpuPerPull).toFixed(0)} + ${m((r) => r.childCpuPerPull).toFixed(0)}`,
        m((r) => r.faultsPerPull).toFixed(0),
        m((r) => r.pullMs).toFixed(0),
      ]);
    }
  }
  printTable(rows, 2);
}

runBench('heapbench', main);
