/**
 * What Corral keeps about an application container: the record (durable, in
 * src/store/container-store.ts, next to the writable layer) and, volatile, the bundle,
 * rootfs mount point and conmon files under `<state_dir>/containers/<id>/`.
 */
import type { ContainerConfig, LinuxContainerResources } from '../cri-api/types.js';

/** A Buffer as JSON.stringify writes it: how a bytes field reads back from a record on disk. */
export interface JsonBuffer {
  type: 'Buffer';
  data: number[];
}

/**
 * The ContainerConfig as received (camelCase) and as stored: its one bytes field
 * (envs[].value, bytes in Corral's proto) is a Buffer in memory and a JsonBuffer once the
 * record was read back from disk.
 */
export type StoredContainerConfig = Omit<ContainerConfig, 'envs'> & { envs: { key: string; value: Buffer | JsonBuffer }[] };

export type ContainerState = 'creating' | 'created' | 'running' | 'exited';

export interface ContainerRecord {
  version: 1;
  id: string;
  sandboxId: string;
  /** The displayed name: name_sandboxName_sandboxNamespace_sandboxUid_attempt. */
  name: string;
  /** The reservation key (containerNameKey); records from before it existed reserve `name`. */
  nameKey?: string;
  metadata: { name: string; attempt: number };
  /** The ContainerConfig as received (camelCase); see StoredContainerConfig. */
  config: StoredContainerConfig;
  /** Image ID (config digest) and the reference the container was created from. */
  imageId: string;
  imageRef: string;
  runtimeHandler: string;
  state: ContainerState;
  createdAt: string;
  startedAt: string;
  finishedAt: string;
  exitCode: number;
  reason: string;
  message: string;
  pid: number;
  logPath: string;
  stopSignal: string;
  /** What may exist, each cleared once removed (the same intent discipline as sandboxes). */
  resources: {
    /** Overlay mount point of the root filesystem, and the image layers it uses. */
    rootfs: { target: string; layerDir: string; chain: string[] } | null;
    /** The OCI runtime (and conmon) may know a container with this ID. */
    runtimeContainer: boolean;
  };
  updatedAt?: string;
  /** The Linux resources of the last UpdateContainerResources (CRI form); absent: those of the config. */
  linuxResources?: Partial<LinuxContainerResources>;
}
