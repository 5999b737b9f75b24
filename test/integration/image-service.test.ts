/**
 * The CRI ImageService end to end: a real registry on 127.0.0.1, a real daemon, pulls
 * through mirrors and auth, status by every kind of reference, shared layers, removal
 * by tag and by ID with garbage collection, and archive import.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { TestDaemon } from '../helpers/daemon.js';
import { pushImage, startProxy, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { busyboxImage, buildImage, buildLayer, multiArchIndex, tinyImage, whiteoutImage, type TestImage } from '../helpers/test-images.js';
import { createImageClient, call } from '../../src/cri/client.js';
import { dirUsage } from '../../src/image/fs-usage.js';
import type { ImageRpcName } from '../../src/cri/proto.js';

let reg: TestRegistry;
let authReg: TestRegistry;
let d: TestDaemon;
let busybox: TestImage;
let client: ReturnType<typeof createImageClient>;
const irpc = (method: ImageRpcName, req: object = {}) => call<any>(client, method, req, { deadlineMs: 60_000 });

before(async () => {
  reg = await startRegistry();
  authReg = await startRegistry({ auth: 'basic', users: { alice: 's3cret' } });
  busybox = await busyboxImage();
  await pushImage(reg, 'test/busybox', '1', busybox);
  await pushImage(reg, 'test/busybox', '2', busybox);
  await pushImage(reg, 'e2e-test-images/busybox', '1.29-2', busybox);
  await pushImage(reg, 'test/multi', 'latest', await multiArchIndex());
  await pushImage(reg, 'test/zstd', 'latest', await busyboxImage({ compression: 'zstd' }));
  await pushImage(reg, 'test/whiteout', 'latest', await whiteoutImage());
  await pushImage(reg, 'test/uid', 'latest', await busyboxImage({ config: { User: '1002:1003' } }));
  await pushImage(reg, 'test/username', 'latest', await busyboxImage({ config: { User: 'www-data' } }));
  await pushImage(authReg, 'private/tiny', 'latest', await tinyImage('secret\n'));
  d = new TestDaemon({ extraToml: `[registries."registry.k8s.io"]\nmirrors = ["http://${reg.host}"]\n` });
  await d.start();
  client = createImageClient(d.socket);
});

after(async () => {
  client?.close();
  await d?.cleanup();
  await reg?.stop();
  await authReg?.stop();
});

const imagesDir = () => path.join(d.rootDir, 'images');

test('pull by tag; status by tag, ID, ID prefix and digest agree; list shows it', async () => {
  const ref = `${reg.host}/test/busybox:1`;
  const { imageRef } = await irpc('PullImage', { image: { image: ref } });
  assert.equal(imageRef, busybox.config.digest);
  const st = (await irpc('ImageStatus', { image: { image: ref }, verbose: true })).image;
  assert.equal(st.id, busybox.config.digest);
  assert.deepEqual(st.repoTags, [ref]);
  assert.deepEqual(st.repoDigests, [`${reg.host}/test/busybox@${busybox.manifest.digest}`]);
  assert.ok(Number(st.size) > 0);
  for (const other of [st.id, st.id.slice(7, 19), st.repoDigests[0]]) {
    assert.deepEqual((await irpc('ImageStatus', { image: { image: other } })).image, st, other);
  }
  const verbose = await irpc('ImageStatus', { image: { image: ref }, verbose: true });
  assert.deepEqual(JSON.parse(verbose.info.info).imageSpec.rootfs.diff_ids, busybox.config.json.rootfs.diff_ids);
  const { images } = await irpc('ListImages', {});
  assert.ok(images.some((i: any) => i.id === st.id));
  assert.deepEqual((await irpc('ListImages', { filter: { image: { image: ref } } })).images.map((i: any) => i.id), [st.id]);
});

test('a second tag of the same image adds a repo tag; removing one tag keeps the image, removing by ID removes it and its layers', async () => {
  const t1 = `${reg.host}/test/busybox:1`;
  const t2 = `${reg.host}/test/busybox:2`;
  await irpc('PullImage', { image: { image: t1 } });
  await irpc('PullImage', { image: { image: t2 } });
  const st = (await irpc('ImageStatus', { image: { image: t1 } })).image;
  assert.deepEqual([...st.repoTags].sort(), [t1, t2].sort());
  await irpc('RemoveImage', { image: { image: t2 } });
  assert.deepEqual((await irpc('ImageStatus', { image: { image: t1 } })).image.repoTags, [t1]);
  assert.equal((await irpc('ImageStatus', { image: { image: t2 } })).image, null);
  // Every other image that shares the busybox layer must go before the layer can.
  for (const i of (await irpc('ListImages', {})).images) await irpc('RemoveImage', { image: { image: i.id } });
  await irpc('RemoveImage', { image: { image: st.id } });
  assert.equal((await irpc('ImageStatus', { image: { image: st.id } })).image, null);
  assert.deepEqual(await fs.readdir(path.join(imagesDir(), 'snapshots')).catch(() => []), [], 'unreferenced layers collected');
  assert.deepEqual(await fs.readdir(path.join(imagesDir(), 'blobs', 'sha256')).catch(() => []), [], 'unreferenced blobs collected');
});

test('unknown image: status is empty, removal succeeds; a bad reference is INVALID_ARGUMENT; a missing one is NOT_FOUND', async () => {
  assert.equal((await irpc('ImageStatus', { image: { image: `${reg.host}/nope:1` } })).image, null);
  await irpc('RemoveImage', { image: { image: `${reg.host}/nope:1` } });
  await assert.rejects(irpc('PullImage', { image: { image: 'test/Upper:1' } }), (e: any) => e.code === status.INVALID_ARGUMENT);
  await assert.rejects(irpc('PullImage', { image: { image: `${reg.host}/test/nope:1` } }), (e: any) => e.code === status.NOT_FOUND && e.details.includes(`${reg.host}/test/nope:1`));
});

test('mirror configuration: registry.k8s.io references are served by the local registry', async () => {
  const ref = 'registry.k8s.io/e2e-test-images/busybox:1.29-2';
  const { imageRef } = await irpc('PullImage', { image: { image: ref } });
  assert.equal(imageRef, busybox.config.digest);
  assert.ok((await irpc('ImageStatus', { image: { image: ref } })).image.repoTags.includes(ref));
  await irpc('RemoveImage', { image: { image: ref } });
});

test('multi-arch index: this host\'s manifest is unpacked, the repo digest is the index digest', async () => {
  const ref = `${reg.host}/test/multi:latest`;
  await irpc('PullImage', { image: { image: ref } });
  const st = (await irpc('ImageStatus', { image: { image: ref } })).image;
  const index = await multiArchIndex();
  const mine = index.images.find((i) => i.platform.architecture === (process.arch === 'x64' ? 'amd64' : process.arch))!;
  assert.equal(st.id, mine.config.digest);
  assert.deepEqual(st.repoDigests, [`${reg.host}/test/multi@${index.index.digest}`]);
  await irpc('RemoveImage', { image: { image: st.id } });
});

test('zstd and whiteout layers unpack into shared overlay layer dirs', async () => {
  await irpc('PullImage', { image: { image: `${reg.host}/test/zstd:latest` } });
  await irpc('PullImage', { image: { image: `${reg.host}/test/whiteout:latest` } });
  const snapshots = await fs.readdir(path.join(imagesDir(), 'snapshots'));
  // zstd busybox and gzip busybox have the same diff ID: one shared base layer, plus the whiteout layer.
  assert.equal(snapshots.length, 2, snapshots.join(' '));
  for (const s of snapshots) {
    const fsDir = path.join(imagesDir(), 'snapshots', s, 'fs');
    assert.ok((await fs.readdir(fsDir)).length > 0);
  }
  for (const i of (await irpc('ListImages', {})).images) await irpc('RemoveImage', { image: { image: i.id } });
  assert.deepEqual(await fs.readdir(path.join(imagesDir(), 'snapshots')), []);
});

test('uid and username come from the image config User', async () => {
  await irpc('PullImage', { image: { image: `${reg.host}/test/uid:latest` } });
  await irpc('PullImage', { image: { image: `${reg.host}/test/username:latest` } });
  const uid = (await irpc('ImageStatus', { image: { image: `${reg.host}/test/uid:latest` } })).image;
  const name = (await irpc('ImageStatus', { image: { image: `${reg.host}/test/username:latest` } })).image;
  assert.deepEqual([uid.uid?.value, uid.username], ['1002', '']);
  assert.deepEqual([name.uid, name.username], [null, 'www-data']);
  for (const i of (await irpc('ListImages', {})).images) await irpc('RemoveImage', { image: { image: i.id } });
});

test('basic auth: refused without credentials, pulled with the CRI AuthConfig', async () => {
  const ref = `${authReg.host}/private/tiny:latest`;
  await assert.rejects(irpc('PullImage', { image: { image: ref } }), (e: any) => e.code === status.UNAUTHENTICATED);
  const { imageRef } = await irpc('PullImage', { image: { image: ref }, auth: { username: 'alice', password: 's3cret' } });
  assert.match(imageRef, /^sha256:[0-9a-f]{64}$/);
  await irpc('RemoveImage', { image: { image: ref } });
});

test('ImageFsInfo equals a walk of the image store across pull, remove and restart, and answers from records, not a walk', async () => {
  const ref = `${reg.host}/test/busybox:1`;
  const other = `${reg.host}/test/whiteout:latest`;
  const fsInfo = async () => {
    const info = await irpc('ImageFsInfo', {});
    const f = info.imageFilesystems[0];
    assert.equal(f.fsId.mountpoint, imagesDir());
    assert.equal(info.containerFilesystems[0].fsId.mountpoint, path.join(d.rootDir, 'containers'));
    assert.ok(Math.abs(Number(f.timestamp) / 1e6 - Date.now()) < 60_000, 'the image store figure is current');
    return { bytes: Number(f.usedBytes.value), inodes: Number(f.inodesUsed.value) };
  };
  await irpc('PullImage', { image: { image: ref } });
  await irpc('PullImage', { image: { image: other } });
  const pulled = await fsInfo();
  assert.ok(pulled.bytes > 1_000_000, 'busybox is over 1 MB');
  assert.deepEqual(pulled, await dirUsage(imagesDir()), 'after two pulls');
  await irpc('RemoveImage', { image: { image: other } });
  assert.deepEqual(await fsInfo(), await dirUsage(imagesDir()), 'after a removal');
  await d.stopDaemon();
  await d.spawnDaemon();
  client.close();
  client = createImageClient(d.socket);
  const restarted = await fsInfo();
  assert.deepEqual(restarted, await dirUsage(imagesDir()), 'after a restart');
  // Files that appear inside an unpacked layer behind the store's back are seen by a walk,
  // not by ImageFsInfo: it reads what each snapshot recorded when it was unpacked.
  const snapshot = (await fs.readdir(path.join(imagesDir(), 'snapshots'))).find((n) => /^[0-9a-f]{64}$/.test(n))!;
  const extra = path.join(imagesDir(), 'snapshots', snapshot, 'fs', 'extra-not-from-a-layer');
  await fs.mkdir(extra);
  try {
    for (let i = 0; i < 50; i++) await fs.writeFile(path.join(extra, `f${i}`), Buffer.alloc(8192));
    assert.equal((await dirUsage(imagesDir())).inodes, restarted.inodes + 51);
    assert.deepEqual(await fsInfo(), restarted, 'ImageFsInfo did not walk the store');
  } finally {
    await fs.rm(extra, { recursive: true, force: true });
  }
  await irpc('RemoveImage', { image: { image: ref } });
  assert.deepEqual(await fsInfo(), await dirUsage(imagesDir()), 'after removing the last image');
});

test('two images that share a base layer unpack it once', async () => {
  const top = await buildLayer([{ path: 'hello.txt', content: 'hi\n' }]);
  const base = busybox.layers[0]!;
  const derived = buildImage({ layers: [base, top] });
  await pushImage(reg, 'test/derived', 'latest', derived);
  await irpc('PullImage', { image: { image: `${reg.host}/test/busybox:1` } });
  await irpc('PullImage', { image: { image: `${reg.host}/test/derived:latest` } });
  assert.equal((await fs.readdir(path.join(imagesDir(), 'snapshots'))).length, 2);
  await irpc('RemoveImage', { image: { image: `${reg.host}/test/derived:latest` } });
  assert.equal((await fs.readdir(path.join(imagesDir(), 'snapshots'))).length, 1, 'the shared base stays for busybox');
  await irpc('RemoveImage', { image: { image: `${reg.host}/test/busybox:1` } });
});

test('concurrent PullImage calls of one image download each blob once; a re-pull downloads none', async () => {
  const proxy = await startProxy(reg.url, (r) => (r.method === 'GET' && /\/blobs\//.test(r.path) ? { delayMs: 100 } : undefined));
  try {
    const ref = `${proxy.host}/test/busybox:1`;
    const ids = await Promise.all([1, 2, 3, 4].map(() => irpc('PullImage', { image: { image: ref } })));
    assert.deepEqual(new Set(ids.map((r) => r.imageRef)), new Set([busybox.config.digest]));
    for (const b of busybox.blobs) assert.equal(proxy.count('GET', new RegExp(`/blobs/${b.digest}`)), 1, b.digest);
    await irpc('PullImage', { image: { image: ref } });
    assert.equal(proxy.count('GET', /\/blobs\//), busybox.blobs.length, 'a re-pull fetches no blob');
    await irpc('RemoveImage', { image: { image: ref } });
  } finally {
    await proxy.stop();
  }
});
