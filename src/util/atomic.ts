import { promises as fs, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fsyncDir } from './fs.js';

/**
 * Writes a file so that readers see either the old or the new content, never a
 * torn one: temp file in the same directory, fsync, rename, fsync the directory.
 * durable false skips both fsyncs: still atomic (and visible after a daemon crash), only
 * a power loss may bring back the previous version; for callers to whom that is harmless.
 */
export async function writeFileAtomic(file: string, data: string | Buffer, mode = 0o600, durable = true): Promise<void> {
  const dir = path.dirname(file);
  await fs.mkdir(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await fs.open(tmp, 'w', mode);
  try {
    await fh.writeFile(data);
    if (durable) await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await fs.rename(tmp, file);
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  }
  if (durable) await fsyncDir(dir);
}

/**
 * writeFileAtomic without fsync, synchronously: with no fsync to wait for, the five calls
 * (mkdir, open, write, close, rename) are page-cache work of microseconds, while through
 * the thread pool each waited its turn behind other pods' work (~6 ms per record under load).
 */
export function writeFileAtomicSync(file: string, data: string | Buffer, mode = 0o600): void {
  const dir = path.dirname(file);
  mkdirSync(dir, { recursive: true });
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  writeFileSync(tmp, data, { mode });
  try {
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
}

export async function writeJsonAtomic(file: string, value: unknown, mode = 0o600, durable = true): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n', mode, durable);
}

export function isErrno(e: unknown, ...codes: string[]): boolean {
  return typeof e === 'object' && e !== null && codes.includes((e as NodeJS.ErrnoException).code ?? '');
}
