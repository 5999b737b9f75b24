/**
 * Housekeeping calls with many images and pods: ImageFsInfo, ListImages, ImageStatus,
 * ListPodSandbox and ListContainers, as kubelet and crictl send them all the time,
 * timed on Corral and containerd 1.6 side by side. It only measures and prints.
 *
 *   node dist/bench/listbench.js [--images 100] [--files-per-image 40] [--pods 200]
 *                                [--containers 50] [--calls 30] [--pid CONTAINER|POD] [--skip-containerd]
 *
 * The images are busybox plus one layer of their own (`--files-per-image` small files),
 * pushed to a 127.0.0.1 docker-registry and pulled by both daemons. The pods are
 * kubelet-shaped (pid CONTAINER, or POD: with a pause process), made 4 at a time; the first `--containers` of them get
 * one running `sleep` container each. Every call is then sent `--calls` times, one at a
 * time, and the p50/p95 printed, with the daemon's CPU time per call (utime + stime of its
 * process over the calls, which load on the machine does not inflate as it does wall time);
 * the ratio is containerd / Corral (above 1: Corral ahead).
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { ImageRpcName, RuntimeRpcName } from '../src/cri/proto.js';
import { dirUsage } from '../src/image/fs-usage.js';
import { pushImage, startRegistry } from '../test/helpers/registry.js';
import { busyboxImage, buildImage, buildLayer, type TarEntry } from '../test/helpers/test-images.js';
import { startBenchCorral } from './corral.js';
import { BenchContainerd, buildPauseImage, ensureContainerd } from './containerd.js';
import {
  errMessage,
  fmtMs,
  fmtNum,
  installSignalHandlers,
  kubeletPodConfig,
  makeBenchDir,
  onCleanup,
  p50,
  p95,
  pool,
  printTable,
  procCpu,
  ratio,
  runBench,
  timed,
} from './lib.js';

const { values: flags } = parseArgs({
  options: {
    images: { type: 'string', default: '100' },
    'files-per-image': { type: 'string', default: '40' },
    pods: { type: 'string', default: '200' },
    containers: { type: 'string', default: '50' },
    calls: { type: 'string', default: '30' },
    pid: { type: 'string', default: 'CONTAINER' },
    'skip-containerd': { type: 'boolean', default: false },
  },
});
const IMAGES = Number(flags.images);
const FILES = Number(flags['files-per-image']);
const PODS = Number(flags.pods);
const CONTAINERS = Math.min(Number(flags.containers), PODS);
const CALLS = Number(flags.calls);
const PID = flags.pid === 'POD' ? 'POD' : 'CONTAINER';
const REPO = 'listbench/img';

interface Side {
  name: string;
  /** The daemon's process, whose CPU time per call is reported (0: not known). */
  pid: () => number;
  rpc: (m: RuntimeRpcName, req: object, ms?: number) => Promise<any>;
  imageRpc: (m: ImageRpcName, req: object, ms?: number) => Promise<any>;
  logRoot: string;
}

type Timings = Record<string, number[]>;

/** utime + stime of a process in microseconds (from /proc/<pid>/stat; NaN if unreadable). */
function cpuMicros(pid: number): number {
  try {
    return procCpu(pid).self * 1000;
  } catch {
    return NaN;
  }
}

async function populate(side: Side, refs: string[]): Promise<void> {
  let t0 = performance.now();
  await pool(refs, 3, async (ref) => {
    await side.imageRpc('PullImage', { image: { image: ref } }, 120_000);
  });
  console.log(`${side.name}: pulled ${refs.length} images in ${fmtMs(performance.now() - t0)} ms`);
  t0 = performance.now();
  const pods: { id: string; config: any }[] = [];
  await pool(Array.from({ length: PODS }, (_, i) => i), 4, async () => {
    const config = kubeletPodConfig('listbench', side.logRoot, PID);
    await fs.mkdir(config.logDirectory, { recursive: true });
    const { podSandboxId } = await side.rpc('RunPodSandbox', { config });
    pods.push({ id: podSandboxId, config });
  });
  console.log(`${side.name}: ${pods.length} pods up in ${fmtMs(performance.now() - t0)} ms`);
  t0 = performance.now();
  await pool(pods.slice(0, CONTAINERS), 4, async (p, i) => {
    const config = { metadata: { name: `c${i}`, attempt: 0 }, image: { image: refs[i % refs.length] }, command: ['sleep', '100000'], logPath: `c${i}.log`, linux: {} };
    const { containerId } = await side.rpc('CreateContainer', { podSandboxId: p.id, config, sandboxConfig: p.config });
    await side.rpc('StartContainer', { containerId });
  });
  console.log(`${side.name}: ${CONTAINERS} containers running in ${fmtMs(performance.now() - t0)} ms`);
}

/** Per call: wall-clock times (ms), and the daemon's CPU time per call (µs) over the whole batch. */
async function measure(side: Side, refs: string[]): Promise<{ t: Timings; cpu: Record<string, number> }> {
  const out: Timings = {};
  const cpu: Record<string, number> = {};
  const calls: [string, (i: number) => Promise<unknown>][] = [
    ['Version (a gRPC round trip)', () => side.rpc('Version', {})],
    ['ImageFsInfo', () => side.imageRpc('ImageFsInfo', {})],
    ['ListImages', () => side.imageRpc('ListImages', {})],
    ['ImageStatus', (i) => side.imageRpc('ImageStatus', { image: { image: refs[i % refs.length] } })],
    ['ListPodSandbox', () => side.rpc('ListPodSandbox', {})],
    ['ListContainers', () => side.rpc('ListContainers', {})],
  ];
  // What the calls return is checked once, so a figure never times an empty answer.
  const images = (await side.imageRpc('ListImages', {})).images.length;
  const pods = (await side.rpc('ListPodSandbox', {})).items.length;
  const containers = (await side.rpc('ListContainers', {})).containers.length;
  console.log(`${side.name}: lists ${images} images, ${pods} pods, ${containers} containers`);
  for (const [name, fn] of calls) {
    await fn(0); // warm-up
    const cpu0 = cpuMicros(side.pid());
    for (let i = 0; i < CALLS; i++) (out[name] ??= []).push((await timed(() => fn(i))).ms);
    cpu[name] = (cpuMicros(side.pid()) - cpu0) / CALLS;
  }
  return { t: out, cpu };
}

async function main(): Promise<void> {
  installSignalHandlers();
  const { tag, dir } = await makeBenchDir();

  console.log(`building ${IMAGES} images: busybox + a layer of ${FILES} files each ...`);
  const busybox = await busyboxImage();
  const reg = await startRegistry();
  onCleanup('registry', () => reg.stop());
  const refs: string[] = [];
  for (let i = 0; i < IMAGES; i++) {
    const entries: TarEntry[] = Array.from({ length: FILES }, (_, f) => ({ path: `data/d${f % 4}/f${f}`, content: `image ${i} file ${f}\n`.repeat(1 + (f % 50)) }));
    const image = buildImage({ layers: [busybox.layers[0]!, await buildLayer(entries)] });
    await pushImage(reg, REPO, `v${i}`, image);
    refs.push(`${reg.host}/${REPO}:v${i}`);
  }

  const sides: Side[] = [];
  const results: { side: Side; t: Timings; cpu: Record<string, number> }[] = [];
  const { corral, imageRpc } = await startBenchCorral(path.join(dir, 'corral'), tag, '10.250.250.0/24');
  sides.push({ name: 'Corral', pid: () => corral.pid, rpc: (m, q, ms) => corral.rpc(m, q, ms), imageRpc, logRoot: path.join(dir, 'corral-logs') });

  let containerdNote = 'not run (--skip-containerd)';
  if (!flags['skip-containerd']) {
    try {
      containerdNote = await ensureContainerd();
      const mirror = `\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."${reg.host}"]\n  endpoint = ["http://${reg.host}"]\n`;
      const ctrd = new BenchContainerd(path.join(dir, 'containerd'), tag, '10.252.250.0/24', mirror);
      onCleanup('containerd', () => ctrd.cleanup());
      await fs.mkdir(ctrd.dir, { recursive: true });
      const tarball = await buildPauseImage(path.join(dir, 'image'));
      await ctrd.start();
      await ctrd.importPauseImage(tarball);
      sides.push({ name: 'containerd', pid: () => ctrd.pid, rpc: (m, q, ms) => ctrd.rpc(m, q, ms), imageRpc: (m, q, ms = 60_000) => ctrd.imageRpc(m, q, ms), logRoot: path.join(dir, 'containerd-logs') });
    } catch (e) {
      containerdNote = `SKIPPED — ${errMessage(e)}`;
      console.log(`containerd: ${containerdNote}`);
    }
  }

  for (const side of sides) await populate(side, refs);
  // containerd samples snapshot usage every 10 s: let it see every snapshot once.
  if (sides.length > 1) await new Promise((r) => setTimeout(r, 11_000));
  for (const side of sides) results.push({ side, ...(await measure(side, refs)) });
  const walk = await timed(() => dirUsage(path.join(corral.rootDir, 'images')));
  console.log(
    `\n${IMAGES} images (${walk.value.inodes} inodes, ${fmtMs(walk.value.bytes / 1048576)} MiB in Corral's image store), ${PODS} pods (pid ${PID}), ${CONTAINERS} running containers; ` +
      `${CALLS} calls each, one at a time; containerd: ${containerdNote}`,
  );
  const [c, d] = results;
  const rows = [['call', 'Corral p50', 'p95', 'CPU µs', ...(d ? ['containerd p50', 'p95', 'CPU µs', 'ratio p50'] : [])]];
  for (const name of Object.keys(c!.t)) {
    const a = c!.t[name]!;
    const b = d?.t[name];
    rows.push([
      name, fmtMs(p50(a)), fmtMs(p95(a)), fmtNum(c!.cpu[name]!, 0),
      ...(b ? [fmtMs(p50(b)), fmtMs(p95(b)), fmtNum(d!.cpu[name]!, 0), ratio(p50(b), p50(a))] : []),
    ]);
  }
  console.log('ms (CPU µs: the daemon process\'s CPU time per call, over the calls; containerd\'s own process only):');
  printTable(rows);
  console.log(`a du-like walk of Corral's image store from the bench process (what each ImageFsInfo did before): ${fmtMs(walk.ms)} ms`);
}

runBench('listbench', main);
