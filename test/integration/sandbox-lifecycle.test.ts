import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { status } from '@grpc/grpc-js';
import { TestDaemon, hostTraces, podConfig, vethCount } from '../helpers/daemon.js';
import { execFile } from '../../src/util/exec.js';
import { isNetnsPinned } from '../../src/network/netns.js';

const d = new TestDaemon();
before(async () => {
  await d.start();
});
after(async () => {
  await d.cleanup();
});
// A failed assertion must not leave pods for the next test to trip over.
afterEach(async () => {
  const { items } = await d.rpc('ListPodSandbox', {});
  for (const i of items) await d.rpc('RemovePodSandbox', { podSandboxId: i.id });
});

function inSubnet(ip: string, subnet: string): boolean {
  return ip.split('.').slice(0, 3).join('.') === subnet.split('.').slice(0, 3).join('.');
}

async function assertNothingLeft(id: string) {
  const traces = await hostTraces(d);
  assert.deepEqual(traces.netns.filter((n) => n.includes(id)), [], 'netns pin left');
  assert.deepEqual(traces.runtimeContainers.filter((c) => c === id), [], 'runtime container left');
  assert.deepEqual(traces.mounts.filter((m) => m.includes(id)), [], 'mount left');
}

for (const handler of ['runc', 'crun']) {
  for (const pid of ['POD', 'CONTAINER']) {
    // A shared PID namespace: Corral's own pause ('init'), in the pinned namespaces.
    const mode = pid === 'POD' ? 'init' : 'pinned';
    test(`${handler}, ${mode} mode: a pod gets a pinned netns and a reachable IP; stop twice and remove leave nothing`, async () => {
      const vethsBefore = await vethCount(d);
      const config = podConfig({ linux: { securityContext: { namespaceOptions: { network: 'POD', pid, ipc: 'POD' } } } });
      const { podSandboxId: id } = await d.rpc('RunPodSandbox', { config, runtimeHandler: handler });
      assert.match(id, /^[0-9a-f]{64}$/);

      const st = await d.rpc('PodSandboxStatus', { podSandboxId: id.slice(0, 12), verbose: true });
      assert.equal(st.status.id, id);
      assert.equal(st.status.state, 'SANDBOX_READY');
      assert.equal(st.status.runtimeHandler, handler);
      assert.deepEqual(st.status.metadata, config.metadata);
      assert.ok(inSubnet(st.status.network.ip, d.subnet), `pod IP ${st.status.network.ip} in ${d.subnet}`);
      const info = JSON.parse(st.info.info);
      assert.equal(info.infraMode, mode);
      assert.equal(info.runtimeHandler, handler);
      assert.equal(info.netnsPath, `${d.netnsDir}/corral-${id}`);
      assert.ok(await isNetnsPinned(info.netnsPath));
      assert.ok(info.cniResult.some((a: any) => a.ifName === 'eth0'), 'eth0 attachment in the CNI result');
      for (const step of ['netns', 'cni', 'total']) assert.equal(typeof info.timings[step], 'number', `timing ${step}`);
      if (mode === 'init') {
        assert.ok(info.pid > 0);
        const [podNs, pauseNs] = await Promise.all([fs.stat(info.netnsPath), fs.stat(`/proc/${info.pid}/ns/net`)]);
        assert.equal(pauseNs.ino, podNs.ino, 'pause process runs in the pinned netns');
        assert.ok(info.resources.podInit.cgroups.length > 0, 'the pause has cgroups of its own');
        assert.equal(typeof info.timings.start, 'number', 'timing start');
      }

      const eth0 = await execFile('nsenter', [`--net=${info.netnsPath}`, 'ip', '-o', '-4', 'addr', 'show', 'eth0']);
      assert.match(eth0.stdout, new RegExp(`inet ${st.status.network.ip.replace(/\./g, '\\.')}/`));
      const ping = await execFile('ping', ['-c', '1', '-W', '3', st.status.network.ip]);
      assert.equal(ping.code, 0, `ping ${st.status.network.ip}: ${ping.stdout}${ping.stderr}`);
      assert.equal(await vethCount(d), vethsBefore + 1);

      await d.rpc('StopPodSandbox', { podSandboxId: id });
      const stopped = await d.rpc('PodSandboxStatus', { podSandboxId: id });
      assert.equal(stopped.status.state, 'SANDBOX_NOTREADY');
      await d.rpc('StopPodSandbox', { podSandboxId: id });
      assert.equal((await d.rpc('PodSandboxStatus', { podSandboxId: id })).status.state, 'SANDBOX_NOTREADY');
      assert.equal(await vethCount(d), vethsBefore, 'veth removed by Stop');
      assert.equal(await isNetnsPinned(info.netnsPath), false);
      const traces = await hostTraces(d);
      assert.deepEqual(traces.reservations, [], 'IP released by Stop');

      await d.rpc('RemovePodSandbox', { podSandboxId: id });
      await d.rpc('RemovePodSandbox', { podSandboxId: id });
      await assert.rejects(d.rpc('PodSandboxStatus', { podSandboxId: id }), (e: any) => e.code === status.NOT_FOUND);
      await assertNothingLeft(id);
      await assert.rejects(fs.stat(`${d.rootDir}/sandboxes/${id}`), /ENOENT/);
    });
  }
}

test('Stop and Remove of unknown IDs succeed; Status of one is NOT_FOUND; empty ID is INVALID_ARGUMENT', async () => {
  const unknown = 'f'.repeat(64);
  await d.rpc('StopPodSandbox', { podSandboxId: unknown });
  await d.rpc('RemovePodSandbox', { podSandboxId: unknown });
  await assert.rejects(d.rpc('PodSandboxStatus', { podSandboxId: unknown }), (e: any) => e.code === status.NOT_FOUND && /not found/.test(e.details));
  await assert.rejects(d.rpc('StopPodSandbox', { podSandboxId: '' }), (e: any) => e.code === status.INVALID_ARGUMENT);
});

test('metadata is required', async () => {
  const config = podConfig();
  delete config.metadata;
  await assert.rejects(d.rpc('RunPodSandbox', { config }), (e: any) => e.code === status.INVALID_ARGUMENT && /metadata/.test(e.details));
});

test('host network pods get no netns and are READY', async () => {
  const config = podConfig({ linux: { securityContext: { namespaceOptions: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } } });
  const { podSandboxId: id } = await d.rpc('RunPodSandbox', { config });
  try {
    const st = await d.rpc('PodSandboxStatus', { podSandboxId: id, verbose: true });
    assert.equal(st.status.state, 'SANDBOX_READY');
    assert.equal(st.status.network.ip, '');
    const info = JSON.parse(st.info.info);
    assert.equal(info.netnsPath, null);
    assert.equal(info.privileged, true);
    assert.deepEqual((await hostTraces(d)).netns.filter((n) => n.includes(id)), []);
  } finally {
    await d.rpc('RemovePodSandbox', { podSandboxId: id });
  }
  await assertNothingLeft(id);
});

test('ListPodSandbox filters by ID prefix, state and labels', async () => {
  const a = podConfig({ labels: { app: 'corral-test', tier: 'a' } });
  const b = podConfig({ labels: { app: 'corral-test', tier: 'b' } });
  const { podSandboxId: idA } = await d.rpc('RunPodSandbox', { config: a });
  const { podSandboxId: idB } = await d.rpc('RunPodSandbox', { config: b });
  try {
    await d.rpc('StopPodSandbox', { podSandboxId: idB });
    const ids = async (filter: object) => (await d.rpc('ListPodSandbox', { filter })).items.map((i: any) => i.id).sort();
    assert.deepEqual(await ids({}), [idA, idB].sort());
    assert.deepEqual(await ids({ id: idA.slice(0, 8) }), [idA]);
    assert.deepEqual(await ids({ state: { state: 'SANDBOX_READY' } }), [idA]);
    assert.deepEqual(await ids({ state: { state: 'SANDBOX_NOTREADY' } }), [idB]);
    assert.deepEqual(await ids({ labelSelector: { tier: 'b' } }), [idB]);
    assert.deepEqual(await ids({ labelSelector: { tier: 'c' } }), []);
  } finally {
    await d.rpc('RemovePodSandbox', { podSandboxId: idA });
    await d.rpc('RemovePodSandbox', { podSandboxId: idB });
  }
});

test('the same name twice gives the same ID; after Remove the name is free again', async () => {
  const config = podConfig();
  const [r1, r2] = await Promise.all([d.rpc('RunPodSandbox', { config }), d.rpc('RunPodSandbox', { config })]);
  assert.equal(r1.podSandboxId, r2.podSandboxId);
  const r3 = await d.rpc('RunPodSandbox', { config });
  assert.equal(r3.podSandboxId, r1.podSandboxId, 'a retry of a finished Run gets the same ID');
  assert.equal((await d.rpc('ListPodSandbox', { filter: { labelSelector: {} } })).items.filter((i: any) => i.metadata.name === config.metadata.name).length, 1);
  await d.rpc('RemovePodSandbox', { podSandboxId: r1.podSandboxId });
  const r4 = await d.rpc('RunPodSandbox', { config });
  assert.notEqual(r4.podSandboxId, r1.podSandboxId);
  await d.rpc('RemovePodSandbox', { podSandboxId: r4.podSandboxId });
});

test('20 pods in parallel get 20 distinct IPs, and all are cleaned up', async () => {
  const configs = Array.from({ length: 20 }, () => podConfig());
  const ids: string[] = (await Promise.all(configs.map((config) => d.rpc('RunPodSandbox', { config }, 120_000)))).map((r: any) => r.podSandboxId);
  try {
    assert.equal(new Set(ids).size, 20);
    const ips = await Promise.all(ids.map(async (id) => (await d.rpc('PodSandboxStatus', { podSandboxId: id })).status.network.ip));
    assert.equal(new Set(ips).size, 20, `distinct IPs: ${ips.join(' ')}`);
    for (const ip of ips) assert.ok(inSubnet(ip, d.subnet));
  } finally {
    await Promise.all(ids.map((id) => d.rpc('RemovePodSandbox', { podSandboxId: id }, 120_000)));
  }
  const traces = await hostTraces(d);
  assert.deepEqual(traces.reservations, []);
  for (const id of ids) await assertNothingLeft(id);
});

test('Version, RuntimeConfig and Status describe the runtime', async () => {
  const v = await d.rpc('Version', { version: 'v1' });
  assert.deepEqual([v.runtimeName, v.runtimeApiVersion], ['corral', 'v1']);
  assert.equal((await d.rpc('RuntimeConfig', {})).linux.cgroupDriver, 'CGROUPFS');
  const st = await d.rpc('Status', { verbose: true });
  assert.deepEqual(st.status.conditions.map((c: any) => [c.type, c.status]), [['RuntimeReady', true], ['NetworkReady', true]]);
  assert.deepEqual(st.runtimeHandlers.map((h: any) => h.name), ['', 'runc', 'crun']);
  const cni = JSON.parse(st.info.cni);
  assert.deepEqual(cni[d.confDir].networks, [d.networkName]);
  assert.equal(JSON.parse(st.info.config).netnsDir, d.netnsDir);
});
