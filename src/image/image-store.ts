/**
 * Corral's images: which images exist (ID = config digest), their tags and digests, and
 * the layers they stand on. Blobs live in the content store, unpacked layers in the
 * snapshot store (shared by every image that has them); this module ties them together
 * for pull, import, status, list and removal, and collects what nothing uses any more.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../util/log.js';
import { writeJsonAtomic } from '../util/atomic.js';
import { readJsonIfExists } from '../util/safe-read.js';
import { invalidArgument } from '../errors.js';
import { BlobTooLargeError, ContentStore } from './content-store.js';
import { parseReference } from './reference.js';
import { SnapshotStore, chainIds } from './snapshots.js';
import { applyLayer, applyLayerFromDownload, LayerCorruptError, LayerRefusedError, UnpackHelperError, type AppliedLayer } from './unpack.js';
import { processAlive } from '../util/process.js';
import { ImageStoreUsage } from './fs-usage.js';

export interface ImageRecord {
  /** The config digest, "sha256:<hex>". */
  id: string;
  /** Normalised "domain/path:tag" references pointing at this image. */
  repoTags: string[];
  /** "domain/path@sha256:<hex>" references (manifest or index digest as pulled). */
  repoDigests: string[];
  manifestDigest: string;
  configDigest: string;
  /** Layer blobs, bottom first. */
  layers: { digest: string; size: number; mediaType: string }[];
  diffIds: string[];
  chainIds: string[];
  /** Bytes of config plus compressed layers, as ImageStatus reports it. */
  size: number;
  /** The image config's User, for ImageStatus uid/username. */
  user: string;
  createdAt: string;
}

interface ImagesFile {
  version: 1;
  images: Record<string, ImageRecord>;
}

/** A resolved image, as the pull or import side hands it over before registration. */
export interface ResolvedContent {
  manifestDigest: string;
  /** The digest a reference was pulled by (index or manifest), for repoDigests. */
  referenceDigest: string;
  configDigest: string;
  layers: { digest: string; size: number; mediaType: string }[];
}

/**
 * What one pull keeps from the collector until its image is registered: the blobs and
 * layers (chain IDs) it found present or stored, and nothing else, so a slow pull never
 * stops the collection of other images. Protecting waits for a deletion of the same
 * item already under way, so "protected, then found present" means it stays present.
 */
export interface ContentHold {
  blobs(digests: readonly string[]): Promise<void>;
  chains(chainIds: readonly string[]): Promise<void>;
  release(): void;
}

export class ImageStore {
  readonly content: ContentStore;
  readonly snapshots: SnapshotStore;
  /** What the store uses on disk (ImageFsInfo), kept without walking it per call. */
  readonly usage: ImageStoreUsage;
  private readonly file: string;
  private images = new Map<string, ImageRecord>();
  private loadedMtimeMs = -1;
  /** Serialises every change to images.json and the GC that follows it. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Whole-store holds (an offline import in this process): GC waits for them. */
  private gcHolds = 0;
  /** Blobs ("blob:<digest>") and layers ("chain:<id>") pulls hold, with how many hold each. */
  private readonly held = new Map<string, number>();
  /** Deletions under way by the collector, by the same keys. */
  private readonly deleting = new Map<string, Promise<void>>();

  constructor(readonly root: string, private readonly logger: Logger) {
    this.content = new ContentStore(root);
    this.snapshots = new SnapshotStore(root);
    this.usage = new ImageStoreUsage(root);
    this.file = path.join(root, 'images.json');
  }

  /** Re-reads images.json if it changed on disk (an offline `corral image import`). */
  async refresh(): Promise<void> {
    let mtimeMs: number;
    try {
      mtimeMs = (await fs.stat(this.file)).mtimeMs;
    } catch {
      mtimeMs = 0;
    }
    if (mtimeMs === this.loadedMtimeMs) return;
    const data = await readJsonIfExists<ImagesFile>(this.file);
    this.images = new Map(Object.entries(data?.images ?? {}));
    this.loadedMtimeMs = mtimeMs;
  }

  private async save(): Promise<void> {
    const data: ImagesFile = { version: 1, images: Object.fromEntries(this.images) };
    await writeJsonAtomic(this.file, data, 0o644);
    this.loadedMtimeMs = (await fs.stat(this.file)).mtimeMs;
  }

  /**
   * Runs fn alone: queued within this process, and under a lock file across processes
   * (the daemon and an offline `corral image import` may both change images.json).
   */
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const locked = () => withLockFile(path.join(this.root, 'images.lock'), fn);
    const next = this.queue.then(locked, locked);
    this.queue = next.catch(() => {});
    return next;
  }

  /**
   * Keeps garbage collection from running until the returned function is called. With
   * `acrossProcesses` (an offline import), a hold file with our PID also stops the
   * daemon's collector from deleting blobs this process has stored but not registered.
   */
  async holdGarbageCollection(acrossProcesses = false): Promise<() => Promise<void>> {
    this.gcHolds++;
    const holdFile = path.join(this.root, `gc-hold.${process.pid}`);
    if (acrossProcesses) {
      await fs.mkdir(this.root, { recursive: true });
      await fs.writeFile(holdFile, String(process.pid));
    }
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      this.gcHolds--;
      if (acrossProcesses) await fs.rm(holdFile, { force: true });
    };
  }

  /** A hold on exactly the content one pull uses (see ContentHold); release() it after registration. */
  holdContent(): ContentHold {
    const mine = new Set<string>();
    const protect = async (keys: string[]) => {
      for (const k of keys) {
        if (mine.has(k)) continue;
        mine.add(k);
        this.held.set(k, (this.held.get(k) ?? 0) + 1);
      }
      await Promise.all(keys.map((k) => this.deleting.get(k)?.catch(() => undefined)));
    };
    return {
      blobs: (digests) => protect(digests.map((d) => `blob:${d}`)),
      chains: (ids) => protect(ids.map((c) => `chain:${c}`)),
      release: () => {
        for (const k of mine) {
          const n = (this.held.get(k) ?? 1) - 1;
          if (n > 0) this.held.set(k, n);
          else this.held.delete(k);
        }
        mine.clear();
      },
    };
  }

  /**
   * Deletes one collectable item unless a pull holds it. The check and the start of the
   * deletion happen in one turn of the event loop, and the deletion is visible in
   * `deleting` until it ends, for ContentHold to wait on.
   */
  private async collectOne(key: string, remove: () => Promise<void>): Promise<void> {
    if (this.held.has(key)) return;
    const p = remove();
    this.deleting.set(key, p);
    try {
      await p;
    } finally {
      if (this.deleting.get(key) === p) this.deleting.delete(key);
    }
  }

  /** Whether a live process (other than this one) holds garbage collection off. */
  private async heldByAnotherProcess(): Promise<boolean> {
    const names = await fs.readdir(this.root).catch(() => [] as string[]);
    for (const n of names) {
      const m = /^gc-hold\.(\d+)$/.exec(n);
      if (!m) continue;
      const pid = Number(m[1]);
      if (pid !== process.pid && processAlive(pid)) return true;
      if (pid !== process.pid) await fs.rm(path.join(this.root, n), { force: true }); // its holder died
    }
    return false;
  }

  all(): ImageRecord[] {
    return [...this.images.values()];
  }

  /**
   * Finds an image by ID ("sha256:<hex>" or bare hex), unique ID prefix, tag (any form
   * kubelet may send: "busybox", "docker.io/library/busybox:latest") or digest reference.
   */
  find(ref: string): ImageRecord | undefined {
    if (ref === '') return undefined;
    const byId = this.images.get(ref) ?? this.images.get(`sha256:${ref}`);
    if (byId) return byId;
    if (/^(sha256:)?[0-9a-f]{3,64}$/.test(ref)) {
      const hex = ref.replace(/^sha256:/, '');
      const matches = this.all().filter((i) => i.id.slice(7).startsWith(hex));
      if (matches.length === 1) return matches[0];
    }
    let normalised: string;
    try {
      const r = parseReference(ref);
      normalised = r.digest ? `${r.name}@${r.digest}` : `${r.name}:${r.tag ?? 'latest'}`;
    } catch {
      return undefined;
    }
    return this.all().find((i) => i.repoTags.includes(normalised) || i.repoDigests.includes(normalised));
  }

  /**
   * Unpacks an image's layers (once per chain ID, shared). A pull calls this before it
   * downloads: a layer this process then downloads is unpacked from its bytes as they
   * arrive, and committed once `blobReady` says its blob is stored (digest verified) and
   * the diff ID matches; others are unpacked from the stored blob. Layers unpack side by
   * side, each into a directory of its own (commit order does not matter: a snapshot is
   * used only once the image's whole chain is there).
   */
  async unpackLayers(
    reference: string,
    configDigest: string,
    layers: readonly { digest: string; mediaType: string }[],
    blobReady: (digest: string) => Promise<void> = async () => {},
    hold?: ContentHold,
  ): Promise<void> {
    // Before the first await: a layer this process then downloads is unpacked from its
    // bytes as they arrive, not after the blob is stored.
    const early = new Map<string, EarlyUnpack>();
    for (const l of layers) if (!early.has(l.digest)) early.set(l.digest, this.unpackWhileDownloading(l.digest, l.mediaType));
    try {
      await blobReady(configDigest);
      const { diffIds, chain } = await this.layerChain(reference, configDigest, layers.length);
      await hold?.chains(chain); // before looking for them: a collection must not remove one found present
      await forEachBounded(layers, UNPACK_CONCURRENCY, async (layer, i) => {
        if (await this.snapshots.has(chain[i]!)) return;
        // Both checks before a snapshot is committed: the blob's digest (it is stored only
        // if it matches) and, below, the diff ID of what was unpacked.
        await blobReady(layer.digest);
        await this.snapshots.prepare(chain[i]!, async (dir: string) => {
          const streamed = await early.get(layer.digest)?.take();
          const { diffId } = streamed
            ? await fs.rename(streamed.dir, dir).then(() => streamed.applied)
            : await applyLayer(this.content.blobPath(layer.digest), layer.mediaType, dir).catch((e: unknown) => {
                if (e instanceof LayerRefusedError || e instanceof LayerCorruptError || e instanceof UnpackHelperError) e.message = `image ${reference}: layer ${layer.digest}: ${e.message}`;
                throw e;
              });
          if (diffId !== diffIds[i]) {
            throw new Error(`image ${reference}: layer ${layer.digest} unpacks to ${diffId}, but the config says ${diffIds[i]}`);
          }
        });
      });
    } finally {
      await Promise.all([...early.values()].map((e) => e.discard()));
    }
  }

  /**
   * Asks the content store for the bytes of the layer's next download and unpacks them
   * as they arrive into a scratch directory. take() gives that directory once the helper
   * succeeded (else undefined: the caller unpacks the stored file, which also gives the
   * authoritative error); discard() stops the helper and removes what was not taken.
   */
  private unpackWhileDownloading(digest: string, mediaType: string): EarlyUnpack {
    let started: { scratch: string; result: Promise<AppliedLayer>; stop: (why: Error) => void } | undefined;
    let taken = false;
    // zstd is read from the stored file (the helper seeks in it); media types can lie, and
    // a helper that fails on a stream is simply not used.
    const withdraw = /zstd|encrypted/.test(mediaType)
      ? () => {}
      : this.content.watchNextDownload(digest, (blobFile) => {
          const scratch = this.snapshots.scratchDir(digest);
          const s = applyLayerFromDownload(scratch, blobFile);
          started = { scratch, result: s.result, stop: (why) => s.tap.abort(why) };
          return s.tap;
        });
    return {
      take: async () => {
        if (!started || taken) return undefined;
        taken = true;
        const applied = await started.result.catch(() => undefined);
        return applied ? { dir: started.scratch, applied } : undefined;
      },
      discard: async () => {
        withdraw();
        if (!started) return;
        // Not used (the pull failed, or another one unpacked the chain): its download, maybe
        // another pull's, goes on without it.
        if (!taken) started.stop(new Error('layer unpack from the download not needed'));
        await started.result.catch(() => undefined);
        await fs.rm(started.scratch, { recursive: true, force: true });
      },
    };
  }

  private async layerChain(reference: string, configDigest: string, layerCount: number): Promise<{ config: any; diffIds: string[]; chain: string[] }> {
    const config = await this.content.readJson<any>(configDigest).catch((e) => {
      throw e instanceof BlobTooLargeError ? invalidArgument(`image ${reference}: its config: ${e.message}`) : e;
    });
    const diffIds: string[] = config?.rootfs?.diff_ids ?? [];
    if (diffIds.length !== layerCount) {
      throw new Error(`image ${reference}: its config lists ${diffIds.length} layer diff IDs but the manifest has ${layerCount} layers`);
    }
    return { config, diffIds, chain: chainIds(diffIds) };
  }

  /**
   * Unpacks the layers of resolved content if that has not happened yet, and records the
   * image under the reference; a tag moves away from any image that had it.
   */
  async register(reference: string, resolved: ResolvedContent): Promise<ImageRecord> {
    await this.unpackLayers(reference, resolved.configDigest, resolved.layers);
    const { config, diffIds, chain } = await this.layerChain(reference, resolved.configDigest, resolved.layers.length);
    const r = parseReference(reference);
    return this.serialized(async () => {
      await this.refresh();
      // A re-pull of what is already recorded changes nothing: no write.
      const before = JSON.stringify([...this.images.values()].map((i) => [i.id, i.repoTags, i.repoDigests]));
      const configSize = (await this.content.size(resolved.configDigest)) ?? 0;
      const existing = this.images.get(resolved.configDigest);
      const record: ImageRecord = existing ?? {
        id: resolved.configDigest,
        repoTags: [],
        repoDigests: [],
        manifestDigest: resolved.manifestDigest,
        configDigest: resolved.configDigest,
        layers: resolved.layers,
        diffIds,
        chainIds: chain,
        size: configSize + resolved.layers.reduce((n, l) => n + l.size, 0),
        user: String(config?.config?.User ?? ''),
        createdAt: new Date().toISOString(),
      };
      const tag = r.tag || !r.digest ? `${r.name}:${r.tag ?? 'latest'}` : undefined;
      if (tag) {
        for (const other of this.images.values()) {
          if (other !== record) other.repoTags = other.repoTags.filter((t) => t !== tag);
        }
        if (!record.repoTags.includes(tag)) record.repoTags.push(tag);
      }
      const digestRef = `${r.name}@${resolved.referenceDigest}`;
      if (!record.repoDigests.includes(digestRef)) record.repoDigests.push(digestRef);
      this.images.set(record.id, record);
      // An image left with no name at all is unreachable: drop it.
      for (const [id, other] of this.images) {
        if (other.repoTags.length === 0 && other.repoDigests.length === 0) this.images.delete(id);
      }
      if (JSON.stringify([...this.images.values()].map((i) => [i.id, i.repoTags, i.repoDigests])) !== before) await this.save();
      return record;
    });
  }

  /**
   * Removes by reference. A tag removes only that tag when the image has others (as
   * containerd does); an ID or digest reference removes the image. Unknown is fine.
   * Then collects snapshots and blobs nothing references, keeping those in `inUse`.
   */
  async remove(ref: string, inUse: () => Set<string> = () => new Set()): Promise<void> {
    if (ref === '') throw invalidArgument('image reference must not be empty');
    await this.serialized(async () => {
      await this.refresh();
      const image = this.find(ref);
      if (!image) {
        // Nothing to remove, but layers a pod has released since may be collectable now.
        await this.collectGarbage(inUse());
        return;
      }
      let tag: string | undefined;
      try {
        const r = parseReference(ref);
        if (!r.digest && !/^(sha256:)?[0-9a-f]{3,64}$/.test(ref)) tag = `${r.name}:${r.tag ?? 'latest'}`;
      } catch {
        tag = undefined;
      }
      if (tag && image.repoTags.includes(tag) && image.repoTags.length > 1) {
        image.repoTags = image.repoTags.filter((t) => t !== tag);
      } else {
        this.images.delete(image.id);
      }
      await this.save();
      await this.collectGarbage(inUse());
    });
  }

  /** Collects what nothing references any more (at start, after a crash left some). */
  collect(inUse: () => Set<string>): Promise<void> {
    return this.serialized(async () => {
      await this.refresh();
      await this.collectGarbage(inUse());
    });
  }

  /** Deletes snapshots and blobs that no image (and no running container) references. */
  private async collectGarbage(inUseChainIds: Set<string>): Promise<void> {
    if (this.gcHolds > 0 || (await this.heldByAnotherProcess())) return; // a later removal collects what is left
    const liveChains = new Set(inUseChainIds);
    const liveBlobs = new Set<string>();
    for (const i of this.images.values()) {
      i.chainIds.forEach((c) => liveChains.add(c));
      [i.manifestDigest, i.configDigest, ...i.layers.map((l) => l.digest), ...i.repoDigests.map((d) => d.slice(d.indexOf('@') + 1))].forEach((d) => liveBlobs.add(d));
    }
    // What pulls in flight hold is skipped (checked per item, as pulls come and go).
    for (const c of await this.snapshots.list()) {
      if (!liveChains.has(c)) await this.collectOne(`chain:${c}`, () => this.snapshots.remove(c));
    }
    for (const d of await this.content.list()) {
      if (!liveBlobs.has(d)) await this.collectOne(`blob:${d}`, () => this.content.delete(d));
    }
    this.logger.debug({ images: this.images.size }, 'image garbage collected');
  }
}

/** Layers unpacked at once by one registration. */
const UNPACK_CONCURRENCY = 3;

/** A layer unpacked (or being unpacked) from its download; see ImageStore.unpackWhileDownloading. */
interface EarlyUnpack {
  take(): Promise<{ dir: string; applied: AppliedLayer } | undefined>;
  discard(): Promise<void>;
}

/** Runs fn over items, at most `limit` at a time; the first failure is thrown after the running ones end. */
async function forEachBounded<T>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown;
  const worker = async () => {
    while (failure === undefined && next < items.length) {
      const i = next++;
      try {
        await fn(items[i]!, i);
      } catch (e) {
        failure ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure !== undefined) throw failure;
}

/** Holds `<lockPath>` (created exclusively, with our PID) while fn runs; a dead holder's lock is taken over. */
async function withLockFile<T>(lockPath: string, fn: () => Promise<T>, timeoutMs = 30_000): Promise<T> {
  await fs.mkdir(path.dirname(lockPath), { recursive: true });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await fs.writeFile(lockPath, String(process.pid), { flag: 'wx', mode: 0o600 });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = Number(await fs.readFile(lockPath, 'utf8').catch(() => '0'));
      if (!(holder > 0) || !processAlive(holder)) {
        await fs.rm(lockPath, { force: true });
        continue;
      }
      if (Date.now() > deadline) throw new Error(`image store is locked by process ${holder} (${lockPath})`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    return await fn();
  } finally {
    await fs.rm(lockPath, { force: true });
  }
}

