/**
 * Loading CNI network configuration from a conf dir.
 *
 * Files ending in .conf, .conflist or .json are read in lexicographic name order.
 * A .conflist is a network list; the others hold one plugin and become a one-plugin
 * list. Invalid files are skipped, each with a recorded reason; the first
 * `maxNetworks` valid ones are kept (0 = all), and on duplicate network names the
 * first file wins.
 */
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { CniError } from './errors.js';
import { compareVersions, isSupportedVersion, SUPPORTED_CNI_VERSIONS } from './version.js';

/** One plugin object of a list, exactly as written in the file. */
export type PluginConf = Record<string, unknown> & { type: string };

export interface NetworkConfigList {
  name: string;
  /** The version the list speaks (from cniVersion, or the highest supported of cniVersions). */
  cniVersion: string;
  disableCheck: boolean;
  disableGC: boolean;
  plugins: PluginConf[];
  /** The list's raw bytes (for a single .conf: a list wrapping it); stored in the result cache. */
  bytes: Buffer;
  /** Where it came from (a file path, or a description). */
  source: string;
}

export const CONF_EXTENSIONS: readonly string[] = ['.conf', '.conflist', '.json'];

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseJsonObject(bytes: Buffer | string): Record<string, unknown> {
  let v: unknown;
  try {
    v = JSON.parse(typeof bytes === 'string' ? bytes : bytes.toString('utf8'));
  } catch (e) {
    throw new CniError(`not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(v)) throw new CniError('not a JSON object');
  return v;
}

/** libcni accepts booleans and the strings "true"/"false" for the disable* flags. */
function parseFlag(v: unknown, key: string): boolean {
  if (v === undefined || v === null) return false;
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string' && /^(true|false)$/i.test(v)) return v.toLowerCase() === 'true';
  throw new CniError(`"${key}" must be a boolean, got ${JSON.stringify(v)}`);
}

/** The version a list (or single conf) speaks: the highest supported of cniVersions, else cniVersion. */
function chooseVersion(obj: Record<string, unknown>): string {
  const many = obj.cniVersions;
  if (many !== undefined && many !== null) {
    if (!Array.isArray(many) || many.some((v) => typeof v !== 'string')) throw new CniError('"cniVersions" must be an array of strings');
    const usable = (many as string[]).filter(isSupportedVersion).sort(compareVersions);
    if (usable.length > 0) return usable[usable.length - 1]!;
    if (obj.cniVersion === undefined) {
      throw new CniError(`none of cniVersions ${JSON.stringify(many)} is supported (supported: ${SUPPORTED_CNI_VERSIONS.join(', ')})`);
    }
  }
  const one = obj.cniVersion;
  if (one === undefined || one === null || one === '') return '0.1.0'; // what an absent version means in the spec
  if (typeof one !== 'string') throw new CniError('"cniVersion" must be a string');
  if (!isSupportedVersion(one)) throw new CniError(`unsupported cniVersion "${one}" (supported: ${SUPPORTED_CNI_VERSIONS.join(', ')})`);
  return one;
}

function checkPlugin(p: unknown, where: string): PluginConf {
  if (!isObject(p)) throw new CniError(`${where} is not a JSON object`);
  if (typeof p.type !== 'string' || p.type === '') throw new CniError(`${where} has no "type"`);
  return p as PluginConf;
}

function checkName(v: unknown): string {
  if (typeof v !== 'string' || v === '') throw new CniError('no network "name"');
  return v;
}

/** Parses the bytes of a .conflist. Throws CniError with the reason. */
export function parseConfList(bytes: Buffer | string, source = '<bytes>'): NetworkConfigList {
  const buf = typeof bytes === 'string' ? Buffer.from(bytes) : bytes;
  const obj = parseJsonObject(buf);
  const name = checkName(obj.name);
  const cniVersion = chooseVersion(obj);
  const rawPlugins = obj.plugins;
  if (!Array.isArray(rawPlugins)) throw new CniError('"plugins" is missing or not an array');
  if (rawPlugins.length === 0) throw new CniError('"plugins" is empty');
  const plugins = rawPlugins.map((p, i) => checkPlugin(p, `plugins[${i}]`));
  return {
    name,
    cniVersion,
    disableCheck: parseFlag(obj.disableCheck, 'disableCheck'),
    disableGC: parseFlag(obj.disableGC, 'disableGC'),
    plugins,
    bytes: buf,
    source,
  };
}

/** Parses the bytes of a single-plugin .conf/.json and wraps it in a one-plugin list. */
export function parseSingleConf(bytes: Buffer | string, source = '<bytes>'): NetworkConfigList {
  const obj = parseJsonObject(bytes);
  const plugin = checkPlugin(obj, 'the config');
  const name = checkName(obj.name);
  const cniVersion = chooseVersion(obj);
  const listJson: Record<string, unknown> = { cniVersion: obj.cniVersion ?? cniVersion, name, plugins: [plugin] };
  if (obj.cniVersions !== undefined) listJson.cniVersions = obj.cniVersions;
  return {
    name,
    cniVersion,
    disableCheck: false,
    disableGC: false,
    plugins: [plugin],
    bytes: Buffer.from(JSON.stringify(listJson)),
    source,
  };
}

/** Parses a config file's bytes by its extension. */
export function parseConfFile(fileName: string, bytes: Buffer): NetworkConfigList {
  return path.extname(fileName) === '.conflist' ? parseConfList(bytes, fileName) : parseSingleConf(bytes, fileName);
}

/**
 * Parses whatever a cache entry's `config` holds: a list, or (as older tools wrote)
 * a single plugin config.
 */
export function parseAnyConf(bytes: Buffer, source: string): NetworkConfigList {
  const obj = parseJsonObject(bytes);
  return Array.isArray(obj.plugins) ? parseConfList(bytes, source) : parseSingleConf(bytes, source);
}

export interface ConfDirLoad {
  /** Valid networks in load order (the first is the default network). */
  networks: NetworkConfigList[];
  /** One line per skipped file: "<file>: <reason>". */
  errors: string[];
}

/** Reads a conf dir. A missing dir is no networks, not an error. */
export async function loadConfDir(dir: string, maxNetworks: number): Promise<ConfDirLoad> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { networks: [], errors: [] };
    return { networks: [], errors: [`${dir}: cannot read the CNI conf dir: ${(e as Error).message}`] };
  }
  const names = entries
    .filter((e) => CONF_EXTENSIONS.includes(path.extname(e.name)))
    .map((e) => e.name)
    .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const networks: NetworkConfigList[] = [];
  const errors: string[] = [];
  const seen = new Set<string>();
  for (const name of names) {
    if (maxNetworks > 0 && networks.length >= maxNetworks) break;
    const file = path.join(dir, name);
    let bytes: Buffer;
    try {
      const st = await fs.stat(file);
      if (!st.isFile()) continue; // subdirectories (and other non-files) are skipped silently
      bytes = await fs.readFile(file);
    } catch (e) {
      errors.push(`${file}: cannot read: ${(e as Error).message}`);
      continue;
    }
    let list: NetworkConfigList;
    try {
      list = parseConfFile(file, bytes);
    } catch (e) {
      errors.push(`${file}: ${(e as Error).message}`);
      continue;
    }
    if (seen.has(list.name)) {
      errors.push(`${file}: network "${list.name}" is already defined by an earlier file; skipped`);
      continue;
    }
    seen.add(list.name);
    networks.push(list);
  }
  return { networks, errors };
}
