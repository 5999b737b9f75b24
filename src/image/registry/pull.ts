/**
 * Pulling an image's content: resolve the reference, then bring config and layers into
 * the content store (several at a time, skipping what is already there), then the
 * manifest and the index. Everything is verified on the way in; two pulls of the same
 * image at once download each blob once (the store shares in-flight ingests).
 */
import { Readable } from 'node:stream';
import type { RegistryConfig } from '../../config/config.js';
import type { Logger } from '../../util/log.js';
import { BlobVerificationError, type ContentStore } from '../content-store.js';
import { parseReference, type ImageReference } from '../reference.js';
import type { AuthConfig } from './auth.js';
import { RegistryClient, type ResolvedImage } from './client.js';
import { describeTransportError, RegistryError } from './errors.js';
import type { Descriptor } from './media-types.js';
import type { Platform } from './platform.js';

export interface PullProgress {
  digest: string;
  kind: 'config' | 'layer';
  /** Bytes of this blob received so far by this pull. */
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
  /** Tries per blob when a download breaks off (default 2); digest mismatches are never retried. */
  attempts?: number;
  logger?: Logger;
}

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
  try {
    const resolved = await client.resolve(r, opts.platform, opts.auth);
    opts.onResolved?.({ configDigest: resolved.config.digest, layers: resolved.layers });
    const downloaded: string[] = [];
    const jobs: { d: Descriptor; kind: 'config' | 'layer' }[] = [{ d: resolved.config, kind: 'config' }];
    const seen = new Set([resolved.config.digest]);
    for (const l of resolved.layers) {
      if (!seen.has(l.digest)) jobs.push({ d: l, kind: 'layer' });
      seen.add(l.digest);
    }
    await runBounded(jobs, Math.max(1, opts.concurrency ?? 3), async ({ d, kind }) => {
      if (!(await store.has(d.digest))) {
        await ingestBlob(client, r, resolved, store, d, opts, () => void (downloaded.includes(d.digest) || downloaded.push(d.digest)), (n) =>
          opts.onProgress?.({ digest: d.digest, kind, downloaded: n, size: d.size }),
        );
      }
      opts.onBlobStored?.(d.digest);
    });
    await ingestBytes(store, r, resolved, resolved.manifestDigest, resolved.manifest);
    if (resolved.indexDigest && resolved.index) await ingestBytes(store, r, resolved, resolved.indexDigest, resolved.index);
    opts.logger?.debug({ ref: r.toString(), manifest: resolved.manifestDigest, endpoint: resolved.endpoint, downloaded: downloaded.length }, 'pulled image content');
    return { ...resolved, configDigest: resolved.config.digest, downloaded };
  } finally {
    if (!opts.client) client.close();
  }
}

async function ingestBlob(
  client: RegistryClient,
  r: ImageReference,
  resolved: ResolvedImage,
  store: ContentStore,
  d: Descriptor,
  opts: PullOptions,
  onOpen: () => void,
  onProgress: (n: number) => void,
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
          return client.fetchBlob(r, d, opts.auth, { endpoint: resolved.endpoint });
        },
        onProgress,
      );
      return;
    } catch (e) {
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

/** Runs `fn` over items, at most `limit` at a time; stops starting new ones after a failure and throws the first. */
async function runBounded<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { e: unknown } | undefined;
  const worker = async () => {
    while (!failure && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (e) {
        failure ??= { e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure) throw failure.e;
}
