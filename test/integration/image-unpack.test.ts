/**
 * Layer unpacking and overlay root filesystems on the real filesystem (root needed for
 * owners, device nodes and trusted.* xattrs): every kind of tar entry kept, OCI
 * whiteouts turned into overlayfs ones, hostile archives refused with nothing written,
 * and the unpacked snapshots mounted as an overlay with the deletions in effect.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { applyLayer } from '../../src/image/unpack.js';
import { SnapshotStore, chainIds, mountOverlayRootfs, unmountOverlayRootfs } from '../../src/image/snapshots.js';
import { busyboxEntries, layerFromTar, makeTar, sha256, whiteoutEntries, MT, type TarEntry, type TestLayer } from '../helpers/test-images.js';

let work: string;

before(async () => {
  work = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-unpack-'));
});

after(async () => {
  for (const line of (await fs.readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    const mnt = line.split(' ')[4];
    if (mnt?.startsWith(work)) execFileSync('umount', ['--lazy', mnt]);
  }
  await fs.rm(work, { recursive: true, force: true });
});

let n = 0;
async function layerFile(layer: TestLayer): Promise<string> {
  const f = path.join(work, `layer-${n++}`);
  await fs.writeFile(f, layer.bytes);
  return f;
}
async function emptyDir(): Promise<string> {
  const d = path.join(work, `dir-${n++}`);
  await fs.mkdir(d);
  return d;
}
async function unpackEntries(entries: TarEntry[], compression: 'none' | 'gzip' | 'zstd' = 'gzip') {
  const layer = await layerFromTar(await makeTar(entries), compression);
  const dir = await emptyDir();
  const applied = await applyLayer(await layerFile(layer), layer.mediaType, dir);
  return { dir, applied, layer };
}

const T1 = new Date('2021-03-04T05:06:07Z');
const T2 = new Date('2022-02-02T02:02:02Z');

test('every entry kind keeps its type, mode, owner and mtime; the diff ID is the sha256 of the tar', async () => {
  const entries: TarEntry[] = [
    { path: 'shared/', type: 'directory', mode: 0o2775, uid: 1000, gid: 1001, mtime: T1 },
    { path: 'shared/tool', content: '#!/bin/sh\n', mode: 0o4755, uid: 1000, gid: 1001, mtime: T2 },
    { path: 'shared/link-to-tool', type: 'symlink', linkname: 'tool', uid: 1000, gid: 1001, mtime: T1 },
    { path: 'shared/hard', type: 'link', linkname: 'shared/tool' },
    { path: 'dev/', type: 'directory' },
    { path: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666, uid: 5, gid: 6, mtime: T2 },
    { path: 'dev/loop9', type: 'block-device', devmajor: 7, devminor: 9, mode: 0o660 },
    { path: 'dev/pipe', type: 'fifo', mode: 0o640 },
    { path: 'tmp/', type: 'directory', mode: 0o1777 },
  ];
  for (const compression of ['none', 'gzip', 'zstd'] as const) {
    const { dir, applied, layer } = await unpackEntries(entries, compression);
    assert.equal(applied.diffId, layer.diffId, compression);
    assert.equal(applied.diffId, sha256(layer.tar));
    assert.equal(applied.size, layer.tar.length);
    const shared = await fs.lstat(path.join(dir, 'shared'));
    assert.equal(shared.mode & 0o7777, 0o2775);
    assert.deepEqual([shared.uid, shared.gid], [1000, 1001]);
    assert.equal(shared.mtime.getTime(), T1.getTime(), 'directory mtime kept after its children were written');
    const tool = await fs.lstat(path.join(dir, 'shared/tool'));
    assert.equal(tool.mode & 0o7777, 0o4755, 'setuid kept despite chown');
    assert.equal(tool.mtime.getTime(), T2.getTime());
    const link = await fs.lstat(path.join(dir, 'shared/link-to-tool'));
    assert.ok(link.isSymbolicLink());
    assert.equal(await fs.readlink(path.join(dir, 'shared/link-to-tool')), 'tool');
    assert.equal(link.mtime.getTime(), T1.getTime());
    assert.deepEqual([link.uid, link.gid], [1000, 1001]);
    const hard = await fs.lstat(path.join(dir, 'shared/hard'));
    assert.equal(hard.ino, tool.ino, 'hard link shares the inode');
    const nul = await fs.lstat(path.join(dir, 'dev/null'));
    assert.ok(nul.isCharacterDevice());
    assert.equal(nul.rdev, (1 << 8) | 3);
    assert.equal(nul.mode & 0o7777, 0o666);
    assert.deepEqual([nul.uid, nul.gid, nul.mtime.getTime()], [5, 6, T2.getTime()]);
    const loop = await fs.lstat(path.join(dir, 'dev/loop9'));
    assert.ok(loop.isBlockDevice());
    assert.equal(loop.rdev, (7 << 8) | 9);
    const pipe = await fs.lstat(path.join(dir, 'dev/pipe'));
    assert.ok(pipe.isFIFO());
    assert.equal(pipe.mode & 0o7777, 0o640);
    assert.equal((await fs.lstat(path.join(dir, 'tmp'))).mode & 0o7777, 0o1777);
  }
});

test('OCI whiteouts become overlayfs whiteouts: a 0/0 character device and an opaque directory', async () => {
  const { dir } = await unpackEntries(whiteoutEntries());
  const wh = await fs.lstat(path.join(dir, 'etc/group'));
  assert.ok(wh.isCharacterDevice());
  assert.equal(wh.rdev, 0);
  await assert.rejects(fs.lstat(path.join(dir, 'etc/.wh.group')), /ENOENT/);
  assert.equal(getXattr(path.join(dir, 'home'), 'trusted.overlay.opaque'), 'y');
  await assert.rejects(fs.lstat(path.join(dir, 'home/.wh..wh..opq')), /ENOENT/);
  assert.equal(await fs.readFile(path.join(dir, 'home/new/file'), 'utf8'), 'new\n', 'entries of this layer stay in an opaque dir');
});

test('a later entry for the same path replaces the earlier one', async () => {
  const { dir } = await unpackEntries([
    { path: 'x', content: 'first' },
    { path: 'x/', type: 'directory' },
    { path: 'x/inner', content: 'in' },
    { path: 'y', type: 'symlink', linkname: '/etc/passwd' },
    { path: 'y', content: 'plain file, not written through the symlink' },
  ]);
  assert.ok((await fs.lstat(path.join(dir, 'x'))).isDirectory());
  assert.equal(await fs.readFile(path.join(dir, 'x/inner'), 'utf8'), 'in');
  assert.ok((await fs.lstat(path.join(dir, 'y'))).isFile());
  assert.equal(await fs.readFile(path.join(dir, 'y'), 'utf8'), 'plain file, not written through the symlink');
});

test('file data comes through byte for byte, whatever its size and the compression', async () => {
  const sizes = [0, 1, 511, 512, 65535, 65536, 65537, 262144, 262145, 1 << 20, (3 << 20) + 7];
  const files = sizes.map((size, i) => ({ path: `data/f${i}`, content: randomBytes(size), mode: 0o640, uid: 7, gid: 8, mtime: T2 }));
  const small = Array.from({ length: 500 }, (_, i) => ({ path: `small/${i % 10}/s${i}`, content: `small ${i}\n`.repeat(i % 7) }));
  for (const compression of ['none', 'gzip', 'zstd'] as const) {
    const { dir } = await unpackEntries([...files, ...small], compression);
    for (const f of [...files, ...small]) {
      assert.equal(sha256(await fs.readFile(path.join(dir, f.path))), sha256(Buffer.from(f.content)), `${compression} ${f.path}`);
    }
    const st = await fs.lstat(path.join(dir, 'data/f10'));
    assert.deepEqual([st.mode & 0o7777, st.uid, st.gid, st.mtime.getTime()], [0o640, 7, 8, T2.getTime()]);
  }
});

test('binary xattrs written by GNU tar are kept byte for byte', async () => {
  const src = await emptyDir();
  await fs.writeFile(path.join(src, 'capped'), 'x');
  const value = Buffer.from([0x01, 0x00, 0x00, 0x02, 0xff, 0x20, 0x00, 0x00, 0x80, 0x0a]);
  execFileSync('python3', ['-c', 'import os,sys; os.setxattr(sys.argv[1], "trusted.corraltest", bytes.fromhex(sys.argv[2]))', path.join(src, 'capped'), value.toString('hex')]);
  const tarFile = path.join(work, `gnu-${n++}.tar`);
  execFileSync('tar', ['--xattrs', '--xattrs-include=trusted.*', '--format=posix', '-C', src, '-cf', tarFile, 'capped']);
  const layer = await layerFromTar(await fs.readFile(tarFile), 'none');
  const dir = await emptyDir();
  await applyLayer(await layerFile(layer), layer.mediaType, dir);
  assert.equal(getXattrHex(path.join(dir, 'capped'), 'trusted.corraltest'), value.toString('hex'));
});

const hostile: [string, TarEntry[], RegExp][] = [
  ['a ".." entry', [{ path: '../escaped', content: 'x', raw: true }], /'\.\.' component/],
  ['a ".." in the middle', [{ path: 'a/../../escaped', content: 'x', raw: true }], /'\.\.' component/],
  ['an absolute entry', [{ path: '/escaped', content: 'x', raw: true }], /absolute path/],
  ['a path through a symlink', [{ path: 'sneaky', type: 'symlink', linkname: '/tmp' }, { path: 'sneaky/escaped', content: 'x' }], /through the symlink "sneaky"/],
  ['a relative symlink out', [{ path: 'up', type: 'symlink', linkname: '../..' }, { path: 'up/escaped/', type: 'directory' }], /through the symlink "up"/],
  ['a hard link to a file outside', [{ path: 'pw', type: 'link', linkname: '../../../../etc/passwd', raw: true }], /'\.\.' component/],
  ['a hard link to an absolute path', [{ path: 'pw', type: 'link', linkname: '/etc/passwd' }], /absolute path/],
  ['a hard link through a symlink', [{ path: 'etc', type: 'symlink', linkname: '/etc' }, { path: 'pw', type: 'link', linkname: 'etc/passwd' }], /through the symlink "etc"/],
  ['a whiteout through a symlink', [{ path: 'etc', type: 'symlink', linkname: '/etc' }, { path: 'etc/.wh.passwd', content: '' }], /through the symlink "etc"/],
];

for (const [what, entries, reason] of hostile) {
  test(`hostile layer refused, nothing written: ${what}`, async () => {
    const store = new SnapshotStore(path.join(work, `store-${n++}`));
    const layer = await layerFromTar(await makeTar([{ path: 'innocent', content: 'first entry is fine' }, ...entries]));
    const file = await layerFile(layer);
    const chain = chainIds([layer.diffId]);
    await assert.rejects(
      store.prepare(chain[0]!, async (dir) => {
        await applyLayer(file, layer.mediaType, dir);
      }),
      (e: Error) => e.name === 'LayerRefusedError' && reason.test(e.message),
    );
    assert.deepEqual(await fs.readdir(store.dir), [], 'no snapshot and no temporary directory left');
    await assert.rejects(fs.lstat(path.join(work, 'escaped')), /ENOENT/);
    await assert.rejects(fs.lstat('/tmp/escaped'), /ENOENT/);
  });
}

test('unsupported media types are refused by name', async () => {
  const layer = await layerFromTar(await makeTar([{ path: 'a', content: 'a' }]));
  await assert.rejects(applyLayer(await layerFile(layer), 'application/vnd.oci.image.layer.v1.tar+gzip+encrypted', await emptyDir()), /unsupported layer media type .*encrypted/);
  await assert.rejects(applyLayer(await layerFile(layer), MT.ociConfig, await emptyDir()), /unsupported layer media type/);
});

test('a corrupt layer fails with the decompressor\'s reason', async () => {
  const layer = await layerFromTar(await makeTar([{ path: 'a', content: 'a'.repeat(10000) }]));
  const file = path.join(work, `corrupt-${n++}`);
  await fs.writeFile(file, Buffer.concat([layer.bytes.subarray(0, 20), Buffer.alloc(200, 7)]));
  await assert.rejects(applyLayer(file, layer.mediaType, await emptyDir()), /incorrect header check|invalid|unexpected end/i);
});

test('concurrent prepares of one chain unpack it once', async () => {
  const store = new SnapshotStore(path.join(work, `store-${n++}`));
  const layer = await layerFromTar(await makeTar([{ path: 'a', content: 'a' }]));
  const file = await layerFile(layer);
  let fills = 0;
  const chain = chainIds([layer.diffId])[0]!;
  const fill = async (dir: string) => {
    fills++;
    await applyLayer(file, layer.mediaType, dir);
  };
  await Promise.all([store.prepare(chain, fill), store.prepare(chain, fill), store.prepare(chain, fill)]);
  await store.prepare(chain, fill);
  assert.equal(fills, 1);
  assert.deepEqual(await store.list(), [chain]);
  await store.remove(chain);
  await store.remove(chain);
  assert.deepEqual(await fs.readdir(store.dir), []);
});

test('chain IDs follow the OCI definition', () => {
  const a = `sha256:${'a'.repeat(64)}`;
  const b = `sha256:${'b'.repeat(64)}`;
  assert.deepEqual(chainIds([a, b]), [a, sha256(`${a} ${b}`)]);
});

test('overlay root filesystem: lower snapshots with whiteouts applied, writes go to the upper layer, read-only refuses them', async () => {
  const store = new SnapshotStore(path.join(work, `store-${n++}`));
  const base = await layerFromTar(await makeTar(busyboxEntries()));
  const top = await layerFromTar(await makeTar(whiteoutEntries()));
  const chain = chainIds([base.diffId, top.diffId]);
  for (const [i, layer] of [base, top].entries()) {
    const file = await layerFile(layer);
    await store.prepare(chain[i]!, async (dir) => {
      await applyLayer(file, layer.mediaType, dir);
    });
  }
  const rw = { chain, layerDir: path.join(work, `ctr-${n++}`), target: path.join(work, `rootfs-${n++}`) };
  await mountOverlayRootfs(store, rw);
  try {
    await assert.rejects(fs.stat(path.join(rw.target, 'etc/group')), /ENOENT/, 'whited-out file is gone');
    assert.equal(await fs.readFile(path.join(rw.target, 'etc/passwd'), 'utf8').then((s) => s.startsWith('root:')), true);
    assert.deepEqual(await fs.readdir(path.join(rw.target, 'home')), ['new'], 'opaque dir hides the lower home/app');
    assert.equal(await fs.readFile(path.join(rw.target, 'data/b'), 'utf8'), 'hard linked content\n');
    assert.equal(execFileSync('chroot', [rw.target, '/bin/sh', '-c', 'echo hi from $(cat /etc/added)']).toString(), 'hi from added by layer 2\n');
    await fs.writeFile(path.join(rw.target, 'etc/new-file'), 'written');
    assert.equal(await fs.readFile(path.join(rw.layerDir, 'upper/etc/new-file'), 'utf8'), 'written');
    await assert.rejects(fs.stat(path.join(store.fsDir(chain[1]!), 'etc/new-file')), /ENOENT/, 'snapshots stay untouched');
  } finally {
    await unmountOverlayRootfs(rw.target);
  }
  await unmountOverlayRootfs(rw.target); // not mounted any more: fine
  const ro = { chain: [chain[0]!], layerDir: path.join(work, `ctr-${n++}`), target: path.join(work, `rootfs-${n++}`), readonly: true };
  await mountOverlayRootfs(store, ro);
  try {
    assert.ok((await fs.stat(path.join(ro.target, 'bin/busybox'))).isFile(), 'a single-layer image mounts');
    await assert.rejects(fs.writeFile(path.join(ro.target, 'x'), 'x'), /EROFS/);
  } finally {
    await unmountOverlayRootfs(ro.target);
  }
  const mounts = await fs.readFile('/proc/self/mountinfo', 'utf8');
  assert.ok(!mounts.includes(work), 'nothing left mounted');
});

function getXattrHex(file: string, name: string): string {
  return execFileSync('python3', ['-c', 'import os,sys; print(os.getxattr(sys.argv[1], sys.argv[2], follow_symlinks=False).hex())', file, name]).toString().trim();
}
function getXattr(file: string, name: string): string {
  return Buffer.from(getXattrHex(file, name), 'hex').toString();
}
