/**
 * The pod sandbox lifecycle: RunPodSandbox, StopPodSandbox, RemovePodSandbox, status,
 * listing, and recovery after a restart. Every side effect is recorded on disk before it
 * happens; RunPodSandbox undoes each finished step in reverse when a later one fails.
 *
 * Lock model: one shared/exclusive lock per sandbox ID. Run (from its first write of the
 * record to its last, rollback included; the plan and the sandbox image pull come before),
 * Stop and Remove hold it exclusively; the container calls of the pod hold it shared (see
 * underSharedLock). A record is changed only through the
 * SandboxTx of an exclusive holder, which writes it to disk before it becomes the record
 * every reader sees, and replaces the in-memory record instead of mutating it. So a Stop
 * that arrives while Run is between steps waits for Run to finish or roll back, then stops
 * what Run made; a container being created keeps its pod from being removed under it.
 */
import { promises as fs, mkdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { CorralConfig, RuntimeHandlerConfig } from '../config/config.js';
import { CorralError, invalidArgument, internalError, notFound } from '../errors.js';
import type { Logger } from '../util/log.js';
import { UndoStack, runWithRollback } from '../util/undo.js';
import type { SandboxStore } from '../store/sandbox-store.js';
import { IdIndex, generateId } from '../store/ids.js';
import { NameRegistry, sandboxName, sandboxNameKey } from '../store/names.js';
import { cniPortMappings, isPrivileged, podMetadata, resolvConf } from './options.js';
import type { SandboxNetwork, SandboxRecord } from './record.js';
import type { PodSandboxConfig } from '../cri-api/types.js';
import { mountShm, sandboxFilePaths, unmountShm, writeSandboxFiles, type SandboxFiles } from './files.js';
import { planSandbox, type SandboxPlan } from './plan.js';
import type { BandwidthLimits } from '../network/cni/capabilities.js';
import { processStartTime } from '../util/process.js';
import { nowNs } from '../util/time.js';
import { SharedExclusiveLock } from '../util/keyed-lock.js';
import type { RuntimeObserver } from '../observer.js';
import { NO_LIFECYCLE_EVENTS, type LifecycleEvent, type LifecycleEventType, type LifecyclePublisher } from '../events/lifecycle.js';
import { cgroupfsCgroupsPath } from '../oci/cgroups.js';
import { podInitCgroups, type PodInitResources, type PodInitSpec } from './pod-init.js';
import { readSeccompProfile, resolveSeccomp } from '../oci/seccomp-choice.js';
import type { SeccompChoice } from '../oci/seccomp.js';

/** What the sandbox lifecycle needs from the network layer (CNI) of one handler. */
export interface PodNetworkDriver {
  setUp(req: {
    containerId: string;
    netnsPath: string;
    podName: string;
    podNamespace: string;
    podUid: string;
    portMappings: ReturnType<typeof cniPortMappings>;
    /** Parsed from the pod's bandwidth annotations by planSandbox, before anything was made. */
    bandwidth?: BandwidthLimits;
    annotations: Record<string, string>;
    dns?: { servers: string[]; searches: string[]; options: string[] };
    cgroupPath?: string;
  }): Promise<SandboxNetwork>;
  tearDown(req: { containerId: string; netnsPath: string; podName: string; podNamespace: string; podUid: string }): Promise<void>;
}

/** Pinning and unpinning namespaces (a helper process does the syscalls). */
export interface NamespacePinner {
  pathFor(sandboxId: string): string;
  /** netnsPath null: no network namespace, only the IPC (and UTS) pins. */
  /** shmPath: also mount the pod's /dev/shm tmpfs there, in the same helper call. */
  create(netnsPath: string | null, opts: { sysctls: Record<string, string>; ipcPath?: string; utsPath?: string; hostname?: string; shmPath?: string }): Promise<void>;
  /** Unpins (or, for a folder such as the shm, unmounts and removes) every path; gone is fine. */
  remove(paths: string[]): Promise<void>;
  isPinned(path: string): Promise<boolean>;
}

/** The pause container: creating, starting and stopping it through the handler's OCI runtime. */
export interface SandboxContainerRuntime {
  /** Writes the bundle and runs `create`; returns the pause PID. Undo is `destroy`. */
  create(handler: RuntimeHandlerConfig, record: SandboxRecord, bundle: SandboxBundleInput): Promise<number>;
  /** Runs `start`. */
  start(handler: RuntimeHandlerConfig, id: string): Promise<void>;
  /** Stops and deletes the container; unknown to the runtime is fine. */
  destroy(handler: RuntimeHandlerConfig, id: string): Promise<void>;
}

/** Corral's own pause for a shared PID namespace (infra mode 'init'; see pod-init.ts). */
export interface PodInitLauncher {
  /** Starts it; nothing is left on failure. The daemon adds the oom_score_adj. */
  start(spec: Omit<PodInitSpec, 'oomScoreAdj'>): Promise<{ pid: number; startTime: string }>;
  /** Kills it, waits, removes its cgroups and pidfile; nothing left is success. */
  stop(res: PodInitResources): Promise<void>;
}

export interface SandboxBundleInput {
  bundleDir: string;
  /** The sandbox root filesystem (absolute) and the pause command in it. */
  rootfsPath: string;
  args: string[];
  hostname: string;
  hostnamePath: string;
  hostsPath: string;
  resolvConfPath: string;
  shmPath: string | null;
  logDirectory: string;
  sysctls: Record<string, string>;
  /** The pod's seccomp profile, read and checked by the service (podSeccomp). */
  seccomp: SeccompChoice;
}

/** The root filesystem of pause containers. */
export interface SandboxImageSource {
  /**
   * The built-in rootfs (shared, read-only: `path`), or a sandbox image (pulled if
   * missing) whose layers are mounted per pod (`chain`). `args` is the pause command.
   */
  resolve(): Promise<{ path: string; args: string[] } | { chain: string[]; args: string[] }>;
  mount(chain: string[], target: string, layerDir: string): Promise<void>;
  /** Unmounts; not mounted is fine. */
  unmount(target: string): Promise<void>;
}

export interface SandboxServiceDeps {
  config: CorralConfig;
  store: SandboxStore;
  logger: Logger;
  network: (handler: RuntimeHandlerConfig) => PodNetworkDriver;
  pinner: NamespacePinner;
  runtime: SandboxContainerRuntime;
  podInit: PodInitLauncher;
  /** Where pause containers get their root filesystem: the built-in one or a sandbox image's layers. */
  sandboxImage: SandboxImageSource;
  /** Validates the pod's sysctls against its namespaces (throws with the reason) and adds the runtime's defaults. */
  prepareSysctls: (sysctls: Record<string, string>, opts: { hostNetwork: boolean; hostIpc: boolean }) => Record<string, string>;
  /** Told the step timings of every finished Run and Stop (metrics). */
  observer?: RuntimeObserver;
}

/**
 * What the exclusive holder of a sandbox's lock may do to its record; it refuses to work
 * once the lock is released, so no record changes outside the lock.
 */
interface SandboxTx {
  /**
   * Makes the ID resolvable before its record is written (Run, before its first write): a
   * Stop or Remove given the ID then waits for the lock instead of answering "nothing to do".
   */
  claim(): void;
  /** A copy of the current record to change and save; undefined when there is none. */
  current(): SandboxRecord | undefined;
  /**
   * Writes next to disk, then makes (a copy of) it the record readers see, indexed.
   * durable false: not fsynced, for states a power loss may roll back harmlessly (see
   * READY_AND_STOPPED_ARE_NOT_FSYNCED).
   */
  save(next: SandboxRecord, opts?: { durable?: boolean }): Promise<void>;
  /** Deletes the record on disk, then forgets it. */
  forget(): Promise<void>;
  /** fsyncs the record as last saved (see INTENT_DURABLE_BEFORE_PERSISTENT_STEPS). */
  sync(): Promise<void>;
}

/**
 * READY_AND_STOPPED_ARE_NOT_FSYNCED: only the intent (the first write of a Run, before any
 * side effect) is fsynced. After a power loss nothing of a pod runs any more, and what
 * survives on disk (CNI's IP reservations) is released from the intent alone: a record
 * that comes back as 'creating' is rolled back, one that comes back 'ready' is stopped by
 * kubelet, and every teardown step is idempotent. A daemon crash keeps the page cache,
 * so these writes are seen after it either way (they stay atomic: temp file + rename).
 */
const NOT_FSYNCED = { durable: false } as const;

/** Waits for every step (so none is still running when the rollback starts), then throws the first failure. */
async function allOrFirstError(steps: Promise<void>[]): Promise<void> {
  const settled = await Promise.allSettled(steps);
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** One Run in progress: what its steps read (the plan) and build (the record). */
interface SandboxRun {
  id: string;
  config: PodSandboxConfig;
  plan: SandboxPlan;
  /** The intent, completed by the steps (pid, network) and saved ready at the end. */
  record: SandboxRecord;
  tx: SandboxTx;
  volatileDir: string;
  network: PodNetworkDriver;
  sandboxRootfs: Awaited<ReturnType<SandboxImageSource['resolve']>> | undefined;
  timed: <T>(step: string, fn: () => Promise<T>) => Promise<T>;
  /** The pod's /dev/shm was mounted with the pins (one exec instead of two). */
  shmMounted?: boolean;
  /** The intent's fsync, under way beside the pins and files; awaited before CNI and the pause. */
  intentDurable?: Promise<void>;
}

export class SandboxService {
  readonly index = new IdIndex('pod sandbox');
  /** Reserved on the structured key (sandboxNameKey) of the pod's metadata. */
  private readonly names = new NameRegistry();
  /** What is on disk, as of the last SandboxTx.save: replaced, never mutated. */
  private readonly records = new Map<string, SandboxRecord>();
  private readonly locks = new SharedExclusiveLock();

  /** The pod's application containers: stopped with it, removed with it, listed in its events (set by the daemon). */
  containers: { stopAll(sandboxId: string): Promise<void>; removeAll(sandboxId: string): Promise<void>; records?(sandboxId: string): LifecycleEvent['containers'] } = {
    stopAll: async () => {},
    removeAll: async () => {},
  };

  /** Told every committed change of a sandbox: created and started, stopped, deleted (set by the daemon). */
  events: LifecyclePublisher = NO_LIFECYCLE_EVENTS;
  /** Ready sandboxes announced STOPPED because their namespaces went (noticeDeadSandboxes); until their Stop or Remove. */
  private readonly announcedDown = new Set<string>();

  /** Told the layers a stopped pod's sandbox image no longer holds (set by the daemon). */
  layersReleased: (chain: string[]) => Promise<void> = async () => {};

  constructor(private readonly deps: SandboxServiceDeps) {}

  // ---------------------------------------------------------------- Run

  async run(config: PodSandboxConfig, runtimeHandler: string): Promise<string> {
    // 1. The name, from the metadata alone: a retry or a concurrent twin joins this Run.
    const metadata = podMetadata(config);
    const name = sandboxName(metadata);
    const key = sandboxNameKey(metadata);
    const id = generateId();
    let settle!: (id: string) => void;
    let fail!: (e: unknown) => void;
    const creation = new Promise<string>((res, rej) => {
      settle = res;
      fail = rej;
    });
    creation.catch(() => { /* observed by joiners only */ });
    const taken = this.names.reserve(key, id, creation);
    if (taken) return this.joinExisting(name, taken.id, taken.creation);

    try {
      await this.create(id, name, config, runtimeHandler);
      this.names.settle(key, id);
      settle(id);
      return id;
    } catch (e) {
      // Refused before anything existed, or rolled back completely: the name is free again.
      // (An incomplete rollback keeps the record, and with it the name, for Stop/Remove.)
      if (!this.records.has(id)) this.names.release(key, id);
      fail(e);
      throw e;
    }
  }

  /** A retry (or a concurrent twin) of a Run for a name that is taken. */
  private async joinExisting(name: string, id: string, creation: Promise<string> | undefined): Promise<string> {
    if (creation) return creation;
    const rec = this.records.get(id);
    if (rec) return id;
    throw internalError(`pod sandbox name "${name}" is reserved for ${id}, which no longer exists`);
  }

  /**
   * RunPodSandbox as a list of steps. The plan refuses bad input before the host is
   * touched; each step then pushes its undo beside its side effect, and one policy
   * (runWithRollback) unwinds them on failure. The pod's lock is taken before the first
   * side effect and held through the rollback: a Stop or Remove of this ID (claimed in
   * recordIntent) waits for the outcome, then acts on it.
   */
  private async create(id: string, name: string, config: PodSandboxConfig, requestedHandler: string): Promise<void> {
    const { config: cfg, logger, pinner } = this.deps;
    const timings: Record<string, number> = {};
    const timed = async <T>(step: string, fn: () => Promise<T>): Promise<T> => {
      const t0 = performance.now();
      try {
        return await fn();
      } finally {
        timings[step] = Math.round((performance.now() - t0) * 100) / 100;
      }
    };
    const t0 = performance.now();
    const volatileDir = this.volatileDir(id);

    // 2. Everything that can be refused, decided before touching the host.
    const plan = planSandbox(config, requestedHandler, cfg, {
      stateDir: volatileDir,
      netnsPath: pinner.pathFor(id),
      nodeHostname: os.hostname(),
      prepareSysctls: this.deps.prepareSysctls,
    });
    const { metadata, handler, mode, order } = plan;
    const log = logger.child({ sandbox: id, pod: `${metadata.namespace}/${metadata.name}` });
    const network = this.deps.network(handler);
    // 3. The sandbox image, pulled if it must be, before anything of the pod exists.
    const sandboxRootfs = mode === 'pause' ? await timed('image', () => this.deps.sandboxImage.resolve()) : undefined;
    const record = this.intendedRecord(id, name, config, plan, sandboxRootfs, timings);

    await this.exclusive(id, async (tx) => {
      const run: SandboxRun = { id, config, plan, record, tx, volatileDir, network, sandboxRootfs, timed };
      const undo = new UndoStack();
      try {
        await runWithRollback(
          undo,
          async () => {
            // 4. The record first (under the lock): from here on a crash is rolled back by the restart sweep.
            await this.recordIntent(run, undo);
            // 5. The pod's own namespaces (network; IPC/UTS without a pause), pinned before anything else.
            await this.pinNamespaces(run, undo);
            // 6. hostname, hosts, resolv.conf and the pod's /dev/shm.
            const files = await this.prepareFiles(run, undo);
            // 7. The sandbox image's layers, when the pause runs from one.
            await this.mountSandboxRootfs(run, undo);
            // 8. Network first (default): the netns is wired before the sandbox container is created.
            // Corral's own pause only joins the pinned namespaces and needs nothing of CNI:
            // it starts while CNI ADD runs (both push their undos before they begin).
            if (order === 'network-first' && mode === 'init') await allOrFirstError([this.attachNetwork(run, undo), this.startPodInit(run, undo)]);
            else if (order === 'network-first' || mode === 'pinned') await this.attachNetwork(run, undo);
            // 9. The pause container, if this pod needs one, or Corral's own pause.
            if (mode === 'pause') {
              await this.createPause(run, undo, files);
              await this.startPause(run);
            }
            if (mode === 'init' && order === 'start-first') await this.startPodInit(run, undo);
            // 10. Start first (by annotation): the network is wired into the running sandbox.
            if (order === 'start-first' && mode !== 'pinned') await this.attachNetwork(run, undo);
            // 11. Ready, recorded; the undos are dropped.
            record.state = 'ready';
            timings.total = Math.round((performance.now() - t0) * 100) / 100;
            await tx.save(record, NOT_FSYNCED);
          },
          {
            logger: log,
            what: 'RunPodSandbox',
            onIncomplete: async (message) => {
              record.state = 'notready';
              record.lastError = message;
              await tx.save(record).catch(() => {});
            },
          },
        );
      } catch (e) {
        throw e instanceof CorralError ? e : internalError(`RunPodSandbox for pod ${metadata.namespace}/${metadata.name}: ${(e as Error).message}`);
      }
      log.info({ timings, handler: handler.name, mode, order, ip: record.network?.podIp }, 'pod sandbox ready');
      this.deps.observer?.sandboxSteps('run', handler.name, timings);
      // Under the lock, after the ready record is committed: before any STOPPED of this pod.
      const ready = this.records.get(id);
      this.publish('created', ready);
      this.publish('started', ready);
    });
  }

  /**
   * Every resource this Run may create, decided up front and recorded as intent in one
   * durable write before the first side effect: teardown of each is idempotent, so a
   * crash at any point is rolled back from this record alone (two writes per Run).
   */
  private intendedRecord(id: string, name: string, config: PodSandboxConfig, plan: SandboxPlan, sandboxRootfs: SandboxRun['sandboxRootfs'], timings: Record<string, number>): SandboxRecord {
    return {
      version: 1,
      id,
      name,
      metadata: plan.metadata,
      config,
      runtimeHandler: plan.handler.name,
      infraMode: plan.mode,
      networkOrder: plan.order,
      hostNetwork: plan.hostNetwork,
      privileged: isPrivileged(config, plan.ns),
      netnsPath: plan.pins.netnsPath,
      state: 'creating',
      createdAt: nowNs(),
      network: null,
      resources: {
        pins: plan.pins.pins,
        cniAttached: !plan.hostNetwork,
        shmMount: plan.shmPath,
        container: plan.mode === 'pause',
        podInit: plan.mode === 'init' ? this.podInitResources(id, config) : null,
        rootfs: sandboxRootfs && 'chain' in sandboxRootfs ? { target: path.join(this.volatileDir(id), 'rootfs'), chain: sandboxRootfs.chain } : null,
      },
      pid: 0,
      pidStartTime: '',
      timings,
    };
  }

  /** Claims the ID and writes the intent; makes the pod's state folder. */
  private async recordIntent(run: SandboxRun, undo: UndoStack): Promise<void> {
    const { tx, volatileDir } = run;
    tx.claim();
    // Pushed first: a failed write may still have made the record's directory.
    undo.push('forget sandbox record', async (failed) => {
      // Anything left behind keeps the record visible (NOTREADY) so Stop/Remove can finish.
      if (failed === 0) await tx.forget();
    });
    // INTENT_DURABLE_BEFORE_PERSISTENT_STEPS: written at once (a daemon crash finds it: the
    // page cache survives), fsynced beside the next steps. Pins, shm and files die with the
    // machine anyway; what outlives a power loss (CNI's IP reservations, a process) starts
    // only once the intent is durable (awaitIntent), so a reboot always finds it.
    await run.timed('record', () => tx.save(run.record, NOT_FSYNCED));
    run.intentDurable = tx.sync();
    run.intentDurable.catch(() => { /* awaited by awaitIntent, or moot after a rollback */ });
    // Synchronous, as the files written into it (writeSandboxFiles): a folder on tmpfs.
    mkdirSync(volatileDir, { recursive: true, mode: 0o711 });
    undo.push('remove sandbox state dir', async (failed) => {
      if (failed === 0) await fs.rm(volatileDir, { recursive: true, force: true });
    });
  }

  private async pinNamespaces(run: SandboxRun, undo: UndoStack): Promise<void> {
    const { pins, ...pinOpts } = run.plan.pins;
    if (pins.length === 0) return;
    const shmPath = run.plan.shmPath ?? undefined;
    // Pushed before: a helper killed mid-way may have mounted it (its own undo covers a failure it reports).
    if (shmPath) undo.push('unmount shm', () => unmountShm(shmPath));
    await run.timed('netns', () => this.deps.pinner.create(pinOpts.netnsPath, { ...pinOpts, shmPath }));
    run.shmMounted = Boolean(shmPath);
    undo.push('remove pinned namespaces', () => this.deps.pinner.remove(pins));
  }

  /** hostname, hosts and resolv.conf (inside the state folder); the pod's /dev/shm tmpfs. */
  private async prepareFiles(run: SandboxRun, undo: UndoStack): Promise<SandboxFiles> {
    const files = sandboxFilePaths(run.volatileDir);
    await run.timed('files', () => writeSandboxFiles(files, run.plan.hostname, resolvConf(run.config.dnsConfig)));
    const shmPath = run.plan.shmPath;
    if (shmPath && !run.shmMounted) {
      undo.push('unmount shm', () => unmountShm(shmPath));
      await run.timed('shm', () => mountShm(shmPath));
    }
    return files;
  }

  private async mountSandboxRootfs(run: SandboxRun, undo: UndoStack): Promise<void> {
    const rootfs = run.record.resources.rootfs;
    if (!rootfs) return;
    undo.push('unmount sandbox rootfs', () => this.deps.sandboxImage.unmount(rootfs.target));
    await run.timed('rootfs', () => this.deps.sandboxImage.mount(rootfs.chain, rootfs.target, path.join(run.volatileDir, 'rootfs-layer')));
  }

  /** The intent is on disk for good before anything that outlives a power loss. */
  private async awaitIntent(run: SandboxRun): Promise<void> {
    if (run.intentDurable) await run.timed('durable', () => run.intentDurable!);
  }

  /** CNI ADD of the pod's networks (nothing with host network). */
  private async attachNetwork(run: SandboxRun, undo: UndoStack): Promise<void> {
    const { record, config, plan } = run;
    if (plan.hostNetwork) return;
    await this.awaitIntent(run);
    // Pushed before ADD: a failed ADD may still have reserved an IP.
    undo.push('CNI DEL', () => run.network.tearDown(this.networkIdentity(record)));
    record.network = await run.timed('cni', () =>
      run.network.setUp({
        ...this.networkIdentity(record),
        portMappings: cniPortMappings(config.portMappings),
        bandwidth: plan.bandwidth,
        annotations: plan.annotations,
        dns: config.dnsConfig ? { servers: config.dnsConfig.servers ?? [], searches: config.dnsConfig.searches ?? [], options: config.dnsConfig.options ?? [] } : undefined,
        cgroupPath: config.linux?.cgroupParent || undefined,
      }),
    );
  }

  private async createPause(run: SandboxRun, undo: UndoStack, files: SandboxFiles): Promise<void> {
    const { id, record, plan, sandboxRootfs } = run;
    const rootfs = record.resources.rootfs;
    const seccomp = await podSeccomp(run.config);
    await this.awaitIntent(run);
    // Pushed before create: a failed create may still have left the container.
    undo.push('delete sandbox container', () => this.deps.runtime.destroy(plan.handler, id));
    record.pid = await run.timed('create', () =>
      this.deps.runtime.create(plan.handler, record, {
        bundleDir: path.join(run.volatileDir, 'bundle'),
        rootfsPath: rootfs ? rootfs.target : (sandboxRootfs as { path: string }).path,
        args: sandboxRootfs!.args,
        hostname: plan.hostname,
        hostnamePath: files.hostname,
        hostsPath: files.hosts,
        resolvConfPath: files.resolvConf,
        shmPath: plan.shmPath,
        logDirectory: plan.logDirectory,
        sysctls: plan.sysctls,
        seccomp,
      }),
    );
  }

  /** Where the pod's own pause leaves its traces: the pidfile in its state folder, its cgroups. */
  private podInitResources(id: string, config: PodSandboxConfig): PodInitResources {
    let cgroupsPath: string;
    try {
      cgroupsPath = cgroupfsCgroupsPath(config.linux?.cgroupParent ?? '', id);
    } catch (e) {
      throw invalidArgument((e as Error).message);
    }
    return { pidFile: path.join(this.volatileDir(id), 'pause.pid'), cgroups: podInitCgroups(cgroupsPath) };
  }

  /** Corral's own pause: PID 1 of the pod's PID namespace, in the pinned network/IPC/UTS ones. */
  private async startPodInit(run: SandboxRun, undo: UndoStack): Promise<void> {
    const { record, plan } = run;
    const res = record.resources.podInit!;
    const sc = run.config.linux?.securityContext;
    // The pause runs under Corral's own seccomp allow-list (it only waits), but the pod's
    // profile is still read and checked, as for a pause container: a bad one refuses the pod.
    await podSeccomp(run.config);
    await this.awaitIntent(run);
    // Pushed before start: a failed start may have been cut short (a crash of the helper).
    undo.push('stop pod pause', () => this.deps.podInit.stop(res));
    const started = await run.timed('start', () =>
      this.deps.podInit.start({
        resources: res,
        rootDir: run.volatileDir,
        netnsPath: plan.pins.netnsPath ?? undefined,
        ipcPath: plan.pins.ipcPath,
        utsPath: plan.pins.utsPath,
        privileged: record.privileged,
        uid: sc?.runAsUser ? Number(sc.runAsUser.value) : undefined,
        gid: sc?.runAsGroup ? Number(sc.runAsGroup.value) : undefined,
      }),
    );
    record.pid = started.pid;
    record.pidStartTime = started.startTime;
  }

  /** Starts the pause (its undo is createPause's) and records its start time, to tell a reused PID. */
  private async startPause(run: SandboxRun): Promise<void> {
    const { record } = run;
    await run.timed('start', () => this.deps.runtime.start(run.plan.handler, run.id));
    const started = await processStartTime(record.pid);
    if (started === null) throw new Error(`the sandbox container's process ${record.pid} exited right after start`);
    record.pidStartTime = started;
  }

  private networkIdentity(record: SandboxRecord) {
    return {
      containerId: record.id,
      netnsPath: record.netnsPath ?? '',
      podName: record.metadata.name,
      podNamespace: record.metadata.namespace,
      podUid: record.metadata.uid,
    };
  }

  volatileDir(id: string): string {
    return path.join(this.deps.config.stateDir, 'sandboxes', id);
  }

  // ---------------------------------------------------------------- Stop / Remove

  /** Makes "nothing of the sandbox runs and its network is released" true. Unknown IDs are fine. */
  async stop(idOrPrefix: string): Promise<void> {
    const id = this.index.tryResolve(idOrPrefix);
    if (id === undefined) return;
    await this.exclusive(id, (tx) => this.stopLocked(tx, id));
  }

  /**
   * persist=false when the record is about to be deleted anyway (Remove): then the sandbox
   * image layers this Stop released are returned, for the caller to report once the record
   * is gone (image GC asks layersInUse, which reads the committed records).
   */
  private async stopLocked(tx: SandboxTx, id: string, persist = true): Promise<string[] | undefined> {
    const record = tx.current();
    if (!record) return undefined;
    const wasReady = record.state === 'ready';
    const { pinner, runtime, logger } = this.deps;
    const handler = this.deps.config.runtimes[record.runtimeHandler];
    const res = record.resources;
    const timings: Record<string, number> = {};
    const step = async (name: string, fn: () => Promise<void>) => {
      const t0 = performance.now();
      await fn();
      timings[name] = Math.round((performance.now() - t0) * 100) / 100;
    };
    let releasedLayers: string[] | undefined;
    // Each step is idempotent and guarded by its done-marker; the record is written once at
    // the end (or on failure): a crash in between only means the next Stop redoes a step.
    try {
      // The pause and the CNI attachments do not depend on each other (the netns is held
      // by its pin either way), so they are released concurrently.
      const stopContainer = async () => {
        if (res.podInit) {
          const podInit = res.podInit;
          await step('container', () => this.deps.podInit.stop(podInit));
          res.podInit = null;
          record.pid = 0;
        }
        if (!res.container) return;
        if (!handler) throw new Error(`runtime handler "${record.runtimeHandler}" is no longer configured; cannot stop its container`);
        await step('container', () => runtime.destroy(handler, id));
        res.container = false;
        record.pid = 0;
      };
      const detachNetwork = async () => {
        if (!res.cniAttached) return;
        const netnsPath = record.netnsPath && (await pinner.isPinned(record.netnsPath)) ? record.netnsPath : '';
        const driver = this.deps.network(handler ?? this.deps.config.runtimes[this.deps.config.defaultRuntime]!);
        await step('cni', () => driver.tearDown({ ...this.networkIdentity(record), netnsPath }));
        res.cniAttached = false;
      };
      // Application containers first: they live in the namespaces released below.
      await this.containers.stopAll(id);
      const released = await Promise.allSettled([stopContainer(), detachNetwork()]);
      const failed = released.flatMap((r) => (r.status === 'rejected' ? [(r.reason as Error).message] : []));
      if (failed.length > 0) throw new Error(failed.join('; '));
      if (res.rootfs) {
        const { target, chain } = res.rootfs;
        await step('rootfs', () => this.deps.sandboxImage.unmount(target));
        res.rootfs = null;
        releasedLayers = chain;
      }
      if (res.shmMount && res.pins.length === 0) {
        await step('shm', () => unmountShm(res.shmMount!));
        res.shmMount = null;
      }
      if (res.pins.length > 0) {
        // The shm folder goes in the same helper call as the pins (one exec, not two).
        await step('netns', () => pinner.remove(res.shmMount ? [...res.pins, res.shmMount] : res.pins));
        res.pins = [];
        res.shmMount = null;
      }
      if (record.state !== 'notready' || record.lastError || Object.keys(timings).length > 0) {
        record.state = 'notready';
        delete record.lastError;
        if (persist) await tx.save(record, NOT_FSYNCED);
      }
      // Not twice: a pod whose pause died was announced STOPPED then (noticeDeadSandboxes).
      if (wasReady && !this.announcedDown.delete(id)) this.publish('stopped', persist ? this.records.get(id) : record);
      logger.info({ sandbox: id, timings }, 'pod sandbox stopped');
      this.deps.observer?.sandboxSteps('stop', record.runtimeHandler, timings);
      if (!persist) return releasedLayers;
      await this.reportReleased(releasedLayers);
      return undefined;
    } catch (e) {
      const msg = (e as Error).message;
      record.state = 'notready';
      record.lastError = `stop incomplete: ${msg}`;
      const saved = await tx.save(record).then(() => true, () => false);
      // Not ready any more, as its status says from now on.
      if (wasReady && saved && !this.announcedDown.delete(id)) this.publish('stopped', this.records.get(id));
      await this.reportReleased(releasedLayers);
      logger.warn({ sandbox: id, err: msg }, 'StopPodSandbox incomplete; the next Stop retries');
      throw internalError(`stopping pod sandbox ${id}: ${msg}`);
    }
  }

  /** Stops if needed, then forgets the sandbox and frees its name. Unknown IDs are fine. */
  async remove(idOrPrefix: string): Promise<void> {
    const id = this.index.tryResolve(idOrPrefix);
    if (id === undefined) return;
    await this.exclusive(id, async (tx) => {
      const record = tx.current();
      if (!record) return;
      await this.containers.removeAll(id);
      const releasedLayers = await this.stopLocked(tx, id, false);
      // Synchronous: a handful of small files on tmpfs, where rm's async walk made ~10
      // thread-pool round trips (lstat, readdir, unlink, rmdir), ~0.1 ms of CPU each.
      rmSync(this.volatileDir(id), { recursive: true, force: true });
      await tx.forget();
      this.announcedDown.delete(id);
      this.names.release(sandboxNameKey(record.metadata), id);
      this.deps.logger.info({ sandbox: id }, 'pod sandbox removed');
      // With its last record, stopped: kubelet takes the pod's ID from the event's sandbox status.
      // One caught half-created by a restart was never announced.
      if (record.state !== 'creating') this.publish('deleted', { ...record, state: 'notready', pid: 0 });
      await this.reportReleased(releasedLayers);
    });
  }

  private publish(type: LifecycleEventType, record: SandboxRecord | undefined): void {
    if (!record) return;
    try {
      this.events.publish({ type, containerId: record.id, sandboxId: record.id, at: nowNs(), sandbox: record, containers: this.containers.records?.(record.id) ?? [] });
    } catch (e) {
      // The change is committed: a failing listener must not turn it into a failed call.
      this.deps.logger.warn({ sandbox: record.id, event: type, err: (e as Error).message }, 'publishing a sandbox event failed');
    }
  }

  /**
   * Publishes STOPPED, once, for each ready sandbox whose namespaces are no longer held (its
   * pause process died, a pin was removed): its status says NOTREADY from then on, and
   * containerd reports a sandbox's exit the same way. Run periodically by the daemon.
   */
  async noticeDeadSandboxes(): Promise<void> {
    const ready = [...this.records.values()].filter((r) => r.state === 'ready' && !this.announcedDown.has(r.id));
    for (const rec of ready) {
      if ((await this.liveState(rec)) === 'SANDBOX_READY') continue;
      // Under the pod's lock, checked again: a Stop under way announces it itself.
      await this.exclusive(rec.id, async (tx) => {
        const now = tx.current();
        if (now?.state !== 'ready' || this.announcedDown.has(rec.id) || (await this.liveState(now)) === 'SANDBOX_READY') return;
        this.announcedDown.add(rec.id);
        this.publish('stopped', this.records.get(rec.id));
      });
    }
  }

  /** Tells image GC about layers a stopped pod no longer mounts; only once its record says so. */
  private async reportReleased(chain: string[] | undefined): Promise<void> {
    if (!chain) return;
    await this.layersReleased(chain).catch((e: Error) => this.deps.logger.warn({ err: e.message }, 'collecting released image layers failed'));
  }

  /** The only way to change a sandbox record: under its exclusive lock, disk first. */
  private exclusive<T>(id: string, fn: (tx: SandboxTx) => Promise<T>): Promise<T> {
    return this.locks.exclusive(id, async () => {
      let held = true;
      const check = () => {
        if (!held) throw new Error(`pod sandbox ${id}: record changed after its lock was released`);
      };
      const tx: SandboxTx = {
        claim: () => {
          check();
          this.index.add(id);
        },
        current: () => {
          check();
          const rec = this.records.get(id);
          return rec && structuredClone(rec);
        },
        save: async (next, opts) => {
          check();
          if (next.id !== id) throw new Error(`pod sandbox ${id}: cannot save the record of ${next.id}`);
          const committed = structuredClone(next);
          await this.deps.store.save(committed, opts);
          next.updatedAt = committed.updatedAt;
          this.records.set(id, committed);
          this.index.add(id);
        },
        sync: async () => {
          check();
          await this.deps.store.sync(id);
        },
        forget: async () => {
          check();
          await this.deps.store.remove(id);
          this.records.delete(id);
          this.index.delete(id);
        },
      };
      try {
        return await fn(tx);
      } finally {
        held = false;
      }
    });
  }

  /**
   * Runs fn with the sandbox's lock held shared (the container calls of a pod): Run, Stop
   * and Remove of the pod wait until fn is done, and fn starts only after they are. fn gets
   * the sandbox's record as of then (stable while fn runs), or undefined if it has none.
   * Must not be called from inside Stop/Remove (they hold the lock exclusively).
   */
  underSharedLock<T>(id: string, fn: (sandbox: SandboxRecord | undefined) => Promise<T>): Promise<T> {
    return this.locks.shared(id, () => fn(this.records.get(id)));
  }

  // ---------------------------------------------------------------- Status / List

  /**
   * The record, for PodSandboxStatus. A sandbox still being created is NOT_FOUND, as in
   * containerd (which stores a sandbox only once Run has finished): kubelet learns the ID
   * from Run's answer, and a NOTREADY answer would make it kill the pod and start another
   * attempt instead of retrying the Run, which joins the creation under way.
   */
  get(idOrPrefix: string): SandboxRecord {
    const id = this.index.resolve(idOrPrefix);
    const rec = this.records.get(id);
    // Indexed without a record: claimed by a Run about to write it.
    if (!rec || rec.state === 'creating') throw notFound(`pod sandbox ${id} is still being created`);
    return rec;
  }

  /** The committed record, whatever its state; undefined when there is none. Never throws. */
  peek(id: string): SandboxRecord | undefined {
    return this.records.get(id);
  }

  /** What ListPodSandbox shows: sandboxes still being created are left out (see get). */
  all(): SandboxRecord[] {
    return [...this.records.values()].filter((r) => r.state !== 'creating');
  }

  /** READY only while its namespaces are held: the pause process alive, or the pins in place. */
  async liveState(rec: SandboxRecord): Promise<'SANDBOX_READY' | 'SANDBOX_NOTREADY'> {
    if (rec.state !== 'ready') return 'SANDBOX_NOTREADY';
    if (rec.infraMode !== 'pinned') {
      const start = await processStartTime(rec.pid);
      if (start === null || start !== rec.pidStartTime) return 'SANDBOX_NOTREADY';
    } else if (!(await Promise.all(rec.resources.pins.map((p) => this.deps.pinner.isPinned(p)))).every(Boolean)) {
      return 'SANDBOX_NOTREADY';
    }
    return 'SANDBOX_READY';
  }

  /** Chain IDs of image layers mounted by sandboxes: image garbage collection keeps them. */
  layersInUse(): Set<string> {
    const out = new Set<string>();
    for (const r of this.records.values()) r.resources.rootfs?.chain.forEach((c) => out.add(c));
    return out;
  }

  // ---------------------------------------------------------------- Recovery

  /**
   * Loads every record after a restart. Sandboxes caught half-created are rolled back;
   * a record that cannot be read is reported and left alone, never fatal.
   */
  async recover(): Promise<{ recovered: number; rolledBack: number; unreadable: number }> {
    const { store, logger } = this.deps;
    const loaded = await store.loadAll();
    for (const bad of loaded.errors) logger.error({ dir: bad.dir, err: bad.error }, 'unreadable sandbox record skipped');
    let rolledBack = 0;
    for (const rec of loaded.records) {
      this.records.set(rec.id, rec);
      this.index.add(rec.id);
      this.names.reserve(sandboxNameKey(rec.metadata), rec.id);
    }
    await Promise.all(
      loaded.records
        .filter((rec) => rec.state === 'creating')
        .map(async (rec) => {
          try {
            await this.remove(rec.id);
            rolledBack++;
            logger.warn({ sandbox: rec.id }, 'half-created sandbox from before the restart rolled back');
          } catch (e) {
            logger.error({ sandbox: rec.id, err: (e as Error).message }, 'rolling back a half-created sandbox failed; it stays NOTREADY');
          }
        }),
    );
    return { recovered: this.records.size, rolledBack, unreadable: loaded.errors.length };
  }
}

/** The pod's seccomp profile (either CRI field); a localhost one is read and checked here, once per Run. */
function podSeccomp(config: PodSandboxConfig): Promise<SeccompChoice> {
  return resolveSeccomp(config.linux?.securityContext, readSeccompProfile);
}
