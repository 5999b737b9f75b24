/**
 * The stats calls kubelet sends every few seconds on a live node (its /stats/summary and
 * eviction manager): ListContainerStats and ListPodSandboxStats, plus one ContainerStats and
 * one PodSandboxStats, timed on Corral and containerd 1.6 side by side. It only measures and prints.
 *
 *   node dist/bench/statsbench.js [--pods 50] [--containers-per-pod 2] [--calls 40] [--rounds 4]
 *                                 [--pid CONTAINER|POD] [--skip-containerd]
 *
 * Both daemons get the same kubelet-shaped pods, each with `--containers-per-pod` busybox
 * containers running `sleep`, pulled from a 127.0.0.1 docker-registry. Each round sends
 * every call `--calls` times, one at a time, to one side and then to the other (the order
 * alternates between rounds, so slow spells of this shared machine hit both); the p50/p95
 * over all rounds are printed, with each round's p50 to show the noise. The ratio is
 * containerd / Corral (above 1: Corral ahead). Everything is removed at the end, also on
 * failure or Ctrl-C.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { RuntimeRpcName } from '../src/cri/proto.js';
import { execFile } from '../src/util/exec.js';
import { packageRoot } from '../src/util/paths.js';
import { pushImage, startRegistry } from '../test/helpers/registry.js';
import { busyboxImage } from '../test/helpers/test-images.js';
import { BenchCorral } from './corral.js';
import { BenchContainerd, buildPauseImage, ensureContainerd } from './containerd.js';
import {
  errMessage,
  fmtMs,
  installSignalHandlers,
  isAborted,
  kubeletPodConfig,
  makeBenchDir,
  onCleanup,
  p50,
  p95,
  parseBenchFlags,
  pool,
  printTable,
  ratio,
  runBench,
  sleep,
  timed,
} from './lib.js';

const USAGE = 'usage: node dist/bench/statsbench.js [--pods 50] [--containers-per-pod 2] [--calls 40] [--rounds 4] [--pid CONTAINER|POD] [--skip-containerd]';
const flags = parseBenchFlags(USAGE, {
  options: {
    pods: { type: 'string', default: '50' },
    'containers-per-pod': { type: 'string', default: '2' },
    calls: { type: 'string', default: '40' },
    rounds: { type: 'string', default: '4' },
    pid: { type: 'string', default: 'CONTAINER' },
    'skip-containerd': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
const PODS = Number(flags.pods);
const PER_POD = Number(flags['containers-per-pod']);
const CALLS = Number(flags.calls);
const ROUNDS = Number(flags.rounds);
const PID = flags.pid === 'POD' ? 'POD' : 'CONTAINER';
if (![PODS, PER_POD, CALLS, ROUNDS].every((n) => Number.isInteger(n) && n >= 1)) {
  console.error(`--pods, --containers-per-pod, --calls and --rounds must be positive integers\n${USAGE}`);
  process.exit(2);
}

interface Side {
  name: string;
  rpc: (m: RuntimeRpcName, req: object, ms?: number) => Promise<any>;
  logRoot: string;
  /** One pod and one container, for the single-object calls. */
  podId: string;
  containerId: string;
  /** Call name → milliseconds of every timed call; and each round's p50. */
  t: Record<string, number[]>;
  roundP50: Record<string, number[]>;
}

const CALL_NAMES = ['ListContainerStats', 'ListPodSandboxStats', 'ContainerStats', 'PodSandboxStats', 'Version (a gRPC round trip)'] as const;

function callsOf(side: Side): [string, () => Promise<unknown>][] {
  return [
    ['ListContainerStats', () => side.rpc('ListContainerStats', {})],
    ['ListPodSandboxStats', () => side.rpc('ListPodSandboxStats', {})],
    ['ContainerStats', () => side.rpc('ContainerStats', { containerId: side.containerId })],
    ['PodSandboxStats', () => side.rpc('PodSandboxStats', { podSandboxId: side.podId })],
    ['Version (a gRPC round trip)', () => side.rpc('Version', {})],
  ];
}

async function populate(side: Side, image: string, cgroupRoot: string): Promise<void> {
  let t0 = performance.now();
  const pods: { id: string; config: any }[] = [];
  await pool(Array.from({ length: PODS }, (_, i) => i), 4, async () => {
    const config = kubeletPodConfig('statsbench', side.logRoot, PID);
    // As kubelet (cgroupfs driver) gives every pod a cgroup of its own; containerd's pod stats need one.
    config.linux.cgroupParent = `${cgroupRoot}/pod${config.metadata.uid}`;
    await fs.mkdir(config.logDirectory, { recursive: true });
    const { podSandboxId } = await side.rpc('RunPodSandbox', { config });
    pods.push({ id: podSandboxId, config });
  });
  console.log(`${side.name}: ${pods.length} pods up in ${fmtMs(performance.now() - t0)} ms`);
  t0 = performance.now();
  const jobs = pods.flatMap((p) => Array.from({ length: PER_POD }, (_, n) => ({ p, n })));
  await pool(jobs, 4, async ({ p, n }) => {
    const config = { metadata: { name: `c${n}`, attempt: 0 }, image: { image }, command: ['sleep', '100000'], logPath: `c${n}.log`, labels: { 'io.kubernetes.container.name': `c${n}` }, linux: {} };
    const { containerId } = await side.rpc('CreateContainer', { podSandboxId: p.id, config, sandboxConfig: p.config });
    await side.rpc('StartContainer', { containerId });
    if (!side.containerId) {
      side.containerId = containerId;
      side.podId = p.id;
    }
  });
  console.log(`${side.name}: ${jobs.length} containers running in ${fmtMs(performance.now() - t0)} ms`);
}

/** What the list calls return, checked once, so a figure never times an empty or partial answer. */
async function describe(side: Side): Promise<string> {
  const cs = (await side.rpc('ListContainerStats', {})).stats as any[];
  const ps = (await side.rpc('ListPodSandboxStats', {})).stats as any[];
  const withCpu = cs.filter((s) => s.cpu?.usageCoreNanoSeconds).length;
  const withLayer = cs.filter((s) => s.writableLayer?.usedBytes).length;
  const podsWithNet = ps.filter((s) => s.linux?.network?.interfaces?.length).length;
  const podsWithCpu = ps.filter((s) => s.linux?.cpu?.usageCoreNanoSeconds).length;
  return `${cs.length} container stats (${withCpu} with CPU, ${withLayer} with a writable layer), ${ps.length} pod stats (${podsWithCpu} with CPU, ${podsWithNet} with network)`;
}

async function round(side: Side): Promise<void> {
  for (const [name, fn] of callsOf(side)) {
    const times: number[] = [];
    for (let i = 0; i < CALLS && !isAborted(); i++) times.push((await timed(fn)).ms);
    (side.t[name] ??= []).push(...times);
    (side.roundP50[name] ??= []).push(p50(times));
  }
}

async function main(): Promise<void> {
  installSignalHandlers();
  const { tag, dir } = await makeBenchDir();
  const octet = 100 + (parseInt(tag.slice(0, 2), 16) % 100);

  // Registered first, so it runs last: the pods' cgroups, once both daemons have removed their containers.
  onCleanup('pod cgroups', () => removeCgroupTrees(`statsbench-${tag}`));
  const reg = await startRegistry();
  onCleanup('registry', () => reg.stop());
  await pushImage(reg, 'statsbench/busybox', '1', await busyboxImage());
  const image = `${reg.host}/statsbench/busybox:1`;

  const sides: Side[] = [];
  const newSide = (name: string, rpc: Side['rpc'], logRoot: string): Side => ({ name, rpc, logRoot, podId: '', containerId: '', t: {}, roundP50: {} });

  const corral = new BenchCorral(path.join(dir, 'corral'), tag, `10.250.${octet}.0/24`);
  onCleanup('Corral daemon', () => corral.cleanup());
  await corral.start();
  const { createImageClient, call } = await import('../src/cri/client.js');
  const images = createImageClient(corral.socket);
  try {
    await call(images, 'PullImage', { image: { image } }, { deadlineMs: 120_000 });
  } finally {
    images.close();
  }
  sides.push(newSide('Corral', (m, q, ms) => corral.rpc(m, q, ms), path.join(dir, 'corral-logs')));

  let containerdNote = 'not run (--skip-containerd)';
  if (!flags['skip-containerd']) {
    try {
      containerdNote = await ensureContainerd();
      const prep = await execFile('bash', [path.join(packageRoot(), 'scripts/prepare-cgroups.sh')]);
      if (prep.code !== 0) throw new Error(`scripts/prepare-cgroups.sh failed: ${prep.stderr.trim()}`);
      const mirror = `\n[plugins."io.containerd.grpc.v1.cri".registry.mirrors."${reg.host}"]\n  endpoint = ["http://${reg.host}"]\n`;
      const ctrd = new BenchContainerd(path.join(dir, 'containerd'), tag, `10.252.${octet}.0/24`, mirror);
      onCleanup('containerd', () => ctrd.cleanup());
      await fs.mkdir(ctrd.dir, { recursive: true });
      const tarball = await buildPauseImage(path.join(dir, 'image'));
      await ctrd.start();
      await ctrd.importPauseImage(tarball);
      await ctrd.imageRpc('PullImage', { image: { image } }, 120_000);
      sides.push(newSide('containerd', (m, q, ms) => ctrd.rpc(m, q, ms), path.join(dir, 'containerd-logs')));
    } catch (e) {
      containerdNote = `SKIPPED — ${errMessage(e)}`;
      console.log(`containerd: ${containerdNote}`);
    }
  }

  for (const side of sides) await populate(side, image, `/${side.name === 'Corral' ? 'corral' : 'ctrd'}statsbench-${tag}`);
  // containerd samples snapshot usage every 10 s: let it see every snapshot once. Corral's
  // first call measures each writable layer once; both get an unmeasured pass.
  if (sides.length > 1) await sleep(11_000);
  for (const side of sides) {
    for (const [, fn] of callsOf(side)) await fn();
    console.log(`${side.name}: ${await describe(side)}`);
  }

  for (let r = 0; r < ROUNDS && !isAborted(); r++) {
    const order = r % 2 === 0 ? sides : [...sides].reverse();
    for (const side of order) await round(side);
    console.log(`round ${r + 1}: ` + order.map((s) => `${s.name} ListContainerStats p50 ${fmtMs(s.roundP50.ListContainerStats!.at(-1)!)} ms, ListPodSandboxStats p50 ${fmtMs(s.roundP50.ListPodSandboxStats!.at(-1)!)} ms`).join('; '));
  }

  const [c, d] = sides;
  console.log(
    `\n${PODS} pods (pid ${PID}) × ${PER_POD} running containers; ${ROUNDS} rounds × ${CALLS} calls each, one at a time, sides interleaved; containerd: ${containerdNote}`,
  );
  const rows = [['call', 'Corral p50', 'p95', 'round p50s', ...(d ? ['containerd p50', 'p95', 'round p50s', 'ratio p50'] : [])]];
  for (const name of CALL_NAMES) {
    const a = c!.t[name] ?? [];
    const b = d?.t[name];
    const rounds = (s: Side) => (s.roundP50[name] ?? []).map(fmtMs).join(' ');
    rows.push([name, fmtMs(p50(a)), fmtMs(p95(a)), rounds(c!), ...(b && d ? [fmtMs(p50(b)), fmtMs(p95(b)), rounds(d), ratio(p50(b), p50(a))] : [])]);
  }
  console.log('ms:');
  printTable(rows);
}

/** Removes the top-level cgroup directories named ...nameSuffix in every hierarchy, deepest first (rmdir is how a cgroup goes). */
async function removeCgroupTrees(nameSuffix: string): Promise<void> {
  const mounts = (await fs.readFile('/proc/self/mounts', 'utf8')).split('\n').map((l) => l.split(' ')).filter((f) => f[2] === 'cgroup' || f[2] === 'cgroup2');
  const rmTree = async (dir: string): Promise<void> => {
    for (const e of await fs.readdir(dir, { withFileTypes: true }).catch(() => [])) if (e.isDirectory()) await rmTree(path.join(dir, e.name));
    await fs.rmdir(dir).catch(() => undefined);
  };
  for (const m of mounts) {
    for (const e of await fs.readdir(m[1]!, { withFileTypes: true }).catch(() => [])) {
      if (e.isDirectory() && e.name.endsWith(nameSuffix)) await rmTree(path.join(m[1]!, e.name));
    }
  }
}

runBench('statsbench', main);
