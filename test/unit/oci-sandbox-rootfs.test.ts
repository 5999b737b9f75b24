import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { builtinSandboxRootfsPath, ensureBuiltinSandboxRootfs, writeBundle } from '../../src/oci/sandbox-rootfs.js';
import type { OciSpec } from '../../src/oci/oci-types.js';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-rootfs-unit-'));
  try {
    await fn(dir);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

test('ensureBuiltinSandboxRootfs builds once, with /pause and the mount points', () =>
  withDir(async (dir) => {
    const bin = path.join(dir, 'pause-bin');
    await fs.writeFile(bin, 'v1-binary');
    const root = path.join(dir, 'root');
    const rootfs = await ensureBuiltinSandboxRootfs(root, bin);
    assert.equal(rootfs, builtinSandboxRootfsPath(root));
    assert.equal(rootfs, path.join(root, 'sandbox-image', 'builtin', 'rootfs'));
    const pause = await fs.stat(path.join(rootfs, 'pause'));
    assert.equal(pause.mode & 0o777, 0o755);
    assert.equal(await fs.readFile(path.join(rootfs, 'pause'), 'utf8'), 'v1-binary');
    for (const d of ['proc', 'dev', 'sys', 'dev/shm', 'etc']) assert.ok((await fs.stat(path.join(rootfs, d))).isDirectory(), d);
    for (const f of ['etc/resolv.conf', 'etc/hostname', 'etc/hosts']) assert.ok((await fs.stat(path.join(rootfs, f))).isFile(), f);
    // No temp dirs left behind.
    assert.deepEqual((await fs.readdir(path.dirname(rootfs))).sort(), ['pause.sha256', 'rootfs']);

    // Unchanged binary: nothing is rewritten (same inode).
    const ino = pause.ino;
    await ensureBuiltinSandboxRootfs(root, bin);
    assert.equal((await fs.stat(path.join(rootfs, 'pause'))).ino, ino);

    // Changed binary: /pause replaced in place; the rootfs dir itself stays.
    const dirIno = (await fs.stat(rootfs)).ino;
    await fs.writeFile(bin, 'v2-binary');
    await ensureBuiltinSandboxRootfs(root, bin);
    assert.equal(await fs.readFile(path.join(rootfs, 'pause'), 'utf8'), 'v2-binary');
    assert.equal((await fs.stat(rootfs)).ino, dirIno);

    // Concurrent callers share one build.
    const [a, b] = await Promise.all([ensureBuiltinSandboxRootfs(root, bin), ensureBuiltinSandboxRootfs(root, bin)]);
    assert.equal(a, b);

    // A deleted /pause is restored.
    await fs.rm(path.join(rootfs, 'pause'));
    await ensureBuiltinSandboxRootfs(root, bin);
    assert.equal(await fs.readFile(path.join(rootfs, 'pause'), 'utf8'), 'v2-binary');

    await assert.rejects(ensureBuiltinSandboxRootfs(root, path.join(dir, 'missing')), /cannot read the pause binary/);
  }));

test('writeBundle writes config.json with an absolute read-only root', () =>
  withDir(async (dir) => {
    const spec = { ociVersion: '1.0.2', root: { path: 'rootfs', readonly: false }, annotations: { a: 'b' } } as unknown as OciSpec;
    const file = await writeBundle(path.join(dir, 'bundle'), spec, '/var/lib/corral/sandbox-image/builtin/rootfs');
    assert.equal(file, path.join(dir, 'bundle', 'config.json'));
    const written = JSON.parse(await fs.readFile(file, 'utf8')) as OciSpec;
    assert.deepEqual(written.root, { path: '/var/lib/corral/sandbox-image/builtin/rootfs', readonly: true });
    assert.deepEqual(written.annotations, { a: 'b' });
    assert.equal(spec.root.path, 'rootfs', 'the input spec is not modified');
    await assert.rejects(writeBundle(path.join(dir, 'b2'), spec, 'relative/rootfs'), /absolute/);
  }));
