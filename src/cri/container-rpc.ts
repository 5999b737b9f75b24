/** RuntimeService handlers for the container RPC group, and ExecSync. */
import type { ContainerService } from '../container/service.js';
import type { ContainerRecord } from '../container/record.js';
import { failedPrecondition, invalidArgument, unavailable } from '../errors.js';
import type { RuntimeHandlers } from './rpc-types.js';
import { frozenMessage } from './proto.js';
import type { ContainerFilter, ContainerState as CriContainerState } from '../cri-api/types.js';
import { attachRequest, execRequest, type StreamingUrls } from '../streaming/requests.js';

const CRI_STATE: Record<ContainerRecord['state'], CriContainerState> = {
  creating: 'CONTAINER_UNKNOWN',
  created: 'CONTAINER_CREATED',
  running: 'CONTAINER_RUNNING',
  exited: 'CONTAINER_EXITED',
};

export function containerHandlers(containers: ContainerService, streaming?: StreamingUrls) {
  /** The container, resolved and running (it is checked again when the client connects). */
  const runningContainer = async (id: string) => {
    const rec = await containers.status(id);
    if (rec.state !== 'running') throw failedPrecondition(`container ${rec.id} is ${rec.state}, not running`);
    return rec;
  };
  const urls = () => {
    if (!streaming) throw unavailable('the streaming server is not running');
    return streaming;
  };

  /**
   * ListContainers' item of a record, made once and reused, so that it is encoded once too
   * (frozenMessage). A record is never changed in place (a change is a new record object).
   */
  const summaries = new WeakMap<ContainerRecord, Readonly<ReturnType<typeof containerSummaryOf>>>();
  const summary = (r: ContainerRecord) => {
    let s = summaries.get(r);
    if (!s) summaries.set(r, (s = frozenMessage(containerSummaryOf(r))));
    return s;
  };

  return {
    async CreateContainer(req) {
      if (!req.config) throw invalidArgument('CreateContainer needs a container config');
      const containerId = await containers.create(req.podSandboxId ?? '', req.config);
      return { containerId };
    },

    async StartContainer(req) {
      await containers.start(requireId(req.containerId));
      return {};
    },

    async StopContainer(req) {
      await containers.stop(requireId(req.containerId), Number(req.timeout ?? 0));
      return {};
    },

    async RemoveContainer(req) {
      await containers.remove(requireId(req.containerId));
      return {};
    },

    async ListContainers(req) {
      const f = req.filter ?? ({} as Partial<ContainerFilter>);
      let list = await containers.list();
      if (f.id) {
        let id: string | undefined;
        try {
          id = containers.index.tryResolve(f.id);
        } catch {
          id = undefined;
        }
        list = list.filter((r) => r.id === id);
      }
      const { podSandboxId, state } = f;
      if (podSandboxId) list = list.filter((r) => r.sandboxId.startsWith(podSandboxId));
      if (state) list = list.filter((r) => CRI_STATE[r.state] === state.state);
      const selector: Record<string, string> = f.labelSelector ?? {};
      list = list.filter((r) => Object.entries(selector).every(([k, v]) => (r.config.labels ?? {})[k] === v));
      return { containers: list.map((r) => summary(r)) };
    },

    async ContainerStatus(req) {
      const r = await containers.status(requireId(req.containerId));
      const status = containerStatusOf(containers, r);
      const info: Record<string, string> = {};
      if (req.verbose) info.info = JSON.stringify({ pid: r.pid, sandboxId: r.sandboxId, runtimeHandler: r.runtimeHandler, resources: r.resources, config: r.config });
      return { status, info };
    },

    async Exec(req) {
      const request = execRequest(req);
      request.containerId = (await runningContainer(request.containerId)).id;
      return { url: urls().urlFor(request) };
    },

    async Attach(req) {
      const request = attachRequest(req);
      request.containerId = (await runningContainer(request.containerId)).id;
      return { url: urls().urlFor(request) };
    },

    async UpdateContainerResources(req) {
      if (!req.linux) throw invalidArgument('UpdateContainerResources needs linux resources (windows ones are not served)');
      await containers.updateResources(requireId(req.containerId), req.linux);
      return {};
    },

    async ReopenContainerLog(req) {
      await containers.reopenLog(requireId(req.containerId));
      return {};
    },

    async ExecSync(req, call) {
      // A client that goes away (its deadline, a cancel) must not leave the command running.
      const gone = new AbortController();
      const watch = setInterval(() => call?.cancelled && gone.abort(), 500);
      try {
        const r = await containers.execSync(requireId(req.containerId), req.cmd ?? [], Number(req.timeout ?? 0), gone.signal);
        return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode };
      } finally {
        clearInterval(watch);
      }
    },
  } satisfies RuntimeHandlers;
}

/** The CRI Container (ListContainers' item) of a record. */
function containerSummaryOf(r: ContainerRecord) {
  return {
    id: r.id,
    podSandboxId: r.sandboxId,
    metadata: r.metadata,
    image: { image: r.imageRef },
    imageRef: r.imageId,
    state: CRI_STATE[r.state],
    createdAt: r.createdAt,
    labels: r.config.labels ?? {},
    annotations: r.config.annotations ?? {},
  };
}

/** The CRI ContainerStatus of a record (ContainerStatus, and the statuses events carry). */
export function containerStatusOf(containers: Pick<ContainerService, 'linuxResourcesOf'>, r: ContainerRecord) {
  return {
    ...containerSummaryOf(r),
    startedAt: r.startedAt,
    finishedAt: r.finishedAt,
    exitCode: r.exitCode,
    reason: r.reason,
    message: r.message,
    mounts: (r.config.mounts ?? []).map((m) => ({ containerPath: m.containerPath, hostPath: m.hostPath, readonly: Boolean(m.readonly), propagation: m.propagation })),
    logPath: r.logPath,
    resources: { linux: containers.linuxResourcesOf(r) },
  };
}

function requireId(id: unknown): string {
  if (typeof id !== 'string' || id === '') throw invalidArgument('container_id is required');
  return id;
}
