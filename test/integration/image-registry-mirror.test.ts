/**
 * Mirrors: a registry's configured mirrors are tried in order before the registry itself,
 * with the same repository paths; the registry host is never contacted when a mirror
 * serves the image (asserted with a DNS lookup hook that refuses every name, so nothing
 * leaves 127.0.0.1 either way).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import type { LookupFunction } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { RegistryConfig } from '../../src/config/config.js';
import { ContentStore } from '../../src/image/content-store.js';
import { RegistryClient } from '../../src/image/registry/client.js';
import { RegistryError } from '../../src/image/registry/errors.js';
import { pullImageContent } from '../../src/image/registry/pull.js';
import { freePort, pushImage, startProxy, startRegistry, type TestProxy, type TestRegistry } from '../helpers/registry.js';
import { busyboxImage, type TestImage } from '../helpers/test-images.js';

let reg: TestRegistry;
let image: TestImage;
const cleanups: (() => Promise<unknown>)[] = [];

before(async () => {
  reg = await startRegistry();
  image = await busyboxImage();
  await pushImage(reg, 'test/busybox', '1', image);
  await pushImage(reg, 'library/busybox', 'latest', image);
});

after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
  await reg?.stop();
});

async function newStore(): Promise<ContentStore> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-pull-mirror-'));
  cleanups.push(() => fs.rm(dir, { recursive: true, force: true }));
  return new ContentStore(dir);
}

/** A client whose DNS refuses (and records) every host name: IP endpoints need none. */
function isolatedClient(registries: Record<string, RegistryConfig>): { client: RegistryClient; lookups: string[] } {
  const lookups: string[] = [];
  const lookup = ((hostname: string, _opts: unknown, cb: (err: NodeJS.ErrnoException | null, address?: string, family?: number) => void) => {
    lookups.push(hostname);
    const err = Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname} (no DNS in tests)`), { code: 'ENOTFOUND', hostname });
    process.nextTick(() => cb(err));
  }) as unknown as LookupFunction;
  const client = new RegistryClient({ registries, lookup, timeoutMs: 5000 });
  cleanups.push(async () => client.close());
  return { client, lookups };
}

const mirrorsOf = (...mirrors: string[]): RegistryConfig => ({ mirrors, insecure: false, tlsVerify: true, caFile: '' });

async function counting(): Promise<TestProxy> {
  const p = await startProxy(reg.url);
  cleanups.push(() => p.stop());
  return p;
}

test('registry.k8s.io/test/busybox:1 comes from the mirror; registry.k8s.io is never contacted', async () => {
  const mirror = await counting();
  const { client, lookups } = isolatedClient({ 'registry.k8s.io': mirrorsOf(mirror.url) });
  const store = await newStore();
  const r = await pullImageContent('registry.k8s.io/test/busybox:1', store, { client });
  assert.equal(r.reference, 'registry.k8s.io/test/busybox:1');
  assert.equal(r.manifestDigest, image.manifest.digest);
  assert.equal(r.endpoint, mirror.url);
  assert.equal(r.mirror, true);
  assert.deepEqual(lookups, [], 'no DNS lookup, so no connection to registry.k8s.io');
  assert.equal(mirror.count('GET', /^\/v2\/test\/busybox\/manifests\/1$/), 1, 'same repository path on the mirror');
  assert.equal(mirror.count('GET', /^\/v2\/test\/busybox\/blobs\//), 2, 'blobs from the mirror too');
  assert.ok(await store.has(image.layers[0]!.digest));
});

test('docker.io references use the same path on a Docker Hub mirror', async () => {
  const mirror = await counting();
  const { client, lookups } = isolatedClient({ 'docker.io': mirrorsOf(mirror.url) });
  const r = await pullImageContent('busybox', await newStore(), { client });
  assert.equal(r.reference, 'docker.io/library/busybox:latest');
  assert.equal(r.endpoint, mirror.url);
  assert.equal(mirror.count('GET', /^\/v2\/library\/busybox\/manifests\/latest$/), 1);
  assert.deepEqual(lookups, []);
});

test('a dead mirror and a mirror without the image are skipped, in order', async () => {
  const dead = `http://127.0.0.1:${await freePort()}`;
  const empty = await startProxy(reg.url, () => ({ respond: { status: 404, headers: { 'content-type': 'application/json' }, body: '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}' } }));
  cleanups.push(() => empty.stop());
  const broken = await startProxy(reg.url, () => ({ respond: { status: 503, body: 'maintenance' } }));
  cleanups.push(() => broken.stop());
  const good = await counting();
  const { client, lookups } = isolatedClient({ 'registry.k8s.io': mirrorsOf(dead, empty.url, broken.url, good.url) });
  const r = await pullImageContent('registry.k8s.io/test/busybox:1', await newStore(), { client });
  assert.equal(r.endpoint, good.url);
  assert.equal(empty.requests.length, 1);
  assert.equal(broken.requests.length, 1);
  assert.deepEqual(lookups, []);
});

test('when every endpoint fails, the error lists each with what went wrong', async () => {
  const dead = `http://127.0.0.1:${await freePort()}`;
  const empty = await startProxy(reg.url, () => ({ respond: { status: 404, body: '' } }));
  cleanups.push(() => empty.stop());
  const { client, lookups } = isolatedClient({ 'registry.k8s.io': mirrorsOf(dead, empty.url) });
  await assert.rejects(pullImageContent('registry.k8s.io/test/busybox:1', await newStore(), { client }), (e: unknown) => {
    assert.ok(e instanceof RegistryError, String(e));
    assert.equal(e.kind, 'unreachable', 'the kind is the registry\'s own failure');
    assert.deepEqual(e.failures.map((f) => [f.endpoint, f.mirror, f.kind]), [
      [dead, true, 'unreachable'],
      [empty.url, true, 'not-found'],
      ['https://registry.k8s.io', false, 'unreachable'],
    ]);
    assert.ok(e.message.startsWith('pull registry.k8s.io/test/busybox:1: registry unreachable ('), e.message);
    assert.ok(e.message.includes(`mirror ${dead}: `) && e.message.includes('ECONNREFUSED'), e.message);
    assert.ok(e.message.includes(`mirror ${empty.url}: manifest 1 not found`), e.message);
    assert.ok(e.message.includes('https://registry.k8s.io: getaddrinfo ENOTFOUND registry.k8s.io'), e.message);
    return true;
  });
  assert.deepEqual(lookups, ['registry.k8s.io'], 'the registry itself is tried last (and our lookup refused it)');
});

test('a blob missing on the mirror is fetched from the next endpoint', async () => {
  const layer = image.layers[0]!;
  const partial = await startProxy(reg.url, (r) => {
    if (r.path.endsWith(`/blobs/${layer.digest}`)) return { respond: { status: 404, body: '' } };
  });
  cleanups.push(() => partial.stop());
  const full = await counting();
  const { client } = isolatedClient({ 'registry.k8s.io': mirrorsOf(partial.url, full.url) });
  const store = await newStore();
  const r = await pullImageContent('registry.k8s.io/test/busybox:1', store, { client });
  assert.equal(r.endpoint, partial.url, 'the manifest came from the first mirror');
  assert.equal(full.count('GET', new RegExp(`/blobs/${layer.digest}$`)), 1, 'the layer from the second');
  assert.ok(await store.has(layer.digest));
});
