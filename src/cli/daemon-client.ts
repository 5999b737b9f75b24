/**
 * The connection of the container commands (ps, logs, stats, statsp) to the daemon, and how
 * they find a container or a pod sandbox from what a user types: a full ID, a unique ID
 * prefix (the daemon resolves those), or a name (metadata name, as `corral ps` shows it).
 */
import { DEFAULT_ENDPOINT } from './commands.js';
import { explainCallError } from './hints.js';
import { parseDuration } from './client-commands.js';
import type { RuntimeRpcName } from '../cri/proto.js';

export type Rpc = (method: RuntimeRpcName, req: object) => Promise<any>;

export interface DaemonClient {
  rpc: Rpc;
  close(): void;
}

/** The runtime client of -r/--runtime-endpoint (else $CONTAINER_RUNTIME_ENDPOINT, else the default), with --timeout per call. */
export async function connectRuntime(values: Record<string, unknown>): Promise<DaemonClient> {
  const endpoint = (values['runtime-endpoint'] as string | undefined) ?? process.env.CONTAINER_RUNTIME_ENDPOINT ?? DEFAULT_ENDPOINT;
  const deadlineMs = parseDuration((values.timeout as string | undefined) ?? '2m');
  const { createRuntimeClient, call } = await import('../cri/client.js');
  const client = createRuntimeClient(endpoint);
  const rpc: Rpc = (method, req) =>
    call(client, method, req, { deadlineMs }).catch((e: unknown) => {
      throw explainCallError(e, endpoint);
    });
  return { rpc, close: () => client.close() };
}

/** grpc status NOT_FOUND, as the daemon answers an unknown ID (explainCallError keeps grpc-js's error). */
const isNotFound = (e: unknown) => (e as { code?: unknown }).code === 5;

/** The CLI's flags `--label KEY=VALUE` (repeatable) → a CRI label selector. */
export function labelSelector(labels: string[] | undefined): Record<string, string> | undefined {
  if (!labels || labels.length === 0) return undefined;
  const out: Record<string, string> = {};
  for (const l of labels) {
    const eq = l.indexOf('=');
    if (eq <= 0) throw new Error(`--label must be KEY=VALUE, got "${l}"`);
    out[l.slice(0, eq)] = l.slice(eq + 1);
  }
  return out;
}

interface Named {
  id: string;
  createdAt: string;
  metadata: { name: string; namespace?: string };
  podSandboxId?: string;
}

/**
 * The one of `candidates` named `ref`. Several of the same name in the same place (the
 * attempts kubelet makes of one container, or of one pod) → the newest; in different pods
 * (or namespaces) → an error naming them.
 */
export function pickByName<T extends Named>(candidates: T[], ref: string, kind: 'container' | 'pod sandbox', listCommand: string): T {
  const named = candidates.filter((c) => c.metadata.name === ref);
  if (named.length === 0) throw new Error(`no ${kind} has the ID, ID prefix or name "${ref}" (see: ${listCommand})`);
  const place = (c: T) => (kind === 'container' ? c.podSandboxId : c.metadata.namespace) ?? '';
  const places = new Set(named.map(place));
  if (places.size > 1) {
    const list = named.map((c) => `${c.id.slice(0, 13)} (${kind === 'container' ? 'pod' : 'namespace'} ${place(c).slice(0, 13)})`).join(', ');
    throw new Error(`the name "${ref}" is ambiguous: ${named.length} ${kind}s have it: ${list}; give the ID`);
  }
  return named.reduce((a, b) => (BigInt(b.createdAt) > BigInt(a.createdAt) ? b : a));
}

/** The container `ref` names: its full ID and status (ContainerStatus). */
export async function resolveContainer(rpc: Rpc, ref: string): Promise<{ id: string; status: any }> {
  if (!ref) throw new Error('a container ID or name is needed');
  if (/^[0-9a-f]+$/.test(ref)) {
    try {
      const { status } = await rpc('ContainerStatus', { containerId: ref });
      return { id: status.id, status };
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }
  const { containers } = await rpc('ListContainers', {});
  const picked = pickByName(containers as Named[], ref, 'container', 'corral ps -a');
  const { status } = await rpc('ContainerStatus', { containerId: picked.id });
  return { id: status.id, status };
}

/** The full ID of the pod sandbox `ref` names. */
export async function resolvePod(rpc: Rpc, ref: string): Promise<string> {
  if (!ref) throw new Error('a pod sandbox ID or name is needed');
  if (/^[0-9a-f]+$/.test(ref)) {
    try {
      return (await rpc('PodSandboxStatus', { podSandboxId: ref })).status.id;
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }
  const { items } = await rpc('ListPodSandbox', {});
  return pickByName(items as Named[], ref, 'pod sandbox', 'corral pods').id;
}
