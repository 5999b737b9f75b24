/**
 * Registry authentication against real registries: htpasswd basic auth, and bearer
 * tokens from a token server in this process (credentials checked, requests counted).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ContentStore } from '../../src/image/content-store.js';
import { RegistryClient } from '../../src/image/registry/client.js';
import { RegistryError } from '../../src/image/registry/errors.js';
import { credentialKey, resolveCredentials, TokenCache } from '../../src/image/registry/auth.js';
import { pullImageContent } from '../../src/image/registry/pull.js';
import { pushImage, startProxy, startRegistry, type TestProxy, type TestRegistry } from '../helpers/registry.js';
import { busyboxImage, type TestImage } from '../helpers/test-images.js';

const cleanups: (() => Promise<unknown>)[] = [];
let image: TestImage;

before(async () => {
  image = await busyboxImage();
});

after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function newStore(): Promise<ContentStore> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-pull-auth-'));
  cleanups.push(() => fs.rm(dir, { recursive: true, force: true }));
  return new ContentStore(dir);
}

function client(): RegistryClient {
  const c = new RegistryClient();
  cleanups.push(async () => c.close());
  return c;
}

const isUnauthorized = (re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof RegistryError, String(e));
  assert.equal(e.kind, 'unauthorized', e.message);
  assert.match(e.message, re);
  return true;
};

describe('basic auth (htpasswd)', () => {
  let reg: TestRegistry;
  before(async () => {
    reg = await startRegistry({ auth: 'basic', users: { alice: 's3cret' } });
    cleanups.push(() => reg.stop());
    await pushImage(reg, 'private/busybox', '1', image);
  });

  test('without credentials: unauthorized, saying credentials are needed', async () => {
    await assert.rejects(pullImageContent(`${reg.host}/private/busybox:1`, await newStore()), isUnauthorized(/requires basic authentication and no credentials were given/));
  });

  test('with wrong credentials: unauthorized, saying they were rejected, without echoing them', async () => {
    await assert.rejects(pullImageContent(`${reg.host}/private/busybox:1`, await newStore(), { auth: { username: 'alice', password: 'wrong-password' } }), (e: unknown) => {
      isUnauthorized(/credentials given were rejected/)(e);
      assert.ok(!(e as Error).message.includes('wrong-password'));
      return true;
    });
  });

  test('with username/password, or the base64 auth field: pulls', async () => {
    const store = await newStore();
    const r = await pullImageContent(`${reg.host}/private/busybox:1`, store, { auth: { username: 'alice', password: 's3cret' } });
    assert.equal(r.manifestDigest, image.manifest.digest);
    assert.ok(await store.has(image.layers[0]!.digest));
    const r2 = await pullImageContent(`${reg.host}/private/busybox:1`, await newStore(), { auth: { auth: Buffer.from('alice:s3cret').toString('base64') } });
    assert.equal(r2.manifestDigest, image.manifest.digest);
  });

  test('credentials for another server are not sent', async () => {
    await assert.rejects(
      pullImageContent(`${reg.host}/private/busybox:1`, await newStore(), { auth: { username: 'alice', password: 's3cret', serverAddress: 'quay.io' } }),
      isUnauthorized(/no credentials were given/),
    );
  });

  test('a blob redirected to another host gets no Authorization header', async () => {
    const layer = image.layers[0]!;
    const cdn = await startProxy(reg.url, (r) => {
      if (r.path.startsWith('/storage/')) return { respond: { status: 200, body: layer.bytes } };
    });
    cleanups.push(() => cdn.stop());
    const front = await startProxy(reg.url, (r) => {
      if (r.path.endsWith(`/blobs/${layer.digest}`)) return { redirect: `http://localhost:${cdn.port}/storage/${layer.digest.slice(7)}?sig=x` };
    });
    cleanups.push(() => front.stop());
    const store = await newStore();
    await pullImageContent(`${front.host}/private/busybox:1`, store, { auth: { username: 'alice', password: 's3cret' } });
    assert.ok(await store.has(layer.digest));
    const cdnReq = cdn.requests.find((r) => r.path.startsWith('/storage/'));
    assert.ok(cdnReq, 'the layer came from the redirect target');
    assert.equal(cdnReq.headers.authorization, undefined);
    assert.ok(front.requests.filter((r) => r.path.includes('/blobs/')).every((r) => r.headers.authorization?.startsWith('Basic ')), 'the registry itself got credentials up front');
  });
});

describe('bearer token auth', () => {
  let reg: TestRegistry;
  before(async () => {
    reg = await startRegistry({ auth: 'token', users: { bob: 'hunter2' }, tokenExpiresIn: 300 });
    cleanups.push(() => reg.stop());
    await pushImage(reg, 'private/busybox', '1', image);
  });

  test('with credentials: one token request serves the manifest and every blob, and is cached', async () => {
    const tokens = reg.tokenServer!;
    const c = client();
    const start = tokens.requests.length;
    const r = await pullImageContent(`${reg.host}/private/busybox:1`, await newStore(), { client: c, auth: { username: 'bob', password: 'hunter2' } });
    assert.equal(r.manifestDigest, image.manifest.digest);
    const made = tokens.requests.slice(start);
    assert.equal(made.length, 1, 'one token for the whole pull');
    assert.equal(made[0]!.user, 'bob');
    assert.equal(made[0]!.service, tokens.service);
    assert.deepEqual(made[0]!.scopes, ['repository:private/busybox:pull']);

    // Same client, same scope and credentials: the cached token is used (no token request at all).
    await pullImageContent(`${reg.host}/private/busybox:1`, await newStore(), { client: c, auth: { username: 'bob', password: 'hunter2' } });
    assert.equal(tokens.requests.length, start + 1);
    assert.equal(c.tokens.size, 1);
  });

  test('without credentials (anonymous tokens grant nothing): unauthorized', async () => {
    await assert.rejects(pullImageContent(`${reg.host}/private/busybox:1`, await newStore()), isUnauthorized(/authentication required/));
  });

  test('with wrong credentials: the token service refuses them', async () => {
    await assert.rejects(
      pullImageContent(`${reg.host}/private/busybox:1`, await newStore(), { auth: { username: 'bob', password: 'nope' } }),
      isUnauthorized(/token service http:\/\/127\.0\.0\.1:\d+\/token refused the credentials given \(HTTP 401/),
    );
  });

  test('an identity token is exchanged with an OAuth2 refresh_token POST', async () => {
    const tokens = reg.tokenServer!;
    tokens.refreshTokens.set('refresh-abc', 'bob');
    const start = tokens.requests.length;
    const r = await pullImageContent(`${reg.host}/private/busybox:1`, await newStore(), { client: client(), auth: { identityToken: 'refresh-abc' } });
    assert.equal(r.manifestDigest, image.manifest.digest);
    const made = tokens.requests.slice(start);
    assert.deepEqual(made.map((m) => [m.method, m.user]), [['POST', 'bob']]);
    await assert.rejects(pullImageContent(`${reg.host}/private/busybox:1`, await newStore(), { client: client(), auth: { identityToken: 'bad' } }), isUnauthorized(/refused/));
  });

  test('a registry token is used directly as the bearer token', async () => {
    const tokens = reg.tokenServer!;
    const bearer = tokens.issue('bob', [{ type: 'repository', name: 'private/busybox', actions: ['pull'] }]);
    const start = tokens.requests.length;
    const r = await pullImageContent(`${reg.host}/private/busybox:1`, await newStore(), { client: client(), auth: { registryToken: bearer } });
    assert.equal(r.manifestDigest, image.manifest.digest);
    assert.equal(tokens.requests.length, start, 'no token request');
  });

  test('an expired cached token is not reused', async () => {
    let now = Date.now();
    const c = new RegistryClient({ now: () => now });
    cleanups.push(async () => c.close());
    const tokens = reg.tokenServer!;
    const start = tokens.requests.length;
    await pullImageContent(`${reg.host}/private/busybox:1`, await newStore(), { client: c, auth: { username: 'bob', password: 'hunter2' } });
    now += 400_000; // past expires_in (300 s)
    await pullImageContent(`${reg.host}/private/busybox:1`, await newStore(), { client: c, auth: { username: 'bob', password: 'hunter2' } });
    assert.equal(tokens.requests.length, start + 2, 'a fresh token after expiry');
  });

  test('a cached token the registry refuses is dropped and a new one fetched', async () => {
    const c = client();
    const auth = { username: 'bob', password: 'hunter2' };
    const tokens = reg.tokenServer!;
    const start = tokens.requests.length;
    await pullImageContent(`${reg.host}/private/busybox:1`, await newStore(), { client: c, auth });
    const key = TokenCache.key(`${reg.url}/v2`, 'repository:private/busybox:pull', credentialKey(resolveCredentials(auth)));
    assert.ok(c.tokens.get(key), 'the token is cached under (endpoint, scope, credentials)');
    c.tokens.set(key, 'not-a-valid-token', 300);
    const r = await pullImageContent(`${reg.host}/private/busybox:1`, await newStore(), { client: c, auth });
    assert.equal(r.manifestDigest, image.manifest.digest);
    assert.equal(tokens.requests.length, start + 2);
    assert.notEqual(c.tokens.get(key), 'not-a-valid-token');
  });
});

describe('bearer token auth with anonymous pull', () => {
  let reg: TestRegistry;
  let proxy: TestProxy;
  before(async () => {
    reg = await startRegistry({ auth: 'token', anonymousPull: true });
    cleanups.push(() => reg.stop());
    await pushImage(reg, 'public/busybox', 'latest', image);
    proxy = await startProxy(reg.url);
    cleanups.push(() => proxy.stop());
  });

  test('anonymous: challenged once, then an anonymous token for everything', async () => {
    const start = reg.tokenServer!.requests.length;
    const r = await pullImageContent(`${proxy.host}/public/busybox`, await newStore(), { client: client() });
    assert.equal(r.manifestDigest, image.manifest.digest);
    const made = reg.tokenServer!.requests.slice(start);
    assert.deepEqual(made.map((m) => m.user), [undefined]);
    // The first request went out anonymously and was challenged; everything after carried the token.
    const first = proxy.requests[0]!;
    assert.equal(first.headers.authorization, undefined);
    assert.ok(proxy.requests.slice(2).every((q) => q.headers.authorization?.startsWith('Bearer ')));
  });
});
