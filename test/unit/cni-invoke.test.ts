import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import {
  buildEnv,
  buildPluginConfig,
  execPlugin,
  findPlugin,
  formatCniArgs,
  podCniArgs,
  pluginFailure,
  runtimeConfigFor,
  validateContainerId,
  validateIfName,
  type RuntimeConf,
} from '../../src/network/cni/invoke.js';
import { CniPluginError } from '../../src/network/cni/errors.js';
import { buildCapabilityArgs } from '../../src/network/cni/capabilities.js';
import { makeFakeCni } from '../helpers/cni-fake.js';

const rt: RuntimeConf = {
  containerId: 'abc123',
  netns: '/var/run/netns/x',
  ifName: 'eth0',
  args: podCniArgs({ containerId: 'abc123', podName: 'web', podNamespace: 'default', podUid: 'u-1' }),
  capabilityArgs: {},
};

test('container ID and interface name validation', () => {
  validateContainerId('a');
  validateContainerId('0abc_DEF.1-2');
  for (const bad of ['', '-a', '.a', 'a/b', 'a b', 'a;b']) assert.throws(() => validateContainerId(bad), /invalid container ID/);
  validateIfName('eth0');
  validateIfName('a'.repeat(15));
  for (const bad of ['', '.', '..', 'a'.repeat(16), 'a/b', 'a:b', 'a b', 'a\tb']) assert.throws(() => validateIfName(bad));
});

test('CNI_ARGS and environment', () => {
  assert.equal(formatCniArgs(rt.args), 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1');
  assert.throws(() => formatCniArgs([['K', 'a;b']]), /invalid CNI_ARGS/);
  const env = buildEnv('ADD', rt, ['/opt/cni/bin', '/usr/lib/cni'], { PATH: '/usr/bin', CNI_COMMAND: 'stale', KEEP: '1' });
  assert.equal(env.PATH, '/usr/bin');
  assert.equal(env.KEEP, '1');
  assert.equal(env.CNI_COMMAND, 'ADD');
  assert.equal(env.CNI_CONTAINERID, 'abc123');
  assert.equal(env.CNI_NETNS, '/var/run/netns/x');
  assert.equal(env.CNI_IFNAME, 'eth0');
  assert.equal(env.CNI_PATH, '/opt/cni/bin:/usr/lib/cni');
  const v = buildEnv('VERSION', undefined, ['/b'], { CNI_IFNAME: 'x' });
  assert.equal(v.CNI_IFNAME, undefined);
});

test('runtimeConfig is the intersection of capabilities and capability args', () => {
  const caps = buildCapabilityArgs({
    portMappings: [
      { hostPort: 8080, containerPort: 80, protocol: 'TCP', hostIP: '' },
      { hostPort: 0, containerPort: 81, protocol: 'TCP' },
      { hostPort: 5353, containerPort: 53, protocol: 'UDP', hostIP: '127.0.0.1' },
    ],
    bandwidth: { ingressRate: 1000, ingressBurst: 5, egressRate: 0, egressBurst: 0 },
    dns: { servers: ['10.96.0.10'], searches: ['svc.cluster.local'], options: ['ndots:5'] },
    ipRanges: [[{ subnet: '10.5.0.0/16' }]],
    cgroupPath: '/kubepods/pod1',
    podAnnotations: { a: 'b' },
  });
  assert.deepEqual(caps.portMappings, [
    { hostPort: 8080, containerPort: 80, protocol: 'tcp' },
    { hostPort: 5353, containerPort: 53, protocol: 'udp', hostIP: '127.0.0.1' },
  ]);
  const plugin = { type: 'portmap', capabilities: { portMappings: true, bandwidth: false, dns: true, aliases: true }, snat: true };
  assert.deepEqual(runtimeConfigFor(plugin, caps), { portMappings: caps.portMappings, dns: caps.dns });
  assert.deepEqual(runtimeConfigFor({ type: 'x' }, caps), {});

  const stdin = buildPluginConfig({ name: 'mynet', cniVersion: '1.0.0' }, { ...plugin, name: 'other', cniVersion: '0.3.1', prevResult: { stale: true } }, caps, undefined);
  assert.equal(stdin.name, 'mynet');
  assert.equal(stdin.cniVersion, '1.0.0');
  assert.equal(stdin.snat, true);
  assert.equal('prevResult' in stdin, false);
  assert.deepEqual(stdin.runtimeConfig, { portMappings: caps.portMappings, dns: caps.dns });
  const prev = { cniVersion: '1.0.0', ips: [] };
  const stdin2 = buildPluginConfig({ name: 'mynet', cniVersion: '1.0.0' }, { type: 'bandwidth', capabilities: { bandwidth: true } }, caps, prev);
  assert.deepEqual(stdin2.prevResult, prev);
  assert.deepEqual(stdin2.runtimeConfig, { bandwidth: { ingressRate: 1000, ingressBurst: 5, egressRate: 0, egressBurst: 0 } });
  // no matching capability args: no runtimeConfig at all
  const stdin3 = buildPluginConfig({ name: 'n', cniVersion: '1.0.0' }, { type: 'x', capabilities: { mac: true } }, caps, undefined);
  assert.equal('runtimeConfig' in stdin3, false);
});

test('plugin failure parsing: JSON error, empty stdout, non-JSON stdout', () => {
  const json = pluginFailure('mynet', 'bridge', 'ADD', { code: 1, signal: null, stdout: '{"cniVersion":"1.0.0","code":11,"msg":"try later","details":"lock busy"}', stderr: 'x' });
  assert.ok(json instanceof CniPluginError);
  assert.equal(json.code, 11);
  assert.equal(json.msg, 'try later');
  assert.equal(json.details, 'lock busy');
  assert.equal(json.network, 'mynet');
  assert.equal(json.pluginType, 'bridge');
  assert.equal(json.verb, 'ADD');
  assert.equal(json.message, 'CNI network "mynet" plugin "bridge" ADD failed (code 11): try later: lock busy');
  const stderrOnly = pluginFailure('n', 'p', 'DEL', { code: 2, signal: null, stdout: '', stderr: 'panic: boom\n' });
  assert.equal(stderrOnly.code, undefined);
  assert.equal(stderrOnly.message, 'CNI network "n" plugin "p" DEL failed: panic: boom');
  const nothing = pluginFailure('n', 'p', 'DEL', { code: 2, signal: null, stdout: '', stderr: '' });
  assert.match(nothing.message, /exit status 2\) with no error message/);
  const raw = pluginFailure('n', 'p', 'CHECK', { code: 1, signal: null, stdout: 'segfault here', stderr: '' });
  assert.match(raw.message, /CHECK failed: plugin failed \(exit status 1\) and its output is not a CNI error: "segfault here"/);
});

test('plugin lookup: bare names only, first regular executable across dirs', async (t) => {
  const fake = await makeFakeCni();
  t.after(() => fake.cleanup());
  const second = path.join(fake.root, 'bin2');
  await fs.mkdir(second);
  await fake.addPlugin('p');
  await fs.writeFile(path.join(second, 'p'), '#!/bin/sh\n', { mode: 0o755 });
  await fs.writeFile(path.join(second, 'q'), '#!/bin/sh\n', { mode: 0o755 });
  await fs.writeFile(path.join(fake.binDir, 'q'), 'not executable', { mode: 0o644 });
  await fs.mkdir(path.join(fake.binDir, 'd'));
  assert.equal(await findPlugin('p', [fake.binDir, second]), path.join(fake.binDir, 'p'));
  assert.equal(await findPlugin('q', [fake.binDir, second]), path.join(second, 'q'));
  assert.equal(await findPlugin('d', [fake.binDir, second]), undefined);
  assert.equal(await findPlugin('nope', [fake.binDir]), undefined);
  await assert.rejects(findPlugin('../bin/p', [fake.binDir]), /must be a bare file name/);
  await assert.rejects(findPlugin('/usr/lib/cni/bridge', [fake.binDir]), /must be a bare file name/);
  await assert.rejects(execPlugin('n', 'nope', 'ADD', {}, rt, { binDirs: [fake.binDir] }), (e: unknown) => e instanceof CniPluginError && /plugin binary "nope" not found in/.test(e.message) && !e.ran);
});

test('execPlugin passes env and stdin and surfaces a plugin error', async (t) => {
  const fake = await makeFakeCni();
  t.after(() => fake.cleanup());
  await fake.addPlugin('fk');
  await fake.respond('fk', 'ADD', { stdout: { cniVersion: '1.0.0' } });
  const out = await execPlugin('n', 'fk', 'ADD', { hello: 'world' }, rt, { binDirs: [fake.binDir, '/nonexistent'] });
  assert.deepEqual(JSON.parse(out), { cniVersion: '1.0.0' });
  assert.deepEqual(await fake.stdin('fk', 'ADD', 'eth0'), { hello: 'world' });
  const env = await fake.env('fk', 'ADD', 'eth0');
  assert.equal(env.CNI_PATH, `${fake.binDir}:/nonexistent`);
  assert.equal(env.CNI_ARGS, 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=abc123;K8S_POD_UID=u-1');
  assert.equal(env.CNI_CONTAINERID, 'abc123');

  await fake.respond('fk', 'DEL', { stdout: { code: 7, msg: 'bad config', details: 'no bridge' }, code: 1 });
  await assert.rejects(execPlugin('n', 'fk', 'DEL', {}, rt, { binDirs: [fake.binDir] }), (e: unknown) => {
    assert.ok(e instanceof CniPluginError);
    assert.equal(e.code, 7);
    assert.equal(e.ran, true);
    assert.equal(e.message, 'CNI network "n" plugin "fk" DEL failed (code 7): bad config: no bridge');
    return true;
  });
});

test('execPlugin kills a plugin that exceeds the timeout', async (t) => {
  const fake = await makeFakeCni();
  t.after(() => fake.cleanup());
  await fake.addPlugin('slow');
  await fake.respond('slow', 'ADD', { sleepSeconds: 5 });
  const start = Date.now();
  await assert.rejects(execPlugin('n', 'slow', 'ADD', {}, rt, { binDirs: [fake.binDir], timeoutMs: 300 }), /did not finish within 300 ms/);
  assert.ok(Date.now() - start < 4000);
});

test('"text file busy" is retried until the binary is released', async (t) => {
  const fake = await makeFakeCni();
  t.after(() => fake.cleanup());
  await fake.addPlugin('busy');
  await fake.respond('busy', 'VERSION', { stdout: { cniVersion: '1.0.0', supportedVersions: ['1.0.0'] } });
  // an open write handle on the binary makes exec fail with ETXTBSY, like a plugin being upgraded
  const fh = await fs.open(path.join(fake.binDir, 'busy'), 'r+');
  let closed = false;
  const release = setTimeout(() => { closed = true; void fh.close(); }, 350);
  t.after(async () => { clearTimeout(release); if (!closed) await fh.close(); });
  const out = await execPlugin('n', 'busy', 'VERSION', { cniVersion: '1.0.0' }, undefined, { binDirs: [fake.binDir], busyRetryDelayMs: 100 });
  assert.equal(JSON.parse(out).cniVersion, '1.0.0');
  assert.ok(closed, 'the first attempts failed while the file was open for writing');
});
