/**
 * Application containers end to end through the CRI: a busybox image from the local
 * registry, containers in pause-mode and pinned-mode pods, the CRI log written by
 * conmon, ExecSync seeing the pod's sysctls, hostname and network, stop with exit codes,
 * removal with the pod, an image removed while a container uses it, and a daemon
 * restart with a container running. Nothing is left behind.
 */
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { TestDaemon, hostTraces, podConfig } from '../helpers/daemon.js';
import { pushImage, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { busyboxImage, type TestImage } from '../helpers/test-images.js';
import { execChecked, execFile } from '../../src/util/exec.js';
import { createImageClient, call } from '../../src/cri/client.js';
import { eventually } from '../helpers/wait.js';

let reg: TestRegistry;
let d: TestDaemon;
let images: ReturnType<typeof createImageClient>;
let busybox: TestImage;
let image: string;
const irpc = (m: 'PullImage' | 'RemoveImage' | 'ImageStatus', req: object) => call<any>(images, m, req, { deadlineMs: 60_000 });

before(async () => {
  reg = await startRegistry();
  busybox = await busyboxImage();
  await pushImage(reg, 'test/busybox', '1', busybox);
  image = `${reg.host}/test/busybox:1`;
  d = new TestDaemon();
  await d.start();
  images = createImageClient(d.socket);
  await irpc('PullImage', { image: { image } });
});

afterEach(async () => {
  for (const p of (await d.rpc('ListPodSandbox', {})).items) await d.rpc('RemovePodSandbox', { podSandboxId: p.id });
});

after(async () => {
  images?.close();
  await d?.cleanup();
  await reg?.stop();
});

const pausePod = (extra: object = {}) => podConfig({ linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'POD', ipc: 'POD' } } }, ...extra });
const pinnedPod = (extra: object = {}) => podConfig({ linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } }, ...extra });

function containerConfig(name: string, command: string[], extra: object = {}) {
  return { metadata: { name, attempt: 0 }, image: { image }, command, logPath: `${name}.log`, linux: {}, ...extra };
}

async function runContainer(podId: string, podCfg: any, name: string, command: string[], extra: object = {}) {
  const { containerId } = await d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig(name, command, extra), sandboxConfig: podCfg });
  await d.rpc('StartContainer', { containerId });
  return containerId as string;
}

const exec = (containerId: string, cmd: string[], timeout = 10) => d.rpc('ExecSync', { containerId, cmd, timeout });

function waitExited(id: string, ms = 10_000) {
  return eventually(async () => {
    const st = (await d.rpc('ContainerStatus', { containerId: id })).status;
    assert.equal(st.state, 'CONTAINER_EXITED');
    return st;
  }, { timeoutMs: ms, intervalMs: 100, what: `container ${id} to exit` });
}

test('a container in a pause-mode pod: log, sysctls, hostname and network of the pod; exec exit codes; stop and remove', async () => {
  const cfg = pausePod({ linux: { sysctls: { 'kernel.shm_rmid_forced': '1' }, securityContext: { namespaceOptions: { network: 'POD', pid: 'POD', ipc: 'POD' } } } });
  const podId = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId;
  const pod = (await d.rpc('PodSandboxStatus', { podSandboxId: podId })).status;
  const id = await runContainer(podId, cfg, 'web', ['sh', '-c', 'echo hello; echo oops >&2; exec sleep 1000']);
  const st = (await d.rpc('ContainerStatus', { containerId: id.slice(0, 10) })).status;
  assert.equal(st.state, 'CONTAINER_RUNNING');
  assert.equal(st.imageRef, busybox.config.digest);
  assert.equal(st.logPath, path.join(cfg.logDirectory, 'web.log'));

  assert.equal((await exec(id, ['cat', '/proc/sys/kernel/shm_rmid_forced'])).stdout.toString().trim(), '1', 'the pod sysctl is visible');
  assert.equal((await exec(id, ['hostname'])).stdout.toString().trim(), cfg.hostname);
  assert.match((await exec(id, ['ip', 'addr', 'show', 'eth0'])).stdout.toString(), new RegExp(`inet ${pod.network.ip.replace(/\./g, '\\.')}/`));
  const failing = await exec(id, ['sh', '-c', 'echo out; echo err >&2; exit 3']);
  assert.deepEqual([failing.exitCode, failing.stdout.toString(), failing.stderr.toString()], [3, 'out\n', 'err\n']);
  await assert.rejects(exec(id, ['sleep', '31'], 1), (e: any) => e.code === status.DEADLINE_EXCEEDED);
  assert.equal((await exec(id, ['sh', '-c', 'ps | grep -c "[s]leep 31" || true'])).stdout.toString().trim(), '0', 'the timed-out command was killed inside the container');

  const log = await fs.readFile(st.logPath, 'utf8');
  assert.match(log, /^\S+ stdout F hello$/m);
  assert.match(log, /^\S+ stderr F oops$/m);

  const listed = (await d.rpc('ListContainers', { filter: { podSandboxId: podId } })).containers;
  assert.deepEqual(listed.map((c: any) => [c.id, c.state, c.metadata.name]), [[id, 'CONTAINER_RUNNING', 'web']]);
  assert.equal((await d.rpc('ListContainers', { filter: { state: { state: 'CONTAINER_EXITED' } } })).containers.length, 0);

  await d.rpc('StopContainer', { containerId: id, timeout: 5 });
  await d.rpc('StopContainer', { containerId: id, timeout: 5 });
  const stopped = (await d.rpc('ContainerStatus', { containerId: id })).status;
  assert.equal(stopped.state, 'CONTAINER_EXITED');
  assert.equal(stopped.exitCode, 143, 'SIGTERM');
  assert.ok(BigInt(stopped.finishedAt) >= BigInt(stopped.startedAt));
  await assert.rejects(exec(id, ['true']), (e: any) => e.code === status.FAILED_PRECONDITION);

  await d.rpc('RemoveContainer', { containerId: id });
  await d.rpc('RemoveContainer', { containerId: id });
  await assert.rejects(d.rpc('ContainerStatus', { containerId: id }), (e: any) => e.code === status.NOT_FOUND);
  assert.deepEqual(await fs.readdir(path.join(d.stateDir, 'attach')).catch(() => []), [], 'no attach link left');
  assert.deepEqual(await fs.readdir(path.join(d.stateDir, 'exits')).catch(() => []), [], 'no exit file left');
  const traces = await hostTraces(d);
  assert.deepEqual(traces.runtimeContainers.filter((c) => c === id), []);
  assert.deepEqual(traces.mounts.filter((m) => m.includes(id)), []);
});

test('a container in a pinned-namespace pod sees the IPC sysctls the pins carry; a finished container reports its exit code', async () => {
  const cfg = pinnedPod({ linux: { sysctls: { 'fs.mqueue.msg_max': '100' }, securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } } });
  const podId = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId;
  const id = await runContainer(podId, cfg, 'mq', ['sleep', '1000']);
  assert.equal((await exec(id, ['cat', '/proc/sys/fs/mqueue/msg_max'])).stdout.toString().trim(), '100');
  assert.equal((await exec(id, ['sh', '-c', 'echo $$'])).stdout.toString().trim() !== '', true);
  const done = await runContainer(podId, cfg, 'done', ['sh', '-c', 'exit 7']);
  const st = await waitExited(done);
  assert.deepEqual([st.state, st.exitCode, st.reason], ['CONTAINER_EXITED', 7, 'Error']);
});

test('CreateContainer refuses a missing image, a stopped pod and a duplicate name, and leaves nothing', async () => {
  const cfg = pausePod();
  const podId = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId;
  await assert.rejects(
    d.rpc('CreateContainer', { podSandboxId: podId, config: { ...containerConfig('x', ['true']), image: { image: `${reg.host}/test/absent:1` } }, sandboxConfig: cfg }),
    (e: any) => e.code === status.NOT_FOUND && /absent:1.*pull it first/.test(e.details),
  );
  const first = await runContainer(podId, cfg, 'twin', ['sleep', '1000']);
  await assert.rejects(d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig('twin', ['true']), sandboxConfig: cfg }), (e: any) => e.code === status.ALREADY_EXISTS && e.details.includes(first));
  await d.rpc('StopPodSandbox', { podSandboxId: podId });
  assert.equal((await d.rpc('ContainerStatus', { containerId: first })).status.state, 'CONTAINER_EXITED', 'stopping the pod stops its containers');
  await assert.rejects(d.rpc('CreateContainer', { podSandboxId: podId, config: containerConfig('late', ['true']), sandboxConfig: cfg }), (e: any) => e.code === status.FAILED_PRECONDITION);
  assert.equal((await d.rpc('ListContainers', {})).containers.length, 1);
  await d.rpc('RemovePodSandbox', { podSandboxId: podId });
  assert.deepEqual((await d.rpc('ListContainers', {})).containers, [], 'removing the pod removes its containers');
  await fs.access(path.join(d.rootDir, 'containers')).then(async () => assert.deepEqual(await fs.readdir(path.join(d.rootDir, 'containers')), []));
});

test('an image removed while a container uses it keeps its layers until the container is gone', async () => {
  const cfg = pausePod();
  const podId = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId;
  const id = await runContainer(podId, cfg, 'user', ['sleep', '1000']);
  await irpc('RemoveImage', { image: { image } });
  assert.equal((await irpc('ImageStatus', { image: { image } })).image, null);
  assert.equal((await exec(id, ['cat', '/etc/passwd'])).exitCode, 0, 'the rootfs still works');
  assert.equal((await fs.readdir(path.join(d.rootDir, 'images', 'snapshots'))).length, 1);
  await d.rpc('RemovePodSandbox', { podSandboxId: podId });
  assert.deepEqual(await fs.readdir(path.join(d.rootDir, 'images', 'snapshots')), [], 'collected once the container is gone');
  await irpc('PullImage', { image: { image } });
});

test('after a daemon restart a running container is found again and still answers exec', async () => {
  const cfg = pausePod();
  const podId = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId;
  const id = await runContainer(podId, cfg, 'survivor', ['sleep', '1000']);
  await d.stopDaemon();
  await d.start();
  assert.equal((await d.rpc('ContainerStatus', { containerId: id })).status.state, 'CONTAINER_RUNNING');
  assert.equal((await exec(id, ['echo', 'still here'])).stdout.toString(), 'still here\n');
  await d.rpc('RemovePodSandbox', { podSandboxId: podId });
  const traces = await hostTraces(d);
  assert.deepEqual([traces.runtimeContainers, traces.mounts, traces.netns], [[], [], []]);
});

test('mount propagation: bidirectional needs a shared host mount, then carries mounts both ways; a private one is refused', async () => {
  const shared = path.join(d.dir, 'shared-vols');
  await fs.mkdir(shared, { recursive: true });
  await execChecked('mount', ['-t', 'tmpfs', 'tmpfs', shared]);
  try {
    await execChecked('mount', ['--make-shared', shared]);
    const cfg = pausePod();
    const podId = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId;
    const privateVol = path.join(d.dir, 'private-vol');
    const refused = containerConfig('refused', ['sleep', '1000'], { mounts: [{ containerPath: '/vol', hostPath: privateVol, propagation: 'PROPAGATION_BIDIRECTIONAL' }] });
    await assert.rejects(d.rpc('CreateContainer', { podSandboxId: podId, config: refused, sandboxConfig: cfg }), (e: any) => e.code === status.FAILED_PRECONDITION && /shared mount/.test(e.details));

    const vol = path.join(shared, 'vol');
    const id = await runContainer(podId, cfg, 'prop', ['sleep', '1000'], {
      mounts: [{ containerPath: '/vol', hostPath: vol, propagation: 'PROPAGATION_BIDIRECTIONAL' }],
      linux: { securityContext: { privileged: true } },
    });
    // Container to host.
    assert.equal((await exec(id, ['sh', '-c', 'mkdir -p /vol/inner && mount --bind /etc /vol/inner'])).exitCode, 0);
    assert.ok((await fs.readdir(path.join(vol, 'inner'))).includes('passwd'), 'the container\'s mount shows on the host');
    // Host to container.
    await fs.mkdir(path.join(vol, 'fromhost'));
    await execChecked('mount', ['-t', 'tmpfs', 'tmpfs', path.join(vol, 'fromhost')]);
    await fs.writeFile(path.join(vol, 'fromhost', 'flag'), 'x');
    assert.equal((await exec(id, ['ls', '/vol/fromhost'])).stdout.toString().trim(), 'flag', 'the host\'s mount shows in the container');
    await d.rpc('RemovePodSandbox', { podSandboxId: podId });
  } finally {
    await execFile('umount', ['--recursive', '--lazy', shared]);
  }
});

test('namespace options: host PID and IPC are the host\'s, POD PID is the pause\'s, CONTAINER PID is the container\'s own', async () => {
  const nsOf = async (id: string, ns: string) => (await exec(id, ['readlink', `/proc/self/ns/${ns}`])).stdout.toString().trim();
  const host = async (ns: string) => fs.readlink(`/proc/self/ns/${ns}`);

  const hostCfg = podConfig({ linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'NODE', ipc: 'NODE' } } } });
  const hostPod = (await d.rpc('RunPodSandbox', { config: hostCfg })).podSandboxId;
  const h = await runContainer(hostPod, hostCfg, 'hostns', ['sleep', '1000'], { linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'NODE', ipc: 'NODE' } } } });
  assert.equal(await nsOf(h, 'pid'), await host('pid'));
  assert.equal(await nsOf(h, 'ipc'), await host('ipc'));
  assert.notEqual(await nsOf(h, 'net'), await host('net'), 'the pod network is still its own');

  const podCfg = pausePod();
  const podId = (await d.rpc('RunPodSandbox', { config: podCfg })).podSandboxId;
  const pause = JSON.parse((await d.rpc('PodSandboxStatus', { podSandboxId: podId, verbose: true })).info.info).pid as number;
  const shared = await runContainer(podId, podCfg, 'shared', ['sleep', '1000']);
  assert.equal(await nsOf(shared, 'pid'), await fs.readlink(`/proc/${pause}/ns/pid`));
  assert.equal(await nsOf(shared, 'ipc'), await fs.readlink(`/proc/${pause}/ns/ipc`));
  assert.equal(await nsOf(shared, 'uts'), await fs.readlink(`/proc/${pause}/ns/uts`));
  const own = await runContainer(podId, podCfg, 'own', ['sleep', '1000'], { linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } } });
  assert.notEqual(await nsOf(own, 'pid'), await fs.readlink(`/proc/${pause}/ns/pid`));
  assert.equal((await exec(own, ['cat', '/proc/1/cmdline'])).stdout.toString().replace(/\0/g, ' ').trim(), 'sleep 1000', 'PID 1 is its own command');
  assert.equal(await nsOf(own, 'ipc'), await fs.readlink(`/proc/${pause}/ns/ipc`), 'still the pod IPC');
});

test('security context: masked and read-only paths, no_new_privs, read-only rootfs, user and groups, capabilities', async () => {
  const cfg = pausePod();
  const podId = (await d.rpc('RunPodSandbox', { config: cfg })).podSandboxId;
  const locked = await runContainer(podId, cfg, 'locked', ['sleep', '1000'], {
    linux: {
      securityContext: {
        maskedPaths: ['/etc/passwd'],
        readonlyPaths: ['/home'],
        noNewPrivs: true,
        readonlyRootfs: true,
        runAsUser: { value: 1000 },
        supplementalGroups: [4242],
        capabilities: { dropCapabilities: ['ALL'] },
      },
    },
  });
  assert.equal((await exec(locked, ['cat', '/etc/passwd'])).stdout.toString(), '', 'masked by /dev/null');
  assert.notEqual((await exec(locked, ['touch', '/home/app/x'])).exitCode, 0, 'read-only path');
  assert.notEqual((await exec(locked, ['touch', '/x'])).exitCode, 0, 'read-only root filesystem');
  const status = (await exec(locked, ['cat', '/proc/self/status'])).stdout.toString();
  assert.match(status, /^NoNewPrivs:\s+1$/m);
  assert.match(status, /^CapEff:\s+0+$/m, 'every capability dropped');
  assert.equal((await exec(locked, ['id', '-u'])).stdout.toString().trim(), '1000');
  assert.match((await exec(locked, ['id', '-G'])).stdout.toString(), /\b4242\b/);

  const open = await runContainer(podId, cfg, 'open', ['sleep', '1000']);
  const st = (await exec(open, ['cat', '/proc/self/status'])).stdout.toString();
  assert.match(st, /^NoNewPrivs:\s+0$/m);
  assert.doesNotMatch(st, /^CapEff:\s+0+$/m, 'the default capabilities');
  assert.match((await exec(open, ['cat', '/etc/passwd'])).stdout.toString(), /^root:/);
  assert.equal((await exec(open, ['touch', '/x'])).exitCode, 0, 'a writable root filesystem by default');
});
