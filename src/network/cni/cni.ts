/**
 * CniManager: attaches pod sandboxes to the networks of a CNI conf dir and
 * detaches them again, with libcni semantics: each list's plugins run in order for ADD
 * and in reverse for DEL (chain.ts), results cached in libcni's layout (cache.ts).
 *
 * - Networks: the `loopback` plugin on `lo` (network "cni-loopback", when enabled and the
 *   plugin exists) plus every loaded conf-dir network on eth0, eth1, ... in load order.
 * - setUp attaches all networks concurrently and caches each successful attachment.
 * - tearDown detaches all networks concurrently, from the cache first (its config and args, so a changed or
 *   emptied conf dir does not block it), then any loaded network without a cache.
 * - Operations on one container ID are serialized; different IDs run in parallel.
 */
import { promises as fs } from 'node:fs';
import type { Logger } from '../../util/log.js';
import { KeyedLock } from '../../util/keyed-lock.js';
import { buildCapabilityArgs, type CapabilityInputs } from './capabilities.js';
import {
  deleteCachedAttachment,
  listCachedAttachments,
  listCachedContainerIds,
  splitCacheFileName,
  writeCachedAttachment,
  type CachedAttachment,
} from './cache.js';
import { addNetworkList, checkNetworkList, delNetworkList } from './chain.js';
import { loadConfDir, parseAnyConf, parseConfList, type NetworkConfigList } from './conf.js';
import { CniError, CniPluginError, combineErrors } from './errors.js';
import { findPlugin, podCniArgs, validateContainerId, validateIfName, type CniArgs, type InvokeOptions, type RuntimeConf } from './invoke.js';
import { selectPodIps, type CniResult, type PodIpPreference } from './result.js';
import { atLeast } from './version.js';
import type { RuntimeObserver } from '../../observer.js';

export const LOOPBACK_NETWORK_NAME = 'cni-loopback';
export const LOOPBACK_IFNAME = 'lo';
const LOOPBACK_CONFLIST = JSON.stringify({ cniVersion: '0.3.1', name: LOOPBACK_NETWORK_NAME, plugins: [{ type: 'loopback' }] });

export interface CniManagerOptions {
  confDir: string;
  binDirs: string[];
  /** How many conf files to load, in name order (0 = all). */
  maxNetworks: number;
  /** libcni's cache root; entries live in `<cacheDir>/results`. */
  cacheDir: string;
  ipPreference: PodIpPreference;
  logger: Logger;
  /** Kill a plugin that runs longer than this (default 120 s; 0 = no limit). */
  pluginTimeoutMs?: number;
  /** Told of every failed plugin invocation (metrics). */
  observer?: RuntimeObserver;
  /**
   * Attach lo through the `loopback` plugin (default true). The daemon turns it off: its
   * netns helper brings lo up when it makes the namespace, so the plugin would only repeat
   * that, at the price of one more plugin process per Run and per Stop. Cached lo
   * attachments (made with it on) are still detached from their cache.
   */
  loopbackPlugin?: boolean;
}

export interface LoadStatus {
  /** At least one network is loaded from the conf dir. */
  ready: boolean;
  /** Empty when ready and nothing to warn about; otherwise what is wrong, for the Status RPC. */
  message: string;
  /** Names of the loaded conf-dir networks, in order (the first is the default, on eth0). */
  networks: string[];
  /** One line per skipped conf file or missing plugin binary. */
  errors: string[];
  /** Whether lo is brought up by CNI: the `loopback` plugin is enabled and was found. */
  loopback: boolean;
}

/** Who the pod is: sent to plugins in CNI_ARGS. */
export interface PodIdentity {
  podName: string;
  podNamespace: string;
  podUid: string;
}

export interface PodNetworkRequest extends PodIdentity, CapabilityInputs {
  containerId: string;
  netnsPath: string;
}

export interface PodAttachment {
  networkName: string;
  ifName: string;
  result: CniResult;
}

export interface PodNetworkResult {
  /** Every attachment, loopback first, then eth0, eth1, ... */
  attachments: PodAttachment[];
  /** The default network's preferred address on eth0, without prefix length; '' when it reported none. */
  podIp: string;
  additionalIps: string[];
}

/** What tearDown may be told about the pod; used only for networks that have no cache entry. */
export type PodTeardownInfo = Partial<PodIdentity> & CapabilityInputs;

interface Planned {
  list: NetworkConfigList;
  ifName: string;
}

/** An attachment whose ADD was attempted but is not (or could not be) cached. */
interface Uncached {
  list: NetworkConfigList;
  ifName: string;
  args: CniArgs;
  capabilityArgs: Record<string, unknown>;
}

interface DelItem {
  list: NetworkConfigList;
  ifName: string;
  args: CniArgs;
  capabilityArgs: Record<string, unknown>;
  cachedResult: Record<string, unknown> | undefined;
  source: 'cache' | 'failed-add' | 'loaded';
  /** Set when there is no config to run DEL with: reported as an error, the cache entry is kept. */
  unresolvable?: string;
}

/** Order of tearDown's errors (DELs run concurrently): extra interfaces first, then ethN from the highest N down, lo last. */
function ifRank(ifName: string): number {
  if (ifName === LOOPBACK_IFNAME) return -1;
  const m = /^eth(\d+)$/.exec(ifName);
  return m ? Number(m[1]) : 1_000_000;
}

export function ethName(index: number): string {
  return `eth${index}`;
}

/** Whether a failed DEL means there was nothing left to clean up. */
function isGoneError(e: unknown, netnsPath: string): boolean {
  if (!(e instanceof CniPluginError) || !e.ran) return false;
  if (e.code === 3) return true; // "container unknown": the spec says no cleanup is needed
  if (netnsPath !== '') return false;
  const text = `${e.msg} ${e.details}`.toLowerCase();
  return text.includes('not found') || text.includes('no such file or directory');
}

export class CniManager {
  private readonly opts: CniManagerOptions;
  private readonly log: Logger;
  private readonly locks = new KeyedLock();
  private networks: NetworkConfigList[] = [];
  private loopback: NetworkConfigList | undefined;
  private status: LoadStatus;
  private loading: Promise<LoadStatus> | undefined;
  private loadedOnce = false;
  /** Plugin binaries found by the last load (see InvokeOptions.knownPlugins). */
  private knownPlugins: ReadonlyMap<string, string> = new Map();
  /** Attempted attachments without a cache entry, per container (failed ADD, or failed cache write). */
  private readonly uncached = new Map<string, Uncached[]>();

  constructor(opts: CniManagerOptions) {
    this.opts = { ...opts, binDirs: [...opts.binDirs] };
    this.log = opts.logger.child({ component: 'cni' });
    this.status = { ready: false, message: 'CNI configuration not loaded yet', networks: [], errors: [], loopback: false };
  }

  /**
   * The daemon's environment for the plugins, copied once per manager: each read of
   * process.env goes through libuv's environment lock (~60 µs for a copy here, per chain
   * and network), and the daemon never changes its environment once started.
   */
  private readonly baseEnv: NodeJS.ProcessEnv = { ...process.env };

  private invokeOptions(): InvokeOptions {
    const observer = this.opts.observer;
    return {
      binDirs: this.opts.binDirs,
      knownPlugins: this.knownPlugins,
      timeoutMs: this.opts.pluginTimeoutMs ?? 120_000,
      baseEnv: this.baseEnv,
      onPluginError: observer && ((e) => observer.cniPluginFailed(e.pluginType, e.verb)),
    };
  }

  /** Re-reads the conf dir (and looks for the loopback plugin again). */
  reload(): Promise<LoadStatus> {
    const p = this.doReload().finally(() => {
      if (this.loading === p) this.loading = undefined;
    });
    this.loading = p;
    return p;
  }

  private async doReload(): Promise<LoadStatus> {
    const { confDir, maxNetworks, binDirs } = this.opts;
    const load = await loadConfDir(confDir, maxNetworks);
    const errors = [...load.errors];
    const known = new Map<string, string>();
    for (const net of load.networks) {
      for (const plugin of net.plugins) {
        let found: string | undefined;
        try {
          found = await findPlugin(plugin.type, binDirs);
        } catch (e) {
          errors.push(`network "${net.name}" (${net.source}): ${(e as Error).message}`);
          continue;
        }
        if (found) known.set(plugin.type, found);
        if (!found) errors.push(`network "${net.name}" (${net.source}): plugin binary "${plugin.type}" not found in ${binDirs.join(', ')}`);
      }
    }
    const loopbackBin = this.opts.loopbackPlugin !== false && (await findPlugin('loopback', binDirs));
    this.loopback = loopbackBin ? parseConfList(LOOPBACK_CONFLIST, 'built-in loopback network') : undefined;
    if (loopbackBin) known.set('loopback', loopbackBin);
    this.knownPlugins = known;
    this.networks = load.networks;
    this.loadedOnce = true;
    let message = '';
    if (load.networks.length === 0) {
      message = load.errors.length === 0 ? `no network config found in ${confDir}` : `no valid network config in ${confDir}: ${load.errors.join('; ')}`;
    } else if (errors.length > 0) {
      message = errors.join('; ');
    }
    this.status = { ready: load.networks.length > 0, message, networks: load.networks.map((n) => n.name), errors, loopback: !!this.loopback };
    if (errors.length > 0) this.log.warn({ confDir, errors }, 'problems loading CNI configuration');
    this.log.info({ confDir, networks: this.status.networks, loopback: this.status.loopback }, 'CNI configuration loaded');
    return this.status;
  }

  /** Waits for a load only when none has finished yet; a later re-read runs beside callers. */
  private async ensureLoaded(): Promise<void> {
    if (this.loadedOnce) return;
    await (this.loading ?? this.reload());
  }

  /** The result of the last load. */
  loadStatus(): LoadStatus {
    return { ...this.status, networks: [...this.status.networks], errors: [...this.status.errors] };
  }

  /** Current networks with the interface each gets: loopback on lo, then eth0, eth1, ... */
  private plan(): Planned[] {
    const out: Planned[] = [];
    if (this.loopback) out.push({ list: this.loopback, ifName: LOOPBACK_IFNAME });
    this.networks.forEach((list, i) => out.push({ list, ifName: ethName(i) }));
    return out;
  }

  private rememberUncached(containerId: string, u: Uncached): void {
    const list = this.uncached.get(containerId) ?? [];
    if (!list.some((x) => x.list.name === u.list.name && x.ifName === u.ifName)) list.push(u);
    this.uncached.set(containerId, list);
  }

  /**
   * Attaches the pod to every network (concurrently) and caches each attachment.
   * Throws when any attachment fails; the caller must then run tearDown, which
   * detaches everything, including the network that failed.
   */
  async setUp(req: PodNetworkRequest): Promise<PodNetworkResult> {
    validateContainerId(req.containerId);
    if (!req.netnsPath) throw new CniError(`pod sandbox ${req.containerId}: a network namespace path is required to set up its network`);
    await this.ensureLoaded();
    if (this.networks.length === 0) throw new CniError(`cannot set up the network of pod sandbox ${req.containerId}: ${this.status.message}`);
    const capabilityArgs = buildCapabilityArgs(req);
    const args = podCniArgs(req);
    const plan = this.plan();
    for (const p of plan) validateIfName(p.ifName);
    return this.locks.run(req.containerId, async () => {
      const settled = await Promise.allSettled(
        plan.map(async (p): Promise<PodAttachment> => {
          const rt: RuntimeConf = { containerId: req.containerId, netns: req.netnsPath, ifName: p.ifName, args, capabilityArgs };
          const log = this.log.child({ containerId: req.containerId, network: p.list.name, ifName: p.ifName });
          log.debug('CNI ADD');
          let outcome;
          try {
            outcome = await addNetworkList(p.list, rt, this.invokeOptions());
          } catch (e) {
            this.rememberUncached(req.containerId, { list: p.list, ifName: p.ifName, args, capabilityArgs });
            log.warn({ err: (e as Error).message }, 'CNI ADD failed');
            throw e;
          }
          try {
            await writeCachedAttachment(this.opts.cacheDir, {
              containerId: req.containerId,
              networkName: p.list.name,
              ifName: p.ifName,
              netns: req.netnsPath,
              config: p.list.bytes,
              cniArgs: args,
              capabilityArgs,
              result: outcome.raw,
            });
          } catch (e) {
            this.rememberUncached(req.containerId, { list: p.list, ifName: p.ifName, args, capabilityArgs });
            throw new CniError(`network "${p.list.name}" was attached to pod sandbox ${req.containerId} but its result could not be cached: ${(e as Error).message}`);
          }
          log.info({ ips: outcome.result.ips.map((i) => i.address) }, 'CNI ADD done');
          return { networkName: p.list.name, ifName: p.ifName, result: outcome.result };
        }),
      );
      const errors = settled.filter((s): s is PromiseRejectedResult => s.status === 'rejected').map((s) => (s.reason instanceof Error ? s.reason : new Error(String(s.reason))));
      if (errors.length > 0) throw combineErrors(`setting up the network of pod sandbox ${req.containerId}`, errors);
      const attachments = settled.map((s) => (s as PromiseFulfilledResult<PodAttachment>).value);
      const primary = attachments.find((a) => a.ifName === ethName(0))!;
      const ips = selectPodIps(primary.result, primary.ifName, this.opts.ipPreference);
      return { attachments, podIp: ips.podIp, additionalIps: ips.additionalIps };
    });
  }

  /**
   * Detaches the pod from every network it may be attached to, concurrently (each
   * list's chain in reverse): cached attachments (with their cached config, args and result), attachments
   * whose ADD failed in this process, and any loaded network not covered by those.
   * Every DEL is attempted; failures are combined into one thrown error and their
   * caches kept so a later call retries. With netnsPath '' (netns already gone),
   * plugin errors saying something is not found count as success.
   */
  async tearDown(containerId: string, netnsPath: string, pod?: PodTeardownInfo): Promise<void> {
    validateContainerId(containerId);
    await this.ensureLoaded();
    await this.locks.run(containerId, async () => {
      const items = await this.delItems(containerId, pod);
      items.sort((a, b) => ifRank(b.ifName) - ifRank(a.ifName));
      // Networks are detached concurrently, as setUp attaches them: each list's chain still
      // runs in reverse, but lo's DEL no longer waits behind eth0's (a veth delete is slow).
      const outcomes = await Promise.all(items.map((it) => this.detachOne(containerId, netnsPath, it)));
      const errors = outcomes.flatMap((o) => o.errors);
      const done = new Set(outcomes.filter((o) => o.detached).map((o) => o.key));
      const left = (this.uncached.get(containerId) ?? []).filter((u) => !done.has(`${u.list.name}\0${u.ifName}`));
      if (left.length > 0) this.uncached.set(containerId, left);
      else this.uncached.delete(containerId);
      if (errors.length > 0) throw combineErrors(`tearing down the network of pod sandbox ${containerId}`, errors);
    });
  }

  /** DEL of one attachment, then its cache entry removed; failures are returned, never thrown. */
  private async detachOne(containerId: string, netnsPath: string, it: DelItem): Promise<{ key: string; detached: boolean; errors: Error[] }> {
    const key = `${it.list.name}\0${it.ifName}`;
    const log = this.log.child({ containerId, network: it.list.name, ifName: it.ifName, source: it.source });
    if (it.unresolvable) {
      log.warn(it.unresolvable);
      return { key, detached: false, errors: [new CniError(it.unresolvable)] };
    }
    const rt: RuntimeConf = { containerId, netns: netnsPath, ifName: it.ifName, args: it.args, capabilityArgs: it.capabilityArgs };
    try {
      log.debug('CNI DEL');
      await delNetworkList(it.list, rt, it.cachedResult, this.invokeOptions());
      log.info('CNI DEL done');
    } catch (e) {
      if (!isGoneError(e, netnsPath)) {
        log.warn({ err: (e as Error).message }, 'CNI DEL failed');
        return { key, detached: false, errors: [e instanceof Error ? e : new Error(String(e))] };
      }
      log.info({ err: (e as Error).message }, 'CNI DEL: nothing left to clean up');
    }
    try {
      await deleteCachedAttachment(this.opts.cacheDir, it.list.name, containerId, it.ifName);
    } catch (e) {
      return { key, detached: true, errors: [new CniError(`network "${it.list.name}" of pod sandbox ${containerId} was detached but its cache entry could not be removed: ${(e as Error).message}`)] };
    }
    return { key, detached: true, errors: [] };
  }

  /** Works out what to DEL for a container. Unusable cache files are deleted here. */
  private async delItems(containerId: string, pod: PodTeardownInfo | undefined): Promise<DelItem[]> {
    const items: DelItem[] = [];
    const covered = new Set<string>(); // network names
    const plan = this.plan();
    const loadedByName = new Map(plan.map((p) => [p.list.name, p]));
    const fallbackArgs = podCniArgs({ containerId, ...pod });
    const fallbackCaps = buildCapabilityArgs(pod ?? {});

    const cache = await listCachedAttachments(this.opts.cacheDir, containerId);
    for (const entry of cache.attachments) {
      const list = this.configOfCache(entry, loadedByName.get(entry.networkName)?.list);
      covered.add(entry.networkName);
      if (!list) {
        // Keep the entry: DEL can run once a config of that name is loaded again.
        items.push({
          list: { name: entry.networkName, cniVersion: '0.1.0', disableCheck: false, disableGC: false, plugins: [], bytes: Buffer.alloc(0), source: 'missing' },
          ifName: entry.ifName,
          args: [],
          capabilityArgs: {},
          cachedResult: undefined,
          source: 'cache',
          unresolvable: `network "${entry.networkName}" (${entry.ifName}) of pod sandbox ${containerId} cannot be detached: its cache entry has no usable config and no network of that name is loaded from ${this.opts.confDir}`,
        });
        continue;
      }
      items.push({
        list,
        ifName: entry.ifName,
        args: entry.cniArgs.length > 0 ? entry.cniArgs : fallbackArgs,
        capabilityArgs: entry.capabilityArgs,
        cachedResult: entry.result,
        source: 'cache',
      });
    }
    for (const bad of cache.unusable) {
      const names = splitCacheFileName(bad.baseName, containerId, loadedByName.keys());
      this.log.warn({ file: bad.file, reason: bad.reason }, 'unusable CNI cache entry; deleting it and detaching without the cached result');
      await fs.rm(bad.file, { force: true });
      if (!names) continue;
      const loaded = loadedByName.get(names.networkName)!;
      covered.add(names.networkName);
      items.push({ list: loaded.list, ifName: names.ifName, args: fallbackArgs, capabilityArgs: fallbackCaps, cachedResult: bad.legacyResult, source: 'cache' });
    }
    for (const u of this.uncached.get(containerId) ?? []) {
      if (covered.has(u.list.name)) continue;
      covered.add(u.list.name);
      items.push({ list: u.list, ifName: u.ifName, args: u.args, capabilityArgs: u.capabilityArgs, cachedResult: undefined, source: 'failed-add' });
    }
    for (const p of plan) {
      if (covered.has(p.list.name)) continue;
      items.push({ list: p.list, ifName: p.ifName, args: fallbackArgs, capabilityArgs: fallbackCaps, cachedResult: undefined, source: 'loaded' });
    }
    return items;
  }

  /** The config a cache entry was made with; the loaded one of that name when the cached bytes are unusable. */
  private configOfCache(entry: CachedAttachment, loaded: NetworkConfigList | undefined): NetworkConfigList | undefined {
    if (entry.config) {
      try {
        const list = parseAnyConf(entry.config, `cache of ${entry.networkName}-${entry.containerId}-${entry.ifName}`);
        if (list.name === entry.networkName) return list;
        this.log.warn({ network: entry.networkName, cachedName: list.name }, 'cached CNI config names another network; using the loaded config');
      } catch (e) {
        this.log.warn({ network: entry.networkName, err: (e as Error).message }, 'cached CNI config unusable; using the loaded config');
      }
    }
    return loaded;
  }

  /**
   * CHECK every cached attachment of the container. Lists with disableCheck and
   * lists older than 0.4.0 (which have no CHECK, e.g. the built-in loopback
   * network) are skipped. Throws the combined errors.
   */
  async check(containerId: string, netnsPath: string): Promise<void> {
    validateContainerId(containerId);
    await this.ensureLoaded();
    await this.locks.run(containerId, async () => {
      const cache = await listCachedAttachments(this.opts.cacheDir, containerId);
      const errors: Error[] = [];
      const plan = new Map(this.plan().map((p) => [p.list.name, p.list]));
      for (const entry of cache.attachments) {
        const list = this.configOfCache(entry, plan.get(entry.networkName));
        if (!list) {
          errors.push(new CniError(`network "${entry.networkName}" of pod sandbox ${containerId}: no usable config to CHECK with`));
          continue;
        }
        if (list.disableCheck || !atLeast(list.cniVersion, '0.4.0')) continue; // nothing CHECK can say about these
        const rt: RuntimeConf = { containerId, netns: netnsPath, ifName: entry.ifName, args: entry.cniArgs, capabilityArgs: entry.capabilityArgs };
        try {
          await checkNetworkList(list, rt, entry.result, this.invokeOptions());
        } catch (e) {
          errors.push(e instanceof Error ? e : new Error(String(e)));
        }
      }
      if (errors.length > 0) throw combineErrors(`checking the network of pod sandbox ${containerId}`, errors);
    });
  }

  /** Cached attachments of one container (what tearDown would detach from the cache). */
  async cachedAttachments(containerId: string): Promise<CachedAttachment[]> {
    validateContainerId(containerId);
    return (await listCachedAttachments(this.opts.cacheDir, containerId)).attachments;
  }

  /** Every container ID with a cache entry (for a startup sweep of pods Corral no longer knows). */
  cachedContainerIds(): Promise<string[]> {
    return listCachedContainerIds(this.opts.cacheDir);
  }
}
