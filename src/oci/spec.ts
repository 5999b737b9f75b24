/**
 * Pure builders for the OCI runtime spec (config.json) of a pod's sandbox (pause)
 * container, plus the validators and small helpers that feed it. Nothing here does I/O.
 */
import path from 'node:path';

export const OCI_VERSION = '1.0.2';

/** The image name recorded for Corral's built-in pause rootfs. */
export const BUILTIN_SANDBOX_IMAGE_NAME = 'corral.local/pause:builtin';

// ---------------------------------------------------------------------------
// OCI types (the subset Corral writes)
// ---------------------------------------------------------------------------

export interface OciUser {
  uid: number;
  gid: number;
  umask?: number;
  additionalGids?: number[];
}

export interface OciCapabilities {
  bounding?: string[];
  effective?: string[];
  inheritable?: string[];
  permitted?: string[];
  ambient?: string[];
}

export interface OciRlimit {
  type: string;
  hard: number;
  soft: number;
}

export interface OciProcess {
  terminal?: boolean;
  user: OciUser;
  args: string[];
  env?: string[];
  cwd: string;
  capabilities?: OciCapabilities;
  rlimits?: OciRlimit[];
  noNewPrivileges?: boolean;
  oomScoreAdj?: number;
  apparmorProfile?: string;
  selinuxLabel?: string;
}

export interface OciRoot {
  path: string;
  readonly?: boolean;
}

export interface OciMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}

export type OciNamespaceType = 'pid' | 'network' | 'mount' | 'ipc' | 'uts' | 'user' | 'cgroup';

export interface OciNamespace {
  type: OciNamespaceType;
  path?: string;
}

export interface OciDeviceCgroup {
  allow: boolean;
  type?: 'a' | 'b' | 'c';
  major?: number;
  minor?: number;
  access?: string;
}

export interface OciResources {
  devices?: OciDeviceCgroup[];
  memory?: { limit?: number; reservation?: number; swap?: number };
  cpu?: { shares?: number; quota?: number; period?: number; cpus?: string; mems?: string };
  pids?: { limit: number };
}

export type SeccompAction =
  | 'SCMP_ACT_KILL'
  | 'SCMP_ACT_KILL_PROCESS'
  | 'SCMP_ACT_KILL_THREAD'
  | 'SCMP_ACT_TRAP'
  | 'SCMP_ACT_ERRNO'
  | 'SCMP_ACT_TRACE'
  | 'SCMP_ACT_ALLOW'
  | 'SCMP_ACT_LOG'
  | 'SCMP_ACT_NOTIFY';

export interface OciSeccompArg {
  index: number;
  value: number;
  valueTwo?: number;
  op: 'SCMP_CMP_NE' | 'SCMP_CMP_LT' | 'SCMP_CMP_LE' | 'SCMP_CMP_EQ' | 'SCMP_CMP_GE' | 'SCMP_CMP_GT' | 'SCMP_CMP_MASKED_EQ';
}

export interface OciSeccompSyscall {
  names: string[];
  action: SeccompAction;
  errnoRet?: number;
  args?: OciSeccompArg[];
}

export interface OciSeccomp {
  defaultAction: SeccompAction;
  defaultErrnoRet?: number;
  architectures?: string[];
  flags?: string[];
  listenerPath?: string;
  listenerMetadata?: string;
  syscalls?: OciSeccompSyscall[];
}

export interface OciLinux {
  namespaces: OciNamespace[];
  resources?: OciResources;
  cgroupsPath?: string;
  sysctl?: Record<string, string>;
  seccomp?: OciSeccomp;
  maskedPaths?: string[];
  readonlyPaths?: string[];
  mountLabel?: string;
  rootfsPropagation?: string;
}

export interface OciSpec {
  ociVersion: string;
  process: OciProcess;
  root: OciRoot;
  hostname?: string;
  mounts: OciMount[];
  annotations: Record<string, string>;
  linux: OciLinux;
}

// ---------------------------------------------------------------------------
// Annotations
// ---------------------------------------------------------------------------

export const Annotations = {
  containerType: 'io.kubernetes.cri.container-type',
  sandboxId: 'io.kubernetes.cri.sandbox-id',
  sandboxName: 'io.kubernetes.cri.sandbox-name',
  sandboxNamespace: 'io.kubernetes.cri.sandbox-namespace',
  sandboxUid: 'io.kubernetes.cri.sandbox-uid',
  sandboxLogDirectory: 'io.kubernetes.cri.sandbox-log-directory',
  imageName: 'io.kubernetes.cri.image-name',
  containerName: 'io.kubernetes.cri.container-name',
  podSandboxImageName: 'io.kubernetes.cri.podsandbox.image-name',
  crioContainerType: 'io.kubernetes.cri-o.ContainerType',
  crioSandboxId: 'io.kubernetes.cri-o.SandboxID',
} as const;

export const CONTAINER_TYPE_SANDBOX = 'sandbox';

// ---------------------------------------------------------------------------
// Capabilities, paths and defaults
// ---------------------------------------------------------------------------

/** The capability set an unprivileged pod sandbox gets. */
export const DEFAULT_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN',
  'CAP_DAC_OVERRIDE',
  'CAP_FSETID',
  'CAP_FOWNER',
  'CAP_MKNOD',
  'CAP_NET_RAW',
  'CAP_SETGID',
  'CAP_SETUID',
  'CAP_SETFCAP',
  'CAP_SETPCAP',
  'CAP_NET_BIND_SERVICE',
  'CAP_SYS_CHROOT',
  'CAP_KILL',
  'CAP_AUDIT_WRITE',
];

/** Every capability Linux defines (0..40), in number order; what a privileged sandbox gets. */
export const ALL_CAPABILITIES: readonly string[] = [
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL',
  'CAP_SETGID', 'CAP_SETUID', 'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE',
  'CAP_NET_BROADCAST', 'CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER',
  'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT', 'CAP_SYS_PTRACE', 'CAP_SYS_PACCT',
  'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE', 'CAP_SYS_TIME',
  'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM',
  'CAP_BLOCK_SUSPEND', 'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
];

/** Names of the capabilities set in a /proc/<pid>/status mask (e.g. CapBnd), known ones only. */
export function capabilitiesFromMask(hexMask: string): string[] {
  const mask = BigInt('0x' + (hexMask.trim() || '0'));
  return ALL_CAPABILITIES.filter((_, bit) => (mask >> BigInt(bit)) & 1n);
}

/** Kernel interfaces hidden from unprivileged sandboxes. */
export const DEFAULT_MASKED_PATHS: readonly string[] = [
  '/proc/acpi',
  '/proc/asound',
  '/proc/kcore',
  '/proc/keys',
  '/proc/latency_stats',
  '/proc/timer_list',
  '/proc/timer_stats',
  '/proc/sched_debug',
  '/proc/scsi',
  '/sys/firmware',
  '/sys/devices/virtual/powercap',
];

/** Kernel interfaces made read-only for unprivileged sandboxes. */
export const DEFAULT_READONLY_PATHS: readonly string[] = [
  '/proc/bus',
  '/proc/fs',
  '/proc/irq',
  '/proc/sys',
  '/proc/sysrq-trigger',
];

export const DEFAULT_PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
export const DEFAULT_SANDBOX_CPU_SHARES = 2;
/** What a sandbox asks for before clamping to what the daemon may grant. */
export const DEFAULT_SANDBOX_OOM_SCORE_ADJ = -998;

// ---------------------------------------------------------------------------
// Seccomp
// ---------------------------------------------------------------------------

/**
 * Syscalls the runtime/default profile allows. Written for Corral: the ordinary
 * needs of user programs (files, memory, threads, signals, time, sockets, SysV/POSIX
 * IPC, credentials the capability set already governs) and nothing that reaches
 * outside the container (mount, module loading, kexec, bpf, perf, keyrings, ptrace,
 * namespace entry). Names unknown to a given architecture are skipped by the runtimes.
 */
const SECCOMP_ALLOWED_SYSCALLS: readonly string[] = `
read write readv writev pread64 pwrite64 preadv pwritev preadv2 pwritev2
open openat openat2 creat close close_range lseek _llseek dup dup2 dup3 fcntl fcntl64 flock
fsync fdatasync sync syncfs sync_file_range truncate truncate64 ftruncate ftruncate64 fallocate
sendfile sendfile64 splice tee vmsplice copy_file_range readahead fadvise64 fadvise64_64 arm_fadvise64_64
ioctl pipe pipe2 stat stat64 fstat fstat64 lstat lstat64 newfstatat fstatat64 statx statfs statfs64
fstatfs fstatfs64 access faccessat faccessat2 readlink readlinkat getdents getdents64 getcwd chdir fchdir
mkdir mkdirat rmdir unlink unlinkat rename renameat renameat2 link linkat symlink symlinkat
chmod fchmod fchmodat chown fchown lchown fchownat chown32 fchown32 lchown32
utime utimes utimensat utimensat_time64 futimesat mknod mknodat umask
getxattr lgetxattr fgetxattr setxattr lsetxattr fsetxattr listxattr llistxattr flistxattr
removexattr lremovexattr fremovexattr inotify_init inotify_init1 inotify_add_watch inotify_rm_watch
brk mmap mmap2 munmap mremap mprotect madvise mlock mlock2 munlock mlockall munlockall mincore msync
membarrier memfd_create pkey_alloc pkey_free pkey_mprotect get_mempolicy
execve execveat exit exit_group fork vfork wait4 waitid waitpid kill tkill tgkill
getpid getppid gettid getpgid setpgid getpgrp getsid setsid
getuid geteuid getgid getegid getuid32 geteuid32 getgid32 getegid32 getresuid getresgid getresuid32 getresgid32
getgroups getgroups32 setuid setgid setreuid setregid setresuid setresgid setgroups setfsuid setfsgid
setuid32 setgid32 setreuid32 setregid32 setresuid32 setresgid32 setgroups32 setfsuid32 setfsgid32
capget capset prctl arch_prctl personality set_tid_address set_robust_list get_robust_list rseq
set_thread_area get_thread_area futex futex_time64 futex_waitv
getrlimit setrlimit ugetrlimit prlimit64 getrusage times sched_yield sched_getaffinity sched_setaffinity
sched_getparam sched_setparam sched_getscheduler sched_setscheduler sched_get_priority_max
sched_get_priority_min sched_rr_get_interval sched_rr_get_interval_time64 sched_getattr sched_setattr
getpriority setpriority ioprio_get ioprio_set uname sysinfo getrandom getcpu chroot seccomp
rt_sigaction rt_sigprocmask rt_sigreturn rt_sigsuspend rt_sigpending rt_sigtimedwait rt_sigtimedwait_time64
rt_sigqueueinfo rt_tgsigqueueinfo sigaltstack sigreturn sigaction sigprocmask sigsuspend sigpending
signal signalfd signalfd4 pause alarm restart_syscall
nanosleep clock_nanosleep clock_nanosleep_time64 clock_gettime clock_gettime64 clock_getres
clock_getres_time64 gettimeofday time getitimer setitimer timer_create timer_settime timer_settime64
timer_gettime timer_gettime64 timer_getoverrun timer_delete timerfd_create timerfd_settime
timerfd_settime64 timerfd_gettime timerfd_gettime64
select _newselect pselect6 pselect6_time64 poll ppoll ppoll_time64 epoll_create epoll_create1 epoll_ctl
epoll_wait epoll_pwait epoll_pwait2 eventfd eventfd2
io_setup io_destroy io_submit io_cancel io_getevents io_pgetevents io_pgetevents_time64
socket socketpair bind listen accept accept4 connect getsockname getpeername getsockopt setsockopt
sendto recvfrom send recv sendmsg recvmsg sendmmsg recvmmsg recvmmsg_time64 shutdown socketcall
shmget shmat shmdt shmctl msgget msgsnd msgrcv msgctl semget semop semtimedop semtimedop_time64 semctl ipc
mq_open mq_unlink mq_timedsend mq_timedsend_time64 mq_timedreceive mq_timedreceive_time64 mq_notify mq_getsetattr
`.split(/\s+/).filter(Boolean);

/** The CLONE_NEW* flags (ns, cgroup, uts, ipc, user, pid, net): clone may not create namespaces. */
const CLONE_NAMESPACE_FLAGS = 0x7e020000;
const ENOSYS = 38;
const EPERM = 1;

/** Seccomp architectures for a Node `process.arch` value (native plus its compat ABIs). */
export function seccompArchitectures(arch: string = process.arch): string[] {
  switch (arch) {
    case 'x64':
      return ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'];
    case 'arm64':
      return ['SCMP_ARCH_AARCH64', 'SCMP_ARCH_ARM'];
    default:
      throw new Error(`seccomp: no default profile for architecture ${arch}`);
  }
}

/**
 * Corral's RuntimeDefault seccomp profile: deny (EPERM) by default, allow a broad list.
 * clone3 answers ENOSYS so that libc falls back to clone, whose flags can be checked.
 */
/**
 * Syscalls the default profile also allows when the process holds the capability that
 * already governs them (the kernel still checks it): without the capability they stay
 * refused by seccomp too, with it a container does what its capabilities promise.
 */
const SECCOMP_CAPABILITY_SYSCALLS: Record<string, readonly string[]> = {
  CAP_SYS_ADMIN: ['sethostname', 'setdomainname', 'mount', 'umount', 'umount2', 'unshare', 'setns', 'pivot_root', 'name_to_handle_at', 'quotactl', 'syslog', 'fanotify_init'],
  CAP_SYS_TIME: ['settimeofday', 'stime', 'clock_settime', 'clock_settime64', 'adjtimex', 'clock_adjtime', 'clock_adjtime64'],
  CAP_SYS_PTRACE: ['ptrace', 'process_vm_readv', 'process_vm_writev', 'kcmp', 'pidfd_getfd'],
  CAP_SYS_BOOT: ['reboot'],
  CAP_SYS_MODULE: ['init_module', 'finit_module', 'delete_module'],
  CAP_SYS_PACCT: ['acct'],
  CAP_SYS_NICE: ['set_mempolicy', 'mbind', 'migrate_pages', 'move_pages'],
};

export function defaultSeccompProfile(arch: string = process.arch, capabilities: readonly string[] = []): OciSeccomp {
  const byCapability = capabilities.flatMap((c) => SECCOMP_CAPABILITY_SYSCALLS[c] ?? []);
  const sysAdmin = capabilities.includes('CAP_SYS_ADMIN');
  return {
    defaultAction: 'SCMP_ACT_ERRNO',
    defaultErrnoRet: EPERM,
    architectures: seccompArchitectures(arch),
    syscalls: [
      { names: [...new Set([...SECCOMP_ALLOWED_SYSCALLS, ...byCapability])], action: 'SCMP_ACT_ALLOW' },
      // With CAP_SYS_ADMIN, clone may make namespaces too.
      sysAdmin
        ? { names: ['clone'], action: 'SCMP_ACT_ALLOW' }
        : {
            names: ['clone'],
            action: 'SCMP_ACT_ALLOW',
            args: [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: 'SCMP_CMP_MASKED_EQ' }],
          },
      { names: ['clone3'], action: 'SCMP_ACT_ERRNO', errnoRet: ENOSYS },
    ],
  };
}

const GO_ARCH_TO_NODE: Record<string, string> = { amd64: 'x64', arm64: 'arm64', x86_64: 'x64', aarch64: 'arm64' };

/**
 * Turns a Localhost profile (the JSON format kubelet hands out: OCI-like, possibly
 * with `archMap`, `name` and `includes`/`excludes` conditions) into an OCI seccomp
 * section for this machine. Conditions are evaluated against the architecture and the
 * sandbox's capabilities; kernel-version conditions are assumed met.
 */
export function seccompFromProfile(profile: object, capabilities: readonly string[], arch: string = process.arch): OciSeccomp {
  const p = profile as Record<string, unknown>;
  if (typeof p.defaultAction !== 'string' || !p.defaultAction.startsWith('SCMP_ACT_')) {
    throw new Error('seccomp profile: defaultAction is missing or not an SCMP_ACT_* action');
  }
  const out: OciSeccomp = { defaultAction: p.defaultAction as SeccompAction };
  if (typeof p.defaultErrnoRet === 'number') out.defaultErrnoRet = p.defaultErrnoRet;
  if (Array.isArray(p.flags)) out.flags = p.flags.map(String);
  if (typeof p.listenerPath === 'string') out.listenerPath = p.listenerPath;
  if (typeof p.listenerMetadata === 'string') out.listenerMetadata = p.listenerMetadata;

  if (Array.isArray(p.architectures) && p.architectures.length > 0) {
    out.architectures = p.architectures.map(String);
  } else if (Array.isArray(p.archMap)) {
    const native = seccompArchitectures(arch)[0];
    for (const entry of p.archMap as Array<Record<string, unknown>>) {
      if (entry?.architecture === native) {
        const subs = Array.isArray(entry.subArchitectures) ? entry.subArchitectures.map(String) : [];
        out.architectures = [native, ...subs];
      }
    }
  }

  const caps = new Set(capabilities);
  const nodeArch = (a: unknown) => GO_ARCH_TO_NODE[String(a)] ?? String(a);
  const condition = (c: unknown, want: boolean): boolean => {
    // want=true: every listed condition must hold (includes); want=false: none may hold (excludes).
    if (c === undefined || c === null || typeof c !== 'object') return true;
    const cond = c as Record<string, unknown>;
    const checks: boolean[] = [];
    if (Array.isArray(cond.arches) && cond.arches.length) checks.push(cond.arches.map(nodeArch).includes(arch));
    if (Array.isArray(cond.caps) && cond.caps.length) {
      const has = cond.caps.map((x) => String(x)).map((x) => (x.startsWith('CAP_') ? x : `CAP_${x}`));
      checks.push(want ? has.every((x) => caps.has(x)) : has.some((x) => caps.has(x)));
    }
    if (checks.length === 0) return true;
    return want ? checks.every(Boolean) : !checks.some(Boolean);
  };

  const rules: OciSeccompSyscall[] = [];
  if (Array.isArray(p.syscalls)) {
    p.syscalls.forEach((raw, i) => {
      const s = raw as Record<string, unknown>;
      if (!condition(s.includes, true) || !condition(s.excludes, false)) return;
      const names = Array.isArray(s.names) ? s.names.map(String) : typeof s.name === 'string' ? [s.name] : [];
      if (names.length === 0) throw new Error(`seccomp profile: syscalls[${i}] names no syscall`);
      if (typeof s.action !== 'string' || !s.action.startsWith('SCMP_ACT_')) {
        throw new Error(`seccomp profile: syscalls[${i}]: action is missing or not an SCMP_ACT_* action`);
      }
      const rule: OciSeccompSyscall = { names, action: s.action as SeccompAction };
      if (typeof s.errnoRet === 'number') rule.errnoRet = s.errnoRet;
      if (Array.isArray(s.args) && s.args.length) rule.args = s.args as OciSeccompArg[];
      rules.push(rule);
    });
  }
  out.syscalls = rules;
  return out;
}

// ---------------------------------------------------------------------------
// Validators and small helpers
// ---------------------------------------------------------------------------

/** Turns `net/ipv4/ip_forward` into `net.ipv4.ip_forward` (a name may use either separator). */
export function normalizeSysctlName(name: string): string {
  return name.includes('/') ? name.replace(/\//g, '.') : name;
}

export type SysctlNamespace = 'ipc' | 'net';

/** The namespace the kernel scopes a sysctl to, or null when it is node-wide. */
export function sysctlNamespace(name: string): SysctlNamespace | null {
  const n = normalizeSysctlName(name);
  if (/^kernel\.(shm|msg)[a-z_]*$/.test(n)) return 'ipc';
  if (n === 'kernel.sem' || n === 'kernel.sem_next_id') return 'ipc';
  if (n.startsWith('fs.mqueue.')) return 'ipc';
  if (n.startsWith('net.')) return 'net';
  return null;
}

/**
 * Accepts only sysctls the kernel scopes to a namespace the sandbox owns: IPC ones
 * (kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*) need a private IPC namespace,
 * net.* a private network namespace. Throws an Error naming the offending sysctl.
 */
export function validateSysctls(sysctls: Record<string, string>, opts: { hostNetwork: boolean; hostIpc: boolean }): void {
  for (const [name, value] of Object.entries(sysctls)) {
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.\/-]*$/.test(name) || name.includes('..')) {
      throw new Error(`sysctl "${name}": not a valid sysctl name`);
    }
    if (typeof value !== 'string' || /[\n\0]/.test(value)) {
      throw new Error(`sysctl "${name}": the value must be a single line of text`);
    }
    const ns = sysctlNamespace(name);
    if (ns === null) {
      throw new Error(`sysctl "${name}" is not namespaced: it would change the whole node, so a pod may not set it`);
    }
    if (ns === 'ipc' && opts.hostIpc) {
      throw new Error(`sysctl "${name}" belongs to the IPC namespace and the pod uses the host's IPC namespace`);
    }
    if (ns === 'net' && opts.hostNetwork) {
      throw new Error(`sysctl "${name}" belongs to the network namespace and the pod uses the host's network`);
    }
  }
}

/**
 * The sysctls a pod gets unless it asks otherwise: with its own network namespace,
 * unprivileged ports and ICMP echo sockets are open to all users. The CRI's values win.
 */
export function withDefaultSysctls(sysctls: Record<string, string>, opts: { hostNetwork: boolean }): Record<string, string> {
  if (opts.hostNetwork) return { ...sysctls };
  const given = new Set(Object.keys(sysctls).map(normalizeSysctlName));
  const out: Record<string, string> = {};
  if (!given.has('net.ipv4.ip_unprivileged_port_start')) out['net.ipv4.ip_unprivileged_port_start'] = '0';
  if (!given.has('net.ipv4.ping_group_range')) out['net.ipv4.ping_group_range'] = '0 2147483647';
  return { ...out, ...sysctls };
}

/** The oom_score_adj to apply: the request, kept within [-1000, 1000] and not below `floor`. */
export function clampOomScoreAdj(requested: number, floor: number): number {
  const r = Math.trunc(Number.isFinite(requested) ? requested : 0);
  const f = Math.max(-1000, Math.min(1000, Math.trunc(floor)));
  return Math.max(f, Math.min(1000, Math.max(-1000, r)));
}

/**
 * The cgroupsPath of a sandbox under the cgroupfs driver: `<cgroup_parent>/<id>`.
 * An empty parent puts it under `defaultParent`. A systemd slice parent is refused,
 * as are relative components that would climb out of the parent.
 */
export function cgroupfsCgroupsPath(cgroupParent: string, id: string, defaultParent = '/corral'): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id)) throw new Error(`cgroup: "${id}" is not a usable container id`);
  const parent = cgroupParent.trim() === '' ? defaultParent : cgroupParent.trim();
  if (parent.endsWith('.slice')) {
    throw new Error(`cgroup parent "${parent}" is a systemd slice, but Corral uses the cgroupfs driver (set kubelet's cgroupDriver to cgroupfs)`);
  }
  if (parent.split('/').some((part) => part === '..' || part === '.')) {
    throw new Error(`cgroup parent "${parent}" may not contain "." or ".." components`);
  }
  return path.posix.join('/', parent, id);
}

// ---------------------------------------------------------------------------
// The sandbox spec
// ---------------------------------------------------------------------------

export type SeccompChoice = { type: 'unconfined' } | { type: 'runtimeDefault' } | { type: 'localhost'; profile: object };

export interface SandboxSpecInput {
  sandboxId: string;
  name: string;
  namespace: string;
  uid: string;
  attempt: number;
  hostname: string;
  logDirectory: string;
  /** The sandbox image; '' = Corral's built-in pause rootfs. */
  imageName: string;
  /** null = host network (no network namespace entry, no UTS namespace). */
  netnsPath: string | null;
  hostPid: boolean;
  hostIpc: boolean;
  /** POD-level PID namespace: the pause gets a private one either way; app containers join it. */
  sharedPidNamespace: boolean;
  privileged: boolean;
  readOnlyRootfs: boolean;
  runAsUser?: number;
  runAsGroup?: number;
  supplementalGroups?: number[];
  cgroupsPath: string;
  sysctls: Record<string, string>;
  /** Already clamped by the caller (clampOomScoreAdj). */
  oomScoreAdj: number;
  noNewPrivileges: boolean;
  seccomp: SeccompChoice;
  resolvConfPath: string;
  hostnamePath: string;
  hostsPath: string;
  /** The pod's tmpfs shm dir; null = host /dev/shm with host IPC, else a private tmpfs. */
  shmPath: string | null;
  /** Extra annotations (e.g. pod annotations passed through); Corral's own keys win. */
  annotations: Record<string, string>;
  cpuShares?: number;
  /**
   * The capabilities the daemon itself may hand out (its bounding set; see
   * currentCapabilities in runtime.ts). Privileged means "all of these"; absent = all Linux has.
   * The default set is trimmed to it too, since a runtime cannot grant what it lacks.
   */
  availableCapabilities?: readonly string[];
}

const SHM_TMPFS_OPTIONS = ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'];

/** The mounts every container of a pod gets: proc, dev, sys, the pod's shm and its hostname, hosts and resolv.conf. */
export function podMounts(input: Pick<SandboxSpecInput, 'shmPath' | 'hostIpc' | 'privileged' | 'resolvConfPath' | 'hostnamePath' | 'hostsPath'>): OciMount[] {
  const roBind = (destination: string, source: string): OciMount => ({
    destination,
    type: 'bind',
    source,
    options: ['rbind', 'ro', 'nosuid', 'nodev', 'noexec'],
  });
  let shm: OciMount;
  if (input.shmPath !== null) shm = roBind('/dev/shm', input.shmPath);
  else if (input.hostIpc) shm = roBind('/dev/shm', '/dev/shm');
  else shm = { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: SHM_TMPFS_OPTIONS };
  return [
    { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', input.privileged ? 'rw' : 'ro'] },
    shm,
    roBind('/etc/resolv.conf', input.resolvConfPath),
    roBind('/etc/hostname', input.hostnamePath),
    roBind('/etc/hosts', input.hostsPath),
  ];
}

export function seccompFor(input: Pick<SandboxSpecInput, 'privileged' | 'seccomp'>, caps: readonly string[]): OciSeccomp | undefined {
  if (input.privileged) return undefined;
  switch (input.seccomp.type) {
    case 'unconfined':
      return undefined;
    case 'runtimeDefault':
      return defaultSeccompProfile(process.arch, caps);
    case 'localhost':
      return seccompFromProfile(input.seccomp.profile, caps);
  }
}

/** Builds the config.json of a pod's pause container. Pure: the same input gives the same spec. */
export function buildSandboxSpec(input: SandboxSpecInput): OciSpec {
  const hostNetwork = input.netnsPath === null;
  const wanted = input.privileged ? ALL_CAPABILITIES : DEFAULT_CAPABILITIES;
  const available = input.availableCapabilities ? new Set(input.availableCapabilities) : null;
  const caps = available ? wanted.filter((c) => available.has(c)) : [...wanted];
  const uid = input.runAsUser ?? 0;
  const gid = input.runAsGroup ?? 0;
  const user: OciUser = { uid, gid };
  if (input.supplementalGroups && input.supplementalGroups.length > 0) user.additionalGids = [...input.supplementalGroups];

  const namespaces: OciNamespace[] = [];
  if (!input.hostPid) namespaces.push({ type: 'pid' });
  if (!input.hostIpc) namespaces.push({ type: 'ipc' });
  if (!hostNetwork) namespaces.push({ type: 'uts' });
  namespaces.push({ type: 'mount' });
  if (!hostNetwork) namespaces.push({ type: 'network', path: input.netnsPath! });

  const image = input.imageName === '' ? BUILTIN_SANDBOX_IMAGE_NAME : input.imageName;
  const annotations: Record<string, string> = {
    ...input.annotations,
    [Annotations.containerType]: CONTAINER_TYPE_SANDBOX,
    [Annotations.sandboxId]: input.sandboxId,
    [Annotations.sandboxName]: input.name,
    [Annotations.sandboxNamespace]: input.namespace,
    [Annotations.sandboxUid]: input.uid,
    [Annotations.sandboxLogDirectory]: input.logDirectory,
    [Annotations.imageName]: image,
    [Annotations.podSandboxImageName]: image,
    [Annotations.crioContainerType]: CONTAINER_TYPE_SANDBOX,
    [Annotations.crioSandboxId]: input.sandboxId,
  };

  const linux: OciLinux = {
    namespaces,
    resources: {
      devices: [{ allow: input.privileged, access: 'rwm' }],
      cpu: { shares: input.cpuShares ?? DEFAULT_SANDBOX_CPU_SHARES },
    },
    cgroupsPath: input.cgroupsPath,
    sysctl: { ...input.sysctls },
  };
  if (!input.privileged) {
    linux.maskedPaths = [...DEFAULT_MASKED_PATHS];
    linux.readonlyPaths = [...DEFAULT_READONLY_PATHS];
  }
  const seccomp = seccompFor(input, caps);
  if (seccomp) linux.seccomp = seccomp;

  const spec: OciSpec = {
    ociVersion: OCI_VERSION,
    process: {
      terminal: false,
      user,
      args: ['/pause'],
      env: [DEFAULT_PATH_ENV],
      cwd: '/',
      capabilities: { bounding: [...caps], effective: [...caps], permitted: [...caps] },
      noNewPrivileges: input.noNewPrivileges,
      oomScoreAdj: input.oomScoreAdj,
    },
    // The pause rootfs is always read-only; readOnlyRootfs is accepted for symmetry with app containers.
    root: { path: 'rootfs', readonly: true },
    mounts: podMounts(input),
    annotations,
    linux,
  };
  if (!hostNetwork && input.hostname !== '') spec.hostname = input.hostname;
  return spec;
}
