/** RuntimeService handlers about the runtime itself: Version, Status, RuntimeConfig, UpdateRuntimeConfig. */
import type { CorralConfig } from '../config/config.js';
import { CORRAL_VERSION, CRI_API_VERSION, RUNTIME_NAME } from '../version.js';
import type { RuntimeHandlers } from './rpc-types.js';
import type { CgroupDriver } from '../cri-api/types.js';

/** CRI's name for each cgroup driver Corral can be configured with: a new driver cannot go unreported. */
const CRI_CGROUP_DRIVER: Record<CorralConfig['cgroupDriver'], CgroupDriver> = { cgroupfs: 'CGROUPFS' };

export interface NetworkReadiness {
  ready: boolean;
  message: string;
}

/** Runtime-wide settings kubelet pushes at run time. */
export class RuntimeSettings {
  /** Pod CIDRs from UpdateRuntimeConfig, handed to CNI as the ipRanges capability. */
  podCidrs: string[] = [];
}

export function runtimeInfoHandlers(config: CorralConfig, settings: RuntimeSettings, network: () => NetworkReadiness, verboseExtra: () => Record<string, unknown>) {
  return {
    async Version() {
      return { version: '0.1.0', runtimeName: RUNTIME_NAME, runtimeVersion: CORRAL_VERSION, runtimeApiVersion: CRI_API_VERSION };
    },

    async Status(req) {
      const net = network();
      const conditions = [
        { type: 'RuntimeReady', status: true, reason: '', message: '' },
        net.ready
          ? { type: 'NetworkReady', status: true, reason: '', message: '' }
          : { type: 'NetworkReady', status: false, reason: 'NetworkPluginNotReady', message: `Network plugin returns error: ${net.message}` },
      ];
      const info: Record<string, string> = {};
      if (req.verbose) {
        info.config = JSON.stringify(config);
        info.podCidrs = JSON.stringify(settings.podCidrs);
        for (const [k, v] of Object.entries(verboseExtra())) info[k] = JSON.stringify(v);
      }
      const runtimeHandlers = [
        { name: '', features: { recursiveReadOnlyMounts: false, userNamespaces: false } },
        ...Object.keys(config.runtimes).map((name) => ({ name, features: { recursiveReadOnlyMounts: false, userNamespaces: false } })),
      ];
      return { status: { conditions }, info, runtimeHandlers, features: { supplementalGroupsPolicy: false } };
    },

    async RuntimeConfig() {
      // kubelet (KubeletCgroupDriverFromCRI) takes its cgroup driver from this answer.
      return { linux: { cgroupDriver: CRI_CGROUP_DRIVER[config.cgroupDriver] } };
    },

    async UpdateRuntimeConfig(req) {
      const cidr: string = req.runtimeConfig?.networkConfig?.podCidr ?? '';
      settings.podCidrs = cidr.split(',').map((c) => c.trim()).filter(Boolean);
      return {};
    },
  } satisfies RuntimeHandlers;
}
