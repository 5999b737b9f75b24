/**
 * The daemon's pod networks: one CNI manager per conf dir (the daemon's and any runtime
 * handler's own), re-read now and then so a config dropped in later is picked up, and the
 * PodNetworkDriver the sandbox service sets pods up with.
 */
import type { CorralConfig, RuntimeHandlerConfig } from '../config/config.js';
import type { Logger } from '../util/log.js';
import type { PodNetworkDriver } from '../sandbox/service.js';
import { CniManager } from './cni/index.js';
import type { RuntimeObserver } from '../observer.js';


/** One CNI manager per conf dir: the daemon's, and any handler's own. */
export class CniNetworks {
  private readonly managers = new Map<string, { manager: CniManager; loadedAt: number }>();

  constructor(private readonly cfg: CorralConfig, private readonly logger: Logger, private readonly observer?: RuntimeObserver) {
    this.add(cfg.cni.confDir, cfg.cni.maxNetworks);
    for (const h of Object.values(cfg.runtimes)) if (h.cniConfDir) this.add(h.cniConfDir, h.cniMaxNetworks);
  }

  private add(confDir: string, maxNetworks: number): void {
    if (this.managers.has(confDir)) return;
    const c = this.cfg.cni;
    // No loopback plugin: corral-nshelper brings lo up when it makes the pod's netns.
    const manager = new CniManager({ confDir, binDirs: c.binDirs, maxNetworks, cacheDir: c.cacheDir, ipPreference: c.ipPreference, logger: this.logger, observer: this.observer, loopbackPlugin: c.loopbackPlugin });
    this.managers.set(confDir, { manager, loadedAt: 0 });
  }

  async reloadAll(): Promise<void> {
    await Promise.all([...this.managers.keys()].map((d) => this.fresh(d, true)));
  }

  /**
   * Re-reads a conf dir at most every [cni] reload_interval_ms, so a config dropped in later
   * is picked up. The caller waits for the re-read only when it is forced, when the interval
   * is 0 (every call sees the conf dir as it is) or when no network is loaded yet; otherwise
   * it runs beside the caller's CNI work, which uses the networks already loaded.
   */
  private async fresh(confDir: string, force = false): Promise<CniManager> {
    const entry = this.managers.get(confDir)!;
    const interval = this.cfg.cni.reloadIntervalMs;
    if (force || Date.now() - entry.loadedAt >= interval) {
      entry.loadedAt = Date.now();
      const reload = entry.manager.reload();
      if (force || interval === 0 || !entry.manager.loadStatus().ready) await reload;
      else reload.catch((e: unknown) => this.logger.warn({ confDir, err: (e as Error).message }, 'CNI configuration re-read failed'));
    }
    return entry.manager;
  }

  readiness(): { ready: boolean; message: string } {
    const entry = this.managers.get(this.cfg.cni.confDir)!;
    void this.fresh(this.cfg.cni.confDir).catch(() => {});
    const s = entry.manager.loadStatus();
    return { ready: s.ready, message: s.message };
  }

  describe(): Record<string, unknown> {
    return Object.fromEntries([...this.managers].map(([dir, e]) => [dir, e.manager.loadStatus()]));
  }

  driverFor(handler: RuntimeHandlerConfig, settings: { readonly podCidrs: readonly string[] }): PodNetworkDriver {
    const confDir = handler.cniConfDir || this.cfg.cni.confDir;
    return {
      setUp: async (req) => {
        const manager = await this.fresh(confDir);
        const ipRanges = settings.podCidrs.map((subnet) => [{ subnet }]);
        const result = await manager.setUp({
          containerId: req.containerId,
          netnsPath: req.netnsPath,
          podName: req.podName,
          podNamespace: req.podNamespace,
          podUid: req.podUid,
          portMappings: req.portMappings,
          bandwidth: req.bandwidth, // parsed (and refused) by planSandbox before any side effect
          dns: req.dns,
          ipRanges: ipRanges.length > 0 ? ipRanges : undefined,
          cgroupPath: req.cgroupPath,
          podAnnotations: req.annotations,
        });
        return { podIp: result.podIp, additionalIps: result.additionalIps, attachments: result.attachments };
      },
      tearDown: async (req) => {
        const manager = await this.fresh(confDir);
        await manager.tearDown(req.containerId, req.netnsPath, { podName: req.podName, podNamespace: req.podNamespace, podUid: req.podUid });
      },
    };
  }
}
