import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  cacheFilePath,
  decodeCacheEntry,
  deleteCachedAttachment,
  listCachedAttachments,
  listCachedContainerIds,
  readCachedAttachment,
  splitCacheFileName,
  writeCachedAttachment,
  type CachedAttachment,
} from '../../src/network/cni/cache.js';

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-cni-cache-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

const configBytes = Buffer.from('{"cniVersion":"1.0.0","name":"my-net","plugins":[{"type":"bridge"}]}');

function entry(containerId: string, networkName = 'my-net', ifName = 'eth0'): CachedAttachment {
  return {
    containerId,
    networkName,
    ifName,
    netns: '/var/run/netns/p1',
    config: configBytes,
    cniArgs: [['IgnoreUnknown', '1'], ['K8S_POD_NAME', 'web']],
    capabilityArgs: { portMappings: [{ hostPort: 80, containerPort: 8080, protocol: 'tcp' }] },
    result: { cniVersion: '1.0.0', ips: [{ address: '10.0.0.2/24' }] },
  };
}

test('write uses libcni layout, modes 0700/0600, base64 config', async (t) => {
  const dir = await tempDir(t);
  const cacheDir = path.join(dir, 'cni');
  const file = await writeCachedAttachment(cacheDir, entry('c1'));
  assert.equal(file, path.join(cacheDir, 'results', 'my-net-c1-eth0'));
  assert.equal(file, cacheFilePath(cacheDir, 'my-net', 'c1', 'eth0'));
  assert.equal((await fs.stat(path.join(cacheDir, 'results'))).mode & 0o777, 0o700);
  assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
  const json = JSON.parse(await fs.readFile(file, 'utf8'));
  assert.equal(json.kind, 'cniCacheV1');
  assert.equal(json.containerId, 'c1');
  assert.equal(json.config, configBytes.toString('base64'));
  assert.equal(json.ifName, 'eth0');
  assert.equal(json.networkName, 'my-net');
  assert.equal(json.netns, '/var/run/netns/p1');
  assert.deepEqual(json.cniArgs, [['IgnoreUnknown', '1'], ['K8S_POD_NAME', 'web']]);
  assert.deepEqual(json.capabilityArgs.portMappings[0].hostPort, 80);
  assert.deepEqual(json.result.ips[0].address, '10.0.0.2/24');
  assert.deepEqual(await readCachedAttachment(cacheDir, 'my-net', 'c1', 'eth0'), entry('c1'));
  // no temp files left behind
  assert.deepEqual(await fs.readdir(path.join(cacheDir, 'results')), ['my-net-c1-eth0']);
  await deleteCachedAttachment(cacheDir, 'my-net', 'c1', 'eth0');
  assert.equal(await readCachedAttachment(cacheDir, 'my-net', 'c1', 'eth0'), undefined);
  await deleteCachedAttachment(cacheDir, 'my-net', 'c1', 'eth0'); // idempotent
});

test('corrupt, empty, torn and legacy entries', () => {
  assert.deepEqual(decodeCacheEntry(''), { ok: false, reason: 'empty file' });
  assert.equal(decodeCacheEntry('{"kind":"cniCacheV1","contai').ok, false);
  assert.equal(decodeCacheEntry('[]').ok, false);
  assert.equal(decodeCacheEntry('{"kind":"other"}').ok, false);
  assert.equal(decodeCacheEntry('{"kind":"cniCacheV1","containerId":"c","networkName":"n"}').ok, false);
  assert.equal(decodeCacheEntry('{"kind":"cniCacheV1","containerId":"c","networkName":"n","ifName":"eth0","cniArgs":[["a"]]}').ok, false);
  const legacy = decodeCacheEntry('{"cniVersion":"0.3.1","ips":[]}');
  assert.equal(legacy.ok, 'legacy');
  const minimal = decodeCacheEntry('{"kind":"cniCacheV1","containerId":"c","networkName":"n","ifName":"eth0"}');
  assert.equal(minimal.ok, true);
  if (minimal.ok === true) {
    assert.equal(minimal.entry.config, undefined);
    assert.equal(minimal.entry.result, undefined);
    assert.deepEqual(minimal.entry.cniArgs, []);
  }
});

test('listing attachments of a container and all container IDs', async (t) => {
  const cacheDir = await tempDir(t);
  await writeCachedAttachment(cacheDir, entry('c1', 'net-a', 'eth0'));
  await writeCachedAttachment(cacheDir, entry('c1', 'net-b', 'eth1'));
  await writeCachedAttachment(cacheDir, entry('c2', 'net-a', 'eth0'));
  // a container whose ID ends in "-c1": its file name contains "-c1-" too
  await writeCachedAttachment(cacheDir, entry('x-c1', 'net', 'eth0'));
  await fs.writeFile(path.join(cacheDir, 'results', 'net-c-c1-eth2'), '');
  const c1 = await listCachedAttachments(cacheDir, 'c1');
  assert.deepEqual(c1.attachments.map((a) => `${a.networkName}/${a.ifName}`).sort(), ['net-a/eth0', 'net-b/eth1']);
  assert.equal(c1.unusable.length, 1);
  assert.equal(c1.unusable[0]!.baseName, 'net-c-c1-eth2');
  assert.equal(c1.unusable[0]!.reason, 'empty file');
  assert.deepEqual(splitCacheFileName('net-c-c1-eth2', 'c1', ['net', 'net-c']), { networkName: 'net-c', ifName: 'eth2' });
  assert.equal(splitCacheFileName('net-c-c1-eth2', 'c1', ['other']), undefined);
  assert.deepEqual(await listCachedContainerIds(cacheDir), ['c1', 'c2', 'x-c1']);
  assert.deepEqual(await listCachedContainerIds(path.join(cacheDir, 'missing')), []);
  assert.deepEqual((await listCachedAttachments(path.join(cacheDir, 'missing'), 'c1')).attachments, []);
});
