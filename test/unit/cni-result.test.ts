import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseResult, parseResultText, prevResultFor, resultToVersion, selectPodIps, stripPrefix, type CniResult } from '../../src/network/cni/result.js';

const legacy020 = {
  cniVersion: '0.2.0',
  ip4: { ip: '10.1.0.5/24', gateway: '10.1.0.1', routes: [{ dst: '0.0.0.0/0', gw: '10.1.0.1' }] },
  ip6: { ip: 'fd00::5/64', routes: [{ dst: '::/0' }] },
  dns: { nameservers: ['10.1.0.2'] },
};

const r040 = {
  cniVersion: '0.4.0',
  interfaces: [{ name: 'cni0', mac: 'aa:bb:cc:dd:ee:00' }, { name: 'eth0', mac: 'aa:bb:cc:dd:ee:01', sandbox: '/var/run/netns/p' }],
  ips: [
    { version: '6', address: 'fd00::7/64', gateway: 'fd00::1', interface: 1 },
    { version: '4', address: '10.2.0.7/16', gateway: '10.2.0.1', interface: 1 },
  ],
  routes: [{ dst: '0.0.0.0/0' }],
  dns: {},
};

test('0.2.0 results become the internal shape', () => {
  const r = parseResult(legacy020, '0.2.0');
  assert.equal(r.cniVersion, '1.1.0');
  assert.deepEqual(r.interfaces, []);
  assert.deepEqual(r.ips, [{ address: '10.1.0.5/24', gateway: '10.1.0.1' }, { address: 'fd00::5/64' }]);
  assert.deepEqual(r.routes, [{ dst: '0.0.0.0/0', gw: '10.1.0.1' }, { dst: '::/0' }]);
  assert.deepEqual(r.dns, { nameservers: ['10.1.0.2'] });
});

test('0.4.0 results drop ips[].version; 1.x keep 1.1 fields', () => {
  const r = parseResult(r040, '0.4.0');
  assert.deepEqual(r.ips[1], { address: '10.2.0.7/16', gateway: '10.2.0.1', interface: 1 });
  const r11 = parseResult({ cniVersion: '1.1.0', interfaces: [{ name: 'eth0', mtu: 1400, pciID: '0000:00:01.0' }], ips: [{ address: '10.0.0.2/8', interface: 0 }], routes: [{ dst: '10.0.0.0/8', mtu: 1400, table: 100 }] }, '1.1.0');
  assert.equal(r11.interfaces[0]!.mtu, 1400);
  assert.equal(r11.interfaces[0]!.pciID, '0000:00:01.0');
  assert.deepEqual(r11.routes[0], { dst: '10.0.0.0/8', mtu: 1400, table: 100 });
});

test('a result without cniVersion is read in the config version', () => {
  const noVersion = { ip4: { ip: '10.9.0.2/24' } };
  assert.deepEqual(parseResult(noVersion, '0.2.0').ips, [{ address: '10.9.0.2/24' }]);
  // the same object read as 1.0.0 has no ips (ip4 is not a 1.0.0 field)
  assert.deepEqual(parseResult(noVersion, '1.0.0').ips, []);
});

test('invalid results are rejected with a reason', () => {
  assert.throws(() => parseResult({ cniVersion: '1.0.0', ips: [{ address: '10.0.0.1/8', interface: 3 }] }, '1.0.0'), /interface 3 does not name/);
  assert.throws(() => parseResult({ cniVersion: '5.0.0' }, '1.0.0'), /unsupported cniVersion "5\.0\.0"/);
  assert.throws(() => parseResult([], '1.0.0'), /not a JSON object/);
  assert.throws(() => parseResultText('hello', '1.0.0'), /not valid JSON.*"hello"/);
});

test('conversion back to each version', () => {
  const r = parseResult(r040, '0.4.0');
  const v1 = resultToVersion(r, '1.0.0');
  assert.equal(v1.cniVersion, '1.0.0');
  assert.deepEqual((v1.ips as unknown[])[1], { address: '10.2.0.7/16', gateway: '10.2.0.1', interface: 1 });
  assert.equal(v1.dns, undefined, 'empty dns is left out');
  const v031 = resultToVersion(r, '0.3.1');
  assert.deepEqual((v031.ips as unknown[])[0], { version: '6', address: 'fd00::7/64', gateway: 'fd00::1', interface: 1 });
  assert.deepEqual((v031.ips as unknown[])[1], { version: '4', address: '10.2.0.7/16', gateway: '10.2.0.1', interface: 1 });
  const v020 = resultToVersion(r, '0.2.0');
  assert.deepEqual(v020, {
    cniVersion: '0.2.0',
    ip4: { ip: '10.2.0.7/16', gateway: '10.2.0.1', routes: [{ dst: '0.0.0.0/0' }] },
    ip6: { ip: 'fd00::7/64', gateway: 'fd00::1' },
  });
  // round trip 0.2.0 → internal → 0.2.0
  assert.deepEqual(resultToVersion(parseResult(legacy020, '0.2.0'), '0.2.0'), legacy020);
  // 0.4.0 → internal → 0.4.0 keeps everything but the empty dns
  const { dns: _dns, ...rest } = r040;
  assert.deepEqual(resultToVersion(r, '0.4.0'), rest);
});

test('prevResultFor passes a same-version result through and converts others', () => {
  const withExtra = { ...r040, vendorField: 1 };
  assert.deepEqual(prevResultFor(withExtra, '0.4.0', '0.4.0'), withExtra);
  const converted = prevResultFor(withExtra, '0.4.0', '1.0.0');
  assert.equal(converted.cniVersion, '1.0.0');
  assert.equal(converted.vendorField, undefined);
  assert.equal((converted.ips as { version?: string }[])[0]!.version, undefined);
});

test('pod IP selection by preference, eth0 only, prefix stripped', () => {
  const r: CniResult = {
    cniVersion: '1.1.0',
    interfaces: [{ name: 'veth1' }, { name: 'eth0', sandbox: '/x' }, { name: 'net1', sandbox: '/x' }],
    ips: [
      { address: 'fd00::7/64', interface: 1 },
      { address: '10.2.0.7/16', interface: 1 },
      { address: '10.3.0.9/16', interface: 2 },
      { address: '10.4.0.1/24' }, // no interface: counts as eth0
      { address: '10.5.0.1/24', interface: 0 }, // host side
    ],
    routes: [],
    dns: {},
  };
  assert.deepEqual(selectPodIps(r, 'eth0', 'ipv4'), { podIp: '10.2.0.7', additionalIps: ['fd00::7', '10.4.0.1'] });
  assert.deepEqual(selectPodIps(r, 'eth0', 'ipv6'), { podIp: 'fd00::7', additionalIps: ['10.2.0.7', '10.4.0.1'] });
  assert.deepEqual(selectPodIps(r, 'eth0', 'cni'), { podIp: 'fd00::7', additionalIps: ['10.2.0.7', '10.4.0.1'] });
  // no address of the preferred family: the first one
  const only6: CniResult = { ...r, ips: [{ address: 'fd00::9/64', interface: 1 }] };
  assert.deepEqual(selectPodIps(only6, 'eth0', 'ipv4'), { podIp: 'fd00::9', additionalIps: [] });
  assert.deepEqual(selectPodIps({ ...r, ips: [] }, 'eth0', 'ipv4'), { podIp: '', additionalIps: [] });
  assert.equal(stripPrefix('10.88.0.5/16'), '10.88.0.5');
  assert.equal(stripPrefix('10.88.0.5'), '10.88.0.5');
});
