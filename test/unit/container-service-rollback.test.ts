/**
 * ContainerService.create's rollback against in-memory fakes (test/helpers/service-fakes.ts):
 * no root. The root filesystem cannot be mounted here (the fake image has no layers), so every
 * creation fails at step 2, after the record was written and the rootfs directories made.
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import type { ContainerService } from '../../src/container/service.js';
import type { NameRegistry } from '../../src/store/names.js';
import { grpcCode } from '../../src/cri/errors.js';
import { containerConfig } from '../helpers/cri-messages.js';
import { containerService, makeService, pod, removeServiceDirs, type Fakes } from '../helpers/service-fakes.js';

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
