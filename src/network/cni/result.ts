/**
 * CNI results: reading every spec version into one internal (1.1.0-shaped) type,
 * and writing that type back in whatever version a network list speaks.
 *
 *   0.1.0 / 0.2.0   {ip4: {ip, gateway, routes}, ip6: {...}, dns}
 *   0.3.x / 0.4.0   {interfaces, ips: [{version, address, gateway, interface}], routes, dns}
 *   1.0.0 / 1.1.0   like 0.4.0 without ips[].version; 1.1.0 adds route/interface fields
 */
import { CniError } from './errors.js';
import { CURRENT_CNI_VERSION, compareVersions, isSupportedVersion } from './version.js';

export interface CniInterface {
  name: string;
  mac?: string;
  mtu?: number;
  /** Netns path for interfaces inside the container; absent for host-side ones. */
  sandbox?: string;
  socketPath?: string;
  pciID?: string;
}

export interface CniIpConfig {
  /** CIDR notation, e.g. "10.88.0.5/16". */
  address: string;
  gateway?: string;
  /** Index into `interfaces`. */
  interface?: number;
}

export interface CniRoute {
  dst: string;
  gw?: string;
  mtu?: number;
  advmss?: number;
  priority?: number;
  table?: number;
  scope?: number;
}

export interface CniDns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

/** Corral's internal result: always the current spec's shape. */
export interface CniResult {
  cniVersion: string;
  interfaces: CniInterface[];
  ips: CniIpConfig[];
  routes: CniRoute[];
  dns: CniDns;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optString(o: Json, key: string, where: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new CniError(`invalid CNI result: ${where}.${key} must be a string`);
  return v;
}

function optNumber(o: Json, key: string, where: string): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new CniError(`invalid CNI result: ${where}.${key} must be a number`);
  return v;
}

function optArray(o: Json, key: string, where: string): unknown[] {
  const v = o[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new CniError(`invalid CNI result: ${where}.${key} must be an array`);
  return v;
}

function optStringArray(o: Json, key: string, where: string): string[] | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) {
    throw new CniError(`invalid CNI result: ${where}.${key} must be an array of strings`);
  }
  return v as string[];
}

function setIf<T extends object, K extends keyof T>(target: T, key: K, value: T[K] | undefined): void {
  if (value !== undefined) target[key] = value;
}

function parseDns(v: unknown): CniDns {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw new CniError('invalid CNI result: dns must be an object');
  const dns: CniDns = {};
  setIf(dns, 'nameservers', optStringArray(v, 'nameservers', 'dns'));
  setIf(dns, 'domain', optString(v, 'domain', 'dns'));
  setIf(dns, 'search', optStringArray(v, 'search', 'dns'));
  setIf(dns, 'options', optStringArray(v, 'options', 'dns'));
  return dns;
}

function parseRoute(v: unknown, where: string): CniRoute {
  if (!isObject(v)) throw new CniError(`invalid CNI result: ${where} must be an object`);
  const dst = optString(v, 'dst', where);
  if (!dst) throw new CniError(`invalid CNI result: ${where}.dst is required`);
  const r: CniRoute = { dst };
  setIf(r, 'gw', optString(v, 'gw', where));
  for (const k of ['mtu', 'advmss', 'priority', 'table', 'scope'] as const) setIf(r, k, optNumber(v, k, where));
  return r;
}

function parseInterface(v: unknown, where: string): CniInterface {
  if (!isObject(v)) throw new CniError(`invalid CNI result: ${where} must be an object`);
  const name = optString(v, 'name', where);
  if (!name) throw new CniError(`invalid CNI result: ${where}.name is required`);
  const i: CniInterface = { name };
  setIf(i, 'mac', optString(v, 'mac', where));
  setIf(i, 'mtu', optNumber(v, 'mtu', where));
  setIf(i, 'sandbox', optString(v, 'sandbox', where));
  setIf(i, 'socketPath', optString(v, 'socketPath', where));
  setIf(i, 'pciID', optString(v, 'pciID', where));
  return i;
}

function parseIpConfig(v: unknown, where: string, nInterfaces: number): CniIpConfig {
  if (!isObject(v)) throw new CniError(`invalid CNI result: ${where} must be an object`);
  const address = optString(v, 'address', where);
  if (!address) throw new CniError(`invalid CNI result: ${where}.address is required`);
  const ip: CniIpConfig = { address };
  setIf(ip, 'gateway', optString(v, 'gateway', where));
  const idx = optNumber(v, 'interface', where);
  if (idx !== undefined) {
    if (!Number.isInteger(idx) || idx < 0 || idx >= nInterfaces) {
      throw new CniError(`invalid CNI result: ${where}.interface ${idx} does not name one of the ${nInterfaces} interfaces`);
    }
    ip.interface = idx;
  }
  return ip;
}

/** A 0.1.0/0.2.0 `ip4` or `ip6` block: the address plus its routes. */
function parseLegacyIp(v: unknown, where: string, out: CniResult): void {
  if (v === undefined || v === null) return;
  if (!isObject(v)) throw new CniError(`invalid CNI result: ${where} must be an object`);
  const address = optString(v, 'ip', where);
  if (!address) throw new CniError(`invalid CNI result: ${where}.ip is required`);
  const ip: CniIpConfig = { address };
  setIf(ip, 'gateway', optString(v, 'gateway', where));
  out.ips.push(ip);
  optArray(v, 'routes', where).forEach((r, i) => out.routes.push(parseRoute(r, `${where}.routes[${i}]`)));
}

/**
 * Reads a plugin's result (already JSON-decoded) of any supported version into the
 * internal type. A result without cniVersion is taken to be in `fallbackVersion`
 * (the version of the config the plugin was given).
 */
export function parseResult(raw: unknown, fallbackVersion: string): CniResult {
  if (!isObject(raw)) throw new CniError('invalid CNI result: not a JSON object');
  const declared = typeof raw.cniVersion === 'string' && raw.cniVersion !== '' ? raw.cniVersion : fallbackVersion;
  if (!isSupportedVersion(declared)) throw new CniError(`invalid CNI result: unsupported cniVersion "${declared}"`);
  const out: CniResult = { cniVersion: CURRENT_CNI_VERSION, interfaces: [], ips: [], routes: [], dns: parseDns(raw.dns) };
  if (compareVersions(declared, '0.3.0') < 0) {
    parseLegacyIp(raw.ip4, 'ip4', out);
    parseLegacyIp(raw.ip6, 'ip6', out);
    return out;
  }
  out.interfaces = optArray(raw, 'interfaces', 'result').map((v, i) => parseInterface(v, `interfaces[${i}]`));
  out.ips = optArray(raw, 'ips', 'result').map((v, i) => parseIpConfig(v, `ips[${i}]`, out.interfaces.length));
  out.routes = optArray(raw, 'routes', 'result').map((v, i) => parseRoute(v, `routes[${i}]`));
  return out;
}

/** Parses a plugin's stdout; throws CniError naming the problem and quoting the text. */
export function parseResultText(text: string, fallbackVersion: string): CniResult {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CniError(`result is not valid JSON (${(e as Error).message}): ${JSON.stringify(truncate(text, 500))}`);
  }
  return parseResult(raw, fallbackVersion);
}

export function truncate(s: string, n: number): string {
  return s.length <= n ? s : s.slice(0, n) + '…';
}

/** Whether an address (with or without a prefix length) is IPv6. */
export function isIpv6(address: string): boolean {
  return address.includes(':');
}

/** "10.88.0.5/16" → "10.88.0.5". */
export function stripPrefix(address: string): string {
  const slash = address.indexOf('/');
  return slash < 0 ? address : address.slice(0, slash);
}

function dnsIsEmpty(d: CniDns): boolean {
  return Object.keys(d).length === 0;
}

/**
 * Writes the internal result in the given spec version, ready to be sent as
 * `prevResult` or cached. Empty lists and an empty dns block are left out.
 */
export function resultToVersion(result: CniResult, version: string): Json {
  if (!isSupportedVersion(version)) throw new CniError(`cannot convert a CNI result to unsupported version "${version}"`);
  if (compareVersions(version, '0.3.0') < 0) {
    const out: Json = { cniVersion: version };
    for (const family of [4, 6] as const) {
      const ip = result.ips.find((i) => isIpv6(i.address) === (family === 6));
      if (!ip) continue;
      const block: Json = { ip: ip.address };
      if (ip.gateway) block.gateway = ip.gateway;
      const routes = result.routes.filter((r) => isIpv6(r.dst) === (family === 6)).map((r) => (r.gw ? { dst: r.dst, gw: r.gw } : { dst: r.dst }));
      if (routes.length > 0) block.routes = routes;
      out[family === 4 ? 'ip4' : 'ip6'] = block;
    }
    if (!dnsIsEmpty(result.dns)) out.dns = { ...result.dns };
    return out;
  }
  const withVersionField = compareVersions(version, '1.0.0') < 0;
  const out: Json = { cniVersion: version };
  if (result.interfaces.length > 0) out.interfaces = result.interfaces.map((i) => ({ ...i }));
  if (result.ips.length > 0) {
    out.ips = result.ips.map((ip) => {
      const o: Json = {};
      if (withVersionField) o.version = isIpv6(ip.address) ? '6' : '4';
      o.address = ip.address;
      if (ip.gateway) o.gateway = ip.gateway;
      if (ip.interface !== undefined) o.interface = ip.interface;
      return o;
    });
  }
  if (result.routes.length > 0) out.routes = result.routes.map((r) => ({ ...r }));
  if (!dnsIsEmpty(result.dns)) out.dns = { ...result.dns };
  return out;
}

/**
 * Readies a result for use as `prevResult` in the given version. When the raw
 * result is already in that version it is passed through untouched (so fields
 * Corral does not model survive); otherwise it is converted.
 */
export function prevResultFor(raw: Json, fallbackVersion: string, version: string): Json {
  const declared = typeof raw.cniVersion === 'string' && raw.cniVersion !== '' ? raw.cniVersion : fallbackVersion;
  if (declared === version) return { ...raw, cniVersion: version };
  return resultToVersion(parseResult(raw, fallbackVersion), version);
}

export type PodIpPreference = 'ipv4' | 'ipv6' | 'cni';

/**
 * Picks the pod IP from one network's result: the addresses on `ifName` (or with
 * no interface index), ordered by preference; prefix lengths are stripped.
 */
export function selectPodIps(result: CniResult, ifName: string, pref: PodIpPreference): { podIp: string; additionalIps: string[] } {
  const addrs = result.ips
    .filter((ip) => ip.interface === undefined || result.interfaces[ip.interface]?.name === ifName)
    .map((ip) => stripPrefix(ip.address));
  if (addrs.length === 0) return { podIp: '', additionalIps: [] };
  let idx = 0;
  if (pref === 'ipv4') idx = addrs.findIndex((a) => !isIpv6(a));
  else if (pref === 'ipv6') idx = addrs.findIndex((a) => isIpv6(a));
  if (idx < 0) idx = 0;
  return { podIp: addrs[idx]!, additionalIps: addrs.filter((_, i) => i !== idx) };
}
