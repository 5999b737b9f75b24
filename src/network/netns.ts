/**
 * Pinned pod network namespaces.
 *
 * Each pod sandbox gets a network namespace pinned by a bind mount on a file in
 * the netns folder (default /var/run/netns). The daemon never calls
 * unshare/setns itself: creating and removing pins is done by the static
 * helper `corral-nshelper` (native/nshelper.c), one exec per operation, and the
 * check for "is it still pinned" is a plain statfs(2) from Node.
 *
 * Naming: `<netnsDir>/corral-<sandbox ID>`, the full ID. It is deterministic, so
 * after a crash the startup sweep (listCorralNetns + sandboxIdFromNetnsPath)
 * can match every pin to a sandbox record, or remove it when there is none;
 * and with the full ID two sandboxes can never collide (CRI sandbox IDs are 64
 * hex characters: "corral-" + 64 = 71 bytes, far below NAME_MAX). The
 * `corral-` prefix keeps Corral's pins apart from `ip netns` names and other
 * runtimes' `cni-…` pins sharing the folder.
 */
import { promises as fs, lstatSync, statfsSync } from 'node:fs';
import path from 'node:path';
import { execFile, type ExecResult } from '../util/exec.js';
import { nativeBinary } from '../util/paths.js';

export const NETNS_PREFIX = 'corral-';

/** statfs(2) f_type of the nsfs filesystem (NSFS_MAGIC in linux/magic.h). */
export const NSFS_MAGIC = 0x6e736673;

const HELPER = 'corral-nshelper';
const HELPER_TIMEOUT_MS = 30_000;

/** Sandbox IDs that may become a file name: no '/', no leading '.', a sane length. */
const SANDBOX_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$/;

/** A failure reported by corral-nshelper: its JSON error, the step that failed and the errno. */
export class NetnsError extends Error {
  constructor(
    message: string,
    readonly step: string,
    readonly errno?: number,
    readonly code?: string,
  ) {
    super(message);
    this.name = 'NetnsError';
  }
}

/** The pin path for a sandbox: `${netnsDir}/corral-${sandboxId}`. Throws for IDs unfit as a file name. */
export function netnsPathFor(netnsDir: string, sandboxId: string): string {
  if (!SANDBOX_ID_RE.test(sandboxId)) {
    throw new Error(`netns: sandbox ID ${JSON.stringify(sandboxId)} cannot name a netns file`);
  }
  if (!path.isAbsolute(netnsDir)) {
    throw new Error(`netns: the netns folder must be an absolute path, got ${JSON.stringify(netnsDir)}`);
  }
  return path.join(netnsDir, NETNS_PREFIX + sandboxId);
}

/** The sandbox ID a pin path was made for, or undefined when the name is not one of Corral's. */
export function sandboxIdFromNetnsPath(netnsPath: string): string | undefined {
  const name = path.basename(netnsPath);
  if (!name.startsWith(NETNS_PREFIX)) return undefined;
  const id = name.slice(NETNS_PREFIX.length);
  return SANDBOX_ID_RE.test(id) ? id : undefined;
}

export interface CreateNetnsOptions {
  /** Namespaced sysctls (net.*), set inside the new netns before it is pinned. Validated by the caller. */
  sysctls?: Record<string, string>;
  /** Also (or, without a netns, only) pin a new IPC namespace here (pods without a pause process). */
  ipcPath?: string;
  /** Also pin a new UTS namespace here, with this hostname. */
  utsPath?: string;
  hostname?: string;
  /** Also make this folder and mount the pod's /dev/shm tmpfs on it (saves an exec of mount). */
  shmPath?: string;
}

interface HelperReply {
  error?: string;
  step?: string;
  errno?: number;
  code?: string;
  [key: string]: unknown;
}

async function runHelper(args: string[]): Promise<{ result: ExecResult; reply: HelperReply | undefined }> {
  const bin = nativeBinary(HELPER);
  let result: ExecResult;
  try {
    // No environment: the helper reads none, and copying the daemon's costs ~60 µs a call.
    result = await execFile(bin, args, { timeoutMs: HELPER_TIMEOUT_MS, env: {} });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'EACCES') {
      throw new NetnsError(`${HELPER} is missing or not executable at ${bin} (run scripts/build-native.sh)`, 'exec', undefined, code);
    }
    throw e;
  }
  // The helper prints exactly one JSON line; be tolerant of anything else.
  let reply: HelperReply | undefined;
  const line = result.stdout.trim().split('\n').pop() ?? '';
  try {
    const parsed: unknown = JSON.parse(line);
    if (parsed && typeof parsed === 'object') reply = parsed as HelperReply;
  } catch {
    reply = undefined;
  }
  return { result, reply };
}

function helperFailure(what: string, result: ExecResult, reply: HelperReply | undefined): NetnsError {
  if (reply?.error) {
    return new NetnsError(`${what}: ${reply.error}`, reply.step ?? 'unknown', reply.errno, reply.code);
  }
  const how = result.signal ? `killed by ${result.signal}` : `exit status ${result.code}`;
  const detail = (result.stderr || result.stdout).trim();
  return new NetnsError(`${what}: ${HELPER} ${how}${detail ? `: ${detail}` : ''}`, 'exec');
}

/**
 * Creates a new network namespace with lo up and the given sysctls, pinned at
 * `netnsPath` (which must not exist; its folder is created 0755 if missing), and the
 * IPC/UTS namespaces asked for in `opts`. netnsPath null: no network namespace (a
 * host-network pod), only the IPC/UTS pins. On failure nothing is left behind and a
 * NetnsError carries the helper's message.
 */
export async function createPinnedNetns(netnsPath: string | null, opts: CreateNetnsOptions = {}): Promise<void> {
  const args = ['create'];
  for (const [flag, p] of [['--path', netnsPath], ['--ipc', opts.ipcPath], ['--uts', opts.utsPath]] as const) {
    if (!p) continue;
    if (!path.isAbsolute(p)) throw new Error(`netns: ${flag} path must be absolute, got ${JSON.stringify(p)}`);
    args.push(flag, p);
  }
  if (args.length === 1) throw new Error('netns: nothing to pin (no network, IPC or UTS namespace asked for)');
  if (opts.utsPath && opts.hostname) args.push('--hostname', opts.hostname);
  if (opts.shmPath) {
    if (!path.isAbsolute(opts.shmPath)) throw new Error(`netns: --shm path must be absolute, got ${JSON.stringify(opts.shmPath)}`);
    args.push('--shm', opts.shmPath);
  }
  for (const [key, value] of Object.entries(opts.sysctls ?? {})) {
    if (key === '' || key.includes('=')) throw new Error(`netns: bad sysctl name ${JSON.stringify(key)}`);
    args.push('--sysctl', `${key}=${value}`);
  }
  const { result, reply } = await runHelper(args);
  if (result.code !== 0 || !reply || reply.error) {
    const what = netnsPath ? `network namespace ${netnsPath}` : `pod namespaces ${[opts.ipcPath, opts.utsPath].filter(Boolean).join(', ')}`;
    throw helperFailure(`cannot create ${what}`, result, reply);
  }
}

/** Unpins and deletes `netnsPath`. Succeeds when it is already gone. */
export async function removePinnedNetns(netnsPath: string): Promise<void> {
  try {
    await fs.lstat(netnsPath);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return; // nothing to unmount or delete: no exec needed
    throw e;
  }
  const { result, reply } = await runHelper(['remove', netnsPath]);
  if (result.code !== 0 || reply?.error) {
    throw helperFailure(`cannot remove network namespace ${netnsPath}`, result, reply);
  }
}

/**
 * Unpins and deletes every path (pins, or a --shm folder: unmounted and removed) in one
 * exec of the helper; paths already gone cost nothing. Succeeds when all are gone.
 */
export async function removePins(paths: readonly string[]): Promise<void> {
  const present: string[] = [];
  for (const p of paths) {
    try {
      lstatSync(p); // a path lookup on tmpfs/nsfs: microseconds, less than a thread-pool round trip
      present.push(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw e;
    }
  }
  if (present.length === 0) return;
  const { result, reply } = await runHelper(['remove', ...present]);
  if (result.code !== 0 || reply?.error) throw helperFailure(`cannot remove ${present.join(', ')}`, result, reply);
}

/** True when `netnsPath` is an nsfs mount (a live pin); false when it is missing or a plain file. */
export async function isNetnsPinned(netnsPath: string): Promise<boolean> {
  try {
    // Synchronous: statfs of a pin never blocks, and ListPodSandbox asks this of every
    // pin of every pod, where a thread-pool round trip each cost milliseconds per call.
    const st = statfsSync(netnsPath);
    return Number(st.type) === NSFS_MAGIC;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return false;
    throw e;
  }
}

/** Paths of the entries in `netnsDir` named like Corral's pins (for the startup sweep). [] if the folder is missing. */
export async function listCorralNetns(netnsDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await fs.readdir(netnsDir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw e;
  }
  return names
    .filter((name) => sandboxIdFromNetnsPath(name) !== undefined)
    .sort()
    .map((name) => path.join(netnsDir, name));
}
