/** Small file-system helpers shared across the daemon. */
import { promises as fs } from 'node:fs';

/**
 * Whether something (a file, a directory, a symlink even if dangling) is at p. Absent is
 * false; any other error (e.g. EACCES) throws rather than pass for "absent".
 */
export async function exists(p: string): Promise<boolean> {
  try {
    await fs.lstat(p);
    return true;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return false;
    throw e;
  }
}

/** fsyncs a directory, so that a rename or create in it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const dh = await fs.open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** fsyncs a file's data and inode (opened read-only: fsync needs no write access). */
export async function fsyncFile(file: string): Promise<void> {
  const fh = await fs.open(file, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** A text file's content; undefined when it does not exist (other errors throw). */
export async function readTextIfExists(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}
