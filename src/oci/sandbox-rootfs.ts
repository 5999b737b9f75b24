/**
 * Corral's built-in sandbox image: a tiny rootfs holding only /pause and the mount
 * points the sandbox spec needs, shared read-only by every pod, and the bundle writer
 * that points a sandbox's config.json at it.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';
import { isErrno, writeFileAtomic, writeJsonAtomic } from '../util/atomic.js';
import { exists, readTextIfExists } from '../util/fs.js';
import type { OciSpec } from './oci-types.js';

/** Directories the rootfs carries as mount points (the runtime mounts over them). */
const ROOTFS_DIRS = ['proc', 'dev', 'dev/shm', 'dev/pts', 'dev/mqueue', 'sys', 'etc', 'tmp'];
/** Empty files the sandbox spec bind-mounts onto. */
const ROOTFS_FILES = ['etc/resolv.conf', 'etc/hostname', 'etc/hosts'];
const DIGEST_FILE = 'pause.sha256';

/** Where the built-in rootfs lives under Corral's root dir. */
export function builtinSandboxRootfsPath(rootDir: string): string {
  return path.join(rootDir, 'sandbox-image', 'builtin', 'rootfs');
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Creates the mount-point skeleton inside `rootfs` (missing entries only). */
async function ensureSkeleton(rootfs: string): Promise<void> {
  for (const d of ROOTFS_DIRS) {
    await fs.mkdir(path.join(rootfs, d), { recursive: true, mode: 0o755 });
    await fs.chmod(path.join(rootfs, d), d === 'tmp' ? 0o1777 : 0o755);
  }
  for (const f of ROOTFS_FILES) {
    const p = path.join(rootfs, f);
    if (!(await exists(p))) {
      await fs.writeFile(p, '', { mode: 0o644 });
      await fs.chmod(p, 0o644);
    }
  }
}

/** Copies the pause binary into `rootfs/pause` atomically (temp file + rename), mode 0755. */
async function installPause(rootfs: string, pauseBinary: string): Promise<void> {
  const tmp = path.join(rootfs, `.pause.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await fs.copyFile(pauseBinary, tmp);
    await fs.chmod(tmp, 0o755);
    await fs.rename(tmp, path.join(rootfs, 'pause'));
  } catch (e) {
    await fs.rm(tmp, { force: true });
    throw e;
  }
}

const inFlight = new Map<string, Promise<string>>();

/**
 * Makes sure `<rootDir>/sandbox-image/builtin/rootfs` holds the current pause binary and
 * the mount points, and returns its path. The first build happens in a temp dir renamed
 * into place; when the binary changes, /pause is replaced by rename inside the existing
 * rootfs (running pods keep the old inode; the directory itself is never removed, since
 * it may be the root of live containers). The binary's sha256 is recorded next to the rootfs.
 */
export function ensureBuiltinSandboxRootfs(rootDir: string, pauseBinary: string): Promise<string> {
  const key = `${path.resolve(rootDir)}\0${path.resolve(pauseBinary)}`;
  const running = inFlight.get(key);
  if (running) return running;
  const p = buildRootfs(rootDir, pauseBinary).finally(() => inFlight.delete(key));
  inFlight.set(key, p);
  return p;
}

async function buildRootfs(rootDir: string, pauseBinary: string): Promise<string> {
  const rootfs = builtinSandboxRootfsPath(rootDir);
  const base = path.dirname(rootfs);
  const digestFile = path.join(base, DIGEST_FILE);

  let want: string;
  try {
    want = await sha256File(pauseBinary);
  } catch (e) {
    throw new Error(`built-in sandbox image: cannot read the pause binary ${pauseBinary}: ${(e as Error).message}`);
  }
  const have = (await readTextIfExists(digestFile))?.trim();
  if (have === want && (await exists(path.join(rootfs, 'pause')))) return rootfs;

  await fs.mkdir(base, { recursive: true, mode: 0o755 });
  if (!(await exists(rootfs))) {
    const tmp = path.join(base, `.rootfs.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await fs.mkdir(tmp, { mode: 0o755 });
      await fs.chmod(tmp, 0o755);
      await ensureSkeleton(tmp);
      await installPause(tmp, pauseBinary);
      try {
        await fs.rename(tmp, rootfs);
      } catch (e) {
        // Someone else (another process) put a rootfs in place first; we update that one below.
        if (!isErrno(e, 'ENOTEMPTY', 'EEXIST')) throw e;
      }
    } finally {
      await fs.rm(tmp, { recursive: true, force: true });
    }
  }
  // Covers a rootfs renamed in by someone else, a changed binary and a half-finished old one.
  await ensureSkeleton(rootfs);
  const current = (await exists(path.join(rootfs, 'pause'))) ? await sha256File(path.join(rootfs, 'pause')) : undefined;
  if (current !== want) await installPause(rootfs, pauseBinary);
  await writeFileAtomic(digestFile, want + '\n', 0o644);
  return rootfs;
}

/**
 * Writes `<bundleDir>/config.json` for a spec whose root is the shared rootfs. The root
 * path is made absolute (runc and crun both take it; runc refuses a symlinked rootfs) and
 * read-only, so any number of sandboxes can use the same directory.
 */
export async function writeBundle(bundleDir: string, spec: OciSpec, rootfsPath: string): Promise<string> {
  if (!path.isAbsolute(rootfsPath)) throw new Error(`writeBundle: rootfs path must be absolute, got "${rootfsPath}"`);
  await fs.mkdir(bundleDir, { recursive: true, mode: 0o711 });
  const withRoot: OciSpec = { ...spec, root: { path: path.resolve(rootfsPath), readonly: true } };
  const file = path.join(bundleDir, 'config.json');
  await writeJsonAtomic(file, withRoot, 0o600);
  return file;
}
