/** RuntimeService handlers for container and pod stats; one collector, so pods' rates and their containers' share state. */
import type { ContainerService } from '../container/service.js';
import type { ContainerRecord } from '../container/record.js';
import type { SandboxService } from '../sandbox/service.js';
import { ContainerStatsCollector } from '../container/stats.js';
import { invalidArgument } from '../errors.js';
import type { RuntimeHandlers } from './rpc-types.js';

const matchesLabels = (labels: Record<string, string> | undefined, selector: Record<string, string> | undefined) =>
  Object.entries(selector ?? {}).every(([k, v]) => (labels ?? {})[k] === v);

export function statsHandlers(containers: ContainerService, sandboxes: SandboxService) {
  const collector = new ContainerStatsCollector(undefined, undefined, (rec) => containers.runtimeUsage(rec));

  /** The full ID a filter's (possibly prefix) ID names; an unknown or ambiguous one matches nothing. */
  const resolveOrNone = (index: { tryResolve(id: string): string | undefined }, id: string) => {
    try {
      return index.tryResolve(id) ?? null;
    } catch {
      return null;
    }
  };

  const podStats = async (id: string, all: ContainerRecord[]) => {
    const sandbox = sandboxes.get(id);
    const ready = (await sandboxes.liveState(sandbox)) === 'SANDBOX_READY';
    return collector.podStats(sandbox, ready, all.filter((c) => c.sandboxId === sandbox.id));
  };

  return {
    async ContainerStats(req) {
      return { stats: await collector.stats(await containers.status(requireId(req.containerId, 'container_id'))) };
    },

    async ListContainerStats(req) {
      const all = await containers.list();
      collector.retain(all);
      const f = req.filter;
      let list = all;
      if (f?.id) {
        const id = resolveOrNone(containers.index, f.id);
        list = list.filter((r) => r.id === id);
      }
      if (f?.podSandboxId) list = list.filter((r) => r.sandboxId.startsWith(f.podSandboxId));
      list = list.filter((r) => matchesLabels(r.config.labels, f?.labelSelector));
      return { stats: await Promise.all(list.map((r) => collector.stats(r))) };
    },

    async PodSandboxStats(req) {
      const id = requireId(req.podSandboxId, 'pod_sandbox_id');
      return { stats: await podStats(sandboxes.get(id).id, await containers.list()) };
    },

    async ListPodSandboxStats(req) {
      const all = await containers.list();
      let pods = sandboxes.all();
      collector.retain(all, pods);
      const f = req.filter;
      if (f?.id) {
        const id = resolveOrNone(sandboxes.index, f.id);
        pods = pods.filter((p) => p.id === id);
      }
      pods = pods.filter((p) => matchesLabels(p.config.labels, f?.labelSelector));
      // A pod removed meanwhile is left out, not an error for the whole list.
      const stats = await Promise.all(pods.map((p) => podStats(p.id, all).catch(() => null)));
      return { stats: stats.filter((s) => s !== null) };
    },
  } satisfies RuntimeHandlers;
}

function requireId(id: unknown, field: string): string {
  if (typeof id !== 'string' || id === '') throw invalidArgument(`${field} is required`);
  return id;
}
