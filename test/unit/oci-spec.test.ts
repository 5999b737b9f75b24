import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Annotations } from '../../src/oci/annotations.js';
import { ALL_CAPABILITIES, DEFAULT_CAPABILITIES, capabilitiesFromMask } from '../../src/oci/capabilities.js';
import { cgroupfsCgroupsPath, clampOomScoreAdj } from '../../src/oci/cgroups.js';
import type { OciSpec } from '../../src/oci/oci-types.js';
import { DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS } from '../../src/oci/pod-defaults.js';
import { BUILTIN_SANDBOX_IMAGE_NAME, buildSandboxSpec, type SandboxSpecInput } from '../../src/oci/sandbox-spec.js';
import { defaultSeccompProfile, seccompFromProfile } from '../../src/oci/seccomp.js';
import { validateSysctls, withDefaultSysctls } from '../../src/oci/sysctls.js';

function input(over: Partial<SandboxSpecInput> = {}): SandboxSpecInput {
  return {
    sandboxId: 'a'.repeat(64),
    name: 'web',
    namespace: 'prod',
    uid: 'uid-1',
    attempt: 2,
    hostname: 'web-host',
    logDirectory: '/var/log/pods/prod_web_uid-1',
    imageName: '',
    netnsPath: '/var/run/netns/cni-1234',
    hostPid: false,
    hostIpc: false,
    sharedPidNamespace: true,
    hostCgroupV2: false,
    privileged: false,
    readOnlyRootfs: false,
    cgroupsPath: '/kubepods/besteffort/poduid-1/' + 'a'.repeat(64),
    sysctls: {},
    oomScoreAdj: -998,
    noNewPrivileges: true,
    seccomp: { type: 'unconfined' },
    resolvConfPath: '/run/corral/sb/resolv.conf',
    hostnamePath: '/run/corral/sb/hostname',
    hostsPath: '/run/corral/sb/hosts',
    shmPath: '/run/corral/sb/shm',
    annotations: {},
    ...over,
  };
}

const nsTypes = (s: OciSpec) => s.linux.namespaces.map((n) => n.type);
const mount = (s: OciSpec, dest: string) => s.mounts.find((m) => m.destination === dest);

test('default pod: process, root, namespaces with the netns path', () => {
  const s = buildSandboxSpec(input());
  assert.equal(s.ociVersion, '1.0.2');
  assert.deepEqual(s.process.args, ['/pause']);
  assert.equal(s.process.cwd, '/');
  assert.ok(s.process.env?.some((e) => e.startsWith('PATH=')));
  assert.deepEqual(s.process.user, { uid: 0, gid: 0 });
  assert.equal(s.process.noNewPrivileges, true);
  assert.equal(s.process.oomScoreAdj, -998);
  assert.deepEqual(s.root, { path: 'rootfs', readonly: true });
  assert.equal(s.hostname, 'web-host');
  assert.deepEqual(nsTypes(s), ['pid', 'ipc', 'uts', 'mount', 'network']);
  assert.equal(s.linux.namespaces.find((n) => n.type === 'network')?.path, '/var/run/netns/cni-1234');
  assert.equal(s.linux.cgroupsPath, '/kubepods/besteffort/poduid-1/' + 'a'.repeat(64));
  assert.equal(s.linux.resources?.cpu?.shares, 2);
  assert.deepEqual(s.linux.resources?.devices, [{ allow: false, access: 'rwm' }]);
  assert.equal(s.linux.seccomp, undefined, 'unconfined: no seccomp section');
});

test('default pod: every sandbox annotation is set and Corral keys beat pass-through ones', () => {
  const s = buildSandboxSpec(
    input({ annotations: { 'example.com/x': 'y', [Annotations.containerType]: 'container', [Annotations.sandboxId]: 'spoof' } }),
  );
  const a = s.annotations;
  assert.equal(a['io.kubernetes.cri.container-type'], 'sandbox');
  assert.equal(a['io.kubernetes.cri.sandbox-id'], 'a'.repeat(64));
  assert.equal(a['io.kubernetes.cri.sandbox-name'], 'web');
  assert.equal(a['io.kubernetes.cri.sandbox-namespace'], 'prod');
  assert.equal(a['io.kubernetes.cri.sandbox-uid'], 'uid-1');
  assert.equal(a['io.kubernetes.cri.sandbox-log-directory'], '/var/log/pods/prod_web_uid-1');
  assert.equal(a['io.kubernetes.cri.image-name'], BUILTIN_SANDBOX_IMAGE_NAME);
  assert.equal(a['io.kubernetes.cri.podsandbox.image-name'], BUILTIN_SANDBOX_IMAGE_NAME);
  assert.equal(a['io.kubernetes.cri-o.ContainerType'], 'sandbox');
  assert.equal(a['io.kubernetes.cri-o.SandboxID'], 'a'.repeat(64));
  assert.equal(a['example.com/x'], 'y');

  const custom = buildSandboxSpec(input({ imageName: 'registry.k8s.io/pause:3.10' }));
  assert.equal(custom.annotations[Annotations.imageName], 'registry.k8s.io/pause:3.10');
  assert.equal(custom.annotations[Annotations.podSandboxImageName], 'registry.k8s.io/pause:3.10');
});

test('default pod: default capabilities, masked and read-only paths', () => {
  const s = buildSandboxSpec(input());
  const caps = s.process.capabilities!;
  assert.deepEqual(caps.bounding, [...DEFAULT_CAPABILITIES]);
  assert.deepEqual(caps.effective, [...DEFAULT_CAPABILITIES]);
  assert.deepEqual(caps.permitted, [...DEFAULT_CAPABILITIES]);
  assert.ok(!caps.bounding!.includes('CAP_SYS_ADMIN'));
  assert.ok(caps.bounding!.includes('CAP_NET_RAW'));
  assert.deepEqual(s.linux.maskedPaths, [...DEFAULT_MASKED_PATHS]);
  assert.deepEqual(s.linux.readonlyPaths, [...DEFAULT_READONLY_PATHS]);
});

test('default pod: mounts', () => {
  const s = buildSandboxSpec(input());
  assert.deepEqual(
    s.mounts.map((m) => m.destination),
    ['/proc', '/dev', '/dev/pts', '/dev/mqueue', '/sys', '/sys/fs/cgroup', '/dev/shm', '/etc/resolv.conf', '/etc/hostname', '/etc/hosts'],
  );
  assert.equal(mount(s, '/proc')?.type, 'proc');
  assert.equal(mount(s, '/dev')?.type, 'tmpfs');
  assert.equal(mount(s, '/dev/pts')?.type, 'devpts');
  assert.equal(mount(s, '/dev/mqueue')?.type, 'mqueue');
  assert.ok(mount(s, '/sys')?.options?.includes('ro'));
  const shm = mount(s, '/dev/shm')!;
  assert.equal(shm.source, '/run/corral/sb/shm');
  assert.ok(shm.options?.includes('rbind') && shm.options.includes('ro'));
  for (const [dest, src] of [
    ['/etc/resolv.conf', '/run/corral/sb/resolv.conf'],
    ['/etc/hostname', '/run/corral/sb/hostname'],
    ['/etc/hosts', '/run/corral/sb/hosts'],
  ]) {
    const m = mount(s, dest)!;
    assert.equal(m.type, 'bind');
    assert.equal(m.source, src);
    assert.ok(m.options?.includes('ro'), `${dest} is read-only`);
  }
});

test('the pause container gets its own cgroup at /sys/fs/cgroup: read-only, rw when privileged, a cgroup namespace only on a cgroup v2 host', () => {
  const v1 = buildSandboxSpec(input());
  assert.deepEqual(mount(v1, '/sys/fs/cgroup'), { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] });
  assert.ok(!nsTypes(v1).includes('cgroup'), 'v1: the runtime bind-mounts the container dirs, as containerd no cgroup namespace');
  assert.deepEqual(nsTypes(buildSandboxSpec(input({ hostCgroupV2: true }))), ['pid', 'ipc', 'uts', 'mount', 'network', 'cgroup']);
  const privileged = buildSandboxSpec(input({ hostCgroupV2: true, privileged: true }));
  assert.deepEqual(mount(privileged, '/sys/fs/cgroup')?.options, ['nosuid', 'noexec', 'nodev', 'relatime', 'rw']);
  assert.ok(!nsTypes(privileged).includes('cgroup'));
});

test('host network: no network or UTS namespace, no hostname', () => {
  const s = buildSandboxSpec(input({ netnsPath: null }));
  assert.deepEqual(nsTypes(s), ['pid', 'ipc', 'mount']);
  assert.equal(s.hostname, undefined);
});

test('host PID and host IPC drop those namespaces; host IPC without shm dir binds host /dev/shm', () => {
  const pid = buildSandboxSpec(input({ hostPid: true }));
  assert.deepEqual(nsTypes(pid), ['ipc', 'uts', 'mount', 'network']);
  const ipc = buildSandboxSpec(input({ hostIpc: true, shmPath: null }));
  assert.deepEqual(nsTypes(ipc), ['pid', 'uts', 'mount', 'network']);
  assert.equal(mount(ipc, '/dev/shm')?.source, '/dev/shm');
  assert.equal(mount(ipc, '/dev/shm')?.type, 'bind');
  const privateNoDir = buildSandboxSpec(input({ shmPath: null }));
  assert.equal(mount(privateNoDir, '/dev/shm')?.type, 'tmpfs');
});

test('privileged: all capabilities, /sys rw, no seccomp, no masked paths, devices allowed', () => {
  const s = buildSandboxSpec(input({ privileged: true, seccomp: { type: 'runtimeDefault' } }));
  assert.deepEqual(s.process.capabilities?.bounding, [...ALL_CAPABILITIES]);
  assert.ok(mount(s, '/sys')?.options?.includes('rw'));
  assert.ok(!mount(s, '/sys')?.options?.includes('ro'));
  assert.equal(s.linux.seccomp, undefined);
  assert.equal(s.linux.maskedPaths, undefined);
  assert.equal(s.linux.readonlyPaths, undefined);
  assert.deepEqual(s.linux.resources?.devices, [{ allow: true, access: 'rwm' }]);
});

test('capabilities are limited to what the daemon has', () => {
  const available = capabilitiesFromMask('000001fffeffffff'); // everything but CAP_SYS_RESOURCE
  assert.equal(available.length, 40);
  assert.ok(!available.includes('CAP_SYS_RESOURCE'));
  const priv = buildSandboxSpec(input({ privileged: true, availableCapabilities: available }));
  assert.deepEqual(priv.process.capabilities?.bounding, available);
  const plain = buildSandboxSpec(input({ availableCapabilities: available.filter((c) => c !== 'CAP_NET_RAW') }));
  assert.ok(!plain.process.capabilities?.bounding?.includes('CAP_NET_RAW'));
  assert.equal(plain.process.capabilities?.bounding?.length, DEFAULT_CAPABILITIES.length - 1);
  assert.deepEqual(capabilitiesFromMask('0'), []);
  assert.deepEqual(capabilitiesFromMask('3'), ['CAP_CHOWN', 'CAP_DAC_OVERRIDE']);
});

test('user, groups, sysctls, cpu shares, oom score', () => {
  const s = buildSandboxSpec(
    input({ runAsUser: 1000, runAsGroup: 3000, supplementalGroups: [4, 5], sysctls: { 'net.ipv4.ip_forward': '1' }, cpuShares: 7, oomScoreAdj: 0 }),
  );
  assert.deepEqual(s.process.user, { uid: 1000, gid: 3000, additionalGids: [4, 5] });
  assert.deepEqual(s.linux.sysctl, { 'net.ipv4.ip_forward': '1' });
  assert.equal(s.linux.resources?.cpu?.shares, 7);
  assert.equal(s.process.oomScoreAdj, 0);
});

test('seccomp: runtimeDefault gives a deny-by-default allow list; localhost profiles are converted', () => {
  const s = buildSandboxSpec(input({ seccomp: { type: 'runtimeDefault' } }));
  const sc = s.linux.seccomp!;
  assert.equal(sc.defaultAction, 'SCMP_ACT_ERRNO');
  assert.equal(sc.defaultErrnoRet, 1);
  const allowed = sc.syscalls!.filter((r) => r.action === 'SCMP_ACT_ALLOW' && !r.args).flatMap((r) => r.names);
  for (const name of ['read', 'write', 'execve', 'futex', 'rt_sigaction', 'exit_group', 'pause', 'capset', 'setresuid']) {
    assert.ok(allowed.includes(name), `${name} allowed`);
  }
  for (const name of ['mount', 'umount2', 'init_module', 'kexec_load', 'bpf', 'ptrace', 'unshare', 'setns', 'keyctl']) {
    assert.ok(!allowed.includes(name), `${name} not allowed`);
  }
  assert.equal(sc.syscalls!.find((r) => r.names.includes('clone3'))?.errnoRet, 38);
  assert.deepEqual(defaultSeccompProfile('x64').architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32']);
  assert.deepEqual(defaultSeccompProfile('arm64').architectures, ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);

  const profile = {
    defaultAction: 'SCMP_ACT_ERRNO',
    archMap: [
      { architecture: 'SCMP_ARCH_X86_64', subArchitectures: ['SCMP_ARCH_X86'] },
      { architecture: 'SCMP_ARCH_AARCH64', subArchitectures: ['SCMP_ARCH_ARM'] },
    ],
    syscalls: [
      { names: ['read', 'write'], action: 'SCMP_ACT_ALLOW' },
      { names: ['arch_prctl'], action: 'SCMP_ACT_ALLOW', includes: { arches: ['amd64'] } },
      { names: ['mount'], action: 'SCMP_ACT_ALLOW', includes: { caps: ['CAP_SYS_ADMIN'] } },
      { names: ['clone'], action: 'SCMP_ACT_ALLOW', excludes: { caps: ['CAP_SYS_ADMIN'] } },
    ],
  };
  const conv = seccompFromProfile(profile, DEFAULT_CAPABILITIES, 'x64');
  assert.deepEqual(conv.architectures, ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86']);
  assert.deepEqual(conv.syscalls!.map((r) => r.names[0]), ['read', 'arch_prctl', 'clone']);
  const arm = seccompFromProfile(profile, ['CAP_SYS_ADMIN'], 'arm64');
  assert.deepEqual(arm.architectures, ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM']);
  assert.deepEqual(arm.syscalls!.map((r) => r.names[0]), ['read', 'mount']);
  assert.throws(() => seccompFromProfile({ syscalls: [] }, []), /defaultAction/);
  const local = buildSandboxSpec(input({ seccomp: { type: 'localhost', profile: { defaultAction: 'SCMP_ACT_LOG' } } }));
  assert.equal(local.linux.seccomp?.defaultAction, 'SCMP_ACT_LOG');
});

test('validateSysctls: namespaced ones only, and only with the namespace private', () => {
  const priv = { hostNetwork: false, hostIpc: false };
  validateSysctls({ 'net.ipv4.ip_forward': '1', 'net.core.somaxconn': '1024', 'kernel.shmmax': '1', 'kernel.msgmax': '2', 'kernel.sem': '1 2 3 4', 'fs.mqueue.msg_max': '10' }, priv);
  validateSysctls({ 'net/ipv4/ip_forward': '1' }, priv);
  validateSysctls({}, { hostNetwork: true, hostIpc: true });

  assert.throws(() => validateSysctls({ 'net.ipv4.ip_forward': '1' }, { hostNetwork: true, hostIpc: false }), /net\.ipv4\.ip_forward.*host's network/);
  assert.throws(() => validateSysctls({ 'kernel.shmmax': '1' }, { hostNetwork: false, hostIpc: true }), /kernel\.shmmax.*IPC/);
  assert.throws(() => validateSysctls({ 'fs.mqueue.queues_max': '1' }, { hostNetwork: false, hostIpc: true }), /fs\.mqueue\.queues_max/);
  assert.throws(() => validateSysctls({ 'kernel.hostname': 'x' }, priv), /kernel\.hostname.*not namespaced/);
  assert.throws(() => validateSysctls({ 'kernel.domainname': 'x' }, priv), /kernel\.domainname/);
  assert.throws(() => validateSysctls({ 'vm.overcommit_memory': '1' }, priv), /vm\.overcommit_memory.*not namespaced/);
  assert.throws(() => validateSysctls({ 'kernel.semx': '1' }, priv), /not namespaced/);
  assert.throws(() => validateSysctls({ 'net..ipv4': '1' }, priv), /not a valid sysctl name/);
  assert.throws(() => validateSysctls({ 'net.ipv4.ip_forward': '1\nkernel.x=1' }, priv), /single line/);
});

test('withDefaultSysctls adds the unprivileged port and ping defaults only with a private netns', () => {
  assert.deepEqual(withDefaultSysctls({}, { hostNetwork: false }), {
    'net.ipv4.ip_unprivileged_port_start': '0',
    'net.ipv4.ping_group_range': '0 2147483647',
  });
  assert.equal(withDefaultSysctls({ 'net.ipv4.ip_unprivileged_port_start': '80' }, { hostNetwork: false })['net.ipv4.ip_unprivileged_port_start'], '80');
  assert.deepEqual(withDefaultSysctls({ 'kernel.shmmax': '1' }, { hostNetwork: true }), { 'kernel.shmmax': '1' });
});

test('cgroupfsCgroupsPath', () => {
  assert.equal(cgroupfsCgroupsPath('/kubepods/besteffort/pod123', 'abc'), '/kubepods/besteffort/pod123/abc');
  assert.equal(cgroupfsCgroupsPath('kubepods/burstable/pod1/', 'abc'), '/kubepods/burstable/pod1/abc');
  assert.equal(cgroupfsCgroupsPath('', 'abc'), '/corral/abc');
  assert.equal(cgroupfsCgroupsPath('', 'abc', '/other'), '/other/abc');
  assert.throws(() => cgroupfsCgroupsPath('kubepods-besteffort-pod1.slice', 'abc'), /systemd slice/);
  assert.throws(() => cgroupfsCgroupsPath('/kubepods/../etc', 'abc'), /\.\./);
  assert.throws(() => cgroupfsCgroupsPath('/kubepods', '../x'), /container id/);
});

test('clampOomScoreAdj', () => {
  assert.equal(clampOomScoreAdj(-998, -1000), -998);
  assert.equal(clampOomScoreAdj(-998, 0), 0);
  assert.equal(clampOomScoreAdj(-998, -500), -500);
  assert.equal(clampOomScoreAdj(500, 0), 500);
  assert.equal(clampOomScoreAdj(5000, -1000), 1000);
  assert.equal(clampOomScoreAdj(-5000, -2000), -1000);
  assert.equal(clampOomScoreAdj(100, 300), 300);
  assert.equal(clampOomScoreAdj(NaN, -1000), 0);
});

test('runtime/default seccomp: capability-governed syscalls are allowed only with the capability', () => {
  const allowed = (p: ReturnType<typeof defaultSeccompProfile>) => new Set(p.syscalls!.filter((s) => s.action === 'SCMP_ACT_ALLOW' && !s.args).flatMap((s) => s.names));
  const plain = defaultSeccompProfile('x64', ['CAP_CHOWN']);
  const admin = defaultSeccompProfile('x64', ['CAP_CHOWN', 'CAP_SYS_ADMIN']);
  assert.ok(!allowed(plain).has('sethostname') && !allowed(plain).has('mount'));
  assert.ok(allowed(admin).has('sethostname') && allowed(admin).has('mount') && allowed(admin).has('clone'), 'CAP_SYS_ADMIN: namespaces and mounts');
  assert.ok(!allowed(admin).has('reboot'));
  assert.ok(plain.syscalls!.some((s) => s.names.includes('clone') && s.args?.length), 'clone without namespace flags only');
});

test('annotations: the sandbox keys (log directory and pod sandbox image too), exactly these, in this order', () => {
  const s = buildSandboxSpec(input({ annotations: { 'example.com/x': 'y' } }));
  const id = 'a'.repeat(64);
  assert.deepEqual(Object.keys(s.annotations), [
    'example.com/x',
    Annotations.containerType,
    Annotations.sandboxId,
    Annotations.sandboxName,
    Annotations.sandboxNamespace,
    Annotations.sandboxUid,
    Annotations.sandboxLogDirectory,
    Annotations.imageName,
    Annotations.podSandboxImageName,
    Annotations.crioContainerType,
    Annotations.crioSandboxId,
  ]);
  assert.equal(s.annotations[Annotations.containerType], 'sandbox');
  assert.equal(s.annotations[Annotations.crioContainerType], 'sandbox');
  assert.equal(s.annotations[Annotations.crioSandboxId], id);
  assert.equal(s.annotations[Annotations.containerName], undefined);
});
