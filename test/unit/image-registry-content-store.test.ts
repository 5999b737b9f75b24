import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, openSync, promises as fs, readSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { BlobVerificationError, ContentStore } from '../../src/image/content-store.js';
import { waitFor } from '../helpers/wait.js';

const digestOf = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function withStore(fn: (store: ContentStore, root: string) => Promise<void>): Promise<void> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-cs-'));
  try {
    await fn(new ContentStore(root), root);
  } finally {
    await fs.rm(root, { recursive: true, force: true });
  }
}

const fromChunks = (...chunks: (Buffer | string)[]) => async () => Readable.from(chunks.map((c) => Buffer.from(c)));

test('ingest, has, size, read, list, delete', () =>
  withStore(async (store, root) => {
    const data = Buffer.from(JSON.stringify({ hello: 'world' }));
    const d = digestOf(data);
    assert.equal(await store.has(d), false);
    assert.equal(await store.size(d), null);
    assert.deepEqual(await store.list(), []);
    const progress: number[] = [];
    await store.ingest(d, data.length, fromChunks(data.subarray(0, 5), data.subarray(5)), (n) => progress.push(n));
    assert.deepEqual(progress, [5, data.length]);
    assert.equal(store.blobPath(d), path.join(root, 'blobs', 'sha256', d.slice(7)));
    assert.equal(await store.has(d), true);
    assert.equal(await store.size(d), data.length);
    assert.deepEqual(await store.readBuffer(d), data);
    assert.deepEqual(await store.readJson(d), { hello: 'world' });
    assert.deepEqual(await store.list(), [d]);
    // Present: open() is not called at all.
    await store.ingest(d, data.length, async () => assert.fail('open() called for a present blob'));
    await store.delete(d);
    await store.delete(d);
    assert.equal(await store.has(d), false);
    await assert.rejects(store.readBuffer(d), (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && /not in the content store/.test(e.message));
    // Size unknown is fine too.
    await store.ingest(digestOf('x'), undefined, fromChunks('x'));
    assert.equal(await store.size(digestOf('x')), 1);
  }));

test('digest and size mismatches are refused, naming expected and actual, leaving nothing', () =>
  withStore(async (store) => {
    const good = Buffer.from('the real content');
    const d = digestOf(good);
    const actual = digestOf('tampered content');
    await assert.rejects(store.ingest(d, undefined, fromChunks('tampered content')), (e: unknown) => {
      assert.ok(e instanceof BlobVerificationError);
      assert.equal(e.check, 'digest');
      assert.ok(e.message.includes(`expected ${d}`) && e.message.includes(`got ${actual}`), e.message);
      return true;
    });
    await assert.rejects(store.ingest(d, good.length + 5, fromChunks(good)), /size mismatch: expected 21 bytes, got 16/);
    await assert.rejects(store.ingest(d, 4, fromChunks(good)), (e: unknown) => e instanceof BlobVerificationError && e.check === 'size' && /expected 4 bytes, got 16 or more/.test(e.message));
    await assert.rejects(store.ingest('sha256:abc', 1, fromChunks('x')), /64 lowercase hexadecimal/);
    await assert.rejects(store.ingest(`sha512:${'a'.repeat(128)}`, 1, fromChunks('x')), /unsupported digest algorithm/);
    assert.equal(await store.has(d), false);
    assert.deepEqual(await fs.readdir(store.ingestDir), []);
    await store.ingest(d, good.length, fromChunks(good));
    assert.equal(await store.has(d), true);
  }));

test('a broken stream leaves no partial blob visible and no temp file', () =>
  withStore(async (store) => {
    const data = Buffer.alloc(256 * 1024, 7);
    const d = digestOf(data);
    let sawPartial = false;
    const p = store.ingest(d, data.length, async () => {
      const s = new PassThrough();
      s.write(data.subarray(0, 100 * 1024));
      setTimeout(async () => {
        // Mid-download: bytes are in the ingest dir, never at blobPath.
        sawPartial = (await fs.readdir(store.ingestDir)).length === 1;
        assert.equal(await store.has(d), false);
        s.destroy(Object.assign(new Error('connection reset'), { code: 'ECONNRESET' }));
      }, 50);
      return s;
    });
    await assert.rejects(p, /connection reset/);
    assert.ok(sawPartial, 'the partial download lived in the ingest dir');
    assert.equal(await store.has(d), false);
    await assert.rejects(fs.stat(store.blobPath(d)), { code: 'ENOENT' });
    assert.deepEqual(await fs.readdir(store.ingestDir), []);
    // A failing open() is cleaned up as well.
    await assert.rejects(store.ingest(d, data.length, async () => { throw new Error('cannot open'); }), /cannot open/);
    assert.deepEqual(await fs.readdir(store.ingestDir), []);
  }));

test('concurrent ingests of one digest share one download', () =>
  withStore(async (store) => {
    const data = Buffer.alloc(64 * 1024, 1);
    const d = digestOf(data);
    let opens = 0;
    const open = async () => {
      opens++;
      const s = new PassThrough();
      setTimeout(() => s.end(data), 30);
      return s;
    };
    await Promise.all([store.ingest(d, data.length, open), store.ingest(d, data.length, open), store.ingest(d, data.length, open)]);
    assert.equal(opens, 1);
    assert.equal(await store.has(d), true);
  }));

test('a waiter whose shared download failed tries itself', () =>
  withStore(async (store) => {
    const data = Buffer.from('retry me');
    const d = digestOf(data);
    let opens = 0;
    const first = store.ingest(d, data.length, async () => {
      opens++;
      const s = new PassThrough();
      setTimeout(() => s.destroy(new Error('first attempt broke')), 20);
      return s;
    });
    const second = store.ingest(d, data.length, async () => {
      opens++;
      return Readable.from([data]);
    });
    await assert.rejects(first, /first attempt broke/);
    await second;
    assert.equal(opens, 2);
    assert.equal(await store.has(d), true);
  }));

test('the first caller owns the download even when its presence check answers last (call order decides)', () =>
  withStore(async (store) => {
    // The flake behind "a waiter whose shared download failed tries itself": both callers
    // stat the blob path on the thread pool, and the stats may come back in either order.
    // Force the unlucky order: the first caller's stat answers after the second's.
    const data = Buffer.from('order matters');
    const d = digestOf(data);
    const realStat = fs.stat;
    let stats = 0;
    (fs as { stat: typeof fs.stat }).stat = (async (...args: Parameters<typeof fs.stat>) => {
      if (String(args[0]) === store.blobPath(d) && ++stats === 1) await new Promise((res) => setTimeout(res, 100));
      return realStat(...args);
    }) as typeof fs.stat;
    const order: string[] = [];
    try {
      const first = store.ingest(d, data.length, async () => {
        order.push('first');
        const s = new PassThrough();
        setTimeout(() => s.destroy(new Error('first attempt broke')), 20);
        return s;
      });
      const second = store.ingest(d, data.length, async () => {
        order.push('second');
        return Readable.from([data]);
      });
      await assert.rejects(first, /first attempt broke/);
      await second;
    } finally {
      (fs as { stat: typeof fs.stat }).stat = realStat;
    }
    assert.deepEqual(order, ['first', 'second'], 'the first caller downloads; the second joins it and tries itself after it failed');
    assert.equal(await store.has(d), true);
  }));

test('a waiter hears the shared download\'s progress; its signal stops only its own wait', () =>
  withStore(async (store) => {
    const data = Buffer.alloc(3000, 5);
    const d = digestOf(data);
    const s = new PassThrough();
    const owner = store.ingest(d, data.length, async () => s);
    const heard: number[] = [];
    const waiter = store.ingest(d, data.length, async () => assert.fail('the waiter must not download'), (n) => heard.push(n));
    const quitter = new AbortController();
    const gaveUp = store.ingest(d, data.length, async () => assert.fail('must not download'), undefined, { signal: quitter.signal });
    s.write(data.subarray(0, 1000));
    await waitFor(() => heard.length > 0, { what: 'the first bytes to reach the waiters' });
    quitter.abort(new Error('this caller gave up'));
    await assert.rejects(gaveUp, /this caller gave up/);
    s.end(data.subarray(1000));
    await owner;
    await waiter;
    assert.ok(heard.length >= 2 && heard[heard.length - 1] === data.length, `heard ${heard}`);
    assert.equal(await store.has(d), true);
  }));

test('an aborted download is torn down at once and leaves nothing', () =>
  withStore(async (store) => {
    const data = Buffer.alloc(1000, 9);
    const d = digestOf(data);
    const s = new PassThrough();
    const c = new AbortController();
    const p = store.ingest(d, data.length, async () => s, undefined, { signal: c.signal });
    s.write(data.subarray(0, 10)); // then nothing more: a stalled peer
    await new Promise((r) => setTimeout(r, 20));
    c.abort(new Error('deadline passed'));
    await assert.rejects(p, /deadline passed/);
    assert.ok(s.destroyed, 'the source stream was destroyed');
    assert.deepEqual(await fs.readdir(store.ingestDir), []);
    assert.equal(await store.has(d), false);
  }));

test('an endless body is refused at the first chunk past its size, not read on', () =>
  withStore(async (store) => {
    const data = Buffer.from('exactly this');
    const d = digestOf(data);
    let pulled = 0;
    // An endless body: it must not be read to its end (there is none).
    const endless = new Readable({
      read() {
        pulled++;
        this.push(Buffer.alloc(4, 0x61));
      },
    });
    await assert.rejects(store.ingest(d, data.length, async () => endless), (e: unknown) => e instanceof BlobVerificationError && e.check === 'size' && /expected 12 bytes, got \d+ or more/.test(e.message));
    assert.ok(endless.destroyed);
    assert.ok(pulled * 4 <= 64 * 1024, `read ${pulled * 4} bytes: no more than one stream buffer past the size`);
    assert.deepEqual(await fs.readdir(store.ingestDir), []);
  }));

test('stale partial files of dead processes are removed on first use; live ones stay', async () => {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-cs-'));
  try {
    const ingest = path.join(root, 'ingest');
    await fs.mkdir(ingest, { recursive: true });
    const hex = 'b'.repeat(64);
    const dead = path.join(ingest, `${hex}.999999999.abcdef.partial`);
    const junk = path.join(ingest, 'junk.tmp');
    const live = path.join(ingest, `${hex}.1.abcdef.partial`); // PID 1 is alive
    const old = path.join(ingest, `${hex}.1.012345.partial`);
    for (const f of [dead, junk, live, old]) await fs.writeFile(f, 'partial');
    const longAgo = new Date(Date.now() - 48 * 3600 * 1000);
    await fs.utimes(old, longAgo, longAgo);
    const store = new ContentStore(root);
    await store.ingest(digestOf('y'), 1, fromChunks('y'));
    assert.deepEqual((await fs.readdir(ingest)).sort(), [path.basename(live)]);
  } finally {
    await fs.rm(root, { recursive: true, force: true });
  }
});

/**
 * A download tap that reads the temp file once the download ended (what the tap was told
 * is written) and reports `says` as its digest of it.
 */
function hashingTap(says: (seen: Buffer) => { digest: string; size: number } | undefined) {
  const state = { seen: Buffer.alloc(0), written: 0 };
  const events: string[] = [];
  return {
    state,
    events,
    start: (file: string) => ({
      written: (n: number) => void (state.written = n),
      end: (size: number) => void events.push(`end ${size}`),
      abort: () => void events.push('abort'),
      digest: async () => says((state.seen = (await fs.readFile(file)).subarray(0, state.written))),
    }),
  };
}

test('a tap that hashes the download decides the digest check: its mismatch is refused, its match stored', () =>
  withStore(async (store) => {
    const data = Buffer.from('layer bytes, hashed by the unpack helper');
    const d = digestOf(data);
    // The tap saw other bytes than the digest promises (as the helper would report): refused, nothing kept.
    const lying = hashingTap((b) => ({ digest: digestOf(Buffer.concat([b, Buffer.from('!')])), size: b.length }));
    store.watchNextDownload(d, lying.start);
    await assert.rejects(store.ingest(d, data.length, fromChunks(data.subarray(0, 7), data.subarray(7))), (e: unknown) => e instanceof BlobVerificationError && e.check === 'digest');
    assert.deepEqual(lying.events, [`end ${data.length}`, 'abort']);
    assert.equal(await store.has(d), false);
    assert.deepEqual(await fs.readdir(store.ingestDir), []);
    // The tap's sha256 of what it was given: the blob is stored, byte for byte.
    const honest = hashingTap((b) => ({ digest: digestOf(b), size: b.length }));
    store.watchNextDownload(d, honest.start);
    await store.ingest(d, data.length, fromChunks(data.subarray(0, 7), data.subarray(7)));
    assert.deepEqual(honest.state.seen, data);
    assert.deepEqual(honest.events, [`end ${data.length}`]);
    assert.deepEqual(await store.readBuffer(d), data);
  }));

test('a tap that could not hash the whole download (failed, or saw fewer bytes) leaves the check to the stored file', () =>
  withStore(async (store) => {
    const data = Buffer.from('a layer its helper refused half way');
    const d = digestOf(data);
    for (const says of [() => undefined, (b: Buffer) => ({ digest: digestOf(b.subarray(0, 4)), size: 4 })]) {
      const t = hashingTap(says);
      store.watchNextDownload(d, t.start);
      await store.ingest(d, data.length, fromChunks(data.subarray(0, 4), data.subarray(4)));
      assert.deepEqual(await store.readBuffer(d), data);
      await store.delete(d);
      // The file is hashed: other bytes than the digest's are refused even with no word from the tap.
      const t2 = hashingTap(says);
      store.watchNextDownload(d, t2.start);
      const other = Buffer.from(data).fill(0x7a, 0, 1); // "z", not "a": same size, other bytes
      await assert.rejects(store.ingest(d, data.length, fromChunks(other)), (e: unknown) => e instanceof BlobVerificationError && e.check === 'digest');
      assert.equal(await store.has(d), false);
    }
  }));

test('a tap is told a length only once the file holds those bytes, in order, and the final size at the end', () =>
  withStore(async (store) => {
    // 3 MiB in 64 KiB chunks: several write batches.
    const data = Buffer.alloc(3 << 20);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i, i);
    const d = digestOf(data);
    const told: number[] = [];
    const problems: string[] = [];
    let ended: number | undefined;
    let file = '';
    store.watchNextDownload(d, (f) => {
      file = f;
      return {
        written: (n) => {
          told.push(n);
          // What the helper would read now: the file's first n bytes are the blob's.
          const fd = openSync(f, 'r');
          try {
            const got = Buffer.alloc(n);
            const r = readSync(fd, got, 0, n, 0);
            if (r !== n || !got.equals(data.subarray(0, n))) problems.push(`told ${n}, the file holds ${r} bytes${r === n ? ' that differ' : ''}`);
          } finally {
            closeSync(fd);
          }
        },
        end: (size) => void (ended = size),
        abort: () => void problems.push('aborted'),
      };
    });
    const chunks: Buffer[] = [];
    for (let off = 0; off < data.length; off += 65536) chunks.push(data.subarray(off, off + 65536));
    await store.ingest(d, data.length, async () => Readable.from(chunks));
    assert.ok(file.startsWith(store.ingestDir), file);
    assert.deepEqual(problems, []);
    assert.ok(told.length >= 3, `told ${told.length} times`);
    assert.deepEqual([...told].sort((a, b) => a - b), told);
    assert.equal(told.at(-1), data.length);
    assert.equal(ended, data.length);
  }));

test('onDownloaded is told once the bytes are in, while the check still waits for the tap that hashes them', () =>
  withStore(async (store) => {
    const data = Buffer.from('a layer whose unpack is still running');
    const d = digestOf(data);
    let finishUnpack!: () => void;
    const unpacked = new Promise<void>((resolve) => (finishUnpack = resolve));
    store.watchNextDownload(d, () => ({
      written: () => {},
      end: () => {},
      abort: () => {},
      digest: async () => {
        await unpacked;
        return { digest: d, size: data.length };
      },
    }));
    let downloaded = false;
    let stored = false;
    const ingest = store.ingest(d, data.length, fromChunks(data), undefined, { onDownloaded: () => (downloaded = true) }).then(() => (stored = true));
    await waitFor(() => downloaded, { what: 'onDownloaded' });
    assert.equal(stored, false);
    assert.equal(await store.has(d), false); // not in place before its digest is known
    finishUnpack();
    await ingest;
    assert.equal(await store.has(d), true);
  }));
