/**
 * Running one CNI plugin: finding its binary, building its environment and stdin,
 * executing it and turning a failure into a CniPluginError.
 */
import { promises as fs, constants as fsConstants } from 'node:fs';
import path from 'node:path';
import { execFile, type ExecResult } from '../../util/exec.js';
import { isErrno } from '../../util/atomic.js';
import { CniError, CniPluginError, type CniVerb } from './errors.js';
import type { NetworkConfigList, PluginConf } from './conf.js';
import { truncate } from './result.js';

const CONTAINER_ID_RE = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export function validateContainerId(id: string): void {
  if (!CONTAINER_ID_RE.test(id)) throw new CniError(`invalid container ID ${JSON.stringify(id)}: must match ${CONTAINER_ID_RE.source}`);
}

export function validateIfName(name: string): void {
  if (name === '') throw new CniError('interface name is empty');
  if (name.length > 15) throw new CniError(`interface name "${name}" is longer than 15 characters`);
  if (name === '.' || name === '..') throw new CniError(`interface name "${name}" is not allowed`);
  if (/[/:\s]/.test(name)) throw new CniError(`interface name ${JSON.stringify(name)} contains "/", ":" or whitespace`);
}

/** CNI_ARGS pairs, in order. */
export type CniArgs = [string, string][];

/** The CNI_ARGS Kubernetes runtimes send for a pod. */
export function podCniArgs(pod: { containerId: string; podName?: string; podNamespace?: string; podUid?: string }): CniArgs {
  return [
    ['IgnoreUnknown', '1'],
    ['K8S_POD_NAMESPACE', pod.podNamespace ?? ''],
    ['K8S_POD_NAME', pod.podName ?? ''],
    ['K8S_POD_INFRA_CONTAINER_ID', pod.containerId],
    ['K8S_POD_UID', pod.podUid ?? ''],
  ];
}

export function formatCniArgs(args: CniArgs): string {
  for (const [k, v] of args) {
    if (k === '' || /[;=]/.test(k) || v.includes(';')) throw new CniError(`invalid CNI_ARGS pair ${JSON.stringify([k, v])}: keys must be non-empty without ";" or "=", values without ";"`);
  }
  return args.map(([k, v]) => `${k}=${v}`).join(';');
}

/** What a plugin runs against: everything in the environment besides the command. */
export interface RuntimeConf {
  containerId: string;
  netns: string;
  ifName: string;
  args: CniArgs;
  /** Capability args by capability name (portMappings, bandwidth, ...). */
  capabilityArgs: Record<string, unknown>;
}

export interface InvokeOptions {
  binDirs: string[];
  /** Kill a plugin that runs longer than this; 0 = no limit. */
  timeoutMs?: number;
  /** Pause between "text file busy" retries (tests shorten it). */
  busyRetryDelayMs?: number;
  /** The environment plugins get besides the CNI_ variables: process.env unless set (CniManager passes a copy it read once); never changed. */
  baseEnv?: NodeJS.ProcessEnv;
  /** Told of every failed invocation (metrics). */
  onPluginError?: (e: CniPluginError) => void;
  /**
   * Binaries found when the conf dir was last loaded, by plugin type: used without a new
   * lookup (two file-system calls per plugin, queued behind other pods' fsyncs on the
   * thread pool); a binary gone since is looked up again.
   */
  knownPlugins?: ReadonlyMap<string, string>;
}

/**
 * The first regular, executable file named `type` in the bin dirs, in order.
 * Throws when `type` is not a bare name or no dir has it.
 */
export async function findPlugin(type: string, binDirs: readonly string[]): Promise<string | undefined> {
  if (type === '' || type === '.' || type === '..' || type.includes('/') || type.includes('\\') || type.includes('\0')) {
    throw new CniError(`invalid plugin type ${JSON.stringify(type)}: must be a bare file name`);
  }
  for (const dir of binDirs) {
    const file = path.join(dir, type);
    try {
      const st = await fs.stat(file);
      if (!st.isFile()) continue;
      await fs.access(file, fsConstants.X_OK);
      return file;
    } catch {
      continue;
    }
  }
  return undefined;
}

export function buildEnv(command: CniVerb, rt: RuntimeConf | undefined, binDirs: readonly string[], base: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base };
  env.CNI_COMMAND = command;
  if (rt) {
    env.CNI_CONTAINERID = rt.containerId;
    env.CNI_NETNS = rt.netns;
    env.CNI_IFNAME = rt.ifName;
    env.CNI_ARGS = formatCniArgs(rt.args);
  } else {
    delete env.CNI_CONTAINERID;
    delete env.CNI_NETNS;
    delete env.CNI_IFNAME;
    delete env.CNI_ARGS;
  }
  env.CNI_PATH = binDirs.join(':');
  return env;
}

/** The capability args a plugin asked for (its `capabilities` keys set to true) and that the runtime has. */
export function runtimeConfigFor(plugin: PluginConf, capabilityArgs: Record<string, unknown>): Record<string, unknown> {
  const caps = plugin.capabilities;
  const rc: Record<string, unknown> = {};
  if (typeof caps !== 'object' || caps === null || Array.isArray(caps)) return rc;
  for (const [key, enabled] of Object.entries(caps as Record<string, unknown>)) {
    if (enabled === true && capabilityArgs[key] !== undefined) rc[key] = capabilityArgs[key];
  }
  return rc;
}

/**
 * A plugin's stdin: its own JSON with the list's name and cniVersion, the
 * runtimeConfig it asked for, and prevResult when there is one.
 */
export function buildPluginConfig(
  list: Pick<NetworkConfigList, 'name' | 'cniVersion'>,
  plugin: PluginConf,
  capabilityArgs: Record<string, unknown>,
  prevResult: Record<string, unknown> | undefined,
): Record<string, unknown> {
  const conf: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  const rc = runtimeConfigFor(plugin, capabilityArgs);
  if (Object.keys(rc).length > 0) conf.runtimeConfig = rc;
  if (prevResult !== undefined) conf.prevResult = prevResult;
  else delete conf.prevResult;
  return conf;
}

/** Turns a failed run into the error a person can act on. */
export function pluginFailure(network: string, pluginType: string, verb: CniVerb, run: ExecResult): CniPluginError {
  const stdout = run.stdout.trim();
  const stderr = run.stderr.trim();
  const how = run.signal ? `killed by ${run.signal}` : `exit status ${run.code}`;
  if (stdout === '') {
    return new CniPluginError({ network, pluginType, verb, msg: stderr ? truncate(stderr, 2000) : `plugin failed (${how}) with no error message`, stderr, ran: true });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdout);
  } catch {
    parsed = undefined; // not JSON: refused below like any other non-object
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    return new CniPluginError({ network, pluginType, verb, msg: `plugin failed (${how}) and its output is not a CNI error: ${JSON.stringify(truncate(stdout, 2000))}`, stderr, ran: true });
  }
  const o = parsed as Record<string, unknown>;
  const code = typeof o.code === 'number' ? o.code : undefined;
  const msg = typeof o.msg === 'string' && o.msg !== '' ? o.msg : stderr || `plugin failed (${how})`;
  const details = typeof o.details === 'string' ? o.details : '';
  return new CniPluginError({ network, pluginType, verb, code, msg, details, stderr, ran: true });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Runs one plugin with `stdin` as its config; returns its stdout. A missing
 * binary, an exec failure, a timeout or a non-zero exit becomes a CniPluginError.
 */
export async function execPlugin(
  network: string,
  pluginType: string,
  verb: CniVerb,
  stdin: Record<string, unknown>,
  rt: RuntimeConf | undefined,
  opts: InvokeOptions,
): Promise<string> {
  try {
    return await runPlugin(network, pluginType, verb, stdin, rt, opts);
  } catch (e) {
    if (e instanceof CniPluginError) opts.onPluginError?.(e);
    throw e;
  }
}

async function runPlugin(
  network: string,
  pluginType: string,
  verb: CniVerb,
  stdin: Record<string, unknown>,
  rt: RuntimeConf | undefined,
  opts: InvokeOptions,
): Promise<string> {
  const known = opts.knownPlugins?.get(pluginType);
  if (known !== undefined) {
    try {
      return await spawnPlugin(known, network, pluginType, verb, stdin, rt, opts);
    } catch (e) {
      if (!(e instanceof StaleBinaryError)) throw e;
      // Removed or replaced since the load: look it up again below.
    }
  }
  const file = await findPlugin(pluginType, opts.binDirs);
  if (!file) {
    throw new CniPluginError({ network, pluginType, verb, msg: `plugin binary "${pluginType}" not found in ${opts.binDirs.length ? opts.binDirs.join(', ') : '(no bin dirs configured)'}` });
  }
  try {
    return await spawnPlugin(file, network, pluginType, verb, stdin, rt, opts);
  } catch (e) {
    if (e instanceof StaleBinaryError) throw new CniPluginError({ network, pluginType, verb, msg: `cannot execute ${file}: ${e.message}` });
    throw e;
  }
}

/** A spawn that failed because the binary is no longer there (or no longer executable). */
class StaleBinaryError extends Error {}

async function spawnPlugin(
  file: string,
  network: string,
  pluginType: string,
  verb: CniVerb,
  stdin: Record<string, unknown>,
  rt: RuntimeConf | undefined,
  opts: InvokeOptions,
): Promise<string> {
  const env = buildEnv(verb, rt, opts.binDirs, opts.baseEnv ?? process.env);
  const input = JSON.stringify(stdin);
  const delay = opts.busyRetryDelayMs ?? 1000;
  let run: ExecResult | undefined;
  for (let attempt = 0; ; attempt++) {
    try {
      run = await execFile(file, [], { input, env, timeoutMs: opts.timeoutMs || undefined });
      break;
    } catch (e) {
      // The binary is being replaced (plugin upgrade): wait and retry a few times.
      if (isErrno(e, 'ETXTBSY') && attempt < 5) {
        await sleep(delay);
        continue;
      }
      if (isErrno(e, 'ENOENT', 'EACCES', 'ENOTDIR')) throw new StaleBinaryError((e as Error).message);
      throw new CniPluginError({ network, pluginType, verb, msg: `cannot execute ${file}: ${(e as Error).message}` });
    }
  }
  if (run.code !== 0) {
    if (run.signal === 'SIGKILL' && opts.timeoutMs) {
      throw new CniPluginError({ network, pluginType, verb, msg: `plugin did not finish within ${opts.timeoutMs} ms and was killed`, stderr: run.stderr });
    }
    throw pluginFailure(network, pluginType, verb, run);
  }
  return run.stdout;
}
