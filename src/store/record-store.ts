import { closeSync, existsSync, ftruncateSync, linkSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setImmediate } from 'node:timers/promises';
import { writeJsonAtomic, isErrno } from '../util/atomic.js';
import { fsyncDir, fsyncFile } from '../util/fs.js';
import { MAX_STATE_FILE_BYTES, readRegularFileSync } from '../util/safe-read.js';

export interface LoadedRecords<T> {
  records: T[];
  /** Directories whose record could not be read: reported, never fatal. */
  errors: { dir: string; error: string }[];
}

/**
 * Durable records, one JSON file per object under <dir>/<id>/<fileName>, each written
 * atomically before the RPC that changed it answers. Sandboxes and containers use it.
 */
export class RecordStore<T extends { id: string; updatedAt?: string }> {
  constructor(
    readonly dir: string,
    private readonly fileName: string,
  ) {}

  /**
   * INODES_RECYCLED: files of replaced or removed records, kept (in a spare folder) to be
   * written again instead of new ones. On this kind of host (ext4 without a journal) each new
   * inode costs ~0.3 ms of kernel CPU (the allocator skips every inode freed in the last
   * seconds, and the daemon frees one per save), and a pod's records made and freed four.
   * Their content is never read: a spare is truncated before its first byte is written.
   * The folder is <dir>/../.<name of dir>-spare.
   */
  private readonly spares: string[] = [];
  private spareSerial = 0;
  private spareDirMade = false;
  private static readonly MAX_SPARES = 32;

  /** Beside the store's folder (same file system, for rename and link), not in it: that holds records only. */
  private spareDir(): string {
    return path.join(path.dirname(this.dir), `.${path.basename(this.dir)}-spare`);
  }

  /** A path in the spare folder for an inode about to be kept; undefined when the pool is full. */
  private newSparePath(): string | undefined {
    if (this.spares.length >= RecordStore.MAX_SPARES) return undefined;
    if (!this.spareDirMade) mkdirSync(this.spareDir(), { recursive: true, mode: 0o700 });
    this.spareDirMade = true;
    return path.join(this.spareDir(), String(++this.spareSerial));
  }

  /** A spare renamed to `tmp` and opened for writing; undefined when there is none. */
  private openSpareAs(tmp: string): number | undefined {
    const spare = this.spares.pop();
    if (!spare) return undefined;
    try {
      renameSync(spare, tmp);
      return openSync(tmp, 'r+');
    } catch {
      return undefined; // gone (a hand-cleaned folder): a new file then
    }
  }

  /**
   * Writes file atomically (temp file + rename, not fsynced), the temp file being a spare when
   * there is one, and keeps the inode the rename replaces as a spare.
   */
  private writeRecycling(file: string, data: string): void {
    const dir = path.dirname(file);
    mkdirSync(dir, { recursive: true });
    const tmp = path.join(dir, `.${path.basename(file)}.tmp`);
    const bytes = Buffer.from(data, 'utf8');
    // A spare is written over in place and cut to the new length (its blocks reused, none
    // freed and allocated again); without one, a new file.
    const fd = this.openSpareAs(tmp) ?? openSync(tmp, 'w', 0o600);
    try {
      writeFileSync(fd, bytes);
      ftruncateSync(fd, bytes.length);
    } catch (e) {
      rmSync(tmp, { force: true }); // a failed write (ENOSPC) leaves no temp file
      throw e;
    } finally {
      closeSync(fd);
    }
    let kept: string | undefined;
    if (existsSync(file)) {
      try {
        kept = this.newSparePath();
        if (kept) linkSync(file, kept);
      } catch {
        kept = undefined; // the replaced inode is freed, as without spares
      }
    }
    try {
      renameSync(tmp, file);
    } catch (e) {
      // The kept link still names the live record: it must not become a spare.
      if (kept) rmSync(kept, { force: true });
      rmSync(tmp, { force: true });
      throw e;
    }
    if (kept) this.spares.push(kept);
  }

  recordDir(id: string): string {
    return path.join(this.dir, id);
  }

  /** durable false: atomic but not fsynced (see writeFileAtomic), for writes a power loss may lose harmlessly. */
  async save(record: T, opts: { durable?: boolean } = {}): Promise<void> {
    record.updatedAt = new Date().toISOString();
    const file = path.join(this.recordDir(record.id), this.fileName);
    if (opts.durable === false) this.writeRecycling(file, JSON.stringify(record, null, 2) + '\n');
    else await writeJsonAtomic(file, record);
  }

  /**
   * Makes a record saved with durable false durable: fsyncs the file, its folder and the
   * store's. The three are independent (the record is durable once all are done, in any
   * order), so they run at once; the store folder's fsync is shared (syncStoreDir).
   */
  async sync(id: string): Promise<void> {
    const file = path.join(this.recordDir(id), this.fileName);
    const steps = [fsyncFile(file), this.syncDir(this.recordDir(id)), this.syncStoreDir()];
    const settled = await Promise.allSettled(steps);
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** fsync of a folder (tests count them). */
  protected syncDir(dir: string): Promise<void> {
    return fsyncDir(dir);
  }

  private storeDirSyncRunning: Promise<void> | undefined;
  private storeDirSyncQueued: Promise<void> | undefined;

  /**
   * Group commit of the store folder: an fsync of it covers every record folder made
   * before the fsync started. A caller (whose folder exists already) joins the fsync queued
   * behind the one under way, which has not started yet and so covers it; one fsync thus
   * serves all the Runs that asked while the previous one ran, instead of one each.
   */
  private syncStoreDir(): Promise<void> {
    if (this.storeDirSyncQueued) return this.storeDirSyncQueued;
    const start = (): Promise<void> => {
      const run = this.syncDir(this.dir).finally(() => {
        if (this.storeDirSyncRunning === run) this.storeDirSyncRunning = undefined;
      });
      this.storeDirSyncRunning = run;
      return run;
    };
    if (!this.storeDirSyncRunning) return start();
    const queued = this.storeDirSyncRunning
      .catch(() => { /* its own callers got that failure; this one is a new fsync */ })
      .then(() => {
        this.storeDirSyncQueued = undefined;
        return start();
      });
    this.storeDirSyncQueued = queued;
    return queued;
  }

  /** Synchronous, as save is: one small file and its folder. The file is kept as a spare (INODES_RECYCLED). */
  async remove(id: string): Promise<void> {
    try {
      const kept = this.newSparePath();
      if (kept) {
        renameSync(path.join(this.recordDir(id), this.fileName), kept);
        this.spares.push(kept);
      }
    } catch {
      // No record file (a retried Remove), or no spare folder: the file goes with its folder.
    }
    rmSync(this.recordDir(id), { recursive: true, force: true });
  }

  /**
   * Every record, for recovery at start-up (before the daemon serves): read synchronously,
   * because 500 records through the thread pool took ten times as long (readRegularFileSync).
   */
  async loadAll(): Promise<LoadedRecords<T>> {
    await setImmediate(); // one turn of the event loop, as an async read would give callers
    let entries: string[];
    try {
      entries = readdirSync(this.dir);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return { records: [], errors: [] };
      throw e;
    }
    const out: LoadedRecords<T> = { records: [], errors: [] };
    // Spares of an earlier run are dropped (their names would clash with this run's).
    rmSync(this.spareDir(), { recursive: true, force: true });
    this.spares.length = 0;
    this.spareDirMade = false;
    for (const name of entries) {
      const dir = path.join(this.dir, name);
      try {
        const rec = JSON.parse(readRegularFileSync(path.join(dir, this.fileName), { maxBytes: MAX_STATE_FILE_BYTES }).toString('utf8')) as T;
        if (typeof rec.id !== 'string' || rec.id !== name) throw new Error(`record ID ${String(rec.id)} does not match its directory`);
        out.records.push(rec);
      } catch (e) {
        out.errors.push({ dir, error: (e as Error).message });
      }
    }
    return out;
  }
}
