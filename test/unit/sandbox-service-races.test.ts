/**
 * The sandbox lifecycle's lock model and rollback, against in-memory fakes of its ports
 * (network, namespace pinner, pause runtime, sandbox image): no root, no real pods.
 * Each fake records what it holds, so "nothing leaked" is a plain look at the fakes.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { defaultConfig, type CorralConfig } from '../../src/config/config.js';
import { silentLogger } from '../../src/util/log.js';
import { SandboxStore } from '../../src/store/sandbox-store.js';
import { SandboxService, type NamespacePinner, type PodNetworkDriver, type SandboxContainerRuntime } from '../../src/sandbox/service.js';
import { ContainerService } from '../../src/container/service.js';
import type { ImageService } from '../../src/image/image-service.js';
import { SharedExclusiveLock } from '../../src/util/keyed-lock.js';
import { containerNameKey, sandboxNameKey } from '../../src/store/names.js';
import { grpcCode } from '../../src/cri/errors.js';
import type { PodSandboxConfig } from '../../src/cri-api/types.js';
import { containerConfig } from '../helpers/cri-messages.js';

/** A promise the test settles by hand, and one that says when the fake reached it. */
function gate() {
  let open!: () => void;
  let fail!: (e: Error) => void;
  const opened = new Promise<void>((res, rej) => {
    open = res;
    fail = rej;
  });
  let reached!: () => void;
  const arrived = new Promise<void>((r) => (reached = r));
  return { open, fail, opened, arrived, reached };
}
type Gate = ReturnType<typeof gate>;

/** Whether p settles within ms (the fakes answer at once: 150 ms is ages for them). */
const settled = async (p: Promise<unknown>, ms = 150) => {
  let done = false;
  p.then(() => (done = true), () => (done = true));
  await new Promise((r) => setTimeout(r, ms));
  return done;
};

interface Fakes {
  events: string[];
  pins: Set<string>;
  attachments: Set<string>;
  containers: Set<string>;
  /** Set to make the next call wait on it (cleared when reached). */
  gates: { setUp?: Gate; create?: Gate; runtimeConfig?: Gate };
  failures: { start?: boolean; tearDown?: boolean; runtimeConfig?: boolean };
}

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await fs.rm(d, { recursive: true, force: true });
});

async function makeService(): Promise<{ svc: SandboxService; fakes: Fakes; cfg: CorralConfig; dir: string }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-sandbox-unit-'));
  dirs.push(dir);
  const cfg = { ...defaultConfig(), rootDir: path.join(dir, 'root'), stateDir: path.join(dir, 'state'), netnsDir: path.join(dir, 'netns') };
  const fakes: Fakes = { events: [], pins: new Set(), attachments: new Set(), containers: new Set(), gates: {}, failures: {} };
  const wait = async (name: keyof Fakes['gates']) => {
    const g = fakes.gates[name];
    if (!g) return;
    delete fakes.gates[name];
    g.reached();
    await g.opened;
  };
  const network: PodNetworkDriver = {
    async setUp(req) {
      fakes.events.push('cni add');
      fakes.attachments.add(req.containerId); // IPAM reserved before the plugin could fail
      await wait('setUp');
      return { podIp: '10.0.0.2', additionalIps: [], attachments: [] };
    },
    async tearDown(req) {
      fakes.events.push('cni del');
      if (fakes.failures.tearDown) throw new Error('injected DEL failure');
      fakes.attachments.delete(req.containerId);
    },
  };
  const pinner: NamespacePinner = {
    pathFor: (id) => path.join(cfg.netnsDir, `corral-${id}`),
    async create(netnsPath, opts) {
      fakes.events.push('pin');
      if (netnsPath) fakes.pins.add(netnsPath);
      if (opts.utsPath) fakes.pins.add(opts.utsPath);
      if (opts.ipcPath) fakes.pins.add(opts.ipcPath);
    },
    async remove(paths) {
      fakes.events.push('unpin');
      for (const p of paths) fakes.pins.delete(p);
    },
    isPinned: async (p) => fakes.pins.has(p),
  };
  const runtime: SandboxContainerRuntime = {
    async create(_h, record) {
      fakes.events.push('pause create');
      fakes.containers.add(record.id);
      await wait('create');
      return process.pid; // a live process, so the pod reads as READY
    },
    async start() {
      fakes.events.push('pause start');
      if (fakes.failures.start) throw new Error('injected start failure');
    },
    async destroy(_h, id) {
      fakes.events.push('pause destroy');
      fakes.containers.delete(id);
    },
  };
  const svc = new SandboxService({
    config: cfg,
    store: new SandboxStore(cfg.rootDir),
    logger: silentLogger(),
    network: () => network,
    pinner,
    runtime,
    sandboxImage: {
      resolve: async () => ({ path: '/nonexistent-rootfs', args: ['/pause'] }),
      mount: async () => {},
      unmount: async () => {},
    },
    prepareSysctls: (s) => s,
  });
  return { svc, fakes, cfg, dir };
}

let n = 0;
/** Host IPC (no /dev/shm tmpfs to mount, so no root needed); pid POD = a pause container. */
function pod(over: { name?: string; namespace?: string; uid?: string; pid?: string } = {}) {
  n++;
  return {
    metadata: { name: over.name ?? `pod-${n}`, namespace: over.namespace ?? 'ns', uid: over.uid ?? `uid-${n}`, attempt: 0 },
    hostname: 'pod',
    linux: { securityContext: { namespaceOptions: { network: 'POD', pid: over.pid ?? 'POD', ipc: 'NODE' } } },
  } as PodSandboxConfig; // a partial message: see test/helpers/cri-messages.ts
}

async function assertNothingHeld(fakes: Fakes) {
  assert.deepEqual([...fakes.pins], [], 'no pinned namespace');
  assert.deepEqual([...fakes.attachments], [], 'no CNI attachment');
  assert.deepEqual([...fakes.containers], [], 'no pause container');
}

const recordDirs = async (cfg: CorralConfig) => fs.readdir(path.join(cfg.rootDir, 'sandboxes')).catch(() => [] as string[]);

test('a failed Run is undone newest first, the record last; nothing is held and the name is free', async () => {
  const { svc, fakes, cfg } = await makeService();
  fakes.failures.start = true;
  const config = pod();
  await assert.rejects(svc.run(config, ''), /injected start failure/);
  assert.deepEqual(fakes.events, ['pin', 'cni add', 'pause create', 'pause start', 'pause destroy', 'cni del', 'unpin']);
  await assertNothingHeld(fakes);
  assert.deepEqual(await recordDirs(cfg), []);
  assert.deepEqual(svc.all(), []);
  assert.equal(svc.index.all().length, 0);
  fakes.failures.start = false;
  const id = await svc.run(config, '');
  assert.equal(await svc.liveState(svc.get(id)), 'SANDBOX_READY');
});

test('an incomplete rollback leaves the pod listed as NOTREADY with the reason and its name; Stop then Remove finish the job', async () => {
  const { svc, fakes, cfg } = await makeService();
  fakes.failures.start = true;
  fakes.failures.tearDown = true;
  const config = pod();
  await assert.rejects(svc.run(config, ''), /injected start failure/);
  const [rec] = svc.all();
  assert.ok(rec, 'the pod stays listed');
  assert.equal(rec.state, 'notready');
  assert.match(rec.lastError ?? '', /rollback incomplete: CNI DEL: injected DEL failure/);
  assert.equal(await svc.liveState(rec), 'SANDBOX_NOTREADY');
  assert.equal(JSON.parse(await fs.readFile(path.join(cfg.rootDir, 'sandboxes', rec.id, 'sandbox.json'), 'utf8')).state, 'notready', 'on disk too');
  await assert.rejects(svc.run(config, ''), /injected start failure/, 'a retry gets the failure: the name stays with the pod until it is removed');
  assert.equal(svc.all().length, 1);
  fakes.failures.tearDown = false;
  fakes.failures.start = false;
  await svc.stop(rec.id);
  await assertNothingHeld(fakes);
  await svc.remove(rec.id);
  assert.deepEqual(await recordDirs(cfg), []);
  assert.notEqual(await svc.run(config, ''), rec.id, 'the name is free again');
});

for (const where of ['setUp', 'create'] as const) {
  test(`Stop arriving while Run waits in ${where === 'setUp' ? 'CNI ADD' : 'the pause create'}: Stop waits, then stops what Run made`, async () => {
    const { svc, fakes, cfg } = await makeService();
    const g = (fakes.gates[where] = gate());
    const run = svc.run(pod(), '');
    await g.arrived;
    const [id] = svc.index.all();
    assert.ok(id, 'the pod is indexed from its first side effect');
    assert.throws(() => svc.get(id), (e: any) => grpcCode(e) === 5 && /still being created/.test(e.message), 'Status: NOT_FOUND while creating');
    assert.deepEqual(svc.all(), [], 'List: a creating pod is not listed');
    const stop = svc.stop(id);
    assert.equal(await settled(stop), false, 'Stop waits for Run');
    g.open();
    assert.equal(await run, id);
    await stop;
    await assertNothingHeld(fakes);
    const rec = svc.get(id);
    assert.equal(rec.state, 'notready');
    assert.equal(await svc.liveState(rec), 'SANDBOX_NOTREADY');
    const onDisk = JSON.parse(await fs.readFile(path.join(cfg.rootDir, 'sandboxes', id, 'sandbox.json'), 'utf8'));
    assert.equal(onDisk.state, 'notready');
    assert.deepEqual(onDisk.resources.pins, []);
    assert.equal(onDisk.resources.cniAttached, false);
    assert.equal(onDisk.resources.container, false);
  });
}

test('Stop arriving while Run is about to fail: Stop waits for the rollback and finds nothing', async () => {
  const { svc, fakes, cfg } = await makeService();
  const g = (fakes.gates.setUp = gate());
  const run = svc.run(pod(), '');
  await g.arrived;
  const [id] = svc.index.all();
  const stop = svc.stop(id!);
  g.fail(new Error('injected ADD failure'));
  await assert.rejects(run, /injected ADD failure/);
  await stop;
  await assertNothingHeld(fakes);
  assert.deepEqual(await recordDirs(cfg), []);
  assert.equal(svc.index.all().length, 0);
});

test('Remove racing Run (pinned namespaces, no pause): nothing held, no record, the name free', async () => {
  const { svc, fakes, cfg } = await makeService();
  const g = (fakes.gates.setUp = gate());
  const config = pod({ pid: 'CONTAINER' });
  const run = svc.run(config, '');
  await g.arrived;
  const [id] = svc.index.all();
  const remove = svc.remove(id!);
  const retry = svc.run(config, ''); // kubelet's retry after its deadline joins the same creation
  assert.equal(await settled(remove), false, 'Remove waits for Run');
  g.open();
  assert.equal(await run, id);
  assert.equal(await retry, id);
  await remove;
  await assertNothingHeld(fakes);
  assert.deepEqual(await recordDirs(cfg), []);
  assert.deepEqual(svc.all(), []);
  assert.equal(svc.index.all().length, 0);
  const again = await svc.run(config, '');
  assert.notEqual(again, id, 'the name was released');
});

test('names that join to the same string with "_" belong to different pods', async () => {
  const { svc } = await makeService();
  const a = await svc.run(pod({ name: 'a_b', namespace: 'c', uid: 'u' }), '');
  const b = await svc.run(pod({ name: 'a', namespace: 'b_c', uid: 'u' }), '');
  assert.notEqual(a, b);
  assert.equal(svc.get(a).name, 'a_b_c_u_0', 'the displayed name stays kubelet-style');
  assert.equal(svc.get(b).name, 'a_b_c_u_0');
  assert.notEqual(sandboxNameKey(svc.get(a).metadata), sandboxNameKey(svc.get(b).metadata));
  assert.notEqual(containerNameKey('x_y', { name: 'p', namespace: 'n', uid: 'u' }, 0), containerNameKey('x', { name: 'y_p', namespace: 'n', uid: 'u' }, 0));
});

test('a pod\'s shared holders (container calls) and its Stop/Remove exclude each other; Remove sees containers created before it', async () => {
  const { svc, fakes } = await makeService();
  const id = await svc.run(pod(), '');
  const created: string[] = [];
  const removedBy: string[][] = [];
  svc.containers = { stopAll: async () => {}, removeAll: async () => void removedBy.push([...created]) };
  const g = gate();
  const creating = svc.underSharedLock(id, async (sb) => {
    assert.equal(sb?.state, 'ready');
    await g.opened;
    created.push('c1');
  });
  const remove = svc.remove(id);
  const late = svc.underSharedLock(id, async (sb) => sb);
  assert.equal(await settled(remove), false, 'Remove waits for the creation under way');
  assert.equal(await settled(late), false, 'a later container call waits for the Remove queued before it');
  g.open();
  await creating;
  await remove;
  assert.deepEqual(removedBy, [['c1']], 'the container made during the race was removed with its pod');
  assert.equal(await late, undefined, 'the later call finds the pod gone');
  await assertNothingHeld(fakes);
});

test('shared/exclusive lock: shared holders overlap, exclusive is alone, arrival order is kept, failures release', async () => {
  const lock = new SharedExclusiveLock();
  const log: string[] = [];
  const hold = (mode: 'shared' | 'exclusive', name: string, g: Promise<void>, fail = false) =>
    lock[mode]('k', async () => {
      log.push(`${name}+`);
      await g;
      log.push(`${name}-`);
      if (fail) throw new Error(name);
    });
  const g1 = gate();
  const g2 = gate();
  const s1 = hold('shared', 's1', g1.opened, true);
  const s2 = hold('shared', 's2', g2.opened);
  const x = hold('exclusive', 'x', Promise.resolve());
  const s3 = hold('shared', 's3', Promise.resolve());
  await settled(x);
  assert.deepEqual(log, ['s1+', 's2+'], 'two shared holders at once; x and the later s3 wait');
  g1.open();
  await assert.rejects(s1, /s1/);
  assert.equal(await settled(x), false, 'x waits for every shared holder');
  g2.open();
  await Promise.all([s2, x, s3]);
  assert.deepEqual(log, ['s1+', 's2+', 's1-', 's2-', 'x+', 'x-', 's3+', 's3-']);
  assert.equal(lock.busy('k'), false, 'an idle key is forgotten');
});

/** ContainerService in front of the fake pod, with an image whose config read fails on demand. */
function containerService(svc: SandboxService, cfg: CorralConfig, fakes: Fakes) {
  const image = { id: 'sha256:img', chainIds: ['sha256:layer'] };
  const images = {
    find: async () => image,
    runtimeConfig: async () => {
      const g = fakes.gates.runtimeConfig;
      if (g) {
        delete fakes.gates.runtimeConfig;
        g.reached();
        await g.opened;
      }
      if (fakes.failures.runtimeConfig) throw new Error('injected config read failure');
      return { Cmd: ['/bin/true'] };
    },
    store: {
      snapshots: {
        lowerDirs: () => {
          throw new Error('no image layers in unit tests');
        },
      },
    },
  } as unknown as ImageService;
  const containers = new ContainerService({
    config: cfg,
    logger: silentLogger(),
    sandboxes: svc,
    images,
    runtimeFor: () => {
      throw new Error('no runtime in unit tests');
    },
    availableCapabilities: [],
    oomScoreAdjFloor: -1000,
  });
  svc.containers = { stopAll: (id) => containers.stopAllIn(id), removeAll: (id) => containers.removeAllIn(id) };
  return containers;
}

test('CreateContainer failing to read the image config frees the container name', async () => {
  const { svc, fakes, cfg } = await makeService();
  const id = await svc.run(pod(), '');
  const containers = containerService(svc, cfg, fakes);
  fakes.failures.runtimeConfig = true;
  const config = containerConfig({ metadata: { name: 'app', attempt: 0 }, image: { image: 'img' } });
  await assert.rejects(containers.create(id, config), /injected config read failure/);
  // Before the fix the second attempt was refused: ALREADY_EXISTS, the name held by an ID that never existed.
  await assert.rejects(containers.create(id, config), (e: any) => {
    assert.doesNotMatch(e.message, /reserved/);
    assert.match(e.message, /injected config read failure/);
    return true;
  });
  assert.deepEqual(await containers.list(), []);
  assert.deepEqual(await fs.readdir(path.join(cfg.rootDir, 'containers')).catch(() => []), []);
});

test('CreateContainer racing RemovePodSandbox: Remove waits for the creation, which fails cleanly or is removed with the pod', async () => {
  const { svc, fakes, cfg } = await makeService();
  const id = await svc.run(pod(), '');
  const containers = containerService(svc, cfg, fakes);
  const g = (fakes.gates.runtimeConfig = gate());
  const create = containers.create(id, containerConfig({ metadata: { name: 'app', attempt: 0 }, image: { image: 'img' } }));
  await g.arrived;
  const remove = svc.remove(id);
  assert.equal(await settled(remove), false, 'Remove waits for the container being created');
  // The creation goes on (its rootfs cannot be mounted here: it fails and rolls back).
  g.open();
  await assert.rejects(create);
  await remove;
  const late = containers.create(id, containerConfig({ metadata: { name: 'app', attempt: 1 }, image: { image: 'img' } }));
  await assert.rejects(late, (e: any) => grpcCode(e) === 5, 'a creation after the Remove finds no pod');
  assert.deepEqual(await containers.list(), []);
  assert.deepEqual(await fs.readdir(path.join(cfg.rootDir, 'containers')).catch(() => []), []);
  assert.deepEqual(await recordDirs(cfg), []);
  await assertNothingHeld(fakes);
});

test('ContainerStatus and ListContainers racing RemoveContainer never write a removed record back', async () => {
  const { svc, fakes, cfg } = await makeService();
  const sandboxId = await svc.run(pod(), '');
  const containers = containerService(svc, cfg, fakes);
  // Exited containers conmon has recorded but the record has not caught up with: a status
  // read writes the exit; a removal at the same time must win.
  const ids: string[] = [];
  await fs.mkdir(path.join(cfg.stateDir, 'exits'), { recursive: true });
  for (let i = 0; i < 20; i++) {
    const id = `c${i}`.padEnd(64, '0');
    ids.push(id);
    const rec = {
      version: 1, id, sandboxId, name: `app${i}_p_ns_u_0`, nameKey: `["app${i}"]`, metadata: { name: `app${i}`, attempt: 0 }, config: {},
      imageId: 'sha256:img', imageRef: 'img', runtimeHandler: 'runc', state: 'running', createdAt: '1', startedAt: '1', finishedAt: '0',
      exitCode: 0, reason: '', message: '', pid: 0, logPath: '', stopSignal: 'SIGTERM',
      resources: { rootfs: null, runtimeContainer: false },
    };
    await fs.mkdir(path.join(cfg.rootDir, 'containers', id), { recursive: true });
    await fs.writeFile(path.join(cfg.rootDir, 'containers', id, 'container.json'), JSON.stringify(rec));
    await fs.writeFile(path.join(cfg.stateDir, 'exits', id), '0');
  }
  await containers.recover();
  await Promise.all(ids.flatMap((id) => [containers.status(id).catch(() => undefined), containers.list(), containers.remove(id)]));
  assert.deepEqual(await containers.list(), []);
  assert.deepEqual(await fs.readdir(path.join(cfg.rootDir, 'containers')), [], 'no removed record re-created');
});

test('container names that join to the same string with "_" in different pods do not collide', async () => {
  const { svc, fakes, cfg } = await makeService();
  const podA = await svc.run(pod({ name: 'p_q', namespace: 'n', uid: 'u' }), '');
  const podB = await svc.run(pod({ name: 'p', namespace: 'q_n', uid: 'u' }), '');
  const containers = containerService(svc, cfg, fakes);
  fakes.failures.runtimeConfig = true;
  // The first creation holds its name while it waits; the second, in the other pod, must get its own.
  const g = (fakes.gates.runtimeConfig = gate());
  const first = containers.create(podA, containerConfig({ metadata: { name: 'app', attempt: 0 }, image: { image: 'img' } }));
  await g.arrived;
  const second = containers.create(podB, containerConfig({ metadata: { name: 'app', attempt: 0 }, image: { image: 'img' } }));
  await assert.rejects(second, (e: any) => {
    assert.doesNotMatch(e.message, /reserved/, 'not refused as a duplicate name');
    return /injected config read failure/.test(e.message);
  });
  g.open();
  await assert.rejects(first, /injected config read failure/);
});
