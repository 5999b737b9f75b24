/**
 * UpdateContainerResources end to end with runc and crun: new limits land in the running
 * container's cgroup, ContainerStatus reports them (also after a daemon restart), and a
 * lowered memory limit is enforced: the container then allocating past it is OOM-killed,
 * and its status says OOMKilled.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { TestDaemon, hostTraces, podConfig } from '../helpers/daemon.js';
import type { TestRegistry } from '../helpers/registry.js';
import { startDaemonWithBusybox } from '../helpers/busybox-daemon.js';
import { eventually } from '../helpers/wait.js';
import { hostIsCgroupV2 } from '../../src/oci/cgroup-limits.js';
import { containerCgroupDirs, parseCgroupMounts, parseProcCgroup, type CgroupDir } from '../../src/oci/exec-cgroup.js';

let reg: TestRegistry;
let d: TestDaemon;
let image: string;
const MiB = 1024 * 1024;

before(async () => {
  ({ reg, d, image } = await startDaemonWithBusybox());
});

after(async () => {
  try {
    for (const p of (await d.rpc('ListPodSandbox', {}).catch(() => ({ items: [] }))).items) await d.rpc('RemovePodSandbox', { podSandboxId: p.id });
  } finally {
    await d?.cleanup();
    await reg?.stop();
  }
});

/** The container's cgroup directories, found from its init's /proc/<pid>/cgroup. */
async function cgroupDirs(id: string): Promise<CgroupDir[]> {
  const info = JSON.parse((await d.rpc('ContainerStatus', { containerId: id, verbose: true })).info.info);
  assert.ok(info.pid > 0, 'a running container has an init PID');
  const [procCgroup, mountinfo] = await Promise.all([fs.readFile(`/proc/${info.pid}/cgroup`, 'utf8'), fs.readFile('/proc/self/mountinfo', 'utf8')]);
  return containerCgroupDirs(parseProcCgroup(procCgroup), parseCgroupMounts(mountinfo), id);
}

/** The memory limit the kernel enforces on the container: memory.limit_in_bytes (v1) or memory.max (v2). */
async function memoryLimit(id: string): Promise<number> {
  const dirs = await cgroupDirs(id);
  const v1 = dirs.find((c) => c.version === 1 && c.controllers.includes('memory'));
  if (v1) return Number((await fs.readFile(path.join(v1.dir, 'memory.limit_in_bytes'), 'utf8')).trim());
  const v2 = dirs.find((c) => c.version === 2);
  assert.ok(v2, `container ${id} has a memory cgroup`);
  return Number((await fs.readFile(path.join(v2.dir, 'memory.max'), 'utf8')).trim());
}

/** A cpu controller file of a v1 host; undefined on a unified (v2-only) host. */
async function cpuFile(id: string, v1File: string): Promise<string | undefined> {
  const dirs = await cgroupDirs(id);
  if (!dirs.some((c) => c.version === 1)) return undefined;
  const v1 = dirs.find((c) => c.version === 1 && c.controllers.includes('cpu'));
  assert.ok(v1, `container ${id} is in a v1 cpu cgroup`);
  return (await fs.readFile(path.join(v1.dir, v1File), 'utf8')).trim();
}

for (const runtime of ['runc', 'crun']) {
  test(`${runtime}: a lowered memory limit lands in the cgroup, survives a daemon restart in ContainerStatus, and is enforced`, async () => {
    const cfg = podConfig({ linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } } });
    const podId = (await d.rpc('RunPodSandbox', { config: cfg, runtimeHandler: runtime })).podSandboxId;
    try {
      // Waits for /tmp/go, then allocates 200 MiB (tail keeps the whole "line" of zeros).
      const command = ['sh', '-c', 'while [ ! -e /tmp/go ]; do sleep 0.1; done; head -c 200m /dev/zero | tail'];
      const config = { metadata: { name: 'hungry', attempt: 0 }, image: { image }, command, logPath: 'hungry.log', linux: { resources: { memoryLimitInBytes: 512 * MiB } } };
      const { containerId: id } = await d.rpc('CreateContainer', { podSandboxId: podId, config, sandboxConfig: cfg });
      await d.rpc('StartContainer', { containerId: id });
      assert.equal(await memoryLimit(id), 512 * MiB, 'the create-time limit');
      assert.equal(Number((await d.rpc('ContainerStatus', { containerId: id })).status.resources.linux.memoryLimitInBytes), 512 * MiB);

      await d.rpc('UpdateContainerResources', { containerId: id, linux: { memoryLimitInBytes: 64 * MiB, cpuShares: 512, cpuPeriod: 100000, cpuQuota: 50000 } });
      assert.equal(await memoryLimit(id), 64 * MiB, 'the updated limit is in the container\'s cgroup');
      const shares = await cpuFile(id, 'cpu.shares');
      if (shares !== undefined) {
        assert.equal(shares, '512');
        assert.equal(await cpuFile(id, 'cpu.cfs_quota_us'), '50000');
        assert.equal(await cpuFile(id, 'cpu.cfs_period_us'), '100000');
      }
      // Hugepages: runc's update ignores them, so Corral writes the hugetlb cgroup itself.
      await d.rpc('UpdateContainerResources', { containerId: id, linux: { memoryLimitInBytes: 64 * MiB, cpuShares: 512, cpuPeriod: 100000, cpuQuota: 50000, hugepageLimits: [{ pageSize: '2MB', limit: 4 * MiB }] } });
      const hugetlb = (await cgroupDirs(id)).find((c) => c.version === 1 && c.controllers.includes('hugetlb'));
      if (hugetlb) assert.equal(Number(await fs.readFile(path.join(hugetlb.dir, 'hugetlb.2MB.limit_in_bytes'), 'utf8')), 4 * MiB, 'the hugepage limit is in the hugetlb cgroup');
      if (!(await hostIsCgroupV2())) {
        await assert.rejects(d.rpc('UpdateContainerResources', { containerId: id, linux: { unified: { 'memory.high': '50000000' } } }), (e: any) => e.code === status.FAILED_PRECONDITION && /cgroup v2 host/.test(e.details));
      }
      const updated = (await d.rpc('ContainerStatus', { containerId: id })).status.resources.linux;
      assert.deepEqual([updated.memoryLimitInBytes, updated.cpuShares, updated.cpuQuota, updated.cpuPeriod].map(Number), [64 * MiB, 512, 50000, 100000]);
      assert.deepEqual(updated.hugepageLimits.map((h: any) => [h.pageSize, Number(h.limit)]), [['2MB', 4 * MiB]]);

      // Bad values are the caller's mistake, and change nothing.
      await assert.rejects(d.rpc('UpdateContainerResources', { containerId: id, linux: { memoryLimitInBytes: -1 } }), (e: any) => e.code === status.INVALID_ARGUMENT && /memoryLimitInBytes must not be negative/.test(e.details));
      await assert.rejects(d.rpc('UpdateContainerResources', { containerId: id }), (e: any) => e.code === status.INVALID_ARGUMENT);
      assert.equal(await memoryLimit(id), 64 * MiB);

      await d.stopDaemon();
      await d.spawnDaemon();
      const afterRestart = (await d.rpc('ContainerStatus', { containerId: id })).status;
      assert.equal(afterRestart.state, 'CONTAINER_RUNNING');
      assert.equal(Number(afterRestart.resources.linux.memoryLimitInBytes), 64 * MiB, 'the record kept the update across the restart');

      // Past the new limit the kernel OOM-kills the allocating process (no swap on these hosts).
      assert.equal((await d.rpc('ExecSync', { containerId: id, cmd: ['touch', '/tmp/go'], timeout: 10 })).exitCode, 0);
      const exited = await eventually(async () => {
        const st = (await d.rpc('ContainerStatus', { containerId: id })).status;
        assert.equal(st.state, 'CONTAINER_EXITED');
        return st;
      }, { timeoutMs: 30_000, intervalMs: 200, what: `container ${id} to be OOM-killed` });
      assert.deepEqual([exited.exitCode, exited.reason], [137, 'OOMKilled'], 'SIGKILLed by the OOM killer, and the status says so');
      // conmon writes `oom` into its working directory too: the bundle's, never the daemon's.
      await assert.rejects(fs.access(path.join(process.cwd(), 'oom')), 'no oom file in the daemon\'s working directory');

      await assert.rejects(d.rpc('UpdateContainerResources', { containerId: id, linux: { memoryLimitInBytes: 128 * MiB } }), (e: any) => e.code === status.FAILED_PRECONDITION && /exited/.test(e.details));
      await assert.rejects(d.rpc('UpdateContainerResources', { containerId: 'nosuchcontainer', linux: { memoryLimitInBytes: 128 * MiB } }), (e: any) => e.code === status.NOT_FOUND);
    } finally {
      await d.rpc('RemovePodSandbox', { podSandboxId: podId });
    }
    const traces = await hostTraces(d);
    assert.deepEqual([traces.runtimeContainers, traces.mounts, traces.netns], [[], [], []]);
  });
}
