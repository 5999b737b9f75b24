/**
 * The pure builder of the OCI runtime spec (config.json) of a pod's sandbox (pause)
 * container. Nothing here does I/O.
 */
import { ALL_CAPABILITIES, DEFAULT_CAPABILITIES } from './capabilities.js';
import { CONTAINER_TYPE_SANDBOX, criAnnotations } from './annotations.js';
import { OCI_VERSION, type OciLinux, type OciNamespace, type OciSpec, type OciUser } from './oci-types.js';
import { DEFAULT_MASKED_PATHS, DEFAULT_PATH_ENV, DEFAULT_READONLY_PATHS, podMounts, withCgroupNamespace } from './pod-defaults.js';
import { seccompFor, type SeccompChoice } from './seccomp.js';

/** The image name recorded for Corral's built-in pause rootfs. */
export const BUILTIN_SANDBOX_IMAGE_NAME = 'corral.local/pause:builtin';
export const DEFAULT_SANDBOX_CPU_SHARES = 2;
/** What a sandbox asks for before clamping to what the daemon may grant. */
export const DEFAULT_SANDBOX_OOM_SCORE_ADJ = -998;

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
  /** /sys/fs/cgroup is cgroup2 (hostIsCgroupV2): the pause's cgroup mount then needs a cgroup namespace. */
  hostCgroupV2: boolean;
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
  const annotations = criAnnotations(input.annotations, {
    containerType: CONTAINER_TYPE_SANDBOX,
    sandboxId: input.sandboxId,
    sandboxName: input.name,
    sandboxNamespace: input.namespace,
    sandboxUid: input.uid,
    sandboxLogDirectory: input.logDirectory,
    imageName: image,
  });

  const linux: OciLinux = {
    namespaces: withCgroupNamespace(namespaces, input),
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
