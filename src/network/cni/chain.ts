/**
 * Running a whole network list (a plugin chain) for ADD, DEL and CHECK.
 *
 *   ADD    plugins in order; each result is the next plugin's prevResult; stop at the first error
 *   DEL    plugins in reverse; each gets the cached ADD result (lists ≥ 0.4.0); stop at the first error
 *   CHECK  plugins in order with the cached result; skipped when disableCheck; lists ≥ 0.4.0 only
 */
import type { NetworkConfigList } from './conf.js';
import { CniError, CniPluginError } from './errors.js';
import { buildPluginConfig, execPlugin, type InvokeOptions, type RuntimeConf } from './invoke.js';
import { parseResult, prevResultFor, truncate, type CniResult } from './result.js';
import { atLeast } from './version.js';

export interface AddOutcome {
  /** The final plugin's result as it wrote it (cniVersion filled in): what gets cached. */
  raw: Record<string, unknown>;
  /** The same, converted to Corral's internal type. */
  result: CniResult;
}

function validateRuntime(rt: RuntimeConf): void {
  if (!rt.containerId) throw new CniError('container ID is empty');
  if (!rt.ifName) throw new CniError('interface name is empty');
}

export async function addNetworkList(list: NetworkConfigList, rt: RuntimeConf, opts: InvokeOptions): Promise<AddOutcome> {
  validateRuntime(rt);
  let prev: Record<string, unknown> | undefined;
  let parsed: CniResult | undefined;
  for (const plugin of list.plugins) {
    const prevResult = prev ? prevResultFor(prev, list.cniVersion, list.cniVersion) : undefined;
    const stdin = buildPluginConfig(list, plugin, rt.capabilityArgs, prevResult);
    const out = await execPlugin(list.name, plugin.type, 'ADD', stdin, rt, opts);
    let raw: unknown;
    try {
      raw = JSON.parse(out);
    } catch {
      throw new CniPluginError({ network: list.name, pluginType: plugin.type, verb: 'ADD', msg: `plugin succeeded but its output is not a JSON result: ${JSON.stringify(truncate(out.trim(), 2000))}`, ran: true });
    }
    try {
      parsed = parseResult(raw, list.cniVersion);
    } catch (e) {
      throw new CniPluginError({ network: list.name, pluginType: plugin.type, verb: 'ADD', msg: `plugin succeeded but returned an unusable result: ${(e as Error).message}`, ran: true });
    }
    const obj = raw as Record<string, unknown>;
    prev = typeof obj.cniVersion === 'string' && obj.cniVersion !== '' ? obj : { ...obj, cniVersion: list.cniVersion };
  }
  return { raw: prev!, result: parsed! };
}

/** The cached result as prevResult for DEL/CHECK; undefined for lists older than 0.4.0 or when unusable. */
export function cachedPrevResult(list: NetworkConfigList, cached: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (!cached || !atLeast(list.cniVersion, '0.4.0')) return undefined;
  try {
    return prevResultFor(cached, list.cniVersion, list.cniVersion);
  } catch {
    return undefined;
  }
}

export async function delNetworkList(list: NetworkConfigList, rt: RuntimeConf, cachedResult: Record<string, unknown> | undefined, opts: InvokeOptions): Promise<void> {
  validateRuntime(rt);
  const prevResult = cachedPrevResult(list, cachedResult);
  for (const plugin of [...list.plugins].reverse()) {
    const stdin = buildPluginConfig(list, plugin, rt.capabilityArgs, prevResult);
    await execPlugin(list.name, plugin.type, 'DEL', stdin, rt, opts);
  }
}

export async function checkNetworkList(list: NetworkConfigList, rt: RuntimeConf, cachedResult: Record<string, unknown> | undefined, opts: InvokeOptions): Promise<void> {
  validateRuntime(rt);
  if (list.disableCheck) return;
  if (!atLeast(list.cniVersion, '0.4.0')) throw new CniError(`network "${list.name}": cniVersion ${list.cniVersion} does not support CHECK (needs 0.4.0 or later)`);
  const prevResult = cachedPrevResult(list, cachedResult);
  for (const plugin of list.plugins) {
    const stdin = buildPluginConfig(list, plugin, rt.capabilityArgs, prevResult);
    await execPlugin(list.name, plugin.type, 'CHECK', stdin, rt, opts);
  }
}
