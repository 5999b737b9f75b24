import path from 'node:path';
import { invalidArgument } from '../errors.js';
import { MAX_IMAGE_ACCOUNT_FILE_BYTES, SafeReadError, readFileInRoot } from '../util/safe-read.js';

/**
 * What ImageStatus reports of an image's configured user: a numeric uid when the user
 * part of `config.User` is a number, else a username. The group part is not reported.
 * An empty user reports neither (kubelet then treats the image as running as root).
 */
export function imageUser(user: string | undefined): { uid?: number; username: string } {
  const name = (user ?? '').split(':', 1)[0]!.trim();
  if (name === '') return { username: '' };
  if (/^[0-9]+$/.test(name)) return { uid: Number(name), username: '' };
  return { username: name };
}

/** Where the runtime mounts file systems of its own before it reads /etc/passwd in the container. */
const RUNTIME_MOUNTS = ['proc', 'sys', 'dev'];

/** An account file the image has but Corral refused to read: no name in it can be looked up. */
export interface UnreadableAccountFile {
  unreadable: string;
}

/**
 * The image's /etc/passwd or /etc/group, for user and group lookups, read with the safe
 * reader beneath the container's root filesystem: symlinks resolve inside it, only a
 * regular file of at most MAX_IMAGE_ACCOUNT_FILE_BYTES (4 MiB) is read, so a FIFO, a
 * device or a huge file answers at once. A missing file is '' (no such user, as
 * containerd and CRI-O treat it); a refused one is UnreadableAccountFile, with which
 * numeric IDs still work and a name lookup fails saying why. A FIFO, device or socket is
 * refused outright (INVALID_ARGUMENT), whatever the user: the OCI runtime itself opens
 * these files inside the container to set up the user (runc always does) and would
 * block there, so such an image cannot run; for the same reason a symlink into /proc,
 * /sys or /dev (the runtime's mounts, not the image's files) is refused, but /dev/null.
 */
export async function readImageAccountFile(rootfs: string, file: 'etc/passwd' | 'etc/group'): Promise<string | UnreadableAccountFile> {
  try {
    return (await readFileInRoot(rootfs, file, { maxBytes: MAX_IMAGE_ACCOUNT_FILE_BYTES, describe: `the image's /${file}`, refuseUnder: RUNTIME_MOUNTS })).toString('utf8');
  } catch (e) {
    // A link to /dev/null is an empty file there too; any other path in /dev, /proc or /sys
    // is the runtime's (a /proc/kmsg would block the runtime reading it): refused.
    if (e instanceof SafeReadError && e.code === 'EXDEV' && path.posix.normalize(e.resolvedPath ?? '') === '/dev/null') return '';
    if (e instanceof SafeReadError && e.code === 'EXDEV') {
      throw invalidArgument(`${e.message}: the OCI runtime would read the container's file there when it starts, so this image cannot run`);
    }
    if (e instanceof SafeReadError && (e.code === 'ENOENT' || e.code === 'ENOTDIR')) return '';
    if (e instanceof SafeReadError && (e.kind === 'fifo' || e.kind === 'device' || e.kind === 'socket')) {
      throw invalidArgument(`${e.message}: the OCI runtime would block reading it when the container starts, so this image cannot run`);
    }
    return { unreadable: (e as Error).message };
  }
}
