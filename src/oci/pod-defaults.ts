/**
 * What every container of a pod gets unless told otherwise, sandbox and application
 * alike: the pod's mounts, the kernel paths hidden or made read-only, and PATH.
 */
import type { OciMount, OciNamespace } from './oci-types.js';

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

/** Where the pod's files are and which namespaces it shares with the host: what podMounts needs. */
export interface PodMountsInput {
  /** The pod's tmpfs shm dir; null = host /dev/shm with host IPC, else a private tmpfs. */
  shmPath: string | null;
  hostIpc: boolean;
  privileged: boolean;
  resolvConfPath: string;
  hostnamePath: string;
  hostsPath: string;
}

const SHM_TMPFS_OPTIONS = ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'];

/** The mounts every container of a pod gets: proc, dev, sys, its cgroup, the pod's shm and its hostname, hosts and resolv.conf. */
export function podMounts(input: PodMountsInput): OciMount[] {
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
    // The container's own cgroup, so JVMs, Go and Node size themselves from its limits. The OCI
    // runtime bind-mounts each v1 controller's container dir here (on a unified host it mounts
    // cgroup2, rooted at the container by the cgroup namespace of withCgroupNamespace).
    // Read-only unless privileged, with containerd's options.
    { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', input.privileged ? 'rw' : 'ro'] },
    shm,
    roBind('/etc/resolv.conf', input.resolvConfPath),
    roBind('/etc/hostname', input.hostnamePath),
    roBind('/etc/hosts', input.hostsPath),
  ];
}

/**
 * The namespaces plus a cgroup namespace where the /sys/fs/cgroup mount needs one: on a
 * unified (cgroup v2) host the runtime mounts a fresh cgroup2, which shows the host's whole
 * tree unless a cgroup namespace roots it at the container's own cgroup. As containerd does,
 * v1 hosts (the runtime bind-mounts the container's dirs) and privileged containers get none.
 */
export function withCgroupNamespace(namespaces: OciNamespace[], opts: { hostCgroupV2: boolean; privileged: boolean }): OciNamespace[] {
  if (!opts.hostCgroupV2 || opts.privileged || namespaces.some((n) => n.type === 'cgroup')) return namespaces;
  return [...namespaces, { type: 'cgroup' }];
}
