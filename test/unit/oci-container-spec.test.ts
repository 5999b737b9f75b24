import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_CAPABILITIES } from '../../src/oci/capabilities.js';
import type { MountPropagation } from '../../src/cri-api/types.js';
import { buildContainerSpec, containerArgs, containerCapabilities, containerEnv, resolveUser, type ContainerSpecInput } from '../../src/oci/container-spec.js';

test('command and args follow the Kubernetes rules over the image entrypoint and cmd', () => {
  const image = { Entrypoint: ['/entry'], Cmd: ['--default'] };
  assert.deepEqual(containerArgs([], [], image), ['/entry', '--default']);
  assert.deepEqual(containerArgs([], ['x'], image), ['/entry', 'x'], 'args replace Cmd only');
  assert.deepEqual(containerArgs(['/bin/sh'], [], image), ['/bin/sh'], 'command drops the image Cmd');
  assert.deepEqual(containerArgs(['/bin/sh'], ['-c', 'true'], image), ['/bin/sh', '-c', 'true']);
  assert.deepEqual(containerArgs([], [], { Entrypoint: null, Cmd: ['sh'] }), ['sh']);
  assert.deepEqual(containerArgs([], [], {}), []);
});

test('environment: image first, container envs override in place, PATH defaulted', () => {
  assert.deepEqual(containerEnv(['A=1', 'PATH=/bin', 'B=2'], [{ key: 'A', value: 'x' }, { key: 'C', value: '3' }]), ['A=x', 'PATH=/bin', 'B=2', 'C=3']);
  assert.match(containerEnv([], [])[0]!, /^PATH=\/usr\/local\/sbin:/);
  assert.deepEqual(containerEnv(['EMPTY'], []).slice(0, 1), ['EMPTY=']);
});

test('capabilities: default set with add/drop, ALL, privileged, trimmed to what the daemon has', () => {
  const plain = containerCapabilities(false, [], []);
  assert.deepEqual(plain, [...DEFAULT_CAPABILITIES]);
  const added = containerCapabilities(false, ['NET_ADMIN', 'CAP_SYS_TIME'], ['KILL']);
  assert.ok(added.includes('CAP_NET_ADMIN') && added.includes('CAP_SYS_TIME') && !added.includes('CAP_KILL'));
  assert.deepEqual(containerCapabilities(false, [], ['ALL']), []);
  assert.ok(containerCapabilities(false, ['ALL'], []).includes('CAP_SYS_ADMIN'));
  assert.deepEqual(containerCapabilities(true, [], [], ['CAP_CHOWN', 'CAP_SYS_ADMIN']), ['CAP_CHOWN', 'CAP_SYS_ADMIN']);
  assert.ok(!containerCapabilities(false, ['SYS_RESOURCE'], [], DEFAULT_CAPABILITIES).includes('CAP_SYS_RESOURCE'));
});

const passwd = 'root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n';
const group = 'root:x:0:\nwww-data:x:33:\napp:x:1000:\naudio:x:29:app,www-data\nstaff:x:50:\n';

test('user: image User as uid, uid:gid, name, name:group; runAsUser and runAsGroup win; groups from /etc/group', () => {
  const r = (o: Partial<Parameters<typeof resolveUser>[0]>) => resolveUser({ imageUser: '', passwd, group, ...o });
  assert.deepEqual(r({}), { uid: 0, gid: 0 });
  assert.deepEqual(r({ imageUser: '1000' }), { uid: 1000, gid: 1000, additionalGids: [29] });
  assert.deepEqual(r({ imageUser: '1002' }), { uid: 1002, gid: 0 }, 'a uid without a passwd entry');
  assert.deepEqual(r({ imageUser: '1003:1003' }), { uid: 1003, gid: 1003 });
  assert.deepEqual(r({ imageUser: 'www-data' }), { uid: 33, gid: 33, additionalGids: [29] });
  assert.deepEqual(r({ imageUser: 'www-data:staff' }), { uid: 33, gid: 50, additionalGids: [29] });
  assert.deepEqual(r({ imageUser: 'www-data', runAsUser: 1000 }), { uid: 1000, gid: 1000, additionalGids: [29] });
  assert.deepEqual(r({ runAsUser: 7, runAsGroup: 8, supplementalGroups: [9] }), { uid: 7, gid: 8, additionalGids: [9] });
  assert.deepEqual(r({ runAsUsername: 'app' }), { uid: 1000, gid: 1000, additionalGids: [29] });
  assert.throws(() => r({ runAsGroup: 5 }), /run_as_group is set without run_as_user/);
  assert.throws(() => r({ imageUser: 'nobody-here' }), /"nobody-here" is not in the image's \/etc\/passwd/);
  assert.throws(() => r({ imageUser: 'app:nogroup' }), /"nogroup" is not in the image's \/etc\/group/);
});

function input(over: Partial<ContainerSpecInput> = {}): ContainerSpecInput {
  return {
    containerId: 'c'.repeat(64),
    containerName: 'web',
    sandboxId: 's'.repeat(64),
    sandboxName: 'pod',
    sandboxNamespace: 'ns',
    sandboxUid: 'uid',
    imageName: 'busybox:latest',
    rootfsPath: '/run/corral/containers/c/rootfs',
    args: ['sh'],
    env: ['PATH=/bin'],
    cwd: '/',
    user: { uid: 0, gid: 0 },
    namespaces: { network: '/var/run/netns/corral-s', ipc: '/proc/42/ns/ipc', uts: '/proc/42/ns/uts', pid: '/proc/42/ns/pid' },
    hostCgroupV2: false,
    privileged: false,
    readOnlyRootfs: false,
    noNewPrivileges: false,
    capabilities: [...DEFAULT_CAPABILITIES],
    seccomp: { type: 'runtimeDefault' },
    cgroupsPath: '/corral/c',
    mounts: [],
    hostnamePath: '/run/s/hostname',
    hostsPath: '/run/s/hosts',
    resolvConfPath: '/run/s/resolv.conf',
    shmPath: '/run/s/shm',
    annotations: {},
    ...over,
  };
}

test('the container joins the pod namespaces by path; new PID namespace or host ones when asked', () => {
  const spec = buildContainerSpec(input());
  assert.deepEqual(spec.linux!.namespaces, [
    { type: 'mount' },
    { type: 'pid', path: '/proc/42/ns/pid' },
    { type: 'ipc', path: '/proc/42/ns/ipc' },
    { type: 'uts', path: '/proc/42/ns/uts' },
    { type: 'network', path: '/var/run/netns/corral-s' },
  ]);
  const own = buildContainerSpec(input({ namespaces: { network: 'host', ipc: 'host', uts: 'host', pid: 'new' } }));
  assert.deepEqual(own.linux!.namespaces, [{ type: 'mount' }, { type: 'pid' }]);
  assert.equal(spec.annotations!['io.kubernetes.cri.container-type'], 'container');
  assert.equal(spec.annotations!['io.kubernetes.cri.sandbox-id'], 's'.repeat(64));
  assert.equal(spec.annotations!['io.kubernetes.cri.container-name'], 'web');
});

test('the container sees its own cgroup at /sys/fs/cgroup: a cgroup mount after /sys, read-only with containerd\'s options, rw when privileged', () => {
  const spec = buildContainerSpec(input());
  const dests = spec.mounts!.map((m) => m.destination);
  assert.ok(dests.indexOf('/sys/fs/cgroup') > dests.indexOf('/sys'), 'mounted over /sys, so after it');
  assert.deepEqual(
    spec.mounts!.filter((m) => m.destination === '/sys/fs/cgroup'),
    [{ destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] }],
  );
  const privileged = buildContainerSpec(input({ privileged: true }));
  assert.deepEqual(privileged.mounts!.find((m) => m.destination === '/sys/fs/cgroup')!.options, ['nosuid', 'noexec', 'nodev', 'relatime', 'rw']);
  const kubelet = buildContainerSpec(input({ mounts: [{ containerPath: '/sys/fs/cgroup', hostPath: '/srv/cg', readonly: true }] }));
  assert.deepEqual(kubelet.mounts!.filter((m) => m.destination === '/sys/fs/cgroup').map((m) => m.type), ['bind'], 'a kubelet mount there replaces it');
});

test('cgroup namespace: on a cgroup v2 host for an unprivileged container (its cgroup2 mount is rooted at its own cgroup); never on v1 or privileged', () => {
  const types = (over: Partial<ContainerSpecInput>) => buildContainerSpec(input(over)).linux!.namespaces.map((n) => n.type);
  assert.deepEqual(types({ hostCgroupV2: true }), ['mount', 'pid', 'ipc', 'uts', 'network', 'cgroup']);
  assert.ok(!types({ hostCgroupV2: false }).includes('cgroup'));
  assert.ok(!types({ hostCgroupV2: true, privileged: true }).includes('cgroup'));
});

test('kubelet mounts replace the pod defaults at the same path, with their propagation', () => {
  const spec = buildContainerSpec(input({ mounts: [{ containerPath: '/etc/hosts', hostPath: '/var/lib/kubelet/pods/x/etc-hosts', readonly: false }, { containerPath: '/data', hostPath: '/srv', readonly: true, propagation: 'PROPAGATION_HOST_TO_CONTAINER' }] }));
  const hosts = spec.mounts!.filter((m) => m.destination === '/etc/hosts');
  assert.equal(hosts.length, 1);
  assert.equal(hosts[0]!.source, '/var/lib/kubelet/pods/x/etc-hosts');
  assert.deepEqual(spec.mounts!.find((m) => m.destination === '/data')!.options, ['rbind', 'ro', 'rslave']);
  assert.equal(spec.mounts!.find((m) => m.destination === '/dev/shm')!.source, '/run/s/shm');
});

test('privileged: no seccomp, no masked paths, devices allowed; unprivileged gets all three restrictions', () => {
  const priv = buildContainerSpec(input({ privileged: true }));
  assert.equal(priv.linux!.seccomp, undefined);
  assert.equal(priv.linux!.maskedPaths, undefined);
  assert.deepEqual(priv.linux!.resources!.devices, [{ allow: true, access: 'rwm' }]);
  const plain = buildContainerSpec(input({ readOnlyRootfs: true, resources: { memoryLimitInBytes: 1 << 26, cpuShares: 512 } }));
  assert.ok(plain.linux!.seccomp);
  assert.ok(plain.linux!.maskedPaths!.length > 0);
  assert.equal(plain.root!.readonly, true);
  assert.deepEqual(plain.linux!.resources!.memory, { limit: 1 << 26 });
  assert.deepEqual(plain.linux!.resources!.cpu, { shares: 512 });
});

test('mount propagation: from mountinfo, the longest mount point holding the path decides; bidirectional needs shared', async () => {
  const { mountPropagationOf, propagationProblem } = await import('../../src/oci/container-spec.js');
  const mi = [
    '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
    '30 22 0:25 / /tmp rw,nosuid - tmpfs tmpfs rw',
    '31 22 0:26 / /var/lib/kubelet rw master:7 - ext4 /dev/vdb rw',
    '32 22 0:27 / /mnt/with\\040space rw shared:9 - tmpfs tmpfs rw',
  ].join('\n');
  assert.equal(mountPropagationOf(mi, '/srv/data'), 'shared');
  assert.equal(mountPropagationOf(mi, '/tmp/x'), 'private');
  assert.equal(mountPropagationOf(mi, '/tmpfoo'), 'shared', 'a prefix that is not a path component does not count');
  assert.equal(mountPropagationOf(mi, '/var/lib/kubelet/pods/p/volumes/v'), 'slave');
  assert.equal(mountPropagationOf(mi, '/mnt/with space/a'), 'shared');
  const m = (propagation: MountPropagation) => ({ containerPath: '/data', hostPath: '/tmp/x', readonly: false, propagation });
  assert.match(propagationProblem(m('PROPAGATION_BIDIRECTIONAL'), 'slave')!, /needs \/tmp\/x on a shared mount/);
  assert.equal(propagationProblem(m('PROPAGATION_BIDIRECTIONAL'), 'shared'), null);
  assert.equal(propagationProblem(m('PROPAGATION_HOST_TO_CONTAINER'), 'slave'), null);
  assert.match(propagationProblem(m('PROPAGATION_HOST_TO_CONTAINER'), 'private')!, /private/);
  assert.equal(propagationProblem(m('PROPAGATION_PRIVATE'), 'private'), null);
  const spec = buildContainerSpec(input({ mounts: [{ containerPath: '/d', hostPath: '/srv', readonly: false, propagation: 'PROPAGATION_BIDIRECTIONAL' }] }));
  assert.equal(spec.linux!.rootfsPropagation, 'rshared');
  assert.equal(buildContainerSpec(input()).linux!.rootfsPropagation, undefined);
});

test('annotations: the pod and image of the container under Corral keys, which win over the CRI ones, in this order', () => {
  const spec = buildContainerSpec(input({ annotations: { 'example.com/x': 'y', 'io.kubernetes.cri.sandbox-id': 'spoof' } }));
  assert.deepEqual(Object.entries(spec.annotations), [
    ['example.com/x', 'y'],
    ['io.kubernetes.cri.sandbox-id', 's'.repeat(64)],
    ['io.kubernetes.cri.container-type', 'container'],
    ['io.kubernetes.cri.sandbox-name', 'pod'],
    ['io.kubernetes.cri.sandbox-namespace', 'ns'],
    ['io.kubernetes.cri.sandbox-uid', 'uid'],
    ['io.kubernetes.cri.container-name', 'web'],
    ['io.kubernetes.cri.image-name', 'busybox:latest'],
    ['io.kubernetes.cri-o.ContainerType', 'container'],
    ['io.kubernetes.cri-o.SandboxID', 's'.repeat(64)],
  ]);
});
