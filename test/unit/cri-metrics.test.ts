/** ListMetricDescriptors / ListPodSandboxMetrics shapes: what kubelet's CRI metrics collector needs to turn them into Prometheus series. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { METRIC_DESCRIPTORS, containerMetricsOf, podNetworkMetricsOf } from '../../src/cri/metrics-rpc.js';
import type { CgroupSample } from '../../src/container/stats.js';
import type { ContainerRecord } from '../../src/container/record.js';
import type { SandboxRecord } from '../../src/sandbox/record.js';

const rec = { id: 'c1', name: 'app_pod_ns_uid_0', imageRef: 'registry/busybox:1' } as ContainerRecord;
const sample: CgroupSample = {
  timestampNs: 1_700_000_000_000_000_000n,
  cpuUsageNs: 2_999_999_999n,
  memoryUsageBytes: 1000n,
  workingSetBytes: 800n,
  rssBytes: 500n,
  pageFaults: 7n,
  majorPageFaults: 1n,
  memoryLimitBytes: null,
};

const byName = new Map(METRIC_DESCRIPTORS.map((d) => [d.name!, d]));

/** kubelet builds a const metric from the descriptor's keys and the metric's values: the counts must match. */
function assertMatchesDescriptor(m: { name?: string | null; labelValues?: string[] | null }) {
  const d = byName.get(m.name!);
  assert.ok(d, `${m.name} has a descriptor`);
  assert.equal(m.labelValues!.length, d.labelKeys!.length, `${m.name}: label values for ${d.labelKeys!.join(',')}`);
}

test('descriptors: cAdvisor names, unique, with the base label keys id, name, image (as cri-o)', () => {
  assert.equal(byName.size, METRIC_DESCRIPTORS.length, 'no name twice');
  for (const d of METRIC_DESCRIPTORS) {
    assert.match(d.name!, /^container_[a-z_]+$/);
    assert.deepEqual(d.labelKeys!.slice(0, 3), ['id', 'name', 'image']);
    assert.ok(d.help);
  }
  for (const n of ['container_cpu_usage_seconds_total', 'container_memory_working_set_bytes', 'container_memory_usage_bytes', 'container_memory_rss', 'container_spec_memory_limit_bytes', 'container_network_receive_bytes_total', 'container_network_transmit_bytes_total']) {
    assert.ok(byName.has(n), n);
  }
  assert.deepEqual(byName.get('container_network_receive_bytes_total')!.labelKeys, ['id', 'name', 'image', 'interface']);
});

test('a container sample as metrics: whole CPU seconds, bytes, page faults by type, 0 for no limit; every one matches its descriptor', () => {
  const metrics = containerMetricsOf(rec, sample);
  metrics.forEach(assertMatchesDescriptor);
  const value = (name: string, ...extra: string[]) => metrics.find((m) => m.name === name && extra.every((e, i) => m.labelValues![3 + i] === e))?.value?.value;
  assert.equal(value('container_cpu_usage_seconds_total'), 2n, 'seconds, truncated (the CRI value is a uint64)');
  assert.equal(value('container_memory_usage_bytes'), 1000n);
  assert.equal(value('container_memory_working_set_bytes'), 800n);
  assert.equal(value('container_memory_rss'), 500n);
  assert.equal(value('container_memory_failures_total', 'pgfault', 'container'), 7n);
  assert.equal(value('container_memory_failures_total', 'pgmajfault', 'container'), 1n);
  assert.equal(value('container_spec_memory_limit_bytes'), 0n);
  assert.deepEqual(metrics[0]!.labelValues!.slice(0, 3), ['c1', 'app_pod_ns_uid_0', 'registry/busybox:1']);
  assert.equal(metrics[0]!.timestamp, sample.timestampNs);
  assert.equal(metrics.find((m) => m.name === 'container_cpu_usage_seconds_total')!.metricType, 'COUNTER');
  assert.equal(metrics.find((m) => m.name === 'container_memory_rss')!.metricType, 'GAUGE');
  // what the cgroup did not give is left out, not reported as 0
  const partial = containerMetricsOf(rec, { ...sample, rssBytes: null, memoryLimitBytes: 1n << 20n });
  assert.equal(partial.find((m) => m.name === 'container_memory_rss'), undefined);
  assert.equal(partial.find((m) => m.name === 'container_spec_memory_limit_bytes')!.value!.value, 1n << 20n);
});

test("the pod's network counters per interface, loopback left out, labelled as the pod (name POD)", () => {
  const sb = { id: 'p1' } as SandboxRecord;
  const metrics = podNetworkMetricsOf(sb, [
    { name: 'lo', rxBytes: 5n, rxErrors: 0n, txBytes: 5n, txErrors: 0n },
    { name: 'eth0', rxBytes: 100n, rxErrors: 1n, txBytes: 200n, txErrors: 2n },
  ], 42n);
  metrics.forEach(assertMatchesDescriptor);
  assert.deepEqual(metrics.map((m) => [m.name, m.labelValues!.join('|'), m.value!.value]), [
    ['container_network_receive_bytes_total', 'p1|POD||eth0', 100n],
    ['container_network_receive_errors_total', 'p1|POD||eth0', 1n],
    ['container_network_transmit_bytes_total', 'p1|POD||eth0', 200n],
    ['container_network_transmit_errors_total', 'p1|POD||eth0', 2n],
  ]);
});
