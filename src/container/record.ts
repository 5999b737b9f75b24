/**
 * What Corral keeps about an application container, and where: the record (durable,
 * `<root_dir>/containers/<id>/container.json`, written atomically before each RPC that
 * changed it answers) next to the writable layer, and the volatile bundle, rootfs mount
 * point and conmon files under `<state_dir>/containers/<id>/`.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { isErrno, writeJsonAtomic } from '../util/atomic.js';

export type ContainerState = 'creating' | 'created' | 'running' | 'exited';

export interface ContainerRecord {
  version: 1;
  id: string;
  sandboxId: string;
  /** The reservation key: name_sandboxName_sandboxNamespace_sandboxUid_attempt. */
  name: string;
  metadata: { name: string; attempt: number };
  /** The ContainerConfig as received (camelCase). */
  config: any;
  /** Image ID (config digest) and the reference the container was created from. */
  imageId: string;
  imageRef: string;
  runtimeHandler: string;
  state: ContainerState;
  createdAt: string;
  startedAt: string;
  finishedAt: string;
  exitCode: number;
  reason: string;
  message: string;
  pid: number;
  logPath: string;
  stopSignal: string;
  /** What may exist, each cleared once removed (the same intent discipline as sandboxes). */
  resources: {
    /** Overlay mount point of the root filesystem, and the image layers it uses. */
    rootfs: { target: string; layerDir: string; chain: string[] } | null;
    /** The OCI runtime (and conmon) may know a container with this ID. */
    runtimeContainer: boolean;
  };
  updatedAt?: string;
}

const RECORD_FILE = 'container.json';

export class ContainerStore {
  readonly dir: string;

  constructor(rootDir: string) {
    this.dir = path.join(rootDir, 'containers');
  }

  recordDir(id: string): string {
    return path.join(this.dir, id);
  }

  async save(record: ContainerRecord): Promise<void> {
    record.updatedAt = new Date().toISOString();
    await writeJsonAtomic(path.join(this.recordDir(record.id), RECORD_FILE), record);
  }

  async remove(id: string): Promise<void> {
    await fs.rm(this.recordDir(id), { recursive: true, force: true });
  }

  async loadAll(): Promise<{ records: ContainerRecord[]; errors: { dir: string; error: string }[] }> {
    let names: string[];
    try {
      names = await fs.readdir(this.dir);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return { records: [], errors: [] };
      throw e;
    }
    const out = { records: [] as ContainerRecord[], errors: [] as { dir: string; error: string }[] };
    for (const name of names) {
      const dir = path.join(this.dir, name);
      try {
        const rec = JSON.parse(await fs.readFile(path.join(dir, RECORD_FILE), 'utf8')) as ContainerRecord;
        if (rec.id !== name) throw new Error(`record ID ${String(rec.id)} does not match its directory`);
        out.records.push(rec);
      } catch (e) {
        out.errors.push({ dir, error: (e as Error).message });
      }
    }
    return out;
  }
}
