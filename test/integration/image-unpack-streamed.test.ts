/**
 * Layers unpacked from their download as the bytes arrive (ImageStore.unpackLayers with
 * ContentStore taps, corral-unpack --layer-follow): the unpack runs before the blob is whole,
 * and a snapshot is committed only once the blob's digest and the diff ID both match;
 * a mismatch or a download that breaks off after files were written leaves no snapshot,
 * no scratch directory and no partial blob.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { ImageStore } from '../../src/image/image-store.js';
import { applyLayer, applyLayerFromDownload } from '../../src/image/unpack.js';
import { sharedSpawner } from '../../src/util/exec.js';
import { execFileSync } from 'node:child_process';
import { hostileTar } from '../helpers/hostile-tar.js';
import { chainIds } from '../../src/image/snapshots.js';
import { silentLogger } from '../../src/util/log.js';
import { buildImage, buildLayer, layerFromTar, sha256, type TestImage, type TarEntry } from '../helpers/test-images.js';
import { waitFor } from '../helpers/wait.js';

let root: string;
let image: TestImage;

before(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-unpack-streamed-'));
  // Random content: the gzip stays about as large as the tar (3.3 MB), so its first half
  // is more than one 1 MiB write batch of the content store, and holds files.
  const entries: TarEntry[] = [{ path: 'd/', type: 'directory' }];
  for (let i = 0; i < 800; i++) entries.push({ path: `d/f${i}`, content: randomBytes(4096) });
  image = buildImage({ layers: [await buildLayer(entries)] });
});

after(async () => {
  if (root) await fs.rm(root, { recursive: true, force: true });
});

async function freshStore(): Promise<ImageStore> {
  const dir = await fs.mkdtemp(path.join(root, 'store-'));
  const store = new ImageStore(dir, silentLogger());
  await store.content.ingest(image.config.digest, image.config.size, async () => Readable.from([image.config.bytes]));
  return store;
}

/** Scratch and temporary snapshot directories (".tmp-...") under the store's snapshots. */
async function tempDirs(store: ImageStore): Promise<string[]> {
  return (await fs.readdir(store.snapshots.dir).catch(() => [] as string[])).filter((n) => n.startsWith('.tmp-'));
}

async function leftovers(store: ImageStore): Promise<string[]> {
  const partials = await fs.readdir(store.content.ingestDir).catch(() => [] as string[]);
  return [...(await tempDirs(store)), ...partials];
}

/** Waits until a scratch directory holds unpacked files (the unpack runs while the download is incomplete). */
async function untilUnpackingStarted(store: ImageStore): Promise<void> {
  for (let i = 0; i < 200; i++) {
    for (const t of await tempDirs(store)) {
      const files = await fs.readdir(path.join(store.snapshots.dir, t, 'd')).catch(() => [] as string[]);
      if (files.length > 0) return;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.fail('no layer files were unpacked while the download was incomplete');
}

/**
 * One "pull": unpackLayers told about the layer before its download, then the download
 * fed by hand — the first half, a wait until the unpack wrote files, then `rest`.
 */
async function pullWith(store: ImageStore, claimedDigest: string, rest: (s: PassThrough, second: Buffer) => void) {
  const layer = image.layers[0]!;
  const source = new PassThrough();
  let stored!: Promise<void>;
  const unpacking = store.unpackLayers('test/streamed:latest', image.config.digest, [{ digest: claimedDigest, mediaType: layer.mediaType }], async (d) => {
    if (d === claimedDigest) await stored;
  });
  stored = store.content.ingest(claimedDigest, layer.size, async () => source);
  const half = layer.bytes.length >> 1;
  for (let off = 0; off < half; off += 65536) source.write(layer.bytes.subarray(off, Math.min(off + 65536, half)));
  await untilUnpackingStarted(store);
  rest(source, layer.bytes.subarray(half));
  return { stored, unpacking };
}

test('a layer is unpacked while it downloads and committed once its digest and diff ID match', async () => {
  const store = await freshStore();
  const layer = image.layers[0]!;
  const { stored, unpacking } = await pullWith(store, layer.digest, (s, second) => s.end(second));
  await stored;
  await unpacking;
  const [chain] = chainIds([layer.diffId]);
  const files = await fs.readdir(path.join(store.snapshots.fsDir(chain!), 'd'));
  assert.equal(files.length, 800);
  const f7 = await fs.readFile(path.join(store.snapshots.fsDir(chain!), 'd', 'f7'));
  assert.equal(f7.length, 4096);
  assert.ok(await store.content.has(layer.digest));
  assert.deepEqual(await leftovers(store), []);
});

test('a digest mismatch found after the unpack wrote files leaves no snapshot, scratch directory or partial blob', async () => {
  const store = await freshStore();
  const layer = image.layers[0]!;
  const wrong = sha256(Buffer.concat([layer.bytes, Buffer.from('x')])); // same size, other digest
  const { stored, unpacking } = await pullWith(store, wrong, (s, second) => s.end(second));
  await assert.rejects(stored, /digest mismatch/);
  await assert.rejects(unpacking, /digest mismatch/);
  assert.deepEqual(await store.snapshots.list(), []);
  assert.deepEqual(await leftovers(store), []);
  assert.equal(await store.content.has(wrong), false);
});

test('a download that breaks off in the middle of the unpack fails cleanly, leaving nothing', async () => {
  const store = await freshStore();
  const layer = image.layers[0]!;
  const { stored, unpacking } = await pullWith(store, layer.digest, (s) => s.destroy(new Error('connection reset by the test')));
  await assert.rejects(stored, /connection reset by the test/);
  await assert.rejects(unpacking, /connection reset by the test/);
  assert.deepEqual(await store.snapshots.list(), []);
  assert.deepEqual(await leftovers(store), []);
  assert.equal(await store.content.has(layer.digest), false);
});

test('two pulls of one image at once share the download and commit one snapshot', async () => {
  const store = await freshStore();
  const layer = image.layers[0]!;
  const source = new PassThrough();
  let opened = 0;
  const pulls = [0, 1].map(() => {
    let stored!: Promise<void>;
    const unpacking = store.unpackLayers('test/streamed:latest', image.config.digest, [{ digest: layer.digest, mediaType: layer.mediaType }], async () => stored);
    stored = store.content.ingest(layer.digest, layer.size, async () => {
      opened++;
      return source;
    });
    return { stored, unpacking };
  });
  for (let off = 0; off < layer.bytes.length; off += 65536) source.write(layer.bytes.subarray(off, off + 65536));
  source.end();
  await Promise.all(pulls.flatMap((p) => [p.stored, p.unpacking]));
  assert.equal(opened, 1);
  const [chain] = chainIds([layer.diffId]);
  assert.equal((await fs.readdir(path.join(store.snapshots.fsDir(chain!), 'd'))).length, 800);
  assert.deepEqual(await leftovers(store), []);
});

test('the unpack helper hashes every byte it reads: its sha256 of a streamed layer is the blob digest, trailing gzip member included', async () => {
  const layer = image.layers[0]!;
  // A second gzip member after the first (gzip -c a b does that): part of the blob, and read.
  const bytes = Buffer.concat([layer.bytes, gzipSync(Buffer.alloc(0))]);
  const work = await fs.mkdtemp(path.join(root, 'direct-'));
  const dir = path.join(work, 'fs');
  const file = path.join(work, 'blob.partial');
  const fh = await fs.open(file, 'wx');
  const s = applyLayerFromDownload(dir, file);
  try {
    for (let off = 0; off < bytes.length; off += 300_000) {
      const piece = bytes.subarray(off, off + 300_000);
      await fh.write(piece);
      s.tap.written(off + piece.length);
    }
  } finally {
    await fh.close();
  }
  s.tap.end(bytes.length);
  const applied = await s.result;
  assert.equal(applied.diffId, layer.diffId);
  assert.deepEqual(applied.input, { digest: sha256(bytes), size: bytes.length });
  assert.deepEqual(await s.tap.digest!(), { digest: sha256(bytes), size: bytes.length });
  assert.equal((await fs.readdir(path.join(dir, 'd'))).length, 800);
});

test('a layer its helper refuses half way is still stored, checked from the file, and refused with nothing left', async () => {
  // The refused entry first, then more than the pipe and the slack hold: the helper exits
  // long before the end of the download, which it therefore cannot hash.
  const tar = await hostileTar([
    { name: '../escape', content: 'x' },
    { name: 'big', content: randomBytes(8 << 20) },
  ]);
  const layer = await layerFromTar(tar);
  const hostile = buildImage({ layers: [layer] });
  const store = new ImageStore(await fs.mkdtemp(path.join(root, 'store-')), silentLogger());
  await store.content.ingest(hostile.config.digest, hostile.config.size, async () => Readable.from([hostile.config.bytes]));
  let stored!: Promise<void>;
  const unpacking = store.unpackLayers('test/refused:latest', hostile.config.digest, [{ digest: layer.digest, mediaType: layer.mediaType }], async () => stored);
  const refused = assert.rejects(unpacking, /refusing layer entry "\.\.\/escape"/); // handled now: it may settle while the blob is checked below
  const chunks: Buffer[] = [];
  for (let off = 0; off < layer.bytes.length; off += 65536) chunks.push(layer.bytes.subarray(off, off + 65536));
  stored = store.content.ingest(layer.digest, layer.size, async () => Readable.from(chunks));
  await stored;
  assert.equal(await store.content.has(layer.digest), true);
  assert.deepEqual(await fs.readFile(store.content.blobPath(layer.digest)), layer.bytes);
  await refused;
  assert.deepEqual(await store.snapshots.list(), []);
  assert.deepEqual(await leftovers(store), []);
});

/** PIDs of corral-unpack helpers whose command line names `dir`. */
async function unpackHelpersUnder(dir: string): Promise<number[]> {
  const pids: number[] = [];
  for (const name of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const argv = (await fs.readFile(`/proc/${name}/cmdline`).catch(() => Buffer.alloc(0))).toString().split('\0');
    if (argv[0]?.endsWith('corral-unpack') && argv.some((a) => a.startsWith(dir))) pids.push(Number(name));
  }
  return pids;
}

test('a download finishes at network speed while its unpack is stopped: the helper follows the file, it is not fed', async () => {
  // 12 MiB of random files: far more than a pipe and any queue in front of a helper hold.
  const entries: TarEntry[] = [{ path: 'big/', type: 'directory' }];
  for (let i = 0; i < 6; i++) entries.push({ path: `big/r${i}`, content: randomBytes(2 << 20) });
  const layer = await buildLayer(entries);
  const big = buildImage({ layers: [layer] });
  const store = new ImageStore(await fs.mkdtemp(path.join(root, 'store-')), silentLogger());
  await store.content.ingest(big.config.digest, big.config.size, async () => Readable.from([big.config.bytes]));
  const source = new PassThrough();
  let stored!: Promise<void>;
  const unpacking = store.unpackLayers('test/follow:latest', big.config.digest, [{ digest: layer.digest, mediaType: layer.mediaType }], async () => stored);
  let downloaded = false;
  stored = store.content.ingest(layer.digest, layer.size, async () => source, undefined, { onDownloaded: () => (downloaded = true) });
  const stopped: number[] = [];
  try {
    // More than one write batch: the helper starts; then it is stopped before the rest comes.
    const first = 3 << 19;
    source.write(layer.bytes.subarray(0, first));
    let helpers: number[] = [];
    await waitFor(async () => (helpers = await unpackHelpersUnder(store.snapshots.dir)).length === 1, { what: 'the unpack helper', timeoutMs: 10_000 });
    process.kill(helpers[0]!, 'SIGSTOP');
    stopped.push(helpers[0]!);
    for (let off = first; off < layer.bytes.length; off += 65536) source.write(layer.bytes.subarray(off, Math.min(off + 65536, layer.bytes.length)));
    source.end();
    await waitFor(() => downloaded, { what: 'the download to end while its unpack is stopped', timeoutMs: 10_000 });
    // Nothing is committed meanwhile: the blob waits for the helper's digest of it.
    assert.equal(await store.content.has(layer.digest), false);
    process.kill(stopped.pop()!, 'SIGCONT');
    await stored;
    await unpacking;
  } finally {
    for (const pid of stopped) process.kill(pid, 'SIGCONT');
    source.destroy();
    await Promise.allSettled([stored, unpacking]);
  }
  const [chain] = chainIds([layer.diffId]);
  assert.deepEqual(await fs.readFile(path.join(store.snapshots.fsDir(chain!), 'big', 'r5')), entries[6]!.content);
  assert.deepEqual(await leftovers(store), []);
});

/** Bytes the process read with read(2) and pread(2) so far (/proc/PID/io rchar). */
async function bytesRead(pid: number): Promise<number> {
  return Number(/^rchar: (\d+)$/m.exec(await fs.readFile(`/proc/${pid}/io`, 'utf8'))![1]);
}

test('the helper reads a followed file only up to the length announced: not the rest of the file, not what follows the end', async () => {
  const layer = image.layers[0]!;
  const work = await fs.mkdtemp(path.join(root, 'announced-'));
  const dir = path.join(work, 'fs');
  const file = path.join(work, 'blob.partial');
  // The whole blob and 1 MiB of junk after it are in the file from the start.
  await fs.writeFile(file, Buffer.concat([layer.bytes, randomBytes(1 << 20)]));
  const s = applyLayerFromDownload(dir, file);
  const half = layer.bytes.length >> 1;
  let pid = 0;
  try {
    s.tap.written(half);
    await waitFor(async () => ([pid = 0] = await unpackHelpersUnder(dir)).length === 1 && pid > 0, { what: 'the unpack helper' });
    await waitFor(async () => (await bytesRead(pid)) >= half, { what: 'the helper to read the announced half' });
    await new Promise((r) => setTimeout(r, 300)); // it would read on now if it did not wait
    // The announced half, plus the announcements on its stdin and OpenSSL's config file
    // (12 KiB): not the other 1.6 MB of the blob, nor the junk, both already in the file.
    const read = await bytesRead(pid);
    assert.ok(read <= half + (64 << 10), `read ${read} bytes, ${half} announced`);
    s.tap.written(layer.bytes.length);
    s.tap.end(layer.bytes.length);
    const applied = await s.result;
    assert.deepEqual(applied.input, { digest: layer.digest, size: layer.bytes.length });
    assert.equal(applied.diffId, layer.diffId);
  } finally {
    s.tap.abort(new Error('test over'));
    await s.result.catch(() => undefined);
  }
});

test('a pull cancelled after its download ended, while its unpack still lags behind, stops the helper and leaves nothing', async () => {
  const layer = image.layers[0]!;
  const store = await freshStore();
  const cancel = new AbortController();
  let stored!: Promise<void>;
  const unpacking = store.unpackLayers('test/cancelled:latest', image.config.digest, [{ digest: layer.digest, mediaType: layer.mediaType }], async () => stored);
  let downloaded = false;
  const source = new PassThrough();
  stored = store.content.ingest(layer.digest, layer.size, async () => source, undefined, { signal: cancel.signal, onDownloaded: () => (downloaded = true) });
  const stopped: number[] = [];
  try {
    source.write(layer.bytes.subarray(0, 3 << 19));
    let helpers: number[] = [];
    await waitFor(async () => (helpers = await unpackHelpersUnder(store.snapshots.dir)).length === 1, { what: 'the unpack helper' });
    process.kill(helpers[0]!, 'SIGSTOP'); // it lags: stopped until it is killed
    stopped.push(helpers[0]!);
    source.end(layer.bytes.subarray(3 << 19));
    await waitFor(() => downloaded, { what: 'the download to end' });
    cancel.abort(new Error('pull cancelled by the test'));
    await assert.rejects(stored, /pull cancelled by the test/);
    await assert.rejects(unpacking, /pull cancelled by the test/);
    await waitFor(async () => (await unpackHelpersUnder(store.snapshots.dir)).length === 0, { what: 'the helper to be gone' });
  } finally {
    for (const pid of stopped) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // gone, as it should be
      }
    }
    await Promise.allSettled([stored, unpacking]);
  }
  assert.deepEqual(await store.snapshots.list(), []);
  assert.deepEqual(await leftovers(store), []);
  assert.equal(await store.content.has(layer.digest), false);
});

/** The parent PID of a process (/proc/PID/stat, field 4). */
async function parentOf(pid: number): Promise<number> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
}

test('the helper is started by corral-spawner, not by a fork of this process: followed layers and plain --layer runs', async () => {
  const layer = image.layers[0]!;
  const work = await fs.mkdtemp(path.join(root, 'spawned-'));
  // Followed: the helper waits for announcements meanwhile.
  const followed = applyLayerFromDownload(path.join(work, 'followed'), path.join(work, 'blob'));
  try {
    await fs.writeFile(path.join(work, 'blob'), layer.bytes);
    followed.tap.written(1000);
    let pid = 0;
    await waitFor(async () => ([pid = 0] = await unpackHelpersUnder(path.join(work, 'followed'))).length === 1 && pid > 0, { what: 'the followed unpack helper' });
    assert.ok(sharedSpawner()?.pid, 'the shared spawner runs');
    assert.equal(await parentOf(pid), sharedSpawner()!.pid);
    followed.tap.written(layer.bytes.length);
    followed.tap.end(layer.bytes.length);
    assert.equal((await followed.result).diffId, layer.diffId);
  } finally {
    followed.tap.abort(new Error('test over'));
    await followed.result.catch(() => undefined);
  }
  // Plain: the blob is a FIFO, so the helper waits in open() until the test writes it.
  const fifo = path.join(work, 'blob.fifo');
  execFileSync('mkfifo', [fifo]);
  const plainDir = path.join(work, 'plain');
  await fs.mkdir(plainDir);
  const plain = applyLayer(fifo, layer.mediaType, plainDir);
  plain.catch(() => undefined);
  let writer: Promise<void> | undefined;
  try {
    let pid = 0;
    await waitFor(async () => ([pid = 0] = await unpackHelpersUnder(plainDir)).length === 1 && pid > 0, { what: 'the plain unpack helper' });
    assert.equal(await parentOf(pid), sharedSpawner()!.pid);
  } finally {
    writer = fs.writeFile(fifo, layer.bytes); // also lets a helper that was not found end
  }
  await writer;
  assert.equal((await plain).diffId, layer.diffId);
});
