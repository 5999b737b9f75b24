import path from 'node:path';
import type { SandboxRecord } from '../sandbox/record.js';
import { RecordStore } from './record-store.js';

/** Sandbox records: <root_dir>/sandboxes/<id>/sandbox.json. */
export class SandboxStore extends RecordStore<SandboxRecord> {
  constructor(rootDir: string) {
    super(path.join(rootDir, 'sandboxes'), 'sandbox.json');
  }
}
