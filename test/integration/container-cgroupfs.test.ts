/**
 * Containers see their own cgroup at /sys/fs/cgroup, as with containerd and cri-o, with
 * runc and with crun: a container with a memory limit and a CPU quota reads them there
 * (JVMs, Go and Node size themselves from these files); the mount is read-only for a
 * normal container and writable for a privileged one; it shows the container's own cgroup,
 * not the host's hierarchy; and the pod's pause container gets the same.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { TestDaemon, podConfig } from '../helpers/daemon.js';
import type { TestRegistry } from '../helpers/registry.js';
import { startContainer, startDaemonWithBusybox } from '../helpers/busybox-daemon.js';
import { hostIsCgroupV2 } from '../../src/oci/cgroup-limits.js';
import { containerCgroupDirs, parseCgroupMounts, parseProcCgroup } from '../../src/oci/exec-cgroup.js';

let reg: TestRegistry;
let d: TestDaemon;
let image: string;
let v2: boolean;
const MiB = 1024 * 1024;

before(async () => {
  v2 = await hostIsCgroupV2();
  // drop_infra_container = false: a pod with its own PID namespaces still runs an OCI pause
  // container (shared-PID pods get Corral's own pause, which has no /sys at all).
  ({ reg, d, image } = await startDaemonWithBusybox({ daemon: { extraToml: 'drop_infra_container = false' } }));
});

after(async () => {
  try {
    for (const p of (await d.rpc('ListPodSandbox', {}).catch(() => ({ items: [] }))).items) await d.rpc('RemovePodSandbox', { podSandboxId: p.id });
  } finally {
    await d?.cleanup();
    await reg?.stop();
  }
});

/** Where a controller's files are inside the container: a v1 controller's own dir, or the v2 tree. */
const inContainer = (v1Controller: string, v1File: string, v2File: string) => (v2 ? `/sys/fs/cgroup/${v2File}` : `/sys/fs/cgroup/${v1Controller}/${v1File}`);
const memoryLimitFile = () => inContainer('memory', 'memory.limit_in_bytes', 'memory.max');

async function exec(id: string, script: string): Promise<{ exitCode: number; stdout: string; stderr: string }> {
  const r = await d.rpc('ExecSync', { containerId: id, cmd: ['sh', '-c', script], timeout: 10 });
  return { exitCode: r.exitCode ?? 0, stdout: Buffer.from(r.stdout ?? '').toString(), stderr: Buffer.from(r.stderr ?? '').toString() };
}

/** The container's init's memory cgroup directory on the host. */
async function hostMemoryDir(containerId: string): Promise<string> {
  const info = JSON.parse((await d.rpc('ContainerStatus', { containerId, verbose: true })).info.info);
  const [procCgroup, mountinfo] = await Promise.all([fs.readFile(`/proc/${info.pid}/cgroup`, 'utf8'), fs.readFile('/proc/self/mountinfo', 'utf8')]);
  const dirs = containerCgroupDirs(parseProcCgroup(procCgroup), parseCgroupMounts(mountinfo), containerId);
  const dir = dirs.find((c) => c.version === 1 && c.controllers.includes('memory')) ?? dirs.find((c) => c.version === 2);
  assert.ok(dir, `container ${containerId} has a memory cgroup`);
  return dir.dir;
}

async function runPod(runtime: string, privileged: boolean, pid: 'POD' | 'CONTAINER' = 'POD') {
  const cfg = podConfig({ linux: { securityContext: { privileged, namespaceOptions: { network: 'POD', pid, ipc: 'POD' } } } });
  const podSandboxId = (await d.rpc('RunPodSandbox', { config: cfg, runtimeHandler: runtime })).podSandboxId as string;
  return { podSandboxId, sandboxConfig: cfg };
}

for (const runtime of ['runc', 'crun']) {
  test(`${runtime}: a container reads its own memory limit and CPU quota at /sys/fs/cgroup, read-only, and nothing of the host's hierarchy`, async () => {
    const pod = await runPod(runtime, false);
    try {
      const id = await startContainer(d, pod, image, 'limited', ['sleep', '3600'], {
        linux: { resources: { memoryLimitInBytes: 128 * MiB, cpuPeriod: 100000, cpuQuota: 50000 } },
      });
      const limit = await exec(id, `cat ${memoryLimitFile()}`);
      assert.equal(limit.stdout.trim(), String(128 * MiB), `the container reads its limit (${limit.stderr})`);
      const quota = await exec(id, v2 ? 'cat /sys/fs/cgroup/cpu.max' : 'cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us /sys/fs/cgroup/cpu/cpu.cfs_period_us');
      assert.equal(quota.stdout.trim().split(/\s+/).join(' '), '50000 100000', `the container reads its CPU quota and period (${quota.stderr})`);

      // Read-only: neither a limit file nor a new cgroup can be written, and the host's limit stays.
      const write = await exec(id, `echo ${256 * MiB} > ${memoryLimitFile()}`);
      assert.notEqual(write.exitCode, 0);
      assert.match(write.stderr, /Read-only file system/);
      const mkdir = await exec(id, `mkdir ${v2 ? '/sys/fs/cgroup/escape' : '/sys/fs/cgroup/memory/escape'}`);
      assert.notEqual(mkdir.exitCode, 0, 'no child cgroup can be made');
      const hostFile = path.join(await hostMemoryDir(id), v2 ? 'memory.max' : 'memory.limit_in_bytes');
      assert.equal((await fs.readFile(hostFile, 'utf8')).trim(), String(128 * MiB));

      // Its own cgroup only: the mount's root is the container's cgroup (v1: the path its init is
      // in on the host; v2: the root of its cgroup namespace), and below it there is no cgroup
      // but the ones Corral makes for execs (corral-exec-*, children of the container's).
      const seen = await exec(id, 'cat /proc/self/mountinfo; echo ---; find /sys/fs/cgroup -type d');
      assert.equal(seen.exitCode, 0, seen.stderr);
      const [mountinfo = '', found = ''] = seen.stdout.split('---\n');
      const dirs = found.split('\n').filter(Boolean);
      assert.ok(dirs.includes(v2 ? '/sys/fs/cgroup' : '/sys/fs/cgroup/memory'), `find lists the mount: ${found}`);
      const memLine = mountinfo.split('\n').find((l) => l.split(' ')[4] === (v2 ? '/sys/fs/cgroup' : '/sys/fs/cgroup/memory'));
      assert.ok(memLine, `a cgroup mount in the container:\n${mountinfo}`);
      assert.equal(memLine.split(' ')[3], v2 ? '/' : path.posix.join('/corral', id), 'the mounted root is the container\'s own cgroup');
      assert.equal(path.basename(await hostMemoryDir(id)), id);
      assert.match(memLine, / ro,/, 'mounted read-only');
      // Cgroups are the dirs below /sys/fs/cgroup (v2) or below a controller's dir (v1).
      const cgroups = dirs.filter((p) => p.split('/').length > (v2 ? 4 : 5));
      const others = cgroups.filter((p) => !path.basename(p).startsWith('corral-exec-'));
      assert.deepEqual(others, [], 'no other cgroup (no sibling, parent or host tree) is visible');
    } finally {
      await d.rpc('RemovePodSandbox', { podSandboxId: pod.podSandboxId }).catch(() => undefined);
    }
  });

  test(`${runtime}: a privileged container's /sys/fs/cgroup is writable: its own limit can be changed from inside`, async () => {
    const pod = await runPod(runtime, true);
    try {
      const id = await startContainer(d, pod, image, 'privileged', ['sleep', '3600'], {
        linux: { resources: { memoryLimitInBytes: 128 * MiB }, securityContext: { privileged: true } },
      });
      const write = await exec(id, `echo ${256 * MiB} > ${memoryLimitFile()} && cat ${memoryLimitFile()}`);
      assert.equal(write.exitCode, 0, write.stderr);
      assert.equal(write.stdout.trim(), String(256 * MiB));
      const hostFile = path.join(await hostMemoryDir(id), v2 ? 'memory.max' : 'memory.limit_in_bytes');
      assert.equal((await fs.readFile(hostFile, 'utf8')).trim(), String(256 * MiB), 'the write reached the container\'s cgroup');
    } finally {
      await d.rpc('RemovePodSandbox', { podSandboxId: pod.podSandboxId }).catch(() => undefined);
    }
  });

  test(`${runtime}: the pod's pause container sees its own cgroup at /sys/fs/cgroup, read-only`, async () => {
    const pod = await runPod(runtime, false, 'CONTAINER');
    try {
      const info = JSON.parse((await d.rpc('PodSandboxStatus', { podSandboxId: pod.podSandboxId, verbose: true })).info.info);
      assert.equal(info.infraMode, 'pause', 'with drop_infra_container = false the pod has an OCI pause container');
      assert.ok(info.pid > 0);
      // Through /proc/<pid>/root the host sees the pause's own mounts.
      const root = `/proc/${info.pid}/root`;
      const mountinfo = await fs.readFile(`/proc/${info.pid}/mountinfo`, 'utf8');
      const cg = mountinfo.split('\n').filter((l) => (l.split(' ')[4] ?? '').startsWith('/sys/fs/cgroup'));
      assert.ok(cg.length > 0, `the pause has a cgroup mount:\n${mountinfo}`);
      const shares = v2 ? undefined : (await fs.readFile(path.join(root, 'sys/fs/cgroup/cpu/cpu.shares'), 'utf8')).trim();
      if (!v2) assert.equal(shares, '2', 'the pause reads its own cpu.shares (the sandbox default), not the host root\'s 1024');
      for (const l of cg.filter((x) => x.includes(' - cgroup'))) assert.match(l, / ro,/, `read-only: ${l}`);
    } finally {
      await d.rpc('RemovePodSandbox', { podSandboxId: pod.podSandboxId }).catch(() => undefined);
    }
  });
}
