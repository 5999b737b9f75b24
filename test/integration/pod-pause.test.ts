/**
 * Corral's own pause (infra mode 'init', native/podpause.c), the init of a pod's shared
 * PID namespace: what it may do (no capabilities, no_new_privs, seccomp, an empty
 * read-only root, no fds but /dev/null, its own cgroups, PID 1 of its namespace, in the
 * pod's pinned namespaces), and that the daemon manages it (a killed pause makes the pod
 * NOTREADY; Stop kills it and waits; nothing of it is left).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { TestDaemon, podConfig } from '../helpers/daemon.js';
import { podCgroupDirs, podPauseProcesses, processSecurity } from '../helpers/pod-pause.js';
import { waitFor } from '../helpers/wait.js';

const d = new TestDaemon();
before(() => d.start());
after(() => d.cleanup());

const sharedPidPod = () => podConfig({ linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'POD', ipc: 'POD' } } } });

async function runPod() {
  const { podSandboxId: id } = await d.rpc('RunPodSandbox', { config: sharedPidPod() });
  const info = JSON.parse((await d.rpc('PodSandboxStatus', { podSandboxId: id, verbose: true })).info.info);
  return { id, info, pid: info.pid as number };
}

test('the pause has no capabilities, no_new_privs, a seccomp filter, an empty read-only root, only /dev/null open, its own cgroups; PID 1 of a new PID namespace in the pinned ones', async () => {
  const { id, info, pid } = await runPod();
  try {
    assert.equal(info.infraMode, 'init');
    assert.ok(pid > 0);
    const sec = await processSecurity(pid);
    for (const set of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) assert.equal(sec[set], '0000000000000000', `${set} is empty`);
    assert.equal(sec.NoNewPrivs, '1');
    assert.equal(sec.Seccomp, '2', 'a seccomp filter');
    assert.match(sec.NSpid!, new RegExp(`^${pid}\\s+1$`), 'PID 1 of its own PID namespace');
    assert.notEqual(await fs.readlink(`/proc/${pid}/ns/pid`), await fs.readlink('/proc/self/ns/pid'));
    // Its root is an empty read-only tmpfs; cwd is /.
    assert.deepEqual(await fs.readdir(`/proc/${pid}/root`), []);
    await assert.rejects(fs.writeFile(`/proc/${pid}/root/x`, ''), (e: any) => e.code === 'EROFS');
    assert.equal(await fs.readlink(`/proc/${pid}/cwd`), '/');
    const mounts = (await fs.readFile(`/proc/${pid}/mountinfo`, 'utf8')).trim().split('\n');
    assert.equal(mounts.length, 1, `one mount, no host mount held: ${mounts.join(' | ')}`);
    assert.match(mounts[0]!, / \/ ro,/);
    // No fd but 0-2 on /dev/null (its handshake pipes are closed once it is released).
    const fds = await fs.readdir(`/proc/${pid}/fd`);
    assert.deepEqual(fds.sort(), ['0', '1', '2']);
    for (const fd of fds) assert.equal(await fs.readlink(`/proc/${pid}/fd/${fd}`), '/dev/null');
    // The pod's pinned network/IPC/UTS namespaces.
    const pins: string[] = info.resources.pins;
    for (const [type, file] of [['net', `corral-${id}`], ['ipc', 'ipcns'], ['uts', 'utsns']] as const) {
      const pin = pins.find((p) => path.basename(p) === file);
      assert.ok(pin, `${type} pinned`);
      assert.equal(await fs.readlink(`/proc/${pid}/ns/${type}`), `${type}:[${(await fs.stat(pin!)).ino}]`);
    }
    // Its cgroups are named after the pod, and hold it.
    const dirs = await podCgroupDirs(id);
    assert.ok(dirs.length > 0);
    for (const dir of dirs) assert.deepEqual((await fs.readFile(path.join(dir, 'cgroup.procs'), 'utf8')).trim().split('\n'), [String(pid)], dir);
    assert.deepEqual(info.resources.podInit.cgroups.sort(), dirs.sort());
  } finally {
    await d.rpc('RemovePodSandbox', { podSandboxId: id });
  }
  assert.deepEqual(await podPauseProcesses(id), [], 'Stop killed the pause and waited');
  assert.deepEqual(await podCgroupDirs(id), [], 'its cgroups are removed');
});

test('a killed pause makes the pod NOTREADY; Stop and Remove still leave nothing', async () => {
  const { id, pid } = await runPod();
  try {
    assert.equal((await d.rpc('PodSandboxStatus', { podSandboxId: id })).status.state, 'SANDBOX_READY');
    process.kill(pid, 'SIGKILL');
    await waitFor(async () => (await d.rpc('PodSandboxStatus', { podSandboxId: id })).status.state === 'SANDBOX_NOTREADY', { timeoutMs: 15_000, what: 'the pod to turn NOTREADY' });
    const listed = (await d.rpc('ListPodSandbox', {})).items.find((i: any) => i.id === id);
    assert.equal(listed.state, 'SANDBOX_NOTREADY');
    await d.rpc('StopPodSandbox', { podSandboxId: id });
    assert.deepEqual(await podCgroupDirs(id), [], 'Stop removes the cgroups of a pause that died on its own');
  } finally {
    await d.rpc('RemovePodSandbox', { podSandboxId: id });
  }
  assert.deepEqual(await podPauseProcesses(id), []);
  await assert.rejects(fs.access(path.join(d.stateDir, 'sandboxes', id)));
});

test('Stop answers only once the pause is gone', async () => {
  const { id, pid } = await runPod();
  try {
    await d.rpc('StopPodSandbox', { podSandboxId: id });
    await assert.rejects(fs.access(`/proc/${pid}/stat`).then(async () => {
      const st = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
      if (!/\) [ZX] /.test(st)) return;
      throw new Error('zombie');
    }), 'the pause is gone (or a zombie waiting for init) when Stop answers');
    assert.equal((await d.rpc('PodSandboxStatus', { podSandboxId: id })).status.state, 'SANDBOX_NOTREADY');
  } finally {
    await d.rpc('RemovePodSandbox', { podSandboxId: id });
  }
});

test('a pod asking for a user (runAsUser/runAsGroup) gets a pause running as that user, still without capabilities', async () => {
  const config = podConfig({
    linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'POD', ipc: 'POD' }, runAsUser: { value: 65534 }, runAsGroup: { value: 65534 } } },
  });
  const { podSandboxId: id } = await d.rpc('RunPodSandbox', { config });
  try {
    const pid = JSON.parse((await d.rpc('PodSandboxStatus', { podSandboxId: id, verbose: true })).info.info).pid;
    const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
    assert.match(status, /^Uid:\s+65534\s+65534\s+65534\s+65534$/m);
    assert.match(status, /^Gid:\s+65534\s+65534\s+65534\s+65534$/m);
    const sec = await processSecurity(pid);
    for (const set of ['CapPrm', 'CapEff', 'CapBnd']) assert.equal(sec[set], '0000000000000000', set);
  } finally {
    await d.rpc('RemovePodSandbox', { podSandboxId: id });
  }
  assert.deepEqual(await podPauseProcesses(id), []);
});
