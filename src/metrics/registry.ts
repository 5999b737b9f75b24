/**
 * Corral's Prometheus metrics (prom-client): what the CRI server and the domain services
 * report (RuntimeObserver), what is read from the stores at scrape time (pods and
 * containers by state: gauges computed from the records cannot drift the way counters of
 * transitions would), and the process metrics. Every label takes values from a bounded set
 * (RPC names, gRPC codes, step names, handlers, plugin types, error kinds), so memory stays
 * bounded however long the daemon runs.
 *
 * Only the daemon loads this module, and only when metrics_address is set.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RuntimeObserver } from '../observer.js';
import type { Logger } from '../util/log.js';

/** What the state gauges read at scrape time. */
export interface StateSources {
  /** The configured runtime handlers: each gets a series per state, zero included. */
  handlers(): string[];
  /** Every pod sandbox (as ListPodSandbox lists them) with its live state. */
  pods(): Promise<{ state: PodState; runtimeHandler: string }[]>;
  /** Every container (as ListContainers lists them) with its state. */
  containers(): Promise<{ state: ContainerStateName; runtimeHandler: string }[]>;
}

export const POD_STATES = ['ready', 'notready'] as const;
export type PodState = (typeof POD_STATES)[number];
export const CONTAINER_STATES = ['creating', 'created', 'running', 'exited'] as const;
export type ContainerStateName = (typeof CONTAINER_STATES)[number];

/** CRI calls: most answer in milliseconds, Run/Create/Pull/Stop can take tens of seconds. */
const RPC_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120];
/** Sandbox steps: netns pinning and file writes take a millisecond, CNI and runtime create up to seconds. */
const STEP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
/** Image pulls: a cached small image in well under a second, a large one over minutes. */
const PULL_BUCKETS = [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

export class CorralMetrics implements RuntimeObserver {
  readonly registry = new Registry();
  private sources: StateSources | undefined;
  private rendering: Promise<string> | undefined;

  private readonly rpcRequests = new Counter({
    name: 'corral_cri_requests_total',
    help: 'CRI calls answered, by RPC method and gRPC status code.',
    labelNames: ['method', 'grpc_code'] as const,
    registers: [this.registry],
  });
  private readonly rpcDuration = new Histogram({
    name: 'corral_cri_request_duration_seconds',
    help: 'Time to answer a CRI call, by RPC method and gRPC status code.',
    labelNames: ['method', 'grpc_code'] as const,
    buckets: RPC_BUCKETS,
    registers: [this.registry],
  });
  private readonly sandboxStep = new Histogram({
    name: 'corral_sandbox_step_duration_seconds',
    help: 'Duration of each step of a finished RunPodSandbox (operation="run") or StopPodSandbox (operation="stop"), the timings crictl inspectp shows.',
    labelNames: ['operation', 'step', 'runtime_handler'] as const,
    buckets: STEP_BUCKETS,
    registers: [this.registry],
  });
  private readonly cniErrors = new Counter({
    name: 'corral_cni_plugin_errors_total',
    help: 'Failed CNI plugin invocations (non-zero exit, not found, timed out), by plugin type and verb.',
    labelNames: ['plugin', 'verb'] as const,
    registers: [this.registry],
  });
  private readonly runtimeErrors = new Counter({
    name: 'corral_runtime_errors_total',
    help: 'Failed OCI runtime commands (conmon\'s create included), by runtime handler and operation.',
    labelNames: ['runtime_handler', 'operation'] as const,
    registers: [this.registry],
  });
  private readonly pullDuration = new Histogram({
    name: 'corral_image_pull_duration_seconds',
    help: 'Duration of image pulls (concurrent pulls of one reference are one pull), by outcome.',
    labelNames: ['outcome'] as const,
    buckets: PULL_BUCKETS,
    registers: [this.registry],
  });
  private readonly pullBytes = new Counter({
    name: 'corral_image_pull_bytes_total',
    help: 'Bytes successful image pulls received from registries: manifests and the blobs not already stored.',
    registers: [this.registry],
  });
  private readonly pullErrors = new Counter({
    name: 'corral_image_pull_errors_total',
    help: 'Failed image pulls, by reason (the error kind: not-found, unauthorized, unreachable, stalled, ...).',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  constructor(private readonly logger: Logger) {
    const self = this;
    new Gauge({
      name: 'corral_pods',
      help: 'Pod sandboxes by state (ready: its namespaces are held; notready) and runtime handler, read from the sandbox records at scrape time.',
      labelNames: ['state', 'runtime_handler'] as const,
      registers: [this.registry],
      async collect() {
        await self.collectStates(this, 'corral_pods', POD_STATES, (s) => s.pods());
      },
    });
    new Gauge({
      name: 'corral_containers',
      help: 'Containers by state and runtime handler, read from the container records at scrape time.',
      labelNames: ['state', 'runtime_handler'] as const,
      registers: [this.registry],
      async collect() {
        await self.collectStates(this, 'corral_containers', CONTAINER_STATES, (s) => s.containers());
      },
    });
    // The standard process_* and nodejs_* names (what generic dashboards and alerts expect).
    collectDefaultMetrics({ register: this.registry });
  }

  /** Where the state gauges read from; until set (daemon start-up) they have no samples. */
  setStateSources(sources: StateSources): void {
    this.sources = sources;
  }

  /** The exposition text; scrapes that arrive while one is being rendered share it. */
  render(): Promise<string> {
    this.rendering ??= this.registry.metrics().finally(() => {
      this.rendering = undefined;
    });
    return this.rendering;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  // ------------------------------------------------------------ what is reported

  observeCall(method: string, code: string, seconds: number): void {
    this.safely(() => {
      this.rpcRequests.inc({ method, grpc_code: code });
      this.rpcDuration.observe({ method, grpc_code: code }, seconds);
    });
  }

  sandboxSteps(operation: 'run' | 'stop', runtimeHandler: string, timingsMs: Readonly<Record<string, number>>): void {
    this.safely(() => {
      for (const [step, ms] of Object.entries(timingsMs)) {
        if (Number.isFinite(ms) && ms >= 0) this.sandboxStep.observe({ operation, step, runtime_handler: runtimeHandler }, ms / 1000);
      }
    });
  }

  cniPluginFailed(plugin: string, verb: string): void {
    this.safely(() => this.cniErrors.inc({ plugin, verb }));
  }

  runtimeFailed(runtimeHandler: string, operation: string): void {
    this.safely(() => this.runtimeErrors.inc({ runtime_handler: runtimeHandler, operation }));
  }

  imagePulled(pull: { seconds: number; bytes: number; failure?: string }): void {
    this.safely(() => {
      this.pullDuration.observe({ outcome: pull.failure === undefined ? 'success' : 'failure' }, pull.seconds);
      if (pull.failure !== undefined) this.pullErrors.inc({ reason: pull.failure });
      else if (pull.bytes > 0) this.pullBytes.inc(pull.bytes);
    });
  }

  // ------------------------------------------------------------ internals

  /** A metric must never fail the call it observes. */
  private safely(fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.logger.warn({ err: (e as Error).message }, 'recording a metric failed');
    }
  }

  /** Every handler × state gets a series (zero included), then each record counts once. */
  private async collectStates<S extends string>(
    gauge: Gauge<'state' | 'runtime_handler'>,
    name: string,
    states: readonly S[],
    read: (s: StateSources) => Promise<{ state: S; runtimeHandler: string }[]>,
  ): Promise<void> {
    gauge.reset();
    const sources = this.sources;
    if (!sources) return;
    let items: { state: S; runtimeHandler: string }[];
    try {
      items = await read(sources);
    } catch (e) {
      // No samples rather than wrong ones; the rest of the scrape still answers.
      this.logger.warn({ metric: name, err: (e as Error).message }, 'reading the stores for a metric failed');
      return;
    }
    for (const handler of sources.handlers()) for (const state of states) gauge.set({ state, runtime_handler: handler }, 0);
    for (const { state, runtimeHandler } of items) gauge.inc({ state, runtime_handler: runtimeHandler });
  }
}
