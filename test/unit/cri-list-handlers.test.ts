/**
 * ListPodSandbox and ListContainers reuse their items (frozen, so their encoding is reused
 * too) while nothing changes, and never show a stale state: against the in-memory fakes of
 * test/helpers/service-fakes.ts (no root).
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { sandboxHandlers } from '../../src/cri/sandbox-rpc.js';
import { containerHandlers } from '../../src/cri/container-rpc.js';
import { containerConfig } from '../helpers/cri-messages.js';
import { containerService, makeService, pod, removeServiceDirs } from '../helpers/service-fakes.js';

afterEach(removeServiceDirs);

test('ListPodSandbox: the same frozen item while a pod is unchanged; NOTREADY as soon as its pins are gone, READY when back', async () => {
  const { svc, fakes } = await makeService();
  const id = await svc.run(pod({ pid: 'CONTAINER' }), '');
  const h = sandboxHandlers(svc);
  const list = async () => (await h.ListPodSandbox({} as any)).items as any[];
  const [first] = await list();
  assert.equal(first.state, 'SANDBOX_READY');
  assert.ok(Object.isFrozen(first) && Object.isFrozen(first.labels), 'frozen: its bytes can be kept');
  assert.equal((await list())[0], first, 'the same item again');
  const pins = [...fakes.pins];
  assert.ok(pins.length > 0, 'a pinned pod');
  fakes.pins.delete(pins[0]!);
  const [gone] = await list();
  assert.equal(gone.id, id);
  assert.equal(gone.state, 'SANDBOX_NOTREADY');
  fakes.pins.add(pins[0]!);
  assert.equal((await list())[0], first);
  await svc.stop(id);
  const [stopped] = await list();
  assert.equal(stopped.state, 'SANDBOX_NOTREADY');
  assert.deepEqual(stopped.labels, first.labels);
});

test('ListContainers: the same frozen item while a container is unchanged; a new one once it exits', async () => {
  const { svc, fakes, cfg } = await makeService();
  const sandboxId = await svc.run(pod(), '');
  const containers = containerService(svc, cfg, fakes);
  fakes.layersUnpacked = true;
  const id = await containers.create(sandboxId, containerConfig({ metadata: { name: 'app', attempt: 0 }, image: { image: 'img' } }));
  await containers.start(id);
  const h = containerHandlers(containers);
  const list = async () => (await h.ListContainers({} as any)).containers as any[];
  const [first] = await list();
  assert.equal(first.state, 'CONTAINER_RUNNING');
  assert.ok(Object.isFrozen(first));
  assert.equal((await list())[0], first);
  fakes.exits.set(id, { code: 1, finishedAt: '5' });
  const [exited] = await list();
  assert.equal(exited.state, 'CONTAINER_EXITED', 'the exit shows in the very next list');
  // The exit is recorded now: one record, one item from here on.
  const [again] = await list();
  assert.equal(again.state, 'CONTAINER_EXITED');
  assert.equal((await list())[0], again);
});
