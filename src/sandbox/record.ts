/** What Corral remembers of one pod sandbox, on disk and in memory. */
import type { PodSandboxConfig } from '../cri-api/types.js';
import type { PodInitResources } from './pod-init.js';

export type SandboxState = 'creating' | 'ready' | 'notready';

/**
 * How the pod's namespaces are held: by a pause container (OCI runtime), by bind mounts
 * alone, or by bind mounts plus Corral's own pause as the init of a shared PID namespace.
 */
export type InfraMode = 'pause' | 'pinned' | 'init';

/** network-first: CNI before the sandbox container exists; start-first: after it started. */
export type NetworkOrder = 'network-first' | 'start-first';

export interface PodMetadata {
  name: string;
  uid: string;
  namespace: string;
  attempt: number;
}

export interface SandboxNetwork {
  podIp: string;
  additionalIps: string[];
  /** The CNI results per attachment, as cached (1.1.0 shape). */
  attachments: { networkName: string; ifName: string; result: unknown }[];
}

/**
 * Done-markers. Every side effect is recorded as intended before it happens and as
 * undone after it was undone, so Stop, Remove and the restart sweep know what is left.
 */
export interface SandboxResources {
  /** Pinned namespace files (net, and ipc/uts in pinned mode) that may exist. */
  pins: string[];
  /** CNI ADD was attempted and no successful DEL followed. */
  cniAttached: boolean;
  /** A tmpfs may be mounted at this path. */
  shmMount: string | null;
  /** The OCI runtime may know a container with the sandbox ID. */
  container: boolean;
  /** Corral's own pause (infra mode 'init') may run: its pidfile and cgroups. Absent in older records. */
  podInit?: PodInitResources | null;
  /**
   * A sandbox image from the image store: its overlay root filesystem may be mounted at
   * target, and its layers (chain IDs) are in use. Null for the built-in sandbox image.
   */
  rootfs?: { target: string; chain: string[] } | null;
}

export interface SandboxRecord {
  version: 1;
  id: string;
  name: string;
  metadata: PodMetadata;
  /** The PodSandboxConfig as received (camelCase), kept for status and containers. */
  config: PodSandboxConfig;
  runtimeHandler: string;
  infraMode: InfraMode;
  networkOrder: NetworkOrder;
  hostNetwork: boolean;
  privileged: boolean;
  netnsPath: string | null;
  state: SandboxState;
  /** Nanoseconds since the epoch, as a decimal string (int64 on the wire). */
  createdAt: string;
  updatedAt?: string;
  network: SandboxNetwork | null;
  resources: SandboxResources;
  /** The pause process, to tell cheaply whether it still runs. */
  pid: number;
  pidStartTime: string;
  /** Milliseconds per step of the last Run / Stop. */
  timings: Record<string, number>;
  /** Why the sandbox is not ready, when something went wrong. */
  lastError?: string;
}
