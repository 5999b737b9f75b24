/**
 * ListPodSandbox, ListContainers and ListImages reuse their items (frozen, so their encoding is reused
 * too) while nothing changes, and never show a stale state: against the in-memory fakes of
 * test/helpers/service-fakes.ts (no root).
 */
import { test, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { sandboxHandlers } from '../../src/cri/sandbox-rpc.js';
import { containerHandlers } from '../../src/cri/container-rpc.js';
import { imageHandlers } from '../../src/cri/image-rpc.js';
import { defaultConfig } from '../../src/config/config.js';
import type { ImageRecord } from '../../src/image/image-store.js';
import type { ImageService } from '../../src/image/image-service.js';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
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

test('ListImages: the same frozen item while an image is unchanged; a new one when its tags or its pin change', async (t) => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-list-images-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  const image: ImageRecord = {
    id: 'sha256:' + 'a'.repeat(64), repoTags: ['example.com/app:1'], repoDigests: ['example.com/app@sha256:' + 'b'.repeat(64)],
    manifestDigest: 'sha256:' + 'b'.repeat(64), configDigest: 'sha256:' + 'a'.repeat(64), layers: [], diffIds: [], chainIds: [],
    size: 1234, user: '1000', createdAt: '2026-01-01T00:00:00Z',
  };
  let pinned = false;
  const images = { list: async () => [image], isPinned: () => pinned } as unknown as ImageService;
  const h = imageHandlers({ ...defaultConfig(), rootDir: dir }, images);
  const list = async () => (await h.ListImages({} as any)).images as any[];
  const [first] = await list();
  assert.ok(Object.isFrozen(first));
  assert.deepEqual([first.repoTags, first.size, first.uid, first.pinned], [['example.com/app:1'], '1234', { value: 1000 }, false]);
  assert.equal((await list())[0], first, 'the same item again');
  image.repoTags.push('example.com/app:latest'); // the store tags a record in place
  const [tagged] = await list();
  assert.deepEqual(tagged.repoTags, ['example.com/app:1', 'example.com/app:latest']);
  pinned = true;
  assert.equal((await list())[0].pinned, true);
  assert.equal((await list())[0], (await list())[0]);
});
