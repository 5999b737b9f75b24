/**
 * pullbench: how fast Corral pulls and unpacks an image with many layers from a local
 * registry (Debian's docker-registry on 127.0.0.1), cold (the image and all of its blobs
 * and unpacked layers gone) and warm (the image present), side by side with containerd
 * 1.6 doing the same CRI PullImage in the same run (what `crictl pull` sends), plus where
 * Corral's cold pull time goes: the daemon's own figure, a download floor and its
 * unpacker alone (no network) against GNU tar. Prints medians, ratios and the raw
 * per-round numbers; asserts nothing.
 *
 *   node dist/bench/pullbench.js [--layers N] [--mb-per-layer X] [--rounds R] [--skip-containerd]
 */
import { createHash, randomBytes } from 'node:crypto';
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
  errMessage,
  fmtMiB,
  fmtMs,
  fmtNum,
  installSignalHandlers,
  isAborted,
  onCleanup,
  p50,
  parseBenchFlags,
  pool,
  printTable,
  ratio,
  RssSampler,
  rssKiB,
  runCleanups,
  sleep,
  timed,
} from './lib.js';

// ---------------------------------------------------------------- flags

const USAGE = 'usage: node dist/bench/pullbench.js [--layers N] [--mb-per-layer X] [--rounds R] [--skip-containerd]';
const flags = parseBenchFlags(USAGE, {
  options: {
    layers: { type: 'string', default: '20' },
    'mb-per-layer': { type: 'string', default: '2' },
    rounds: { type: 'string', default: '5' },
    'skip-containerd': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
const LAYERS = Number(flags.layers);
const MB_PER_LAYER = Number(flags['mb-per-layer']);
const ROUNDS = Number(flags.rounds);
if (!Number.isInteger(LAYERS) || LAYERS < 1 || LAYERS > 120 || !(MB_PER_LAYER > 0 && MB_PER_LAYER <= 256) || !Number.isInteger(ROUNDS) || ROUNDS < 1) {
  console.error(`--layers must be 1..120, --mb-per-layer in (0, 256], --rounds >= 1\n${USAGE}`);
  process.exit(2);
}

/** Blobs downloaded and layers unpacked at once by a Corral pull (src/image: pull.ts and image-store.ts). */
const CORRAL_PULL_CONCURRENCY = 3;
const REPO = 'bench/many-layers';

// ---------------------------------------------------------------- the image

/**
 * Deterministic bytes that gzip shrinks about 2:1: 512-byte blocks alternate between
 * xorshift noise and a short repeating pattern (roughly what binaries and data do).
 */
function content(seed: number, n: number): Buffer {
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

/**
 * One data layer of about `bytes` bytes: half in many small files (0.5–16 KiB, spread
 * over 8 directories), the other half in two large files (one twice the other).
 */
function dataLayerEntries(l: number, bytes: number): TarEntry[] {
  const base = `opt/data${String(l).padStart(3, '0')}`;
  const entries: TarEntry[] = [{ path: 'opt/', type: 'directory' }, { path: `${base}/`, type: 'directory' }];
  for (let d = 0; d < 8; d++) entries.push({ path: `${base}/d${d}/`, type: 'directory' });
  let small = Math.floor(bytes / 2);
  for (let f = 0; small > 0; f++) {
    const size = Math.min(small, 512 + ((f * 2654435761 + l * 40503) >>> 0) % (16 * 1024 - 512));
    entries.push({ path: `${base}/d${f % 8}/f${f}`, content: content(l * 100_000 + f, size), mode: f % 5 === 0 ? 0o755 : 0o644 });
    small -= size;
  }
  const large = bytes - Math.floor(bytes / 2);
  entries.push({ path: `${base}/large-a`, content: content(l * 100_000 + 99_998, Math.floor((large * 2) / 3)) });
  entries.push({ path: `${base}/large-b`, content: content(l * 100_000 + 99_999, large - Math.floor((large * 2) / 3)) });
  return entries;
}

interface BenchImage {
  image: TestImage;
  files: number;
  /** Bytes of the uncompressed layer tars. */
  tarBytes: number;
  /** Bytes of the (gzip) layer blobs. */
  blobBytes: number;
}

async function manyLayerImage(): Promise<BenchImage> {
  const layers = [await buildLayer(busyboxEntries())];
  let files = 0;
  const bytes = Math.round(MB_PER_LAYER * 1e6);
  for (let l = 0; l < LAYERS; l++) {
    const entries = dataLayerEntries(l, bytes);
    files += entries.filter((e) => e.content !== undefined).length;
    layers.push(await buildLayer(entries, 'gzip'));
  }
  const image = buildImage({ layers });
  return { image, files, tarBytes: layers.reduce((n, l) => n + l.tar.length, 0), blobBytes: layers.reduce((n, l) => n + l.size, 0) };
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

interface SideResult {
  side: Side;
  base: StoreState;
  idleRss: number;
  peakRss: number;
  afterRss: number;
  warmup?: RoundRecord;
  rounds: RoundRecord[];
  imageSize?: number;
  disk?: { blobs: number; layers: number; layerInodes: number };
}

async function pullOnce(s: Side, ref: string, meter: RegistryMeter): Promise<PullRecord> {
  await meter.take(); // forget whatever came before
  const { ms } = await timed(() => s.rpc('PullImage', { image: { image: ref } }, 600_000));
  const got = await meter.take();
  const rec: PullRecord = { ms, ...got };
  const daemon = await s.lastDaemonPull?.();
  if (daemon) Object.assign(rec, { daemonMs: daemon.ms, downloaded: daemon.downloaded });
  return rec;
}

async function round(r: SideResult, ref: string, meter: RegistryMeter, sampler: RssSampler | undefined): Promise<RoundRecord> {
  const s = r.side;
  const { ms: remove } = await timed(() => s.rpc('RemoveImage', { image: { image: ref } }, 120_000));
  const { ms: gcWait, left } = await waitStoreAt(s, r.base);
  sampler?.start();
  const cold = await pullOnce(s, ref, meter);
  sampler?.stop();
  const coldInodes = (await dirUsage(s.snapshotsDir)).inodes;
  const warm = await pullOnce(s, ref, meter);
  return { remove, gcWait, left, cold, coldInodes, warm };
}

// ---------------------------------------------------------------- floors (no daemon)

/** HTTP GET of every blob from the registry (n at a time, keep-alive), sha256 on the way, written and fsynced. */
async function downloadFloor(reg: TestRegistry, image: TestImage, dir: string, concurrency: number): Promise<number> {
  await fs.mkdir(dir, { recursive: true });
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  try {
    const { ms } = await timed(() =>
      pool(image.blobs, concurrency, async (b) => {
        const file = path.join(dir, b.digest.slice(7));
        const res = await new Promise<http.IncomingMessage>((resolve, reject) => {
          http.get(`${reg.url}/v2/${REPO}/blobs/${b.digest}`, { agent }, resolve).on('error', reject);
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
async function overLayers(blobs: { file: string; mediaType: string }[], target: string, concurrency: number, fn: (b: { file: string; mediaType: string }, dir: string) => Promise<unknown>): Promise<number> {
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

/** Decompression and diff-ID hashing alone, as Corral's unpacker reads (1 MiB reads, 256 KiB inflate chunks). */
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

type FloorName = 'download' | 'unpack1' | 'unpackN' | 'gunzip' | 'tar' | 'create';

/** This machine's cost of making one small file: open(O_CREAT|O_EXCL) + 8 KiB write + close, 500 files in 8 dirs, serially; µs per file. */
async function createProbe(dir: string): Promise<number> {
  const data = Buffer.alloc(8192, 0x5a);
  await fs.mkdir(dir, { recursive: true });
  try {
    for (let d = 0; d < 8; d++) await fs.mkdir(path.join(dir, `d${d}`));
    const { ms } = await timed(async () => {
      for (let i = 0; i < 500 && !isAborted(); i++) {
        const fh = await fs.open(path.join(dir, `d${i % 8}`, `f${i}`), 'wx', 0o644);
        await fh.write(data);
        await fh.close();
      }
    });
    return (ms * 1000) / 500;
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  installSignalHandlers();
  const tag = randomBytes(3).toString('hex');
  const dir = `/run/corral-bench-${tag}`;
  await fs.mkdir(dir, { recursive: true });
  // Retried: after Ctrl-C a floor may still be making a file or two in there.
  onCleanup('bench dir', () => fs.rm(dir, { recursive: true, force: true, maxRetries: 20, retryDelay: 100 }));

  console.log(`building the image: busybox + ${LAYERS} layers of ~${MB_PER_LAYER} MB (gzip) ...`);
  const img = await manyLayerImage();
  const { image } = img;
  const reg = await startRegistry();
  onCleanup('registry', () => reg.stop());
  await pushImage(reg, REPO, 'v1', image);
  const meter = new RegistryMeter(reg);
  const ref = `${reg.host}/${REPO}:v1`;
  const mbTar = img.tarBytes / 1e6;
  const mbBlob = img.blobBytes / 1e6;
  console.log(
    `image ${ref}: ${image.layers.length} layers, ${img.files} regular files, ` +
      `${fmtNum(mbBlob)} MB compressed, ${fmtNum(mbTar)} MB uncompressed (MB = 10^6 bytes)`,
  );

  // ---- the daemons
  const results: SideResult[] = [];
  const { corral, imageRpc } = await startBenchCorral(path.join(dir, 'corral'), tag, '10.250.253.0/24');
  const corralImages = path.join(corral.rootDir, 'images');
  results.push({
    side: {
      name: 'Corral',
      pid: () => corral.pid,
      rpc: imageRpc,
      blobsDir: path.join(corralImages, 'blobs', 'sha256'),
      snapshotsDir: path.join(corralImages, 'snapshots'),
      lastDaemonPull: () => lastCorralPull(corral.logFile),
    },
    base: { blobs: 0, layers: 0 },
    idleRss: 0,
    peakRss: 0,
    afterRss: 0,
    rounds: [],
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
      results.push({
        side: {
          name: 'containerd',
          pid: () => ctrd.pid,
          rpc: (m, req, ms) => ctrd.imageRpc(m, req, ms),
          blobsDir: path.join(ctrd.rootDir, 'io.containerd.content.v1.content', 'blobs', 'sha256'),
          snapshotsDir: path.join(ctrd.rootDir, 'io.containerd.snapshotter.v1.overlayfs', 'snapshots'),
        },
        base: { blobs: 0, layers: 0 },
        idleRss: 0,
        peakRss: 0,
        afterRss: 0,
        rounds: [],
      });
    } catch (e) {
      containerdNote = `SKIPPED — ${errMessage(e)}`;
      console.log(`containerd: ${containerdNote}`);
    }
  }

  for (const r of results) {
    r.base = await storeState(r.side);
    r.idleRss = rssKiB(r.side.pid());
  }

  // ---- the layer blobs as files, for the floors
  const blobDir = path.join(dir, 'blobs');
  await fs.mkdir(blobDir, { recursive: true });
  const blobs: { file: string; mediaType: string }[] = [];
  for (const l of image.layers) {
    const file = path.join(blobDir, l.digest.slice(7));
    await fs.writeFile(file, l.bytes);
    blobs.push({ file, mediaType: l.mediaType });
  }
  const floors: Record<FloorName, number[]> = { download: [], unpack1: [], unpackN: [], gunzip: [], tar: [], create: [] };
  const warmupFloors: Partial<Record<FloorName, number>> = {};
  /** The floors, measured in every round right after the pulls, so they see the same state of this machine. */
  const floorRound = async (n: number, into: (k: FloorName, v: number) => void) => {
    const at = (what: string) => path.join(dir, `${what}-${n}`);
    const steps: [FloorName, () => Promise<number>][] = [
      ['download', () => downloadFloor(reg, image, at('download'), CORRAL_PULL_CONCURRENCY)],
      ['unpack1', () => overLayers(blobs, at('unpack1'), 1, (b, d) => applyLayer(b.file, b.mediaType, d))],
      ['unpackN', () => overLayers(blobs, at('unpackN'), CORRAL_PULL_CONCURRENCY, (b, d) => applyLayer(b.file, b.mediaType, d))],
      ['gunzip', () => overLayers(blobs, at('gunzip'), 1, (b) => gunzipHash(b.file))],
      ['tar', () => overLayers(blobs, at('tar'), 1, (b, d) => execChecked('tar', ['-xzpf', b.file, '-C', d, '--numeric-owner'], { timeoutMs: 120_000 }))],
      ['create', () => createProbe(at('create'))],
    ];
    for (const [name, step] of steps) {
      if (isAborted()) return;
      into(name, await step());
    }
  };

  // ---- one warm-up round (not in the medians), then ROUNDS rounds; the Corral/containerd order alternates.
  const samplers = new Map(results.map((r) => [r.side.name, new RssSampler(r.side.pid())]));
  for (let n = -1; n < ROUNDS && !isAborted(); n++) {
    const label = n < 0 ? 'warm-up ' : `round ${n + 1}`;
    const order = n % 2 === 0 ? results : [...results].reverse();
    for (const r of order) {
      if (isAborted()) break;
      const rec = await round(r, ref, meter, n < 0 ? undefined : samplers.get(r.side.name));
      if (n < 0) r.warmup = rec;
      else r.rounds.push(rec);
      const leftNote = rec.left.blobs || rec.left.layers ? `  NOT COLD: ${rec.left.blobs} blobs, ${rec.left.layers} snapshots left` : '';
      console.log(
        `${label}  ${r.side.name.padEnd(10)} cold ${fmtMs(rec.cold.ms).padStart(5)} ms (${rec.cold.blobGets} blob GETs)` +
          `  warm ${fmtMs(rec.warm.ms).padStart(5)} ms (${rec.warm.blobGets})  RemoveImage ${fmtMs(rec.remove)} ms, stores empty ${fmtMs(rec.gcWait)} ms later${leftNote}`,
      );
    }
    if (n === ROUNDS - 1 && !isAborted()) {
      // The last round leaves the images in place: sizes, status and memory, before the last floors.
      await sleep(1000);
      for (const r of results) {
        const s = r.side;
        r.afterRss = rssKiB(s.pid());
        r.peakRss = samplers.get(s.name)!.peakMain;
        const st = await s.rpc<any>('ImageStatus', { image: { image: ref } }, 30_000);
        r.imageSize = Number(st?.image?.size ?? NaN);
        const [b, l] = await Promise.all([dirUsage(s.blobsDir), dirUsage(s.snapshotsDir)]);
        r.disk = { blobs: b.bytes, layers: l.bytes, layerInodes: l.inodes };
      }
    }
    if (isAborted()) break;
    await floorRound(n, (k, v) => (n < 0 ? (warmupFloors[k] = v) : floors[k].push(v)));
    if (isAborted()) break;
    const f = (k: FloorName) => fmtMs(n < 0 ? warmupFloors[k]! : floors[k].at(-1)!);
    console.log(`${label}  floors     download ${f('download')}  unpack ${f('unpack1')} / ${f('unpackN')}  gunzip ${f('gunzip')}  tar ${f('tar')} ms  create ${f('create')} µs/file`);
  }
  if (isAborted()) return;
  for (const r of results) {
    await r.side.rpc('RemoveImage', { image: { image: ref } }, 120_000);
    const { left } = await waitStoreAt(r.side, r.base);
    if (left.blobs || left.layers) console.log(`${r.side.name}: after the last RemoveImage, ${left.blobs} blobs and ${left.layers} snapshots are still there`);
  }

  // ---- report
  const cor = results[0]!;
  const ctd = results[1];
  const med = (r: SideResult | undefined, f: (x: RoundRecord) => number | undefined) => (r ? p50(r.rounds.map(f).filter((v): v is number => v !== undefined && Number.isFinite(v))) : NaN);
  const cold = (r?: SideResult) => med(r, (x) => x.cold.ms);
  const warm = (r?: SideResult) => med(r, (x) => x.warm.ms);
  const mbps = (mb: number, ms: number) => mb / (ms / 1000);
  const fewestInodes = (r: SideResult) => Math.min(...r.rounds.map((x) => x.coldInodes));
  const ms = (v: number) => fmtMs(v);

  console.log(`\nPull of ${ref}, medians of ${ROUNDS} rounds (warm-up round excluded; Corral/containerd order alternates each round).`);
  console.log(`containerd: ${containerdNote}`);
  console.log('ratio: containerd / Corral for times and memory, Corral / containerd for MB/s; either way above 1 means Corral is ahead.\n');
  printTable([
    ['metric', 'Corral', 'containerd', 'ratio'],
    ['cold pull (ms)', ms(cold(cor)), ms(cold(ctd)), ratio(cold(ctd), cold(cor))],
    ['warm pull (ms)', ms(warm(cor)), ms(warm(ctd)), ratio(warm(ctd), warm(cor))],
    ['cold pull, MB/s uncompressed', fmtNum(mbps(mbTar, cold(cor))), fmtNum(mbps(mbTar, cold(ctd))), ratio(mbps(mbTar, cold(cor)), mbps(mbTar, cold(ctd)))],
    ['cold pull, MB/s compressed', fmtNum(mbps(mbBlob, cold(cor))), fmtNum(mbps(mbBlob, cold(ctd))), ratio(mbps(mbBlob, cold(cor)), mbps(mbBlob, cold(ctd)))],
    ['registry: blob GETs per cold / warm pull', `${med(cor, (x) => x.cold.blobGets)} / ${med(cor, (x) => x.warm.blobGets)}`, ctd ? `${med(ctd, (x) => x.cold.blobGets)} / ${med(ctd, (x) => x.warm.blobGets)}` : '-', ''],
    ['registry: MB of blobs per cold pull', fmtNum(med(cor, (x) => x.cold.bytes) / 1e6), ctd ? fmtNum(med(ctd, (x) => x.cold.bytes) / 1e6) : '-', ''],
    ['registry: manifest requests per cold / warm pull', `${med(cor, (x) => x.cold.manifestRequests)} / ${med(cor, (x) => x.warm.manifestRequests)}`, ctd ? `${med(ctd, (x) => x.cold.manifestRequests)} / ${med(ctd, (x) => x.warm.manifestRequests)}` : '-', ''],
    ['RemoveImage (ms)', ms(med(cor, (x) => x.remove)), ms(med(ctd, (x) => x.remove)), ratio(med(ctd, (x) => x.remove), med(cor, (x) => x.remove))],
    ['RemoveImage → stores empty (ms)', ms(med(cor, (x) => x.gcWait)), ms(med(ctd, (x) => x.gcWait)), ''],
    ['daemon RSS idle, before the pulls', fmtMiB(cor.idleRss), ctd ? fmtMiB(ctd.idleRss) : '-', ratio(ctd?.idleRss ?? NaN, cor.idleRss)],
    ['daemon RSS peak during cold pulls', fmtMiB(cor.peakRss), ctd ? fmtMiB(ctd.peakRss) : '-', ratio(ctd?.peakRss ?? NaN, cor.peakRss)],
    ['daemon RSS 1 s after the last pull', fmtMiB(cor.afterRss), ctd ? fmtMiB(ctd.afterRss) : '-', ratio(ctd?.afterRss ?? NaN, cor.afterRss)],
    ['on disk: blobs', fmtMiB((cor.disk?.blobs ?? NaN) / 1024), ctd ? fmtMiB((ctd.disk?.blobs ?? NaN) / 1024) : '-', ''],
    ['on disk: unpacked layers', fmtMiB((cor.disk?.layers ?? NaN) / 1024), ctd ? fmtMiB((ctd.disk?.layers ?? NaN) / 1024) : '-', ''],
    ['unpacked inodes: as a cold pull returned (fewest) / at the end', `${fewestInodes(cor)} / ${cor.disk?.layerInodes ?? '-'}`, ctd ? `${fewestInodes(ctd)} / ${ctd.disk?.layerInodes ?? '-'}` : '-', ''],
    ['ImageStatus size (bytes)', String(cor.imageSize ?? '-'), ctd ? String(ctd.imageSize ?? '-') : '-', ''],
  ]);

  const daemonCold = med(cor, (x) => x.cold.daemonMs);
  const daemonWarm = med(cor, (x) => x.warm.daemonMs);
  const unpackRow = (label: string, v: number[], mb: number) => [label, ms(p50(v)), fmtNum(mbps(mb, p50(v))), ratio(p50(v), cold(cor))];
  console.log(`\nWhere Corral's cold pull time goes (medians; the floors run in the bench process, no daemon, in every round after the pulls; MB/s of uncompressed data unless marked):\n`);
  printTable([
    ['what', 'ms', 'MB/s', 'of cold pull'],
    ['cold pull, as the client sees it', ms(cold(cor)), fmtNum(mbps(mbTar, cold(cor))), '1.00x'],
    ['cold pull inside the daemon ("image pulled" ms)', ms(daemonCold), fmtNum(mbps(mbTar, daemonCold)), ratio(daemonCold, cold(cor))],
    [`download floor: GET + sha256 + write + fsync, ${CORRAL_PULL_CONCURRENCY} at a time (MB/s compressed)`, ms(p50(floors.download)), fmtNum(mbps(mbBlob, p50(floors.download))), ratio(p50(floors.download), cold(cor))],
    ['Corral unpack alone (applyLayer), 1 layer at a time', ms(p50(floors.unpack1)), fmtNum(mbps(mbTar, p50(floors.unpack1))), ratio(p50(floors.unpack1), cold(cor))],
    [`Corral unpack alone (applyLayer), ${CORRAL_PULL_CONCURRENCY} layers at a time (as a pull does)`, ms(p50(floors.unpackN)), fmtNum(mbps(mbTar, p50(floors.unpackN))), ratio(p50(floors.unpackN), cold(cor))],
    ['gunzip + sha256 alone (Node zlib), 1 at a time', ms(p50(floors.gunzip)), fmtNum(mbps(mbTar, p50(floors.gunzip))), ratio(p50(floors.gunzip), cold(cor))],
    ['GNU tar -xzpf, 1 at a time (native floor)', ms(p50(floors.tar)), fmtNum(mbps(mbTar, p50(floors.tar))), ratio(p50(floors.tar), cold(cor))],
  ]);
  console.log(`  making one small file on this machine (open O_CREAT + 8 KiB write + close, serial): ${fmtNum(p50(floors.create), 0)} µs; × ${img.files} files = ${ms((p50(floors.create) * img.files) / 1000)} ms`);
  console.log(`  warm pull inside the daemon: ${ms(daemonWarm)} ms of ${ms(warm(cor))} ms at the client`);
  console.log(`  blobs Corral reports it downloaded per cold / warm pull: ${med(cor, (x) => x.cold.downloaded)} / ${med(cor, (x) => x.warm.downloaded)}`);

  console.log('\nper round (ms; w = warm-up, not in the medians):');
  const list = (r: SideResult, f: (x: RoundRecord) => number | undefined, digits = 0) =>
    [r.warmup ? `w ${fmtNum(f(r.warmup) ?? NaN, digits)}` : '', ...r.rounds.map((x) => fmtNum(f(x) ?? NaN, digits))].filter(Boolean).join('  ');
  for (const r of results) {
    console.log(`  ${r.side.name}`);
    console.log(`    cold pull          ${list(r, (x) => x.cold.ms)}`);
    if (r.side.lastDaemonPull) console.log(`    cold, in daemon    ${list(r, (x) => x.cold.daemonMs)}`);
    console.log(`    warm pull          ${list(r, (x) => x.warm.ms, 1)}`);
    console.log(`    RemoveImage        ${list(r, (x) => x.remove, 1)}`);
    console.log(`    until stores empty ${list(r, (x) => x.gcWait, 1)}`);
  }
  console.log('  floors');
  console.log(`    download           ${floors.download.map((v) => fmtNum(v, 0)).join('  ')}`);
  console.log(`    unpack, 1 at once  ${floors.unpack1.map((v) => fmtNum(v, 0)).join('  ')}`);
  console.log(`    unpack, ${CORRAL_PULL_CONCURRENCY} at once  ${floors.unpackN.map((v) => fmtNum(v, 0)).join('  ')}`);
  console.log(`    gunzip + sha256    ${floors.gunzip.map((v) => fmtNum(v, 0)).join('  ')}`);
  console.log(`    GNU tar            ${floors.tar.map((v) => fmtNum(v, 0)).join('  ')}`);
  console.log(`    µs per small file  ${floors.create.map((v) => fmtNum(v, 0)).join('  ')}`);
}

main()
  .catch((e) => {
    if (isAborted()) return; // a call cut off by the cleanup after Ctrl-C
    console.error(`pullbench failed: ${(e as Error)?.stack ?? errMessage(e)}`);
    process.exitCode = 1;
  })
  .finally(() => runCleanups());
