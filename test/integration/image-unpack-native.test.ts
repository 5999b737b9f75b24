/**
 * The native layer path (corral-unpack --layer): decompression, diff ID and tar parsing
 * in the helper. A corrupt or truncated gzip or zstd stream fails its layer with
 * LayerCorruptError and leaves no snapshot; a diff ID the config does not list is found
 * before the snapshot is committed; what the helper now reads itself (PAX owners and
 * times, several gzip members) comes through; root's files skip chown and chmod without
 * changing what ends up on disk.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { execFileSync } from 'node:child_process';
import { applyLayer } from '../../src/image/unpack.js';
import { ImageStore } from '../../src/image/image-store.js';
import { SnapshotStore, chainIds } from '../../src/image/snapshots.js';
import { silentLogger } from '../../src/util/log.js';
import { layerFromTar, makeTar, sha256, MT, type TarEntry } from '../helpers/test-images.js';
import { hostileTar } from '../helpers/hostile-tar.js';

let work: string;
let n = 0;

before(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-unpack-native-'));
});

after(async () => {
  await fs.rm(work, { recursive: true, force: true });
});

async function file(bytes: Buffer): Promise<string> {
  const f = path.join(work, `blob-${n++}`);
  await fs.writeFile(f, bytes);
  return f;
}

async function emptyDir(mode = 0o755): Promise<string> {
  const d = path.join(work, `dir-${n++}`);
  await fs.mkdir(d);
  await fs.chmod(d, mode);
  return d;
}

/** Unpacks `bytes` through SnapshotStore.prepare, as a pull does; the store's directory after it. */
async function prepareFails(bytes: Buffer, reason: RegExp): Promise<void> {
  const store = new SnapshotStore(path.join(work, `store-${n++}`));
  const blob = await file(bytes);
  await assert.rejects(
    store.prepare(chainIds([sha256('whatever')])[0]!, async (dir) => {
      await applyLayer(blob, MT.ociLayerGzip, dir);
    }),
    (e: Error) => {
      assert.equal(e.name, 'LayerCorruptError', e.message);
      assert.match(e.message, reason);
      return true;
    },
  );
  assert.deepEqual(await fs.readdir(store.dir), [], 'no snapshot and no temporary directory left');
}

const manyFiles = (count: number): TarEntry[] => Array.from({ length: count }, (_, i) => ({ path: `d/f${i}`, content: `file ${i} `.repeat(50 + (i % 300)) }));

test('a gzip stream corrupted in the middle fails the layer with zlib\'s reason, after some files were written, and leaves no snapshot', async () => {
  const gz = gzipSync(await makeTar(manyFiles(400)));
  const bad = Buffer.from(gz);
  for (let i = Math.floor(bad.length / 2); i < Math.floor(bad.length / 2) + 64; i++) bad[i] ^= 0x5a;
  await prepareFails(bad, /gzip: (invalid|incorrect|too many|unexpected)/);
});

test('a truncated gzip stream fails with "unexpected end of file"; garbage after the gzip stream is refused', async () => {
  const gz = gzipSync(await makeTar(manyFiles(50)));
  await prepareFails(gz.subarray(0, gz.length - 100), /unexpected end of file/);
  await prepareFails(Buffer.concat([gz, Buffer.from('trailing garbage')]), /data after the end of the compressed stream/);
});

test('a tar with a bad header checksum fails as corrupt', async () => {
  const tar = await makeTar([{ path: 'a', content: 'a' }, { path: 'b', content: 'b' }]);
  tar[512 * 2 + 10] ^= 0x01; // inside b's header
  await prepareFails(gzipSync(tar), /invalid header checksum/);
});

test('a corrupt zstd layer fails with zstd\'s verdict, not as a truncated tar', async () => {
  const layer = await layerFromTar(await makeTar(manyFiles(100)), 'zstd');
  const bad = Buffer.concat([layer.bytes.subarray(0, Math.floor(layer.bytes.length / 2))]);
  await assert.rejects(applyLayer(await file(bad), layer.mediaType, await emptyDir()), (e: Error) => e.name === 'LayerCorruptError' && /zstd/.test(e.message));
});

test('a valid zstd stream of a corrupt tar fails with the tar\'s reason (zstd, cut off by the helper, is not blamed)', async () => {
  const tar = await makeTar([...manyFiles(200), { path: 'a', content: 'a' }]);
  tar[3] ^= 0x01; // the first header: the helper stops at once, while zstd still has most of the tar to write
  const layer = await layerFromTar(tar, 'zstd');
  await assert.rejects(applyLayer(await file(layer.bytes), layer.mediaType, await emptyDir()), (e: Error) => e.name === 'LayerCorruptError' && /invalid header checksum/.test(e.message));
});

test('several gzip members unpack as one tar, and the diff ID is the sha256 of the whole tar', async () => {
  const tar = await makeTar(manyFiles(30));
  const cut = 512 * 7 + 100;
  const dir = await emptyDir();
  const applied = await applyLayer(await file(Buffer.concat([gzipSync(tar.subarray(0, cut)), gzipSync(tar.subarray(cut))])), MT.ociLayerGzip, dir);
  assert.equal(applied.diffId, sha256(tar));
  assert.equal(applied.size, tar.length);
  assert.equal(await fs.readFile(path.join(dir, 'd/f29'), 'utf8'), 'file 29 '.repeat(79));
});

test('PAX uid, gid and mtime records override the header (numbers a ustar header cannot hold)', async () => {
  const tar = await hostileTar([{ name: 'big-owner', content: 'x', uid: 1, gid: 2, pax: { uid: '3000000', gid: '3000001', mtime: '1234567890.25' } }]);
  const dir = await emptyDir();
  await applyLayer(await file(tar), MT.ociLayer, dir);
  const st = await fs.lstat(path.join(dir, 'big-owner'));
  assert.deepEqual([st.uid, st.gid], [3000000, 3000001]);
  assert.equal(st.mtimeMs, 1234567890250);
});

test('root\'s files keep their exact mode (setuid, read-only) and root\'s group, even under a setgid layer directory', async () => {
  const entries: TarEntry[] = [
    { path: 'bin/', type: 'directory', mode: 0o2755 },
    { path: 'bin/su', content: 'su', mode: 0o4755 },
    { path: 'bin/ro', content: 'read only', mode: 0o444 },
    { path: 'bin/wo', content: 'write only', mode: 0o200 },
    { path: 'bin/other', content: 'other', mode: 0o6750, uid: 5, gid: 6 },
  ];
  for (const rootMode of [0o755, 0o2755]) {
    const dir = await emptyDir(rootMode);
    await fs.chown(dir, 0, 4321);
    await applyLayer(await file(await makeTar(entries)), MT.ociLayer, dir);
    const at = (p: string) => fs.lstat(path.join(dir, p));
    const su = await at('bin/su');
    assert.deepEqual([su.mode & 0o7777, su.uid, su.gid], [0o4755, 0, 0], `su under ${rootMode.toString(8)}`);
    const ro = await at('bin/ro');
    assert.deepEqual([ro.mode & 0o7777, ro.uid, ro.gid], [0o444, 0, 0]);
    assert.equal(await fs.readFile(path.join(dir, 'bin/ro'), 'utf8'), 'read only');
    assert.equal((await at('bin/wo')).mode & 0o7777, 0o200);
    const other = await at('bin/other');
    assert.deepEqual([other.mode & 0o7777, other.uid, other.gid], [0o6750, 5, 6]);
    assert.equal((await at('bin')).mode & 0o7777, 0o2755);
  }
});

test('a layer whose diff ID is not the config\'s is found before its snapshot is committed: no snapshot left', async () => {
  const root = path.join(work, `images-${n++}`);
  const images = new ImageStore(root, silentLogger());
  const layer = await layerFromTar(await makeTar(manyFiles(20)), 'gzip');
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256('some other tar')] }, config: {} }));
  const configDigest = sha256(config);
  await images.content.ingest(layer.digest, layer.size, async () => Readable.from([layer.bytes]));
  await images.content.ingest(configDigest, config.length, async () => Readable.from([config]));
  await assert.rejects(images.unpackLayers('test/mismatch:1', configDigest, [{ digest: layer.digest, mediaType: layer.mediaType }]), /unpacks to .*, but the config says/);
  assert.deepEqual(await fs.readdir(images.snapshots.dir), [], 'no snapshot and no temporary directory left');
});

test('a small file the kernel refuses to create (no inodes left) fails the layer with the reason, from whichever thread wrote it; no hang', async (t) => {
  const mnt = path.join(work, `tiny-${n++}`);
  await fs.mkdir(mnt);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m,nr_inodes=64', 'tmpfs', mnt]);
  t.after(() => execFileSync('umount', ['--lazy', mnt]));
  const dir = path.join(mnt, 'layer');
  await fs.mkdir(dir);
  const started = Date.now();
  await assert.rejects(applyLayer(await file(gzipSync(await makeTar(manyFiles(300)))), MT.ociLayerGzip, dir), (e: Error) => {
    assert.equal(e.name, 'UnpackHelperError', e.message);
    assert.match(e.message, /failed: file "d\/f\d+": No space left on device/);
    return true;
  });
  assert.ok(Date.now() - started < 30_000);
});
