/**
 * The CNI result cache, in libcni's on-disk layout so that Corral, containerd and
 * cri-o can read each other's entries:
 *
 *   <cacheDir>/results/<networkName>-<containerId>-<ifName>     (dir 0700, file 0600)
 *   {"kind":"cniCacheV1","containerId","config": base64 of the list's bytes,
 *    "ifName","networkName","netns","cniArgs":[[k,v],...],"capabilityArgs":{...},"result":{...}}
 *
 * An entry is written (atomically) only after a whole ADD chain succeeded, and is
 * what DEL and CHECK use: its config and args let DEL run after the conf dir changed.
 */
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { writeFileAtomicSync, isErrno } from '../../util/atomic.js';
import { MAX_STATE_FILE_BYTES, readRegularFileSync } from '../../util/safe-read.js';
import type { CniArgs } from './invoke.js';

export const CACHE_KIND = 'cniCacheV1';

export interface CachedAttachment {
  containerId: string;
  networkName: string;
  ifName: string;
  netns: string;
  /** The network list's raw bytes as they were at ADD time; undefined for legacy result-only entries. */
  config: Buffer | undefined;
  cniArgs: CniArgs;
  capabilityArgs: Record<string, unknown>;
  /** The final ADD result as the plugin wrote it (any spec version); undefined when not recorded. */
  result: Record<string, unknown> | undefined;
}

export function resultsDir(cacheDir: string): string {
  return path.join(cacheDir, 'results');
}

export function cacheFileName(networkName: string, containerId: string, ifName: string): string {
  return `${networkName}-${containerId}-${ifName}`;
}

export function cacheFilePath(cacheDir: string, networkName: string, containerId: string, ifName: string): string {
  return path.join(resultsDir(cacheDir), cacheFileName(networkName, containerId, ifName));
}

/** Serializes an attachment in libcni's layout (Go []byte → base64). */
export function encodeCacheEntry(a: CachedAttachment): string {
  const obj: Record<string, unknown> = {
    kind: CACHE_KIND,
    containerId: a.containerId,
    config: (a.config ?? Buffer.alloc(0)).toString('base64'),
    ifName: a.ifName,
    networkName: a.networkName,
  };
  if (a.netns) obj.netns = a.netns;
  if (a.cniArgs.length > 0) obj.cniArgs = a.cniArgs;
  if (Object.keys(a.capabilityArgs).length > 0) obj.capabilityArgs = a.capabilityArgs;
  if (a.result) obj.result = a.result;
  return JSON.stringify(obj);
}

export async function writeCachedAttachment(cacheDir: string, a: CachedAttachment): Promise<string> {
  const dir = resultsDir(cacheDir);
  const file = cacheFilePath(cacheDir, a.networkName, a.containerId, a.ifName);
  // Atomic, not fsynced, as libcni writes it: after a power loss the pod's record (its
  // fsynced intent) and the conf dir still let DEL release what the plugins reserved.
  // Synchronous: with no fsync these are page-cache calls of microseconds, which through
  // the thread pool would each wait behind other pods' fsyncs.
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileAtomicSync(file, encodeCacheEntry(a), 0o600);
  return file;
}

export async function deleteCachedAttachment(cacheDir: string, networkName: string, containerId: string, ifName: string): Promise<void> {
  rmSync(cacheFilePath(cacheDir, networkName, containerId, ifName), { force: true });
}

export type DecodedCache =
  | { ok: true; entry: CachedAttachment }
  /** A bare result as very old libcni wrote it: no config, names only known from the file name. */
  | { ok: 'legacy'; result: Record<string, unknown> }
  | { ok: false; reason: string };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Decodes a cache file's text; never throws. Empty, torn or malformed content is `ok: false`. */
export function decodeCacheEntry(text: string): DecodedCache {
  if (text.trim() === '') return { ok: false, reason: 'empty file' };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    return { ok: false, reason: `not valid JSON: ${(e as Error).message}` };
  }
  if (!isObject(v)) return { ok: false, reason: 'not a JSON object' };
  if (v.kind === undefined) {
    if (typeof v.cniVersion === 'string') return { ok: 'legacy', result: v };
    return { ok: false, reason: 'no "kind"' };
  }
  if (v.kind !== CACHE_KIND) return { ok: false, reason: `unknown kind ${JSON.stringify(v.kind)}` };
  for (const k of ['containerId', 'networkName', 'ifName'] as const) {
    if (typeof v[k] !== 'string' || v[k] === '') return { ok: false, reason: `"${k}" missing or not a string` };
  }
  let config: Buffer | undefined;
  if (v.config !== undefined && v.config !== null) {
    if (typeof v.config !== 'string') return { ok: false, reason: '"config" is not base64 text' };
    config = Buffer.from(v.config, 'base64');
    if (config.length === 0) config = undefined;
  }
  const cniArgs: CniArgs = [];
  if (v.cniArgs !== undefined && v.cniArgs !== null) {
    if (!Array.isArray(v.cniArgs)) return { ok: false, reason: '"cniArgs" is not an array' };
    for (const pair of v.cniArgs) {
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string') {
        return { ok: false, reason: '"cniArgs" holds something other than [key, value] string pairs' };
      }
      cniArgs.push([pair[0], pair[1]]);
    }
  }
  if (v.capabilityArgs !== undefined && v.capabilityArgs !== null && !isObject(v.capabilityArgs)) return { ok: false, reason: '"capabilityArgs" is not an object' };
  if (v.result !== undefined && v.result !== null && !isObject(v.result)) return { ok: false, reason: '"result" is not an object' };
  if (v.netns !== undefined && typeof v.netns !== 'string') return { ok: false, reason: '"netns" is not a string' };
  return {
    ok: true,
    entry: {
      containerId: v.containerId as string,
      networkName: v.networkName as string,
      ifName: v.ifName as string,
      netns: (v.netns as string | undefined) ?? '',
      config,
      cniArgs,
      capabilityArgs: isObject(v.capabilityArgs) ? v.capabilityArgs : {},
      result: isObject(v.result) ? v.result : undefined,
    },
  };
}

/**
 * Reads one cache file; `undefined` when it does not exist. Synchronously, as the entry was
 * written (writeCachedAttachment): a few KiB in the page cache, where the checked async
 * read made seven thread-pool round trips, ~0.1 ms of the daemon's CPU each, per DEL.
 */
export async function readCacheFile(file: string): Promise<DecodedCache | undefined> {
  let text: string;
  try {
    text = readRegularFileSync(file, { maxBytes: MAX_STATE_FILE_BYTES }).toString('utf8');
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return undefined;
    return { ok: false, reason: `cannot read: ${(e as Error).message}` };
  }
  return decodeCacheEntry(text);
}

/** Reads the entry of one attachment: undefined when absent or unusable (see readCacheFile for the reason). */
export async function readCachedAttachment(cacheDir: string, networkName: string, containerId: string, ifName: string): Promise<CachedAttachment | undefined> {
  const d = await readCacheFile(cacheFilePath(cacheDir, networkName, containerId, ifName));
  if (!d || d.ok !== true) return undefined;
  if (d.entry.containerId !== containerId || d.entry.networkName !== networkName || d.entry.ifName !== ifName) return undefined;
  return d.entry;
}

/** A cache file of the container that could not be used as is (corrupt, or a legacy bare result). */
export interface UnusableCacheFile {
  file: string;
  /** The file's base name, `<networkName>-<containerId>-<ifName>`; split it with splitCacheFileName. */
  baseName: string;
  reason: string;
  /** Set for legacy result-only entries. */
  legacyResult?: Record<string, unknown>;
}

export interface ContainerCache {
  attachments: CachedAttachment[];
  unusable: UnusableCacheFile[];
}

async function listResultFiles(cacheDir: string): Promise<string[]> {
  try {
    const entries = readdirSync(resultsDir(cacheDir), { withFileTypes: true });
    return entries.filter((e) => e.isFile() && !e.name.startsWith('.')).map((e) => e.name).sort();
  } catch (e) {
    if (isErrno(e, 'ENOENT', 'ENOTDIR')) return [];
    throw e;
  }
}

/**
 * Every cached attachment of a container. Files whose name could belong to the
 * container but whose content is unusable are returned in `unusable`.
 */
export async function listCachedAttachments(cacheDir: string, containerId: string): Promise<ContainerCache> {
  const out: ContainerCache = { attachments: [], unusable: [] };
  const marker = `-${containerId}-`;
  const names = (await listResultFiles(cacheDir)).filter((name) => name.includes(marker));
  // Read concurrently, handled in name order.
  const decoded = await Promise.all(names.map((name) => readCacheFile(path.join(resultsDir(cacheDir), name))));
  for (const [i, name] of names.entries()) {
    const file = path.join(resultsDir(cacheDir), name);
    const d = decoded[i];
    if (!d) continue;
    if (d.ok === true) {
      if (d.entry.containerId !== containerId) continue; // a different container whose name happens to contain ours
      out.attachments.push(d.entry);
    } else if (d.ok === 'legacy') {
      out.unusable.push({ file, baseName: name, reason: 'legacy result-only cache entry', legacyResult: d.result });
    } else {
      out.unusable.push({ file, baseName: name, reason: d.reason });
    }
  }
  return out;
}

/** Container IDs that have at least one readable cache entry (for a startup sweep). */
export async function listCachedContainerIds(cacheDir: string): Promise<string[]> {
  const ids = new Set<string>();
  for (const name of await listResultFiles(cacheDir)) {
    const d = await readCacheFile(path.join(resultsDir(cacheDir), name));
    if (d && d.ok === true) ids.add(d.entry.containerId);
  }
  return [...ids].sort();
}

/**
 * Splits `<networkName>-<containerId>-<ifName>` given the container ID and the
 * network names that could apply; undefined when none fits.
 */
export function splitCacheFileName(baseName: string, containerId: string, networkNames: Iterable<string>): { networkName: string; ifName: string } | undefined {
  for (const networkName of networkNames) {
    const prefix = `${networkName}-${containerId}-`;
    if (baseName.startsWith(prefix) && baseName.length > prefix.length) return { networkName, ifName: baseName.slice(prefix.length) };
  }
  return undefined;
}
