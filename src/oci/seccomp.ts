/**
 * Seccomp sections of the OCI spec: Corral's RuntimeDefault profile, Localhost profiles
 * translated for this machine, and the choice between them. Pure: nothing here does I/O.
 */
import type { OciSeccomp, OciSeccompArg, OciSeccompSyscall, SeccompAction } from './oci-types.js';

/** What a sandbox or container asked for (see seccomp-choice.ts for reading it from the CRI). */
export type SeccompChoice = { type: 'unconfined' } | { type: 'runtimeDefault' } | { type: 'localhost'; profile: object };

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

/**
 * Corral's RuntimeDefault seccomp profile: deny (EPERM) by default, allow a broad list.
 * clone3 answers ENOSYS so that libc falls back to clone, whose flags can be checked.
 */
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

/** The seccomp section for a process with `caps`: none when privileged or unconfined. */
export function seccompFor(input: { privileged: boolean; seccomp: SeccompChoice }, caps: readonly string[]): OciSeccomp | undefined {
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
