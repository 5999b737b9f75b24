import { promises as fs, readdirSync } from 'node:fs';
import path from 'node:path';
import { setImmediate } from 'node:timers/promises';
import { writeFileAtomicSync, writeJsonAtomic, isErrno } from '../util/atomic.js';
import { fsyncDir } from '../util/fs.js';
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

  recordDir(id: string): string {
    return path.join(this.dir, id);
  }

  /** durable false: atomic but not fsynced (see writeFileAtomic), for writes a power loss may lose harmlessly. */
  async save(record: T, opts: { durable?: boolean } = {}): Promise<void> {
    record.updatedAt = new Date().toISOString();
    const file = path.join(this.recordDir(record.id), this.fileName);
    if (opts.durable === false) writeFileAtomicSync(file, JSON.stringify(record, null, 2) + '\n');
    else await writeJsonAtomic(file, record);
  }

  /** Makes a record saved with durable false durable: fsyncs the file, its folder and the store's. */
  async sync(id: string): Promise<void> {
    const fh = await fs.open(path.join(this.recordDir(id), this.fileName), 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fsyncDir(this.recordDir(id));
    await fsyncDir(this.dir);
  }

  async remove(id: string): Promise<void> {
    await fs.rm(this.recordDir(id), { recursive: true, force: true });
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
