import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CgroupDirCache, ContainerStatsCollector, chooseLayout, LayerUsageCache, nanoCores, networkUsage, parseFlatKeyed, parseNetDev, sampleFromV1, sampleFromV2, sumSamples, type CgroupSample } from '../../src/container/stats.js';

// Excerpts of real files: cgroup v2 (unified) and v1 memory controller.
const V2_CPU_STAT = 'usage_usec 2500123\nuser_usec 2000000\nsystem_usec 500123\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n';
const V2_MEMORY_STAT = ['anon 4612096', 'file 10006528', 'kernel_stack 16384', 'active_file 745472', 'inactive_file 90112', 'pgfault 79134', 'pgmajfault 3', ''].join('\n');
const V1_MEMORY_STAT = [
  'cache 10006528', 'rss 4612096', 'pgfault 79134', 'pgmajfault 0', 'inactive_file 90112',
  'hierarchical_memory_limit 9223372036854771712',
  'total_cache 493686784', 'total_rss 9216000', 'total_pgfault 343406232', 'total_pgmajfault 2972', 'total_inactive_file 142073856', '',
].join('\n');
const T = 1_000_000_000_000n;

test('parses flat keyed files, skipping lines that are not "key number"', () => {
  const m = parseFlatKeyed('a 1\nb  22\n\nc max\n  d 3  \n');
  assert.deepEqual([...m], [['a', 1n], ['b', 22n], ['d', 3n]]);
});

test('v2: cpu from usage_usec in ns, working set = memory.current - inactive_file, anon as RSS, limit from memory.max', () => {
  const s = sampleFromV2({ cpuStat: V2_CPU_STAT, memoryCurrent: '20000000\n', memoryStat: V2_MEMORY_STAT, memoryMax: '134217728\n' }, T);
  assert.equal(s.cpuUsageNs, 2_500_123_000n);
  assert.equal(s.memoryUsageBytes, 20_000_000n);
  assert.equal(s.workingSetBytes, 20_000_000n - 90_112n);
  assert.equal(s.rssBytes, 4_612_096n);
  assert.equal(s.pageFaults, 79_134n);
  assert.equal(s.majorPageFaults, 3n);
  assert.equal(s.memoryLimitBytes, 134_217_728n);
  assert.equal(s.timestampNs, T);
});

test('v2: "max" is no limit; a cgroup without the memory controller has cpu only', () => {
  const s = sampleFromV2({ cpuStat: V2_CPU_STAT, memoryCurrent: null, memoryStat: null, memoryMax: 'max\n' }, T);
  assert.equal(s.memoryLimitBytes, null);
  assert.equal(s.memoryUsageBytes, null);
  assert.equal(s.workingSetBytes, null);
  assert.equal(s.cpuUsageNs, 2_500_123_000n);
});

test('v1: hierarchical totals, working set = usage - total_inactive_file, the near-2^63 "unlimited" is no limit', () => {
  const s = sampleFromV1({ cpuacctUsage: '987654321\n', memoryUsage: '500000000\n', memoryStat: V1_MEMORY_STAT, memoryLimit: '9223372036854771712\n' }, T);
  assert.equal(s.cpuUsageNs, 987_654_321n);
  assert.equal(s.workingSetBytes, 500_000_000n - 142_073_856n);
  assert.equal(s.rssBytes, 9_216_000n);
  assert.equal(s.pageFaults, 343_406_232n);
  assert.equal(s.majorPageFaults, 2972n);
  assert.equal(s.memoryLimitBytes, null);
  const limited = sampleFromV1({ cpuacctUsage: '1', memoryUsage: '100', memoryStat: 'total_inactive_file 500\n', memoryLimit: '268435456\n' }, T);
  assert.equal(limited.memoryLimitBytes, 268_435_456n);
  assert.equal(limited.workingSetBytes, 0n, 'inactive file above usage clamps to 0, never wraps');
});

test('nano cores: CPU ns used per second of wall time between two samples; none without an earlier one or after a reset', () => {
  const a: CgroupSample = sampleFromV1({ cpuacctUsage: '1000000000', memoryUsage: null, memoryStat: null, memoryLimit: null }, T);
  const b: CgroupSample = sampleFromV1({ cpuacctUsage: '1500000000', memoryUsage: null, memoryStat: null, memoryLimit: null }, T + 1_000_000_000n);
  assert.equal(nanoCores(undefined, a), null);
  assert.equal(nanoCores(a, b), 500_000_000n); // half a core
  assert.equal(nanoCores(b, a), null);
  assert.equal(nanoCores(a, { ...a }), null, 'no time passed');
});

test('layout: v1 cpuacct/memory where mounted (hybrid host), else the unified tree', () => {
  const hybrid = chooseLayout([
    { version: 1, controllers: ['cpu', 'cpuacct'], dir: '/sys/fs/cgroup/cpu,cpuacct/corral/x' },
    { version: 1, controllers: ['memory'], dir: '/sys/fs/cgroup/memory/corral/x' },
    { version: 2, controllers: [], dir: '/sys/fs/cgroup/unified/corral/x' },
  ]);
  assert.deepEqual(hybrid, { version: 1, cpuacct: '/sys/fs/cgroup/cpu,cpuacct/corral/x', memory: '/sys/fs/cgroup/memory/corral/x' });
  assert.deepEqual(chooseLayout([{ version: 2, controllers: [], dir: '/sys/fs/cgroup/corral/x' }]), { version: 2, dir: '/sys/fs/cgroup/corral/x' });
  assert.equal(chooseLayout([]), null);
});

test('layer usage: first call waits for one walk, later calls answer from the cache and refresh a stale value in the background', async () => {
  let walks = 0;
  let release: (() => void) | undefined;
  const cache = new LayerUsageCache(20, async () => {
    walks++;
    if (walks === 2) await new Promise<void>((r) => (release = r));
    return { bytes: walks * 100, inodes: walks };
  });
  const [a, b] = await Promise.all([cache.get('/l'), cache.get('/l')]);
  assert.equal(walks, 1, 'concurrent first calls share one walk');
  assert.equal(a.usage.bytes, 100);
  assert.equal(b.usage.bytes, 100);
  await new Promise((r) => setTimeout(r, 30));
  const stale = await cache.get('/l'); // starts walk 2, answers at once
  assert.equal(stale.usage.bytes, 100);
  await cache.get('/l');
  assert.equal(walks, 2, 'one refresh at a time');
  release!();
  await new Promise((r) => setTimeout(r, 5));
  assert.equal((await cache.get('/l')).usage.bytes, 200);
  cache.retain(new Set());
  await cache.get('/l');
  assert.equal(walks, 3, 'a forgotten layer is walked afresh');
});

const NET_DEV = [
  'Inter-|   Receive                                                |  Transmit',
  ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
  '    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0',
  '  eth0: 5868170    4242    1    0    0     0          0         0   123456     789    2    0    0     0       0          0',
  'net1: 42 1 0 0 0 0 0 0 43 1 0 0 0 0 0 0',
  '',
].join('\n');

test('net/dev: bytes and errors per interface; loopback left out; eth0 is the default interface', () => {
  const c = parseNetDev(NET_DEV);
  assert.deepEqual(c.map((x) => x.name), ['lo', 'eth0', 'net1']);
  assert.deepEqual(c[1], { name: 'eth0', rxBytes: 5868170n, rxErrors: 1n, txBytes: 123456n, txErrors: 2n });
  const u = networkUsage(c, T);
  assert.deepEqual(u.interfaces!.map((i) => i!.name), ['eth0', 'net1']);
  assert.equal(u.defaultInterface!.name, 'eth0');
  assert.equal(networkUsage(c.filter((x) => x.name !== 'eth0'), T).defaultInterface, null);
});

test('a pod without a cgroup of its own: the sum of its cgroups, missing figures skipped, no limit', () => {
  const a = sampleFromV1({ cpuacctUsage: '100', memoryUsage: '1000', memoryStat: 'total_inactive_file 100\ntotal_rss 50\n', memoryLimit: '4096' }, T);
  const b = sampleFromV2({ cpuStat: 'usage_usec 1\n', memoryCurrent: null, memoryStat: null, memoryMax: null }, T + 5n);
  const s = sumSamples([a, b]);
  assert.equal(s.cpuUsageNs, 1100n);
  assert.equal(s.workingSetBytes, 900n);
  assert.equal(s.rssBytes, 50n);
  assert.equal(s.memoryLimitBytes, null);
  assert.equal(s.timestampNs, T + 5n);
  assert.equal(sumSamples([b]).memoryUsageBytes, null);
});

// ---------------------------------------------------------------- cgroup lookups are cached

/** A hybrid host's files for containers c1..cN (init pid 100+i), served from memory, each read counted. */
function fakeHost(n: number, extraMounts = 300) {
  const reads = new Map<string, number>();
  const mountLines = [
    '30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct',
    '31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory',
    '32 25 0:28 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw',
    // A node's many container mounts: what made every lookup expensive.
    ...Array.from({ length: extraMounts }, (_, i) => `${100 + i} 25 0:${100 + i} / /run/corral/containers/x${i}/rootfs rw - overlay overlay rw,lowerdir=/a:/b,upperdir=/c,workdir=/d`),
  ];
  const files = new Map<string, string>([['/proc/self/mountinfo', mountLines.join('\n') + '\n']]);
  for (let i = 1; i <= n; i++) {
    files.set(`/proc/${100 + i}/cgroup`, `4:memory:/k8s/c${i}\n3:cpu,cpuacct:/k8s/c${i}\n0::/k8s/c${i}\n`);
    files.set(`/sys/fs/cgroup/cpu,cpuacct/k8s/c${i}/cpuacct.usage`, `${i}000000\n`);
    files.set(`/sys/fs/cgroup/memory/k8s/c${i}/memory.usage_in_bytes`, '1000000\n');
    files.set(`/sys/fs/cgroup/memory/k8s/c${i}/memory.stat`, 'total_inactive_file 1000\ntotal_rss 5000\n');
    files.set(`/sys/fs/cgroup/memory/k8s/c${i}/memory.limit_in_bytes`, '9223372036854771712\n');
  }
  const readText = async (f: string) => {
    reads.set(f, (reads.get(f) ?? 0) + 1);
    return files.get(f) ?? null;
  };
  return { readText, reads, files };
}

const record = (i: number, pid = 100 + i): any => ({
  id: `c${i}`, sandboxId: 'p', metadata: { name: `c${i}`, attempt: 0 }, config: {}, state: 'running', pid,
  resources: { rootfs: null, runtimeContainer: true },
});

test('stats calls read /proc/self/mountinfo and each /proc/<pid>/cgroup once, not per container per call; the figures still come from the cgroup files each time', async () => {
  const host = fakeHost(20);
  const collector = new ContainerStatsCollector(host.readText);
  const recs = Array.from({ length: 20 }, (_, i) => record(i + 1));
  for (let call = 0; call < 5; call++) {
    const stats = await Promise.all(recs.map((r) => collector.stats(r)));
    assert.equal(stats[6]!.cpu?.usageCoreNanoSeconds?.value, 7_000_000n);
    assert.equal(stats[6]!.memory?.workingSetBytes?.value, 999_000n);
  }
  assert.equal(host.reads.get('/proc/self/mountinfo'), 1, 'the mount table read once');
  assert.equal(host.reads.get('/proc/101/cgroup'), 1, "a container's cgroup looked up once");
  assert.equal(host.reads.get('/sys/fs/cgroup/cpu,cpuacct/k8s/c1/cpuacct.usage'), 5, 'the counters are read on every call');

  // A new init PID for the same ID is looked up again; a removed container is forgotten.
  host.files.set('/proc/555/cgroup', host.files.get('/proc/101/cgroup')!);
  await collector.stats(record(1, 555));
  assert.equal(host.reads.get('/proc/555/cgroup'), 1);
  collector.retain(recs.slice(1));
  await collector.stats(record(1, 555));
  assert.equal(host.reads.get('/proc/555/cgroup'), 2, 'forgotten after retain, looked up again');
});

test('a process with no cgroup of the container (exited, PID reused) is not cached; a hierarchy mounted later is found', async () => {
  const host = fakeHost(1, 0);
  const collector = new ContainerStatsCollector(host.readText);
  host.files.set('/proc/101/cgroup', '4:memory:/other\n0::/other\n');
  assert.equal((await collector.stats(record(1))).cpu, undefined);
  host.files.set('/proc/101/cgroup', '4:memory:/k8s/c1\n3:cpu,cpuacct:/k8s/c1\n0::/k8s/c1\n');
  assert.equal((await collector.stats(record(1))).cpu?.usageCoreNanoSeconds?.value, 1_000_000n, 'looked up again');

  // A v1 hierarchy (pids) the first mount table did not have: re-read (at most every 10 s) when a new container needs it.
  const cache = new CgroupDirCache(host.readText, 0);
  await cache.get(101, 'c1');
  host.files.set('/proc/102/cgroup', '5:pids:/k8s/c2\n0::/k8s/c2\n');
  assert.deepEqual((await cache.get(102, 'c2')).map((d) => d.dir), ['/sys/fs/cgroup/unified/k8s/c2']);
  host.files.set('/proc/self/mountinfo', host.files.get('/proc/self/mountinfo') + '33 25 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n');
  host.files.set('/proc/103/cgroup', '5:pids:/k8s/c3\n0::/k8s/c3\n');
  assert.deepEqual((await cache.get(103, 'c3')).map((d) => d.dir).sort(), ['/sys/fs/cgroup/pids/k8s/c3', '/sys/fs/cgroup/unified/k8s/c3']);
});
