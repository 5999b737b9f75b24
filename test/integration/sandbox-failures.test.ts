/**
 * Failure injection: every refused or failed RunPodSandbox leaves the host as it was,
 * a failed CNI DEL is reported and retried by the next Stop, and the network readiness
 * the Status RPC reports follows the CNI conf dir.
 */
import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { status } from '@grpc/grpc-js';
import { execFile } from '../../src/util/exec.js';
import { TestDaemon, hostTraces, podConfig, vethCount } from '../helpers/daemon.js';
import { eventually } from '../helpers/wait.js';
import { podCgroupDirs, podPauseProcesses } from '../helpers/pod-pause.js';

// A chained CNI plugin controlled by flag files: fails ADD or DEL on demand, else passes prevResult on.
const FLAKY_PLUGIN = `#!/bin/bash
conf=$(cat)
dir=$(dirname "$0")
if [ "$CNI_COMMAND" = VERSION ]; then echo '{"cniVersion":"1.0.0","supportedVersions":["0.3.1","0.4.0","1.0.0"]}'; exit 0; fi
if [ "$CNI_COMMAND" = ADD ] && [ -e "$dir/fail-add" ]; then
  # What of the pod runs at this point (Corral's own pause, with start-first): for the rollback test.
  echo "$CNI_CONTAINERID" > "$dir/add-container-id"
  grep -ls -- "$CNI_CONTAINERID" /proc/[0-9]*/cmdline | xargs -r grep -ls corral-podpause > "$dir/pauses-at-add" || true
  echo '{"cniVersion":"1.0.0","code":11,"msg":"injected ADD failure","details":"flag file fail-add"}'; exit 1
fi
if [ "$CNI_COMMAND" = DEL ] && [ -e "$dir/fail-del" ]; then
  echo '{"cniVersion":"1.0.0","code":11,"msg":"injected DEL failure","details":"flag file fail-del"}'; exit 1
fi
if [ "$CNI_COMMAND" = ADD ]; then
  printf '%s' "$conf" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["prevResult"]))'
fi
exit 0
`;

// A runtime handler that is runc, except that "start" fails.
const FAILING_START_RUNTIME = `#!/bin/bash
for a in "$@"; do
  if [ "$a" = start ]; then echo "injected start failure" >&2; exit 1; fi
done
exec runc "$@"
`;

const d = new TestDaemon({
  conflist: (t) => withFlaky(t),
  // type "vm": a pause container through the OCI runtime (non-VM handlers run Corral's own pause).
  extraToml: (t) => `[runtimes.runc]\npath = "runc"\n[runtimes.failstart]\npath = "${t.binDir}/failstart-runtime"\ntype = "vm"\n`,
  // Re-read the conf dir on every Status and pod, so a conflist written by a test applies at once.
  cniToml: 'reload_interval_ms = 0',
});
const binDir = d.binDir;

before(async () => {
  await d.writeScript('bin/flaky', FLAKY_PLUGIN);
  await d.writeScript('bin/failstart-runtime', FAILING_START_RUNTIME);
  await d.start();
});
after(async () => {
  await d.cleanup();
});
afterEach(async () => {
  await fs.rm(path.join(binDir, 'fail-add'), { force: true });
  await fs.rm(path.join(binDir, 'fail-del'), { force: true });
  const { items } = await d.rpc('ListPodSandbox', {});
  for (const i of items) await d.rpc('RemovePodSandbox', { podSandboxId: i.id }).catch(() => {});
});

function withFlaky(t: TestDaemon): object {
  const base = t.defaultConflist() as any;
  return { ...base, plugins: [...base.plugins, { type: 'flaky' }] };
}

async function assertHostClean(vethsBefore: number) {
  const traces = await hostTraces(d);
  assert.deepEqual(traces.netns, [], 'no netns pin left');
  assert.deepEqual(traces.reservations, [], 'no IP reservation left');
  assert.deepEqual(traces.runtimeContainers, [], 'no runtime container left');
  assert.deepEqual(traces.mounts.filter((m) => m.includes('/sandboxes/')), [], 'no sandbox mount left');
  assert.equal(await vethCount(d), vethsBefore, 'no veth left');
  assert.deepEqual(await fs.readdir(path.join(d.rootDir, 'sandboxes')).catch(() => []), [], 'no sandbox record left');
  assert.deepEqual(await fs.readdir(path.join(d.stateDir, 'sandboxes')).catch(() => []), [], 'no sandbox state dir left');
  assert.deepEqual((await d.rpc('ListPodSandbox', {})).items, []);
}

test('refused before any side effect: bad sysctls, unknown handler, relative log directory, bad bandwidth annotation', async () => {
  const vethsBefore = await vethCount(d);
  const logLinesBefore = (await d.logLines()).length;
  const cases: [object, string, RegExp][] = [
    [podConfig({ linux: { sysctls: { 'kernel.hostname': 'x' }, securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } } }), '', /kernel\.hostname/],
    [podConfig({ linux: { sysctls: { 'net.ipv4.ip_forward': '1' }, securityContext: { namespaceOptions: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } } }), '', /net\.ipv4\.ip_forward/],
    [podConfig(), 'kata', /unknown runtime handler "kata"; configured handlers: runc, failstart/],
    [podConfig({ logDirectory: 'relative/logs' }), '', /log_directory must be an absolute path/],
    [podConfig({ annotations: { 'kubernetes.io/ingress-bandwidth': '10 megabits' } }), '', /pod bandwidth annotation: .*ingress-bandwidth.*not a valid quantity/],
  ];
  for (const [config, runtimeHandler, re] of cases) {
    await assert.rejects(d.rpc('RunPodSandbox', { config, runtimeHandler }), (e: any) => e.code === status.INVALID_ARGUMENT && re.test(e.details), String(re));
  }
  // Refused by the plan: nothing was made, so nothing was rolled back.
  const rollbacks = (await d.logLines()).slice(logLinesBefore).filter((l) => /rolling back/.test(l.msg ?? ''));
  assert.deepEqual(rollbacks.map((l) => l.err), []);
  await assertHostClean(vethsBefore);
  // A refusal does not keep the name: the corrected request for the same pod goes through.
  const [, , [unknownHandlerPod]] = cases;
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config: unknownHandlerPod, runtimeHandler: 'runc' });
  assert.equal((await d.rpc('PodSandboxStatus', { podSandboxId })).status.state, 'SANDBOX_READY');
});

test('the namespace helper failing (a net.* sysctl the kernel refuses): nothing is left', async () => {
  const vethsBefore = await vethCount(d);
  const config = podConfig({ linux: { sysctls: { 'net.ipv4.ip_unprivileged_port_start': 'not-a-number' }, securityContext: { namespaceOptions: { network: 'POD', pid: 'CONTAINER', ipc: 'POD' } } } });
  await assert.rejects(d.rpc('RunPodSandbox', { config }), (e: any) => /network namespace/.test(e.details) && /ip_unprivileged_port_start/.test(e.details));
  await assertHostClean(vethsBefore);
});

test('a CNI plugin failing ADD after IPAM allocated: the error names the plugin, everything is rolled back, the name is free', async () => {
  const vethsBefore = await vethCount(d);
  await fs.writeFile(path.join(binDir, 'fail-add'), '');
  const config = podConfig();
  await assert.rejects(d.rpc('RunPodSandbox', { config }), (e: any) => {
    assert.match(e.details, /flaky/);
    assert.match(e.details, /injected ADD failure/);
    assert.match(e.details, /flag file fail-add/);
    return true;
  });
  await assertHostClean(vethsBefore);
  await fs.rm(path.join(binDir, 'fail-add'));
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config });
  assert.equal((await d.rpc('PodSandboxStatus', { podSandboxId })).status.state, 'SANDBOX_READY');
});

for (const order of ['start-first', 'network-first'] as const) {
  test(`CNI ADD failing with Corral's own pause (${order}: ${order === 'start-first' ? 'started before ADD' : 'started while ADD runs'}): the rollback kills the pause and removes its cgroups`, async () => {
    const vethsBefore = await vethCount(d);
    await fs.writeFile(path.join(binDir, 'fail-add'), '');
    await fs.rm(path.join(binDir, 'pauses-at-add'), { force: true });
    const config = podConfig({
      annotations: { 'io.corral.sandbox.network-order': order },
      linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'POD', ipc: 'POD' } } },
    });
    await assert.rejects(d.rpc('RunPodSandbox', { config }), (e: any) => /injected ADD failure/.test(e.details));
    const id = (await fs.readFile(path.join(binDir, 'add-container-id'), 'utf8')).trim();
    if (order === 'start-first') {
      // The plugin saw the pause running during ADD; the rollback removed it.
      const seen = (await fs.readFile(path.join(binDir, 'pauses-at-add'), 'utf8')).trim().split('\n').filter(Boolean);
      assert.equal(seen.length, 1, `the pause ran while CNI ADD was called: ${seen.join(', ')}`);
    }
    assert.deepEqual(await podPauseProcesses(id), [], 'the pause is killed');
    assert.deepEqual(await podCgroupDirs(id), [], 'its cgroups are removed');
    await assertHostClean(vethsBefore);
  });
}

test('a runtime failing start: the created container is deleted and nothing is left', async () => {
  const vethsBefore = await vethCount(d);
  const config = podConfig({ linux: { securityContext: { namespaceOptions: { network: 'POD', pid: 'POD', ipc: 'POD' } } } });
  await assert.rejects(d.rpc('RunPodSandbox', { config, runtimeHandler: 'failstart' }), (e: any) => /injected start failure/.test(e.details));
  await assertHostClean(vethsBefore);
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config, runtimeHandler: 'runc' });
  assert.ok(podSandboxId);
});

test('a failing CNI DEL is reported by Stop, the sandbox stays NOTREADY, and the next Stop finishes the job', async () => {
  const vethsBefore = await vethCount(d);
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config: podConfig() });
  await fs.writeFile(path.join(binDir, 'fail-del'), '');
  await assert.rejects(d.rpc('StopPodSandbox', { podSandboxId }), (e: any) => /injected DEL failure/.test(e.details));
  const st = await d.rpc('PodSandboxStatus', { podSandboxId, verbose: true });
  assert.equal(st.status.state, 'SANDBOX_NOTREADY');
  assert.match(JSON.parse(st.info.info).lastError, /injected DEL failure/);
  assert.equal((await hostTraces(d)).reservations.length, 1, 'the IP stays reserved until DEL succeeds');
  await fs.rm(path.join(binDir, 'fail-del'));
  await d.rpc('StopPodSandbox', { podSandboxId });
  assert.deepEqual((await hostTraces(d)).reservations, []);
  await d.rpc('RemovePodSandbox', { podSandboxId });
  await assertHostClean(vethsBefore);
});

test('DEL works from the cache after the conf dir was emptied', async () => {
  const vethsBefore = await vethCount(d);
  const { podSandboxId } = await d.rpc('RunPodSandbox', { config: podConfig() });
  await d.writeConflist(null);
  try {
    await d.rpc('StopPodSandbox', { podSandboxId });
    await d.rpc('RemovePodSandbox', { podSandboxId });
    await assertHostClean(vethsBefore);
  } finally {
    await d.writeConflist(withFlaky(d));
  }
});

test('NetworkReady follows the conf dir; host-network pods run without CNI; pod networks are refused with a reason', async () => {
  await d.writeConflist(null);
  try {
    // Status answers from the last load and starts the next one: poll until it saw the empty dir.
    const { st, net } = await eventually(async () => {
      const st = await d.rpc('Status', {});
      const net = st.status.conditions.find((c: any) => c.type === 'NetworkReady');
      assert.equal(net.status, false);
      return { st, net };
    }, { what: 'Status to report NetworkReady=false after the conf dir was emptied' });
    assert.equal(net.reason, 'NetworkPluginNotReady');
    assert.match(net.message, /net\.d|no network/i);
    assert.equal(st.status.conditions.find((c: any) => c.type === 'RuntimeReady').status, true);

    await assert.rejects(d.rpc('RunPodSandbox', { config: podConfig() }), (e: any) => e.code !== status.OK && /network/i.test(e.details));
    assert.deepEqual((await hostTraces(d)).netns, []);
    const hostPod = podConfig({ linux: { securityContext: { namespaceOptions: { network: 'NODE', pid: 'CONTAINER', ipc: 'POD' } } } });
    const { podSandboxId } = await d.rpc('RunPodSandbox', { config: hostPod });
    assert.equal((await d.rpc('PodSandboxStatus', { podSandboxId })).status.state, 'SANDBOX_READY');
  } finally {
    await d.writeConflist(withFlaky(d));
  }
  await eventually(async () => {
    const again = await d.rpc('Status', {});
    assert.equal(again.status.conditions.find((c: any) => c.type === 'NetworkReady').status, true);
  }, { what: 'Status to report NetworkReady=true after the conflist came back' });
});

test('UpdateRuntimeConfig pod CIDR reaches host-local as the ipRanges capability', async () => {
  const base = d.defaultConflist() as any;
  const cidr = d.subnet.replace(/\.0\/24$/, '.128/25');
  await d.writeConflist({
    ...base,
    // A bridge of its own: the test bridge already carries the gateway of the /24.
    plugins: [{ ...base.plugins[0], bridge: `${d.bridge}r`, capabilities: { ipRanges: true }, ipam: { type: 'host-local' } }, base.plugins[1]],
  });
  try {
    // No wait: with reload_interval_ms = 0 the Run below re-reads the conf dir first.
    await d.rpc('UpdateRuntimeConfig', { runtimeConfig: { networkConfig: { podCidr: cidr } } });
    const { podSandboxId } = await d.rpc('RunPodSandbox', { config: podConfig() });
    const ip: string = (await d.rpc('PodSandboxStatus', { podSandboxId })).status.network.ip;
    assert.ok(Number(ip.split('.')[3]) > 128, `${ip} in ${cidr}`);
  } finally {
    await d.rpc('UpdateRuntimeConfig', { runtimeConfig: { networkConfig: { podCidr: '' } } });
    const { items } = await d.rpc('ListPodSandbox', {});
    for (const i of items) await d.rpc('RemovePodSandbox', { podSandboxId: i.id });
    await d.writeConflist(withFlaky(d));
    await execFile('ip', ['link', 'del', `${d.bridge}r`]);
  }
});
