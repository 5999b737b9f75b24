/**
 * Image operations behind the CRI ImageService: pull (deduplicated per reference),
 * status, list and removal, on top of the image store and the registry client.
 */
import path from 'node:path';
import type { CorralConfig } from '../config/config.js';
import type { Logger } from '../util/log.js';
import { ImageStore, type ImageRecord } from './image-store.js';
import { parseReference } from './reference.js';
import type { AuthConfig, PulledImage, PullProgress, RegistryClient } from './registry/index.js';
import { BlobTooLargeError } from './content-store.js';
import { ImageConfigError, imageRuntimeConfig, type ImageRuntimeConfig } from './image-config.js';
import { CorralError, invalidArgument } from '../errors.js';
import type { RuntimeObserver } from '../observer.js';

export class ImageService {
  readonly store: ImageStore;
  /** The registry client, loaded by the first pull: a node that never pulls does not carry it. */
  private client: Promise<{ client: RegistryClient; pullImageContent: typeof import('./registry/index.js').pullImageContent }> | undefined;
  private readonly inflight = new Map<string, Promise<ImageRecord>>();
  /** Told when pulls start and when the last one in flight has ended (the daemon gives memory back then). */
  pullsSettled?: { busy(): void; settled(): void };
  /** Layers (chain IDs) that running sandboxes and containers have mounted. */
  layersInUse: () => Set<string> = () => new Set();

  constructor(private readonly cfg: CorralConfig, private readonly logger: Logger, private readonly observer?: RuntimeObserver) {
    this.store = new ImageStore(path.join(cfg.rootDir, 'images'), logger.child({ component: 'images' }));
  }

  /** Pulls an image; a second pull of the same reference while one runs shares it. */
  async pull(reference: string, auth?: AuthConfig, onProgress?: (p: PullProgress) => void): Promise<ImageRecord> {
    const ref = parseReference(reference);
    const key = ref.toString();
    const running = this.inflight.get(key);
    if (running) return running;
    this.pullsSettled?.busy();
    const p = this.doPull(key, auth, onProgress).finally(() => {
      this.inflight.delete(key);
      if (this.inflight.size === 0) this.pullsSettled?.settled();
    });
    this.inflight.set(key, p);
    return p;
  }

  private async doPull(reference: string, auth: AuthConfig | undefined, onProgress?: (p: PullProgress) => void): Promise<ImageRecord> {
    const t0 = Date.now();
    // Only what this pull uses is kept from the collector (not the whole store), from the
    // moment it is resolved until the image is registered.
    const hold = this.store.holdContent();
    try {
      const { client, pullImageContent } = await (this.client ??= import('./registry/index.js').then((r) => ({
        client: new r.RegistryClient({ registries: this.cfg.registries, logger: this.logger }),
        pullImageContent: r.pullImageContent,
      })));
      // Layers unpack while later ones still download.
      const stored = new BlobSignals();
      let unpacking: Promise<void> | undefined;
      let pulled;
      try {
        pulled = await pullImageContent(reference, this.store.content, {
          client,
          auth,
          concurrency: 3,
          onProgress,
          logger: this.logger,
          progressDeadlineMs: this.cfg.imagePull.progressDeadlineSeconds * 1000,
          progressMinBytes: this.cfg.imagePull.progressMinBytes,
          timeoutMs: this.cfg.imagePull.timeoutSeconds * 1000,
          protect: (digests) => hold.blobs(digests),
          onResolved: (r) => {
            unpacking = this.store.unpackLayers(reference, r.configDigest, r.layers, (d) => stored.wait(d), hold);
            unpacking.catch(() => {}); // awaited below
          },
          onBlobStored: (d) => stored.signal(d),
        });
      } catch (e) {
        stored.failAll(e as Error);
        await unpacking?.catch(() => {});
        throw e;
      }
      await unpacking;
      const image = await this.store.register(reference, {
        manifestDigest: pulled.manifestDigest,
        referenceDigest: pulled.referenceDigest,
        configDigest: pulled.configDigest,
        layers: pulled.layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: l.mediaType })),
      });
      this.logger.info({ image: reference, id: image.id, downloaded: pulled.downloaded.length, ms: Date.now() - t0 }, 'image pulled');
      this.observer?.imagePulled({ seconds: (Date.now() - t0) / 1000, bytes: downloadedBytes(pulled) });
      return image;
    } catch (e) {
      this.observer?.imagePulled({ seconds: (Date.now() - t0) / 1000, bytes: 0, failure: e instanceof CorralError ? e.kind : 'internal' });
      throw e;
    } finally {
      hold.release();
    }
  }

  async find(reference: string): Promise<ImageRecord | undefined> {
    await this.store.refresh();
    return this.store.find(reference);
  }

  async list(): Promise<ImageRecord[]> {
    await this.store.refresh();
    return this.store.all();
  }

  /** Removes by reference; layers still mounted by a pod stay until a later collection. */
  async remove(reference: string): Promise<void> {
    await this.store.remove(reference, () => this.layersInUse());
  }

  /**
   * A pod or container unmounted these layers: if no image references some of them any
   * more (the image was removed while they were in use), collect them now.
   */
  async layersReleased(chain: readonly string[]): Promise<void> {
    await this.store.refresh();
    const referenced = new Set(this.store.all().flatMap((i) => i.chainIds));
    if (chain.every((c) => referenced.has(c))) return;
    await this.store.collect(() => this.layersInUse());
  }

  /** The image, pulled first if it is not here (the sandbox image, on a pod's first Run). */
  async ensure(reference: string): Promise<ImageRecord> {
    return (await this.find(reference)) ?? this.pull(reference);
  }

  /** The image config's `config` object (Entrypoint, Cmd, Env, User ...). */
  async runtimeConfig(image: ImageRecord): Promise<ImageRuntimeConfig> {
    const name = image.repoTags[0] ?? image.id;
    const doc = await this.store.content.readJson<unknown>(image.configDigest).catch((e) => {
      throw e instanceof BlobTooLargeError ? invalidArgument(`image ${name}: its config: ${e.message}`) : e;
    });
    try {
      return imageRuntimeConfig(doc);
    } catch (e) {
      throw e instanceof ImageConfigError ? invalidArgument(`image ${name}: its config: ${e.message}, so this image cannot be used`) : e;
    }
  }

  /** The configured sandbox image is pinned: kubelet's image GC must not remove it. */
  isPinned(image: ImageRecord): boolean {
    const ref = this.sandboxImageRef;
    return ref !== undefined && (image.repoTags.includes(ref) || image.repoDigests.includes(ref));
  }

  /** The sandbox image as a normalised tag or digest reference (parsed once: ListImages asks per image). */
  private get sandboxImageRef(): string | undefined {
    if (this.sandboxRef === null) {
      this.sandboxRef = undefined;
      if (this.cfg.sandboxImage) {
        try {
          const r = parseReference(this.cfg.sandboxImage);
          this.sandboxRef = r.digest ? `${r.name}@${r.digest}` : `${r.name}:${r.tag ?? 'latest'}`;
        } catch {
          this.sandboxRef = undefined;
        }
      }
    }
    return this.sandboxRef;
  }

  private sandboxRef: string | undefined | null = null;

  close(): void {
    void this.client?.then(({ client }) => client.close());
  }
}

/** What a pull received from the registry: the manifest (and index) and the blobs it downloaded. */
function downloadedBytes(pulled: PulledImage): number {
  const downloaded = new Set(pulled.downloaded);
  const blobs = [pulled.config, ...pulled.layers].filter((d) => downloaded.has(d.digest)).reduce((n, d) => n + d.size, 0);
  return blobs + pulled.manifest.length + (pulled.index?.length ?? 0);
}

/** Promises that settle when a blob is stored; all of them fail when the pull fails. */
class BlobSignals {
  private readonly entries = new Map<string, { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void }>();
  private failure: Error | undefined;

  private entry(digest: string) {
    let e = this.entries.get(digest);
    if (!e) {
      let resolve!: () => void;
      let reject!: (e: Error) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      promise.catch(() => {});
      e = { promise, resolve, reject };
      this.entries.set(digest, e);
      if (this.failure) reject(this.failure);
    }
    return e;
  }

  wait(digest: string): Promise<void> {
    return this.entry(digest).promise;
  }

  signal(digest: string): void {
    this.entry(digest).resolve();
  }

  failAll(e: Error): void {
    this.failure = e;
    for (const x of this.entries.values()) x.reject(e);
  }
}
