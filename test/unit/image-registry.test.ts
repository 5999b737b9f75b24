import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultConfig, resolveConfig, type RegistryConfig } from '../../src/config/config.js';
import {
  authAppliesTo,
  credentialKey,
  credentialsGoTo,
  parseWwwAuthenticate,
  pullScope,
  resolveCredentials,
  TokenCache,
} from '../../src/image/registry/auth.js';
import { isLoopbackHost, registryEndpoints } from '../../src/image/registry/endpoints.js';
import { RegistryError, describeTransportError } from '../../src/image/registry/errors.js';
import { grpcCode } from '../../src/cri/errors.js';
import { detectManifestType, MT_DOCKER_SCHEMA1, MT_OCI_INDEX, MT_OCI_MANIFEST } from '../../src/image/registry/media-types.js';
import { compatiblePlatforms, formatPlatform, hostPlatform, nodeArchToOci, normalizePlatform, selectPlatformManifest } from '../../src/image/registry/platform.js';

const reg = (r: Partial<RegistryConfig>): RegistryConfig => ({ mirrors: [], insecure: false, tlsVerify: true, caFile: '', ...r });

test('WWW-Authenticate: bearer with quoted parameters', () => {
  const c = parseWwwAuthenticate('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"');
  assert.deepEqual(c, [
    { scheme: 'bearer', params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/busybox:pull' } },
  ]);
});

test('WWW-Authenticate: basic, unquoted values, spaces, several challenges, arrays', () => {
  assert.deepEqual(parseWwwAuthenticate('Basic realm="Registry Realm"'), [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
  assert.deepEqual(parseWwwAuthenticate('BEARER Realm=http://t/token , Service=svc'), [{ scheme: 'bearer', params: { realm: 'http://t/token', service: 'svc' } }]);
  assert.deepEqual(parseWwwAuthenticate('Bearer realm="a,b",scope="x:y:pull,push", Basic realm="r"'), [
    { scheme: 'bearer', params: { realm: 'a,b', scope: 'x:y:pull,push' } },
    { scheme: 'basic', params: { realm: 'r' } },
  ]);
  assert.deepEqual(parseWwwAuthenticate(['Basic realm="one"', 'Bearer realm="two"']).map((c) => c.scheme), ['basic', 'bearer']);
  assert.deepEqual(parseWwwAuthenticate('Bearer realm="with \\"escaped\\" quote"')[0]!.params.realm, 'with "escaped" quote');
  assert.deepEqual(parseWwwAuthenticate(undefined), []);
  assert.deepEqual(parseWwwAuthenticate(''), []);
});

test('credentials from a CRI AuthConfig', () => {
  assert.equal(resolveCredentials(undefined), undefined);
  assert.equal(resolveCredentials({}), undefined);
  assert.deepEqual(resolveCredentials({ username: 'u', password: 'p' }), { username: 'u', password: 'p' });
  assert.deepEqual(resolveCredentials({ auth: Buffer.from('me:se:cret').toString('base64') }), { username: 'me', password: 'se:cret' });
  assert.deepEqual(resolveCredentials({ identityToken: 'rt' }), { identityToken: 'rt' });
  assert.deepEqual(resolveCredentials({ registryToken: 'bt' }), { registryToken: 'bt' });
  // username/password win over auth
  assert.deepEqual(resolveCredentials({ username: 'a', password: 'b', auth: Buffer.from('c:d').toString('base64') }), { username: 'a', password: 'b' });
  // The cache key hides the secret and tells different credentials apart.
  const k1 = credentialKey({ username: 'u', password: 'p1' });
  assert.notEqual(k1, credentialKey({ username: 'u', password: 'p2' }));
  assert.ok(!k1.includes('p1'));
  assert.equal(credentialKey(undefined), 'anonymous');
  assert.equal(pullScope('library/busybox'), 'repository:library/busybox:pull');
});

test('serverAddress limits which registry credentials go to', () => {
  assert.ok(authAppliesTo({ username: 'u' }, 'anything.io'));
  assert.ok(authAppliesTo({ username: 'u', serverAddress: 'https://index.docker.io/v1/' }, 'docker.io'));
  assert.ok(authAppliesTo({ username: 'u', serverAddress: 'registry-1.docker.io' }, 'docker.io'));
  assert.ok(authAppliesTo({ username: 'u', serverAddress: 'quay.io' }, 'quay.io'));
  assert.ok(authAppliesTo({ username: 'u', serverAddress: 'http://127.0.0.1:5000' }, '127.0.0.1:5000'));
  assert.ok(!authAppliesTo({ username: 'u', serverAddress: 'quay.io' }, 'docker.io'));
});

test('credentials go to the registry itself, or only to the host server_address names; never to a mirror otherwise', () => {
  const registry = { host: 'registry.example.com', mirror: false };
  const mirror = { host: 'mirror.example.com:5000', mirror: true };
  const creds = { username: 'u', password: 'p' };
  assert.equal(credentialsGoTo(undefined, 'registry.example.com', registry), false);
  assert.equal(credentialsGoTo(creds, 'registry.example.com', registry), true);
  assert.equal(credentialsGoTo(creds, 'registry.example.com', mirror), false, 'no server_address: not to mirrors');
  const forMirror = { ...creds, serverAddress: 'https://mirror.example.com:5000/v2/' };
  assert.equal(credentialsGoTo(forMirror, 'registry.example.com', mirror), true);
  assert.equal(credentialsGoTo(forMirror, 'registry.example.com', registry), false);
  const forRegistry = { ...creds, serverAddress: 'registry.example.com' };
  assert.equal(credentialsGoTo(forRegistry, 'registry.example.com', registry), true);
  assert.equal(credentialsGoTo(forRegistry, 'registry.example.com', mirror), false);
  // Docker Hub: the reference domain and the API host are one registry; its mirror is not.
  const hub = { ...creds, serverAddress: 'https://index.docker.io/v1/' };
  assert.equal(credentialsGoTo(hub, 'docker.io', { host: 'registry-1.docker.io', mirror: false }), true);
  assert.equal(credentialsGoTo(hub, 'docker.io', { host: 'hub-mirror.local', mirror: true }), false);
  assert.equal(credentialsGoTo({ ...creds, serverAddress: 'quay.io' }, 'docker.io', { host: 'registry-1.docker.io', mirror: false }), false);
});

test('image_pull config: progress deadline, minimum bytes and overall cap; defaults; bad values refused', () => {
  assert.deepEqual(defaultConfig().imagePull, { progressDeadlineSeconds: 60, progressMinBytes: 65536, timeoutSeconds: 3600 });
  assert.deepEqual(resolveConfig({ image_pull: { progress_deadline_seconds: 5, progress_min_bytes: 1024, timeout_seconds: 0 } }).imagePull, {
    progressDeadlineSeconds: 5,
    progressMinBytes: 1024,
    timeoutSeconds: 0,
  });
  assert.throws(() => resolveConfig({ image_pull: { progress_deadline_seconds: -1 } }), /image_pull\.progress_deadline_seconds: must be between 0 and/);
  assert.throws(() => resolveConfig({ image_pull: { progress_deadline: 5 } }), /image_pull\.progress_deadline: unknown key/);
  assert.throws(() => resolveConfig({ image_pull: { timeout_seconds: '1h' } }), /image_pull\.timeout_seconds: must be a whole number/);
});

test('token cache: keyed, expires with a margin, default 60 s lifetime', () => {
  let now = 1_000_000;
  const c = new TokenCache(() => now);
  const k = TokenCache.key('http://r/v2', 'repository:a:pull', 'anonymous');
  c.set(k, 'tok', 300);
  assert.equal(c.get(k), 'tok');
  assert.equal(c.get(TokenCache.key('http://r/v2', 'repository:b:pull', 'anonymous')), undefined, 'other scope');
  assert.equal(c.get(TokenCache.key('http://other/v2', 'repository:a:pull', 'anonymous')), undefined, 'other endpoint');
  now += 289_000;
  assert.equal(c.get(k), 'tok');
  now += 1_000; // 290 s: inside the 10 s margin
  assert.equal(c.get(k), undefined);
  assert.equal(c.size, 0);

  now = 0;
  c.set(k, 'short'); // no expires_in: 60 s
  now = 53_000;
  assert.equal(c.get(k), 'short');
  now = 54_000; // margin min(10, 6) = 6 s
  assert.equal(c.get(k), undefined);

  now = 100_000;
  c.set(k, 'issued-earlier', 60, 80_000); // issued 20 s ago
  now = 133_000;
  assert.equal(c.get(k), 'issued-earlier');
  now = 134_000;
  assert.equal(c.get(k), undefined);
  c.set(k, 'x', 60);
  c.delete(k);
  assert.equal(c.get(k), undefined);
});

test('endpoints: upstream only by default; https for real hosts, http for loopback', () => {
  assert.deepEqual(
    registryEndpoints('registry.k8s.io').map((e) => [e.url, e.api, e.mirror]),
    [['https://registry.k8s.io', 'https://registry.k8s.io/v2', false]],
  );
  assert.equal(registryEndpoints('docker.io')[0]!.url, 'https://registry-1.docker.io');
  assert.equal(registryEndpoints('localhost:5000')[0]!.url, 'http://localhost:5000');
  assert.equal(registryEndpoints('127.0.0.1:5000')[0]!.url, 'http://127.0.0.1:5000');
  assert.equal(registryEndpoints('[::1]:5000')[0]!.url, 'http://[::1]:5000');
  assert.equal(registryEndpoints('localhost')[0]!.url, 'http://localhost');
  assert.equal(registryEndpoints('myhost:5000')[0]!.url, 'https://myhost:5000');
  assert.equal(registryEndpoints('myhost:5000', { 'myhost:5000': reg({ insecure: true }) })[0]!.url, 'http://myhost:5000');
  for (const h of ['localhost', 'localhost:1', '127.0.0.1', '127.1.2.3:80', '::1', '[::1]:5000']) assert.ok(isLoopbackHost(h), h);
  for (const h of ['example.com', '10.0.0.1:5000', 'localhost.example.com', '[::2]:1']) assert.ok(!isLoopbackHost(h), h);
});

test('endpoints: mirrors first in order, same repository paths, TLS settings shared', () => {
  const eps = registryEndpoints('registry.k8s.io', {
    'registry.k8s.io': reg({ mirrors: ['http://127.0.0.1:5000', 'https://mirror.example.com/prefix/', 'https://m2.example.com/v2'], tlsVerify: false, caFile: '/etc/ca.pem' }),
  });
  assert.deepEqual(
    eps.map((e) => [e.url, e.api, e.host, e.mirror, e.tlsVerify, e.caFile]),
    [
      ['http://127.0.0.1:5000', 'http://127.0.0.1:5000/v2', '127.0.0.1:5000', true, false, '/etc/ca.pem'],
      ['https://mirror.example.com/prefix', 'https://mirror.example.com/prefix/v2', 'mirror.example.com', true, false, '/etc/ca.pem'],
      ['https://m2.example.com', 'https://m2.example.com/v2', 'm2.example.com', true, false, '/etc/ca.pem'],
      ['https://registry.k8s.io', 'https://registry.k8s.io/v2', 'registry.k8s.io', false, false, '/etc/ca.pem'],
    ],
  );
  // Docker Hub settings may be keyed by its API host too.
  const hub = registryEndpoints('docker.io', { 'registry-1.docker.io': reg({ mirrors: ['https://hub-mirror.local'] }) });
  assert.deepEqual(hub.map((e) => e.url), ['https://hub-mirror.local', 'https://registry-1.docker.io']);
  // Settings of another host do not apply.
  assert.equal(registryEndpoints('quay.io', { 'registry.k8s.io': reg({ mirrors: ['http://x'] }) }).length, 1);
});

test('platforms: normalisation and host platform', () => {
  assert.deepEqual(normalizePlatform({ os: 'Linux', architecture: 'x86_64' }), { os: 'linux', architecture: 'amd64' });
  assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'aarch64' }), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'arm64' }), { os: 'linux', architecture: 'arm64', variant: 'v8' });
  assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'arm' }), { os: 'linux', architecture: 'arm', variant: 'v7' });
  assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'armhf' }), { os: 'linux', architecture: 'arm', variant: 'v7' });
  assert.deepEqual(normalizePlatform({ os: 'linux', architecture: 'amd64', variant: 'v1' }), { os: 'linux', architecture: 'amd64' });
  assert.equal(nodeArchToOci('x64'), 'amd64');
  assert.equal(nodeArchToOci('arm64'), 'arm64');
  assert.equal(nodeArchToOci('ia32'), '386');
  const h = hostPlatform();
  assert.equal(h.os, 'linux');
  assert.equal(h.architecture, nodeArchToOci(process.arch));
  assert.equal(formatPlatform({ os: 'linux', architecture: 'arm64', variant: 'v8' }), 'linux/arm64/v8');
  assert.deepEqual(compatiblePlatforms({ os: 'linux', architecture: 'arm64' }).map(formatPlatform), [
    'linux/arm64/v8', 'linux/arm/v8', 'linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5',
  ]);
  assert.deepEqual(compatiblePlatforms({ os: 'linux', architecture: 'arm', variant: 'v6' }).map(formatPlatform), ['linux/arm/v6', 'linux/arm/v5']);
});

test('platform selection from an index', () => {
  const entry = (architecture: string, variant?: string, os = 'linux') => ({
    digest: `${architecture}${variant ?? ''}${os}`,
    platform: { os, architecture, ...(variant ? { variant } : {}) },
  });
  const amd = entry('amd64');
  const arm64 = entry('arm64');
  const arm64v8 = entry('arm64', 'v8');
  const armv7 = entry('arm', 'v7');
  const armv6 = entry('arm', 'v6');
  const win = entry('amd64', undefined, 'windows');
  const attestation = { digest: 'att', platform: { os: 'unknown', architecture: 'unknown' } };
  const noPlatform: { digest: string; platform?: { os: string; architecture: string } } = { digest: 'np' };

  assert.equal(selectPlatformManifest([win, amd, arm64], { os: 'linux', architecture: 'amd64' }), amd);
  assert.equal(selectPlatformManifest([attestation, noPlatform, arm64, amd], { os: 'linux', architecture: 'amd64' }), amd);
  // arm64 without variant and arm64/v8 are the same platform.
  assert.equal(selectPlatformManifest([amd, arm64], { os: 'linux', architecture: 'arm64', variant: 'v8' }), arm64);
  assert.equal(selectPlatformManifest([amd, arm64v8], { os: 'linux', architecture: 'arm64' }), arm64v8);
  // arm64 falls back to 32-bit arm, best variant first; arm64 itself wins when present.
  assert.equal(selectPlatformManifest([armv6, armv7], { os: 'linux', architecture: 'arm64' }), armv7);
  assert.equal(selectPlatformManifest([armv7, arm64], { os: 'linux', architecture: 'arm64' }), arm64);
  assert.equal(selectPlatformManifest([armv7], { os: 'linux', architecture: 'arm', variant: 'v6' }), undefined, 'v6 cannot run v7');
  assert.equal(selectPlatformManifest([armv6], { os: 'linux', architecture: 'arm' }), armv6, 'arm (v7) runs v6');
  assert.equal(selectPlatformManifest([entry('386')], { os: 'linux', architecture: 'amd64' })?.digest, '386linux');
  assert.equal(selectPlatformManifest([win, attestation], { os: 'linux', architecture: 'amd64' }), undefined);
  assert.equal(selectPlatformManifest([entry('s390x')], { os: 'linux', architecture: 'amd64' }), undefined);
});

test('manifest media type detection', () => {
  assert.equal(detectManifestType('application/vnd.oci.image.index.v1+json; charset=utf-8', {}), MT_OCI_INDEX);
  assert.equal(detectManifestType('application/json', { mediaType: MT_OCI_MANIFEST }), MT_OCI_MANIFEST);
  assert.equal(detectManifestType(undefined, { schemaVersion: 2, manifests: [] }), MT_OCI_INDEX);
  assert.equal(detectManifestType('text/plain', { schemaVersion: 2, config: {}, layers: [] }), MT_OCI_MANIFEST);
  assert.equal(detectManifestType('application/json', { schemaVersion: 1, fsLayers: [] }), MT_DOCKER_SCHEMA1);
});

test('RegistryError names the reference, every endpoint and the reason; kind from the last', () => {
  const a = RegistryError.at('unreachable', 'registry.k8s.io/pause:3.9', { url: 'http://127.0.0.1:1', mirror: true }, 'connect ECONNREFUSED 127.0.0.1:1');
  const b = RegistryError.at('not-found', 'registry.k8s.io/pause:3.9', { url: 'https://registry.k8s.io', mirror: false }, 'manifest 3.9 not found (HTTP 404)');
  const e = RegistryError.combine('registry.k8s.io/pause:3.9', [a, b]);
  assert.equal(e.kind, 'not-found');
  assert.equal(e.failures.length, 2);
  assert.match(e.message, /^pull registry\.k8s\.io\/pause:3\.9: not found \(mirror http:\/\/127\.0\.0\.1:1: connect ECONNREFUSED.*; https:\/\/registry\.k8s\.io: manifest 3\.9 not found/);
  assert.equal(grpcCode(e), 5 /* NOT_FOUND */);
  assert.equal(describeTransportError(Object.assign(new Error('x'), { code: 'ECONNREFUSED' })).kind, 'unreachable');
  assert.match(describeTransportError(Object.assign(new Error('self-signed certificate'), { code: 'DEPTH_ZERO_SELF_SIGNED_CERT' })).reason, /TLS: .*tls_verify/);
});
