/**
 * pullbench: how fast Corral pulls and unpacks images from a local registry (Debian's
 * docker-registry on 127.0.0.1), cold (the image and all of its blobs and unpacked layers
 * gone) and warm (the image present), side by side with containerd 1.6 doing the same CRI
 * PullImage in the same run (what `crictl pull` sends). Three shapes of image: many
 * layers of small files, one layer of thousands of small files, a few large files. For
 * each, the pulls of the two runtimes alternate, and after them come the floors: Corral's
 * unpacker alone (no network, MB/s of uncompressed tar), GNU tar, gunzip + sha256 in Node
 * and a download floor. Prints medians, ratios and the raw per-round numbers; asserts
 * nothing.
 *
 *   node dist/bench/pullbench.js [--shapes small-files,thousands,large-files] [--rounds R] [--skip-containerd]
 */
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, promises as fs } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import type { ImageRpcName } from '../src/cri/proto.js';
import { dirUsage } from '../src/image/fs-usage.js';
import { applyLayer } from '../src/image/unpack.js';
import { execChecked } from '../src/util/exec.js';
import { pushImage, startRegistry, type TestRegistry } from '../test/helpers/registry.js';
import { buildImage, buildLayer, busyboxEntries, type TarEntry, type TestImage } from '../test/helpers/test-images.js';
import { BenchContainerd, ensureContainerd } from './containerd.js';
import { startBenchCorral } from './corral.js';
import {
  compressibleBytes,
  daemonCpu,
  errMessage,
  fmtMiB,
  fmtMs,
  fmtNum,
  installSignalHandlers,
  isAborted,
  makeBenchDir,
  onCleanup,
  p50,
  parseBenchFlags,
  pool,
  printTable,
  procCpu,
  ratio,
  rssKiB,
  RssSampler,
  runBench,
  sleep,
  smallFileEntries,
  timed,
} from './lib.js';

// ---------------------------------------------------------------- flags

const SHAPES = ['small-files', 'thousands', 'large-files'] as const;
type ShapeName = (typeof SHAPES)[number];
const USAGE = `usage: node dist/bench/pullbench.js [--shapes ${SHAPES.join(',')}] [--rounds R] [--skip-containerd]`;
const flags = parseBenchFlags(USAGE, {
  options: {
    shapes: { type: 'string', default: SHAPES.join(',') },
    rounds: { type: 'string', default: '5' },
    'skip-containerd': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
const ROUNDS = Number(flags.rounds);
const SHAPES_RUN = String(flags.shapes).split(',').filter(Boolean) as ShapeName[];
if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || SHAPES_RUN.length === 0 || SHAPES_RUN.some((x) => !SHAPES.includes(x))) {
  console.error(`--rounds must be >= 1, --shapes a comma-separated list of ${SHAPES.join(', ')}\n${USAGE}`);
  process.exit(2);
}

/** Blobs downloaded and layers unpacked at once by a Corral pull (src/image: pull.ts and image-store.ts). */
const CORRAL_PULL_CONCURRENCY = 3;

// ---------------------------------------------------------------- the images

/**
 * The shapes of image pulled, each busybox plus:
 * - small-files: 20 layers of 200 files of 1–8 KiB and one 1 MiB file (issue 11's 21 layers);
 * - thousands: one layer of 4,200 files of 1–8 KiB in 40 directories;
 * - large-files: 4 layers of one 24 MiB file each.
 */
function shapeLayers(shape: ShapeName): TarEntry[][] {
  const out: TarEntry[][] = [];
  const opt: TarEntry = { path: 'opt/', type: 'directory' };
  if (shape === 'small-files') {
    for (let l = 0; l < 20; l++) {
      const base = `opt/data${String(l).padStart(3, '0')}`;
      out.push([opt, ...smallFileEntries(base, l, 200, 8), { path: `${base}/large`, content: compressibleBytes(l * 100_000 + 99_999, 1 << 20) }]);
    }
  } else if (shape === 'thousands') {
    out.push([opt, ...smallFileEntries('opt/many', 7, 4200, 40)]);
  } else {
    for (let l = 0; l < 4; l++) out.push([opt, { path: `opt/blob${l}`, content: compressibleBytes(l * 100_000 + 12_345, 24 << 20) }]);
  }
  return out;
}

interface BenchImage {
  shape: ShapeName;
  image: TestImage;
  ref: string;
  files: number;
  /** Bytes of the uncompressed layer tars. */
  tarBytes: number;
  /** Bytes of the (gzip) layer blobs. */
  blobBytes: number;
}

async function shapeImage(shape: ShapeName): Promise<Omit<BenchImage, 'ref'>> {
  const layers = [await buildLayer(busyboxEntries())];
  let files = 0;
  for (const entries of shapeLayers(shape)) {
    files += entries.filter((e) => e.content !== undefined).length;
    layers.push(await buildLayer(entries, 'gzip'));
  }
  const image = buildImage({ layers });
  return { shape, image, files, tarBytes: layers.reduce((n, l) => n + l.tar.length, 0), blobBytes: layers.reduce((n, l) => n + l.size, 0) };
}

// ---------------------------------------------------------------- registry access log

/** Blob GETs the registry answered with 200 (and their bytes) since the last call, from its access log. */
class RegistryMeter {
  private offset = 0;
  constructor(private readonly reg: TestRegistry) {}

  async take(): Promise<{ blobGets: number; bytes: number; manifestRequests: number }> {
    // The access log line is written when the response ends, which may be just after the client saw it.
    let text = this.reg.logs();
    for (let i = 0; i < 10; i++) {
      await sleep(30);
      const again = this.reg.logs();
      if (again.length === text.length) break;
      text = again;
    }
    const fresh = text.slice(this.offset);
    this.offset = text.length;
    let blobGets = 0;
    let bytes = 0;
    let manifestRequests = 0;
    for (const m of fresh.matchAll(/"(GET|HEAD) \/v2\/\S+\/(blobs|manifests)\/\S+ HTTP\/[\d.]+" (\d{3}) (\d+)/g)) {
      if (m[2] === 'manifests') manifestRequests++;
      else if (m[1] === 'GET' && m[3] === '200') {
        blobGets++;
        bytes += Number(m[4]);
      }
    }
    return { blobGets, bytes, manifestRequests };
  }
}

// ---------------------------------------------------------------- the two runtimes

interface StoreState {
  blobs: number;
  layers: number;
}

interface Side {
  name: 'Corral' | 'containerd';
  pid: () => number;
  rpc: <T = any>(method: ImageRpcName, req: object, deadlineMs: number) => Promise<T>;
  /** Entries in the content store's blob dir and the snapshot dir (anything there counts). */
  blobsDir: string;
  snapshotsDir: string;
  /** Corral only: the daemon's own duration of the last pull ("image pulled" log line). */
  lastDaemonPull?: () => Promise<{ ms: number; downloaded: number } | undefined>;
}

async function entries(dir: string): Promise<number> {
  return (await fs.readdir(dir).catch(() => [] as string[])).length;
}

async function storeState(s: Side): Promise<StoreState> {
  return { blobs: await entries(s.blobsDir), layers: await entries(s.snapshotsDir) };
}

/** Waits until the runtime's blob and snapshot dirs are back at `base`; returns how long it took and what is left. */
async function waitStoreAt(s: Side, base: StoreState, timeoutMs = 30_000): Promise<{ ms: number; left: StoreState }> {
  const t0 = performance.now();
  for (;;) {
    const now = await storeState(s);
    if ((now.blobs <= base.blobs && now.layers <= base.layers) || performance.now() - t0 > timeoutMs || isAborted()) {
      return { ms: performance.now() - t0, left: { blobs: now.blobs - base.blobs, layers: now.layers - base.layers } };
    }
    await sleep(20);
  }
}

async function lastCorralPull(logFile: string): Promise<{ ms: number; downloaded: number } | undefined> {
  const text = await fs.readFile(logFile, 'utf8').catch(() => '');
  const lines = text.split('\n');
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i]!;
    if (!line.includes('"image pulled"')) continue;
    try {
      const e = JSON.parse(line);
      return { ms: Number(e.ms), downloaded: Number(e.downloaded) };
    } catch {
      return undefined;
    }
  }
  return undefined;
}

// ---------------------------------------------------------------- per-round records

interface PullRecord {
  ms: number;
  blobGets: number;
  /** Bytes of those blob GETs. */
  bytes: number;
  manifestRequests: number;
  /** CPU time of the daemon and of its helpers (reaped by it, or by its corral-spawner) during the pull. */
  cpuMs: number;
  /** The daemon's own CPU time (utime + stime) during the pull. */
  selfCpuMs: number;
  /** Corral only. */
  daemonMs?: number;
  downloaded?: number;
}

interface RoundRecord {
  remove: number;
  /** RemoveImage returned → blob and snapshot dirs empty again. */
  gcWait: number;
  /** Left in the stores when the cold pull started (should be 0/0). */
  left: StoreState;
  cold: PullRecord;
  /** Inodes under the snapshot dir as the cold pull returned (everything must be on disk by then). */
  coldInodes: number;
  warm: PullRecord;
}

/** The daemon's CPU in ms, all of it (with its corral-spawner and the programs they reaped) and its own; NaN once it is gone. */
function daemonCpuMs(pid: number): { total: number; self: number } {
  try {
    const d = daemonCpu(pid);
    return { total: d.self + d.children, self: procCpu(pid).self };
  } catch {
    return { total: NaN, self: NaN };
  }
}

async function pullOnce(s: Side, ref: string, meter: RegistryMeter): Promise<PullRecord> {
  await meter.take(); // forget whatever came before
  const cpu0 = daemonCpuMs(s.pid());
  const { ms } = await timed(() => s.rpc('PullImage', { image: { image: ref } }, 600_000));
  const cpu1 = daemonCpuMs(s.pid());
  const got = await meter.take();
  const rec: PullRecord = { ms, cpuMs: cpu1.total - cpu0.total, selfCpuMs: cpu1.self - cpu0.self, ...got };
  const daemon = await s.lastDaemonPull?.();
  if (daemon) Object.assign(rec, { daemonMs: daemon.ms, downloaded: daemon.downloaded });
  return rec;
}

/** A cold pull (the stores at `base`), a warm pull, then RemoveImage and the wait until the stores are at `base` again. */
async function round(s: Side, base: StoreState, ref: string, meter: RegistryMeter, sampler: RssSampler | undefined): Promise<RoundRecord> {
  const before = await storeState(s);
  const left = { blobs: before.blobs - base.blobs, layers: before.layers - base.layers };
  sampler?.start();
  const cold = await pullOnce(s, ref, meter);
  sampler?.stop();
  const coldInodes = (await dirUsage(s.snapshotsDir)).inodes;
  const warm = await pullOnce(s, ref, meter);
  const { ms: remove } = await timed(() => s.rpc('RemoveImage', { image: { image: ref } }, 120_000));
  const { ms: gcWait } = await waitStoreAt(s, base);
  return { remove, gcWait, left, cold, coldInodes, warm };
}

// ---------------------------------------------------------------- floors (no daemon)

/** HTTP GET of every blob from the registry (n at a time, keep-alive), sha256 on the way, written and fsynced. */
async function downloadFloor(reg: TestRegistry, img: BenchImage, dir: string, concurrency: number): Promise<number> {
  await fs.mkdir(dir, { recursive: true });
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const repo = repoOf(img.shape);
  try {
    const { ms } = await timed(() =>
      pool(img.image.blobs, concurrency, async (b) => {
        const file = path.join(dir, b.digest.slice(7));
        const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
          http.get(`${reg.url}/v2/${repo}/blobs/${b.digest}`, { agent }, resolve).on('error', reject);
        });
        if (res.statusCode !== 200) throw new Error(`GET blob ${b.digest}: HTTP ${res.statusCode}`);
        const h = createHash('sha256');
        res.on('data', (c: Buffer) => h.update(c));
        await pipeline(res, createWriteStream(file));
        if (`sha256:${h.digest('hex')}` !== b.digest) throw new Error(`blob ${b.digest}: digest mismatch`);
        const fh = await fs.open(file, 'r+');
        await fh.sync();
        await fh.close();
      }),
    );
    return ms;
  } finally {
    agent.destroy();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** Every layer blob through `fn` into a directory of its own, n layers at a time; the time of the whole. */
async function overLayers(blobs: LayerFile[], target: string, concurrency: number, fn: (b: LayerFile, dir: string) => Promise<unknown>): Promise<number> {
  await fs.mkdir(target, { recursive: true });
  try {
    const { ms } = await timed(() =>
      pool(blobs, concurrency, async (b, i) => {
        const dir = path.join(target, String(i));
        await fs.mkdir(dir);
        await fn(b, dir);
      }),
    );
    return ms;
  } finally {
    await fs.rm(target, { recursive: true, force: true });
  }
}

/** Decompression and diff-ID hashing alone in Node (what Corral's unpacker did before it went native). */
async function gunzipHash(file: string): Promise<void> {
  const h = createHash('sha256');
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      cb();
    },
  });
  await pipeline(createReadStream(file, { highWaterMark: 1 << 20 }), createGunzip({ chunkSize: 256 << 10 }), sink);
  h.digest();
}

type FloorName = 'download' | 'unpack1' | 'unpackN' | 'gunzip' | 'tar';
const FLOORS: FloorName[] = ['download', 'unpack1', 'unpackN', 'gunzip', 'tar'];

interface LayerFile {
  file: string;
  mediaType: string;
}

const repoOf = (shape: ShapeName) => `bench/${shape}`;

// ---------------------------------------------------------------- main

interface ShapeRun {
  img: BenchImage;
  /** Per side name: its rounds. */
  sides: Map<string, { warmup?: RoundRecord; rounds: RoundRecord[] }>;
  blobs: LayerFile[];
  floors: Record<FloorName, number[]>;
}

async function main(): Promise<void> {
  installSignalHandlers();
  const { tag, dir } = await makeBenchDir();

  const reg = await startRegistry();
  onCleanup('registry', () => reg.stop());
  const runs: ShapeRun[] = [];
  for (const shape of SHAPES_RUN) {
    console.log(`building and pushing the ${shape} image ...`);
    const built = await shapeImage(shape);
    await pushImage(reg, repoOf(shape), 'v1', built.image);
    const img: BenchImage = { ...built, ref: `${reg.host}/${repoOf(shape)}:v1` };
    // The layer blobs as files, for the floors.
    const blobDir = path.join(dir, 'blobs', shape);
    await fs.mkdir(blobDir, { recursive: true });
    const blobs: LayerFile[] = [];
    for (const l of img.image.layers) {
      const file = path.join(blobDir, l.digest.slice(7));
      await fs.writeFile(file, l.bytes);
      blobs.push({ file, mediaType: l.mediaType });
    }
    runs.push({ img, sides: new Map(), blobs, floors: { download: [], unpack1: [], unpackN: [], gunzip: [], tar: [] } });
    console.log(
      `  ${img.ref}: ${img.image.layers.length} layers, ${img.files} regular files, ` +
        `${fmtNum(img.blobBytes / 1e6)} MB compressed, ${fmtNum(img.tarBytes / 1e6)} MB uncompressed (MB = 10^6 bytes)`,
    );
  }
  const meter = new RegistryMeter(reg);

  // ---- the daemons
  const sides: Side[] = [];
  const { corral, imageRpc } = await startBenchCorral(path.join(dir, 'corral'), tag, '10.250.253.0/24');
  const corralImages = path.join(corral.rootDir, 'images');
  sides.push({
    name: 'Corral',
    pid: () => corral.pid,
    rpc: imageRpc,
    blobsDir: path.join(corralImages, 'blobs', 'sha256'),
    snapshotsDir: path.join(corralImages, 'snapshots'),
    lastDaemonPull: () => lastCorralPull(corral.logFile),
  });
  let containerdNote = 'not run (--skip-containerd)';
  if (!flags['skip-containerd']) {
    try {
      containerdNote = await ensureContainerd();
      // The CRI plugin's registry settings: this loopback registry over plain HTTP.
      const mirror = `\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."${reg.host}"]\n  endpoint = ["http://${reg.host}"]\n`;
      const ctrd = new BenchContainerd(path.join(dir, 'containerd'), tag, '10.252.253.0/24', mirror);
      onCleanup('containerd', () => ctrd.cleanup());
      await ctrd.start();
      sides.push({
        name: 'containerd',
        pid: () => ctrd.pid,
        rpc: (m, req, ms) => ctrd.imageRpc(m, req, ms),
        blobsDir: path.join(ctrd.rootDir, 'io.containerd.content.v1.content', 'blobs', 'sha256'),
        snapshotsDir: path.join(ctrd.rootDir, 'io.containerd.snapshotter.v1.overlayfs', 'snapshots'),
      });
    } catch (e) {
      containerdNote = `SKIPPED — ${errMessage(e)}`;
      console.log(`containerd: ${containerdNote}`);
    }
  }
  const bases = new Map<string, StoreState>();
  const peakRss = new Map<string, number>();
  for (const s of sides) {
    bases.set(s.name, await storeState(s));
    peakRss.set(s.name, 0);
  }

  /** The floors of one shape, right after its pulls, so they see the same state of this machine. */
  const floorRound = async (run: ShapeRun, n: number): Promise<Partial<Record<FloorName, number>>> => {
    const at = (what: string) => path.join(dir, `${what}-${run.img.shape}-${n}`);
    const steps: Record<FloorName, () => Promise<number>> = {
      download: () => downloadFloor(reg, run.img, at('download'), CORRAL_PULL_CONCURRENCY),
      unpack1: () => overLayers(run.blobs, at('unpack1'), 1, (b, d) => applyLayer(b.file, b.mediaType, d)),
      unpackN: () => overLayers(run.blobs, at('unpackN'), CORRAL_PULL_CONCURRENCY, (b, d) => applyLayer(b.file, b.mediaType, d)),
      gunzip: () => overLayers(run.blobs, at('gunzip'), 1, (b) => gunzipHash(b.file)),
      tar: () => overLayers(run.blobs, at('tar'), 1, (b, d) => execChecked('tar', ['-xzpf', b.file, '-C', d, '--numeric-owner'], { timeoutMs: 120_000 })),
    };
    const got: Partial<Record<FloorName, number>> = {};
    for (const name of FLOORS) {
      if (isAborted()) break;
      got[name] = await steps[name]();
    }
    return got;
  };

  // ---- one warm-up round (not in the medians), then ROUNDS rounds; every round pulls every
  // shape on both sides, and the order of the sides alternates from one pull to the next.
  let flip = 0;
  for (let n = -1; n < ROUNDS && !isAborted(); n++) {
    const label = n < 0 ? 'warm-up ' : `round ${n + 1}`;
    for (const run of runs) {
      const order = flip++ % 2 === 0 ? sides : [...sides].reverse();
      for (const s of order) {
        if (isAborted()) break;
        const sampler = new RssSampler(s.pid());
        const rec = await round(s, bases.get(s.name)!, run.img.ref, meter, sampler);
        peakRss.set(s.name, Math.max(peakRss.get(s.name)!, sampler.peakMain));
        const per = run.sides.get(s.name) ?? { rounds: [] };
        run.sides.set(s.name, per);
        if (n < 0) per.warmup = rec;
        else per.rounds.push(rec);
        const leftNote = rec.left.blobs || rec.left.layers ? `  NOT COLD: ${rec.left.blobs} blobs, ${rec.left.layers} snapshots left` : '';
        console.log(
          `${label}  ${run.img.shape.padEnd(11)} ${s.name.padEnd(10)} cold ${fmtMs(rec.cold.ms).padStart(5)} ms (CPU ${fmtMs(rec.cold.cpuMs)} ms, daemon self ${fmtMs(rec.cold.selfCpuMs)}, ${rec.cold.blobGets} blob GETs, ${rec.coldInodes} inodes in the snapshots)` +
            `  warm ${fmtMs(rec.warm.ms).padStart(5)} ms  RemoveImage ${fmtMs(rec.remove)} ms${leftNote}`,
        );
      }
      if (isAborted()) break;
      const f = await floorRound(run, n);
      if (n >= 0) for (const k of FLOORS) if (f[k] !== undefined) run.floors[k].push(f[k]!);
      console.log(`${label}  ${run.img.shape.padEnd(11)} floors     ${FLOORS.map((k) => `${k} ${fmtMs(f[k] ?? NaN)}`).join('  ')} ms`);
    }
  }
  if (isAborted()) return;
  for (const s of sides) {
    for (const run of runs) await s.rpc('RemoveImage', { image: { image: run.img.ref } }, 120_000);
    const { left } = await waitStoreAt(s, bases.get(s.name)!);
    if (left.blobs || left.layers) console.log(`${s.name}: after the last RemoveImage, ${left.blobs} blobs and ${left.layers} snapshots are still there`);
  }

  // ---- report
  const mbps = (mb: number, ms: number) => mb / (ms / 1000);
  const med = (run: ShapeRun, side: string | undefined, f: (x: RoundRecord) => number | undefined) =>
    p50((side ? run.sides.get(side)?.rounds ?? [] : []).map(f).filter((v): v is number => v !== undefined && Number.isFinite(v)));
  const ctdName = sides[1]?.name;
  console.log(`\nCold and warm pulls, medians of ${ROUNDS} rounds (warm-up round excluded; the side that goes first alternates from pull to pull).`);
  console.log(`containerd: ${containerdNote}`);
  console.log('Corral / containerd: Corral\'s time as a fraction of containerd\'s (issue 11\'s goal for cold pulls: <= 0.50).\n');
  const rows: string[][] = [['image', 'files', 'MB (gz / tar)', 'Corral cold', 'containerd cold', 'Corral / containerd', 'Corral warm', 'containerd warm', 'Corral in daemon']];
  for (const run of runs) {
    const cc = med(run, 'Corral', (x) => x.cold.ms);
    const kc = med(run, ctdName, (x) => x.cold.ms);
    rows.push([
      run.img.shape,
      String(run.img.files),
      `${fmtNum(run.img.blobBytes / 1e6)} / ${fmtNum(run.img.tarBytes / 1e6)}`,
      `${fmtMs(cc)} ms`,
      `${fmtMs(kc)} ms`,
      ratio(cc, kc),
      `${fmtMs(med(run, 'Corral', (x) => x.warm.ms))} ms`,
      `${fmtMs(med(run, ctdName, (x) => x.warm.ms))} ms`,
      `${fmtMs(med(run, 'Corral', (x) => x.cold.daemonMs))} ms`,
    ]);
  }
  printTable(rows);
  console.log(`\n  RemoveImage medians: ${runs.map((r) => `${r.img.shape} ${fmtMs(med(r, 'Corral', (x) => x.remove))} / ${fmtMs(med(r, ctdName, (x) => x.remove))} ms`).join(', ')} (Corral / containerd)`);
  console.log(`  CPU time of the daemon and its helpers per cold pull, medians: ${runs.map((r) => `${r.img.shape} ${sides.map((s) => `${fmtMs(med(r, s.name, (x) => x.cold.cpuMs))}`).join(' / ')} ms`).join(', ')} (${sides.map((s) => s.name).join(' / ')})`);
  console.log(`  of which the daemon itself (utime + stime), medians: ${runs.map((r) => `${r.img.shape} ${sides.map((s) => `${fmtMs(med(r, s.name, (x) => x.cold.selfCpuMs))}`).join(' / ')} ms`).join(', ')} (${sides.map((s) => s.name).join(' / ')})`);
  console.log(`  daemon RSS peak during the cold pulls: ${sides.map((s) => `${s.name} ${fmtMiB(peakRss.get(s.name)!)}`).join(', ')}`);
  console.log(`  registry blob GETs per cold pull: ${runs.map((r) => `${r.img.shape} ${sides.map((s) => med(r, s.name, (x) => x.cold.blobGets)).join(' / ')}`).join(', ')}`);

  console.log('\nUnpack alone and the floors (medians; in the bench process, no daemon, after each shape\'s pulls; MB/s of uncompressed tar unless marked):\n');
  const frows: string[][] = [['image', 'Corral unpack, 1 layer at a time', `Corral unpack, ${CORRAL_PULL_CONCURRENCY} at a time (as a pull)`, 'GNU tar -xzpf, 1 at a time', 'gunzip + sha256 in Node', 'download floor (MB/s compressed)']];
  for (const run of runs) {
    const cell = (k: FloorName, mb: number) => `${fmtMs(p50(run.floors[k]))} ms = ${fmtNum(mbps(mb, p50(run.floors[k])))} MB/s`;
    const tarMb = run.img.tarBytes / 1e6;
    frows.push([run.img.shape, cell('unpack1', tarMb), cell('unpackN', tarMb), cell('tar', tarMb), cell('gunzip', tarMb), cell('download', run.img.blobBytes / 1e6)]);
  }
  printTable(frows);

  console.log('\nper round (ms; w = warm-up, not in the medians):');
  for (const run of runs) {
    console.log(`  ${run.img.shape}`);
    for (const s of sides) {
      const r = run.sides.get(s.name);
      if (!r) continue;
      const list = (f: (x: RoundRecord) => number | undefined) => [r.warmup ? `w ${fmtNum(f(r.warmup) ?? NaN, 0)}` : '', ...r.rounds.map((x) => fmtNum(f(x) ?? NaN, 0))].filter(Boolean).join('  ');
      console.log(`    ${s.name.padEnd(10)} cold ${list((x) => x.cold.ms)}   warm ${list((x) => x.warm.ms)}   cold CPU ${list((x) => x.cold.cpuMs)}   self ${list((x) => x.cold.selfCpuMs)}`);
    }
    for (const k of FLOORS) console.log(`    floor ${k.padEnd(8)} ${run.floors[k].map((v) => fmtNum(v, 0)).join('  ')}`);
  }
}

runBench('pullbench', main);
