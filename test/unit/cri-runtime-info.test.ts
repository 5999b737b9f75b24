/**
 * Status and RuntimeConfig as kubelet reads them: NetworkReady follows the CNI readiness
 * (false with kubelet's reason and the loader's words), RuntimeReady stays true, and
 * RuntimeConfig reports the configured cgroup driver by its CRI name.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultConfig } from '../../src/config/config.js';
import { RuntimeSettings, runtimeInfoHandlers, type NetworkReadiness } from '../../src/cri/runtime-info-rpc.js';


function handlers(net: NetworkReadiness) {
  return runtimeInfoHandlers(defaultConfig(), new RuntimeSettings(), () => net, () => ({}));
}

test('Status: NetworkReady=false with reason NetworkPluginNotReady and the CNI loader\'s message while no network is loaded', async () => {
  const h = handlers({ ready: false, message: 'no network config found in /etc/cni/net.d' });
  const { status } = await h.Status({ verbose: false } as any);
  const byType = Object.fromEntries(status.conditions!.map((c) => [c.type, c]));
  assert.deepEqual(Object.keys(byType), ['RuntimeReady', 'NetworkReady']);
  assert.equal(byType.RuntimeReady!.status, true);
  assert.equal(byType.NetworkReady!.status, false);
  assert.equal(byType.NetworkReady!.reason, 'NetworkPluginNotReady');
  assert.equal(byType.NetworkReady!.message, 'Network plugin returns error: no network config found in /etc/cni/net.d');
});

test('Status: NetworkReady=true, without reason or message, once a network is loaded', async () => {
  const { status } = await handlers({ ready: true, message: '' }).Status({ verbose: false } as any);
  const net = status.conditions!.find((c) => c.type === 'NetworkReady')!;
  assert.deepEqual([net.status, net.reason, net.message], [true, '', '']);
});

test('RuntimeConfig reports the configured cgroup driver (cgroupfs → CGROUPFS), which kubelet adopts', async () => {
  const cfg = defaultConfig();
  assert.equal(cfg.cgroupDriver, 'cgroupfs');
  const r = await runtimeInfoHandlers(cfg, new RuntimeSettings(), () => ({ ready: true, message: '' }), () => ({})).RuntimeConfig();
  assert.equal(r.linux?.cgroupDriver, 'CGROUPFS');
});
