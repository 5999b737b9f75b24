/**
 * Pulling an image's content: resolve the reference, then bring config and layers into
 * the content store (several at a time, skipping what is already there), then the
 * manifest and the index. Everything is verified on the way in; two pulls of the same
 * image at once download each blob once (the store shares in-flight ingests).
 *
 * A pull that stops making progress fails (like kubelet's image-pull-progress-deadline):
 * progress is a step done (the manifest resolved, a blob stored) or at least
 * `progressMinBytes` received within `progressDeadlineMs`, so a registry trickling a byte
 * every few seconds does not keep it alive. Every pull also has an overall cap. Either
 * ends every request of the pull at once, and the pull fails with a 'stalled' error
 * naming what it was waiting for.
 */
import { setMaxListeners } from 'node:events';
import { Readable } from 'node:stream';
import type { RegistryConfig } from '../../config/config.js';
import type { Logger } from '../../util/log.js';
import { BlobTooLargeError, BlobVerificationError, type ContentStore } from '../content-store.js';
import { invalidArgument } from '../../errors.js';
import { MAX_JSON_BLOB_BYTES } from '../../util/safe-read.js';
import { untilAborted } from '../../util/abort.js';
import { parseReference, type ImageReference } from '../reference.js';
import type { AuthConfig } from './auth.js';
import { RegistryClient, type ResolvedImage } from './client.js';
import { describeTransportError, RegistryError } from './errors.js';
import type { Descriptor } from './media-types.js';
import type { Platform } from './platform.js';

export interface PullProgress {
  digest: string;
  kind: 'config' | 'layer';
  /** Bytes of this blob received so far (by this pull, or the one it shares the download with). */
  downloaded: number;
  size: number;
}

export interface PullOptions {
  /** Per-registry settings; ignored when `client` is given. */
  registries?: Record<string, RegistryConfig>;
  /** A client to reuse (its token cache and connections); else one is made for this pull and closed after. */
  client?: RegistryClient;
  auth?: AuthConfig;
  /** Default: this host's. */
  platform?: Platform;
  /** Blobs downloaded at once (default 3). */
  concurrency?: number;
  onProgress?: (p: PullProgress) => void;
  /** Told the config and layers once the manifest is resolved, before any blob is fetched. */
  onResolved?: (r: { configDigest: string; layers: Descriptor[] }) => void;
  /** Told each blob that is in the store (downloaded, or there already), as soon as it is. */
  onBlobStored?: (digest: string) => void;
  /**
   * Called with every blob digest of the image (manifest, index, config, layers) once it
   * is resolved, and awaited before the pull looks at which blobs are present: the image
   * store keeps its collector off exactly these until the image is registered.
   */
  protect?: (digests: string[]) => Promise<void>;
  /** Tries per blob when a download breaks off (default 2); digest mismatches are never retried. */
  attempts?: number;
  logger?: Logger;
  /** Milliseconds without progress after which the pull fails (default 60 000; 0 = never). */
  progressDeadlineMs?: number;
  /** Fewer bytes than this within progressDeadlineMs is no progress (default 64 KiB). */
  progressMinBytes?: number;
  /** Milliseconds the whole pull may take (default 1 h; 0 = no cap). */
  timeoutMs?: number;
  /** Cancels the pull (its reason is thrown). */
  signal?: AbortSignal;
}

export const DEFAULT_PULL_PROGRESS_DEADLINE_MS = 60_000;
export const DEFAULT_PULL_PROGRESS_MIN_BYTES = 64 * 1024;
export const DEFAULT_PULL_TIMEOUT_MS = 3_600_000;

/** What a pull brought into the store; fits ImageStore.register's ResolvedContent. */
export interface PulledImage extends ResolvedImage {
  configDigest: string;
  /** Digests this pull actually downloaded (present blobs and ones another pull fetched are not listed). */
  downloaded: string[];
}

/** Resolves `ref` and ingests manifest (and index), config and layers into `store`. */
export async function pullImageContent(ref: ImageReference | string, store: ContentStore, opts: PullOptions = {}): Promise<PulledImage> {
  const r = typeof ref === 'string' ? parseReference(ref) : ref;
  const client = opts.client ?? new RegistryClient({ registries: opts.registries, logger: opts.logger });
  const watch = new PullWatchdog(r.toString(), client.endpointsFor(r)[0]!, opts);
  const signal = watch.signal;
  try {
    const resolved = await client.resolve(r, opts.platform, opts.auth, { signal, onBytes: (n) => watch.bytes(n) });
    watch.step(`blobs of ${resolved.manifestDigest}`, { url: resolved.endpoint, mirror: resolved.mirror });
    // A config Corral would refuse to read is not worth downloading: refused from its descriptor.
    if (resolved.config.size > MAX_JSON_BLOB_BYTES) {
      const tooLarge = new BlobTooLargeError(resolved.config.digest, `is ${resolved.config.size} bytes, more than the ${MAX_JSON_BLOB_BYTES}-byte limit`, MAX_JSON_BLOB_BYTES);
      throw invalidArgument(`image ${r.toString()}: its config: ${tooLarge.message}`);
    }
    opts.onResolved?.({ configDigest: resolved.config.digest, layers: resolved.layers });
    const all = [resolved.manifestDigest, ...(resolved.indexDigest ? [resolved.indexDigest] : []), resolved.config.digest, ...resolved.layers.map((l) => l.digest)];
    if (opts.protect) await untilAborted(opts.protect([...new Set(all)]), signal);
    const downloaded: string[] = [];
    const jobs: { d: Descriptor; kind: 'config' | 'layer' }[] = [{ d: resolved.config, kind: 'config' }];
    const seen = new Set([resolved.config.digest]);
    for (const l of resolved.layers) {
      if (!seen.has(l.digest)) jobs.push({ d: l, kind: 'layer' });
      seen.add(l.digest);
    }
    const failFast = (e: unknown) => watch.abort(e); // the other downloads stop at once
    // A download slot is given back once the blob's bytes are in: its check may wait for
    // the unpack fed from it (whose helper hashes it), which needs no more network.
    const finishing: Promise<void>[] = [];
    const blobs = runBounded(jobs, Math.max(1, opts.concurrency ?? 3), failFast, async ({ d, kind }) => {
      if (!(await store.has(d.digest))) {
        let last = 0;
        let bytesIn!: () => void;
        const inFile = new Promise<void>((resolve) => (bytesIn = resolve));
        const stored = ingestBlob(client, r, resolved, store, d, opts, signal, () => void (downloaded.includes(d.digest) || downloaded.push(d.digest)), (n) => {
          // n restarts from 0 when a download is retried or another caller's is joined
          watch.bytes(n >= last ? n - last : n);
          last = n;
          opts.onProgress?.({ digest: d.digest, kind, downloaded: n, size: d.size });
        }, bytesIn).then(() => {
          watch.step(`blobs of ${resolved.manifestDigest}`);
          opts.onBlobStored?.(d.digest);
        });
        const finished = stored.catch((e: unknown) => {
          failFast(e);
          throw e;
        });
        finished.catch(() => {}); // awaited below, whatever the other blobs do
        finishing.push(finished);
        await Promise.race([stored, inFile]);
        return;
      }
      watch.step(`blobs of ${resolved.manifestDigest}`);
      opts.onBlobStored?.(d.digest);
    });
    // Nothing of this pull runs on once it answers: every ingest has ended.
    await blobs.catch(() => {});
    // Every byte is in: what is left (a layer's unpack, following its file, hashes it) is
    // local work, however far it lags behind its download, not a stalled registry.
    watch.networkDone('the layers to be checked and unpacked');
    await Promise.allSettled(finishing);
    await blobs;
    await Promise.all(finishing);
    await ingestBytes(store, r, resolved, resolved.manifestDigest, resolved.manifest);
    if (resolved.indexDigest && resolved.index) await ingestBytes(store, r, resolved, resolved.indexDigest, resolved.index);
    opts.logger?.debug({ ref: r.toString(), manifest: resolved.manifestDigest, endpoint: resolved.endpoint, downloaded: downloaded.length }, 'pulled image content');
    return { ...resolved, configDigest: resolved.config.digest, downloaded };
  } catch (e) {
    if (signal.aborted) throw signal.reason; // whatever broke first, the deadline is the cause
    throw e;
  } finally {
    watch.stop();
    if (!opts.client) client.close();
  }
}

/**
 * The deadlines of one pull: no progress within progressDeadlineMs, or the whole pull
 * past timeoutMs, aborts `signal` with a 'stalled' RegistryError that says what was
 * awaited, from where, and which setting to change.
 */
class PullWatchdog {
  private readonly controller = new AbortController();
  private readonly deadlineMs: number;
  private readonly minBytes: number;
  private readonly timeoutMs: number;
  private readonly started = Date.now();
  private windowStart = Date.now();
  private windowBytes = 0;
  private total = 0;
  private waitingFor = 'the manifest';
  private timer: NodeJS.Timeout | undefined;
  private overall: NodeJS.Timeout | undefined;
  private readonly onExternalAbort: () => void;

  constructor(private readonly reference: string, private endpoint: { url: string; mirror: boolean }, private readonly opts: PullOptions) {
    this.deadlineMs = opts.progressDeadlineMs ?? DEFAULT_PULL_PROGRESS_DEADLINE_MS;
    this.minBytes = opts.progressMinBytes ?? DEFAULT_PULL_PROGRESS_MIN_BYTES;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_PULL_TIMEOUT_MS;
    // Every request and download of the pull listens (and stops listening when done).
    setMaxListeners(64, this.controller.signal);
    if (this.deadlineMs > 0) this.timer = setTimeout(() => this.check(), this.deadlineMs);
    if (this.timeoutMs > 0) {
      this.overall = setTimeout(
        () => this.fail(`it did not finish within ${seconds(this.timeoutMs)} (image_pull.timeout_seconds); ${this.total} bytes received, waiting for ${this.waitingFor}`),
        this.timeoutMs,
      );
    }
    this.onExternalAbort = () => this.abort(opts.signal!.reason);
    if (opts.signal?.aborted) this.abort(opts.signal.reason);
    else opts.signal?.addEventListener('abort', this.onExternalAbort, { once: true });
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  bytes(n: number): void {
    this.total += n;
    this.windowBytes += n;
    if (this.windowBytes >= this.minBytes) this.progressed();
  }

  /**
   * Nothing more is awaited from the registry: the no-progress deadline stops (the
   * overall cap and cancellation still apply); `next` is what the pull waits for now.
   */
  networkDone(next: string): void {
    this.waitingFor = next;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** A step of the pull is done (counts as progress); `next` is what it waits for now. */
  step(next: string, endpoint?: { url: string; mirror: boolean }): void {
    this.waitingFor = next;
    if (endpoint) this.endpoint = endpoint;
    this.progressed();
  }

  abort(reason: unknown): void {
    if (!this.controller.signal.aborted) this.controller.abort(reason);
    this.stop();
  }

  stop(): void {
    clearTimeout(this.timer);
    clearTimeout(this.overall);
    this.opts.signal?.removeEventListener('abort', this.onExternalAbort);
  }

  private progressed(): void {
    this.windowStart = Date.now();
    this.windowBytes = 0;
  }

  /** Runs when a deadline may have passed: fails, or sleeps until the current window ends. */
  private check(): void {
    const idle = Date.now() - this.windowStart;
    if (idle < this.deadlineMs) {
      this.timer = setTimeout(() => this.check(), this.deadlineMs - idle);
      return;
    }
    const got = this.windowBytes === 0 ? 'nothing' : `only ${this.windowBytes} bytes`;
    this.fail(
      `no progress for ${seconds(this.deadlineMs)}: received ${got} (at least ${this.minBytes} needed) while waiting for ${this.waitingFor}; ` +
        `the registry is stalled or too slow (see image_pull.progress_deadline_seconds and image_pull.progress_min_bytes)`,
    );
  }

  private fail(reason: string): void {
    const err = new RegistryError('stalled', this.reference, [{ endpoint: this.endpoint.url, mirror: this.endpoint.mirror, kind: 'stalled', reason }], 'pull aborted: ' + (reason.startsWith('no progress') ? 'no progress' : 'too slow'));
    this.opts.logger?.warn({ ref: this.reference, endpoint: this.endpoint.url, ms: Date.now() - this.started, bytes: this.total }, 'image pull aborted by its deadline');
    this.abort(err);
  }
}

function seconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`;
}

async function ingestBlob(
  client: RegistryClient,
  r: ImageReference,
  resolved: ResolvedImage,
  store: ContentStore,
  d: Descriptor,
  opts: PullOptions,
  signal: AbortSignal,
  onOpen: () => void,
  onProgress: (n: number) => void,
  onDownloaded?: () => void,
): Promise<void> {
  const attempts = Math.max(1, opts.attempts ?? 2);
  const where = { url: resolved.endpoint, mirror: resolved.mirror };
  for (let attempt = 1; ; attempt++) {
    try {
      await store.ingest(
        d.digest,
        d.size,
        async () => {
          onOpen();
          return client.fetchBlob(r, d, opts.auth, { endpoint: resolved.endpoint, signal });
        },
        onProgress,
        { signal, onDownloaded },
      );
      return;
    } catch (e) {
      if (signal.aborted) throw signal.reason;
      if (e instanceof BlobVerificationError) {
        throw RegistryError.at('digest-mismatch', r.toString(), where, e.message);
      }
      if (e instanceof RegistryError) {
        if (e.kind !== 'unreachable' || attempt >= attempts) throw e;
      } else {
        const { kind, reason } = describeTransportError(e);
        if (attempt >= attempts) throw RegistryError.at(kind, r.toString(), where, `download of blob ${d.digest} broke off: ${reason}`);
      }
      opts.logger?.debug({ ref: r.toString(), digest: d.digest, attempt }, 'blob download failed; retrying');
    }
  }
}

async function ingestBytes(store: ContentStore, r: ImageReference, resolved: ResolvedImage, digest: string, bytes: Buffer): Promise<void> {
  try {
    await store.ingest(digest, bytes.length, async () => Readable.from([bytes]));
  } catch (e) {
    if (e instanceof BlobVerificationError) throw RegistryError.at('digest-mismatch', r.toString(), { url: resolved.endpoint, mirror: resolved.mirror }, e.message);
    throw e;
  }
}

/**
 * Runs `fn` over items, at most `limit` at a time; after a failure starts no new ones,
 * tells onFailure (to stop the running ones) and throws the first failure.
 */
async function runBounded<T>(items: T[], limit: number, onFailure: (e: unknown) => void, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { e: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (e) {
        if (!failure) {
          failure = { e };
          onFailure(e);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.e;
}
