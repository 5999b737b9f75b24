/**
 * The sandbox lifecycle's lock model and rollback, against in-memory fakes of its ports
 * (test/helpers/service-fakes.ts: network, namespace pinner, pause runtime, sandbox image):
 * no root, no real pods. Each fake records what it holds, so "nothing leaked" is a plain
 * look at the fakes.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { CorralConfig } from '../../src/config/config.js';
import { SharedExclusiveLock } from '../../src/util/keyed-lock.js';
import { containerNameKey, sandboxNameKey } from '../../src/store/names.js';
import { grpcCode } from '../../src/cri/errors.js';
import type { PodSandboxConfig } from '../../src/cri-api/types.js';
import { containerConfig } from '../helpers/cri-messages.js';
import { assertNothingHeld, containerService, gate, makeService, pod, removeServiceDirs, settled } from '../helpers/service-fakes.js';

afterEach(removeServiceDirs);

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
    fakes.exits.set(id, { code: 0, finishedAt: '2' }); // conmon's exit file
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
