/** RuntimeService handlers for the PodSandbox RPC group. */
import type { SandboxService } from '../sandbox/service.js';
import type { SandboxRecord } from '../sandbox/record.js';
import { namespaceChoice } from '../sandbox/options.js';
import { failedPrecondition, invalidArgument, unavailable } from '../errors.js';
import { portForwardRequest, type StreamingUrls } from '../streaming/requests.js';
import { nowNs } from '../util/time.js';
import type { RuntimeHandlers } from './rpc-types.js';
import { frozenMessage } from './proto.js';
import type { PodSandboxFilter } from '../cri-api/types.js';

export function sandboxHandlers(sandboxes: SandboxService, streaming?: StreamingUrls) {
  /**
   * ListPodSandbox's item of a record in a state, made once and then reused, so that it is
   * encoded once too (frozenMessage). Every field of it but the state is fixed when the pod is
   * created; a saved record is a new object, so a change could not leave a stale item anyway.
   */
  const items = new WeakMap<SandboxRecord, Partial<Record<SandboxLiveState, ReturnType<typeof podSandboxItemOf>>>>();
  const itemOf = (r: SandboxRecord, state: SandboxLiveState) => {
    let byState = items.get(r);
    if (!byState) items.set(r, (byState = {}));
    return (byState[state] ??= podSandboxItemOf(r, state));
  };

  return {
    async PortForward(req) {
      const request = portForwardRequest(req);
      const rec = sandboxes.get(request.podSandboxId);
      if ((await sandboxes.liveState(rec)) !== 'SANDBOX_READY') throw failedPrecondition(`pod sandbox ${rec.id} is not ready`);
      if (!streaming) throw unavailable('the streaming server is not running');
      return { url: streaming.urlFor({ ...request, podSandboxId: rec.id }) };
    },

    async RunPodSandbox(req) {
      if (!req.config) throw invalidArgument('RunPodSandbox needs a sandbox config');
      const podSandboxId = await sandboxes.run(req.config, req.runtimeHandler ?? '');
      return { podSandboxId };
    },

    async StopPodSandbox(req) {
      await sandboxes.stop(requireId(req.podSandboxId));
      return {};
    },

    async RemovePodSandbox(req) {
      await sandboxes.remove(requireId(req.podSandboxId));
      return {};
    },

    async PodSandboxStatus(req) {
      const rec = sandboxes.get(requireId(req.podSandboxId));
      const status = podSandboxStatusOf(rec, await sandboxes.liveState(rec));
      const info: Record<string, string> = {};
      if (req.verbose) info.info = JSON.stringify(verboseInfo(rec));
      return { status, info, containersStatuses: [], timestamp: nowNs() };
    },

    async ListPodSandbox(req) {
      const filter = req.filter ?? ({} as Partial<PodSandboxFilter>);
      let records = sandboxes.all();
      if (filter.id) {
        let id: string | undefined;
        try {
          id = sandboxes.index.tryResolve(filter.id);
        } catch {
          id = undefined; // an ambiguous prefix matches nothing in a filter
        }
        records = records.filter((r) => r.id === id);
      }
      const selector: Record<string, string> = filter.labelSelector ?? {};
      records = records.filter((r) => Object.entries(selector).every(([k, v]) => (r.config.labels ?? {})[k] === v));
      const list = [];
      for (const r of records) {
        const state = await sandboxes.liveState(r);
        if (filter.state && filter.state.state !== state) continue;
        list.push(itemOf(r, state));
      }
      return { items: list };
    },
  } satisfies RuntimeHandlers;
}

type SandboxLiveState = 'SANDBOX_READY' | 'SANDBOX_NOTREADY';

/** The CRI PodSandbox (ListPodSandbox's item) of a record in the given (live) state, deep-frozen. */
function podSandboxItemOf(r: SandboxRecord, state: SandboxLiveState) {
  return frozenMessage({
    id: r.id,
    metadata: r.metadata,
    state,
    createdAt: r.createdAt,
    labels: r.config.labels ?? {},
    annotations: r.config.annotations ?? {},
    runtimeHandler: r.runtimeHandler,
  });
}

/** The CRI PodSandboxStatus of a record in the given (live) state. */
export function podSandboxStatusOf(rec: SandboxRecord, state: 'SANDBOX_READY' | 'SANDBOX_NOTREADY') {
  return {
    id: rec.id,
    metadata: rec.metadata,
    state,
    createdAt: rec.createdAt,
    network: rec.network ? { ip: rec.network.podIp, additionalIps: rec.network.additionalIps.map((ip) => ({ ip })) } : { ip: '', additionalIps: [] },
    linux: { namespaces: { options: namespaceOptions(rec) } },
    labels: rec.config.labels ?? {},
    annotations: rec.config.annotations ?? {},
    runtimeHandler: rec.runtimeHandler,
  };
}

function requireId(id: unknown): string {
  if (typeof id !== 'string' || id === '') throw invalidArgument('pod sandbox ID must not be empty');
  return id;
}

function namespaceOptions(rec: SandboxRecord) {
  const ns = namespaceChoice(rec.config);
  const o = rec.config?.linux?.securityContext?.namespaceOptions;
  return { network: ns.network, pid: ns.pid, ipc: ns.ipc, targetId: o?.targetId ?? '' };
}

function verboseInfo(rec: SandboxRecord) {
  return {
    id: rec.id,
    name: rec.name,
    runtimeHandler: rec.runtimeHandler,
    infraMode: rec.infraMode,
    networkOrder: rec.networkOrder,
    netnsPath: rec.netnsPath,
    hostNetwork: rec.hostNetwork,
    privileged: rec.privileged,
    pid: rec.pid,
    cniResult: rec.network?.attachments ?? [],
    resources: rec.resources,
    timings: rec.timings,
    lastError: rec.lastError,
    config: rec.config,
  };
}
