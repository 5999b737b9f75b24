/**
 * ContainerService against in-memory fakes of its ports (test/helpers/service-fakes.ts): no
 * root. Unless a test sets fakes.layersUnpacked, the root filesystem cannot be mounted (the
 * fake image has no layers), so creation fails at step 3, after the record was written and
 * the rootfs directories made. With it, creation reaches the monitor, and start, stop and
 * remove run against the fake runtime and monitor.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { ContainerService } from '../../src/container/service.js';
import type { NameRegistry } from '../../src/store/names.js';
import { grpcCode } from '../../src/cri/errors.js';
import { containerConfig } from '../helpers/cri-messages.js';
import { assertNoContainerHeld, containerService, gate, makeService, pod, removeServiceDirs, settled, type Fakes } from '../helpers/service-fakes.js';

afterEach(removeServiceDirs);

const appConfig = (attempt = 0) => containerConfig({ metadata: { name: 'app', attempt }, image: { image: 'img' } });

/** Records the bookkeeping steps (record written/removed, name freed) in fakes.events. */
function spyOnBookkeeping(containers: ContainerService, fakes: Fakes, vdirOf: (id: string) => string) {
  const store = containers.store;
  const save = store.save.bind(store);
  const remove = store.remove.bind(store);
  const spy = { failRemove: 0, vdirGoneAtRemove: undefined as boolean | undefined };
  store.save = async (rec) => {
    fakes.events.push(`save ${rec.state}`);
    return save(rec);
  };
  store.remove = async (id) => {
    fakes.events.push('forget record');
    spy.vdirGoneAtRemove = !existsSync(vdirOf(id));
    if (spy.failRemove > 0) {
      spy.failRemove--;
      throw new Error('injected record removal failure');
    }
    return remove(id);
  };
  // The registry is private: spied on for the order only, its effects are checked through create.
  const names = (containers as unknown as { names: NameRegistry }).names;
  const release = names.release.bind(names);
  names.release = (key, id) => {
    fakes.events.push('release name');
    release(key, id);
  };
  return spy;
}

test('CreateContainer failing after the record and rootfs dirs exist: undone newest first, the name last; nothing is left', async () => {
  const { svc, fakes, cfg } = await makeService();
  const sandboxId = await svc.run(pod(), '');
  const containers = containerService(svc, cfg, fakes);
  const vdirOf = (id: string) => path.join(cfg.stateDir, 'containers', id);
  const spy = spyOnBookkeeping(containers, fakes, vdirOf);
  fakes.events.length = 0;

  await assert.rejects(containers.create(sandboxId, appConfig()), (e: any) => {
    assert.equal(grpcCode(e), 13, 'INTERNAL');
    assert.match(e.message, /creating container app in pod sandbox .*: no image layers in unit tests/);
    return true;
  });
  assert.deepEqual(fakes.events, ['save creating', 'forget record', 'release name']);
  assert.equal(spy.vdirGoneAtRemove, true, 'the rootfs was undone before the record was forgotten');
  assert.deepEqual(await containers.list(), []);
  assert.deepEqual(containers.index.all(), []);
  assert.deepEqual(await fs.readdir(path.join(cfg.rootDir, 'containers')), [], 'no record, no writable layer');
  assert.deepEqual(await fs.readdir(path.join(cfg.stateDir, 'containers')), [], 'no rootfs target');
  // The name is free: the same name fails the same way, not as ALREADY_EXISTS.
  await assert.rejects(containers.create(sandboxId, appConfig()), (e: any) => grpcCode(e) === 13 && !/reserved/.test(e.message));
});

test('an incomplete rollback keeps the record, listed as exited with reason CreateFailed, and the name; RemoveContainer finishes the job', async () => {
  const { svc, fakes, cfg } = await makeService();
  const sandboxId = await svc.run(pod(), '');
  const containers = containerService(svc, cfg, fakes);
  const spy = spyOnBookkeeping(containers, fakes, (id) => path.join(cfg.stateDir, 'containers', id));
  spy.failRemove = 1;
  fakes.events.length = 0;

  await assert.rejects(containers.create(sandboxId, appConfig()), /no image layers in unit tests/);
  // The name's undo saw one failure before it and kept the name: no 'release name'.
  assert.deepEqual(fakes.events, ['save creating', 'forget record', 'save exited']);
  const listed = await containers.list();
  assert.equal(listed.length, 1, 'the container stays listed');
  const rec = listed[0]!;
  assert.equal(rec.state, 'exited');
  assert.equal(rec.reason, 'CreateFailed');
  assert.match(rec.message, /no image layers in unit tests; rollback incomplete: forget container record: injected record removal failure/);
  const onDisk = JSON.parse(await fs.readFile(path.join(cfg.rootDir, 'containers', rec.id, 'container.json'), 'utf8'));
  assert.equal(onDisk.state, 'exited', 'on disk too, for a restart');
  assert.equal(onDisk.reason, 'CreateFailed');
  assert.equal((await containers.status(rec.id)).reason, 'CreateFailed');

  await assert.rejects(containers.create(sandboxId, appConfig()), (e: any) => {
    assert.equal(grpcCode(e), 6, 'ALREADY_EXISTS');
    assert.match(e.message, new RegExp(`reserved for container ${rec.id}`));
    return true;
  });

  fakes.events.length = 0;
  await containers.remove(rec.id);
  // The intent says a runtime container may exist (never cleared here): Remove deletes it to be sure.
  assert.deepEqual(fakes.events, [`runtime delete ${rec.id}`, 'forget record', 'release name']);
  assert.deepEqual(await containers.list(), []);
  assert.deepEqual(await fs.readdir(path.join(cfg.rootDir, 'containers')), []);
  await assert.rejects(containers.create(sandboxId, appConfig()), (e: any) => grpcCode(e) === 13 && !/reserved/.test(e.message), 'the name is free again');
});

/** A pod, its ContainerService and the bookkeeping spy, with the image's layers unpacked (creation can succeed). */
async function mountableSetup() {
  const { svc, fakes, cfg } = await makeService();
  const sandboxId = await svc.run(pod(), '');
  const containers = containerService(svc, cfg, fakes);
  const vdirOf = (id: string) => path.join(cfg.stateDir, 'containers', id);
  const spy = spyOnBookkeeping(containers, fakes, vdirOf);
  fakes.layersUnpacked = true;
  return { svc, fakes, cfg, sandboxId, containers, spy, vdirOf };
}

/** Nothing of any container is left: fakes, records, folders, listing (the pod lives on). */
async function assertNoContainerLeft(containers: ContainerService, fakes: Fakes, cfg: { rootDir: string; stateDir: string }) {
  assertNoContainerHeld(fakes);
  assert.deepEqual(await containers.list(), []);
  assert.deepEqual(containers.index.all(), []);
  assert.deepEqual(await fs.readdir(path.join(cfg.rootDir, 'containers')), [], 'no record, no writable layer');
  assert.deepEqual(await fs.readdir(path.join(cfg.stateDir, 'containers')), [], 'no rootfs target, no bundle');
}

test('conmon create failing with the runtime container half made: runtime delete, unmount, record, name, newest first; nothing is left', async () => {
  const { fakes, cfg, sandboxId, containers, spy } = await mountableSetup();
  fakes.failures.conmonCreate = true;
  fakes.events.length = 0;

  await assert.rejects(containers.create(sandboxId, appConfig()), (e: any) => {
    assert.equal(grpcCode(e), 13, 'INTERNAL');
    assert.match(e.message, /creating container app in pod sandbox .*: injected conmon create failure/);
    return true;
  });
  const deleted = fakes.events.find((e) => e.startsWith('runtime delete '));
  assert.ok(deleted, 'the runtime container was deleted');
  assert.deepEqual(fakes.events, ['save creating', 'mount', 'conmon create', deleted, 'unmount', 'forget record', 'release name']);
  assert.equal(spy.vdirGoneAtRemove, true, 'the rootfs and bundle were undone before the record was forgotten');
  await assertNoContainerLeft(containers, fakes, cfg);

  // The name is free: the same name is created now that conmon works.
  fakes.failures.conmonCreate = false;
  const id = await containers.create(sandboxId, appConfig());
  assert.equal((await containers.status(id)).state, 'created');
});

test('start, then Stop: the stop signal, then Stop waits for the exit through the monitor; the exit code is in status and list; Remove frees everything', async () => {
  const { fakes, cfg, sandboxId, containers } = await mountableSetup();
  const id = await containers.create(sandboxId, appConfig());
  assert.equal((await containers.status(id)).state, 'created');
  assert.deepEqual([[...fakes.mounts].length, fakes.appContainers.has(id), fakes.monitorFiles.has(id)], [1, true, true]);

  await containers.start(id);
  const running = await containers.status(id);
  assert.equal(running.state, 'running');
  assert.notEqual(running.startedAt, '0');

  fakes.events.length = 0;
  const g = (fakes.gates.exit = gate());
  const stop = containers.stop(id, 10);
  await g.arrived;
  assert.equal(await settled(stop), false, 'Stop waits for the container to exit');
  assert.deepEqual(fakes.events, ['runtime kill TERM', 'monitor wait 10000']);
  g.open();
  await stop;
  assert.deepEqual(fakes.events, ['runtime kill TERM', 'monitor wait 10000', 'save exited'], 'it exited within its grace period: no SIGKILL');
  const stopped = await containers.status(id);
  assert.deepEqual([stopped.state, stopped.exitCode, stopped.reason, stopped.pid], ['exited', 143, 'Error', 0]);
  assert.equal(stopped.finishedAt, fakes.exits.get(id)!.finishedAt, 'the exit time the monitor recorded');
  assert.deepEqual((await containers.list()).map((r) => [r.id, r.state, r.exitCode]), [[id, 'exited', 143]]);

  fakes.events.length = 0;
  await containers.stop(id, 10);
  assert.deepEqual(fakes.events, [], 'stopping an exited container does nothing');

  await containers.remove(id);
  assert.deepEqual(fakes.events, [`runtime delete ${id}`, 'unmount', 'remove monitor files', 'forget record', 'release name']);
  await assertNoContainerLeft(containers, fakes, cfg);
  await assert.rejects(containers.status(id), (e: any) => grpcCode(e) === 5, 'NOT_FOUND once removed');
  await containers.remove(id); // unknown IDs are fine
  assert.ok(await containers.create(sandboxId, appConfig()), 'the name is free again');
});

test('Stop of a container that ignores its stop signal: SIGKILL after the grace period, exit 137', async () => {
  const { fakes, sandboxId, containers } = await mountableSetup();
  const id = await containers.create(sandboxId, appConfig());
  await containers.start(id);
  fakes.events.length = 0;
  const g = (fakes.gates.exit = gate()); // never opened: SIGTERM changes nothing
  await containers.stop(id, 1);
  assert.deepEqual(fakes.events, ['runtime kill TERM', 'monitor wait 1000', 'runtime kill KILL', 'monitor wait 10000', 'save exited']);
  const rec = await containers.status(id);
  assert.deepEqual([rec.state, rec.exitCode, rec.reason], ['exited', 137, 'Error']);
  g.open();
});

test('a running container whose exit the monitor reports is exited with that code, in status, list and on disk; Stop then kills nothing', async () => {
  const { fakes, cfg, sandboxId, containers } = await mountableSetup();
  const id = await containers.create(sandboxId, appConfig());
  await containers.start(id);
  fakes.exits.set(id, { code: 3, finishedAt: '1234' });

  const rec = await containers.status(id);
  assert.deepEqual([rec.state, rec.exitCode, rec.reason, rec.finishedAt, rec.pid], ['exited', 3, 'Error', '1234', 0]);
  assert.deepEqual((await containers.list()).map((r) => [r.id, r.state, r.exitCode]), [[id, 'exited', 3]]);
  const onDisk = JSON.parse(await fs.readFile(path.join(cfg.rootDir, 'containers', id, 'container.json'), 'utf8'));
  assert.deepEqual([onDisk.state, onDisk.exitCode], ['exited', 3], 'written back for a restart');

  fakes.events.length = 0;
  await containers.stop(id, 10);
  assert.deepEqual(fakes.events, [], 'nothing to signal');
});

test('ListContainers asks for the exit of only the containers with an exit record, and lists each exit at once', async () => {
  const { fakes, sandboxId, containers } = await mountableSetup();
  const a = await containers.create(sandboxId, containerConfig({ metadata: { name: 'a', attempt: 0 }, image: { image: 'img' } }));
  const b = await containers.create(sandboxId, containerConfig({ metadata: { name: 'b', attempt: 0 }, image: { image: 'img' } }));
  await containers.start(a);
  await containers.start(b);
  fakes.exitReads.length = 0;
  const states = async () => Object.fromEntries((await containers.list()).map((r) => [r.id, r.state]));
  assert.deepEqual(await states(), { [a]: 'running', [b]: 'running' });
  assert.deepEqual(fakes.exitReads, [], 'no exit record: nothing read');
  fakes.exits.set(b, { code: 0, finishedAt: '1' });
  assert.deepEqual(await states(), { [a]: 'running', [b]: 'exited' }, 'the exit shows in the very next list');
  assert.ok(fakes.exitReads.length > 0 && fakes.exitReads.every((id) => id === b), `read: ${fakes.exitReads.join(', ')}`);
});

test('start failing: the container is exited with reason StartError and code 128, and the caller gets INTERNAL', async () => {
  const { fakes, sandboxId, containers } = await mountableSetup();
  const id = await containers.create(sandboxId, appConfig());
  fakes.failures.containerStart = true;
  await assert.rejects(containers.start(id), (e: any) => grpcCode(e) === 13 && /starting container .*: injected container start failure/.test(e.message));
  const rec = await containers.status(id);
  assert.deepEqual([rec.state, rec.exitCode, rec.reason, rec.message], ['exited', 128, 'StartError', 'injected container start failure']);
  await assert.rejects(containers.start(id), (e: any) => grpcCode(e) === 9, 'FAILED_PRECONDITION: not created any more');
});

test('Remove of a created, never started container kills it and waits for the exit first, then removes everything', async () => {
  const { fakes, cfg, sandboxId, containers } = await mountableSetup();
  const id = await containers.create(sandboxId, appConfig());
  fakes.events.length = 0;
  await containers.remove(id);
  assert.deepEqual(fakes.events, ['runtime kill KILL', 'monitor wait 10000', 'save exited', `runtime delete ${id}`, 'unmount', 'remove monitor files', 'forget record', 'release name']);
  await assertNoContainerLeft(containers, fakes, cfg);
});
