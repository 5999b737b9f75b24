/**
 * Content-addressed blob storage: every manifest, index, config and layer Corral has
 * lives at `<root>/blobs/sha256/<hex>`, written once and verified on the way in.
 *
 * A blob is streamed into `<root>/ingest/<hex>.<pid>.<random>.partial` while its sha256
 * and length are computed, fsynced, and renamed into place only when both match, so
 * nothing unverified or partial is ever visible at blobPath(). Concurrent ingests of the
 * same digest in one process share one download: the first caller downloads (decided
 * when it calls, before any await, so call order decides), later ones wait for it, hear
 * its progress, and try themselves if it fails. Temp files left by a process that died
 * are removed the first time the store is used.
 */
import { createReadStream, promises as fs } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { digestHex, validateDigest } from './reference.js';
import { processAlive } from '../util/process.js';
import { fsyncDir } from '../util/fs.js';
import { MAX_JSON_BLOB_BYTES, SafeReadError, readRegularFile } from '../util/safe-read.js';

/** A blob did not have the digest or size it was ingested under. */
export class BlobVerificationError extends Error {
  constructor(
    readonly digest: string,
    readonly check: 'digest' | 'size',
    readonly expected: string | number,
    readonly actual: string | number,
  ) {
    super(
      check === 'digest'
        ? `blob ${digest}: digest mismatch: expected ${expected}, got ${actual}`
        : `blob ${digest}: size mismatch: expected ${expected} bytes, got ${actual}${typeof actual === 'number' && actual > Number(expected) ? ' or more' : ''}`,
    );
    this.name = 'BlobVerificationError';
  }
}

/** A JSON blob over its cap: the image cannot be used (Corral will not allocate it). */
export class BlobTooLargeError extends Error {
  constructor(
    readonly digest: string,
    reason: string,
    readonly limit: number,
  ) {
    super(`blob ${digest} ${reason}: an image's index, manifest and config may be at most ${limit} bytes, so this image cannot be used`);
    this.name = 'BlobTooLargeError';
  }
}

/** p, or the signal's reason once it aborts. */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

async function sha256OfFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(file), hash);
  return `sha256:${hash.digest('hex')}`;
}

/** A partial file older than this is stale even if its writer's PID is alive (PID reuse). */
const STALE_INGEST_MS = 24 * 3600 * 1000;
/** Bytes of a download gathered before one write to its temp file. */
const WRITE_BATCH = 1 << 20;
const WRITE_BATCH_MS = 50;
/** How often a waiter joins a failed shared ingest of the same digest before giving up. */
const MAX_SHARED_ATTEMPTS = 3;

/** A download under way, shared by every concurrent ingest of its digest. */
interface SharedIngest {
  done: Promise<void>;
  /** Progress listeners of the callers waiting on it (each hears the running byte count). */
  listeners: Set<(bytes: number) => void>;
}

/**
 * Follows a blob's download through its temp file (named when the tap is made), before
 * the bytes are verified: a layer can be unpacked (into a scratch directory) as it
 * arrives. The download never waits for a tap, and a tap never fails it.
 */
export interface DownloadTap {
  /** The first `bytes` bytes of the temp file are written (called after each write; must not throw). */
  written(bytes: number): void;
  /**
   * All `size` bytes are in the file and the blob's size matches (its digest is checked
   * after, if the tap hashes the bytes, else it already matched; abort() follows a mismatch).
   */
  end(size: number): void;
  /**
   * A tap that hashes the bytes it reads (the layer's unpack helper reads each one
   * anyway): the sha256 and length of all of them once they are all in, or undefined if
   * it could not tell (then the stored file is hashed). The download does not hash them.
   */
  digest?(): Promise<{ digest: string; size: number } | undefined>;
  /** The download failed or was cancelled: the bytes written are not the blob. */
  abort(reason: unknown): void;
}

export interface IngestOptions {
  /**
   * Stops this caller: its own download is torn down (the stream destroyed, nothing
   * kept), or it stops waiting for another caller's, which goes on.
   */
  signal?: AbortSignal;
  /**
   * Told when this caller's own download has every byte in its temp file (not when it
   * waits on another's): what follows (the digest, from a tap that may still be unpacking,
   * the fsync, the rename) needs no more from the network.
   */
  onDownloaded?: () => void;
}

export class ContentStore {
  readonly blobsDir: string;
  readonly ingestDir: string;
  private readonly inflight = new Map<string, SharedIngest>();
  /** Who wants to see the next download of a digest (taken when that download starts). */
  private readonly downloadWatchers = new Map<string, Set<(file: string) => DownloadTap | undefined>>();
  private prepared: Promise<void> | undefined;

  constructor(readonly root: string) {
    this.blobsDir = path.join(root, 'blobs', 'sha256');
    this.ingestDir = path.join(root, 'ingest');
  }

  /** Where a blob lives (whether or not it is present). */
  blobPath(digest: string): string {
    return path.join(this.blobsDir, digestHex(digest));
  }

  async has(digest: string): Promise<boolean> {
    return (await this.size(digest)) !== null;
  }

  /** The blob's size in bytes, or null when it is not present. */
  async size(digest: string): Promise<number | null> {
    try {
      const st = await fs.stat(this.blobPath(digest));
      return st.isFile() ? st.size : null;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  /**
   * Writes a blob from a stream, verifying sha256 and size while streaming. Present blobs
   * return at once without calling open(). A concurrent ingest of the same digest awaits
   * the one under way instead of downloading again (and tries itself if that one fails).
   * Throws BlobVerificationError on a digest or size mismatch (reading stops at the first
   * byte past the expected size); nothing is left behind. onProgress gets the running
   * byte count of the download this caller owns or waits on.
   */
  async ingest(
    digest: string,
    expectedSize: number | undefined,
    open: () => Promise<NodeJS.ReadableStream>,
    onProgress?: (bytes: number) => void,
    opts: IngestOptions = {},
  ): Promise<void> {
    validateDigest(digest, 'blob digest');
    if (expectedSize !== undefined && (!Number.isSafeInteger(expectedSize) || expectedSize < 0)) {
      throw new Error(`blob ${digest}: invalid expected size ${expectedSize}`);
    }
    const { signal } = opts;
    let sharedFailures = 0;
    for (;;) {
      signal?.throwIfAborted();
      // No await between looking for a shared download and registering ours.
      const running = this.inflight.get(digest);
      if (running) {
        try {
          await this.waitFor(running, onProgress, signal);
          return;
        } catch (e) {
          if (signal?.aborted || ++sharedFailures >= MAX_SHARED_ATTEMPTS) throw e;
          continue;
        }
      }
      const shared: SharedIngest = { done: undefined as unknown as Promise<void>, listeners: new Set() };
      if (onProgress) shared.listeners.add(onProgress);
      const report = (n: number) => {
        for (const l of shared.listeners) l(n);
      };
      shared.done = (async () => {
        await this.prepare();
        if (await this.has(digest)) return;
        await this.write(digest, expectedSize, open, report, signal, opts.onDownloaded);
      })().finally(() => {
        if (this.inflight.get(digest) === shared) this.inflight.delete(digest);
      });
      this.inflight.set(digest, shared);
      return shared.done;
    }
  }

  /**
   * Asks to follow the next download of `digest` in this process: `start` is called with
   * its temp file when it begins and may return a tap. Returns the function that withdraws
   * the request (a no-op once a download took it).
   */
  watchNextDownload(digest: string, start: (file: string) => DownloadTap | undefined): () => void {
    let set = this.downloadWatchers.get(digest);
    if (!set) this.downloadWatchers.set(digest, (set = new Set()));
    set.add(start);
    return () => {
      const s = this.downloadWatchers.get(digest);
      s?.delete(start);
      if (s?.size === 0) this.downloadWatchers.delete(digest);
    };
  }

  private takeDownloadTaps(digest: string, file: string): DownloadTap[] {
    const starts = this.downloadWatchers.get(digest);
    this.downloadWatchers.delete(digest);
    const taps: DownloadTap[] = [];
    for (const start of starts ?? []) {
      const tap = start(file);
      if (tap) taps.push(tap);
    }
    return taps;
  }

  /** Waits for another caller's download, hearing its progress, until it ends or `signal` aborts. */
  private waitFor(shared: SharedIngest, onProgress: ((bytes: number) => void) | undefined, signal: AbortSignal | undefined): Promise<void> {
    if (onProgress) shared.listeners.add(onProgress);
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(signal!.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      shared.done.then(resolve, reject).finally(() => {
        signal?.removeEventListener('abort', onAbort);
        if (onProgress) shared.listeners.delete(onProgress);
      });
    });
  }

  private async write(
    digest: string,
    expectedSize: number | undefined,
    open: () => Promise<NodeJS.ReadableStream>,
    onProgress?: (bytes: number) => void,
    signal?: AbortSignal,
    onDownloaded?: () => void,
  ): Promise<void> {
    const hex = digestHex(digest);
    const tmp = path.join(this.ingestDir, `${hex}.${process.pid}.${randomBytes(6).toString('hex')}.partial`);
    const hash = createHash('sha256');
    let written = 0;
    const fh = await fs.open(tmp, 'wx', 0o644);
    let closed = false;
    let source: NodeJS.ReadableStream | undefined;
    const onAbort = () => (source as { destroy?: (e?: Error) => void } | undefined)?.destroy?.(signal!.reason);
    signal?.addEventListener('abort', onAbort, { once: true });
    const taps = this.takeDownloadTaps(digest, tmp);
    const hasher = taps.find((t) => t.digest);
    try {
      signal?.throwIfAborted();
      source = await open();
      signal?.throwIfAborted();
      // Chunks are written in batches of up to WRITE_BATCH bytes: one thread-pool write per
      // batch, not per network chunk (16-64 KiB each); a slow download is still written at
      // least every WRITE_BATCH_MS, so the temp file's size shows its progress (corral pull).
      // Taps are told of each batch once it is in the file: they read it from there, so no
      // Buffer waits on a slower reader, and the download is paced by network and disk only.
      let batch: Buffer[] = [];
      let batched = 0;
      let inFile = 0;
      let flushedAt = Date.now();
      const flush = async () => {
        flushedAt = Date.now();
        if (batched === 0) return;
        const b = batch;
        const bytes = batched;
        batch = [];
        batched = 0;
        // One writev for the batch; a short write (rare) is finished from one buffer.
        const n = (await fh.writev(b)).bytesWritten;
        if (n !== bytes) {
          const rest = Buffer.concat(b, bytes).subarray(n);
          let off = 0;
          while (off < rest.length) off += (await fh.write(rest, off, rest.length - off)).bytesWritten;
        }
        inFile += bytes;
        for (const t of taps) t.written(inFile);
      };
      for await (const piece of source as AsyncIterable<Buffer | string>) {
        signal?.throwIfAborted();
        const chunk = typeof piece === 'string' ? Buffer.from(piece) : piece;
        written += chunk.length;
        if (expectedSize !== undefined && written > expectedSize) {
          throw new BlobVerificationError(digest, 'size', expectedSize, written);
        }
        if (!hasher) hash.update(chunk);
        batch.push(chunk);
        batched += chunk.length;
        if (batched >= WRITE_BATCH || Date.now() - flushedAt >= WRITE_BATCH_MS) await flush();
        onProgress?.(written);
      }
      await flush();
      if (expectedSize !== undefined && written !== expectedSize) {
        throw new BlobVerificationError(digest, 'size', expectedSize, written);
      }
      onDownloaded?.();
      if (!hasher) {
        const actual = `sha256:${hash.digest('hex')}`;
        if (actual !== digest) throw new BlobVerificationError(digest, 'digest', digest, actual);
      }
      // An unpack following the download finishes while the blob is fsynced.
      for (const t of taps) t.end(written);
      const [, seen] = await Promise.all([fh.sync(), hasher && untilAborted(hasher.digest!(), signal)]);
      if (hasher) {
        // The helper's sha256 of what it read is the blob's if it read it all; else the file is hashed.
        const actual = seen && seen.size === written ? seen.digest : await sha256OfFile(tmp);
        if (actual !== digest) throw new BlobVerificationError(digest, 'digest', digest, actual);
      }
      await fh.close();
      closed = true;
      await fs.rename(tmp, path.join(this.blobsDir, hex));
    } catch (e) {
      for (const t of taps) t.abort(e);
      if (!closed) await fh.close().catch(() => undefined);
      await fs.rm(tmp, { force: true });
      (source as { destroy?: () => void } | undefined)?.destroy?.();
      throw signal?.aborted ? signal.reason : e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    await fsyncDir(this.blobsDir);
  }

  /**
   * A blob's bytes, for the JSON documents of an image (index, manifest, config): at most
   * maxBytes (MAX_JSON_BLOB_BYTES, the registry client's manifest cap, by default), a
   * larger blob refused from its size before anything is allocated. Layers are streamed,
   * never read whole.
   */
  async readBuffer(digest: string, maxBytes = MAX_JSON_BLOB_BYTES): Promise<Buffer> {
    try {
      return await readRegularFile(this.blobPath(digest), { maxBytes, describe: `blob ${digest}` });
    } catch (e) {
      if (e instanceof SafeReadError && e.code === 'ENOENT') {
        const err = new Error(`blob ${digest} is not in the content store`) as NodeJS.ErrnoException;
        err.code = 'ENOENT';
        throw err;
      }
      if (e instanceof SafeReadError && e.code === 'EFBIG') throw new BlobTooLargeError(digest, e.reason, maxBytes);
      throw e;
    }
  }

  /** A JSON blob (index, manifest, config), capped as readBuffer. */
  async readJson<T>(digest: string, maxBytes = MAX_JSON_BLOB_BYTES): Promise<T> {
    const buf = await this.readBuffer(digest, maxBytes);
    try {
      return JSON.parse(buf.toString('utf8')) as T;
    } catch (e) {
      throw new Error(`blob ${digest} is not valid JSON: ${(e as Error).message}`);
    }
  }

  /** Removes a blob; absent is fine. */
  async delete(digest: string): Promise<void> {
    await fs.rm(this.blobPath(digest), { force: true });
  }

  /** Digests of every blob present. */
  async list(): Promise<string[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.blobsDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    return names.filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }

  /** Creates the directories and removes stale partial files; once per store. */
  private prepare(): Promise<void> {
    this.prepared ??= (async () => {
      await fs.mkdir(this.blobsDir, { recursive: true });
      await fs.mkdir(this.ingestDir, { recursive: true });
      await this.removeStaleIngests();
    })().catch((e) => {
      this.prepared = undefined;
      throw e;
    });
    return this.prepared;
  }

  private async removeStaleIngests(): Promise<void> {
    const now = Date.now();
    for (const name of await fs.readdir(this.ingestDir)) {
      const file = path.join(this.ingestDir, name);
      const m = /^[a-f0-9]{64}\.(\d+)\.[a-f0-9]+\.partial$/.exec(name);
      let stale = !m;
      if (m) {
        const pid = Number(m[1]);
        if (pid !== process.pid && !processAlive(pid)) stale = true;
      }
      if (!stale) {
        try {
          stale = now - (await fs.stat(file)).mtimeMs > STALE_INGEST_MS;
        } catch {
          continue;
        }
      }
      if (stale) await fs.rm(file, { force: true, recursive: true });
    }
  }
}
