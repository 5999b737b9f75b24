/**
 * The pull side against hostile registries (test/helpers/registry.ts's HostileServer on
 * loopback addresses of their own, 127.0.0.1/2/3 standing for different hosts):
 * credentials that must not go where they are not for, registries that lie about sizes
 * and digests or send endless bodies, and registries that trickle. No root needed.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { RegistryConfig } from '../../src/config/config.js';
import { ContentStore } from '../../src/image/content-store.js';
import { RegistryClient, type RegistryClientOptions } from '../../src/image/registry/client.js';
import { RegistryError, type RegistryErrorKind } from '../../src/image/registry/errors.js';
import { grpcCode } from '../../src/cri/errors.js';
import { pullImageContent, type PullOptions } from '../../src/image/registry/pull.js';
import { makeTestCertificate, startHostileServer, testLookup, type HostileServer } from '../helpers/registry.js';
import { buildImage, buildLayer, tinyImage, type TestImage } from '../helpers/test-images.js';

const cleanups: (() => Promise<unknown>)[] = [];
let image: TestImage;
/** An image with a 64 KiB layer of random bytes (incompressible: it takes long to trickle). */
let big: TestImage;
/** Another image sharing big's layer (a second reference, pulled concurrently). */
let bigSibling: TestImage;

before(async () => {
  image = await tinyImage('hostile\n');
  const layer = await buildLayer([{ path: 'noise.bin', content: randomBytes(64 * 1024) }], 'gzip');
  big = buildImage({ layers: [layer] });
  bigSibling = buildImage({ layers: [layer], config: { Env: ['SIBLING=1'] } });
});

after(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => undefined);
});

async function server(address = '127.0.0.1', tls?: { key: string; cert: string }): Promise<HostileServer> {
  const s = await startHostileServer(address, tls);
  cleanups.push(() => s.stop());
  return s;
}

async function certificate(names: string[]) {
  const c = await makeTestCertificate(names);
  cleanups.push(() => fs.rm(c.dir, { recursive: true, force: true }));
  return c;
}

async function newStore(): Promise<ContentStore> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-pull-hostile-'));
  cleanups.push(() => fs.rm(dir, { recursive: true, force: true }));
  return new ContentStore(dir);
}

function client(opts: RegistryClientOptions = {}): RegistryClient {
  const c = new RegistryClient({ timeoutMs: 10_000, ...opts });
  cleanups.push(async () => c.close());
  return c;
}

const registryConfig = (r: Partial<RegistryConfig>): RegistryConfig => ({ mirrors: [], insecure: false, tlsVerify: true, caFile: '', ...r });

/** The promise, or a failure after `ms` (old code hangs where new code must answer). */
function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: still running after ${ms} ms`)), ms);
  });
  return Promise.race([p, limit]).finally(() => clearTimeout(timer));
}

const registryError = (kind: RegistryErrorKind, re: RegExp) => (e: unknown) => {
  assert.ok(e instanceof RegistryError, String((e as Error)?.stack ?? e));
  assert.equal(e.kind, kind, e.message);
  assert.match(e.message, re);
  return true;
};

const secretsIn = (s: HostileServer) => s.authorizations().filter((a) => a !== undefined);

describe('credentials go only to the host they are for', () => {
  const alice = { username: 'alice', password: 's3cret' };

  test('without server_address: to the registry itself, never to its mirror', async () => {
    const registry = (await server('127.0.0.1')).serveImage('team/app', '1', image).requireBasic('alice', 's3cret');
    const mirror = (await server('127.0.0.2')).serveImage('team/app', '1', image).requireBasic('alice', 's3cret');
    const c = client({ registries: { [registry.host]: registryConfig({ mirrors: [mirror.url] }) } });
    const r = await pullImageContent(`${registry.host}/team/app:1`, await newStore(), { client: c, auth: alice });
    assert.equal(r.mirror, false, 'the mirror wants credentials it is not given: the registry serves');
    assert.ok(mirror.requests.length > 0, 'the mirror was tried (anonymously)');
    assert.deepEqual(secretsIn(mirror), [], 'the mirror got no Authorization header');
    assert.ok(registry.authorizations().some((a) => a?.startsWith('Basic ')), 'the registry got the credentials');
  });

  test('with server_address naming the mirror: to the mirror only', async () => {
    const registry = (await server('127.0.0.1')).serveImage('team/app', '1', image).requireBasic('alice', 's3cret');
    // The mirror lacks the layer, so the registry is asked for it too: without credentials.
    const mirror = (await server('127.0.0.2')).serveImage('team/app', '1', image).requireBasic('alice', 's3cret');
    mirror.on(new RegExp(`/blobs/${image.layers[0]!.digest}$`), { status: 404, body: '{"errors":[{"code":"BLOB_UNKNOWN"}]}' });
    const c = client({ registries: { [registry.host]: registryConfig({ mirrors: [mirror.url] }) } });
    await assert.rejects(
      pullImageContent(`${registry.host}/team/app:1`, await newStore(), { client: c, auth: { ...alice, serverAddress: `http://${mirror.host}` } }),
      registryError('unauthorized', /no credentials were given/),
    );
    assert.ok(mirror.authorizations().some((a) => a?.startsWith('Basic ')), 'the mirror got them');
    assert.ok(registry.requests.length > 0, 'the registry was asked for the layer');
    assert.deepEqual(secretsIn(registry), [], 'the registry got none');
  });

  test('with server_address naming the registry: the mirror gets none', async () => {
    const registry = (await server('127.0.0.1')).serveImage('team/app', '1', image).requireBasic('alice', 's3cret');
    const mirror = (await server('127.0.0.2')).serveImage('team/app', '1', image).requireBasic('alice', 's3cret');
    const c = client({ registries: { [registry.host]: registryConfig({ mirrors: [mirror.url] }) } });
    const r = await pullImageContent(`${registry.host}/team/app:1`, await newStore(), { client: c, auth: { ...alice, serverAddress: registry.host } });
    assert.equal(r.mirror, false);
    assert.ok(mirror.requests.length > 0);
    assert.deepEqual(secretsIn(mirror), []);
  });

  test('a plain-HTTP token realm of an HTTPS registry gets no credentials (no downgrade)', async () => {
    const cert = await certificate(['registry.test']);
    const realm = (await server('127.0.0.2')).serveTokens({ users: { alice: 's3cret' } });
    const registry = (await server('127.0.0.1', cert)).serveImage('team/app', '1', image).requireBearer(`${realm.url}/token`);
    const host = `registry.test:${registry.port}`;
    const c = client({ registries: { [host]: registryConfig({ caFile: cert.certFile }) }, lookup: testLookup({ 'registry.test': '127.0.0.1' }) });
    await assert.rejects(
      pullImageContent(`${host}/team/app:1`, await newStore(), { client: c, auth: alice }),
      registryError('unauthorized', /token realm http:\/\/127\.0\.0\.2:\d+\/token is plain HTTP; credentials for an HTTPS registry are not sent/),
    );
    assert.ok(registry.requests.length > 0, 'the registry was reached over HTTPS and challenged');
    assert.deepEqual(secretsIn(realm), [], 'the plain-HTTP realm got no credentials');
  });

  test('a plain-HTTP registry may use a plain-HTTP realm (nothing is downgraded)', async () => {
    const realm = (await server('127.0.0.2')).serveTokens({ users: { alice: 's3cret' } });
    const registry = (await server('127.0.0.1')).serveImage('team/app', '1', image).requireBearer(`${realm.url}/token`);
    await pullImageContent(`${registry.host}/team/app:1`, await newStore(), { client: client(), auth: alice });
    assert.ok(realm.authorizations().some((a) => a?.startsWith('Basic ')));
  });

  for (const status of [307, 308] as const) {
    test(`a ${status} redirect of the OAuth2 token POST to another origin is refused: the refresh token stays home`, async () => {
      const thief = (await server('127.0.0.3')).serveTokens({ refreshTokens: { 'refresh-secret': 'alice' } });
      const realm = await server('127.0.0.2');
      realm.on(/^\/token/, { redirect: `${thief.url}/token`, status }, 'POST');
      const registry = (await server('127.0.0.1')).serveImage('team/app', '1', image).requireBearer(`${realm.url}/token`);
      await assert.rejects(
        pullImageContent(`${registry.host}/team/app:1`, await newStore(), { client: client(), auth: { identityToken: 'refresh-secret' } }),
        registryError('protocol', /refused to follow a 30[78] redirect from http:\/\/127\.0\.0\.2:\d+ to http:\/\/127\.0\.0\.3:\d+: it would re-send the request body \(credentials\) to another origin/),
      );
      assert.ok(realm.requests.some((r) => r.method === 'POST' && r.body.includes('refresh-secret')), 'the realm itself got the form');
      assert.deepEqual(thief.requests.filter((r) => r.body.includes('refresh-secret') || r.authorization), [], 'the other origin got nothing');
    });
  }

  test('a same-origin redirect of the token POST is still followed', async () => {
    const realm = (await server('127.0.0.2')).serveTokens({ path: '/oauth2/token', refreshTokens: { 'refresh-secret': 'alice' } });
    realm.on(/^\/token/, { redirect: '/oauth2/token', status: 307 }, 'POST');
    const registry = (await server('127.0.0.1')).serveImage('team/app', '1', image).requireBearer(`${realm.url}/token`);
    await pullImageContent(`${registry.host}/team/app:1`, await newStore(), { client: client(), auth: { identityToken: 'refresh-secret' } });
  });

  test('a token GET redirected to another origin carries no Authorization there', async () => {
    const thief = (await server('127.0.0.3')).serveTokens({ users: { alice: 's3cret' } });
    const realm = await server('127.0.0.2');
    realm.on(/^\/token/, { redirect: `${thief.url}/token` }, 'GET');
    const registry = (await server('127.0.0.1')).serveImage('team/app', '1', image).requireBearer(`${realm.url}/token`);
    await assert.rejects(pullImageContent(`${registry.host}/team/app:1`, await newStore(), { client: client(), auth: alice }), registryError('unauthorized', /refused/));
    assert.ok(thief.requests.length > 0, 'the redirect was followed');
    assert.deepEqual(secretsIn(thief), []);
  });

  test('tls_verify = false for a registry does not reach its token realm', async () => {
    const regCert = await certificate(['registry.test']);
    const authCert = await certificate(['auth.test']);
    const realm = (await server('127.0.0.2', authCert)).serveTokens({ users: { alice: 's3cret' } });
    const registry = (await server('127.0.0.1', regCert)).serveImage('team/app', '1', image).requireBearer(`https://auth.test:${realm.port}/token`);
    const host = `registry.test:${registry.port}`;
    const lookup = testLookup({ 'registry.test': '127.0.0.1', 'auth.test': '127.0.0.2' });
    // Verification off for the registry only: its own untrusted certificate is accepted...
    const c = client({ registries: { [host]: registryConfig({ tlsVerify: false }) }, lookup });
    await assert.rejects(pullImageContent(`${host}/team/app:1`, await newStore(), { client: c, auth: alice }), registryError('unreachable', /token service https:\/\/auth\.test:\d+\/token: TLS: /));
    assert.ok(registry.requests.length > 0, 'the registry answered with verification off, as configured');
    // ...but the realm's is checked, and the handshake fails before any credential is sent.
    assert.equal(realm.requests.length, 0, 'the realm never got an HTTP request');
    // Trusting the realm's CA for that exact host makes it work.
    const trusting = client({ registries: { [host]: registryConfig({ tlsVerify: false }), [`auth.test:${realm.port}`]: registryConfig({ caFile: authCert.certFile }) }, lookup });
    await pullImageContent(`${host}/team/app:1`, await newStore(), { client: trusting, auth: alice });
    assert.ok(realm.authorizations().some((a) => a?.startsWith('Basic ')));
  });

  test('tls_verify = false for a registry does not reach the host a blob redirects to; that host never gets Authorization', async () => {
    const regCert = await certificate(['registry.test']);
    const cdnCert = await certificate(['cdn.test']);
    const layer = image.layers[0]!;
    const cdn = await server('127.0.0.3', cdnCert);
    cdn.on(/^\/storage\//, { status: 200, body: layer.bytes });
    const registry = (await server('127.0.0.1', regCert)).serveImage('team/app', '1', image).requireBasic('alice', 's3cret');
    registry.on(new RegExp(`/blobs/${layer.digest}$`), (r) => (r.authorization ? { redirect: `https://cdn.test:${cdn.port}/storage/${layer.digest.slice(7)}?sig=x` } : undefined));
    const host = `registry.test:${registry.port}`;
    const lookup = testLookup({ 'registry.test': '127.0.0.1', 'cdn.test': '127.0.0.3' });
    const c = client({ registries: { [host]: registryConfig({ tlsVerify: false }) }, lookup });
    const store = await newStore();
    await assert.rejects(pullImageContent(`${host}/team/app:1`, store, { client: c, auth: alice, attempts: 1 }), registryError('unreachable', /TLS: /));
    assert.equal(cdn.requests.length, 0, 'the CDN\'s untrusted certificate was refused');
    assert.equal(await store.has(layer.digest), false);
    const trusting = client({ registries: { [host]: registryConfig({ tlsVerify: false }), [`cdn.test:${cdn.port}`]: registryConfig({ caFile: cdnCert.certFile }) }, lookup });
    await pullImageContent(`${host}/team/app:1`, store, { client: trusting, auth: alice });
    assert.equal(await store.has(layer.digest), true);
    assert.ok(cdn.requests.length > 0, 'the layer came from the CDN');
    assert.deepEqual(secretsIn(cdn), [], 'the CDN got no Authorization header');
  });
});

describe('lying registries', () => {
  const layerPath = () => new RegExp(`/blobs/${image.layers[0]!.digest}$`);

  async function refused(configure: (s: HostileServer) => void, kind: RegistryErrorKind, re: RegExp, opts: Partial<PullOptions> = {}): Promise<void> {
    const s = (await server()).serveImage('team/app', '1', image);
    configure(s);
    const store = await newStore();
    const t0 = Date.now();
    await within(15_000, assert.rejects(pullImageContent(`${s.host}/team/app:1`, store, { client: client(), attempts: 1, ...opts }), registryError(kind, re)), 'the pull');
    assert.ok(Date.now() - t0 < 10_000, `answered in ${Date.now() - t0} ms`);
    assert.equal(await store.has(image.layers[0]!.digest), false, 'nothing unverified is stored');
    assert.deepEqual(await fs.readdir(store.ingestDir).catch(() => []), [], 'no partial file is left');
  }

  test('a Content-Length larger than the descriptor size', () =>
    refused((s) => s.on(layerPath(), { lie: { body: image.layers[0]!.bytes, contentLength: image.layers[0]!.size + 100 } }), 'digest-mismatch', /bytes per its descriptor, but the registry sends \d+/));

  test('a Content-Length smaller than the descriptor size', () =>
    refused((s) => s.on(layerPath(), { lie: { body: image.layers[0]!.bytes, contentLength: image.layers[0]!.size - 1 } }), 'digest-mismatch', /bytes per its descriptor, but the registry sends \d+/));

  test('a body longer than the descriptor size (no Content-Length): refused at size + 1', () =>
    refused((s) => s.on(layerPath(), { endless: true }), 'digest-mismatch', /size mismatch: expected \d+ bytes, got \d+ or more/));

  test('a body that never ends under a Content-Length equal to the size: the extra bytes are not taken', () =>
    refused((s) => s.on(layerPath(), { endless: true, contentLength: image.layers[0]!.size }), 'digest-mismatch', /digest mismatch/));

  test('the right size but the wrong bytes', () =>
    refused((s) => s.on(layerPath(), { status: 200, body: Buffer.alloc(image.layers[0]!.size, 0x41) }), 'digest-mismatch', /digest mismatch: expected sha256:/));

  test('an endless manifest is cut at the manifest cap', () =>
    refused((s) => s.on(/\/manifests\/1$/, { endless: true }), 'protocol', /manifest 1: body is larger than the 4194304 bytes allowed/));

  test('a manifest declaring a huge Content-Length is refused before it is read', () =>
    refused((s) => s.on(/\/manifests\/1$/, { endless: true, contentLength: 1 << 30 }), 'protocol', /body of 1073741824 bytes is larger than the 4194304 allowed/));

  test('an endless token response is cut at the token cap', async () => {
    const realm = await server('127.0.0.2');
    realm.on(/^\/token/, { endless: true });
    await refused((s) => s.requireBearer(`${realm.url}/token`), 'protocol', /token service http:\/\/127\.0\.0\.2:\d+\/token: the answer is not JSON \(body is larger than the 262144 bytes allowed\)/);
  });

  test('endless error bodies are cut: the status still reaches the caller', async () => {
    await refused((s) => s.on(/\/manifests\/1$/, { endless: true, status: 404 }), 'not-found', /manifest 1 not found \(HTTP 404\)/);
    await refused((s) => s.on(/\/manifests\/1$/, { endless: true, status: 500, contentLength: 1 << 30 }), 'unreachable', /registry answered HTTP 500/);
  });
});

describe('slow registries', () => {
  const bigLayer = () => big.layers[0]!;
  const trickle = (bytesPerTick: number, intervalMs: number) => ({ trickle: bigLayer().bytes, bytesPerTick, intervalMs });
  const fastDeadline: Partial<PullOptions> = { progressDeadlineMs: 1000, progressMinBytes: 4096 };

  test('a trickled layer fails the pull at the progress deadline, naming it; a concurrent pull of the same layer fails too', async () => {
    const s = (await server()).serveImage('team/big', '1', big).serveImage('team/big', 'sibling', bigSibling);
    s.on(new RegExp(`/blobs/${bigLayer().digest}$`), trickle(16, 100)); // 160 B/s: alive for an idle timeout, but no progress
    const store = await newStore();
    const c = client();
    const t0 = Date.now();
    const pulls = [`${s.host}/team/big:1`, `${s.host}/team/big:sibling`].map((ref) => pullImageContent(ref, store, { client: c, ...fastDeadline }));
    const results = await within(10_000, Promise.allSettled(pulls), 'the trickled pulls');
    const ms = Date.now() - t0;
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      const e = (r as PromiseRejectedResult).reason;
      registryError('stalled', /no progress for 1 s: received only \d+ bytes \(at least 4096 needed\) while waiting for blobs of sha256:[0-9a-f]{64}; the registry is stalled or too slow \(see image_pull\.progress_deadline_seconds/)(e);
      assert.equal(grpcCode(e), GrpcStatus.DEADLINE_EXCEEDED);
    }
    assert.ok(ms < 4000, `failed after ${ms} ms`);
    assert.equal(await store.has(bigLayer().digest), false);
    assert.deepEqual(await fs.readdir(store.ingestDir), [], 'the partial download is removed');
  });

  test('a trickled manifest, a token service that never answers, a blob whose headers never come: each fails at the deadline', async () => {
    const a = (await server()).serveImage('team/app', '1', image);
    a.on(/\/manifests\/1$/, { trickle: image.manifest.bytes, bytesPerTick: 1, intervalMs: 100 });
    await within(8000, assert.rejects(pullImageContent(`${a.host}/team/app:1`, await newStore(), { client: client(), ...fastDeadline }), registryError('stalled', /while waiting for the manifest/)), 'manifest');

    const realm = await server('127.0.0.2');
    realm.on(/^\/token/, { hang: true });
    const b = (await server()).serveImage('team/app', '1', image).requireBearer(`${realm.url}/token`);
    await within(8000, assert.rejects(pullImageContent(`${b.host}/team/app:1`, await newStore(), { client: client(), ...fastDeadline }), registryError('stalled', /while waiting for the manifest/)), 'token');

    const c = (await server()).serveImage('team/app', '1', image);
    c.on(new RegExp(`/blobs/${image.layers[0]!.digest}$`), { hang: true });
    await within(8000, assert.rejects(pullImageContent(`${c.host}/team/app:1`, await newStore(), { client: client(), ...fastDeadline }), registryError('stalled', /no progress for 1 s: received nothing/)), 'blob');
  });

  test('the overall cap ends a pull that keeps making progress too slowly', async () => {
    const s = (await server()).serveImage('team/big', '1', big);
    s.on(new RegExp(`/blobs/${bigLayer().digest}$`), trickle(1024, 100)); // 10 KiB/s: 6 s for the layer
    await within(
      8000,
      assert.rejects(
        pullImageContent(`${s.host}/team/big:1`, await newStore(), { client: client(), progressDeadlineMs: 1000, progressMinBytes: 1024, timeoutMs: 1500 }),
        registryError('stalled', /did not finish within 1\.5 s \(image_pull\.timeout_seconds\); \d+ bytes received/),
      ),
      'the capped pull',
    );
  });

  test('a slow but steady shared download keeps both pulls alive past the deadline', async () => {
    const s = (await server()).serveImage('team/big', '1', big).serveImage('team/big', 'sibling', bigSibling);
    s.on(new RegExp(`/blobs/${bigLayer().digest}$`), trickle(2048, 100)); // 20 KiB/s: ~3 s, well above 4 KiB/s
    const store = await newStore();
    const c = client();
    const t0 = Date.now();
    await within(15_000, Promise.all([`${s.host}/team/big:1`, `${s.host}/team/big:sibling`].map((ref) => pullImageContent(ref, store, { client: c, ...fastDeadline }))), 'steady pulls');
    assert.ok(Date.now() - t0 > 1500, 'it took longer than the progress deadline');
    assert.equal(await store.has(bigLayer().digest), true);
  });
});
