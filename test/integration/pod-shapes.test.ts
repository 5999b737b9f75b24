/**
 * Every pod shape kubelet sends runs containers in every infra mode: network, PID and
 * IPC each POD or NODE (PID also CONTAINER), with drop_infra_container true (namespaces
 * pinned, a pause only for a shared PID namespace: Corral's own) and false (always a pause), under
 * runc (all shapes) and crun (a subset). For each: RunPodSandbox, two busybox
 * containers, their /proc/self/ns/{net,ipc,uts,pid} compared with the host's, the
 * pause's, the pins' and each other's; the pod's IPC sysctl and hostname seen inside;
 * then Stop/Remove and nothing of the pod left on the host. Also TARGET PID mode
 * (same pod only, running target only) and CRI log paths that would leave the pod's
 * log directory.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { TestDaemon, hostTraces, podConfig } from '../helpers/daemon.js';
import { pushImage, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { busyboxImage } from '../helpers/test-images.js';
import { createImageClient, call } from '../../src/cri/client.js';
import { execFile } from '../../src/util/exec.js';
import { podCgroupDirs, podPauseProcesses } from '../helpers/pod-pause.js';

type Mode = 'POD' | 'CONTAINER' | 'NODE';
interface Shape {
  network: 'POD' | 'NODE';
  pid: Mode;
  ipc: 'POD' | 'NODE';
}

let reg: TestRegistry;
let image: string;
/** One daemon per drop_infra_container value, shared by all shapes (run one after another). */
const daemons: Record<'drop' | 'keep', TestDaemon> = {} as any;

before(async () => {
  reg = await startRegistry();
  await pushImage(reg, 'test/busybox', '1', await busyboxImage());
  image = `${reg.host}/test/busybox:1`;
  daemons.drop = new TestDaemon({ extraToml: 'drop_infra_container = true' });
  daemons.keep = new TestDaemon({ extraToml: 'drop_infra_container = false' });
  await Promise.all(
    Object.values(daemons).map(async (d) => {
      await d.start();
      const images = createImageClient(d.socket);
      try {
        await call(images, 'PullImage', { image: { image } }, { deadlineMs: 60_000 });
      } finally {
        images.close();
      }
    }),
  );
});

after(async () => {
  await Promise.all(Object.values(daemons).map((d) => d?.cleanup()));
  await reg?.stop();
});

const shapeName = (s: Shape) => `network=${s.network} pid=${s.pid} ipc=${s.ipc}`;
const allShapes: Shape[] = [];
for (const network of ['POD', 'NODE'] as const) for (const pid of ['POD', 'CONTAINER', 'NODE'] as const) for (const ipc of ['POD', 'NODE'] as const) allShapes.push({ network, pid, ipc });
/** crun: the host-network shapes (the defect), a shared PID pod and a fully private one. */
const crunShapes: Shape[] = [
  { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' },
  { network: 'NODE', pid: 'POD', ipc: 'POD' },
  { network: 'NODE', pid: 'NODE', ipc: 'NODE' },
  { network: 'POD', pid: 'CONTAINER', ipc: 'POD' },
];

function containerConfig(name: string, nsOpts: object, extra: object = {}) {
  return { metadata: { name, attempt: 0 }, image: { image }, command: ['sleep', '1000'], logPath: `${name}.log`, linux: { securityContext: { namespaceOptions: nsOpts } }, ...extra };
}

async function runContainer(d: TestDaemon, podId: string, podCfg: any, name: string, nsOpts: object, extra: object = {}): Promise<string> {
  const { containerId } = await d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig(name, nsOpts, extra), sandboxConfig: podCfg });
  await d.rpc('StartContainer', { containerId });
  return containerId;
}

const exec = async (d: TestDaemon, id: string, cmd: string[]) => {
  const r = await d.rpc('ExecSync', { containerId: id, cmd, timeout: 10 });
  assert.equal(r.exitCode, 0, `${cmd.join(' ')}: ${r.stderr}`);
  return r.stdout.toString().trim() as string;
};
const nsOf = (d: TestDaemon, id: string, type: string) => exec(d, id, ['readlink', `/proc/self/ns/${type}`]);
const hostNs = (type: string) => fs.readlink(`/proc/self/ns/${type}`);
const linkOf = (type: string, ino: number | bigint) => `${type}:[${ino}]`;

async function assertPodGone(d: TestDaemon, ids: string[]) {
  const traces = await hostTraces(d);
  for (const id of ids) {
    assert.deepEqual(traces.runtimeContainers.filter((c) => c === id), [], `runtime container ${id} left`);
    assert.deepEqual(traces.mounts.filter((m) => m.includes(id)), [], `mounts of ${id} left`);
    assert.deepEqual(traces.netns.filter((n) => n.includes(id)), [], `netns of ${id} left`);
  }
  await assert.rejects(fs.access(path.join(d.stateDir, 'sandboxes', ids[0]!)), 'the sandbox state folder (and its pins) is gone');
  assert.deepEqual(await podPauseProcesses(ids[0]!), [], 'no pause process of the pod left');
  assert.deepEqual(await podCgroupDirs(ids[0]!), [], 'no cgroup of the pod left');
}

async function checkShape(d: TestDaemon, handler: string, shape: Shape) {
  const ipcSysctl = shape.ipc === 'POD' ? { 'kernel.shm_rmid_forced': '1' } : {};
  const cfg = podConfig({ linux: { sysctls: ipcSysctl, securityContext: { namespaceOptions: shape } } });
  const podId: string = (await d.rpc('RunPodSandbox', { config: cfg, runtimeHandler: handler })).podSandboxId;
  const ids = [podId];
  try {
    const info = JSON.parse((await d.rpc('PodSandboxStatus', { podSandboxId: podId, verbose: true })).info.info);
    const pause: number = info.pid;
    const pins: string[] = info.resources.pins;
    // kubelet gives each container the pod's namespace options.
    const a = await runContainer(d, podId, cfg, 'a', shape);
    ids.push(a);
    const b = await runContainer(d, podId, cfg, 'b', shape);
    ids.push(b);

    for (const type of ['net', 'ipc', 'uts', 'pid'] as const) {
      const [na, nb, host] = [await nsOf(d, a, type), await nsOf(d, b, type), await hostNs(type)];
      const hostMode = type === 'net' || type === 'uts' ? shape.network === 'NODE' : type === 'ipc' ? shape.ipc === 'NODE' : shape.pid === 'NODE';
      if (hostMode) {
        assert.equal(na, host, `${type}: the host's`);
        assert.equal(nb, host, `${type}: the host's`);
        continue;
      }
      assert.notEqual(na, host, `${type}: not the host's`);
      if (type === 'pid' && shape.pid === 'CONTAINER') {
        assert.notEqual(na, nb, 'pid: one per container');
        continue;
      }
      assert.equal(na, nb, `${type}: shared by the pod's containers`);
      if (pause > 0) assert.equal(na, await fs.readlink(`/proc/${pause}/ns/${type}`), `${type}: the pause's`);
      else {
        const pin = pins.find((p) => path.basename(p) === (type === 'net' ? `corral-${podId}` : `${type}ns`));
        assert.ok(pin, `${type}: pinned (pins: ${pins.join(', ')})`);
        assert.equal(na, linkOf(type, (await fs.stat(pin!)).ino), `${type}: the pinned one`);
      }
    }
    if (shape.pid === 'POD') {
      // Every non-VM handler runs Corral's own pause for a shared PID namespace: PID 1 there.
      assert.equal(info.infraMode, 'init');
      assert.match(await exec(d, a, ['cat', '/proc/1/cmdline']), /corral-podpause/, 'the pause is PID 1 of the pod');
      for (const type of ['net', 'ipc', 'uts'] as const) {
        const hostMode = type === 'ipc' ? shape.ipc === 'NODE' : shape.network === 'NODE';
        const pin = pins.find((p) => path.basename(p) === (type === 'net' ? `corral-${podId}` : `${type}ns`));
        if (hostMode) assert.equal(await fs.readlink(`/proc/${pause}/ns/${type}`), await hostNs(type), `${type}: the pause is in the host's`);
        else assert.equal(await fs.readlink(`/proc/${pause}/ns/${type}`), linkOf(type, (await fs.stat(pin!)).ino), `${type}: the pause joined the pin`);
      }
    }
    if (shape.ipc === 'POD') assert.equal(await exec(d, a, ['cat', '/proc/sys/kernel/shm_rmid_forced']), '1', 'the pod IPC sysctl is applied');
    assert.equal(await exec(d, a, ['hostname']), shape.network === 'NODE' ? os.hostname() : cfg.hostname, 'hostname');

    await d.rpc('StopPodSandbox', { podSandboxId: podId });
    await d.rpc('RemovePodSandbox', { podSandboxId: podId });
    await assertPodGone(d, ids);
  } finally {
    await d.rpc('RemovePodSandbox', { podSandboxId: podId }).catch(() => {});
  }
}

for (const [mode, key] of [['drop_infra_container=true', 'drop'], ['drop_infra_container=false', 'keep']] as const) {
  for (const shape of allShapes) {
    test(`runc, ${mode}: ${shapeName(shape)}`, () => checkShape(daemons[key], 'runc', shape));
  }
  for (const shape of crunShapes) {
    test(`crun, ${mode}: ${shapeName(shape)}`, () => checkShape(daemons[key], 'crun', shape));
  }
}

test('host network, pinned IPC: an IPC sysctl of a host-IPC pod is refused with INVALID_ARGUMENT, nothing left', async () => {
  const d = daemons.drop;
  for (const shape of [{ network: 'NODE', pid: 'CONTAINER', ipc: 'NODE' }, { network: 'POD', pid: 'CONTAINER', ipc: 'NODE' }]) {
    const cfg = podConfig({ linux: { sysctls: { 'kernel.msgmax': '1000' }, securityContext: { namespaceOptions: shape } } });
    await assert.rejects(d.rpc('RunPodSandbox', { config: cfg }), (e: any) => e.code === status.INVALID_ARGUMENT && /kernel\.msgmax/.test(e.details));
  }
  assert.deepEqual((await d.rpc('ListPodSandbox', {})).items, []);
});

test('a host-network pod without a pause is READY only while its IPC pin holds; then Stop/Remove leave nothing', async () => {
  const d = daemons.drop;
  const shape = { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' };
  const cfg = podConfig({ linux: { securityContext: { namespaceOptions: shape } } });
  const podId: string = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId;
  try {
    const st = await d.rpc('PodSandboxStatus', { podSandboxId: podId, verbose: true });
    assert.equal(st.status.state, 'SANDBOX_READY');
    const pins: string[] = JSON.parse(st.info.info).resources.pins;
    const ipcPin = pins.find((p) => path.basename(p) === 'ipcns');
    assert.ok(ipcPin, `an IPC pin (pins: ${pins.join(', ')})`);
    assert.equal(pins.length, 1, 'host network: no netns and no UTS pin');
    await execFile('umount', ['--lazy', ipcPin!]);
    assert.equal((await d.rpc('PodSandboxStatus', { podSandboxId: podId })).status.state, 'SANDBOX_NOTREADY', 'its IPC namespace is gone');
    await assert.rejects(
      d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig('late', shape), sandboxConfig: cfg }),
      (e: any) => e.code === status.FAILED_PRECONDITION,
    );
    await d.rpc('StopPodSandbox', { podSandboxId: podId });
    await d.rpc('RemovePodSandbox', { podSandboxId: podId });
    await assertPodGone(d, [podId]);
  } finally {
    await d.rpc('RemovePodSandbox', { podSandboxId: podId }).catch(() => {});
  }
});

test('TARGET PID mode: joins a running container of the same pod; another pod\'s, a missing or an exited one is refused', async () => {
  const d = daemons.drop;
  const shape = { network: 'POD', pid: 'CONTAINER', ipc: 'POD' };
  const cfg = podConfig({ linux: { securityContext: { namespaceOptions: shape } } });
  const other = podConfig({ linux: { securityContext: { namespaceOptions: shape } } });
  const podId: string = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId;
  const otherId: string = (await d.rpc('RunPodSandbox', { config: other })).podSandboxId;
  try {
    const target = await runContainer(d, podId, cfg, 'target', shape);
    const debug = await runContainer(d, podId, cfg, 'debug', { ...shape, pid: 'TARGET', targetId: target });
    assert.equal(await nsOf(d, debug, 'pid'), await nsOf(d, target, 'pid'), 'the target\'s PID namespace');
    assert.match(await exec(d, debug, ['ps']), /sleep 1000/);

    const stranger = await runContainer(d, otherId, other, 'stranger', shape);
    const create = (name: string, targetId: string) =>
      d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig(name, { ...shape, pid: 'TARGET', targetId }), sandboxConfig: cfg });
    await assert.rejects(create('x1', stranger), (e: any) => e.code === status.INVALID_ARGUMENT && e.details.includes(otherId) && /own pod/.test(e.details));
    await assert.rejects(create('x2', 'f'.repeat(64)), (e: any) => e.code === status.NOT_FOUND && /target container/.test(e.details));
    await assert.rejects(create('x3', ''), (e: any) => e.code === status.INVALID_ARGUMENT && /target_id/.test(e.details));
    await d.rpc('StopContainer', { containerId: target, timeout: 0 });
    await assert.rejects(create('x4', target), (e: any) => e.code === status.FAILED_PRECONDITION && /not running/.test(e.details));
    const names = (await d.rpc('ListContainers', { filter: { podSandboxId: podId } })).containers.map((c: any) => c.metadata.name).sort();
    assert.deepEqual(names, ['debug', 'target'], 'refused containers leave nothing');
    // The refused names are free again.
    await runContainer(d, podId, cfg, 'x1', shape);
  } finally {
    await d.rpc('RemovePodSandbox', { podSandboxId: podId });
    await d.rpc('RemovePodSandbox', { podSandboxId: otherId });
  }
});

test('a CRI log_path that leaves the pod log directory is refused with INVALID_ARGUMENT; nothing is written outside', async () => {
  const d = daemons.drop;
  const shape = { network: 'POD', pid: 'CONTAINER', ipc: 'POD' };
  const cfg = podConfig({ linux: { securityContext: { namespaceOptions: shape } } });
  const podId: string = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId;
  const outside = path.join(path.dirname(cfg.logDirectory), `escape-${path.basename(cfg.logDirectory)}.log`);
  try {
    for (const logPath of [`../${path.basename(outside)}`, outside, 'c/../../x.log']) {
      await assert.rejects(
        d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig('c', shape, { logPath }), sandboxConfig: cfg }),
        (e: any) => e.code === status.INVALID_ARGUMENT && /log_path/.test(e.details),
        logPath,
      );
    }
    await assert.rejects(fs.access(outside), 'no file outside the log directory');
    assert.deepEqual((await d.rpc('ListContainers', { filter: { podSandboxId: podId } })).containers, []);
    // The name was not taken by the refused calls; a path beneath the folder works.
    const id = await runContainer(d, podId, cfg, 'c', shape, { logPath: 'c/0.log' });
    assert.equal((await d.rpc('ContainerStatus', { containerId: id })).status.logPath, path.join(cfg.logDirectory, 'c/0.log'));
  } finally {
    await d.rpc('RemovePodSandbox', { podSandboxId: podId });
    await fs.rm(outside, { force: true });
  }
});
