/**
 * Reading files that Corral does not own: files of an image's root filesystem, files a
 * CRI client names (a localhost seccomp profile), and Corral's own JSON state, with the
 * same guarantees everywhere:
 *
 * - Only regular files are read. The file is first opened with O_PATH (which opens
 *   nothing: no FIFO wait, no device driver's open), fstat-ed, and only a regular file is
 *   re-opened for reading (O_NONBLOCK, O_NOCTTY) through /proc/self/fd, so it is the same
 *   inode that was checked. A FIFO, device, socket or directory is refused at once.
 * - Every read is capped: a size over the cap (fstat) is refused before any allocation,
 *   and the read itself stops one byte past the cap in case the file grows meanwhile.
 * - Files of a root (readFileInRoot) are resolved *inside* that root as a chroot would:
 *   each component is opened with O_NOFOLLOW relative to the directory fd before it
 *   (through /proc/self/fd/<fd>/<name>; Node has no openat2), symlinks are read and
 *   resolved by Corral against the root, and `..` never climbs above it. No path an image
 *   contains can make Corral open a file outside its root.
 *
 * Errors are SafeReadError, with an errno-like `code` (ENOENT and ENOTDIR when the file is
 * missing, ENOTREG, EFBIG, ELOOP, EINVAL, EXDEV when it is refused) so callers can tell
 * "absent" from "refused".
 */
import { close as closeCb, closeSync, constants, fstat as fstatCb, fstatSync, open as openCb, openSync, read as readCb, readSync, readlink as readlinkCb, type Stats } from 'node:fs';
import { promisify } from 'node:util';

const openFd = promisify(openCb);
const fstatFd = promisify(fstatCb);
const readFd = promisify(readCb);
const closeFd = promisify(closeCb);
const readLink = promisify(readlinkCb);

/** Linux's O_PATH (the same value on every architecture Node runs on); Node does not export it. */
const O_PATH = 0o10000000;
const { O_RDONLY, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY, O_DIRECTORY } = constants;

/**
 * The one cap of every JSON document of an image (index, manifest, config) and of
 * pulled manifests (the registry client uses it too): 4 MiB, containerd's manifest limit.
 */
export const MAX_JSON_BLOB_BYTES = 4 * 1024 * 1024;
/** Cap of /etc/passwd and /etc/group read from an image (far above any real one). */
export const MAX_IMAGE_ACCOUNT_FILE_BYTES = 4 * 1024 * 1024;
/** Cap of a localhost seccomp profile (runtime/default is about 20 KB). */
export const MAX_SECCOMP_PROFILE_BYTES = 4 * 1024 * 1024;
/**
 * Cap of Corral's own state files (records, images.json, CNI cache): generous (a record
 * holds a CRI config, itself up to the 16 MiB gRPC message cap), only there so a
 * corrupt or planted file cannot make the daemon allocate without bound.
 */
export const MAX_STATE_FILE_BYTES = 64 * 1024 * 1024;

/** Symlinks followed while resolving one path, as the kernel's MAXSYMLINKS. */
const MAX_SYMLINKS = 40;
/** Path components walked for one path, symlink targets included. */
const MAX_COMPONENTS = 4096;
/** Directories deep (each holds an fd while the path is walked). */
const MAX_DEPTH = 256;

export class SafeReadError extends Error {
  constructor(
    readonly code: 'ENOENT' | 'ENOTDIR' | 'ENOTREG' | 'EFBIG' | 'ELOOP' | 'EINVAL' | 'EACCES' | 'EIO' | 'EXDEV',
    readonly file: string,
    /** What is wrong, without the file's name. */
    readonly reason: string,
    /** For ENOTREG: what the file is instead. */
    readonly kind?: 'directory' | 'fifo' | 'device' | 'socket' | 'other',
    /** For EXDEV: the path (from the root) the file resolves to. */
    readonly resolvedPath?: string,
  ) {
    super(`${file}: ${reason}`);
    this.name = 'SafeReadError';
  }
}

export interface SafeReadOptions {
  /** Largest size read; a larger file is refused with EFBIG. */
  maxBytes: number;
  /** How the file is named in errors (default: its path). */
  describe?: string;
  /**
   * readFileInRoot only: top-level directories of the root (e.g. proc, sys, dev) that the
   * container runtime mounts over, so what the image has there is not what the container
   * will see: a path resolving into one is refused with EXDEV (resolvedPath says where).
   */
  refuseUnder?: readonly string[];
}

/**
 * Reads a regular file at a host path named by a trusted party (symlinks are followed,
 * as a path in Corral's config or from kubelet may legitimately be one).
 */
export async function readRegularFile(file: string, opts: SafeReadOptions): Promise<Buffer> {
  const name = opts.describe ?? file;
  const pathFd = await openFd(file, O_PATH).catch((e) => {
    throw fromErrno(e, name);
  });
  try {
    return await readThroughPathFd(pathFd, name, opts.maxBytes);
  } finally {
    await closeFd(pathFd).catch(() => undefined);
  }
}

/**
 * readRegularFile with synchronous syscalls, the same checks and caps. For reading many
 * small files at start-up, before the daemon serves: each async call is a thread-pool round
 * trip (seven per file), and 500 sandbox records took 0.2–1.4 s that way on 2 busy cores
 * against 20–130 ms like this. While serving, only for small files whose blocks are
 * cached (a CNI cache entry written at ADD): it blocks the event loop.
 */
export function readRegularFileSync(file: string, opts: SafeReadOptions): Buffer {
  const name = opts.describe ?? file;
  const sys = <T>(fn: () => T): T => {
    try {
      return fn();
    } catch (e) {
      throw fromErrno(e, name);
    }
  };
  const pathFd = sys(() => openSync(file, O_PATH));
  try {
    const st = sys(() => fstatSync(pathFd));
    checkRegular(st, name, opts.maxBytes);
    const fd = sys(() => openSync(`/proc/self/fd/${pathFd}`, O_RDONLY | O_NONBLOCK | O_NOCTTY));
    try {
      const st2 = sys(() => fstatSync(fd));
      if (st2.ino !== st.ino || st2.dev !== st.dev) throw new SafeReadError('EIO', name, 'changed while it was opened');
      checkRegular(st2, name, opts.maxBytes);
      let buf = Buffer.allocUnsafe(Math.min(st2.size, opts.maxBytes) + 1);
      let total = 0;
      for (;;) {
        if (total === buf.length) {
          if (buf.length > opts.maxBytes) throw new SafeReadError('EFBIG', name, `grew past the ${opts.maxBytes}-byte limit while it was read`);
          const bigger = Buffer.allocUnsafe(Math.min(buf.length * 2, opts.maxBytes + 1));
          buf.copy(bigger, 0, 0, total);
          buf = bigger;
        }
        const n = sys(() => readSync(fd, buf, total, buf.length - total, null));
        if (n === 0) break;
        total += n;
      }
      if (total > opts.maxBytes) throw new SafeReadError('EFBIG', name, `grew past the ${opts.maxBytes}-byte limit while it was read`);
      return buf.subarray(0, total);
    } finally {
      closeSync(fd);
    }
  } finally {
    closeSync(pathFd);
  }
}

/**
 * Reads `relPath` of the directory tree at `root` (an image's root filesystem, a pod's
 * directory) as if `root` were `/`: symlinks resolve inside `root`, never outside it.
 * `root` itself is trusted; `relPath` may not contain `..`.
 */
export async function readFileInRoot(root: string, relPath: string, opts: SafeReadOptions): Promise<Buffer> {
  const name = opts.describe ?? relPath;
  const pathFd = await openInRoot(root, relPath, name, opts.refuseUnder ?? []);
  try {
    return await readThroughPathFd(pathFd, name, opts.maxBytes);
  } finally {
    await closeFd(pathFd).catch(() => undefined);
  }
}

/**
 * readRegularFile, parsed as JSON; `undefined` when the file does not exist. Other errors
 * (and bad JSON) throw, as does anything but a regular file or a file over maxBytes.
 */
export async function readJsonIfExists<T>(file: string, maxBytes = MAX_STATE_FILE_BYTES): Promise<T | undefined> {
  let buf: Buffer;
  try {
    buf = await readRegularFile(file, { maxBytes });
  } catch (e) {
    if (e instanceof SafeReadError && e.code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return JSON.parse(buf.toString('utf8')) as T;
  } catch (e) {
    throw new Error(`${file} is not valid JSON: ${(e as Error).message}`);
  }
}

/** An O_PATH fd of the file `relPath` names under `root`, every component resolved inside `root`. */
async function openInRoot(root: string, relPath: string, name: string, refuseUnder: readonly string[]): Promise<number> {
  const requested = relPath.split('/');
  if (requested.includes('..')) throw new SafeReadError('EINVAL', name, 'the path may not contain ".."');
  const rootFd = await openFd(root, O_PATH | O_DIRECTORY).catch((e) => {
    throw fromErrno(e, root);
  });
  // The directories walked so far, rootFd first: `..` pops (never below the root).
  const dirs: number[] = [rootFd];
  const closeAll = async (fds: number[]) => {
    for (const fd of fds) await closeFd(fd).catch(() => undefined);
  };
  let pending = requested.filter((c) => c !== '' && c !== '.');
  let links = 0;
  let steps = 0;
  try {
    while (pending.length > 0) {
      if (++steps > MAX_COMPONENTS) throw new SafeReadError('ELOOP', name, `more than ${MAX_COMPONENTS} path components to resolve`);
      const component = pending.shift()!;
      if (component === '' || component === '.') continue;
      if (component === '..') {
        if (dirs.length > 1) await closeAll([dirs.pop()!]);
        continue;
      }
      if (dirs.length === 1 && refuseUnder.includes(component)) {
        const resolvedPath = '/' + [component, ...pending].filter((c) => c !== '' && c !== '.').join('/');
        throw new SafeReadError('EXDEV', name, `leads to ${resolvedPath}, under /${component}, which the container runtime mounts over`, undefined, resolvedPath);
      }
      const parent = `/proc/self/fd/${dirs[dirs.length - 1]}`;
      const fd = await openFd(`${parent}/${component}`, O_PATH | O_NOFOLLOW).catch((e) => {
        throw fromErrno(e, name);
      });
      let st: Stats;
      try {
        st = await fstatFd(fd);
      } catch (e) {
        await closeAll([fd]);
        throw fromErrno(e, name);
      }
      if (st.isSymbolicLink()) {
        await closeAll([fd]);
        if (++links > MAX_SYMLINKS) throw new SafeReadError('ELOOP', name, `more than ${MAX_SYMLINKS} symbolic links to resolve`);
        // readlink does not follow the last component: this reads the link itself.
        const target = await readLink(`${parent}/${component}`).catch((e) => {
          throw fromErrno(e, name);
        });
        if (target === '') throw new SafeReadError('ENOENT', name, `the symbolic link ${component} is empty`);
        if (target.startsWith('/')) await closeAll(dirs.splice(1));
        pending = [...target.split('/'), ...pending];
        continue;
      }
      if (pending.length > 0 && !st.isDirectory()) {
        await closeAll([fd]);
        throw new SafeReadError('ENOTDIR', name, `${component} is not a directory`);
      }
      if (dirs.length > MAX_DEPTH) {
        await closeAll([fd]);
        throw new SafeReadError('ELOOP', name, `more than ${MAX_DEPTH} directories deep`);
      }
      dirs.push(fd);
    }
    if (dirs.length === 1) throw new SafeReadError('ENOTREG', name, 'is a directory, not a regular file', 'directory');
    const result = dirs.pop()!;
    await closeAll(dirs.splice(0));
    return result;
  } catch (e) {
    await closeAll(dirs.splice(0));
    throw e;
  }
}

/** Checks an O_PATH fd is a regular file within the cap, then reads it through a real open. */
async function readThroughPathFd(pathFd: number, name: string, maxBytes: number): Promise<Buffer> {
  const st = await fstatFd(pathFd).catch((e) => {
    throw fromErrno(e, name);
  });
  checkRegular(st, name, maxBytes);
  // Re-opening the magic link opens the very inode checked above; O_NONBLOCK and O_NOCTTY
  // are belt and braces should it somehow not be a regular file any more.
  const fd = await openFd(`/proc/self/fd/${pathFd}`, O_RDONLY | O_NONBLOCK | O_NOCTTY).catch((e) => {
    throw fromErrno(e, name);
  });
  try {
    const st2 = await fstatFd(fd);
    if (st2.ino !== st.ino || st2.dev !== st.dev) throw new SafeReadError('EIO', name, 'changed while it was opened');
    checkRegular(st2, name, maxBytes);
    return await readCapped(fd, st2.size, name, maxBytes);
  } finally {
    await closeFd(fd).catch(() => undefined);
  }
}

function checkRegular(st: Stats, name: string, maxBytes: number): void {
  if (!st.isFile()) throw new SafeReadError('ENOTREG', name, `is ${kindOf(st)}, not a regular file`, kindCode(st));
  if (st.size > maxBytes) throw new SafeReadError('EFBIG', name, `is ${st.size} bytes, more than the ${maxBytes}-byte limit`);
}

/** Reads to EOF, never holding more than maxBytes + 1 bytes. */
async function readCapped(fd: number, sizeHint: number, name: string, maxBytes: number): Promise<Buffer> {
  let buf = Buffer.allocUnsafe(Math.min(sizeHint, maxBytes) + 1);
  let total = 0;
  for (;;) {
    if (total === buf.length) {
      if (buf.length > maxBytes) throw new SafeReadError('EFBIG', name, `grew past the ${maxBytes}-byte limit while it was read`);
      const bigger = Buffer.allocUnsafe(Math.min(buf.length * 2, maxBytes + 1));
      buf.copy(bigger, 0, 0, total);
      buf = bigger;
    }
    const { bytesRead } = await readFd(fd, buf, total, buf.length - total, null).catch((e) => {
      throw fromErrno(e, name);
    });
    if (bytesRead === 0) break;
    total += bytesRead;
  }
  if (total > maxBytes) throw new SafeReadError('EFBIG', name, `grew past the ${maxBytes}-byte limit while it was read`);
  return buf.subarray(0, total);
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  if (st.isSymbolicLink()) return 'a symbolic link';
  return 'not a file';
}

function kindCode(st: Stats): SafeReadError['kind'] {
  if (st.isDirectory()) return 'directory';
  if (st.isFIFO()) return 'fifo';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'device';
  if (st.isSocket()) return 'socket';
  return 'other';
}

/** The kernel's error, named after the file Corral meant (not /proc/self/fd/...). */
function fromErrno(e: unknown, name: string): SafeReadError {
  const code = (e as NodeJS.ErrnoException).code;
  switch (code) {
    case 'ENOENT':
      return new SafeReadError('ENOENT', name, 'does not exist');
    case 'ENOTDIR':
      return new SafeReadError('ENOTDIR', name, 'a component of the path is not a directory');
    case 'ELOOP':
      return new SafeReadError('ELOOP', name, 'too many symbolic links');
    case 'EACCES':
    case 'EPERM':
      return new SafeReadError('EACCES', name, 'permission denied');
    default:
      return new SafeReadError('EIO', name, (e as Error).message);
  }
}
