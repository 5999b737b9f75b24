/**
 * The image side of the `corral` executable against a real daemon: pull with per-layer
 * progress, images / inspecti / rmi as crictl shows them, and the offline
 * `corral image import` of an OCI image layout archive and of a `docker save` archive,
 * which the running daemon then serves.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { TestDaemon } from '../helpers/daemon.js';
import { pushImage, startProxy, startRegistry, type TestProxy, type TestRegistry } from '../helpers/registry.js';
import { buildImage, buildLayer, busyboxImage, makeTar, multiArchIndex, tinyImage, type TarEntry, type TestImage } from '../helpers/test-images.js';
import { createImageClient, call } from '../../src/cri/client.js';
import { execFile } from '../../src/util/exec.js';
import { packageRoot } from '../../src/util/paths.js';

let reg: TestRegistry;
let slow: TestProxy;
let d: TestDaemon;
let client: ReturnType<typeof createImageClient>;
const corral = (...args: string[]) => execFile(process.execPath, [path.join(packageRoot(), 'dist/src/cli/main.js'), ...args], { timeoutMs: 120_000 });
const ep = () => ['-r', `unix://${d.socket}`];

before(async () => {
  reg = await startRegistry();
  // Blobs trickle through this proxy so a pull lasts long enough to show progress.
  slow = await startProxy(reg.url, (r) => (/\/blobs\/sha256:/.test(r.path) && r.method === 'GET' ? { trickle: { chunkBytes: 256 * 1024, intervalMs: 60 } } : undefined));
  d = new TestDaemon();
  await d.start();
  client = createImageClient(d.socket);
});

after(async () => {
  client?.close();
  await d?.cleanup();
  await slow?.stop();
  await reg?.stop();
});

test('corral pull shows per-layer progress and prints the image ID; images, inspecti and rmi mirror crictl', async () => {
  const busybox = await busyboxImage();
  const extra = await buildLayer([{ path: 'big.bin', content: pseudoRandom(2_000_000) }]);
  const image = buildImage({ layers: [busybox.layers[0]!, extra] });
  await pushImage(reg, 'cli/two-layers', 'v1', image);
  const ref = `${slow.host}/cli/two-layers:v1`;

  const pull = await corral('pull', ...ep(), '--config', d.configFile, ref);
  assert.equal(pull.code, 0, pull.stderr);
  assert.equal(pull.stdout, `Image is up to date for ${image.config.digest}\n`);
  for (const layer of image.layers) {
    assert.match(pull.stderr, new RegExp(`layer ${layer.digest.slice(7, 19)}: [0-9.]+[kM]B downloaded`), 'progress for every layer');
  }

  const images = await corral('images', ...ep());
  assert.equal(images.code, 0, images.stderr);
  assert.match(images.stdout, /^IMAGE\s+TAG\s+IMAGE ID\s+SIZE/);
  assert.match(images.stdout, new RegExp(`${slow.host}/cli/two-layers\\s+v1\\s+${image.config.digest.slice(7, 20)}\\s+[0-9.]+MB`));
  assert.equal((await corral('images', ...ep(), '-q')).stdout, `${image.config.digest}\n`);

  const insp = await corral('inspecti', ...ep(), ref);
  assert.equal(insp.code, 0);
  const parsed = JSON.parse(insp.stdout);
  assert.equal(parsed.status.id, image.config.digest);
  assert.deepEqual(parsed.info.imageSpec.rootfs.diff_ids, image.config.json.rootfs.diff_ids);
  const missing = await corral('inspecti', ...ep(), `${slow.host}/cli/absent:1`);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /no such image/);

  const rmi = await corral('rmi', ...ep(), ref);
  assert.equal(rmi.code, 0, rmi.stderr);
  assert.equal(rmi.stdout, `Deleted: ${ref}\n`);
  assert.equal((await corral('images', ...ep(), '-q')).stdout, '');
});

test('corral pull of an unknown image fails with the registry\'s answer', async () => {
  const r = await corral('pull', ...ep(), `${reg.host}/cli/absent:1`);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, new RegExp(`${reg.host}/cli/absent:1.*(not found|NOT_FOUND)`, 'i'));
});

test('image import: an OCI layout archive (multi-arch index) and a docker save archive become images the daemon serves', async () => {
  const index = await multiArchIndex();
  const ociTar = path.join(d.dir, 'oci.tar');
  await fs.writeFile(ociTar, await ociLayoutArchive('example.com/imported/multi:1.0', index.index, [index.index, ...index.images.flatMap((i) => [i.manifest, ...i.blobs])]));
  const imp = await corral('image', 'import', '--config', d.configFile, ociTar);
  assert.equal(imp.code, 0, imp.stderr);
  const mine = index.images.find((i) => i.platform.architecture === (process.arch === 'x64' ? 'amd64' : process.arch))!;
  assert.match(imp.stdout, new RegExp(`Imported example.com/imported/multi:1.0 \\(${mine.config.digest}\\)`));
  const st = (await call<any>(client, 'ImageStatus', { image: { image: 'example.com/imported/multi:1.0' } })).image;
  assert.equal(st.id, mine.config.digest, 'the running daemon sees the import');
  assert.deepEqual(st.repoDigests, [`example.com/imported/multi@${index.index.digest}`]);

  const tiny = await tinyImage('from docker save\n', { format: 'docker', compression: 'none' });
  const dockerTar = path.join(d.dir, 'docker.tar');
  await fs.writeFile(dockerTar, await dockerSaveArchive(['imported/tiny:2'], tiny));
  const imp2 = await corral('image', 'import', '--config', d.configFile, dockerTar);
  assert.equal(imp2.code, 0, imp2.stderr);
  const st2 = (await call<any>(client, 'ImageStatus', { image: { image: 'docker.io/imported/tiny:2' } })).image;
  assert.equal(st2.id, tiny.config.digest);
  assert.deepEqual(st2.repoTags, ['docker.io/imported/tiny:2']);

  for (const id of [st.id, st2.id]) await call(client, 'RemoveImage', { image: { image: id } });
  assert.deepEqual(await fs.readdir(path.join(d.rootDir, 'images', 'snapshots')), []);
});

test('image import refuses an archive that is neither layout, naming the file', async () => {
  const junk = path.join(d.dir, 'junk.tar');
  await fs.writeFile(junk, await makeTar([{ path: 'hello.txt', content: 'hi' }]));
  const r = await corral('image', 'import', '--config', d.configFile, junk);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /junk\.tar: neither an OCI image layout/);
  const missingBlob = path.join(d.dir, 'partial.tar');
  const tiny = await tinyImage('x\n');
  await fs.writeFile(missingBlob, await ociLayoutArchive('example.com/partial:1', tiny.manifest, [tiny.manifest, tiny.config]));
  const r2 = await corral('image', 'import', '--config', d.configFile, missingBlob);
  assert.notEqual(r2.code, 0);
  assert.match(r2.stderr, new RegExp(`lacks blob ${tiny.layers[0]!.digest}`));
  assert.equal((await call<any>(client, 'ImageStatus', { image: { image: 'example.com/partial:1' } })).image, null);
});

/** An OCI image layout in a tar: oci-layout, index.json naming `top` as `name`, every blob under blobs/sha256. */
async function ociLayoutArchive(name: string, top: { mediaType: string; digest: string; size: number }, blobs: { digest: string; bytes: Buffer }[]): Promise<Buffer> {
  const index = { schemaVersion: 2, manifests: [{ mediaType: top.mediaType, digest: top.digest, size: top.size, annotations: { 'io.containerd.image.name': name, 'org.opencontainers.image.ref.name': name.split(':').pop() } }] };
  const seen = new Set<string>();
  const entries: TarEntry[] = [
    { path: 'oci-layout', content: JSON.stringify({ imageLayoutVersion: '1.0.0' }) },
    { path: 'index.json', content: JSON.stringify(index) },
    { path: 'blobs/', type: 'directory' },
    { path: 'blobs/sha256/', type: 'directory' },
  ];
  for (const b of blobs) {
    if (seen.has(b.digest)) continue;
    seen.add(b.digest);
    entries.push({ path: `blobs/sha256/${b.digest.slice(7)}`, content: b.bytes });
  }
  return makeTar(entries);
}

/** The classic `docker save` layout: manifest.json, <config hex>.json, <n>/layer.tar (uncompressed). */
async function dockerSaveArchive(repoTags: string[], image: TestImage): Promise<Buffer> {
  const configName = `${image.config.digest.slice(7)}.json`;
  const layerNames = image.layers.map((_, i) => `${i}/layer.tar`);
  return makeTar([
    { path: 'manifest.json', content: JSON.stringify([{ Config: configName, RepoTags: repoTags, Layers: layerNames }]) },
    { path: configName, content: image.config.bytes },
    ...image.layers.map((l, i): TarEntry => ({ path: layerNames[i]!, content: l.tar })),
  ]);
}

/** Incompressible, deterministic bytes. */
function pseudoRandom(n: number): Buffer {
  const out = Buffer.alloc(n);
  let x = 2463534242;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
