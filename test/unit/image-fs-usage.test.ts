/**
 * ImageFsInfo's figures without a walk per call: the image store's usage is recorded per
 * snapshot when it is unpacked and per blob when first seen, and must equal what a real
 * `du`-like walk of the store counts, across additions, removals and a restart (a new
 * tracker over the same directory). Containers' writable layers are sampled.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ImageStoreUsage, SampledDirUsage, SNAPSHOT_USAGE_FILE, dirUsage } from '../../src/image/fs-usage.js';
import { SnapshotStore } from '../../src/image/snapshots.js';

const hex = (n: number) => n.toString(16).padStart(64, '0');
const chain = (n: number) => `sha256:${hex(n)}`;

async function withStore(fn: (root: string, snapshots: SnapshotStore) => Promise<void>): Promise<void> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-fsusage-'));
  try {
    await fs.mkdir(path.join(root, 'blobs', 'sha256'), { recursive: true });
    await fs.mkdir(path.join(root, 'ingest'), { recursive: true });
    await fs.writeFile(path.join(root, 'images.json'), '{"version":1,"images":{}}\n');
    await fn(root, new SnapshotStore(root));
  } finally {
    await fs.rm(root, { recursive: true, force: true });
  }
}

/** A layer of `files` files in a few directories, one hard link and one symlink. */
async function fillLayer(dir: string, files: number, seed: number): Promise<void> {
  for (let i = 0; i < files; i++) {
    const sub = path.join(dir, `d${i % 4}`);
    await fs.mkdir(sub, { recursive: true });
    await fs.writeFile(path.join(sub, `f${i}`), Buffer.alloc(((seed * 7 + i * 131) % 9000) + 1, i));
  }
  await fs.link(path.join(dir, 'd0', 'f0'), path.join(dir, 'hard'));
  await fs.symlink('d0/f0', path.join(dir, 'soft'));
}

async function addBlob(root: string, n: number, bytes: number): Promise<void> {
  await fs.writeFile(path.join(root, 'blobs', 'sha256', hex(n)), Buffer.alloc(bytes, n));
}

test('the tracked usage equals a walk of the store across unpacks, blobs, removals and a restart', async () => {
  await withStore(async (root, snapshots) => {
    const usage = new ImageStoreUsage(root);
    assert.deepEqual(await usage.current(), await dirUsage(root), 'empty store');
    for (let i = 1; i <= 3; i++) {
      await snapshots.prepare(chain(i), (dir) => fillLayer(dir, 20 * i, i));
      await addBlob(root, 100 + i, 5000 * i);
    }
    assert.deepEqual(await usage.current(), await dirUsage(root), 'after three unpacks');
    await snapshots.remove(chain(2));
    await fs.rm(path.join(root, 'blobs', 'sha256', hex(102)));
    assert.deepEqual(await usage.current(), await dirUsage(root), 'after removals');
    const restarted = new ImageStoreUsage(root);
    await restarted.warm();
    assert.deepEqual(await restarted.current(), await dirUsage(root), 'a new tracker over the same store');
  });
});

test('a blob or snapshot added right after a call (within one file-time tick) is counted by the next call', async () => {
  await withStore(async (root, snapshots) => {
    const usage = new ImageStoreUsage(root);
    for (let i = 1; i <= 20; i++) {
      await usage.current();
      await addBlob(root, 200 + i, 100 * i);
      if (i % 5 === 0) await snapshots.prepare(chain(i), (dir) => fillLayer(dir, 3, i));
      assert.deepEqual(await usage.current(), await dirUsage(root), `round ${i}`);
    }
  });
});

test('a call reads the recorded usage of a snapshot, never walks it', async () => {
  await withStore(async (root, snapshots) => {
    await snapshots.prepare(chain(1), (dir) => fillLayer(dir, 30, 1));
    const usage = new ImageStoreUsage(root);
    const before = await usage.current();
    assert.deepEqual(before, await dirUsage(root));
    // Files appear inside the snapshot behind the store's back (nothing writes to a finished
    // snapshot; this only tells a walk from a record). A walk sees them; the record does not.
    await fillLayer(path.join(snapshots.fsDir(chain(1)), 'extra'), 200, 9);
    const walked = await dirUsage(root);
    assert.ok(walked.inodes >= before.inodes + 200);
    assert.deepEqual(await usage.current(), before, 'a fresh tracker would walk: so must not this one');
    assert.deepEqual(await new ImageStoreUsage(root).current(), before, 'nor one after a restart: the record is on disk');
  });
});

test('a snapshot an older Corral left without a usage record is walked once and recorded', async () => {
  await withStore(async (root, snapshots) => {
    await snapshots.prepare(chain(1), (dir) => fillLayer(dir, 25, 3));
    await fs.rm(path.join(snapshots.dir, hex(1), SNAPSHOT_USAGE_FILE));
    const expected = await dirUsage(root); // without the record
    const usage = new ImageStoreUsage(root);
    const first = await usage.current();
    assert.ok(first.inodes === expected.inodes + 1, 'the record it wrote counts itself');
    assert.deepEqual(first, await dirUsage(root));
    const record = JSON.parse(await fs.readFile(path.join(snapshots.dir, hex(1), SNAPSHOT_USAGE_FILE), 'utf8'));
    assert.equal(record.inodes, (await dirUsage(path.join(snapshots.dir, hex(1)))).inodes);
  });
});

test('snapshots being unpacked, partial ingests and trash do not count until finished', async () => {
  await withStore(async (root, snapshots) => {
    await snapshots.prepare(chain(1), (dir) => fillLayer(dir, 10, 1));
    const usage = new ImageStoreUsage(root);
    const settled = await usage.current();
    let during: { bytes: number; inodes: number } | undefined;
    await snapshots.prepare(chain(2), async (dir) => {
      await fillLayer(dir, 50, 2);
      await fs.writeFile(path.join(root, 'ingest', `${hex(7)}.1.abc.partial`), Buffer.alloc(10_000));
      during = await usage.current();
    });
    assert.ok(during);
    // Only the directory entries' growth can differ; none of the 50 files in flight counts.
    assert.ok(during.inodes < settled.inodes + 5, `in flight: ${during.inodes} vs ${settled.inodes}`);
    await fs.rm(path.join(root, 'ingest', `${hex(7)}.1.abc.partial`));
    assert.deepEqual(await usage.current(), await dirUsage(root));
  });
});

test('SampledDirUsage answers the last sample and refreshes it in the background once it is old', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-sampled-'));
  try {
    let now = 1_000_000;
    const sampled = new SampledDirUsage(dir, 10_000, () => now);
    const first = await sampled.current();
    assert.deepEqual(first.usage, await dirUsage(dir));
    assert.equal(first.atMs, now);
    await fs.writeFile(path.join(dir, 'a'), Buffer.alloc(8192));
    now += 5_000;
    assert.deepEqual((await sampled.current()).usage, first.usage, 'young enough: the same sample, no walk');
    now += 6_000;
    assert.deepEqual((await sampled.current()).usage, first.usage, 'old: answered at once, refreshed behind');
    await sampled.refresh();
    const later = await sampled.current();
    assert.deepEqual(later.usage, await dirUsage(dir));
    assert.equal(later.usage.inodes, first.usage.inodes + 1);
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('dirUsage counts like du: hard links once, symlinks as themselves, a missing directory as nothing', async () => {
  await withStore(async (root) => {
    const dir = path.join(root, 'x');
    await fs.mkdir(dir);
    await fs.writeFile(path.join(dir, 'a'), Buffer.alloc(10_000));
    await fs.link(path.join(dir, 'a'), path.join(dir, 'b'));
    await fs.symlink('a', path.join(dir, 'c'));
    const st = await Promise.all(['', 'a', 'c'].map((n) => fs.lstat(path.join(dir, n))));
    assert.deepEqual(await dirUsage(dir), { inodes: 3, bytes: st.reduce((n, s) => n + s.blocks * 512, 0) });
    assert.deepEqual(await dirUsage(path.join(root, 'missing')), { bytes: 0, inodes: 0 });
  });
});
