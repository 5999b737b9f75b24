/**
 * The pull side against a real registry (Debian's docker-registry, distribution v2.8) on
 * 127.0.0.1 without authentication: tags, digests, indexes, zstd and Docker schema 2,
 * errors, and — through a counting proxy — blob deduplication, re-pulls, tampering,
 * broken downloads and redirects. No root needed.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ContentStore } from '../../src/image/content-store.js';
import { RegistryClient } from '../../src/image/registry/client.js';
import { RegistryError } from '../../src/image/registry/errors.js';
import { grpcCode } from '../../src/cri/errors.js';
import { hostPlatform } from '../../src/image/registry/platform.js';
import { pullImageContent } from '../../src/image/registry/pull.js';
import { pushImage, registryBlobPath, startProxy, startRegistry, type TestProxy, type TestRegistry } from '../helpers/registry.js';
import { buildIndex, busyboxImage, MT, multiArchIndex, tinyImage, whiteoutImage, type TestImage, type TestIndex } from '../helpers/test-images.js';

let reg: TestRegistry;
let busybox: TestImage;
let busyboxDigest: string;
let multi: TestIndex;
let zstd: TestImage;
let docker: TestImage;
let dockerList: TestIndex;
let layered: TestImage;
const cleanups: (() => Promise<unknown>)[] = [];

before(async () => {
  reg = await startRegistry();
  busybox = await busyboxImage({ config: { Entrypoint: ['/bin/sh', '-c'], Cmd: ['echo hi'], Env: ['A=1'], User: '1000:1000', WorkingDir: '/home/app' } });
  busyboxDigest = await pushImage(reg, 'test/busybox', '1', busybox);
  multi = await multiArchIndex();
  await pushImage(reg, 'test/multi', 'latest', multi);
  zstd = await busyboxImage({ compression: 'zstd' });
  await pushImage(reg, 'test/zstd', 'v1', zstd);
  docker = await busyboxImage({ format: 'docker' });
  await pushImage(reg, 'test/docker', 'v2', docker);
  dockerList = buildIndex([docker, await tinyImage('other arch\n', { format: 'docker', platform: { os: 'linux', architecture: 's390x' } })], 'docker');
  await pushImage(reg, 'test/dockerlist', 'latest', dockerList);
  layered = await whiteoutImage();
  await pushImage(reg, 'test/layered', 'latest', layered);
});

after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await reg?.stop();
});

async function newStore(): Promise<ContentStore> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-pull-'));
  cleanups.push(() => fs.rm(dir, { recursive: true, force: true }));
  return new ContentStore(dir);
}

async function newProxy(onRequest?: Parameters<typeof startProxy>[1]): Promise<TestProxy> {
  const p = await startProxy(reg.url, onRequest);
  cleanups.push(() => p.stop());
  return p;
}

async function assertStored(store: ContentStore, img: TestImage): Promise<void> {
  assert.deepEqual(await store.readBuffer(img.manifest.digest), img.manifest.bytes);
  assert.deepEqual(await store.readBuffer(img.config.digest), img.config.bytes);
  for (const l of img.layers) assert.deepEqual(await store.readBuffer(l.digest), l.bytes);
}

const blobGets = (p: TestProxy, digest: string) => p.count('GET', new RegExp(`/blobs/${digest}$`));

test('pull by tag stores manifest, config and layer and returns their descriptors', async () => {
  const store = await newStore();
  const progress: number[] = [];
  const r = await pullImageContent(`${reg.host}/test/busybox:1`, store, { onProgress: (p) => progress.push(p.downloaded) });
  assert.equal(r.reference, `${reg.host}/test/busybox:1`);
  assert.equal(r.manifestDigest, busybox.manifest.digest);
  assert.equal(r.manifestDigest, busyboxDigest);
  assert.equal(r.referenceDigest, busybox.manifest.digest);
  assert.equal(r.indexDigest, undefined);
  assert.equal(r.mediaType, MT.ociManifest);
  assert.equal(r.configDigest, busybox.config.digest);
  assert.deepEqual(r.config, { mediaType: MT.ociConfig, digest: busybox.config.digest, size: busybox.config.size });
  assert.deepEqual(r.layers, busybox.layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })));
  assert.equal(r.endpoint, reg.url, 'loopback registries are plain HTTP');
  assert.equal(r.mirror, false);
  assert.deepEqual(r.downloaded.sort(), [busybox.config.digest, busybox.layers[0]!.digest].sort());
  assert.ok(progress.length > 0 && Math.max(...progress) === busybox.layers[0]!.size);
  await assertStored(store, busybox);
  const cfg = await store.readJson<any>(r.configDigest);
  assert.deepEqual(cfg.config.Entrypoint, ['/bin/sh', '-c']);
  assert.equal(cfg.config.User, '1000:1000');
  assert.deepEqual(cfg.rootfs.diff_ids, [busybox.layers[0]!.diffId]);
});

test('pull by digest, and by tag plus digest (the digest wins)', async () => {
  const store = await newStore();
  const r = await pullImageContent(`${reg.host}/test/busybox@${busybox.manifest.digest}`, store);
  assert.equal(r.manifestDigest, busybox.manifest.digest);
  assert.equal(r.referenceDigest, busybox.manifest.digest);
  await assertStored(store, busybox);
  const r2 = await pullImageContent(`${reg.host}/test/busybox:no-such-tag@${busybox.manifest.digest}`, store);
  assert.equal(r2.manifestDigest, busybox.manifest.digest);
  assert.deepEqual(r2.downloaded, [], 'everything was already there');
});

test('a multi-arch index resolves to linux/<this arch>; another platform can be asked for', async () => {
  const store = await newStore();
  const host = hostPlatform();
  const r = await pullImageContent(`${reg.host}/test/multi`, store);
  const want = multi.images.find((i) => i.platform.architecture === host.architecture);
  assert.ok(want, `the test index has ${host.architecture}`);
  assert.equal(r.indexDigest, multi.index.digest);
  assert.equal(r.referenceDigest, multi.index.digest, 'repo digests use the index digest');
  assert.equal(r.manifestDigest, want.manifest.digest);
  assert.equal(r.platform?.architecture, host.architecture);
  assert.ok((await store.readJson<any>(r.configDigest)).config.Env.includes(`ARCH=${host.architecture}`));
  assert.deepEqual(await store.readBuffer(multi.index.digest), multi.index.bytes, 'the index is stored too');

  const other = host.architecture === 'arm64' ? 'amd64' : 'arm64';
  const r2 = await pullImageContent(`${reg.host}/test/multi`, store, { platform: { os: 'linux', architecture: other } });
  assert.equal(r2.platform?.architecture, other);
  assert.ok((await store.readJson<any>(r2.configDigest)).config.Env.includes(`ARCH=${other}`));

  await assert.rejects(pullImageContent(`${reg.host}/test/multi`, store, { platform: { os: 'linux', architecture: 'riscv64' } }), (e: unknown) => {
    assert.ok(e instanceof RegistryError);
    assert.equal(e.kind, 'no-matching-platform');
    assert.match(e.message, /no manifest for linux\/riscv64 \(it has: linux\/amd64, linux\/arm64\/v8\)/);
    return true;
  });
});

test('a zstd-compressed layer pulls', async () => {
  const store = await newStore();
  const r = await pullImageContent(`${reg.host}/test/zstd:v1`, store);
  assert.equal(r.layers[0]!.mediaType, MT.ociLayerZstd);
  await assertStored(store, zstd);
});

test('Docker schema 2 manifests and manifest lists pull', async () => {
  const store = await newStore();
  const r = await pullImageContent(`${reg.host}/test/docker:v2`, store);
  assert.equal(r.mediaType, MT.dockerManifest);
  assert.equal(r.config.mediaType, MT.dockerConfig);
  assert.equal(r.layers[0]!.mediaType, MT.dockerLayerGzip);
  await assertStored(store, docker);

  const l = await pullImageContent(`${reg.host}/test/dockerlist`, store);
  assert.equal(l.indexMediaType, MT.dockerList);
  assert.equal(l.indexDigest, dockerList.index.digest);
  assert.equal(l.manifestDigest, docker.manifest.digest, 'the entry for this host, not the s390x one');
});

test('a two-layer image (whiteouts, hard links) pulls both layers in order', async () => {
  const store = await newStore();
  const r = await pullImageContent(`${reg.host}/test/layered`, store, { concurrency: 1 });
  assert.deepEqual(r.layers.map((l) => l.digest), layered.layers.map((l) => l.digest));
  await assertStored(store, layered);
});

test('not found: unknown tag and unknown repository say which reference, where and why', async () => {
  const store = await newStore();
  await assert.rejects(pullImageContent(`${reg.host}/test/busybox:nope`, store), (e: unknown) => {
    assert.ok(e instanceof RegistryError);
    assert.equal(e.kind, 'not-found');
    assert.equal(grpcCode(e), 5);
    assert.ok(e.message.includes(`pull ${reg.host}/test/busybox:nope`), e.message);
    assert.ok(e.message.includes(reg.url), e.message);
    assert.match(e.message, /manifest nope not found \(HTTP 404: MANIFEST_UNKNOWN/);
    return true;
  });
  await assert.rejects(pullImageContent(`${reg.host}/no/such/repo:1`, store), (e: unknown) => {
    assert.ok(e instanceof RegistryError && e.kind === 'not-found', String(e));
    assert.ok(e.message.includes(`${reg.host}/no/such/repo:1`), e.message);
    return true;
  });
  const missing = `sha256:${'0'.repeat(64)}`;
  await assert.rejects(pullImageContent(`${reg.host}/test/busybox@${missing}`, store), (e: unknown) => e instanceof RegistryError && e.kind === 'not-found' && e.message.includes(missing));
  // Nothing was left behind.
  assert.deepEqual(await store.list(), []);
});

test('a registry that is not listening is unreachable', async () => {
  const store = await newStore();
  await assert.rejects(pullImageContent('127.0.0.1:1/x:1', store), (e: unknown) => {
    assert.ok(e instanceof RegistryError);
    assert.equal(e.kind, 'unreachable');
    assert.match(e.message, /http:\/\/127\.0\.0\.1:1: .*ECONNREFUSED/);
    return true;
  });
});

test('two concurrent pulls download each blob once; a re-pull downloads no blob', async () => {
  const proxy = await newProxy();
  const store = await newStore();
  const client = new RegistryClient();
  cleanups.push(async () => client.close());
  const ref = `${proxy.host}/test/layered:latest`;
  const [a, b] = await Promise.all([pullImageContent(ref, store, { client }), pullImageContent(ref, store, { client })]);
  assert.equal(a.manifestDigest, b.manifestDigest);
  for (const blob of layered.blobs) assert.equal(blobGets(proxy, blob.digest), 1, `blob ${blob.digest} fetched once`);
  assert.equal([...a.downloaded, ...b.downloaded].length, layered.blobs.length, 'between them, each blob was downloaded by one pull');
  await assertStored(store, layered);

  const before = proxy.requests.length;
  const again = await pullImageContent(ref, store, { client });
  assert.deepEqual(again.downloaded, []);
  const later = proxy.requests.slice(before);
  assert.ok(later.every((r) => !r.path.includes('/blobs/')), `re-pull made only manifest requests: ${later.map((r) => r.path).join(', ')}`);
  assert.ok(later.some((r) => r.path.endsWith('/manifests/latest')));
});

test('the concurrency bound is respected', async () => {
  let active = 0;
  let peak = 0;
  const imgs = await busyboxImage({ extraLayers: await Promise.all([1, 2, 3, 4, 5].map(async (i) => (await tinyImage(`layer ${i}\n`)).layers[0]!)) });
  await pushImage(reg, 'test/many', 'latest', imgs);
  const proxy = await newProxy((r) => {
    if (r.path.includes('/blobs/')) {
      // Each download is held for 100 ms: the pull cannot start more than `concurrency` within that time.
      active++;
      peak = Math.max(peak, active);
      setTimeout(() => active--, 100);
      return { delayMs: 100 };
    }
  });
  const store = await newStore();
  await pullImageContent(`${proxy.host}/test/many`, store, { concurrency: 2 });
  assert.ok(peak <= 2, `at most 2 blob downloads at once (saw ${peak})`);
  assert.equal(proxy.count('GET', /\/blobs\//), 7);
});

test('a download slot is given back once the blob\'s bytes are in, while its check still waits (on the unpack that hashes it)', async () => {
  const img = await busyboxImage({ extraLayers: [(await tinyImage('second layer\n')).layers[0]!] });
  await pushImage(reg, 'test/slots', 'latest', img);
  const [first, second] = img.layers;
  let secondRequested!: () => void;
  const secondGet = new Promise<void>((resolve) => (secondRequested = resolve));
  const proxy = await newProxy((r) => {
    if (r.path.endsWith(`/blobs/${second!.digest}`)) secondRequested();
  });
  const store = await newStore();
  // The first layer's check waits for a tap (as for an unpack helper's digest) that
  // answers only once the second layer's download has started: with one slot, that
  // happens only if the slot was given back when the first layer's bytes were in.
  store.watchNextDownload(first!.digest, (file) => {
    return {
      written: () => {},
      end: () => {},
      abort: () => {},
      digest: async () => {
        await secondGet;
        const all = await fs.readFile(file);
        return { digest: `sha256:${createHash('sha256').update(all).digest('hex')}`, size: all.length };
      },
    };
  });
  const r = await pullImageContent(`${proxy.host}/test/slots`, store, { concurrency: 1, timeoutMs: 20_000 });
  assert.deepEqual([...r.downloaded].sort(), [img.config.digest, first!.digest, second!.digest].sort());
  await assertStored(store, img);
});

test('an unpack that lags behind its download is local work: the no-progress deadline does not fail the pull once every byte is in', async () => {
  const img = await busyboxImage();
  await pushImage(reg, 'test/lagging', 'latest', img);
  const store = await newStore();
  const [layer] = img.layers;
  // The layer's check waits (as for a helper still unpacking what was downloaded long
  // ago) three times the no-progress deadline after its download ended.
  store.watchNextDownload(layer!.digest, (file) => ({
    written: () => {},
    end: () => {},
    abort: () => {},
    digest: async () => {
      await new Promise((r) => setTimeout(r, 1200));
      const all = await fs.readFile(file);
      return { digest: `sha256:${createHash('sha256').update(all).digest('hex')}`, size: all.length };
    },
  }));
  await pullImageContent(`${reg.host}/test/lagging`, store, { progressDeadlineMs: 400, timeoutMs: 20_000 });
  await assertStored(store, img);
});

test('a tampered layer is refused as a digest mismatch and never stored', async () => {
  const layer = busybox.layers[0]!;
  const proxy = await newProxy((r) => {
    if (r.path.endsWith(`/blobs/${layer.digest}`)) {
      return { tamper: (b: Buffer) => { const c = Buffer.from(b); c[c.length - 10] ^= 0xff; return c; } };
    }
  });
  const store = await newStore();
  await assert.rejects(pullImageContent(`${proxy.host}/test/busybox:1`, store), (e: unknown) => {
    assert.ok(e instanceof RegistryError);
    assert.equal(e.kind, 'digest-mismatch');
    assert.ok(e.message.includes(`expected ${layer.digest}`), e.message);
    assert.match(e.message, /got sha256:[0-9a-f]{64}/);
    assert.ok(e.message.includes(proxy.url), 'names the endpoint');
    return true;
  });
  assert.equal(await store.has(layer.digest), false);
  assert.equal(await store.has(busybox.manifest.digest), false, 'no manifest for an incomplete image');
  assert.deepEqual(await fs.readdir(store.ingestDir), []);
  assert.equal(blobGets(proxy, layer.digest), 1, 'a mismatch is not retried');
});

test('a tampered manifest is caught by its Docker-Content-Digest', async () => {
  const proxy = await newProxy((r) => {
    if (r.path.endsWith('/manifests/1')) return { tamper: (b: Buffer) => Buffer.from(b.toString().replace('"schemaVersion":2', '"schemaVersion": 2')) };
  });
  const store = await newStore();
  await assert.rejects(pullImageContent(`${proxy.host}/test/busybox:1`, store), (e: unknown) => {
    assert.ok(e instanceof RegistryError && e.kind === 'digest-mismatch', String(e));
    assert.ok(e.message.includes(`the registry says its digest is ${busybox.manifest.digest}`), e.message);
    return true;
  });
  // Pulling by digest checks the bytes against the reference even without the header.
  const proxy2 = await newProxy((r) => {
    if (r.path.includes('/manifests/sha256:')) {
      return { tamper: (b: Buffer) => Buffer.from(b.toString().replace('"schemaVersion":2', '"schemaVersion": 2')) };
    }
  });
  await assert.rejects(pullImageContent(`${proxy2.host}/test/busybox@${busybox.manifest.digest}`, store), /digest/);
  assert.deepEqual(await store.list(), []);
});

test('a blob corrupted in the registry storage is refused', async () => {
  const img = await tinyImage('to be corrupted\n');
  await pushImage(reg, 'test/corrupt', 'latest', img);
  const file = registryBlobPath(reg, img.layers[0]!.digest);
  const data = await fs.readFile(file);
  data[data.length - 5] ^= 0x55;
  await fs.writeFile(file, data);
  const store = await newStore();
  await assert.rejects(pullImageContent(`${reg.host}/test/corrupt`, store), (e: unknown) => e instanceof RegistryError && e.kind === 'digest-mismatch' && e.message.includes(img.layers[0]!.digest));
  assert.equal(await store.has(img.layers[0]!.digest), false);
});

test('an interrupted download leaves no partial blob; a transient break is retried', async () => {
  const layer = busybox.layers[0]!;
  let cuts = 0;
  const proxy = await newProxy((r) => {
    if (r.path.endsWith(`/blobs/${layer.digest}`)) {
      cuts++;
      return { cutAfter: 100_000 };
    }
  });
  const store = await newStore();
  await assert.rejects(pullImageContent(`${proxy.host}/test/busybox:1`, store), (e: unknown) => {
    assert.ok(e instanceof RegistryError, String(e));
    assert.equal(e.kind, 'unreachable');
    assert.ok(e.message.includes(layer.digest), e.message);
    return true;
  });
  assert.equal(cuts, 2, 'one retry');
  assert.equal(await store.has(layer.digest), false);
  await assert.rejects(fs.stat(store.blobPath(layer.digest)), { code: 'ENOENT' });
  assert.deepEqual(await fs.readdir(store.ingestDir), [], 'no temp file left');

  let first = true;
  const flaky = await newProxy((r) => {
    if (r.path.endsWith(`/blobs/${layer.digest}`) && first) {
      first = false;
      return { cutAfter: 50_000 };
    }
  });
  const r = await pullImageContent(`${flaky.host}/test/busybox:1`, store);
  assert.equal(r.manifestDigest, busybox.manifest.digest);
  assert.equal(blobGets(flaky, layer.digest), 2);
  await assertStored(store, busybox);
});

test('blob redirects are followed, to another host too', async () => {
  const cdn = await newProxy();
  const front = await newProxy((r) => {
    const m = /\/blobs\/(sha256:[0-9a-f]+)$/.exec(r.path);
    if (m) return { redirect: `http://localhost:${cdn.port}${r.path}` };
  });
  const store = await newStore();
  await pullImageContent(`${front.host}/test/busybox:1`, store);
  await assertStored(store, busybox);
  assert.equal(cdn.count('GET', /\/blobs\//), 2, 'config and layer came from the redirect target');
});

test('fetchBlob returns a stream of the blob', async () => {
  const client = new RegistryClient();
  cleanups.push(async () => client.close());
  const s = await client.fetchBlob(`${reg.host}/test/busybox:1`, busybox.config);
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  assert.deepEqual(Buffer.concat(chunks), busybox.config.bytes);
  await assert.rejects(client.fetchBlob(`${reg.host}/test/busybox:1`, { digest: `sha256:${'1'.repeat(64)}`, size: 1 }), (e: unknown) => e instanceof RegistryError && e.kind === 'not-found');
});

test('a schema 1 or non-image manifest is refused as unsupported', async () => {
  const schema1 = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [], history: [] }));
  const artifact = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MT.ociManifest,
    config: { mediaType: 'application/vnd.cncf.helm.config.v1+json', digest: `sha256:${'2'.repeat(64)}`, size: 2 },
    layers: [],
  }));
  const proxy = await newProxy((r) => {
    if (r.path.endsWith('/manifests/s1')) return { respond: { status: 200, headers: { 'content-type': 'application/vnd.docker.distribution.manifest.v1+prettyjws' }, body: schema1 } };
    if (r.path.endsWith('/manifests/helm')) return { respond: { status: 200, headers: { 'content-type': MT.ociManifest }, body: artifact } };
  });
  const store = await newStore();
  await assert.rejects(pullImageContent(`${proxy.host}/test/x:s1`, store), (e: unknown) => {
    assert.ok(e instanceof RegistryError && e.kind === 'unsupported-media-type', String(e));
    assert.match(e.message, /schema 1/);
    return true;
  });
  await assert.rejects(pullImageContent(`${proxy.host}/test/x:helm`, store), (e: unknown) => e instanceof RegistryError && e.kind === 'unsupported-media-type' && /not a container image/.test(e.message));
});
