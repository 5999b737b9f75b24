import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { CniManager, CniPluginError, CniMultiError, type CniManagerOptions } from '../../src/network/cni/index.js';
import { silentLogger } from '../../src/util/log.js';
import { makeFakeCni, fakeResult, type FakeCni } from '../helpers/cni-fake.js';

type T = { after: (fn: () => Promise<void>) => void };

async function setup(t: T, opts: Partial<CniManagerOptions> = {}): Promise<{ fake: FakeCni; mgr: CniManager }> {
  const fake = await makeFakeCni();
  t.after(() => fake.cleanup());
  const mgr = new CniManager({
    confDir: fake.confDir,
    binDirs: [fake.binDir],
    maxNetworks: 0,
    cacheDir: fake.cacheDir,
    ipPreference: 'ipv4',
    logger: silentLogger(),
    ...opts,
  });
  return { fake, mgr };
}

const req = (containerId: string) => ({
  containerId,
  netnsPath: `/var/run/netns/${containerId}`,
  podName: 'web',
  podNamespace: 'default',
  podUid: 'uid-1',
  portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'TCP' }],
  podAnnotations: { team: 'a' },
});

/** A list "mynet": plugin fa (main, gives an address) then fb (a portmap-like chained plugin). */
async function twoPluginNet(fake: FakeCni, version = '1.0.0'): Promise<{ r1: Record<string, unknown>; r2: Record<string, unknown> }> {
  await fake.addPlugin('fa');
  await fake.addPlugin('fb');
  const r1 = fakeResult(['fd00::5/64', '10.9.0.5/24'], version);
  const r2 = { ...fakeResult(['fd00::5/64', '10.9.0.5/24'], version), chained: true };
  await fake.respond('fa', 'ADD', { stdout: r1 });
  await fake.respond('fb', 'ADD', { stdout: r2 });
  await fake.writeConf('10-mynet.conflist', {
    cniVersion: version,
    name: 'mynet',
    plugins: [{ type: 'fa', ipam: { type: 'host-local' } }, { type: 'fb', capabilities: { portMappings: true, bandwidth: true } }],
  });
  return { r1, r2 };
}

test('load status: missing dir, invalid files, ready', async (t) => {
  const { fake, mgr } = await setup(t);
  await fs.rm(fake.confDir, { recursive: true });
  let s = await mgr.reload();
  assert.equal(s.ready, false);
  assert.equal(s.message, `no network config found in ${fake.confDir}`);
  await fs.mkdir(fake.confDir);
  await fake.writeConf('01-bad.conflist', '{');
  s = await mgr.reload();
  assert.equal(s.ready, false);
  assert.match(s.message, /^no valid network config in .*01-bad\.conflist: not valid JSON/);
  assert.equal(s.errors.length, 1);
  await fake.addPlugin('fa');
  await fake.writeConf('10-ok.conf', { cniVersion: '1.0.0', name: 'ok', type: 'fa' });
  await fake.writeConf('20-missing.conf', { cniVersion: '1.0.0', name: 'm', type: 'nosuchplugin' });
  s = await mgr.reload();
  assert.equal(s.ready, true);
  assert.deepEqual(s.networks, ['ok', 'm']);
  assert.equal(s.loopback, false);
  assert.ok(s.errors.some((e) => /plugin binary "nosuchplugin" not found/.test(e)));
  assert.deepEqual(mgr.loadStatus(), s);
  await assert.rejects(mgr.setUp({ ...req('c0'), containerId: 'bad/id' }), /invalid container ID/);
});

test('ADD chain: injection, prevResult, runtimeConfig, cache, pod IP; DEL reverse with cached result', async (t) => {
  const { fake, mgr } = await setup(t);
  const { r1, r2 } = await twoPluginNet(fake);
  const res = await mgr.setUp(req('c1'));
  assert.equal(res.podIp, '10.9.0.5');
  assert.deepEqual(res.additionalIps, ['fd00::5']);
  assert.deepEqual(res.attachments.map((a) => [a.networkName, a.ifName]), [['mynet', 'eth0']]);
  assert.deepEqual(await fake.calls(), ['ADD fa eth0', 'ADD fb eth0']);

  const sa = await fake.stdin('fa', 'ADD', 'eth0');
  assert.equal(sa.name, 'mynet');
  assert.equal(sa.cniVersion, '1.0.0');
  assert.equal('prevResult' in sa, false);
  assert.equal('runtimeConfig' in sa, false);
  assert.deepEqual(sa.ipam, { type: 'host-local' });
  const sb = await fake.stdin('fb', 'ADD', 'eth0');
  assert.deepEqual(sb.prevResult, r1);
  assert.deepEqual(sb.runtimeConfig, { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] });
  const env = await fake.env('fa', 'ADD', 'eth0');
  assert.equal(env.CNI_NETNS, '/var/run/netns/c1');
  assert.equal(env.PATH, process.env.PATH, "plugins get the daemon's environment");
  assert.equal(env.CNI_ARGS, 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID=uid-1');

  const cacheFile = path.join(fake.cacheDir, 'results', 'mynet-c1-eth0');
  const cached = JSON.parse(await fs.readFile(cacheFile, 'utf8'));
  assert.equal(cached.kind, 'cniCacheV1');
  assert.deepEqual(cached.result, r2);
  assert.equal(Buffer.from(cached.config, 'base64').toString(), await fs.readFile(path.join(fake.confDir, '10-mynet.conflist'), 'utf8'));
  assert.deepEqual(cached.cniArgs[3], ['K8S_POD_INFRA_CONTAINER_ID', 'c1']);
  assert.deepEqual(cached.capabilityArgs['io.kubernetes.cri.pod-annotations'], { team: 'a' });
  assert.deepEqual(await mgr.cachedContainerIds(), ['c1']);

  // CHECK uses the cached result
  await mgr.check('c1', '/var/run/netns/c1');
  assert.deepEqual((await fake.stdin('fa', 'CHECK', 'eth0')).prevResult, r2);

  await mgr.tearDown('c1', '/var/run/netns/c1');
  assert.deepEqual((await fake.calls()).slice(-2), ['DEL fb eth0', 'DEL fa eth0']);
  assert.deepEqual((await fake.stdin('fa', 'DEL', 'eth0')).prevResult, r2);
  assert.deepEqual((await fake.stdin('fb', 'DEL', 'eth0')).runtimeConfig, { portMappings: [{ hostPort: 8080, containerPort: 80, protocol: 'tcp' }] });
  await assert.rejects(fs.stat(cacheFile), /ENOENT/);
});

test('DEL is driven by the cache after the conf dir was emptied; pre-0.4.0 lists get no prevResult on DEL', async (t) => {
  const { fake, mgr } = await setup(t);
  await twoPluginNet(fake, '0.3.1');
  await mgr.setUp(req('c2'));
  await fs.rm(path.join(fake.confDir, '10-mynet.conflist'));
  assert.equal((await mgr.reload()).ready, false);
  await mgr.tearDown('c2', '', { podName: 'ignored' });
  assert.deepEqual((await fake.calls()).slice(-2), ['DEL fb eth0', 'DEL fa eth0']);
  const del = await fake.stdin('fa', 'DEL', 'eth0');
  assert.equal(del.cniVersion, '0.3.1');
  assert.equal('prevResult' in del, false);
  const env = await fake.env('fa', 'DEL', 'eth0');
  assert.equal(env.CNI_NETNS, '');
  assert.match(env.CNI_ARGS!, /K8S_POD_NAME=web/, 'the cached args are used');
  assert.deepEqual(await fs.readdir(path.join(fake.cacheDir, 'results')), []);
  // nothing cached and nothing loaded: a no-op
  await mgr.tearDown('c2', '');
});

test('a failing plugin: actionable error, no cache, and tearDown still DELs the network', async (t) => {
  const { fake, mgr } = await setup(t);
  await twoPluginNet(fake);
  await fake.respond('fb', 'ADD', { stdout: { cniVersion: '1.0.0', code: 11, msg: 'iptables lock held', details: 'retry later' }, code: 1 });
  await assert.rejects(mgr.setUp(req('c3')), (e: unknown) => {
    assert.ok(e instanceof CniPluginError);
    assert.equal(e.message, 'CNI network "mynet" plugin "fb" ADD failed (code 11): iptables lock held: retry later');
    return true;
  });
  await assert.rejects(fs.stat(path.join(fake.cacheDir, 'results', 'mynet-c3-eth0')), /ENOENT/);
  // the conf dir changes before the caller gets to tear down: the failed attempt is still remembered
  await fs.rm(path.join(fake.confDir, '10-mynet.conflist'));
  await mgr.reload();
  await mgr.tearDown('c3', '/var/run/netns/c3');
  assert.deepEqual((await fake.calls()).slice(-2), ['DEL fb eth0', 'DEL fa eth0']);
  assert.equal('prevResult' in (await fake.stdin('fa', 'DEL', 'eth0')), false);
});

test('a failed DEL keeps the cache and is retried; "not found" with an empty netns counts as done', async (t) => {
  const { fake, mgr } = await setup(t);
  await twoPluginNet(fake);
  await mgr.setUp(req('c4'));
  await fake.respond('fa', 'DEL', { stderr: 'failed to release IP: disk full', code: 1 });
  await assert.rejects(mgr.tearDown('c4', '/var/run/netns/c4'), /CNI network "mynet" plugin "fa" DEL failed: failed to release IP: disk full/);
  await fs.stat(path.join(fake.cacheDir, 'results', 'mynet-c4-eth0'));
  await fake.respond('fa', 'DEL', { stdout: { code: 5, msg: 'netns /var/run/netns/c4: no such file or directory' }, code: 1 });
  await assert.rejects(mgr.tearDown('c4', '/var/run/netns/c4'), /code 5/);
  await mgr.tearDown('c4', '');
  await assert.rejects(fs.stat(path.join(fake.cacheDir, 'results', 'mynet-c4-eth0')), /ENOENT/);
});

test('a corrupt cache entry is deleted and DEL runs with the loaded config and no prevResult', async (t) => {
  const { fake, mgr } = await setup(t);
  await twoPluginNet(fake);
  await mgr.reload();
  await fs.mkdir(path.join(fake.cacheDir, 'results'), { recursive: true });
  await fs.writeFile(path.join(fake.cacheDir, 'results', 'mynet-c5-eth0'), '');
  await mgr.tearDown('c5', '/var/run/netns/c5', { podName: 'p', podNamespace: 'ns', podUid: 'u' });
  assert.deepEqual(await fake.calls(), ['DEL fb eth0', 'DEL fa eth0']);
  const del = await fake.stdin('fa', 'DEL', 'eth0');
  assert.equal('prevResult' in del, false);
  assert.match((await fake.env('fa', 'DEL', 'eth0')).CNI_ARGS!, /K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_INFRA_CONTAINER_ID=c5;K8S_POD_UID=u/);
  assert.deepEqual(await fs.readdir(path.join(fake.cacheDir, 'results')), []);
});

test('loopback and several networks: lo + eth0/eth1 concurrently, DEL of each, pod IP from eth0', async (t) => {
  const { fake, mgr } = await setup(t, { ipPreference: 'ipv6' });
  await fake.addPlugin('loopback');
  await fake.respond('loopback', 'ADD', { stdout: { cniVersion: '0.3.1', interfaces: [{ name: 'lo', sandbox: '/x' }], ips: [{ version: '4', address: '127.0.0.1/8', interface: 0 }] } });
  await fake.addPlugin('fa');
  await fake.addPlugin('fc');
  await fake.respond('fa', 'ADD', { stdout: fakeResult(['10.9.0.5/24', 'fd00::5/64']) });
  await fake.respond('fc', 'ADD', { stdout: fakeResult(['10.10.0.5/24'], '1.0.0', 'eth1') });
  await fake.writeConf('10-a.conf', { cniVersion: '1.0.0', name: 'neta', type: 'fa' });
  await fake.writeConf('20-b.conf', { cniVersion: '1.0.0', name: 'netb', type: 'fc' });
  const res = await mgr.setUp(req('c6'));
  assert.deepEqual(res.attachments.map((a) => `${a.networkName}/${a.ifName}`), ['cni-loopback/lo', 'neta/eth0', 'netb/eth1']);
  assert.equal(res.podIp, 'fd00::5');
  assert.deepEqual(res.additionalIps, ['10.9.0.5']);
  const lo = await fake.stdin('loopback', 'ADD', 'lo');
  assert.equal(lo.name, 'cni-loopback');
  assert.deepEqual((await fs.readdir(path.join(fake.cacheDir, 'results'))).sort(), ['cni-loopback-c6-lo', 'neta-c6-eth0', 'netb-c6-eth1']);
  await mgr.tearDown('c6', '/var/run/netns/c6');
  assert.deepEqual((await fake.calls()).slice(-3).sort(), ['DEL fa eth0', 'DEL fc eth1', 'DEL loopback lo']);
  assert.deepEqual(await fs.readdir(path.join(fake.cacheDir, 'results')), []);
});

test('tearDown detaches the networks concurrently; each chain still runs in reverse', async (t) => {
  const { fake, mgr } = await setup(t);
  await fake.addPlugin('loopback');
  await fake.respond('loopback', 'ADD', { stdout: { cniVersion: '0.3.1', interfaces: [{ name: 'lo', sandbox: '/x' }], ips: [{ version: '4', address: '127.0.0.1/8', interface: 0 }] } });
  await twoPluginNet(fake);
  await mgr.setUp(req('c6b'));
  await fake.respond('loopback', 'DEL', { sleepSeconds: 1 });
  await fake.respond('fa', 'DEL', { sleepSeconds: 1 });
  const start = Date.now();
  await mgr.tearDown('c6b', '/var/run/netns/c6b');
  const elapsed = Date.now() - start;
  assert.ok(elapsed < 1900, `lo's DEL should not wait for eth0's (took ${elapsed} ms)`);
  const dels = (await fake.calls()).filter((c) => c.startsWith('DEL'));
  assert.ok(dels.indexOf('DEL fb eth0') < dels.indexOf('DEL fa eth0'), `mynet's chain in reverse: ${dels.join(', ')}`);
  assert.deepEqual(await fs.readdir(path.join(fake.cacheDir, 'results')), []);
});

test('operations on one container are serialized; different containers run in parallel', async (t) => {
  const { fake, mgr } = await setup(t);
  await twoPluginNet(fake);
  await fake.respond('fa', 'ADD', { stdout: fakeResult(['10.9.0.5/24']), sleepSeconds: 1 });
  const start = Date.now();
  const a = mgr.setUp(req('s1'));
  const b = mgr.setUp(req('s2'));
  const d = mgr.tearDown('s1', '/var/run/netns/s1');
  await Promise.all([a, b, d]);
  const elapsed = Date.now() - start;
  assert.ok(elapsed < 1900, `two containers' ADDs should overlap (took ${elapsed} ms)`);
  const calls = (await fake.calls()).join('\n');
  // s1's DEL came after both of s1's ADD plugins
  const lines = await fake.calls();
  assert.equal(lines.filter((l) => l.startsWith('ADD')).length, 4, calls);
  const firstDel = lines.findIndex((l) => l.startsWith('DEL'));
  assert.ok(lines.slice(0, firstDel).filter((l) => l === 'ADD fb eth0').length >= 1, calls);
  assert.deepEqual(await mgr.cachedContainerIds(), ['s2']);
  await mgr.tearDown('s2', '');
});

test('several failing attachments are combined', async (t) => {
  const { fake, mgr } = await setup(t);
  await fake.addPlugin('fa');
  await fake.respond('fa', 'ADD', { stdout: { code: 7, msg: 'bad' }, code: 1 });
  await fake.writeConf('10-a.conf', { cniVersion: '1.0.0', name: 'neta', type: 'fa' });
  await fake.writeConf('20-b.conf', { cniVersion: '1.0.0', name: 'netb', type: 'fa' });
  await assert.rejects(mgr.setUp(req('m1')), (e: unknown) => e instanceof CniMultiError && e.errors.length === 2 && /"neta"/.test(e.message) && /"netb"/.test(e.message));
  await mgr.tearDown('m1', '');
  assert.deepEqual((await fake.calls()).filter((c) => c.startsWith('DEL')).sort(), ['DEL fa eth0', 'DEL fa eth1'], 'both networks detached (concurrently)');
});

test('loopbackPlugin false: lo is left to whoever made the netns; cached lo attachments are still detached', async (t) => {
  const { fake, mgr: withLo } = await setup(t);
  await fake.addPlugin('loopback');
  await fake.respond('loopback', 'ADD', { stdout: { cniVersion: '0.3.1', interfaces: [{ name: 'lo', sandbox: '/x' }], ips: [{ version: '4', address: '127.0.0.1/8', interface: 0 }] } });
  await twoPluginNet(fake);
  // A pod attached while the plugin was on (an older daemon) ...
  await withLo.setUp(req('c20'));
  const noLo = new CniManager({ confDir: fake.confDir, binDirs: [fake.binDir], maxNetworks: 0, cacheDir: fake.cacheDir, ipPreference: 'ipv4', logger: silentLogger(), loopbackPlugin: false });
  const s = await noLo.reload();
  assert.equal(s.loopback, false);
  // ... and a pod attached with it off.
  const res = await noLo.setUp(req('c21'));
  assert.deepEqual(res.attachments.map((a) => `${a.networkName}/${a.ifName}`), ['mynet/eth0']);
  assert.deepEqual((await fake.calls()).filter((c) => c.includes('loopback')), ['ADD loopback lo'], 'only the first pod ran the loopback plugin');
  await noLo.tearDown('c20', '/var/run/netns/c20');
  await noLo.tearDown('c21', '/var/run/netns/c21');
  assert.deepEqual((await fake.calls()).filter((c) => c.includes('loopback')), ['ADD loopback lo', 'DEL loopback lo'], "the first pod's cached lo attachment was detached");
  assert.deepEqual(await fs.readdir(path.join(fake.cacheDir, 'results')), []);
});

test('plugin binaries found at load are used as found; one removed since is looked up again, or reported missing', async (t) => {
  const { fake } = await setup(t);
  const otherBin = path.join(fake.confDir, '..', 'bin2');
  await fs.mkdir(otherBin, { recursive: true });
  const mgr = new CniManager({ confDir: fake.confDir, binDirs: [fake.binDir, otherBin], maxNetworks: 0, cacheDir: fake.cacheDir, ipPreference: 'ipv4', logger: silentLogger() });
  await twoPluginNet(fake);
  await mgr.reload();
  assert.deepEqual((await mgr.setUp(req('k1'))).attachments.map((a) => a.networkName), ['mynet']);
  // fa moves to the second bin dir after the load: found there on the next call.
  await fs.copyFile(path.join(fake.binDir, 'fa'), path.join(otherBin, 'fa'));
  await fs.chmod(path.join(otherBin, 'fa'), 0o755);
  await fs.rm(path.join(fake.binDir, 'fa'));
  assert.deepEqual((await mgr.setUp(req('k2'))).attachments.map((a) => a.networkName), ['mynet']);
  assert.equal((await fake.calls()).filter((c) => c === 'ADD fa eth0').length, 2);
  // Gone everywhere: the usual "not found", not a spawn error.
  await fs.rm(path.join(otherBin, 'fa'));
  await assert.rejects(mgr.setUp(req('k3')), (e: Error) => e instanceof CniPluginError && /plugin binary "fa" not found in/.test(e.message));
  await mgr.tearDown('k3', '/var/run/netns/k3').catch(() => {});
});
