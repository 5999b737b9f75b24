/**
 * The config.json of an application container: pure functions from the CRI
 * ContainerConfig, the image config and what the pod sandbox holds (its namespaces,
 * files and cgroup parent) to an OCI spec, so every rule can be unit-tested without root.
 */
import path from 'node:path';
import { CONTAINER_TYPE_CONTAINER, criAnnotations } from './annotations.js';
import { ALL_CAPABILITIES, DEFAULT_CAPABILITIES } from './capabilities.js';
import { OCI_VERSION, type OciLinux, type OciMount, type OciNamespace, type OciSpec, type OciUser } from './oci-types.js';
import { DEFAULT_MASKED_PATHS, DEFAULT_PATH_ENV, DEFAULT_READONLY_PATHS, podMounts, withCgroupNamespace } from './pod-defaults.js';
import { seccompFor, type SeccompChoice } from './seccomp.js';
import { unescapeMountinfo } from '../util/mounts.js';
import type { MountPropagation } from '../cri-api/types.js';

/** The parts of the image config a container's process comes from. */
export interface ImageProcessConfig {
  Entrypoint?: string[] | null;
  Cmd?: string[] | null;
  Env?: string[] | null;
  WorkingDir?: string;
  User?: string;
  StopSignal?: string;
}

/**
 * Kubernetes' rule: `command` replaces the image entrypoint (and drops its Cmd); `args`
 * alone replace the image Cmd; neither = entrypoint + Cmd.
 */
export function containerArgs(command: readonly string[], args: readonly string[], image: ImageProcessConfig): string[] {
  const entrypoint = image.Entrypoint ?? [];
  const cmd = image.Cmd ?? [];
  if (command.length > 0) return [...command, ...args];
  if (args.length > 0) return [...entrypoint, ...args];
  return [...entrypoint, ...cmd];
}

/** A CRI KeyValue's value (bytes in Corral's proto) as text: UTF-8, whether a Buffer or its JSON form from a stored record. */
export function envValueText(value: string | Buffer | { data: number[] }): string {
  if (typeof value === 'string') return value;
  return (Buffer.isBuffer(value) ? value : Buffer.from(value.data)).toString('utf8');
}

/** Image Env, then the container's envs (a later key replaces an earlier one in place); PATH defaulted. */
export function containerEnv(imageEnv: readonly string[], envs: readonly { key: string; value: string | Buffer | { data: number[] } }[]): string[] {
  const order: string[] = [];
  const values = new Map<string, string>();
  const set = (key: string, value: string) => {
    if (!values.has(key)) order.push(key);
    values.set(key, value);
  };
  for (const e of imageEnv) {
    const eq = e.indexOf('=');
    set(eq < 0 ? e : e.slice(0, eq), eq < 0 ? '' : e.slice(eq + 1));
  }
  for (const e of envs) set(e.key, envValueText(e.value));
  if (!values.has('PATH')) set('PATH', DEFAULT_PATH_ENV.slice('PATH='.length));
  return order.map((k) => `${k}=${values.get(k)}`);
}

/** Capabilities: the default (or, privileged, every available) set, with CRI add/drop ("ALL" allowed). */
export function containerCapabilities(privileged: boolean, add: readonly string[], drop: readonly string[], available?: readonly string[]): string[] {
  const norm = (c: string) => (c.toUpperCase().startsWith('CAP_') ? c.toUpperCase() : `CAP_${c.toUpperCase()}`);
  const avail = available ? new Set(available) : null;
  const within = (caps: readonly string[]) => (avail ? caps.filter((c) => avail.has(c)) : [...caps]);
  if (privileged) return within(ALL_CAPABILITIES);
  let caps = new Set<string>(DEFAULT_CAPABILITIES);
  if (add.some((c) => c.toUpperCase() === 'ALL')) caps = new Set(ALL_CAPABILITIES);
  else add.map(norm).forEach((c) => caps.add(c));
  if (drop.some((c) => c.toUpperCase() === 'ALL')) caps.clear();
  else drop.map(norm).forEach((c) => caps.delete(c));
  return within([...caps]);
}

/**
 * The container's log file: the CRI log_path beneath the pod's log_directory, or ''
 * when either is empty (no CRI log). containerd joins the two as given, so a log_path
 * of `../x` or `/x` would let a client make the runtime (root) create and write files
 * anywhere; here log_path must be a relative path of plain names that stays beneath.
 */
export function containerLogPath(logDirectory: string, logPath: unknown): string {
  if (logPath === undefined || logPath === null || logPath === '') return '';
  if (typeof logPath !== 'string') throw new Error('log_path must be a string');
  if (!logDirectory) return '';
  if (path.isAbsolute(logPath)) throw new Error(`log_path "${logPath}" must be relative to the pod's log_directory, not absolute`);
  if (logPath.includes('\0')) throw new Error('log_path must not contain a NUL byte');
  const parts = logPath.split('/');
  if (parts.some((p) => p === '..')) throw new Error(`log_path "${logPath}" must not contain "..": the log file stays beneath the pod's log_directory ${logDirectory}`);
  const full = path.join(logDirectory, logPath);
  const rel = path.relative(logDirectory, full);
  // Belt and braces: what join made must still be strictly beneath the folder.
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel) || logPath.endsWith('/')) {
    throw new Error(`log_path "${logPath}" does not name a file beneath the pod's log_directory ${logDirectory}`);
  }
  return full;
}

/** How the container joins the pod's namespaces: a path to join, 'new' or 'host'. */
export interface PodNamespaces {
  network: string | 'host';
  ipc: string | 'host';
  uts: string | 'host';
  /** 'new' = a PID namespace of the container's own. */
  pid: string | 'host' | 'new';
}

export interface BindMount {
  containerPath: string;
  hostPath: string;
  readonly: boolean;
  /** CRI MountPropagation: PROPAGATION_PRIVATE (default), _HOST_TO_CONTAINER, _BIDIRECTIONAL; a number the schema does not name is private. */
  propagation?: MountPropagation | number;
}

export interface ContainerSpecInput {
  containerId: string;
  containerName: string;
  sandboxId: string;
  sandboxName: string;
  sandboxNamespace: string;
  sandboxUid: string;
  imageName: string;
  rootfsPath: string;
  args: string[];
  env: string[];
  cwd: string;
  user: OciUser;
  namespaces: PodNamespaces;
  /** /sys/fs/cgroup is cgroup2 (hostIsCgroupV2): the container's cgroup mount then needs a cgroup namespace. */
  hostCgroupV2: boolean;
  privileged: boolean;
  readOnlyRootfs: boolean;
  noNewPrivileges: boolean;
  capabilities: string[];
  seccomp: SeccompChoice;
  cgroupsPath: string;
  oomScoreAdj?: number;
  resources?: { cpuShares?: number; cpuQuota?: number; cpuPeriod?: number; memoryLimitInBytes?: number; cpusetCpus?: string; cpusetMems?: string };
  mounts: BindMount[];
  maskedPaths?: string[];
  readonlyPaths?: string[];
  /** The pod's files and shm, as in the sandbox spec. */
  hostnamePath: string;
  hostsPath: string;
  resolvConfPath: string;
  shmPath: string | null;
  annotations: Record<string, string>;
  /** ContainerConfig.tty: the process gets a terminal (conmon holds its master). */
  terminal?: boolean;
}

function bindOptions(m: BindMount): string[] {
  const opts = ['rbind', m.readonly ? 'ro' : 'rw'];
  if (m.propagation === 'PROPAGATION_BIDIRECTIONAL') opts.push('rshared');
  else if (m.propagation === 'PROPAGATION_HOST_TO_CONTAINER') opts.push('rslave');
  else opts.push('rprivate');
  return opts;
}

export function buildContainerSpec(input: ContainerSpecInput): OciSpec {
  const ns = input.namespaces;
  const namespaces: OciNamespace[] = [{ type: 'mount' }];
  if (ns.pid === 'new') namespaces.push({ type: 'pid' });
  else if (ns.pid !== 'host') namespaces.push({ type: 'pid', path: ns.pid });
  if (ns.ipc !== 'host') namespaces.push({ type: 'ipc', path: ns.ipc });
  if (ns.uts !== 'host') namespaces.push({ type: 'uts', path: ns.uts });
  if (ns.network !== 'host') namespaces.push({ type: 'network', path: ns.network });

  // A mount the kubelet asks for (e.g. its own /etc/hosts) replaces the pod default at that path.
  const userMounts: OciMount[] = input.mounts.map((m) => ({ destination: m.containerPath, type: 'bind', source: m.hostPath, options: bindOptions(m) }));
  const taken = new Set(userMounts.map((m) => m.destination));
  const base = podMounts({
    shmPath: input.shmPath,
    hostIpc: ns.ipc === 'host',
    privileged: input.privileged,
    resolvConfPath: input.resolvConfPath,
    hostnamePath: input.hostnamePath,
    hostsPath: input.hostsPath,
  }).filter((m) => !taken.has(m.destination));

  const linux: OciLinux = {
    namespaces: withCgroupNamespace(namespaces, input),
    resources: { devices: [{ allow: input.privileged, access: 'rwm' }] },
    cgroupsPath: input.cgroupsPath,
  };
  // Mounts can only propagate out of (or into) the container if its root lets them.
  if (input.mounts.some((m) => m.propagation === 'PROPAGATION_BIDIRECTIONAL')) linux.rootfsPropagation = 'rshared';
  else if (input.mounts.some((m) => m.propagation === 'PROPAGATION_HOST_TO_CONTAINER')) linux.rootfsPropagation = 'rslave';
  const r = input.resources;
  if (r) {
    if (r.cpuShares || r.cpuQuota || r.cpuPeriod || r.cpusetCpus || r.cpusetMems) {
      linux.resources!.cpu = {
        ...(r.cpuShares ? { shares: r.cpuShares } : {}),
        ...(r.cpuQuota ? { quota: r.cpuQuota } : {}),
        ...(r.cpuPeriod ? { period: r.cpuPeriod } : {}),
        ...(r.cpusetCpus ? { cpus: r.cpusetCpus } : {}),
        ...(r.cpusetMems ? { mems: r.cpusetMems } : {}),
      };
    }
    if (r.memoryLimitInBytes) linux.resources!.memory = { limit: r.memoryLimitInBytes };
  }
  if (!input.privileged) {
    linux.maskedPaths = input.maskedPaths ?? [...DEFAULT_MASKED_PATHS];
    linux.readonlyPaths = input.readonlyPaths ?? [...DEFAULT_READONLY_PATHS];
  }
  const seccomp = seccompFor({ privileged: input.privileged, seccomp: input.seccomp }, input.capabilities);
  if (seccomp) linux.seccomp = seccomp;

  const caps = input.capabilities;
  return {
    ociVersion: OCI_VERSION,
    process: {
      terminal: input.terminal ?? false,
      user: input.user,
      args: input.args,
      env: input.env,
      cwd: input.cwd || '/',
      capabilities: { bounding: [...caps], effective: [...caps], permitted: [...caps] },
      noNewPrivileges: input.noNewPrivileges,
      ...(input.oomScoreAdj !== undefined ? { oomScoreAdj: input.oomScoreAdj } : {}),
    },
    root: { path: input.rootfsPath, readonly: input.readOnlyRootfs },
    mounts: [...base, ...userMounts],
    annotations: criAnnotations(input.annotations, {
      containerType: CONTAINER_TYPE_CONTAINER,
      sandboxId: input.sandboxId,
      sandboxName: input.sandboxName,
      sandboxNamespace: input.sandboxNamespace,
      sandboxUid: input.sandboxUid,
      containerName: input.containerName,
      imageName: input.imageName,
    }),
    linux,
  };
}

/**
 * The propagation of the mount holding `file`, from /proc/self/mountinfo text: the
 * longest mount point that contains it ('shared', 'slave' or 'private').
 */
export function mountPropagationOf(mountinfo: string, file: string): 'shared' | 'slave' | 'private' {
  let best = '';
  let fields: string[] = [];
  for (const line of mountinfo.split('\n')) {
    const parts = line.split(' ');
    const point = unescapeMountinfo(parts[4] ?? '');
    if (!point) continue;
    const inside = point === '/' || file === point || file.startsWith(`${point}/`);
    if (inside && point.length >= best.length) {
      best = point;
      fields = parts.slice(6, parts.indexOf('-'));
    }
  }
  if (fields.some((f) => f.startsWith('shared:'))) return 'shared';
  if (fields.some((f) => f.startsWith('master:'))) return 'slave';
  return 'private';
}

/**
 * Whether a mount's propagation can work from where its host path lives: bidirectional
 * needs a shared host mount, host-to-container a shared or slave one (as containerd
 * requires). Returns the reason it cannot, or null.
 */
export function propagationProblem(m: BindMount, hostPropagation: 'shared' | 'slave' | 'private'): string | null {
  if (m.propagation === 'PROPAGATION_BIDIRECTIONAL' && hostPropagation !== 'shared') {
    return `mount ${m.containerPath}: bidirectional propagation needs ${m.hostPath} on a shared mount, but its mount is ${hostPropagation} (mount --make-rshared it, as systemd does for /)`;
  }
  if (m.propagation === 'PROPAGATION_HOST_TO_CONTAINER' && hostPropagation === 'private') {
    return `mount ${m.containerPath}: host-to-container propagation needs ${m.hostPath} on a shared or slave mount, but its mount is private (mount --make-rshared it)`;
  }
  return null;
}

/**
 * The user a container runs as. `runAsUser` wins; else the image User ("uid", "uid:gid",
 * "name", "name:group"), names looked up in the container's /etc/passwd and /etc/group
 * (passed as text); the primary group defaults to the passwd entry's.
 */
export function resolveUser(opts: { runAsUser?: number; runAsGroup?: number; runAsUsername?: string; imageUser: string; supplementalGroups?: number[]; passwd: AccountFileText; group: AccountFileText }): OciUser {
  if (opts.runAsGroup !== undefined && opts.runAsUser === undefined && !opts.runAsUsername) {
    throw new Error('run_as_group is set without run_as_user or run_as_username');
  }
  const passwd = parseColonFile(opts.passwd);
  const groups = parseColonFile(opts.group);
  const [userPart = '', groupPart] = (opts.runAsUsername ?? opts.imageUser).split(':');
  let uid: number;
  let gid: number | undefined;
  if (opts.runAsUser !== undefined) {
    uid = opts.runAsUser;
    gid = passwd.find((p) => Number(p[2]) === uid)?.[3] !== undefined ? Number(passwd.find((p) => Number(p[2]) === uid)![3]) : undefined;
  } else if (userPart === '') {
    uid = 0;
    gid = 0;
  } else if (/^\d+$/.test(userPart)) {
    uid = Number(userPart);
    const entry = passwd.find((p) => Number(p[2]) === uid);
    gid = entry ? Number(entry[3]) : undefined;
  } else {
    const entry = passwd.find((p) => p[0] === userPart);
    if (!entry) throw new Error(typeof opts.passwd === 'string' ? `user "${userPart}" is not in the image's /etc/passwd` : `cannot look up user "${userPart}": ${opts.passwd.unreadable}`);
    uid = Number(entry[2]);
    gid = Number(entry[3]);
  }
  if (opts.runAsUser === undefined && groupPart !== undefined && groupPart !== '') {
    if (/^\d+$/.test(groupPart)) gid = Number(groupPart);
    else {
      const g = groups.find((e) => e[0] === groupPart);
      if (!g) throw new Error(typeof opts.group === 'string' ? `group "${groupPart}" is not in the image's /etc/group` : `cannot look up group "${groupPart}": ${opts.group.unreadable}`);
      gid = Number(g[2]);
    }
  }
  if (opts.runAsGroup !== undefined) gid = opts.runAsGroup;
  const user: OciUser = { uid, gid: gid ?? 0 };
  const name = passwd.find((p) => Number(p[2]) === uid)?.[0];
  const member = name ? groups.filter((g) => (g[3] ?? '').split(',').includes(name)).map((g) => Number(g[2])) : [];
  const extra = [...new Set([...member, ...(opts.supplementalGroups ?? [])])].filter((g) => g !== user.gid);
  if (extra.length > 0) user.additionalGids = extra;
  return user;
}

/** An account file's text, or why it could not be read (then it has no entries: numeric IDs still work). */
type AccountFileText = string | { unreadable: string };

function parseColonFile(file: AccountFileText): string[][] {
  if (typeof file !== 'string') return [];
  return file
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.split(':'));
}
