/**
 * pullbench: how fast Corral pulls and unpacks an image with many layers from a local
 * registry (Debian's docker-registry on 127.0.0.1), cold (nothing of it present) and
 * warm (already present), side by side with containerd 1.6 doing the same CRI PullImage
 * in the same run, plus Corral's unpack throughput alone (no network). Prints medians
 * and ratios; asserts nothing.
 *
 *   node dist/bench/pullbench.js [--layers N] [--mb-per-layer X] [--rounds R] [--skip-containerd]
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { createImageClient, call } from '../src/cri/client.js';
import type { ImageRpcName } from '../src/cri/proto.js';
import { applyLayer } from '../src/image/unpack.js';
import { pushImage, startRegistry } from '../test/helpers/registry.js';
import { buildImage, buildLayer, busyboxEntries, type TarEntry, type TestImage } from '../test/helpers/test-images.js';
import { BenchCorral } from './corral.js';
import { BenchContainerd, ensureContainerd } from './containerd.js';
import { errMessage, fmtMiB, installSignalHandlers, onCleanup, p50, printTable, rssKiB, runCleanups } from './lib.js';

const { values } = parseArgs({
  options: {
    layers: { type: 'string', default: '20' },
    'mb-per-layer': { type: 'string', default: '2' },
    rounds: { type: 'string', default: '5' },
    'skip-containerd': { type: 'boolean', default: false },
  },
});
const LAYERS = Number(values.layers);
const MB_PER_LAYER = Number(values['mb-per-layer']);
const ROUNDS = Number(values.rounds);

/** Deterministic bytes that compress about 2:1 (half random, half repeated), like real binaries. */
function content(seed: number, n: number): Buffer {
  const out = Buffer.alloc(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    if ((i >> 9) & 1) {
      out[i] = i & 0x3f;
      continue;
    }
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** busybox plus LAYERS layers, each about MB_PER_LAYER MB: 64 small files and one large one. */
async function manyLayerImage(): Promise<{ image: TestImage; uncompressedBytes: number }> {
  const layers = [await buildLayer(busyboxEntries())];
  const bytes = Math.round(MB_PER_LAYER * 1024 * 1024);
  for (let l = 0; l < LAYERS; l++) {
    const entries: TarEntry[] = [{ path: `data${l}/`, type: 'directory' }];
    const small = Math.floor(bytes / 2 / 64);
    for (let f = 0; f < 64; f++) entries.push({ path: `data${l}/small-${f}`, content: content(l * 1000 + f, small) });
    entries.push({ path: `data${l}/large`, content: content(l * 1000 + 999, bytes - 64 * small) });
    layers.push(await buildLayer(entries));
  }
  return { image: buildImage({ layers }), uncompressedBytes: layers.reduce((n, l) => n + l.tar.length, 0) };
}

interface Side {
  name: string;
  pull: () => Promise<number>;
  remove: () => Promise<void>;
  pid: () => number;
}

async function timedMs(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

async function main(): Promise<void> {
  installSignalHandlers();
  const tag = randomBytes(3).toString('hex');
  const dir = `/run/corral-bench-${tag}`;
  await fs.mkdir(dir, { recursive: true });
  onCleanup('bench dir', () => fs.rm(dir, { recursive: true, force: true }));

  console.log(`building an image: busybox + ${LAYERS} layers of ~${MB_PER_LAYER} MB ...`);
  const { image, uncompressedBytes } = await manyLayerImage();
  const compressed = image.layers.reduce((n, l) => n + l.size, 0);
  const reg = await startRegistry();
  onCleanup('registry', () => reg.stop());
  await pushImage(reg, 'bench/many-layers', 'v1', image);
  const ref = `${reg.host}/bench/many-layers:v1`;
  console.log(`image ${ref}: ${image.layers.length} layers, ${fmtMiB(compressed / 1024)} compressed, ${fmtMiB(uncompressedBytes / 1024)} uncompressed`);

  const sides: Side[] = [];
  const corral = new BenchCorral(path.join(dir, 'corral'), tag, '10.250.253.0/24');
  onCleanup('Corral daemon', () => corral.cleanup());
  await corral.start();
  const cc = createImageClient(corral.socket);
  onCleanup('Corral image client', async () => cc.close());
  const crpc = (m: ImageRpcName, req: object) => call<any>(cc, m, req, { deadlineMs: 600_000 });
  sides.push({
    name: 'Corral',
    pull: async () => timedMs(() => crpc('PullImage', { image: { image: ref } })),
    remove: async () => {
      await crpc('RemoveImage', { image: { image: ref } });
    },
    pid: () => corral.pid,
  });

  let containerdNote = '';
  if (!values['skip-containerd']) {
    try {
      const version = await ensureContainerd();
      const mirror = `\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."${reg.host}"]\n  endpoint = ["http://${reg.host}"]\n`;
      const ctrd = new BenchContainerd(path.join(dir, 'containerd'), tag, '10.252.253.0/24', mirror);
      onCleanup('containerd', () => ctrd.cleanup());
      await ctrd.start();
      sides.push({
        name: 'containerd',
        pull: async () => timedMs(() => ctrd.imageRpc('PullImage', { image: { image: ref } }, 600_000)),
        remove: async () => {
          await ctrd.imageRpc('RemoveImage', { image: { image: ref } }, 120_000);
        },
        pid: () => ctrd.pid,
      });
      containerdNote = version;
    } catch (e) {
      containerdNote = `SKIPPED — ${errMessage(e)}`;
    }
  }

  const cold = new Map<string, number[]>(sides.map((s) => [s.name, []]));
  const warm = new Map<string, number[]>(sides.map((s) => [s.name, []]));
  for (let r = 0; r < ROUNDS; r++) {
    for (const s of sides) {
      await s.remove(); // cold: nothing of the image left (both collect content and layers on removal)
      cold.get(s.name)!.push(await s.pull());
      warm.get(s.name)!.push(await s.pull());
    }
  }
  const rss = sides.map((s) => rssKiB(s.pid()));
  for (const s of sides) await s.remove();

  // Unpack alone: every layer blob through Corral's unpacker into a fresh directory.
  const unpackDir = path.join(dir, 'unpack');
  const blobs: { file: string; mediaType: string }[] = [];
  await fs.mkdir(unpackDir, { recursive: true });
  for (const [i, l] of image.layers.entries()) {
    const file = path.join(unpackDir, `layer-${i}`);
    await fs.writeFile(file, l.bytes);
    blobs.push({ file, mediaType: l.mediaType });
  }
  const unpackMs: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const target = path.join(unpackDir, `round-${r}`);
    unpackMs.push(
      await timedMs(async () => {
        for (const [i, b] of blobs.entries()) {
          const layerDir = path.join(target, String(i));
          await fs.mkdir(layerDir, { recursive: true });
          await applyLayer(b.file, b.mediaType, layerDir);
        }
      }),
    );
    await fs.rm(target, { recursive: true, force: true });
  }

  const mb = uncompressedBytes / 1e6;
  const c = (m: Map<string, number[]>, n: string) => p50(m.get(n) ?? []);
  const ratio = (m: Map<string, number[]>) => (sides.length > 1 ? `${(c(m, 'containerd') / c(m, 'Corral')).toFixed(2)}x` : '-');
  console.log(`\nmedians of ${ROUNDS} rounds; ratio = containerd / Corral (above 1: Corral faster)${containerdNote ? `; containerd: ${containerdNote}` : ''}`);
  printTable([
    ['', 'Corral', 'containerd', 'ratio'],
    ['cold pull (ms)', c(cold, 'Corral').toFixed(0), sides.length > 1 ? c(cold, 'containerd').toFixed(0) : '-', ratio(cold)],
    ['warm pull (ms)', c(warm, 'Corral').toFixed(1), sides.length > 1 ? c(warm, 'containerd').toFixed(1) : '-', ratio(warm)],
    ['cold pull, MB/s uncompressed', (mb / (c(cold, 'Corral') / 1000)).toFixed(0), sides.length > 1 ? (mb / (c(cold, 'containerd') / 1000)).toFixed(0) : '-', ''],
    ['daemon RSS after pulls', fmtMiB(rss[0] ?? 0), sides.length > 1 ? fmtMiB(rss[1] ?? 0) : '-', ''],
  ]);
  console.log(`\nCorral unpack alone (no network): median ${p50(unpackMs).toFixed(0)} ms for ${mb.toFixed(1)} MB = ${(mb / (p50(unpackMs) / 1000)).toFixed(0)} MB/s`);
  console.log('\nper round (ms):');
  for (const s of sides) console.log(`  ${s.name.padEnd(10)} cold ${cold.get(s.name)!.map((v) => v.toFixed(0)).join(' ')} | warm ${warm.get(s.name)!.map((v) => v.toFixed(1)).join(' ')}`);
  console.log(`  unpack     ${unpackMs.map((v) => v.toFixed(0)).join(' ')}`);
}

main()
  .catch((e) => {
    console.error(`pullbench failed: ${errMessage(e)}`);
    process.exitCode = 1;
  })
  .finally(() => runCleanups());
