import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfDir, parseConfList, parseSingleConf } from '../../src/network/cni/conf.js';

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'corral-cni-conf-'));
  t.after(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

const list = (name: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ cniVersion: '1.0.0', name, plugins: [{ type: 'bridge' }, { type: 'portmap', capabilities: { portMappings: true } }], ...extra });

test('missing conf dir is no networks and no error', async () => {
  const r = await loadConfDir('/nonexistent/corral-cni-test', 0);
  assert.deepEqual(r, { networks: [], errors: [] });
});

test('files are loaded in lexicographic order, subdirs and other extensions skipped, .conf becomes a one-plugin list', async (t) => {
  const dir = await tempDir(t);
  await fs.writeFile(path.join(dir, '20-b.conflist'), list('b'));
  await fs.writeFile(path.join(dir, '10-a.conf'), JSON.stringify({ cniVersion: '0.4.0', name: 'a', type: 'bridge', bridge: 'cni0' }));
  await fs.writeFile(path.join(dir, '30-c.json'), JSON.stringify({ cniVersion: '0.3.1', name: 'c', type: 'ptp' }));
  await fs.writeFile(path.join(dir, '05-ignored.txt'), list('txt'));
  await fs.mkdir(path.join(dir, '00-sub.conflist'));
  const r = await loadConfDir(dir, 0);
  assert.deepEqual(r.errors, []);
  assert.deepEqual(r.networks.map((n) => n.name), ['a', 'b', 'c']);
  const a = r.networks[0]!;
  assert.equal(a.cniVersion, '0.4.0');
  assert.equal(a.plugins.length, 1);
  assert.equal(a.plugins[0]!.type, 'bridge');
  assert.equal(a.plugins[0]!.bridge, 'cni0');
  // the raw bytes of a converted .conf are a list wrapping the plugin
  const rawA = JSON.parse(a.bytes.toString());
  assert.equal(rawA.name, 'a');
  assert.equal(rawA.plugins[0].bridge, 'cni0');
  // the raw bytes of a .conflist are the file's bytes
  assert.equal(r.networks[1]!.bytes.toString(), list('b'));
  assert.equal(r.networks[1]!.plugins.length, 2);
});

test('invalid files are skipped with the file name and reason; maxNetworks counts valid ones only', async (t) => {
  const dir = await tempDir(t);
  await fs.writeFile(path.join(dir, '01-broken.conflist'), '{not json');
  await fs.writeFile(path.join(dir, '02-notype.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'x' }));
  await fs.writeFile(path.join(dir, '03-noplugins.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'y', plugins: [] }));
  await fs.writeFile(path.join(dir, '04-badversion.conflist'), list('z', { cniVersion: '9.9.9' }));
  await fs.writeFile(path.join(dir, '10-good.conflist'), list('good'));
  await fs.writeFile(path.join(dir, '11-dup.conflist'), list('good'));
  await fs.writeFile(path.join(dir, '12-second.conflist'), list('second'));
  await fs.writeFile(path.join(dir, '13-third.conflist'), list('third'));

  const all = await loadConfDir(dir, 0);
  assert.deepEqual(all.networks.map((n) => n.name), ['good', 'second', 'third']);
  assert.equal(all.errors.length, 5);
  assert.match(all.errors[0]!, /01-broken\.conflist: not valid JSON/);
  assert.match(all.errors[1]!, /02-notype\.conf: .*no "type"/);
  assert.match(all.errors[2]!, /03-noplugins\.conflist: "plugins" is empty/);
  assert.match(all.errors[3]!, /04-badversion\.conflist: unsupported cniVersion "9\.9\.9"/);
  assert.match(all.errors[4]!, /11-dup\.conflist: network "good" is already defined/);

  const one = await loadConfDir(dir, 1);
  assert.deepEqual(one.networks.map((n) => n.name), ['good']);
  const two = await loadConfDir(dir, 2);
  assert.deepEqual(two.networks.map((n) => n.name), ['good', 'second']);
});

test('cniVersions picks the highest supported version', () => {
  const l = parseConfList(JSON.stringify({ cniVersion: '0.4.0', cniVersions: ['0.3.1', '1.1.0', '1.0.0', '7.0.0'], name: 'n', plugins: [{ type: 'x' }] }));
  assert.equal(l.cniVersion, '1.1.0');
  const fallback = parseConfList(JSON.stringify({ cniVersion: '0.4.0', cniVersions: ['7.0.0'], name: 'n', plugins: [{ type: 'x' }] }));
  assert.equal(fallback.cniVersion, '0.4.0');
  assert.throws(() => parseConfList(JSON.stringify({ cniVersions: ['7.0.0'], name: 'n', plugins: [{ type: 'x' }] })), /none of cniVersions/);
});

test('disableCheck/disableGC accept booleans and "true"/"false" strings', () => {
  const l = parseConfList(JSON.stringify({ cniVersion: '1.0.0', name: 'n', disableCheck: 'true', disableGC: true, plugins: [{ type: 'x' }] }));
  assert.equal(l.disableCheck, true);
  assert.equal(l.disableGC, true);
  assert.throws(() => parseConfList(JSON.stringify({ cniVersion: '1.0.0', name: 'n', disableCheck: 3, plugins: [{ type: 'x' }] })), /disableCheck/);
});

test('a list needs a name and plugins with a type', () => {
  assert.throws(() => parseConfList(JSON.stringify({ cniVersion: '1.0.0', plugins: [{ type: 'x' }] })), /no network "name"/);
  assert.throws(() => parseConfList(JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins: [{}] })), /plugins\[0\] has no "type"/);
  assert.throws(() => parseSingleConf(JSON.stringify({ cniVersion: '1.0.0', type: 'x' })), /no network "name"/);
});
