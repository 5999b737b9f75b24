/**
 * planSandbox: everything RunPodSandbox can refuse, decided before it touches the host.
 * Pure (no I/O): the service runs the plan's steps; a bad input never gets as far as a
 * record, a pin or a CNI call.
 */
import path from 'node:path';
import type { CorralConfig, RuntimeHandlerConfig } from '../config/config.js';
import { CorralError, invalidArgument } from '../errors.js';
import { bandwidthFromAnnotations, type BandwidthLimits } from '../network/cni/capabilities.js';
import {
  infraMode,
  namespaceChoice,
  namespacePlan,
  networkOrder,
  podHostname,
  podMetadata,
  podPins,
  selectHandler,
  type NamespaceChoice,
  type NamespacePlan,
  type PodPins,
} from './options.js';
import type { InfraMode, NetworkOrder, PodMetadata } from './record.js';
import type { PodSandboxConfig } from '../cri-api/types.js';
import { isRunscHandler } from '../oci/runsc.js';

export interface SandboxPlan {
  metadata: PodMetadata;
  annotations: Record<string, string>;
  ns: NamespaceChoice;
  hostNetwork: boolean;
  hostIpc: boolean;
  handler: RuntimeHandlerConfig;
  order: NetworkOrder;
  mode: InfraMode;
  /** The pod's sysctls, validated against its namespaces, with the runtime's defaults. */
  sysctls: Record<string, string>;
  logDirectory: string;
  hostname: string;
  /** Who holds each namespace, and the pins to make (each with the sysctls of its namespace). */
  namespaces: NamespacePlan;
  pins: PodPins;
  /** The pod's own /dev/shm tmpfs; null with host IPC. */
  shmPath: string | null;
  /** From the bandwidth annotations, for CNI; undefined when none is set or no CNI is attached. */
  bandwidth: BandwidthLimits | undefined;
}

export interface PlanInputs {
  /** The pod's state folder (pins of IPC/UTS, shm) and its netns path if it gets one. */
  stateDir: string;
  netnsPath: string;
  nodeHostname: string;
  /** Validates the pod's sysctls against its namespaces (throws with the reason) and adds the runtime's defaults. */
  prepareSysctls: (sysctls: Record<string, string>, opts: { hostNetwork: boolean; hostIpc: boolean }) => Record<string, string>;
}

/** Decides a pod's shape from its config, or refuses it (INVALID_ARGUMENT, FAILED_PRECONDITION). */
export function planSandbox(config: PodSandboxConfig, requestedHandler: string, cfg: Pick<CorralConfig, 'runtimes' | 'defaultRuntime' | 'dropInfraContainer'> & { sandboxImage?: string }, inputs: PlanInputs): SandboxPlan {
  const metadata = podMetadata(config);
  const annotations: Record<string, string> = config.annotations ?? {};
  const ns = namespaceChoice(config);
  const hostNetwork = ns.network === 'NODE';
  const hostIpc = ns.ipc === 'NODE';
  const handler = selectHandler(requestedHandler, annotations, ns, cfg);
  const order = networkOrder(annotations);
  // runsc (network=sandbox) gives a spec without a netns a fresh, empty one: the pod would silently have no network.
  if (hostNetwork && isRunscHandler(handler)) {
    throw invalidArgument(`runtime handler "${handler.name}" (gVisor) cannot run host-network pods: runsc gives the sandbox an empty network namespace of its own, not the host's`);
  }
  // gVisor copies the namespace's interfaces into its own network stack at `start`; wired later, the pod would have none.
  if (order === 'start-first' && isRunscHandler(handler)) {
    throw invalidArgument(`runtime handler "${handler.name}" (gVisor) takes the pod's network interfaces when the sandbox starts, so the network cannot be wired after start: drop the start-first annotation (network-first is the default)`);
  }
  // Corral's own pause unless the operator chose a sandbox image (only the OCI path runs one).
  const mode = infraMode(handler, ns, cfg.dropInfraContainer, !cfg.sandboxImage);
  let sysctls: Record<string, string>;
  try {
    sysctls = inputs.prepareSysctls(config.linux?.sysctls ?? {}, { hostNetwork, hostIpc });
  } catch (e) {
    throw e instanceof CorralError ? e : invalidArgument((e as Error).message);
  }
  const logDirectory: string = config.logDirectory ?? '';
  if (logDirectory && !path.isAbsolute(logDirectory)) throw invalidArgument(`log_directory must be an absolute path, got "${logDirectory}"`);
  const hostname = podHostname(config, hostNetwork, inputs.nodeHostname);
  // Which namespaces are pinned follows from the pod's shape alone (namespacePlan), and
  // each sysctl goes to the holder of its namespace: pins here, the pause in its spec.
  const namespaces = namespacePlan(ns, mode);
  const pins = podPins(namespaces, {
    netnsPath: namespaces.network === 'pin' ? inputs.netnsPath : null,
    stateDir: inputs.stateDir,
    hostname,
    sysctls,
  });
  // Only a pod attached to CNI is shaped (host-network pods never were).
  let bandwidth: BandwidthLimits | undefined;
  if (!hostNetwork) {
    try {
      bandwidth = bandwidthFromAnnotations(annotations);
    } catch (e) {
      throw invalidArgument(`pod bandwidth annotation: ${(e as Error).message}`);
    }
  }
  return {
    metadata,
    annotations,
    ns,
    hostNetwork,
    hostIpc,
    handler,
    order,
    mode,
    sysctls,
    logDirectory,
    hostname,
    namespaces,
    pins,
    shmPath: hostIpc ? null : path.join(inputs.stateDir, 'shm'),
    bandwidth,
  };
}
