/**
 * critest v1.26.1's Image Manager specs, replayed step for step through Corral's CRI
 * client with the image names critest uses (gcr.io/k8s-staging-cri-tools/...) served by
 * a local registry through Corral's mirror configuration. CI has no critest binary (it
 * needs a Go toolchain and the cri-tools source); test/conformance/run-critest.ts runs
 * the real one where it is installed.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon } from '../helpers/daemon.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { critestMirrorToml, pushCritestImages, type CritestImage } from '../helpers/critest-images.js';
import { createImageClient, call } from '../../src/cri/client.js';
import type { ImageRpcName } from '../../src/cri/proto.js';

const R = 'gcr.io/k8s-staging-cri-tools/';
let reg: TestRegistry;
let d: TestDaemon;
let client: ReturnType<typeof createImageClient>;
let images: CritestImage[];
const rpc = (m: ImageRpcName, req: object) => call<any>(client, m, req, { deadlineMs: 60_000 });
const status = async (image: string) => (await rpc('ImageStatus', { image: { image } })).image;
/** critest's removeImage: status, then remove by ID if present. */
const removeImage = async (name: string) => {
  const st = await status(name);
  if (st) await rpc('RemoveImage', { image: { image: st.id } });
};
/** critest's PullPublicImage: ":latest" appended when there is no tag, pull, return the image ref. */
/** critest's pullImageList: one after the other. */
const pullImageList = async (names: string[]) => {
  const ids: string[] = [];
  for (const n of names) ids.push(await pullPublic(n));
  return ids;
};
const pullPublic = async (name: string) => (await rpc('PullImage', { image: { image: name.includes(':') ? name : `${name}:latest` }, sandboxConfig: {} })).imageRef as string;

before(async () => {
  reg = await startRegistry();
  images = await pushCritestImages(reg);
  d = new TestDaemon({ extraToml: critestMirrorToml(reg) });
  await d.start();
  client = createImageClient(d.socket);
});
after(async () => {
  client?.close();
  await d?.cleanup();
  await reg?.stop();
});

async function testPullPublicImage(name: string, check: (s: any) => void) {
  await removeImage(name);
  await pullPublic(name);
  const s = await status(name);
  assert.ok(s.id, 'Image Id should not be nil');
  assert.ok(s.size !== undefined && s.size !== null, 'Image Size should not be nil');
  check(s);
  await removeImage(name);
  assert.equal(await status(name), null, 'image should be removed');
}

test('public image with tag should be pulled and removed', async () => {
  await testPullPublicImage(`${R}test-image-tag:test`, (s) => assert.deepEqual(s.repoTags, [`${R}test-image-tag:test`]));
});

test('public image without tag should be pulled and removed', async () => {
  await testPullPublicImage(`${R}test-image-latest`, (s) => assert.deepEqual(s.repoTags, [`${R}test-image-latest:latest`]));
});

test('image status should support all kinds of references', async () => {
  const name = `${R}test-image-tag:all`;
  await removeImage(name);
  await pullPublic(name);
  const s = await status(name);
  assert.ok(s);
  assert.deepEqual(await status(s.id), s);
  for (const tag of s.repoTags) assert.deepEqual(await status(tag), s, tag);
  assert.ok(s.repoDigests.length > 0);
  for (const digest of s.repoDigests) assert.deepEqual(await status(digest), s, digest);
  await removeImage(name);
  assert.equal(await status(name), null);
});

test('image status get image fields should not have Uid|Username empty', async () => {
  const cases: [string, number, string][] = [
    [`${R}test-image-user-uid`, 1002, ''],
    [`${R}test-image-user-username`, 0, 'www-data'],
    [`${R}test-image-user-uid-group`, 1003, ''],
    [`${R}test-image-user-username-group`, 0, 'www-data'],
  ];
  for (const [name, uid, username] of cases) {
    await pullPublic(name);
    const s = await status(`${name}:latest`);
    assert.equal(Number(s.uid?.value ?? 0), uid, name);
    assert.equal(s.username, username, name);
    await removeImage(`${name}:latest`);
  }
});

test('listImage should get exactly 3 image in the result list', async () => {
  const list = [1, 2, 3].map((n) => `${R}test-image-${n}:latest`);
  for (const n of list) await removeImage(n);
  const ids = [...new Set(await pullImageList(list))];
  assert.equal(ids.length, 3, '3 image ids should be returned');
  const all = (await rpc('ListImages', { filter: {} })).images;
  for (const [i, id] of ids.entries()) {
    const img = all.find((x: any) => x.id === id);
    assert.ok(img, id);
    assert.deepEqual(img.repoTags, [list[i]]);
  }
  for (const n of list) await removeImage(n);
});

test('listImage should get exactly 3 repoTags in the result image', async () => {
  const list = [1, 2, 3].map((n) => `${R}test-image-tags:${n}`);
  for (const n of list) await removeImage(n);
  const ids = [...new Set(await pullImageList(list))];
  assert.equal(ids.length, 1, 'Only 1 image id should be returned');
  const img = (await rpc('ListImages', { filter: {} })).images.find((x: any) => x.id === ids[0]);
  assert.deepEqual([...img.repoTags].sort(), [...list].sort());
  for (const n of list) await removeImage(n);
  assert.deepEqual((await rpc('ListImages', { filter: {} })).images, [], 'every critest image removed');
  assert.equal(images.filter((i) => i.repo === 'test-image-tags').length, 3);
});
