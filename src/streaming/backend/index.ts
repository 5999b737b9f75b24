/**
 * The runtime side of CRI streaming (src/streaming/runtime.ts): exec, attach and
 * port-forward, each through corral-streamhelper (native/streamhelper.c). Built by
 * createStreamingRuntime from two lookups; daemonStreamingDeps makes them from the
 * daemon's services, and a test can make them from what the CRI reports.
 */
import path from 'node:path';
import type { CorralConfig, RuntimeHandlerConfig } from '../../config/config.js';
import type { ContainerService } from '../../container/service.js';
import type { SandboxService } from '../../sandbox/service.js';
import { failedPrecondition, internalError } from '../../errors.js';
import { conmonCtlPath } from '../../oci/conmon.js';
import type { Logger } from '../../util/log.js';
import type { StreamingRuntime } from '../runtime.js';
import { attachToContainer, AttachError, type AttachTarget } from './attach.js';
import { execInContainer, StreamExecError, type ExecTarget } from './exec.js';
import { forwardPort, PortForwardError } from './port-forward.js';

export { StreamExecError, AttachError, PortForwardError };

/** What exec and attach need of a running container. */
export type ContainerTarget = ExecTarget & AttachTarget;

export interface StreamingBackendDeps {
  /** The running container (resolving prefixes); throws the domain error for unknown or not running. */
  container(id: string): Promise<ContainerTarget>;
  /** The pod's pinned network namespace; null for a host-network pod. Throws for unknown pods. */
  podNetns(podSandboxId: string): Promise<string | null>;
  /**
   * The pod's IP when its loopback is not in the pinned namespace (gVisor: the sandbox has a
   * network stack of its own), to dial from the host instead; null to dial localhost in podNetns.
   */
  podAddress?(podSandboxId: string): Promise<string | null>;
  logger?: Logger;
}

/**
 * Where conmon (2.1, as src/oci/conmon.ts runs it with --socket-dir-path <state>/attach)
 * puts a container's attach socket: `<socketDir>/<id>` is its symlink to the bundle, the
 * socket is `attach` in it; the ctl FIFO is `ctl` in the bundle (and the bundle's config.json
 * the container's spec).
 */
export function conmonStreamPaths(stateDir: string, containerId: string): { attachSocket: string; ctlFifo: string; bundleConfig: string } {
  const bundleDir = path.join(stateDir, 'containers', containerId, 'bundle');
  return {
    bundleConfig: path.join(bundleDir, 'config.json'),
    attachSocket: path.join(stateDir, 'attach', containerId, 'attach'),
    ctlFifo: conmonCtlPath(bundleDir),
  };
}

/**
 * The lookups, from the daemon's services. runtimeFor: the daemon's runtime of a handler,
 * for the executable it runs (a runsc handler's wrapper) and whether it is runsc.
 */
export function daemonStreamingDeps(d: {
  config: CorralConfig;
  containers: ContainerService;
  sandboxes: SandboxService;
  runtimeFor: (h: RuntimeHandlerConfig) => { binary: string; runsc: boolean };
  logger?: Logger;
}): StreamingBackendDeps {
  return {
    logger: d.logger,
    async container(id) {
      const rec = await d.containers.status(id);
      if (rec.state !== 'running') throw failedPrecondition(`container ${rec.id} is ${rec.state}, not running`);
      const h = d.config.runtimes[rec.runtimeHandler];
      if (!h) throw failedPrecondition(`runtime handler "${rec.runtimeHandler}" of container ${rec.id} is no longer configured`);
      const rt = d.runtimeFor(h);
      return {
        id: rec.id,
        pid: rec.pid,
        runtime: { name: h.name, binary: rt.binary, root: h.root, runsc: rt.runsc },
        tty: Boolean(rec.config?.tty),
        ...conmonStreamPaths(d.config.stateDir, rec.id),
      };
    },
    async podNetns(podSandboxId) {
      const rec = d.sandboxes.get(podSandboxId);
      if (rec.state !== 'ready') throw failedPrecondition(`pod sandbox ${rec.id} is not ready`);
      if (rec.hostNetwork) return null;
      if (!rec.netnsPath) throw internalError(`pod sandbox ${rec.id} has no network namespace`);
      return rec.netnsPath;
    },
    async podAddress(podSandboxId) {
      const rec = d.sandboxes.get(podSandboxId);
      const h = d.config.runtimes[rec.runtimeHandler];
      if (!h || !d.runtimeFor(h).runsc || rec.hostNetwork) return null;
      const ip = rec.network?.podIp;
      if (!ip) throw failedPrecondition(`gVisor pod sandbox ${rec.id} has no IP to forward to (its loopback is inside the sandbox)`);
      return ip;
    },
  };
}

export function createStreamingRuntime(deps: StreamingBackendDeps): StreamingRuntime {
  return {
    async exec(containerId, cmd, io) {
      const t = await deps.container(containerId);
      return execInContainer(t, cmd, io, deps.logger);
    },
    async attach(containerId, io) {
      const t = await deps.container(containerId);
      return attachToContainer(t, io);
    },
    async portForward(podSandboxId, port, stream, signal) {
      const netns = await deps.podNetns(podSandboxId);
      const address = (await deps.podAddress?.(podSandboxId)) ?? null;
      // From the host's namespace: a gVisor pod is reachable there on its IP (runsc takes the
      // pinned namespace's interface over, so the kernel there no longer holds that address).
      return address ? forwardPort(podSandboxId, null, port, stream, signal, address) : forwardPort(podSandboxId, netns, port, stream, signal);
    },
  };
}
