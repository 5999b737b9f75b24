/**
 * Hostile layers through a real CRI PullImage (test registry on 127.0.0.1, a real
 * `corral serve`): an escape through a replaced directory is neutralised with the host
 * untouched, a layer that cannot be unpacked fails its pull with INVALID_ARGUMENT and a
 * reason, and the daemon keeps serving (kubelet retries such pulls).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import type * as grpc from '@grpc/grpc-js';
import { TestDaemon } from '../helpers/daemon.js';
import { pushImage, startRegistry, type TestRegistry } from '../helpers/registry.js';
import { buildImage, layerFromTar } from '../helpers/test-images.js';
import { fingerprint, hostileTar, makeCanaryTree, type HostileEntry } from '../helpers/hostile-tar.js';
import { createImageClient, call } from '../../src/cri/client.js';
import type { ImageRpcName } from '../../src/cri/proto.js';

let reg: TestRegistry;
let d: TestDaemon;
let client: grpc.Client;
let host: string;
let outside: string;
let canary: Record<string, unknown>;

const irpc = <T = any>(method: ImageRpcName, req: object) => call<T>(client, method, req, { deadlineMs: 60_000 });

before(async () => {
  host = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-hostile-pull-'));
  outside = path.join(host, 'outside');
  await makeCanaryTree(outside);
  canary = fingerprint(outside);
  reg = await startRegistry();
  const escape: HostileEntry[] = [
    { name: 'a/', type: 'directory' },
    { name: 'a/f', content: 'in the layer', pax: { 'SCHILY.xattr.trusted.hostile': 'pwned' } },
    { name: 'a/d/', type: 'directory', mode: 0o777, uid: 666 },
    { name: 'a/d/.wh..wh..opq' },
    { name: 'a', type: 'symlink', linkname: outside },
  ];
  const emptyLink: HostileEntry[] = [{ name: 'empty', type: 'symlink', linkname: '' }];
  for (let i = 0; i < 63; i++) emptyLink.push({ name: `s${i}`, type: 'symlink', linkname: `t${i}` });
  await pushImage(reg, 'hostile/escape', 'latest', buildImage({ layers: [await layerFromTar(await hostileTar(escape))] }));
  await pushImage(reg, 'hostile/emptylink', 'latest', buildImage({ layers: [await layerFromTar(await hostileTar(emptyLink))] }));
  d = new TestDaemon();
  await d.start();
  client = createImageClient(d.socket);
});

after(async () => {
  client?.close();
  await d?.cleanup();
  await reg?.stop();
  if (host) await fs.rm(host, { recursive: true, force: true });
});

test('a pull whose layer swaps a directory for a symlink to the host leaves the host untouched', async () => {
  await irpc('PullImage', { image: { image: `${reg.host}/hostile/escape:latest` } });
  assert.deepEqual(fingerprint(outside), canary);
});

test('a layer with an empty symlink target (then 63 symlinks) fails its pull with INVALID_ARGUMENT; the daemon keeps serving', async () => {
  const ref = `${reg.host}/hostile/emptylink:latest`;
  for (let attempt = 0; attempt < 3; attempt++) {
    await assert.rejects(irpc('PullImage', { image: { image: ref } }), (e: any) => {
      assert.equal(e.code, status.INVALID_ARGUMENT, e.details);
      assert.match(e.details, /hostile\/emptylink.*layer sha256:[0-9a-f]{64}.*"empty".*empty target/);
      return true;
    });
  }
  const { images } = await irpc<{ images: { repoTags: string[] }[] }>('ListImages', {});
  assert.ok(images.some((i) => i.repoTags.includes(`${reg.host}/hostile/escape:latest`)));
  assert.ok(!images.some((i) => i.repoTags.includes(ref)));
  assert.deepEqual(fingerprint(outside), canary);
});
