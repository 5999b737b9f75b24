import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { ImageStore } from '../../src/image/image-store.js';
import { silentLogger } from '../../src/util/log.js';

const digestOf = (b: string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function withImageStore(fn: (store: ImageStore) => Promise<void>): Promise<void> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-gc-hold-'));
  try {
    await fn(new ImageStore(root, silentLogger()));
  } finally {
    await fs.rm(root, { recursive: true, force: true });
  }
}

async function put(store: ImageStore, content: string): Promise<string> {
  const d = digestOf(content);
  await store.content.ingest(d, content.length, async () => Readable.from([Buffer.from(content)]));
  return d;
}

test('a pull\'s hold keeps exactly its blobs and layers; everything else is collected while it holds', () =>
  withImageStore(async (store) => {
    const mine = await put(store, 'held by the pull');
    const loose = await put(store, 'nobody wants this');
    await fs.mkdir(path.join(store.snapshots.dir, `${'c'.repeat(64)}`, 'fs'), { recursive: true });
    await fs.mkdir(path.join(store.snapshots.dir, `${'d'.repeat(64)}`, 'fs'), { recursive: true });
    const hold = store.holdContent();
    await hold.blobs([mine]);
    await hold.chains([`sha256:${'c'.repeat(64)}`]);
    await store.collect(() => new Set());
    assert.equal(await store.content.has(mine), true, 'held blob kept');
    assert.equal(await store.content.has(loose), false, 'the rest is collected while the pull holds');
    assert.deepEqual(await store.snapshots.list(), [`sha256:${'c'.repeat(64)}`]);
    // Two holds of one blob: it stays until both are released.
    const other = store.holdContent();
    await other.blobs([mine]);
    hold.release();
    hold.release(); // twice is harmless
    await store.collect(() => new Set());
    assert.equal(await store.content.has(mine), true);
    other.release();
    await store.collect(() => new Set());
    assert.equal(await store.content.has(mine), false);
    assert.deepEqual(await store.snapshots.list(), []);
  }));

test('holding a blob the collector is deleting waits for the deletion: "held, then present" stays true', () =>
  withImageStore(async (store) => {
    const d = await put(store, 'being deleted');
    const realDelete = store.content.delete.bind(store.content);
    let deletionStarted!: () => void;
    const started = new Promise<void>((r) => (deletionStarted = r));
    store.content.delete = async (digest: string) => {
      deletionStarted();
      await new Promise((r) => setTimeout(r, 100));
      await realDelete(digest);
    };
    const collecting = store.collect(() => new Set());
    await started;
    // A pull protects the blob now, then looks whether it is present (and skips the download if so).
    const hold = store.holdContent();
    await hold.blobs([d]);
    const present = await store.content.has(d);
    await collecting;
    assert.equal(present, false, 'the hold waited for the deletion under way, so the pull downloads the blob again');
    hold.release();
  }));
