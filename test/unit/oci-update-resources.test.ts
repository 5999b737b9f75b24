import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ResourceValueError, ociResourcesFromCri } from '../../src/oci/update-resources.js';

/** A request as the server decodes it: every scalar present, zero when unset. */
const decoded = {
  cpuPeriod: 0,
  cpuQuota: 0,
  cpuShares: 0,
  memoryLimitInBytes: 0,
  oomScoreAdj: 0,
  cpusetCpus: '',
  cpusetMems: '',
  hugepageLimits: [],
  unified: {},
  memorySwapLimitInBytes: 0,
};

test('update resources: every CRI field lands in its OCI LinuxResources place', () => {
  const oci = ociResourcesFromCri({
    ...decoded,
    cpuPeriod: 100000,
    cpuQuota: 50000,
    cpuShares: 512,
    cpusetCpus: '0-1,3',
    cpusetMems: '0',
    memoryLimitInBytes: 64 * 1024 * 1024,
    memorySwapLimitInBytes: 128 * 1024 * 1024,
    hugepageLimits: [{ pageSize: '2MB', limit: 4 * 2 * 1024 * 1024 }],
    unified: { 'memory.high': '50000000', 'pids.max': '100' },
  });
  assert.deepEqual(oci, {
    cpu: { shares: 512, quota: 50000, period: 100000, cpus: '0-1,3', mems: '0' },
    memory: { limit: 64 * 1024 * 1024, swap: 128 * 1024 * 1024 },
    hugepageLimits: [{ pageSize: '2MB', limit: 8 * 1024 * 1024 }],
    unified: { 'memory.high': '50000000', 'pids.max': '100' },
  });
});

test('update resources: unset (zero) fields are left out, so the runtime keeps those limits', () => {
  assert.deepEqual(ociResourcesFromCri(decoded), {});
  assert.deepEqual(ociResourcesFromCri({}), {});
  assert.deepEqual(ociResourcesFromCri({ ...decoded, memoryLimitInBytes: 1 << 30 }), { memory: { limit: 1 << 30 } });
  assert.deepEqual(ociResourcesFromCri({ ...decoded, cpuQuota: -1 }), { cpu: { quota: -1 } }, '-1 lifts the quota');
  assert.deepEqual(ociResourcesFromCri({ ...decoded, memorySwapLimitInBytes: -1 }), { memory: { swap: -1 } }, '-1 lifts the swap limit');
});

test('update resources: int64 fields decoded as strings are numbers in the OCI file', () => {
  const oci = ociResourcesFromCri({ memoryLimitInBytes: '67108864' as unknown as number, cpuShares: '1024' as unknown as number });
  assert.deepEqual(oci, { cpu: { shares: 1024 }, memory: { limit: 67108864 } });
});

test('update resources: values no cgroup takes are refused, each naming its field', () => {
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ memoryLimitInBytes: -5 }, /memoryLimitInBytes must not be negative/],
    [{ memoryLimitInBytes: 100 }, /below the smallest limit/],
    [{ cpuShares: -1 }, /cpuShares must not be negative/],
    [{ cpuShares: 1 }, /cpuShares must be between 2 and 262144/],
    [{ cpuShares: 300000 }, /cpuShares must be between/],
    [{ cpuPeriod: 10 }, /cpuPeriod must be between/],
    [{ cpuQuota: -2 }, /cpuQuota must be -1/],
    [{ cpuQuota: 10 }, /cpuQuota must be at least 1000/],
    [{ cpusetCpus: 'all' }, /cpusetCpus "all" is not a CPU list/],
    [{ cpusetMems: '0-' }, /cpusetMems "0-" is not a CPU list/],
    [{ memorySwapLimitInBytes: -7 }, /memorySwapLimitInBytes must be -1/],
    [{ memoryLimitInBytes: 1 << 30, memorySwapLimitInBytes: 1 << 20 }, /must not be below memoryLimitInBytes/],
    [{ hugepageLimits: [{ pageSize: '2M', limit: 0 }] }, /page_size "2M"/],
    [{ hugepageLimits: [{ pageSize: '2MB', limit: -1 }] }, /hugepage limit -1 for 2MB/],
    [{ unified: { '../memory.max': '1' } }, /unified key "..\/memory.max"/],
    [{ unified: { 'memory.max': '1\n2' } }, /one line/],
    [{ memoryLimitInBytes: 1.5 }, /not an integer/],
  ];
  for (const [fields, message] of bad) {
    assert.throws(() => ociResourcesFromCri({ ...decoded, ...fields }), (e: unknown) => e instanceof ResourceValueError && message.test(e.message), JSON.stringify(fields));
  }
});
