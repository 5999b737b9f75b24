/** Small file-system helpers shared across the daemon. */
import { promises as fs, closeSync, fsync, openSync } from 'node:fs';
import { promisify } from 'node:util';

const fsyncFd = promisify(fsync);

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
  await fsyncPath(dir);
}

/**
 * Only the fsync goes to the thread pool: open and close of a file or folder whose
 * blocks are cached take microseconds, while each thread-pool round trip costs the
 * daemon ~0.1 ms of CPU (a wake-up of a worker and of the event loop), three per fsync.
 */
async function fsyncPath(p: string): Promise<void> {
  const fd = openSync(p, 'r');
  try {
    await fsyncFd(fd);
  } finally {
    closeSync(fd);
  }
}

/** fsyncs a file's data and inode (opened read-only: fsync needs no write access). */
export async function fsyncFile(file: string): Promise<void> {
  await fsyncPath(file);
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
