import { test } from 'node:test';
import assert from 'node:assert/strict';
import { resolveConfig } from '../../src/config/config.js';
import { CniNetworks } from '../../src/network/pod-network.js';
import { silentLogger } from '../../src/util/log.js';
import { makeFakeCni, fakeResult, type FakeCni } from '../helpers/cni-fake.js';

type T = { after: (fn: () => Promise<void>) => void };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function setup(t: T, reloadIntervalMs: number, extraCni: Record<string, unknown> = {}) {
  const fake = await makeFakeCni();
  t.after(() => fake.cleanup());
  await fake.addPlugin('fa');
  await fake.respond('fa', 'ADD', { stdout: fakeResult(['10.9.0.5/24']) });
  const cfg = resolveConfig({ cni: { conf_dir: fake.confDir, bin_dirs: [fake.binDir], cache_dir: fake.cacheDir, max_networks: 0, reload_interval_ms: reloadIntervalMs, ...extraCni } });
  const driver = new CniNetworks(cfg, silentLogger()).driverFor(cfg.runtimes.runc!, { podCidrs: [] });
  const run = async (id: string) => {
    const r = await driver.setUp({ containerId: id, netnsPath: `/var/run/netns/${id}`, podName: 'p', podNamespace: 'ns', podUid: 'u', portMappings: [], annotations: {} });
    return r.attachments.map((a) => a.networkName);
  };
  return { fake, run };
}

/** Swaps the conf dir's only network "old" for "new" (same file). */
async function swapNetwork(fake: FakeCni): Promise<void> {
  await fake.writeConf('10-old.conf', { cniVersion: '1.0.0', name: 'new', type: 'fa' });
}

test('a periodic re-read of the conf dir runs beside a Run instead of in front of it', async (t) => {
  const { fake, run } = await setup(t, 50);
  await fake.writeConf('10-old.conf', { cniVersion: '1.0.0', name: 'old', type: 'fa' });
  assert.deepEqual(await run('n1'), ['old'], 'the first Run waits for the first load');
  await swapNetwork(fake);
  await sleep(80);
  // The interval has passed: this Run starts the re-read and goes on with what is loaded.
  assert.deepEqual(await run('n2'), ['old']);
  await sleep(200);
  assert.deepEqual(await run('n3'), ['new'], 'the next Run sees the re-read conf dir');
});

test('with nothing loaded, or reload_interval_ms = 0, a Run waits for the re-read', async (t) => {
  const { fake, run } = await setup(t, 50);
  await assert.rejects(run('e1'), /no network config found/);
  await fake.writeConf('10-old.conf', { cniVersion: '1.0.0', name: 'old', type: 'fa' });
  await sleep(80);
  assert.deepEqual(await run('e2'), ['old'], 'a config dropped into an empty conf dir is used by the next Run');

  const zero = await setup(t, 0);
  await zero.fake.writeConf('10-old.conf', { cniVersion: '1.0.0', name: 'old', type: 'fa' });
  assert.deepEqual(await zero.run('z1'), ['old']);
  await swapNetwork(zero.fake);
  assert.deepEqual(await zero.run('z2'), ['new']);
});

test("the daemon's networks do not run the loopback plugin: corral-nshelper already brought lo up", async (t) => {
  const { fake, run } = await setup(t, 1000);
  await fake.addPlugin('loopback');
  await fake.respond('loopback', 'ADD', { stdout: { cniVersion: '0.3.1', interfaces: [{ name: 'lo', sandbox: '/x' }], ips: [{ version: '4', address: '127.0.0.1/8', interface: 0 }] } });
  await fake.writeConf('10-old.conf', { cniVersion: '1.0.0', name: 'old', type: 'fa' });
  assert.deepEqual(await run('l1'), ['old']);
  assert.deepEqual(await fake.calls(), ['ADD fa eth0']);
});

test('[cni] loopback_plugin = true: the loopback plugin runs beside the networks, as containerd does', async (t) => {
  const { fake, run } = await setup(t, 1000, { loopback_plugin: true });
  await fake.addPlugin('loopback');
  await fake.respond('loopback', 'ADD', { stdout: { cniVersion: '0.3.1', interfaces: [{ name: 'lo', sandbox: '/x' }], ips: [{ version: '4', address: '127.0.0.1/8', interface: 0 }] } });
  await fake.writeConf('10-old.conf', { cniVersion: '1.0.0', name: 'old', type: 'fa' });
  await run('l2');
  assert.deepEqual((await fake.calls()).sort(), ['ADD fa eth0', 'ADD loopback lo']);
});
