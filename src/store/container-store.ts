import path from 'node:path';
import type { ContainerRecord } from '../container/record.js';
import { RecordStore } from './record-store.js';

/** Container records: <root_dir>/containers/<id>/container.json, next to the writable layer. */
export class ContainerStore extends RecordStore<ContainerRecord> {
  constructor(rootDir: string) {
    super(path.join(rootDir, 'containers'), 'container.json');
  }
}
