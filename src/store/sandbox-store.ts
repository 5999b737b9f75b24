import { promises as fs } from 'node:fs';
import path from 'node:path';
import { writeJsonAtomic, isErrno } from '../util/atomic.js';
import type { SandboxRecord } from '../sandbox/record.js';

const RECORD_FILE = 'sandbox.json';

export interface LoadedRecords {
  records: SandboxRecord[];
  /** Directories whose record could not be read: reported, never fatal. */
  errors: { dir: string; error: string }[];
}

/**
 * Durable sandbox records, one JSON file per sandbox under <root>/sandboxes/<id>/,
 * each written atomically before the RPC that changed it answers.
 */
export class SandboxStore {
  readonly dir: string;

  constructor(rootDir: string) {
    this.dir = path.join(rootDir, 'sandboxes');
  }

  recordDir(id: string): string {
    return path.join(this.dir, id);
  }

  async save(record: SandboxRecord): Promise<void> {
    record.updatedAt = new Date().toISOString();
    await writeJsonAtomic(path.join(this.recordDir(record.id), RECORD_FILE), record);
  }

  async remove(id: string): Promise<void> {
    await fs.rm(this.recordDir(id), { recursive: true, force: true });
  }

  async loadAll(): Promise<LoadedRecords> {
    let entries: string[];
    try {
      entries = await fs.readdir(this.dir);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return { records: [], errors: [] };
      throw e;
    }
    const out: LoadedRecords = { records: [], errors: [] };
    await Promise.all(
      entries.map(async (name) => {
        const dir = path.join(this.dir, name);
        try {
          const text = await fs.readFile(path.join(dir, RECORD_FILE), 'utf8');
          const rec = JSON.parse(text) as SandboxRecord;
          if (typeof rec.id !== 'string' || rec.id !== name) throw new Error(`record ID ${String(rec.id)} does not match its directory`);
          out.records.push(rec);
        } catch (e) {
          out.errors.push({ dir, error: (e as Error).message });
        }
      }),
    );
    return out;
  }
}
