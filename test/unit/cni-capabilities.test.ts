import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bandwidthFromAnnotations, parseQuantity, DEFAULT_BANDWIDTH_BURST } from '../../src/network/cni/capabilities.js';

test('Kubernetes quantities', () => {
  const cases: [string, bigint][] = [
    ['10M', 10_000_000n],
    ['1Gi', 1n << 30n],
    ['1.5k', 1500n],
    ['100', 100n],
    ['2e6', 2_000_000n],
    ['1E3', 1000n],
    ['1E', 10n ** 18n],
    ['.5Ki', 512n],
    ['1.1M', 1_100_000n],
    ['500m', 1n], // rounded up
    ['1001m', 2n],
    ['+3', 3n],
    ['-3', -3n],
  ];
  for (const [text, want] of cases) assert.equal(parseQuantity(text), want, text);
  for (const bad of ['', 'M', '10 M', '10MB', '1.2.3', '10mi', 'abc', '1e']) assert.throws(() => parseQuantity(bad), /invalid quantity/, bad);
});

test('bandwidth from pod annotations', () => {
  assert.equal(bandwidthFromAnnotations(undefined), undefined);
  assert.equal(bandwidthFromAnnotations({ other: 'x' }), undefined);
  assert.deepEqual(bandwidthFromAnnotations({ 'kubernetes.io/ingress-bandwidth': '10M', 'kubernetes.io/egress-bandwidth': '1Gi' }), {
    ingressRate: 10_000_000,
    ingressBurst: DEFAULT_BANDWIDTH_BURST,
    egressRate: 2 ** 30,
    egressBurst: DEFAULT_BANDWIDTH_BURST,
  });
  assert.equal(DEFAULT_BANDWIDTH_BURST, 4294967295);
  assert.deepEqual(bandwidthFromAnnotations({ 'kubernetes.io/egress-bandwidth': '1M' }), { ingressRate: 0, ingressBurst: 0, egressRate: 1_000_000, egressBurst: DEFAULT_BANDWIDTH_BURST });
  assert.throws(() => bandwidthFromAnnotations({ 'kubernetes.io/ingress-bandwidth': 'lots' }), /kubernetes\.io\/ingress-bandwidth: "lots" is not a valid quantity/);
  assert.throws(() => bandwidthFromAnnotations({ 'kubernetes.io/ingress-bandwidth': '10' }), /unreasonably small/);
  assert.throws(() => bandwidthFromAnnotations({ 'kubernetes.io/egress-bandwidth': '2P' }), /unreasonably large/);
});
