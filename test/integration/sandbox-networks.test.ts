/** Several networks at once, and a runtime handler with a CNI conf dir of its own. */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { TestDaemon, hostTraces, podConfig } from '../helpers/daemon.js';
import { execFile } from '../../src/util/exec.js';

const d = new TestDaemon({
  cniToml: 'max_networks = 2',
  extraToml: (t) => `[runtimes.runc]\npath = "runc"\n[runtimes.isolated]\npath = "runc"\ncni_conf_dir = "${t.dir}/isolated.d"\n`,
});
const second = (t: TestDaemon) => ({
  cniVersion: '0.4.0',
  name: `${t.networkName}-b`,
  plugins: [{ type: 'bridge', bridge: `${t.bridge}b`, ipam: { type: 'host-local', ranges: [[{ subnet: t.subnet.replace(/^10\.(\d+)\./, (_, n) => `10.${Number(n) + 1}.`) }]] } }],
});
const isolated = (t: TestDaemon) => ({
  cniVersion: '1.0.0',
  name: `${t.networkName}-i`,
  plugins: [{ type: 'bridge', bridge: `${t.bridge}i`, ipam: { type: 'host-local', ranges: [[{ subnet: '10.251.7.0/24' }]] } }],
});

before(async () => {
  await fs.mkdir(d.confDir, { recursive: true });
  await fs.writeFile(path.join(d.confDir, '20-second.conflist'), JSON.stringify(second(d)));
  await fs.mkdir(path.join(d.dir, 'isolated.d'), { recursive: true });
  await fs.writeFile(path.join(d.dir, 'isolated.d', '10-isolated.conflist'), JSON.stringify(isolated(d)));
  await d.start();
});
after(async () => {
  try {
    await d.cleanup();
  } finally {
    for (const suffix of ['b', 'i']) await execFile('ip', ['link', 'del', `${d.bridge}${suffix}`]);
    for (const n of [`${d.networkName}-b`, `${d.networkName}-i`]) await fs.rm(`/var/lib/cni/networks/${n}`, { recursive: true, force: true });
  }
});

async function addrs(netnsPath: string, ifname: string): Promise<string> {
  return (await execFile('nsenter', [`--net=${netnsPath}`, 'ip', '-o', '-4', 'addr', 'show', ifname])).stdout;
}

test('two networks: eth0 from the first file (the pod IP), eth1 from the second; both released by Stop', async () => {
  const { podSandboxId: id } = await d.rpc('RunPodSandbox', { config: podConfig() });
  try {
    const st = await d.rpc('PodSandboxStatus', { podSandboxId: id, verbose: true });
    const info = JSON.parse(st.info.info);
    const byIf = Object.fromEntries(info.cniResult.map((a: any) => [a.ifName, a.networkName]));
    // No loopback plugin: corral-nshelper brought lo up when it made the netns.
    assert.deepEqual(byIf, { eth0: d.networkName, eth1: `${d.networkName}-b` });
    assert.match((await execFile('nsenter', [`--net=${info.netnsPath}`, 'ip', '-o', 'link', 'show', 'lo'])).stdout, /[<,]UP[,>]/);
    const pre0 = d.subnet.split('.').slice(0, 3).join('.');
    assert.ok(st.status.network.ip.startsWith(pre0 + '.'), 'pod IP from the default network');
    assert.match(await addrs(info.netnsPath, 'eth0'), new RegExp(`inet ${pre0.replace(/\./g, '\\.')}\\.`));
    assert.match(await addrs(info.netnsPath, 'eth1'), /inet 10\.\d+\.\d+\.\d+\//);
    const cacheFiles = await fs.readdir(path.join(d.cacheDir, 'results'));
    assert.deepEqual(cacheFiles.filter((f) => f.includes(id)).sort(), [`${d.networkName}-${id}-eth0`, `${d.networkName}-b-${id}-eth1`].sort());
    await d.rpc('StopPodSandbox', { podSandboxId: id });
    assert.deepEqual((await fs.readdir(path.join(d.cacheDir, 'results'))).filter((f) => f.includes(id)), []);
    assert.deepEqual(await fs.readdir(`/var/lib/cni/networks/${d.networkName}-b`).then((f) => f.filter((n) => /^[0-9.]+$/.test(n))), []);
  } finally {
    await d.rpc('RemovePodSandbox', { podSandboxId: id });
  }
  assert.deepEqual((await hostTraces(d)).netns, []);
});

test('a handler with its own CNI conf dir wires its pods from there', async () => {
  const { podSandboxId: id } = await d.rpc('RunPodSandbox', { config: podConfig(), runtimeHandler: 'isolated' });
  try {
    const st = await d.rpc('PodSandboxStatus', { podSandboxId: id, verbose: true });
    assert.ok(st.status.network.ip.startsWith('10.251.7.'), st.status.network.ip);
    assert.deepEqual(JSON.parse(st.info.info).cniResult.map((a: any) => a.ifName).sort(), ['eth0']);
  } finally {
    await d.rpc('RemovePodSandbox', { podSandboxId: id });
  }
  assert.deepEqual(await fs.readdir(`/var/lib/cni/networks/${d.networkName}-i`).then((f) => f.filter((n) => /^[0-9.]+$/.test(n))), []);
});
