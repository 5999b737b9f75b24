/**
 * Unpacked layers, one directory per chain ID (the layer and everything under it), shared
 * by every image that has that chain: `<root>/snapshots/<chain hex>/fs`. A snapshot is
 * filled in a temporary directory and renamed into place, so one that exists is whole;
 * concurrent requests for the same chain wait for a single unpack. Container and sandbox
 * root filesystems are overlay mounts with these directories as lower layers.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { execChecked } from '../util/exec.js';
import { processAlive } from '../util/process.js';
import { isMountPoint } from '../util/mounts.js';
import { recordSnapshotUsage } from './fs-usage.js';

/** Chain IDs of a layer stack, bottom first: chain(0) = diff(0), chain(n) = sha256(chain(n-1) + " " + diff(n)). */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const diffId of diffIds) {
    const prev = out[out.length - 1];
    out.push(prev === undefined ? diffId : `sha256:${createHash('sha256').update(`${prev} ${diffId}`).digest('hex')}`);
  }
  return out;
}

const TEMP_PREFIX = '.tmp-';
const TRASH_PREFIX = '.trash-';

function hexOf(chainId: string): string {
  const m = /^sha256:([0-9a-f]{64})$/.exec(chainId);
  if (!m) throw new Error(`not a chain ID: ${chainId}`);
  return m[1]!;
}

export class SnapshotStore {
  readonly dir: string;
  private readonly inflight = new Map<string, Promise<void>>();

  constructor(root: string) {
    this.dir = path.join(root, 'snapshots');
  }

  /** The unpacked directory of a chain (exists once prepare() finished for it). */
  fsDir(chainId: string): string {
    return path.join(this.dir, hexOf(chainId), 'fs');
  }

  async has(chainId: string): Promise<boolean> {
    return fs.stat(this.fsDir(chainId)).then(
      () => true,
      () => false,
    );
  }

  /**
   * Makes the snapshot of chainId exist, calling fill(dir) on an empty temporary
   * directory if it does not. A failed fill leaves nothing behind.
   */
  prepare(chainId: string, fill: (dir: string) => Promise<void>): Promise<void> {
    const running = this.inflight.get(chainId);
    if (running) return running;
    const p = this.create(chainId, fill).finally(() => this.inflight.delete(chainId));
    this.inflight.set(chainId, p);
    return p;
  }

  private async create(chainId: string, fill: (dir: string) => Promise<void>): Promise<void> {
    const hex = hexOf(chainId);
    const final = path.join(this.dir, hex);
    if (await this.has(chainId)) return;
    // The PID in the name lets a later start tell an abandoned unpack from a live import's.
    const tmp = path.join(this.dir, `${TEMP_PREFIX}${hex}-${process.pid}-${randomBytes(4).toString('hex')}`);
    await fs.mkdir(path.join(tmp, 'fs'), { recursive: true, mode: 0o700 });
    try {
      await fs.chmod(path.join(tmp, 'fs'), 0o755);
      await fill(path.join(tmp, 'fs'));
      // Measured once, here, while its files are in the cache: ImageFsInfo reads the record.
      await recordSnapshotUsage(tmp);
      try {
        await fs.rename(tmp, final);
      } catch (e) {
        // Another process (an offline import) finished the same chain first: theirs is as good.
        if (!['ENOTEMPTY', 'EEXIST'].includes((e as NodeJS.ErrnoException).code ?? '')) throw e;
        await fs.rm(tmp, { recursive: true, force: true });
      }
    } catch (e) {
      await fs.rm(tmp, { recursive: true, force: true });
      throw e;
    }
  }

  /**
   * A fresh path (not created) for unpacking a layer before its chain ID is known, e.g.
   * while it downloads: named like a temporary snapshot, so a start after a crash removes it.
   */
  scratchDir(layerDigest: string): string {
    return path.join(this.dir, `${TEMP_PREFIX}${hexOf(layerDigest)}-${process.pid}-${randomBytes(4).toString('hex')}`);
  }

  /** Chain IDs of the complete snapshots on disk. */
  async list(): Promise<string[]> {
    const names = await fs.readdir(this.dir).catch(() => [] as string[]);
    return names.filter((n) => /^[0-9a-f]{64}$/.test(n)).map((n) => `sha256:${n}`);
  }

  /** Removes a snapshot: renamed aside first, so a half-deleted one never looks whole. */
  async remove(chainId: string): Promise<void> {
    const hex = hexOf(chainId);
    const trash = path.join(this.dir, `${TRASH_PREFIX}${hex}-${randomBytes(4).toString('hex')}`);
    try {
      await fs.rename(path.join(this.dir, hex), trash);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw e;
    }
    await fs.rm(trash, { recursive: true, force: true });
  }

  /** Removes what an interrupted unpack or removal left (called at daemon start, before any pull). */
  async removeLeftovers(): Promise<string[]> {
    const names = await fs.readdir(this.dir).catch(() => [] as string[]);
    const stale = names.filter((n) => n.startsWith(TRASH_PREFIX) || (n.startsWith(TEMP_PREFIX) && !processAlive(Number(n.split('-')[2]))));
    for (const n of stale) await fs.rm(path.join(this.dir, n), { recursive: true, force: true });
    return stale;
  }

  /** overlayfs lowerdir= value for a chain (bottom-first chain IDs): topmost layer first. */
  lowerDirs(chain: readonly string[]): string {
    if (chain.length === 0) throw new Error('an image with no layers has no root filesystem');
    return [...chain].reverse().map((c) => this.fsDir(c)).join(':');
  }
}


export interface OverlayRootfs {
  /** The image's chain IDs, bottom first. */
  chain: readonly string[];
  /** Per-container directory holding upper/ and work/. */
  layerDir: string;
  /** Where the merged root filesystem is mounted. */
  target: string;
  readonly?: boolean;
}

/**
 * Mounts a container root filesystem: the image's snapshots as lower layers, a private
 * upper/work pair for writes. Read-only mounts still get an upper so an image of a
 * single layer mounts the same way (overlayfs wants two layers without one).
 */
export async function mountOverlayRootfs(snapshots: SnapshotStore, o: OverlayRootfs): Promise<void> {
  const upper = path.join(o.layerDir, 'upper');
  const work = path.join(o.layerDir, 'work');
  await fs.mkdir(upper, { recursive: true, mode: 0o755 });
  await fs.mkdir(work, { recursive: true, mode: 0o700 });
  await fs.mkdir(o.target, { recursive: true, mode: 0o755 });
  const lower = snapshots.lowerDirs(o.chain);
  const options = `lowerdir=${lower},upperdir=${upper},workdir=${work}${o.readonly ? ',ro' : ''}`;
  if (options.length > 4000) {
    throw new Error(`image has too many layers (${o.chain.length}) for one overlay mount's options`);
  }
  await execChecked('mount', ['-t', 'overlay', 'overlay', '-o', options, o.target], { timeoutMs: 30_000 });
}

/** Unmounts a root filesystem mounted by mountOverlayRootfs; not mounted is fine. */
export async function unmountOverlayRootfs(target: string): Promise<void> {
  if (!(await isMountPoint(target))) return;
  await execChecked('umount', ['--lazy', target], { timeoutMs: 30_000 });
}
