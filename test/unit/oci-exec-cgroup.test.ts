import { test } from 'node:test';
import assert from 'node:assert/strict';
import { containerCgroupDirs, parseCgroupMounts, parseProcCgroup } from '../../src/oci/exec-cgroup.js';

const ID = 'a'.repeat(64);

const HYBRID_MOUNTINFO = [
  '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
  '32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct',
  '33 31 0:30 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset,clone_children',
  '34 31 0:31 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer',
  '35 31 0:32 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd,release_agent=/x',
  '36 31 0:33 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate',
  '37 23 0:34 / /sys/fs/cgroup/my\\040dir rw - ext4 /dev/sda rw',
].join('\n');

const HYBRID_PROC = [
  `6:freezer:/corral/${ID}`,
  `5:cpu,cpuacct:/corral/${ID}`,
  `3:cpuset:/corral/${ID}`,
  `1:name=systemd:/corral/${ID}`,
  `0::/corral/${ID}`,
  '',
].join('\n');

test('parses /proc/<pid>/cgroup lines, v1 controllers and the v2 hierarchy', () => {
  assert.deepEqual(parseProcCgroup(HYBRID_PROC).slice(0, 2), [
    { controllers: ['freezer'], path: `/corral/${ID}` },
    { controllers: ['cpu', 'cpuacct'], path: `/corral/${ID}` },
  ]);
  assert.deepEqual(parseProcCgroup('0::/\n'), [{ controllers: [], path: '/' }]);
});

test('parses cgroup mounts: controllers from the super options, escapes undone, other file systems skipped', () => {
  const m = parseCgroupMounts(HYBRID_MOUNTINFO);
  assert.deepEqual(m.map((x) => [x.version, x.mountPoint, x.controllers]), [
    [1, '/sys/fs/cgroup/cpu,cpuacct', ['cpu', 'cpuacct']],
    [1, '/sys/fs/cgroup/cpuset', ['cpuset']],
    [1, '/sys/fs/cgroup/freezer', ['freezer']],
    [1, '/sys/fs/cgroup/systemd', ['name=systemd']],
    [2, '/sys/fs/cgroup/unified', []],
  ]);
  assert.deepEqual(parseCgroupMounts('40 1 0:40 / /mnt/a\\040b rw - cgroup2 cgroup2 rw').map((x) => x.mountPoint), ['/mnt/a b']);
});

test('a hybrid host: the container has a directory in every hierarchy its init is in', () => {
  const dirs = containerCgroupDirs(parseProcCgroup(HYBRID_PROC), parseCgroupMounts(HYBRID_MOUNTINFO), ID);
  assert.deepEqual(dirs.map((d) => d.dir), [
    `/sys/fs/cgroup/freezer/corral/${ID}`,
    `/sys/fs/cgroup/cpu,cpuacct/corral/${ID}`,
    `/sys/fs/cgroup/cpuset/corral/${ID}`,
    `/sys/fs/cgroup/systemd/corral/${ID}`,
    `/sys/fs/cgroup/unified/corral/${ID}`,
  ]);
});

test('a pure v2 host, and a mount of a sub-tree', () => {
  const mounts = parseCgroupMounts('30 23 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw');
  assert.deepEqual(containerCgroupDirs(parseProcCgroup(`0::/kubepods/pod1/${ID}\n`), mounts, ID).map((d) => d.dir), [`/sys/fs/cgroup/kubepods/pod1/${ID}`]);
  const sub = parseCgroupMounts('30 23 0:27 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw');
  assert.deepEqual(containerCgroupDirs(parseProcCgroup(`0::/kubepods/pod1/${ID}\n`), sub, ID).map((d) => d.dir), [`/sys/fs/cgroup/pod1/${ID}`]);
  assert.deepEqual(containerCgroupDirs(parseProcCgroup(`0::/elsewhere/${ID}\n`), sub, ID), [], 'outside the mounted sub-tree');
});

test('hierarchies the container is not in, unmounted ones, and a recycled PID give nothing', () => {
  const mounts = parseCgroupMounts(HYBRID_MOUNTINFO);
  // crun run with the cgroup2 mount hidden leaves the container in the unified root.
  const partial = containerCgroupDirs(parseProcCgroup(`6:freezer:/corral/${ID}\n0::/\n9:pids:/corral/${ID}\n`), mounts, ID);
  assert.deepEqual(partial.map((d) => d.dir), [`/sys/fs/cgroup/freezer/corral/${ID}`]);
  assert.deepEqual(containerCgroupDirs(parseProcCgroup('6:freezer:/user.slice\n0::/user.slice/session-1.scope\n'), mounts, ID), []);
  assert.deepEqual(containerCgroupDirs([], mounts, ID), []);
});
