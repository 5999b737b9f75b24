/**
 * ContainerStats and ListContainerStats against real containers: CPU of a busy loop and
 * memory of a growing shell move the right way, a memory limit shows as available bytes,
 * the writable layer is reported, and the list filters by ID, pod and labels.
 */
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { TestDaemon, podConfig } from '../helpers/daemon.js';
import type { TestRegistry } from '../helpers/registry.js';
import { startContainer, startDaemonWithBusybox } from '../helpers/busybox-daemon.js';
import { eventually } from '../helpers/wait.js';
import { processCgroupDirs, readCgroupSample } from '../../src/container/stats.js';

let reg: TestRegistry;
let d: TestDaemon;
let image: string;

before(async () => {
  ({ reg, d, image } = await startDaemonWithBusybox({ tag: 'stats', busybox: { allApplets: true } }));
});

afterEach(async () => {
  for (const p of (await d.rpc('ListPodSandbox', {})).items) await d.rpc('RemovePodSandbox', { podSandboxId: p.id });
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
});

/** A pod with a pause process (a shared PID namespace), or a pinned one (namespaces held by bind mounts). */
async function runPod(shape: 'pause' | 'pinned' = 'pinned') {
  const cfg = podConfig({ linux: { securityContext: { namespaceOptions: { network: 'POD', pid: shape === 'pause' ? 'POD' : 'CONTAINER', ipc: 'POD' } } } });
  const podId = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId as string;
  return { cfg, podId };
}

function runContainer(pod: { cfg: any; podId: string }, name: string, command: string[], extra: Record<string, unknown> = {}): Promise<string> {
  return startContainer(d, { podSandboxId: pod.podId, sandboxConfig: pod.cfg }, image, name, command, extra);
}

const stats = async (id: string) => (await d.rpc('ContainerStats', { containerId: id })).stats;
const n = (v: { value: number | string } | null | undefined) => Number(v?.value ?? 0);

test('a container burning CPU: usage_core_nano_seconds grows between calls and usage_nano_cores shows the load', async () => {
  const pod = await runPod();
  const id = await runContainer(pod, 'burn', ['sh', '-c', 'while :; do :; done']);
  const a = await stats(id.slice(0, 12));
  assert.equal(a.attributes.id, id);
  assert.equal(a.attributes.metadata.name, 'burn');
  await new Promise((r) => setTimeout(r, 1000));
  const b = await stats(id);
  const used = n(b.cpu.usageCoreNanoSeconds) - n(a.cpu.usageCoreNanoSeconds);
  const wall = Number(b.cpu.timestamp) - Number(a.cpu.timestamp);
  assert.ok(used > 0.2 * wall, `the loop used ${used} ns of CPU in ${wall} ns`);
  // As containerd: the rate between this call's sample and the previous one.
  const cores = n(b.cpu.usageNanoCores);
  assert.ok(cores > 200_000_000 && cores < 2_100_000_000, `usage_nano_cores ${cores}`);
  assert.ok(n(b.memory.workingSetBytes) > 0);
  assert.ok(b.writableLayer.fsId.mountpoint);
  assert.ok(n(b.writableLayer.inodesUsed) > 0);
});

test('a container allocating memory: working set and RSS grow; its limit shows as available bytes', async () => {
  const pod = await runPod();
  const limit = 256 * 1024 * 1024;
  // Waits for /go, then awk holds a string of over 40 MB while it waits for `sleep`.
  const script = 'while [ ! -e /go ]; do sleep 0.1; done; awk \'BEGIN{s="aaaaaaaaaaaaaaaa"; while (length(s) < 40000000) s = s s; system("touch /done; sleep 1000")}\'';
  const id = await runContainer(pod, 'grow', ['sh', '-c', script], { linux: { resources: { memoryLimitInBytes: limit } } });
  const before = await stats(id);
  assert.ok(n(before.memory.availableBytes) > 0 && n(before.memory.availableBytes) <= limit, `available ${n(before.memory.availableBytes)}`);
  await d.rpc('ExecSync', { containerId: id, cmd: ['touch', '/go'], timeout: 10 });
  await eventually(async () => assert.equal((await d.rpc('ExecSync', { containerId: id, cmd: ['test', '-e', '/done'], timeout: 10 })).exitCode, 0), { timeoutMs: 30_000, intervalMs: 200, what: 'the allocation' });
  const afterAlloc = await stats(id);
  const grown = n(afterAlloc.memory.workingSetBytes) - n(before.memory.workingSetBytes);
  assert.ok(grown > 30_000_000, `working set grew by ${grown}`);
  assert.ok(n(afterAlloc.memory.rssBytes) - n(before.memory.rssBytes) > 30_000_000, 'RSS grew');
  assert.equal(n(afterAlloc.memory.availableBytes), limit - n(afterAlloc.memory.workingSetBytes));
  assert.ok(n(afterAlloc.memory.pageFaults) > n(before.memory.pageFaults));
});

test('ListContainerStats filters by ID (prefix), pod and labels; an exited container has no CPU or memory', async () => {
  const p1 = await runPod();
  const p2 = await runPod();
  const a = await runContainer(p1, 'a', ['sleep', '1000'], { labels: { tier: 'web' } });
  const b = await runContainer(p1, 'b', ['true'], { labels: { tier: 'db' } });
  const c = await runContainer(p2, 'c', ['sleep', '1000'], { labels: { tier: 'web' } });
  const ids = async (filter: object) => ((await d.rpc('ListContainerStats', { filter })).stats as any[]).map((s) => s.attributes.id).sort();
  assert.deepEqual(await ids({}), [a, b, c].sort());
  assert.deepEqual(await ids({ id: a.slice(0, 8) }), [a]);
  assert.deepEqual(await ids({ id: 'f'.repeat(64) }), []);
  assert.deepEqual(await ids({ podSandboxId: p1.podId }), [a, b].sort());
  assert.deepEqual(await ids({ labelSelector: { tier: 'web' } }), [a, c].sort());
  assert.deepEqual(await ids({ podSandboxId: p2.podId, labelSelector: { tier: 'db' } }), []);
  await eventually(async () => assert.equal((await d.rpc('ContainerStatus', { containerId: b })).status.state, 'CONTAINER_EXITED'), { timeoutMs: 10_000, intervalMs: 100, what: 'b to exit' });
  const sb = await stats(b);
  assert.equal(sb.cpu, null);
  assert.equal(sb.memory, null);
  assert.ok(sb.writableLayer, 'the writable layer outlives the process');
  await assert.rejects(d.rpc('ContainerStats', { containerId: 'f'.repeat(64) }), (e: any) => e.code === 5);
});

test('the v2 reader on a real unified tree: the busy container\'s cpu.stat grows (on a hybrid host, the unified tree has cpu.stat but no memory controller)', async () => {
  const pod = await runPod();
  const id = await runContainer(pod, 'burn2', ['sh', '-c', 'while :; do :; done']);
  const pid = Number(JSON.parse((await d.rpc('ContainerStatus', { containerId: id, verbose: true })).info.info).pid);
  const v2 = (await processCgroupDirs(pid, id)).find((x) => x.version === 2);
  assert.ok(v2, 'the container has a cgroup in the unified hierarchy');
  const a = await readCgroupSample({ version: 2, dir: v2.dir });
  await new Promise((r) => setTimeout(r, 500));
  const b = await readCgroupSample({ version: 2, dir: v2.dir });
  assert.ok(a.cpuUsageNs !== null && b.cpuUsageNs !== null && b.cpuUsageNs - a.cpuUsageNs > 50_000_000n, `cpu ${a.cpuUsageNs} -> ${b.cpuUsageNs}`);
  const unifiedHasMemory = (await fs.readFile(path.join(v2.dir, 'memory.current'), 'utf8').catch(() => null)) !== null;
  if (unifiedHasMemory) assert.ok(b.workingSetBytes !== null && b.workingSetBytes > 0n);
  else assert.equal(b.workingSetBytes, null, 'no memory controller in this tree: no memory figures, rather than zeros');
});

for (const shape of ['pause', 'pinned'] as const) test(`PodSandboxStats of a ${shape} pod: the pod\'s CPU, memory and processes cover its containers; network counters of eth0 grow with traffic`, async () => {
  const pod = await runPod(shape);
  const id = await runContainer(pod, 'burn', ['sh', '-c', 'while :; do :; done']);
  const podIp = (await d.rpc('PodSandboxStatus', { podSandboxId: pod.podId })).status.network.ip as string;
  assert.ok(podIp, 'the pod has an address');
  const first = (await d.rpc('PodSandboxStats', { podSandboxId: pod.podId.slice(0, 10) })).stats;
  assert.equal(first.attributes.id, pod.podId);
  assert.deepEqual(first.linux.containers.map((c: any) => c.attributes.id), [id]);
  // Traffic into the pod: connections to a closed port are answered with resets.
  for (let i = 0; i < 20; i++) {
    await new Promise<void>((resolve) => {
      const s = net.connect({ host: podIp, port: 9 });
      s.on('error', () => resolve());
      s.on('connect', () => (s.destroy(), resolve()));
    });
  }
  await new Promise((r) => setTimeout(r, 500));
  const second = (await d.rpc('PodSandboxStats', { podSandboxId: pod.podId })).stats;
  const cpuPod = n(second.linux.cpu.usageCoreNanoSeconds);
  const cpuContainer = n(second.linux.containers[0].cpu.usageCoreNanoSeconds);
  assert.ok(cpuPod >= cpuContainer && cpuPod > n(first.linux.cpu.usageCoreNanoSeconds), `pod cpu ${cpuPod}, container ${cpuContainer}`);
  assert.ok(n(second.linux.cpu.usageNanoCores) > 200_000_000, `pod usage_nano_cores ${n(second.linux.cpu.usageNanoCores)}`);
  assert.ok(n(second.linux.memory.workingSetBytes) > 0);
  assert.ok(n(second.linux.process.processCount) >= (shape === 'pause' ? 2 : 1), `${n(second.linux.process.processCount)} processes`);
  const eth0 = second.linux.network.defaultInterface;
  assert.equal(eth0.name, 'eth0');
  assert.ok(!second.linux.network.interfaces.some((i: any) => i.name === 'lo'));
  assert.ok(n(eth0.rxBytes) - n(first.linux.network.defaultInterface.rxBytes) >= 20 * 40, 'the SYNs arrived');
  assert.ok(n(eth0.txBytes) - n(first.linux.network.defaultInterface.txBytes) >= 20 * 40, 'the resets left');
});

test('ListPodSandboxStats filters by ID and labels; a stopped pod has no CPU, memory or network; an unknown pod is NOT_FOUND', async () => {
  const p1 = await runPod();
  const p2cfg = podConfig({ labels: { app: 'corral-test', tier: 'db' } });
  const p2 = (await d.rpc('RunPodSandbox', { config: p2cfg })).podSandboxId as string;
  const ids = async (filter: object) => ((await d.rpc('ListPodSandboxStats', { filter })).stats as any[]).map((s) => s.attributes.id).sort();
  assert.deepEqual(await ids({}), [p1.podId, p2].sort());
  assert.deepEqual(await ids({ id: p1.podId.slice(0, 8) }), [p1.podId]);
  assert.deepEqual(await ids({ labelSelector: { tier: 'db' } }), [p2]);
  await d.rpc('StopPodSandbox', { podSandboxId: p2 });
  const stopped = (await d.rpc('PodSandboxStats', { podSandboxId: p2 })).stats;
  assert.equal(stopped.linux.cpu, null);
  assert.equal(stopped.linux.network, null);
  await assert.rejects(d.rpc('PodSandboxStats', { podSandboxId: 'f'.repeat(64) }), (e: any) => e.code === 5);
  await assert.rejects(d.rpc('PodSandboxStats', { podSandboxId: '' }), (e: any) => e.code === 3);
});

test('a pod with a cgroup parent of its own (as kubelet gives): pod figures from that cgroup, its memory limit as available bytes', async () => {
  const parent = `corral-test-stats-${process.pid}-${Date.now()}`;
  const hierarchies = (await fs.readdir('/sys/fs/cgroup')).map((h) => path.join('/sys/fs/cgroup', h));
  try {
    const cfg = podConfig({ linux: { cgroupParent: `/${parent}`, securityContext: { namespaceOptions: { network: 'POD', pid: 'POD', ipc: 'POD' } } } });
    const podId = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId as string;
    const id = await runContainer({ cfg, podId }, 'burn', ['sh', '-c', 'while :; do :; done']);
    // The pod's limit, as kubelet sets it on the pod cgroup (v1 memory controller, else the unified tree).
    const limit = 512 * 1024 * 1024;
    const v1 = path.join('/sys/fs/cgroup/memory', parent, 'memory.limit_in_bytes');
    const v2 = path.join('/sys/fs/cgroup', parent, 'memory.max');
    await fs.writeFile(v1, String(limit)).catch(() => fs.writeFile(v2, String(limit)));
    const s = (await d.rpc('PodSandboxStats', { podSandboxId: podId })).stats;
    assert.equal(n(s.linux.memory.availableBytes), limit - n(s.linux.memory.workingSetBytes));
    assert.ok(n(s.linux.cpu.usageCoreNanoSeconds) >= n(s.linux.containers[0].cpu.usageCoreNanoSeconds));
    assert.ok(n(s.linux.process.processCount) >= 2, 'pause and the loop, in the pod cgroup');
    assert.equal(s.linux.containers[0].attributes.id, id);
  } finally {
    for (const p of (await d.rpc('ListPodSandbox', {})).items) await d.rpc('RemovePodSandbox', { podSandboxId: p.id });
    for (const h of hierarchies) {
      for (let i = 0; i < 50; i++) {
        const err = await fs.rmdir(path.join(h, parent)).then(() => null, (e: NodeJS.ErrnoException) => e);
        if (!err || err.code === 'ENOENT' || err.code === 'ENOTDIR') break;
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
});

test('a container writing 10 MB shows it in its writable layer once the cached walk refreshes (within its 10 s lifetime)', async () => {
  const pod = await runPod();
  const id = await runContainer(pod, 'writer', ['sleep', '1000']);
  const before = n((await stats(id)).writableLayer.usedBytes);
  await d.rpc('ExecSync', { containerId: id, cmd: ['sh', '-c', 'head -c 10485760 /dev/urandom > /blob && sync'], timeout: 30 });
  const s = await eventually(async () => {
    const now = (await stats(id)).writableLayer;
    assert.ok(n(now.usedBytes) - before >= 10_485_760, `used ${n(now.usedBytes)}, was ${before}`);
    return now;
  }, { timeoutMs: 25_000, intervalMs: 500, what: 'the writable layer to show 10 MB' });
  assert.ok(n(s.inodesUsed) >= 2);
});
