/**
 * ListMetricDescriptors and ListPodSandboxMetrics against a real daemon: a container burning
 * CPU has its container_cpu_usage_seconds_total grow, its memory is reported, the pod's eth0
 * counters are there, every metric matches its descriptor, and a stopped pod is left out.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { TestDaemon, podConfig } from '../helpers/daemon.js';
import type { TestRegistry } from '../helpers/registry.js';
import { startContainer, startDaemonWithBusybox } from '../helpers/busybox-daemon.js';
import { waitFor } from '../helpers/wait.js';

let reg: TestRegistry;
let d: TestDaemon;
let image: string;

before(async () => {
  ({ reg, d, image } = await startDaemonWithBusybox({ tag: 'metrics' }));
});

after(async () => {
  await d?.cleanup();
  await reg?.stop();
});

test('ListPodSandboxMetrics: a CPU-burning container has its cpu seconds grow; memory and the pod network are there, each as its descriptor says', async () => {
  const { descriptors } = await d.rpc('ListMetricDescriptors', {});
  const keys = new Map<string, string[]>(descriptors.map((x: any) => [x.name, x.labelKeys]));
  for (const n of ['container_cpu_usage_seconds_total', 'container_memory_working_set_bytes', 'container_network_receive_bytes_total']) assert.ok(keys.has(n), n);

  const cfg = podConfig();
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config: cfg });
  const burner = await startContainer(d, { podSandboxId, sandboxConfig: cfg }, image, 'burn', ['sh', '-c', 'while :; do :; done']);
  const idle = await startContainer(d, { podSandboxId, sandboxConfig: cfg }, image, 'idle', ['sleep', '1000']);

  const metricsOf = async () => {
    const { podMetrics } = await d.rpc('ListPodSandboxMetrics', {});
    const pod = podMetrics.find((p: any) => p.podSandboxId === podSandboxId);
    assert.ok(pod, 'the ready pod is listed');
    for (const m of [...pod.metrics, ...pod.containerMetrics.flatMap((c: any) => c.metrics)]) {
      assert.ok(keys.has(m.name), `${m.name} has a descriptor`);
      assert.equal(m.labelValues.length, keys.get(m.name)!.length, `${m.name}: one value per label key`);
    }
    return pod;
  };
  const value = (pod: any, containerId: string, name: string) => {
    const m = pod.containerMetrics.find((c: any) => c.containerId === containerId)?.metrics.find((x: any) => x.name === name);
    return m === undefined ? undefined : Number(m.value.value);
  };

  const first = await metricsOf();
  assert.deepEqual(first.containerMetrics.map((c: any) => c.containerId).sort(), [burner, idle].sort());
  const cpu0 = value(first, burner, 'container_cpu_usage_seconds_total')!;
  assert.ok(cpu0 !== undefined);
  const cpuMetric = first.containerMetrics.find((c: any) => c.containerId === burner).metrics.find((x: any) => x.name === 'container_cpu_usage_seconds_total');
  assert.equal(cpuMetric.metricType, 'COUNTER');
  assert.equal(cpuMetric.labelValues[0], burner);
  assert.ok(value(first, burner, 'container_memory_working_set_bytes')! > 0, 'working set reported');
  const eth0 = first.metrics.find((m: any) => m.name === 'container_network_receive_bytes_total' && m.labelValues[3] === 'eth0');
  assert.ok(eth0, "the pod's eth0 receive counter");
  assert.equal(eth0.labelValues[1], 'POD');

  // Whole seconds: wait until the busy loop has used at least two more.
  let last = cpu0;
  await waitFor(async () => {
    last = value(await metricsOf(), burner, 'container_cpu_usage_seconds_total') ?? -1;
    return last >= cpu0 + 2;
  }, { timeoutMs: 60_000, intervalMs: 500, what: `the burner's cpu seconds to grow from ${cpu0}` });
  assert.ok(value(await metricsOf(), idle, 'container_cpu_usage_seconds_total')! < last, 'the idle container used less');

  await d.rpc('StopPodSandbox', { podSandboxId });
  const { podMetrics } = await d.rpc('ListPodSandboxMetrics', {});
  assert.equal(podMetrics.find((p: any) => p.podSandboxId === podSandboxId), undefined, 'a stopped pod is left out');
  await d.rpc('RemovePodSandbox', { podSandboxId });
});
