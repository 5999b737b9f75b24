/**
 * Pure decisions RunPodSandbox takes from a PodSandboxConfig and the daemon config:
 * no I/O here, so each rule is unit-tested without root.
 */
import type { CorralConfig, RuntimeHandlerConfig } from '../config/config.js';
import path from 'node:path';
import { invalidArgument, failedPrecondition, internalError } from '../errors.js';
import { sysctlNamespace } from '../oci/sysctls.js';
import type { InfraMode, NetworkOrder, PodMetadata } from './record.js';
import type { DNSConfig, PodSandboxConfig, PortMapping } from '../cri-api/types.js';

/** Corral's own per-pod switch for the order of CNI and sandbox start. */
export const NETWORK_ORDER_ANNOTATION = 'io.corral.sandbox.network-order';
/** iSulad's switch: "true" = network first, "false" = sandbox started first. */
export const ISULAD_NETWORK_SETUP_ANNOTATION = 'cri.sandbox.network.setup.v2';
export const UNTRUSTED_WORKLOAD_ANNOTATION = 'io.kubernetes.cri.untrusted-workload';
export const UNTRUSTED_HANDLER = 'untrusted';

export type NamespaceMode = 'POD' | 'CONTAINER' | 'NODE' | 'TARGET';

export interface NamespaceChoice {
  network: NamespaceMode;
  pid: NamespaceMode;
  ipc: NamespaceMode;
}

export function podMetadata(config: PodSandboxConfig): PodMetadata {
  const m = config?.metadata;
  if (!m) throw invalidArgument('sandbox config must include metadata (name, namespace, uid)');
  for (const key of ['name', 'namespace', 'uid'] as const) {
    if (typeof m[key] !== 'string' || m[key] === '') throw invalidArgument(`sandbox config metadata.${key} must not be empty`);
  }
  return { name: m.name, namespace: m.namespace, uid: m.uid, attempt: Number(m.attempt ?? 0) };
}

/** A CRI NamespaceMode as a name, whether the client sent the enum's name or its number. */
export function namespaceMode(v: unknown): NamespaceMode {
  if (v === 'NODE' || v === 2) return 'NODE';
  if (v === 'CONTAINER' || v === 1) return 'CONTAINER';
  if (v === 'TARGET' || v === 3) return 'TARGET';
  return 'POD';
}

export function namespaceChoice(config: PodSandboxConfig): NamespaceChoice {
  const o = config?.linux?.securityContext?.namespaceOptions;
  return { network: namespaceMode(o?.network), pid: namespaceMode(o?.pid), ipc: namespaceMode(o?.ipc) };
}

/** Privileged when asked for, or when the pod reaches into the host's network, PID or IPC namespace. */
export function isPrivileged(config: PodSandboxConfig, ns: NamespaceChoice): boolean {
  return Boolean(config?.linux?.securityContext?.privileged) || ns.network === 'NODE' || ns.pid === 'NODE' || ns.ipc === 'NODE';
}

/** Picks the runtime handler for a pod, applying the untrusted-workload rules. */
export function selectHandler(requested: string, annotations: Record<string, string>, ns: NamespaceChoice, cfg: Pick<CorralConfig, 'runtimes' | 'defaultRuntime'>): RuntimeHandlerConfig {
  let name = requested || cfg.defaultRuntime;
  if (annotations[UNTRUSTED_WORKLOAD_ANNOTATION] === 'true') {
    if (requested !== '' && requested !== UNTRUSTED_HANDLER) {
      throw invalidArgument(`untrusted workload annotation conflicts with runtime handler "${requested}": use no handler or "${UNTRUSTED_HANDLER}"`);
    }
    if (ns.network === 'NODE' || ns.pid === 'NODE' || ns.ipc === 'NODE') {
      throw invalidArgument('untrusted workload with host access (host network, PID or IPC namespace) is not allowed');
    }
    if (!cfg.runtimes[UNTRUSTED_HANDLER]) {
      throw failedPrecondition(`pod is marked as an untrusted workload but no "${UNTRUSTED_HANDLER}" runtime handler is configured (configured: ${Object.keys(cfg.runtimes).join(', ')})`);
    }
    name = UNTRUSTED_HANDLER;
  }
  const handler = cfg.runtimes[name];
  if (!handler) {
    throw invalidArgument(`unknown runtime handler "${name}"; configured handlers: ${Object.keys(cfg.runtimes).join(', ')}`);
  }
  return handler;
}

/** Network first unless the pod asks, through Corral's or iSulad's annotation, to start the sandbox first. */
export function networkOrder(annotations: Record<string, string>): NetworkOrder {
  const own = annotations[NETWORK_ORDER_ANNOTATION];
  if (own !== undefined) {
    if (own !== 'network-first' && own !== 'start-first') {
      throw invalidArgument(`annotation ${NETWORK_ORDER_ANNOTATION} must be "network-first" or "start-first", got "${own}"`);
    }
    return own;
  }
  const isulad = annotations[ISULAD_NETWORK_SETUP_ANNOTATION];
  if (isulad !== undefined) {
    if (isulad === 'true') return 'network-first';
    if (isulad === 'false') return 'start-first';
    throw invalidArgument(`annotation ${ISULAD_NETWORK_SETUP_ANNOTATION} must be "true" or "false", got "${isulad}"`);
  }
  return 'network-first';
}

/**
 * A pause process is kept when something needs one: a VM runtime (it boots the VM for the
 * sandbox container), a PID namespace shared by the pod (something must be its init), or
 * a config that asks to always run one. Otherwise the namespaces are pinned by mounts only.
 * ownInit: a shared PID namespace of a non-VM pod gets Corral's own pause ('init', a fork
 * instead of an OCI runtime's create + start) while the other namespaces stay pinned;
 * false when the operator configured a sandbox image, which only the OCI path can run.
 */
export function infraMode(handler: RuntimeHandlerConfig, ns: NamespaceChoice, dropInfraContainer: boolean, ownInit = false): InfraMode {
  if (handler.type === 'vm') return 'pause';
  if (ns.pid === 'POD') return ownInit ? 'init' : 'pause';
  if (!dropInfraContainer) return 'pause';
  return 'pinned';
}

/**
 * Who holds each namespace of a pod: the host's own ('host'), the pause process
 * ('pause'), or a bind-mount pin made by the namespace helper ('pin'). PID is either the
 * host's, the pod's (held by the pause, its init) or one per container.
 */
export interface NamespacePlan {
  network: 'host' | 'pin';
  ipc: 'host' | 'pause' | 'pin';
  uts: 'host' | 'pause' | 'pin';
  pid: 'host' | 'pause' | 'container';
}

/**
 * The one rule, used both when the pod is made (what to pin) and when its containers
 * join it (where to find each namespace), so the two can never disagree. The network
 * namespace is always pinned (CNI needs a path); host network means host UTS, as kubelet
 * and containerd do; IPC and UTS are held by a pause container when there is one, else
 * pinned (Corral's own pause, mode 'init', holds only the PID namespace).
 */
export function namespacePlan(ns: NamespaceChoice, mode: InfraMode): NamespacePlan {
  const held = mode === 'pause' ? 'pause' : 'pin';
  if (ns.pid === 'POD' && mode === 'pinned') throw internalError('a pod sharing its PID namespace needs a pause process as its init');
  return {
    network: ns.network === 'NODE' ? 'host' : 'pin',
    ipc: ns.ipc === 'NODE' ? 'host' : held,
    uts: ns.network === 'NODE' ? 'host' : held,
    pid: ns.pid === 'NODE' ? 'host' : ns.pid === 'POD' ? 'pause' : 'container',
  };
}

/** File names of the IPC and UTS pins in a sandbox's state folder. */
export const PIN_FILES = { ipc: 'ipcns', uts: 'utsns' } as const;

export interface PodPins {
  /** Every pin file to create (and to remove at Stop). */
  pins: string[];
  /** What the namespace helper is asked for; netnsPath null = no network namespace of its own. */
  netnsPath: string | null;
  ipcPath?: string;
  utsPath?: string;
  hostname?: string;
  /** The sysctls the helper sets in the namespaces it pins. */
  sysctls: Record<string, string>;
}

/**
 * The pins a pod needs, and which of its sysctls the pins carry. Every sysctl goes to
 * the holder of its namespace: a pin (the helper sets it), or the pause (the OCI runtime
 * sets it from the pause spec). A sysctl whose namespace is the host's is refused here,
 * never dropped (validation refuses it earlier; this makes a silent drop impossible).
 */
export function podPins(plan: NamespacePlan, opts: { netnsPath: string | null; stateDir: string; hostname: string; sysctls: Record<string, string> }): PodPins {
  const out: PodPins = { pins: [], netnsPath: null, sysctls: {} };
  if (plan.network === 'pin') {
    if (!opts.netnsPath) throw internalError('a pod with its own network namespace needs a netns path');
    out.netnsPath = opts.netnsPath;
    out.pins.push(opts.netnsPath);
  }
  if (plan.ipc === 'pin') {
    out.ipcPath = path.join(opts.stateDir, PIN_FILES.ipc);
    out.pins.push(out.ipcPath);
  }
  if (plan.uts === 'pin') {
    out.utsPath = path.join(opts.stateDir, PIN_FILES.uts);
    out.hostname = opts.hostname;
    out.pins.push(out.utsPath);
  }
  for (const [name, value] of Object.entries(opts.sysctls)) {
    const ns = sysctlNamespace(name);
    const holder = ns === 'net' ? plan.network : ns === 'ipc' ? plan.ipc : 'host';
    if (holder === 'host') throw invalidArgument(`sysctl "${name}" cannot be set: the pod uses the host's ${ns ?? 'kernel'} namespace`);
    if (holder === 'pin') out.sysctls[name] = value;
  }
  return out;
}

/** resolv.conf content for a DNSConfig, or null when the pod did not give one (use the host's). */
export function resolvConf(dns: DNSConfig | null | undefined): string | null {
  if (!dns) return null;
  const servers: string[] = dns.servers ?? [];
  const searches: string[] = dns.searches ?? [];
  const options: string[] = dns.options ?? [];
  if (servers.length === 0 && searches.length === 0 && options.length === 0) return null;
  let out = '';
  if (searches.length > 0) out += `search ${searches.join(' ')}\n`;
  for (const s of servers) out += `nameserver ${s}\n`;
  if (options.length > 0) out += `options ${options.join(' ')}\n`;
  return out;
}

/** CNI portMappings capability entries from CRI port mappings (only those with a host port). */
export function cniPortMappings(portMappings: PortMapping[] | undefined): { hostPort: number; containerPort: number; protocol: string; hostIP: string }[] {
  return (portMappings ?? [])
    .filter((p) => Number(p.hostPort) > 0)
    .map((p) => ({
      hostPort: Number(p.hostPort),
      containerPort: Number(p.containerPort),
      protocol: String(p.protocol ?? 'TCP').toLowerCase(),
      hostIP: p.hostIp ?? '',
    }));
}

export function podHostname(config: PodSandboxConfig, hostNetwork: boolean, nodeHostname: string): string {
  // No hostname asked for: the node's, as containerd and cri-o do (a pod name can be longer than a hostname may be).
  const hostname = config?.hostname ? String(config.hostname) : nodeHostname;
  if (!hostNetwork && Buffer.byteLength(hostname) > 64) {
    throw invalidArgument(`hostname "${hostname}" is ${Buffer.byteLength(hostname)} bytes; the kernel allows at most 64`);
  }
  return hostname;
}
