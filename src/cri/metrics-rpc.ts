/**
 * ListMetricDescriptors / ListPodSandboxMetrics: the cAdvisor-named metrics of what the stats
 * calls already read (a container's cgroup sample, the pod's /proc/<pid>/net/dev), so that
 * kubelet can serve /metrics/cadvisor from the runtime (its PodAndContainerStatsFromCRI mode).
 *
 * Label keys as cri-o has them: id, name, image (kubelet appends namespace, pod and container
 * itself), plus `interface` for network counters and failure_type/scope for page faults, as
 * cAdvisor. Pod-level rows (network) carry the sandbox's ID, name "POD" and no image, as cri-o.
 * Values are uint64 in the CRI: seconds are whole seconds, as containerd and cri-o send them.
 * Only ready pods and running containers are listed, as containerd does. Nothing here walks a
 * writable layer: no filesystem metric is served.
 */
import { promises as fs } from 'node:fs';
import type { ContainerService } from '../container/service.js';
import type { ContainerRecord } from '../container/record.js';
import type { SandboxService } from '../sandbox/service.js';
import type { SandboxRecord } from '../sandbox/record.js';
import { parseNetDev, sampleContainerCgroup, type CgroupSample, type InterfaceCounters } from '../container/stats.js';
import type { MetricDescriptorInit, MetricInit, MetricType, PodSandboxMetricsInit } from '../cri-api/types.js';
import type { RuntimeHandlers } from './rpc-types.js';

const BASE_LABEL_KEYS = ['id', 'name', 'image'];

interface MetricDef {
  name: string;
  help: string;
  type: MetricType;
  /** Label keys after the base ones. */
  extra: string[];
}

const def = (name: string, help: string, type: MetricType, extra: string[] = []): MetricDef => ({ name, help, type, extra });

/** Every metric served, by name. */
const METRICS = {
  cpuUsage: def('container_cpu_usage_seconds_total', 'Cumulative cpu time consumed in seconds.', 'COUNTER'),
  memoryUsage: def('container_memory_usage_bytes', 'Current memory usage in bytes, including all memory regardless of when it was accessed', 'GAUGE'),
  workingSet: def('container_memory_working_set_bytes', 'Current working set in bytes.', 'GAUGE'),
  rss: def('container_memory_rss', 'Size of RSS in bytes.', 'GAUGE'),
  memoryFailures: def('container_memory_failures_total', 'Cumulative count of memory allocation failures.', 'COUNTER', ['failure_type', 'scope']),
  memoryLimit: def('container_spec_memory_limit_bytes', 'Memory limit for the container.', 'GAUGE'),
  rxBytes: def('container_network_receive_bytes_total', 'Cumulative count of bytes received', 'COUNTER', ['interface']),
  rxErrors: def('container_network_receive_errors_total', 'Cumulative count of errors encountered while receiving', 'COUNTER', ['interface']),
  txBytes: def('container_network_transmit_bytes_total', 'Cumulative count of bytes transmitted', 'COUNTER', ['interface']),
  txErrors: def('container_network_transmit_errors_total', 'Cumulative count of errors encountered while transmitting', 'COUNTER', ['interface']),
} satisfies Record<string, MetricDef>;

/** ListMetricDescriptors' answer: one descriptor per metric served. */
export const METRIC_DESCRIPTORS: MetricDescriptorInit[] = Object.values(METRICS).map((m) => ({ name: m.name, help: m.help, labelKeys: [...BASE_LABEL_KEYS, ...m.extra] }));

function metric(m: MetricDef, base: string[], extra: string[], value: bigint, timestamp: bigint): MetricInit {
  if (extra.length !== m.extra.length) throw new Error(`metric ${m.name}: ${extra.length} extra label values for ${m.extra.length} keys`);
  return { name: m.name, timestamp, metricType: m.type, labelValues: [...base, ...extra], value: { value } };
}

const NS_PER_SECOND = 1_000_000_000n;

/** A running container's metrics from one cgroup sample (what ContainerStats reads). Pure. */
export function containerMetricsOf(rec: ContainerRecord, s: CgroupSample): MetricInit[] {
  const base = [rec.id, rec.name, rec.imageRef];
  const ts = s.timestampNs;
  const out: MetricInit[] = [];
  const add = (m: MetricDef, v: bigint | null, extra: string[] = []) => {
    if (v !== null) out.push(metric(m, base, extra, v, ts));
  };
  add(METRICS.cpuUsage, s.cpuUsageNs === null ? null : s.cpuUsageNs / NS_PER_SECOND);
  add(METRICS.memoryUsage, s.memoryUsageBytes);
  add(METRICS.workingSet, s.workingSetBytes);
  add(METRICS.rss, s.rssBytes);
  add(METRICS.memoryFailures, s.pageFaults, ['pgfault', 'container']);
  add(METRICS.memoryFailures, s.majorPageFaults, ['pgmajfault', 'container']);
  // cAdvisor's 0 for "no limit".
  add(METRICS.memoryLimit, s.memoryLimitBytes ?? 0n);
  return out;
}

/** The pod's network counters, per interface but loopback (as PodSandboxStats). Pure. */
export function podNetworkMetricsOf(sandbox: SandboxRecord, counters: InterfaceCounters[], timestamp: bigint): MetricInit[] {
  const base = [sandbox.id, 'POD', ''];
  return counters
    .filter((c) => c.name !== 'lo')
    .flatMap((c) => [
      metric(METRICS.rxBytes, base, [c.name], c.rxBytes, timestamp),
      metric(METRICS.rxErrors, base, [c.name], c.rxErrors, timestamp),
      metric(METRICS.txBytes, base, [c.name], c.txBytes, timestamp),
      metric(METRICS.txErrors, base, [c.name], c.txErrors, timestamp),
    ]);
}

const nowNs = () => BigInt(Date.now()) * 1_000_000n;

export function metricsHandlers(containers: ContainerService, sandboxes: SandboxService) {
  const podMetrics = async (sandbox: SandboxRecord, all: ContainerRecord[]): Promise<PodSandboxMetricsInit | null> => {
    if ((await sandboxes.liveState(sandbox)) !== 'SANDBOX_READY') return null;
    const running = all.filter((c) => c.sandboxId === sandbox.id && c.state === 'running' && c.pid > 0);
    const containerMetrics = await Promise.all(
      running.map(async (c) => {
        const sample = await sampleContainerCgroup(c.pid, c.id);
        return sample ? { containerId: c.id, metrics: containerMetricsOf(c, sample) } : null;
      }),
    );
    // A process inside the pod's network namespace: the pause, else a running container.
    const netPid = sandbox.hostNetwork ? 0 : sandbox.infraMode === 'pause' && sandbox.pid > 0 ? sandbox.pid : (running[0]?.pid ?? 0);
    const netDev = netPid > 0 ? await fs.readFile(`/proc/${netPid}/net/dev`, 'utf8').catch(() => null) : null;
    return {
      podSandboxId: sandbox.id,
      metrics: netDev === null ? [] : podNetworkMetricsOf(sandbox, parseNetDev(netDev), nowNs()),
      containerMetrics: containerMetrics.filter((m) => m !== null),
    };
  };

  return {
    async ListMetricDescriptors() {
      return { descriptors: METRIC_DESCRIPTORS };
    },

    async ListPodSandboxMetrics() {
      const all = await containers.list();
      // A pod removed meanwhile is left out, not an error for the whole list.
      const pods = await Promise.all(sandboxes.all().map((p) => podMetrics(p, all).catch(() => null)));
      return { podMetrics: pods.filter((p) => p !== null) };
    },
  } satisfies RuntimeHandlers;
}
